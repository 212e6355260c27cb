"""The NumPyro façade: the ``ScorePrior`` distribution and the ``ALMC`` MCMC kernel."""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_median
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import constrain_fn, initialize_model
from numpyro.primitives import Messenger
from numpyro.util import identity, is_prng_key

from numpyro_almc._validate import check_choice
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc.infer.model_fns import (
    find_linear_gaussian_observation,
    noised_loglik_fn,
    noised_preconditioner,
    observation_noise_std,
)
from numpyro_almc.mcmc._checks import at_time
from numpyro_almc.mcmc.almc import ALMCState, build_kernel, init
from numpyro_almc.path.preconditioners import hessian_preconditioner
from numpyro_almc.path.schedules import ALMCSchedule, budget_schedule, step_params
from numpyro_almc.run.chains import standard_normal_like
from numpyro_almc.smc.almc_smc import RESAMPLING_SCHEMES, SMCState, check_smc_options
from numpyro_almc.smc.evidence import lee_whiteley_log_se
from numpyro_almc.smc.kernel import resample_if_degenerate, reweight
from numpyro_almc.smc.weights import (
    likelihood_log_weight_increments,
    prior_log_weight_increments,
)
from numpyro_almc.types import Array, ArrayTree

__all__ = [
    "ScorePrior",
    "ALMC",
    "ALMCSMC",
    "ALMCSamplerState",
    "ALMCSMCSamplerState",
    "score_prior_as_flat",
]


class ScorePrior(dist.Distribution):
    r"""A prior on real arrays known only through the score of its OU-noised laws.

    ``score_fn(x, t) = ∇_x log p_t(x)`` for one unbatched ``x`` of shape
    ``event_shape`` and a scalar OU time ``t``, where
    ``X_t = e^{-t} X_0 + sqrt(1-e^{-2t}) Z``.
    Sample a model holding one with :class:`ALMC`; NUTS and friends fail loudly on it
    because :meth:`log_prob` raises unless ``log_density_fn`` is given.

    Parameters
    ----------
    score_fn
        The score function (an exact score, or a network through an adapter).
    event_shape
        Shape of one draw, e.g. ``(64,)``.
    log_density_fn
        Optional ``x -> log p_0(x)`` (up to a constant) for samplers that need one.
    batch_shape
        Batch shape (``numpyro.plate`` expands it for you).
    num_sample_steps
        Steps of the reverse diffusion used by :meth:`sample` (prior predictive).

    Examples
    --------
    >>> import numpyro
    >>> prior = ScorePrior(lambda x, t: -x, event_shape=(3,))
    >>> prior.event_shape, prior.batch_shape
    ((3,), ())
    """

    arg_constraints = {}
    pytree_aux_fields = (
        "score_fn",
        "log_density_fn",
        "num_sample_steps",
    )

    def __init__(
        self,
        score_fn: Callable[[Array, Array], Array],
        event_shape,
        *,
        log_density_fn: Callable[[Array], Array] | None = None,
        batch_shape=(),
        num_sample_steps: int = 200,
        validate_args=None,
    ):
        if not callable(score_fn):
            raise TypeError(
                "`score_fn` must be a callable score_fn(x, t) -> grad log p_t(x), "
                f"got {type(score_fn).__name__}."
            )
        if isinstance(event_shape, numbers.Integral):
            event_shape = (int(event_shape),)
        event_shape = tuple(event_shape)
        if len(event_shape) == 0 or not all(
            isinstance(s, numbers.Integral) and s > 0 for s in event_shape
        ):
            raise ValueError(
                "`event_shape` must be a non-empty tuple of positive integers, e.g. "
                f"(64,), got {event_shape!r}."
            )
        if log_density_fn is not None and not callable(log_density_fn):
            raise TypeError("`log_density_fn` must be a callable or None.")
        if isinstance(num_sample_steps, bool) or not isinstance(
            num_sample_steps, numbers.Integral
        ):
            raise TypeError("`num_sample_steps` must be an integer.")
        if num_sample_steps < 1:
            raise ValueError("`num_sample_steps` must be >= 1.")
        self.score_fn = score_fn
        self.log_density_fn = log_density_fn
        self.num_sample_steps = int(num_sample_steps)
        super().__init__(
            batch_shape=tuple(batch_shape),
            event_shape=event_shape,
            validate_args=validate_args,
        )

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def sample(self, key, sample_shape=()):
        """Prior draws by reverse diffusion with the score (prior predictive checks).

        This costs ``num_sample_steps`` score evaluations per draw; ALMC never calls
        it (chains start from ``N(0, I)``), nor does ``az.from_numpyro``.
        """
        from numpyro_almc.scores.prior_sampling import sample_prior

        shape = tuple(sample_shape) + self.batch_shape
        n = math.prod(shape)
        draws = sample_prior(
            key,
            self.score_fn,
            self.event_shape,
            max(n, 1),
            num_steps=self.num_sample_steps,
        )
        return draws[:n].reshape(shape + self.event_shape)

    def log_prob(self, value):
        if self.log_density_fn is None:
            raise NotImplementedError(
                "ScorePrior has no log density: it is known only through its score. "
                "Sample models holding it with numpyro_almc.ALMC, or pass "
                "log_density_fn= if you know log p_0 (samplers such as NUTS need it)."
            )
        flat = jnp.reshape(value, (-1,) + self.event_shape)
        out = jax.vmap(self.log_density_fn)(flat)
        return out.reshape(jnp.shape(value)[: jnp.ndim(value) - len(self.event_shape)])

    def batched_score(self, value, t):
        """The score applied over every leading (sample and batch) dimension."""
        flat = jnp.reshape(value, (-1,) + self.event_shape)
        out = jax.vmap(self.score_fn, in_axes=(0, None))(flat, t)
        if out.shape != flat.shape:
            raise ValueError(
                f"score_fn returned shape {out.shape[1:]} for an input of shape "
                f"{self.event_shape}; it must return an array of the input's shape."
            )
        return out.reshape(jnp.shape(value))


