"""The NumPyro ``ALMC`` kernel: a thin façade over the ALMC move."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.initialization import init_to_median
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import identity, is_prng_key

from numpyro_almc._validate import (
    check_choice,
    check_divergence_threshold,
    check_key,
    check_positive,
)
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc.infer.model_fns import (
    conditional_loglik,
    conditional_score,
    init_model,
    joint_fns,
)
from numpyro_almc.infer.move import ALMCSamplerState, ChainMove, split_sites
from numpyro_almc.infer.preconditioning import (
    auto_description,
    conditional_preconditioner,
)
from numpyro_almc.mcmc._checks import at_time
from numpyro_almc.mcmc.almc import init
from numpyro_almc.mcmc.finish import FinalStage, as_final_stage
from numpyro_almc.path.preconditioners import check_preconditioner_values
from numpyro_almc.path.schedules import (
    ALMCSchedule,
    budget_schedule,
    check_schedule,
)
from numpyro_almc.run.chains import (
    FINISH_KEYS,
    THETA_KEYS,
    offset_key,
    standard_normal_like,
)
from numpyro_almc.run.health import check_chains, check_smc

__all__ = ["ALMC", "ALMCSamplerState"]


_logger = logging.getLogger("numpyro_almc")


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
    potential_fn
        Without a model: ``potential_fn(z) = R(z)`` (minus the log likelihood) of the
        whole position ``z``, with ``score_fn`` (pass ``init_params`` to run).
    score_fn
        Without a model: the prior score ``score_fn(z, t)`` of the whole position
        ``z``.
    schedule
        An explicit :class:`ALMCSchedule`; then ``num_warmup`` must equal
        ``schedule.num_steps``.
    step_size
        ``δ`` of the default :func:`budget_schedule` built from ``num_warmup``.
    early_stop_time
        ``τ`` of the default :func:`budget_schedule`.
    initial_time
        ``T`` of the default :func:`budget_schedule`.
    grid
        Time grid of the default :func:`budget_schedule`.
    step_rule
        Step rule of the default :func:`budget_schedule`.
    num_warm_start_steps
        Warm-start length (default: a tenth of ``num_warmup``, at most 100).
    warm_start_step_size
        Warm-start step size ``h`` (default ``min(step_size, 0.5)``). Each chain's
        warm-start steps are at most ``1/λ̂``, ``λ̂`` the largest eigenvalue of
        ``M (I + ∇²R)`` at its start (:func:`numpyro_almc.mcmc.init`), so a stiff
        likelihood without a preconditioner cannot blow the warm start up.
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
        builds a dense Hessian up to ``preconditioning.AUTO_DENSE_MAX_DIM`` (2048)
        ScorePrior numbers; above that it takes the Hessian's diagonal once, at the
        start, and says so in a log line (``logging.getLogger("numpyro_almc")``).
    theta_step_size
        Initial MALA step size of the sites that are not ScorePriors (adapted to 57 %
        acceptance during warmup).
    init_strategy
        NumPyro init strategy for the sites that are not ScorePriors.
    likelihood_path
        ``"paper"`` (default): the likelihood as written. ``"noised"``: the model's
        Gaussian observation is replaced along the path by its noised version
        (:mod:`numpyro_almc.infer.model_fns`); with :class:`ALMCSMC` this is the
        best ALMC-family sampler we measured (``benchmarks/results``); a model
        without such an observation raises, saying why. ``"auto"``: ``"noised"``
        where the model's observation allows it, ``"paper"`` otherwise; which one
        it took, and why, goes to a log line (``logging.getLogger("numpyro_almc")``)
        at ``init``; with ``potential_fn`` (no model to read) ``"auto"`` is
        ``"paper"``. ``ALMC`` takes ``"paper"`` unless told otherwise, as measured
        (``benchmarks/numpyro_defaults.py``): on the digits it has the best or
        tied PSNR and its 90 % intervals over-cover slightly, where the noised
        path loses 0.6–2.7 dB; on multimodal problems neither path gets ``ALMC``'s
        mode weights right (use :class:`ALMCSMC`, which takes ``"auto"``).
    final_stage
        None (default), True, ``"auto"`` or a :class:`~numpyro_almc.mcmc.FinalStage`:
        each draw of the sampling phase is carried from ``τ`` to ``t = 0`` by a short
        reverse diffusion (:func:`~numpyro_almc.mcmc.finish`; ``num_steps − 1`` network
        passes per draw) and collected instead of the chain's position at ``τ``,
        which carries the OU noise of time ``τ``; the chain itself goes on at
        ``τ``. Needs ``likelihood_path="noised"`` (or ``"auto"`` taking it). The
        position at ``τ`` stays available as the extra field ``"z"``.
        ``"auto"``: the default ``FinalStage()`` where the run takes the noised path,
        none otherwise (the draws are then the positions at ``τ``; a log line says
        which).
    divergence_threshold
        A signal step that lowers ``log L`` by more than this many nats is
        reverted and flagged (the extra field ``"diverging"``), as a non-finite
        one is. None: :func:`~numpyro_almc.mcmc.default_divergence_threshold` of
        the number of ScorePrior numbers (``2d + 10√(2d) + 50``); ``inf``: only
        non-finite steps.
    strict
        When the path ends (the last warmup step) a run with more than 1 % of
        its steps reverted, a final time that is not ``τ`` or (``ALMCSMC``) a
        collapsed ensemble gives an ``ALMCRunWarning``; with ``strict=True`` the
        run stops with an error carrying the same message (raised inside JAX's
        host callback, so NumPyro's ``run`` raises it as a JAX runtime error).

    Notes
    -----
    The class is long because NumPyro's ``MCMCKernel`` contract is a dozen methods
    and properties (``init``, ``sample``, ``sample_field``, ``default_fields``,
    ``postprocess_fn``, ``get_diagnostics_str``, ``wrap_model``, ``refresh``,
    pickling); the work is elsewhere: one chain's step is
    :class:`numpyro_almc.infer.move.ChainMove` (over
    :func:`numpyro_almc.mcmc.build_kernel`), the preconditioner policy
    :mod:`numpyro_almc.infer.preconditioning`, the model plumbing
    :mod:`numpyro_almc.infer.model_fns`, the other sites' step
    :mod:`numpyro_almc.infer.mala`.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro_almc import ScorePrior
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
        final_stage: FinalStage | bool | str | None = None,
        divergence_threshold: float | None = None,
        strict: bool = False,
    ):
        if not isinstance(strict, bool):
            raise TypeError(f"`strict` must be True or False, got {strict!r}.")
        _check_arguments(
            model,
            potential_fn,
            score_fn,
            schedule=schedule,
            preconditioner=preconditioner,
            num_warm_start_steps=num_warm_start_steps,
            likelihood_path=likelihood_path,
            schedule_knobs=dict(
                step_size=step_size,
                early_stop_time=early_stop_time,
                initial_time=initial_time,
                grid=grid,
                step_rule=step_rule,
                warm_start_step_size=warm_start_step_size,
            ),
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
        # The stage asked for (a FinalStage, "auto" or None); `_final_stage` is the
        # one the run uses, resolved at init ("auto": where the noised path is).
        self._final_stage_choice = _check_final_stage(
            final_stage, likelihood_path, model
        )
        self._final_stage = None
        self._theta_step_size = check_positive("theta_step_size", theta_step_size)
        self._divergence_threshold = check_divergence_threshold(divergence_threshold)
        self._strict = strict
        self._init_strategy = init_strategy
        self._parts = None
        self._chain_move = None
        self._sample_fn = None

    # -- the NumPyro kernel contract ---------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def sample_field(self):
        return "z" if self._final_stage_choice is None else "draw"

    @property
    def default_fields(self):
        return (
            self.sample_field,
            "diverging",
            "step_size",
            "time",
            "measurement_loglik",
        )

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
        if self._parts is None:
            return identity
        return self._parts.postprocess_fn(*model_args, **model_kwargs)

    @property
    def _score_sites(self):
        return None if self._parts is None else self._parts.score_sites

    @property
    def _observation(self):
        return None if self._parts is None else self._parts.observation

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        return state

    def wrap_model(self, wrapper):
        if self._model is None:
            raise ValueError("`wrap_model` needs a kernel built from a model.")
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._parts = None
        kernel._chain_move = None
        kernel._sample_fn = None
        return kernel

    def refresh(self, state, model_args, model_kwargs):
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)

        def one(st):
            ll, grad = jax.value_and_grad(at_time(loglik_fn, st.time))(st.z)
            xs, theta = self._split(st.z)
            score = conditional_score(score_fn, theta)(xs, st.time)
            return st._replace(
                score=score, measurement_loglik=ll, measurement_loglik_grad=grad
            )

        return one(state) if is_prng_key(state.rng_key) else jax.vmap(one)(state)

    # -- set-up ------------------------------------------------------------------------
    def _make_schedule(self, num_warmup):
        return numpyro_schedule(
            num_warmup,
            self._given_schedule,
            self._num_warm_start_steps,
            self._schedule_kwargs,
        )

    def _split(self, z):
        return split_sites(self._score_sites, z)

    def _joint_fns(self, model_args, model_kwargs):
        """``(loglik_fn, score_fn)`` on the unconstrained position for these args."""
        if self._model is None:
            potential = self._potential_fn
            return (lambda z: -potential(z)), self._score_fn
        return joint_fns(self._model, self._parts, model_args, model_kwargs)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        # MCMC.run's key as the kernel receives it: one key, or one per chain
        # (NumPyro splits it for num_chains > 1).
        if not isinstance(rng_key, jax.core.Tracer):
            check_key(rng_key, allow_batch=True)
        self._schedule = self._make_schedule(num_warmup)
        self._num_warmup = num_warmup
        batched = not is_prng_key(rng_key)
        # The drivers' key stream (run/chains.py): the start from split(k)[0], the
        # signal's steps from split(k)[1], which the state keeps as its rng_key (so
        # a step derives one key, not two); the other sites' init from fold_in(k, 3)
        # and their steps from the second half of the run key's fold_in range.
        over = jax.vmap if batched else (lambda f: f)
        key_init = over(lambda k: jax.random.fold_in(k, 3))(rng_key)
        key_start = over(lambda k: jax.random.split(k)[0])(rng_key)
        run_key = over(lambda k: jax.random.split(k)[1])(rng_key)
        if self._model is not None:
            z, self._parts = init_model(
                self._model,
                key_init,
                model_args,
                model_kwargs,
                self._init_strategy,
                self._likelihood_path,
                find_operator=isinstance(self._preconditioner, str),
            )
            # The paper starts ScorePrior sites from N(0, I), not from a prior draw
            # (which would cost a full reverse diffusion).
            xs = {k: z[k] for k in self._score_sites}
            z = {**z, **over(standard_normal_like)(key_start, xs)}
            if init_params is not None:
                _check_init_params(init_params, z)
                z = {**z, **init_params}
        else:
            if init_params is None:
                raise ValueError("With `potential_fn`, pass `init_params` to run().")
            z = init_params
        if self._model is not None and self._parts.path_note is not None:
            _logger.info(self._parts.path_note)
        self._final_stage = _resolve_final_stage(self._final_stage_choice, self._parts)
        if self._final_stage is not None and not self._parts.noised:
            # only likelihood_path="auto" gets here (the constructor refuses
            # "paper" with a stage)
            raise ValueError(
                "final_stage needs the noised path, and "
                f"{self._parts.path_note} Pass final_stage=None, or write the "
                "observation as a Gaussian affine in the ScorePrior sites."
            )
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)
        schedule = self._schedule
        if self._model is not None and isinstance(self._preconditioner, str):
            xs = {k: z[k] for k in self._score_sites}
            _logger.info(auto_description(self._parts, xs))

        def one(z, key):
            xs, theta = self._split(z)
            x_loglik = conditional_loglik(loglik_fn, theta)
            x_score = conditional_score(score_fn, theta)
            precond = conditional_preconditioner(
                self._preconditioner, self._parts, x_loglik, xs, theta
            )
            core = init(
                xs, x_loglik, x_score, schedule.times[0], preconditioner=precond
            )
            ll, grad = jax.value_and_grad(at_time(loglik_fn, schedule.times[0]))(z)
            dtype = core.time.dtype
            return ALMCSamplerState(
                i=core.step,
                z=z,
                score=core.score,
                measurement_loglik=ll,
                measurement_loglik_grad=grad,
                time=core.time,
                step_size=jnp.zeros((), dtype),
                warm_start_step_size=core.warm_start_step_size,
                diverging=jnp.zeros((), bool),
                num_diverging=jnp.zeros((), jnp.int32),
                theta_step_size=jnp.asarray(self._theta_step_size, dtype),
                theta_accept_prob=jnp.zeros((), dtype),
                preconditioner=precond,
                draw=None if self._final_stage_choice is None else z,
                rng_key=key,
            )

        # One compiled call: run eagerly, vmap dispatches and compiles every
        # primitive on its own (hundreds of small XLA compilations per run).
        state = jax.jit(jax.vmap(one) if batched else one)(z, run_key)
        self._chain_move = ChainMove(
            score_sites=self._score_sites,
            preconditioner=self._preconditioner,
            parts=self._parts,
            schedule=schedule,
            num_warmup=num_warmup,
            divergence_threshold=self._divergence_threshold,
            final_stage=self._final_stage,
            keep_draw=self._final_stage_choice is not None,
        )
        self._sample_fn = self.sample
        return state

    # -- one step ----------------------------------------------------------------------
    def sample(self, state, model_args, model_kwargs):
        r"""One step: ALMC on the ScorePrior sites, then MALA on the other sites.

        The ScorePrior sites move by the annealed Langevin update with the other
        sites fixed; then the other sites (noise scales, forward-model parameters)
        take one Metropolis-adjusted Langevin step on their exact conditional
        ``∝ e^{-R}`` given the new signal. Unadjusted Langevin on such sites (a
        log-scale with exponential curvature) overshoots and explodes; the MALA step
        cannot, and its step size adapts to 57 % acceptance during warmup. Its drift
        is truncated to norm 1 (MALTA, Roberts & Tweedie 1996), so far from the fit,
        where the gradient in log σ reaches 1e4, a proposal moves σ by at most a
        factor ``e`` instead of overflowing.
        """
        loglik_fn, score_fn = self._joint_fns(model_args, model_kwargs)
        batched = not is_prng_key(state.rng_key)
        # Every chain is at the same step: read the index unbatched so the warm-start
        # branch stays a real branch (no score evaluation) under vectorized chains.
        i = state.i[0] if batched else state.i

        def one(st):
            key_x = jax.random.fold_in(st.rng_key, i)
            key_theta = offset_key(st.rng_key, THETA_KEYS, i)
            # The draw after step i (counter i + 1), as run_almc's final draw.
            key_finish = offset_key(st.rng_key, FINISH_KEYS, i + 1)
            return self._chain_move(
                key_x, key_theta, st, i, loglik_fn, score_fn, key_finish
            )

        new = jax.vmap(one)(state) if batched else one(state)
        report_at_path_end(self, i, new)
        return new


def _check_final_stage(final_stage, likelihood_path, model):
    """The validated :class:`FinalStage`, ``"auto"`` or None of the NumPyro kernels:
    a stage only on the noised path of a model."""
    if final_stage is None or final_stage is False:
        return None
    if isinstance(final_stage, str):
        check_choice("final_stage", final_stage, ("auto",))
        return final_stage
    if model is None or likelihood_path not in ("noised", "auto"):
        raise ValueError(
            "final_stage continues the noised-likelihood path down to t = 0: use it "
            "with a model and likelihood_path='noised' or 'auto' (the paper's path "
            "has no exact reverse step from its draws at τ)."
        )
    return as_final_stage(final_stage)


def _resolve_final_stage(choice, parts):
    """The stage a run uses: ``"auto"`` is the default :class:`FinalStage` where the
    run takes the noised path (a model whose observation allows it), none
    otherwise; anything else as given."""
    if choice != "auto":
        return choice
    if parts is not None and parts.noised:
        _logger.info(
            "ALMC: final_stage='auto' carries each draw from tau to t = 0 "
            f"(FinalStage(), {FinalStage().num_steps - 1} network passes per draw)."
        )
        return FinalStage()
    _logger.info(
        "ALMC: final_stage='auto' adds no final stage: the run is not on the noised "
        "path; the draws are of mu_tau."
    )
    return None


def _check_init_params(init_params, z) -> None:
    """``init_params`` (unconstrained values) against the model's sites ``z``:
    known names, the sites' shapes (with the chain axis where ``z`` has one),
    floating dtypes and finite values; eager, on concrete values."""
    if not isinstance(init_params, dict):
        raise TypeError(
            "`init_params` must be a dict from latent site names to unconstrained "
            f"values, got {type(init_params).__name__}."
        )
    unknown = sorted(set(init_params) - set(z))
    if unknown:
        raise ValueError(
            f"`init_params` names {unknown}, which are not latent sites of the "
            f"model (its sites: {sorted(z)})."
        )
    for name, value in init_params.items():
        if not isinstance(value, jax.core.Tracer):
            value = np.asarray(value)  # numpy: init may run inside a trace (pmap)
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(
                f"`init_params['{name}']` must be floating point, got {value.dtype}."
            )
        if value.shape != jnp.shape(z[name]):
            raise ValueError(
                f"`init_params['{name}']` has shape {value.shape}; the site needs "
                f"{jnp.shape(z[name])} (with a leading chain axis for several chains)."
            )
        if not isinstance(value, jax.core.Tracer) and not np.all(np.isfinite(value)):
            raise ValueError(f"`init_params['{name}']` holds NaN or infinite values.")


def _check_arguments(
    model,
    potential_fn,
    score_fn,
    *,
    schedule,
    preconditioner,
    num_warm_start_steps,
    likelihood_path,
    schedule_knobs,
):
    """Every argument check of :class:`ALMC`, eagerly (before any run)."""
    check_choice("likelihood_path", likelihood_path, ("paper", "noised", "auto"))
    if likelihood_path == "noised" and model is None:
        raise ValueError(
            "likelihood_path='noised' reads the Gaussian observation from a model; "
            "with `potential_fn` pass a noised_gaussian_likelihood to run_almc "
            "instead."
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
    if schedule is not None:
        check_schedule(schedule)
    if isinstance(preconditioner, str) and preconditioner != "auto":
        raise ValueError(
            f"`preconditioner` must be 'auto', None or a preconditioner object, "
            f"got {preconditioner!r}."
        )
    is_array = isinstance(preconditioner, jax.Array | np.ndarray | list)
    if is_array or (
        not isinstance(preconditioner, str | None | Callable)
        and not (hasattr(preconditioner, "apply") or hasattr(preconditioner, "at"))
    ):
        raise TypeError(
            "`preconditioner` must be 'auto', None, a preconditioner object (e.g. "
            "linear_gaussian_preconditioner(A, sigma)) or a function of the other "
            f"sites returning one; got {type(preconditioner).__name__}. Wrap a "
            "matrix with numpyro_almc.path.dense_preconditioner."
        )
    check_preconditioner_values(preconditioner)
    if num_warm_start_steps is not None:
        _check_count("num_warm_start_steps", num_warm_start_steps)
    # Validate the schedule knobs now, not at the first run.
    budget_schedule(100, num_warm_start_steps=0, **schedule_knobs)


def numpyro_schedule(num_warmup, given, num_warm_start_steps, schedule_kwargs):
    """The path NumPyro's warmup runs: the given schedule (``num_warmup`` must be
    its length) or ``budget_schedule`` of ``num_warmup`` steps, the warm start a
    tenth of them (at most 100) unless given."""
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
    m = num_warm_start_steps
    if m is None:
        m = min(100, num_warmup // 10)
    if m > num_warmup - 2:
        raise ValueError(
            f"num_warm_start_steps={m} leaves no annealing in num_warmup="
            f"{num_warmup}; lower it or raise num_warmup."
        )
    return budget_schedule(
        num_warmup - m + 1, num_warm_start_steps=m, **schedule_kwargs
    )


def report_at_path_end(kernel, i, state, smc=None):
    """After the last warmup step (the end of the annealing path), a Python warning
    (:mod:`numpyro_almc.run.health`) when chains reverted more than 1 % of their
    steps or did not reach ``τ`` (for ``ALMCSMC`` also a collapsed ensemble).
    NumPyro has no hook after a run, so a host callback does it; ``i`` is shared by
    the chains, so this is a real branch taken once."""
    tau = kernel.schedule.early_stop_time
    where = f"MCMC({type(kernel).__name__})"
    num_warmup, strict = kernel._num_warmup, kernel._strict

    def report(num_diverging, time, tau, smc_values):
        check_chains(num_diverging, num_warmup, time, tau, strict=strict, where=where)
        if smc_values is not None:
            ess, log_evidence_ratio, n = smc_values
            check_smc(ess, log_evidence_ratio, n, strict=strict, where=where)

    def callback(_):
        # τ through the callback too: in the kernel it is a traced value.
        jax.debug.callback(report, state.num_diverging, state.time, tau, smc)

    jax.lax.cond(i + 1 == num_warmup, callback, lambda _: None, None)