def _find_score_prior(fn) -> ScorePrior | None:
    """The ScorePrior at the root of ``fn`` (through expand / to_event), if any."""
    base = fn
    while True:
        if isinstance(base, ScorePrior):
            return base
        if isinstance(base, dist.ExpandedDistribution | dist.Independent):
            base = base.base_dist
            continue
        break
    # Anything else wrapping a ScorePrior (a transform, a mask, ...) is unsupported.
    inner = getattr(base, "base_dist", None)
    while inner is not None:
        if isinstance(inner, ScorePrior):
            raise ValueError(
                f"A ScorePrior is wrapped in {type(base).__name__}: ALMC needs it on "
                "an unconstrained real site. Apply transforms to the value in the "
                "model "
                "instead (e.g. numpyro.deterministic('y', f(x)))."
            )
        inner = getattr(inner, "base_dist", None)
    return None


class score_prior_as_flat(Messenger):
    """Handler: each ScorePrior site contributes 0 to the log joint.

    The site's distribution is replaced by an ``ImproperUniform`` of the same shapes
    (its ScorePrior kept in ``msg["infer"]["score_prior"]``), so NumPyro's
    ``potential_fn`` of the wrapped model is the measurement potential ``R``: minus the
    log likelihood and minus the log density of every other latent site.
    """

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        base = _find_score_prior(msg["fn"])
        if base is None:
            return
        name = msg["name"]
        if msg.get("is_observed"):
            raise ValueError(
                f"ScorePrior site '{name}' is observed; a ScorePrior has no density to "
                "condition on. Observe a likelihood of it instead."
            )
        if (msg.get("infer") or {}).get("enumerate"):
            raise ValueError(
                f"ScorePrior site '{name}' is marked for enumeration; ScorePrior is a "
                "continuous prior on real arrays."
            )
        fn = msg["fn"]
        msg["infer"] = {**(msg.get("infer") or {}), "score_prior": base}
        msg["fn"] = dist.ImproperUniform(
            constraints.real, fn.batch_shape, fn.event_shape
        )


class _XLikelihood:
    """A time-dependent ``-R`` as a function of the ScorePrior sites (``(xs, t)``),
    the other sites fixed."""

    time_dependent = True

    def __init__(self, loglik_fn, theta):
        self._fn, self._theta = loglik_fn, theta
        self.noise_std = getattr(loglik_fn, "noise_std", None)

    def __call__(self, xs, t):
        return self._fn({**xs, **self._theta}, t)


class ALMCSamplerState(NamedTuple):
    """State of the :class:`ALMC` NumPyro kernel (one chain, or batched chains).

    ``i`` is the step counter (the schedule index; it never resets, so the phase is
    known across ``run`` calls); ``z`` the unconstrained values of every latent site;
    ``score`` the prior score of the ScorePrior sites at OU time ``time``;
    ``measurement_loglik`` is ``-R(z)``: the log likelihood plus the log density (with
    Jacobian) of every latent site that is not a ScorePrior. ``theta_step_size`` and
    ``theta_accept_prob`` belong to the MALA update of those other sites.

    Examples
    --------
    >>> import numpyro
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", ScorePrior(lambda x, t: -x, event_shape=(2,)))
    >>> mcmc = MCMC(ALMC(model), num_warmup=20, num_samples=5, progress_bar=False)
    >>> mcmc.run(jax.random.key(0))
    >>> state = mcmc.last_state
    >>> tau = float(mcmc.sampler.schedule.early_stop_time)
    >>> int(state.i), sorted(state.z), float(state.time) == tau
    (25, ['x'], True)
    """

    i: Array
    z: ArrayTree
    score: ArrayTree
    measurement_loglik: Array
    measurement_loglik_grad: ArrayTree
    time: Array
    step_size: Array
    diverging: Array
    num_diverging: Array
    theta_step_size: Array
    theta_accept_prob: Array
    preconditioner: object
    rng_key: Array


#: Target acceptance of the MALA update of the non-score sites (Roberts & Rosenthal).
_THETA_TARGET_ACCEPT = 0.574


class ALMC(MCMCKernel):
    r"""Annealed Langevin Monte Carlo as a NumPyro ``MCMCKernel``.

    NumPyro's **warmup is the ALMC path**: a warm start (Langevin on
    ``N(0, I)·e^{-R}``, no score evaluations) and the annealing from OU time ``T``
    down to ``τ``; its length sets the budget unless ``schedule`` is given. The
    **sampling phase is Langevin at fixed** ``τ``. Every ``ScorePrior`` site gets the
    score; every other latent site is moved in NumPyro's unconstrained space with its
    log density and Jacobian counted in ``R``. Chains start from ``N(0, I)`` on
    ``ScorePrior`` sites (as in the paper) and from ``init_strategy`` elsewhere.

    Parameters
    ----------
    model
        A NumPyro model with at least one :class:`ScorePrior` site.
    potential_fn, score_fn
        Without a model: ``potential_fn(z) = R(z)`` (minus the log likelihood) and
        ``score_fn(z, t)`` for the whole position ``z`` (pass ``init_params`` to run).
    schedule
        An explicit :class:`ALMCSchedule`; then ``num_warmup`` must equal
        ``schedule.num_steps``.
    step_size, early_stop_time, initial_time, grid, step_rule
        Knobs of the default :func:`budget_schedule` built from ``num_warmup``.
    num_warm_start_steps
        Warm-start length (default: a tenth of ``num_warmup``, at most 100).
    warm_start_step_size
        Warm-start step size ``h`` (default ``min(step_size, 0.5)``); without a
        preconditioner keep it below ``1 / (1 + L_R)``.
    preconditioner
        ``"auto"`` (default): ``M = (I + [∇²R]_+)^{-1}`` from the Hessian of ``R`` at
        each chain's start with its ScorePrior sites at 0 (exact for a linear-Gaussian
        likelihood with known noise; with unknown noise it is the curvature at the
        initial noise scale). ``None``: plain Langevin (then keep ``step_size`` below
        ``1 / L_R``). Or a preconditioner object acting on the flattened
        ScorePrior sites (sorted by name, as ``ravel_pytree`` of the dict), or a
        function ``theta -> preconditioner`` of the other sites' unconstrained values.
        With other sites, ``"auto"`` and functions are re-evaluated at every step
        from their current values (exact: given them ``M`` is constant). ``"auto"``
        builds a dense Hessian: for signals up to a few thousand numbers.
    theta_step_size
        Initial MALA step size of the sites that are not ScorePriors (adapted to 57 %
        acceptance during warmup).
    init_strategy
        NumPyro init strategy for the sites that are not ScorePriors.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model(y=None):
    ...     x = numpyro.sample("x", ScorePrior(lambda x, t: -x, event_shape=(2,)))
    ...     numpyro.sample("y", dist.Normal(x.sum(), 0.5), obs=y)
    >>> mcmc = MCMC(ALMC(model), num_warmup=200, num_samples=10, progress_bar=False)
    >>> mcmc.run(jax.random.key(0), y=1.0)
    >>> mcmc.get_samples()["x"].shape
    (10, 2)
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        score_fn=None,
        *,
        schedule: ALMCSchedule | None = None,
        step_size: float = 0.5,
        early_stop_time: float = 0.02,
        initial_time: float = 3.0,
        grid: str = "snr",
        step_rule: str = "noise",
        num_warm_start_steps: int | None = None,
        warm_start_step_size: float | None = None,
        preconditioner="auto",
        theta_step_size: float = 0.01,
        init_strategy=init_to_median,
        likelihood_path: str = "paper",
    ):
        check_choice("likelihood_path", likelihood_path, ("paper", "noised"))
        if likelihood_path == "noised" and model is None:
            raise ValueError(
                "likelihood_path='noised' reads the Gaussian observation from a "
                "model; with `potential_fn` pass a noised_gaussian_likelihood to "
                "run_almc instead."
            )
        if not (model is None) ^ (potential_fn is None):
            raise ValueError("Give exactly one of `model` or `potential_fn`.")
        if potential_fn is not None and not callable(score_fn):
            raise ValueError(
                "With `potential_fn`, also give `score_fn(z, t)` (the prior score)."
            )
        if model is not None and score_fn is not None:
            raise ValueError(
                "With a model, the score comes from its ScorePrior sites; "
                "do not pass `score_fn`."
            )
        if schedule is not None and not isinstance(schedule, ALMCSchedule):
            raise TypeError("`schedule` must be an ALMCSchedule or None.")
        if isinstance(preconditioner, str) and preconditioner != "auto":
            raise ValueError(
                f"`preconditioner` must be 'auto', None or a preconditioner object, "
                f"got {preconditioner!r}."
            )
        if num_warm_start_steps is not None:
            _check_count("num_warm_start_steps", num_warm_start_steps)
        # Validate the schedule knobs now, not at the first run.
        budget_schedule(
            100,
            early_stop_time=early_stop_time,
            initial_time=initial_time,
            step_size=step_size,
            grid=grid,
            step_rule=step_rule,
            num_warm_start_steps=0,
            warm_start_step_size=warm_start_step_size,
        )
        self._model = model
        self._potential_fn = potential_fn
        self._score_fn = score_fn
        self._given_schedule = schedule
        self._schedule = schedule
        self._schedule_kwargs = dict(
            step_size=step_size,
            early_stop_time=early_stop_time,
            initial_time=initial_time,
            grid=grid,
            step_rule=step_rule,
            warm_start_step_size=warm_start_step_size,
        )
        self._num_warm_start_steps = num_warm_start_steps
        self._preconditioner = preconditioner
        self._likelihood_path = likelihood_path
        self._observation = None
        if not theta_step_size > 0:
            raise ValueError("`theta_step_size` must be > 0.")
        self._theta_step_size = float(theta_step_size)
        self._init_strategy = init_strategy
        self._potential_fn_gen = None
        self._postprocess_fn = None
        self._sample_fn = None
        self._score_sites = None

    # -- the NumPyro kernel contract ---------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def sample_field(self):
        return "z"

    @property
    def default_fields(self):
        return ("z", "diverging", "step_size", "time", "measurement_loglik")

    @property
    def schedule(self) -> ALMCSchedule | None:
        """The path of the last ``init`` (or the one given)."""
        return self._schedule

    @property
    def score_sites(self) -> tuple[str, ...] | None:
        """Names of the ScorePrior sites found in the model at ``init``."""
        return self._score_sites

    def get_diagnostics_str(self, state):
        return (
            f"t={float(state.time):.3g}, step {float(state.step_size):.2e}, "
            f"{int(state.num_diverging)} divergences"
        )

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **model_kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        return state

    def wrap_model(self, wrapper):
        if self._model is None:
            raise ValueError("`wrap_model` needs a kernel built from a model.")
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._potential_fn_gen = None
        kernel._postprocess_fn = None
        kernel._sample_fn = None
        return kernel

    def refresh(self, state, model_args, model_kwargs):
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)

        def one(st):
            ll, grad = jax.value_and_grad(at_time(loglik_fn, st.time))(st.z)
            xs, theta = self._split(st.z)
            score = self._x_score_fn(score_fn, theta)(xs, st.time)
            return st._replace(
                score=score, measurement_loglik=ll, measurement_loglik_grad=grad
            )

        return one(state) if is_prng_key(state.rng_key) else jax.vmap(one)(state)

    # -- set-up ------------------------------------------------------------------------
    def _make_schedule(self, num_warmup):
        given = self._given_schedule
        if given is not None:
            if num_warmup != given.num_steps:
                raise ValueError(
                    f"num_warmup={num_warmup} but the given schedule has "
                    f"{given.num_steps} steps; set "
                    f"num_warmup=schedule.num_steps ({given.num_steps})."
                )
            return given
        if num_warmup < 10:
            raise ValueError(
                f"ALMC runs its warm start and annealing in NumPyro's warmup; "
                f"num_warmup={num_warmup} is too short. Use num_warmup >= 10 (the "
                "budget in score evaluations), or pass schedule=."
            )
        m = self._num_warm_start_steps
        if m is None:
            m = min(100, num_warmup // 10)
        if m > num_warmup - 2:
            raise ValueError(
                f"num_warm_start_steps={m} leaves no annealing in num_warmup="
                f"{num_warmup}; lower it or raise num_warmup."
            )
        return budget_schedule(
            num_warmup - m + 1, num_warm_start_steps=m, **self._schedule_kwargs
        )

    def _split(self, z):
        """``(score-site values, other values)``; without a model all is score."""
        if self._model is None:
            return z, {}
        xs = {k: v for k, v in z.items() if k in self._score_sites}
        theta = {k: v for k, v in z.items() if k not in self._score_sites}
        return xs, theta

    def _conditional_preconditioner(self, x_loglik, xs, theta):
        precond = self._preconditioner
        if isinstance(precond, str) and self._observation is not None:
            # "auto" on the noised path: (I + ∇²(−log L_t))^{-1} at the current σ,
            # time dependent (evaluated at each step's time).
            return noised_preconditioner(
                self._observation, x_loglik.noise_std({**xs, **theta})
            )
        if isinstance(precond, str):  # "auto": curvature at x = 0 (the prior mean)
            return hessian_preconditioner(x_loglik, jax.tree.map(jnp.zeros_like, xs))
        if callable(precond) and not hasattr(precond, "apply"):
            return precond(theta)
        return precond

    @staticmethod
    def _x_loglik_fn(loglik_fn, theta):
        """``-R`` as a function of the ScorePrior sites, the other sites fixed."""
        if not theta:
            return loglik_fn
        if getattr(loglik_fn, "time_dependent", False):
            return _XLikelihood(loglik_fn, theta)

        def x_loglik(xs):
            return loglik_fn({**xs, **theta})

        return x_loglik

    @staticmethod
    def _x_score_fn(score_fn, theta):
        def x_score(xs, t):
            if not theta:
                return score_fn(xs, t)
            full = score_fn({**xs, **theta}, t)
            return {k: full[k] for k in xs}

        return x_score

    def _joint_fns(self, model_args, model_kwargs):
        """``(loglik_fn, score_fn)`` on the unconstrained position for these args."""
        if self._model is None:
            potential = self._potential_fn
            return (lambda z: -potential(z)), self._score_fn
        model_kwargs = {} if model_kwargs is None else model_kwargs
        potential = self._potential_fn_gen(*model_args, **model_kwargs)
        flat_model = score_prior_as_flat(self._model)

        def score_fn(z, t):
            values = constrain_fn(flat_model, model_args, model_kwargs, z)
            tr = trace(seed(substitute(flat_model, data=values), 0)).get_trace(
                *model_args, **model_kwargs
            )
            out = {}
            for name, v in z.items():
                prior = (tr[name].get("infer") or {}).get("score_prior")
                out[name] = (
                    jnp.zeros_like(v) if prior is None else prior.batched_score(v, t)
                )
            return out

        if self._observation is not None:
            loglik = noised_loglik_fn(
                self._observation,
                potential,
                flat_model,
                model_args,
                model_kwargs,
                self._score_sites,
            )
            loglik.noise_std = lambda z: observation_noise_std(
                self._observation, flat_model, model_args, model_kwargs, z
            )
            return loglik, score_fn
        return (lambda z: -potential(z)), score_fn

    def _init_model(self, rng_key, model_args, model_kwargs):
        flat_model = score_prior_as_flat(self._model)

        def placeholder(site):
            # ImproperUniform cannot be sampled: give ScorePrior sites a dummy value.
            if (site.get("infer") or {}).get("score_prior") is not None:
                return jnp.zeros(site["fn"].shape())
            return None

        tr = trace(
            substitute(seed(flat_model, 0), substitute_fn=placeholder)
        ).get_trace(*model_args, **(model_kwargs or {}))
        self._score_sites = tuple(
            sorted(
                name
                for name, site in tr.items()
                if site["type"] == "sample"
                and (site.get("infer") or {}).get("score_prior") is not None
            )
        )
        if not self._score_sites:
            raise ValueError(
                "The model has no ScorePrior site: ALMC needs at least one "
                "numpyro.sample(name, ScorePrior(score_fn, event_shape)). For models "
                "with ordinary priors use NUTS."
            )
        params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
            rng_key,
            flat_model,
            dynamic_args=True,
            init_strategy=self._init_strategy,
            model_args=model_args,
            model_kwargs=model_kwargs,
        )
        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        z0 = params_info[0]
        if self._likelihood_path == "noised":
            one = z0 if is_prng_key(rng_key) else jax.tree.map(lambda v: v[0], z0)
            self._observation = find_linear_gaussian_observation(
                flat_model, model_args, model_kwargs or {}, one, self._score_sites
            )
        return z0

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        self._schedule = self._make_schedule(num_warmup)
        self._num_warmup = num_warmup
        batched = not is_prng_key(rng_key)
        split = jax.vmap(jax.random.split) if batched else jax.random.split
        keys = split(rng_key)
        if batched:
            rng_key, key_init = keys[:, 0], keys[:, 1]
        else:
            rng_key, key_init = keys[0], keys[1]
        if self._model is not None:
            z = self._init_model(key_init, model_args, model_kwargs)
            # The paper starts ScorePrior sites from N(0, I), not from a prior draw
            # (which would cost a full reverse diffusion).
            normal = (
                jax.vmap(self._standard_normal) if batched else self._standard_normal
            )
            z = {**z, **normal(key_init, {k: z[k] for k in self._score_sites})}
            if init_params is not None:
                z = {**z, **init_params}
        else:
            if init_params is None:
                raise ValueError("With `potential_fn`, pass `init_params` to run().")
            z = init_params
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)
        schedule = self._schedule

        def one(z, key):
            xs, theta = self._split(z)
            x_loglik = self._x_loglik_fn(loglik_fn, theta)
            x_score = self._x_score_fn(score_fn, theta)
            core = init(xs, x_loglik, x_score, schedule.times[0])
            ll, grad = jax.value_and_grad(at_time(loglik_fn, schedule.times[0]))(z)
            dtype = core.time.dtype
            precond = self._conditional_preconditioner(x_loglik, xs, theta)
            return ALMCSamplerState(
                i=core.step,
                z=z,
                score=core.score,
                measurement_loglik=ll,
                measurement_loglik_grad=grad,
                time=core.time,
                step_size=jnp.zeros((), dtype),
                diverging=jnp.zeros((), bool),
                num_diverging=jnp.zeros((), jnp.int32),
                theta_step_size=jnp.asarray(self._theta_step_size, dtype),
                theta_accept_prob=jnp.zeros((), dtype),
                preconditioner=precond,
                rng_key=key,
            )

        state = jax.vmap(one)(z, rng_key) if batched else one(z, rng_key)
        self._sample_fn = self.sample
        return state

    @staticmethod
    def _standard_normal(key, tree):
        return standard_normal_like(jax.random.fold_in(key, 1), tree)

    # -- one step ----------------------------------------------------------------------
    def sample(self, state, model_args, model_kwargs):
        r"""One step: ALMC on the ScorePrior sites, then MALA on the other sites.

        The ScorePrior sites move by the annealed Langevin update with the other
        sites fixed; then the other sites (noise scales, forward-model parameters)
        take one Metropolis-adjusted Langevin step on their exact conditional
        ``∝ e^{-R}`` given the new signal. Unadjusted Langevin on such sites (a
        log-scale with exponential curvature) overshoots and explodes; the MALA step
        cannot, and its step size adapts to 57 % acceptance during warmup.
        """
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)
        kernel = build_kernel()
        batched = not is_prng_key(state.rng_key)
        # Every chain is at the same step: read the index unbatched so the warm-start
        # branch stays a real branch (no score evaluation) under vectorized chains.
        i = state.i[0] if batched else state.i
        in_warmup = i < self._num_warmup

        def one(st):
            rng_key, key_x, key_theta = jax.random.split(st.rng_key, 3)
            xs, theta = self._split(st.z)
            x_grad, _ = self._split(st.measurement_loglik_grad)
            x_loglik = self._x_loglik_fn(loglik_fn, theta)
            core = ALMCState(xs, st.score, st.measurement_loglik, x_grad, st.time, st.i)
            precond = st.preconditioner
            if theta and self._preconditioner is not None:
                # M may depend on the other sites (e.g. (I + AᵀA/σ²)^{-1}): recompute
                # it from their current values. Given those values M is constant, so
                # the signal update still targets its exact conditional.
                precond = self._conditional_preconditioner(x_loglik, xs, theta)
            new, info = kernel(
                key_x,
                core,
                x_loglik,
                self._x_score_fn(score_fn, theta),
                step_params(self._schedule, i, precond),
            )
            diverging = info.is_diverging
            if theta:
                z, ll, grad, theta_h, accept, theta_bad = self._theta_step(
                    key_theta,
                    at_time(loglik_fn, new.time),
                    new.position,
                    theta,
                    st.theta_step_size,
                    in_warmup,
                )
                diverging = diverging | theta_bad
            else:
                z, ll = new.position, new.loglikelihood
                grad, theta_h, accept = (
                    new.loglikelihood_grad,
                    st.theta_step_size,
                    (st.theta_accept_prob),
                )
            return ALMCSamplerState(
                i=new.step,
                z=z,
                score=new.score,
                measurement_loglik=ll,
                measurement_loglik_grad=grad,
                time=new.time,
                step_size=info.step_size.astype(st.step_size.dtype),
                diverging=diverging,
                num_diverging=st.num_diverging + diverging.astype(jnp.int32),
                theta_step_size=theta_h,
                theta_accept_prob=accept,
                preconditioner=precond,
                rng_key=rng_key,
            )

        return jax.vmap(one)(state) if batched else one(state)

    @staticmethod
    def _theta_step(key, loglik_fn, xs, theta, h, adapt):
        """MALA on the non-score sites given the signal ``xs``; adapts ``h``."""
        key_prop, key_acc = jax.random.split(key)
        flat, unravel = ravel_pytree(theta)
        dtype = flat.dtype

        def full(v):
            ll, grad = jax.value_and_grad(loglik_fn)({**xs, **unravel(v)})
            g_theta, _ = ravel_pytree({k: grad[k] for k in theta})
            return ll, grad, g_theta

        ll0, grad0, g0 = full(flat)
        noise = jax.random.normal(key_prop, flat.shape, dtype)
        prop = flat + h * g0 + jnp.sqrt(2 * h) * noise
        ll1, grad1, g1 = full(prop)

        def log_q(to, frm, g):
            return -jnp.sum((to - frm - h * g) ** 2) / (4 * h)

        log_ratio = ll1 - ll0 + log_q(flat, prop, g1) - log_q(prop, flat, g0)
        finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(g1))
        log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
        accept_prob = jnp.minimum(1.0, jnp.exp(log_ratio)).astype(dtype)
        accept = jnp.log(jax.random.uniform(key_acc, dtype=dtype)) < log_ratio
        z = {**xs, **unravel(jnp.where(accept, prop, flat))}
        ll = jnp.where(accept, ll1, ll0)
        grad = jax.tree.map(lambda a, b: jnp.where(accept, a, b), grad1, grad0)
        # Robbins-Monro on log h during warmup only (frozen while sampling).
        new_h = h * jnp.exp(0.05 * (accept_prob - _THETA_TARGET_ACCEPT))
        h = jnp.where(adapt, new_h, h).astype(dtype)
        return z, ll, grad, h, accept_prob, jnp.logical_not(finite)


class ALMCSMCSamplerState(NamedTuple):
    """State of the :class:`ALMCSMC` ensemble kernel: the fields of
    :class:`ALMCSamplerState` batched over particles, the particle weights, and one
    ``rng_key`` for the whole ensemble (NumPyro's contract for ensemble kernels).

    ``log_weight`` are the normalised log-weights (uniform after the path: the
    last warmup step resamples); ``ancestor`` the index of each particle's
    starting ancestor; ``log_evidence_ratio`` the running ``log Z_t − log Z_∞``;
    ``ess`` and ``resampled`` describe the last step (replicated per particle so
    that NumPyro can collect them as extra fields).

    Examples
    --------
    >>> import numpyro
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", ScorePrior(lambda x, t: -x, event_shape=(2,)))
    >>> mcmc = MCMC(ALMCSMC(model), num_warmup=20, num_samples=1, num_chains=8,
    ...             chain_method="vectorized", progress_bar=False)
    >>> mcmc.run(jax.random.key(0))
    >>> state = mcmc.last_state
    >>> state.log_weight.shape, state.z["x"].shape, int(state.i[0])
    ((8,), (8, 2), 21)
    """

    i: Array
    z: ArrayTree
    score: ArrayTree
    measurement_loglik: Array
    measurement_loglik_grad: ArrayTree
    time: Array
    step_size: Array
    diverging: Array
    num_diverging: Array
    theta_step_size: Array
    theta_accept_prob: Array
    preconditioner: object
    log_weight: Array
    ancestor: Array
    log_evidence_ratio: Array
    num_resampling: Array
    ess: Array
    resampled: Array
    rng_key: Array


_BASE_FIELDS = tuple(f for f in ALMCSamplerState._fields if f != "rng_key")


class ALMCSMC(ALMC):
    r"""ALMC with Feynman–Kac weights (ALMC-SMC) as a NumPyro *ensemble* kernel.

    The chains are the particles of :func:`numpyro_almc.run_almc_smc`: during warmup
    (the warm start and the annealing path) each particle makes the move of
    :class:`ALMC`, is reweighted by ``log p_{t'}(x) − log p_t(x)`` computed from the
    score alone (``∂_t log p_t = d + x·s + ∇·s + |s|²``), and the ensemble is
    resampled when its ESS drops below ``ess_threshold · N``. The last warmup step
    resamples to equal weights, so the sampling phase (Langevin at ``τ``) yields
    equally weighted draws whose mode weights are those of ``μ_τ`` as ``N → ∞`` --
    where plain ALMC freezes them at a high-noise posterior's.

    Run it with ``chain_method="vectorized"``; ``num_chains`` is the number of
    particles. Other latent sites (noise scale, forward-model parameters) take the
    MALA step of :class:`ALMC`; the weights need only the ScorePrior sites' score,
    because ``R`` cancels in the ratio of neighbouring targets.

    Parameters
    ----------
    model, potential_fn, score_fn
        As in :class:`ALMC`.
    ess_threshold
        Resample when ``ESS < ess_threshold · N`` (0: only at the end of the path).
    resampling
        ``"systematic"``, ``"stratified"``, ``"residual"`` or ``"multinomial"``.
    divergence, num_probes
        ``∇·s`` exactly (``"exact"``: ``d`` JVPs per particle and step, for small
        ``d``) or by Hutchinson's estimator with ``num_probes`` probes.
    quadrature, warm_start_correction
        As in :func:`numpyro_almc.run_almc_smc`.
    **kwargs
        Every other argument of :class:`ALMC` (schedule knobs, preconditioner, ...).

    Notes
    -----
    ``mcmc.last_state.log_evidence_ratio[0]`` estimates ``log Z_τ − log Z_∞`` with
    ``Z_t = ∫ p_t(x) e^{-R} dx dθ``; :meth:`log_evidence_ratio` returns it with its
    Lee–Whiteley standard error. Collect ``ess`` and ``resampled`` with
    ``mcmc.warmup(..., extra_fields=("ess", "resampled"), collect_warmup=True)``
    to see the resampling events along the path.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model(y=None):
    ...     x = numpyro.sample("x", ScorePrior(lambda x, t: -x, event_shape=(2,)))
    ...     numpyro.sample("y", dist.Normal(x.sum(), 0.5), obs=y)
    >>> mcmc = MCMC(ALMCSMC(model), num_warmup=100, num_samples=2, num_chains=32,
    ...             chain_method="vectorized", progress_bar=False)
    >>> mcmc.run(jax.random.key(0), y=1.0)
    >>> mcmc.get_samples()["x"].shape
    (64, 2)

    References
    ----------
    Del Moral, Doucet, Jasra. Sequential Monte Carlo samplers. JRSS B, 2006.
    Parulekar, Rout, Shanmugam, Shakkottai. arXiv:2508.07631.
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        score_fn=None,
        *,
        ess_threshold: float = 0.5,
        resampling: str = "systematic",
        divergence: str = "exact",
        num_probes: int = 1,
        quadrature: str = "right",
        warm_start_correction: str = "tail",
        **kwargs,
    ):
        super().__init__(model, potential_fn, score_fn, **kwargs)
        num_probes = check_smc_options(
            ess_threshold=ess_threshold,
            resampling=resampling,
            divergence=divergence,
            num_probes=num_probes,
            quadrature=quadrature,
            warm_start_correction=warm_start_correction,
        )
        self._ess_threshold = float(ess_threshold)
        self._resampling = resampling
        self._weight_options = dict(
            divergence=divergence,
            num_probes=num_probes,
            quadrature=quadrature,
            warm_start_correction=warm_start_correction,
        )

    @property
    def is_ensemble_kernel(self):
        return True

    def get_diagnostics_str(self, state):
        return (
            f"t={float(state.time[0]):.3g}, ESS {float(state.ess[0]):.0f}, "
            f"{int(state.num_resampling[0])} resamplings, "
            f"{int(jnp.sum(state.num_diverging))} divergences"
        )

    def wrap_model(self, wrapper):
        raise NotImplementedError(
            "ALMCSMC moves the whole ensemble at once and cannot be a block of "
            "numpyro.infer.Gibbs; use ALMC there."
        )

    def log_evidence_ratio(self, state: ALMCSMCSamplerState) -> tuple[Array, Array]:
        """``(log Z_τ − log Z_∞, its Lee–Whiteley standard error)`` from a state
        after warmup (``mcmc.last_state``)."""
        smc_state = SMCState(
            particles=None,
            log_weights=state.log_weight,
            ancestors=state.ancestor,
            log_evidence_ratio=state.log_evidence_ratio[0],
            num_resampling=state.num_resampling[0],
        )
        return state.log_evidence_ratio[0], lee_whiteley_log_se(smc_state)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        if is_prng_key(rng_key):
            raise ValueError(
                "ALMCSMC is an ensemble kernel: run it with "
                "MCMC(..., num_chains=N, chain_method='vectorized'); num_chains is "
                "the number of particles (at least 2)."
            )
        n = rng_key.shape[0]
        if n < 2:
            raise ValueError("ALMCSMC needs num_chains >= 2 particles.")
        base = super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        dtype = base.time.dtype
        key = jax.random.fold_in(rng_key[0], 2)

        def per_particle(value, dt):
            return jnp.full((n,), value, dtype=dt)

        return ALMCSMCSamplerState(
            **{f: getattr(base, f) for f in _BASE_FIELDS},
            log_weight=per_particle(-math.log(n), dtype),
            ancestor=jnp.arange(n, dtype=jnp.int32),
            log_evidence_ratio=per_particle(0.0, dtype),
            num_resampling=per_particle(0, jnp.int32),
            ess=per_particle(n, dtype),
            resampled=per_particle(False, bool),
            rng_key=key,
        )

    def sample(self, state, model_args, model_kwargs):
        n = state.log_weight.shape[0]
        dtype = state.log_weight.dtype
        rng_key, key_moves, key_probe, key_resample = jax.random.split(state.rng_key, 4)
        base = ALMCSamplerState(
            **{f: getattr(state, f) for f in _BASE_FIELDS},
            rng_key=jax.random.split(key_moves, n),
        )
        i, time = state.i[0], state.time[0]
        moved = super().sample(base, model_args, model_kwargs)
        next_time = moved.time[0]

        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)
        xs, theta = self._split(moved.z)

        def x_score(x, t, theta_one):
            return self._x_score_fn(score_fn, theta_one)(x, t)

        inc = prior_log_weight_increments(
            xs,
            moved.score,
            time,
            next_time,
            x_score,
            key_probe,
            context=theta,
            **self._weight_options,
        )
        # On the noised path the likelihood changes with t too (0 otherwise).
        inc = inc + likelihood_log_weight_increments(
            loglik_fn, moved.z, moved.measurement_loglik, time, next_time
        )
        log_w, log_increment, ess = reweight(state.log_weight, inc, moved.diverging)
        # The last warmup step resamples to equal weights: the sampling phase then
        # runs equally weighted chains, as NumPyro's draws assume.
        last_warmup = i + 1 == self._num_warmup
        threshold = jnp.where(last_warmup, 2.0, self._ess_threshold).astype(dtype)
        idx, log_w, resampled = resample_if_degenerate(
            key_resample, log_w, ess, threshold, RESAMPLING_SCHEMES[self._resampling]
        )
        moved = jax.tree.map(lambda a: a[idx], moved)

        def per_particle(value):
            return jnp.broadcast_to(value, (n,))

        return ALMCSMCSamplerState(
            **{f: getattr(moved, f) for f in _BASE_FIELDS},
            log_weight=log_w,
            ancestor=state.ancestor[idx],
            log_evidence_ratio=per_particle(
                state.log_evidence_ratio[0] + log_increment
            ),
            num_resampling=state.num_resampling + resampled.astype(jnp.int32),
            ess=per_particle(ess.astype(dtype)),
            resampled=per_particle(resampled),
            rng_key=rng_key,
        )
