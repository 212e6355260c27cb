r"""A NumPyro model as functions of the position: the noised-likelihood path.

:class:`~numpyro_almc.ALMC` and :class:`~numpyro_almc.ALMCSMC` with
``likelihood_path="noised"`` replace the Gaussian observation of the model by its
noised version along the path (:func:`~numpyro_almc.noised_gaussian_likelihood`):
with ``y ~ N(A x + b, σ² I)``, ``x`` the flattened ScorePrior sites,

.. math::

    L_t(y \mid x, θ) = N\big(y - b;\; e^{t} A x,\; σ^2 I + (e^{2t} − 1) A A^T\big).

It is recognised from the model itself: exactly one observed site depends on the
ScorePrior sites; it is a ``Normal`` (possibly ``.to_event``); its location is affine
in them (checked numerically at a random point); its scale does not depend on them
and is one number (isotropic noise). ``b`` and ``σ`` may depend on the other latent
sites (an unknown noise scale); ``A`` may not (then this raises). ``A`` is factored
once (SVD), so a changed ``σ`` costs no factorisation. The value used along the path
is ``log N(e^{-t}(y − b); A x, C_t)`` with ``C_t = e^{-2t} Σ_t``, which drops only a
term constant in ``x`` and ``θ`` and stays finite in the warm start (``t = ∞``).

**Operator models.** A model may write the location with a structured operator
(:mod:`numpyro_almc.operators`), ``numpyro.sample("y", dist.Normal(op(x), σ), obs=y)``
(``+ b`` allowed). Calling an operator sends a nameless NumPyro message
(:meth:`~numpyro_almc.operators.AbstractLinearOperator.__call__`); at ``init`` the
model is traced under :class:`record_operators`, which collects the operators applied.
One whose ``in_size`` and ``out_size`` fit is checked numerically at a random point,
``loc(x₁) − loc(0) = op(x₁)`` (and again with the other sites moved, so ``op`` may
not depend on them), and then ``A`` *is* the operator: no ``jacfwd``, no ``d × d``
matrix, the likelihood and the time-dependent preconditioner come from its own
factorisation and a moving ``σ`` refactors nothing. Why a message rather than
asking the user to pass the operator: the model stays the one source of truth
(the same model runs under NUTS, ``Predictive`` and here), a wrong operator cannot
be paired with a model by mistake, and the check proves the model uses it. Why not
a global registry: a NumPyro handler is scoped to one trace and composes with the
user's own handlers (``seed``, ``substitute``, ``scope``, ``block`` all pass the
message through, as they pass NumPyro's nameless ``control_flow`` messages). Write
``op(x)``, not ``op.apply(x)``, which sends nothing. Without an operator the
façade reads a dense ``A`` by ``jacfwd`` up to ``DENSE_OBSERVATION_MAX_DIM``
ScorePrior numbers and raises above it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy
from numpyro.primitives import Messenger
from numpyro.util import is_prng_key

from numpyro_almc.infer.score_prior import score_prior_as_flat
from numpyro_almc.operators._base import FORWARD_OPERATOR_MESSAGE
from numpyro_almc.path.likelihoods import (
    NoisedGaussianLikelihood,
    NoisedGaussianPreconditioner,
    NoisedOperatorLikelihood,
    NoisedOperatorPreconditioner,
    noised_gaussian_likelihood,
)
from numpyro_almc.path.preconditioners import (
    is_operator,
    linear_gaussian_preconditioner,
)
from numpyro_almc.types import Array

__all__ = [
    "DENSE_OBSERVATION_MAX_DIM",
    "LinearGaussianObservation",
    "conditional_loglik",
    "conditional_score",
    "find_linear_gaussian_observation",
    "record_operators",
]

#: Above this many ScorePrior numbers the noised path does not read a dense forward
#: matrix from a model (``jacfwd``: ``d`` model traces and a ``d_y × d`` matrix, then
#: an SVD, O(d_y d²)); write the location with an operator instead.
DENSE_OBSERVATION_MAX_DIM = 4096


class record_operators(Messenger):
    """A NumPyro handler that collects the operators applied (``op(x)``) in a model.

    ``operators`` lists them in order of first application (each once).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.handlers import seed
    >>> from numpyro_almc.operators import Mask
    >>> op = Mask(jnp.array([True, False]))
    >>> def model():
    ...     x = numpyro.sample("x", dist.Normal(jnp.zeros(2)).to_event(1))
    ...     numpyro.sample("y", dist.Normal(op(x), 0.1).to_event(1), obs=jnp.ones(2))
    >>> recorder = record_operators(seed(model, 0))
    >>> recorder()
    >>> recorder.operators == [op]
    True
    """

    def __init__(self, fn=None):
        self.operators = []
        super().__init__(fn)

    def postprocess_message(self, msg):
        if msg["type"] != FORWARD_OPERATOR_MESSAGE:
            return
        if not any(op is msg["operator"] for op in self.operators):
            self.operators.append(msg["operator"])


def _normal_of(fn):
    base = fn
    while isinstance(base, dist.Independent | dist.ExpandedDistribution):
        base = base.base_dist
    return base if isinstance(base, dist.Normal) else None


def _trace(flat_model, model_args, model_kwargs, z):
    values = constrain_fn(flat_model, model_args, model_kwargs, z)
    return trace(seed(substitute(flat_model, data=values), 0)).get_trace(
        *model_args, **model_kwargs
    )


class LinearGaussianObservation(NamedTuple):
    """The observed site ``y ~ N(A x + b(θ), σ(θ)² I)`` found in a model.

    ``A`` is the dense ``(d_y, d)`` matrix read by ``jacfwd``, or the model's own
    operator (:mod:`numpyro_almc.operators`); ``template`` the noised likelihood of
    ``A`` at ``y = 0``, ``σ = 1`` (filled in per evaluation). ``range_log_det`` (an
    operator only) is ``Σ log μ`` over the nonzero eigenvalues ``μ`` of ``A Aᵀ``,
    the value of ``log det C_t`` at ``t = ∞``, where the dense path drops the zero
    ones; None for an operator without log-determinants (then ``σ`` is known and
    the term is a constant, dropped).
    """

    site: str
    A: object
    template: NoisedGaussianLikelihood | NoisedOperatorLikelihood
    range_log_det: Array | None = None

    @property
    def is_operator(self) -> bool:
        return is_operator(self.A)

    def apply(self, x_flat: Array) -> Array:
        """``A x`` of the flattened ScorePrior sites, flattened."""
        if self.is_operator:
            return _apply_flat(self.A, x_flat)
        return self.A.astype(x_flat.dtype) @ x_flat

    def scaled_log_det(self, lik, t, dtype) -> Array:
        """``log det C_t`` of ``lik`` (``C_t = a² σ² I + (1 − a²) A Aᵀ``), over the
        directions where it is positive: the part of the normaliser that depends
        on ``σ``."""
        if not self.is_operator:
            return lik.scaled_log_det(t, dtype)
        if self.range_log_det is None:
            return jnp.zeros((), dtype)
        t = jnp.asarray(t, dtype)
        a = jnp.where(jnp.isinf(t), jnp.zeros_like(t), jnp.exp(-t))
        alpha = a**2 * lik.noise_std.astype(dtype) ** 2
        floor = jnp.sqrt(jnp.finfo(dtype).tiny).astype(dtype)
        finite = self.A.logdet_outer(jnp.maximum(alpha, floor), 1 - a**2)
        # The t = inf value only at t = inf: a σ that underflows (a² σ² < floor at a
        # finite t) keeps the finite formula, else log det would jump by
        # d_y log(1 − a²) there.
        return jnp.where(a > 0, finite, self.range_log_det).astype(dtype)


def _range_log_det(op) -> Array | None:
    """``Σ log μ`` over the nonzero eigenvalues of ``A Aᵀ`` (None without
    log-determinants): ``log det(ε I + A Aᵀ)`` less the ``ε`` of its null space,
    whose dimension comes from ``log det(ε I + 2 A Aᵀ) − log det(ε I + A Aᵀ)``
    (``log 2`` per nonzero eigenvalue)."""
    dtype = op.dtype
    eps = jnp.sqrt(jnp.finfo(dtype).tiny).astype(dtype)
    try:
        one = op.logdet_outer(eps, jnp.ones((), dtype))
    except NotImplementedError:
        return None
    two = op.logdet_outer(eps, jnp.asarray(2, dtype))
    rank = int(np.rint(float(two - one) / np.log(2.0)))
    return (one - (op.out_size - rank) * jnp.log(eps)).astype(dtype)


def _loc_scale(flat_model, model_args, model_kwargs, z, site):
    tr = _trace(flat_model, model_args, model_kwargs, z)
    normal = _normal_of(tr[site]["fn"])
    value = jnp.asarray(tr[site]["value"])
    loc = jnp.broadcast_to(normal.loc, value.shape).reshape(-1)
    scale = jnp.broadcast_to(normal.scale, value.shape).reshape(-1)
    return loc, scale, value.reshape(-1), tr[site]["fn"]


def _operator_name(op) -> str:
    return f"{type(op).__name__}(in_shape={op.in_shape}, out_shape={op.out_shape})"


def find_linear_gaussian_observation(
    flat_model, model_args, model_kwargs, z, score_sites, *, operator_only=False
) -> LinearGaussianObservation:
    """Recognise the linear-Gaussian observation of ``flat_model`` at ``z``, or raise
    a ``ValueError`` saying which condition fails (eager, before any run).

    An operator applied in the model (``op(x)``, see the module docstring) is used
    when it is the location's linear part; without one, ``A`` is read densely by
    ``jacfwd`` (at most ``DENSE_OBSERVATION_MAX_DIM`` ScorePrior numbers), unless
    ``operator_only`` (the paper path's preconditioner), which then raises.
    """
    xs = {k: z[k] for k in score_sites}
    x0, unravel = ravel_pytree(xs)

    def with_x(x_flat):
        return {**z, **unravel(x_flat)}

    recorder = record_operators()
    with recorder:
        tr0 = _trace(flat_model, model_args, model_kwargs, with_x(jnp.zeros_like(x0)))
    rng = np.random.default_rng(0)
    x1 = jnp.asarray(rng.normal(size=x0.shape), x0.dtype)
    tr1 = _trace(flat_model, model_args, model_kwargs, with_x(x1))
    observed = [
        name
        for name, s in tr0.items()
        if s["type"] == "sample" and s.get("is_observed")
    ]
    depends = []
    for name in observed:
        a = jnp.broadcast_to(
            jnp.asarray(tr0[name]["fn"].mean), jnp.shape(tr0[name]["value"])
        )
        b = jnp.broadcast_to(
            jnp.asarray(tr1[name]["fn"].mean), jnp.shape(tr1[name]["value"])
        )
        if not np.allclose(np.asarray(a), np.asarray(b)):
            depends.append(name)
    if len(depends) != 1:
        raise ValueError(
            "likelihood_path='noised' needs exactly one observed site that depends "
            f"on the ScorePrior sites {list(score_sites)}; found {depends or 'none'}. "
            "Use likelihood_path='paper' for other likelihoods."
        )
    site = depends[0]
    if _normal_of(tr0[site]["fn"]) is None:
        raise ValueError(
            f"likelihood_path='noised': the observed site '{site}' is "
            f"{type(tr0[site]['fn']).__name__}, not a Normal (optionally "
            ".to_event); the noised path is exact only for Gaussian observations. "
            "Use likelihood_path='paper'."
        )

    def loc_at(z_base, x_flat):
        return _loc_scale(
            flat_model, model_args, model_kwargs, {**z_base, **unravel(x_flat)}, site
        )

    loc0, scale0, y, _ = loc_at(z, jnp.zeros_like(x0))
    loc1, scale1, _, _ = loc_at(z, x1)
    tol = 1e-4 * (1.0 + float(jnp.max(jnp.abs(loc1))))
    candidates = [
        op
        for op in recorder.operators
        if op.in_size == x0.size and op.out_size == loc0.size
    ]
    operator = None
    for op in candidates:
        gap = float(jnp.max(jnp.abs(loc1 - loc0 - _apply_flat(op, x1))))
        if gap <= tol:
            operator = op
            break
    if operator is None and candidates:
        names = ", ".join(_operator_name(op) for op in candidates)
        raise ValueError(
            f"The location of '{site}' is not op(x) + b for the operator applied "
            f"in the model ({names}): at a random point loc(x) − loc(0) differs from "
            f"op(x) by up to {gap:.3g} (tolerance {tol:.3g}). Write the location as "
            "op(x) + b with x the ScorePrior value (flattened in the operator's "
            "in_shape; compose several operators with numpyro_almc.operators."
            "compose), or use likelihood_path='paper' without an operator."
        )
    if operator is None and operator_only:
        raise ValueError(
            f"no operator of numpyro_almc.operators is applied (as op(x)) in the "
            f"location of '{site}'."
        )
    if operator is None and x0.size > DENSE_OBSERVATION_MAX_DIM:
        raise ValueError(
            f"likelihood_path='noised' with {x0.size} ScorePrior numbers needs the "
            f"forward model of '{site}' as an operator: a dense matrix is read only up "
            f"to DENSE_OBSERVATION_MAX_DIM = {DENSE_OBSERVATION_MAX_DIM} numbers. "
            "Write dist.Normal(op(x), sigma) with an operator from "
            "numpyro_almc.operators (Mask, PeriodicConvolution, AveragePool, "
            "SubsampledDCT, DenseOperator, MatrixFreeOperator, ...), called as op(x) "
            "(op.apply(x) is invisible to the model reader), or use "
            "likelihood_path='paper'."
        )
    if operator is None:
        A = jax.jacfwd(lambda x: loc_at(z, x)[0])(jnp.zeros_like(x0))
        if float(jnp.max(jnp.abs(loc1 - (loc0 + A @ x1)))) > tol:
            raise ValueError(
                f"likelihood_path='noised': the location of '{site}' is not affine "
                "in the ScorePrior sites (checked at a random point). Use "
                "likelihood_path='paper'."
            )
    if not np.allclose(np.asarray(scale0), np.asarray(scale1)):
        raise ValueError(
            f"likelihood_path='noised': the scale of '{site}' depends on the "
            "ScorePrior sites; the noised path needs it independent of them."
        )
    if not np.allclose(np.asarray(scale0), np.asarray(scale0[0])):
        raise ValueError(
            f"likelihood_path='noised': the scale of '{site}' differs between "
            "observations; the noised path supports one noise scale (isotropic)."
        )
    theta = {k: v for k, v in z.items() if k not in score_sites}
    scale_moves = False
    if theta:
        z_moved = {**z, **{k: v + 0.37 for k, v in theta.items()}}
        depends_error = ValueError(
            f"likelihood_path='noised': the forward operator of '{site}' depends "
            "on other latent sites; only its offset and noise scale may. Use "
            "likelihood_path='paper'."
        )
        moved0, scale_moved, _, _ = loc_at(z_moved, jnp.zeros_like(x0))
        scale_moves = not np.allclose(np.asarray(scale0), np.asarray(scale_moved))
        if operator is not None:
            moved1 = loc_at(z_moved, x1)[0]
            if float(jnp.max(jnp.abs(moved1 - moved0 - _apply_flat(operator, x1)))) > (
                tol
            ):
                raise depends_error
        else:
            A_moved = jax.jacfwd(lambda x: loc_at(z_moved, x)[0])(jnp.zeros_like(x0))
            if not np.allclose(
                np.asarray(A), np.asarray(A_moved), rtol=1e-5, atol=1e-6
            ):
                raise depends_error
    if operator is None:
        template = noised_gaussian_likelihood(
            A, jnp.zeros_like(y), jnp.ones((), y.dtype)
        )
        return LinearGaussianObservation(site, A, template)
    range_log_det = _range_log_det(operator)
    if range_log_det is None and scale_moves and not operator_only:
        raise ValueError(
            f"likelihood_path='noised': the noise scale of '{site}' is a latent site "
            f"but {_operator_name(operator)} has no log-determinant, which the "
            "noised likelihood of an unknown σ needs. Use a structured operator "
            "(or DenseOperator(op.as_matrix()) at small sizes), a known σ, or "
            "likelihood_path='paper'."
        )
    template = noised_gaussian_likelihood(
        operator, jnp.zeros(operator.out_shape, operator.dtype), 1.0
    )
    return LinearGaussianObservation(site, operator, template, range_log_det)


def _apply_flat(op, x_flat):
    return op.apply(jnp.reshape(x_flat, op.in_shape)).ravel()


class NoisedModelLikelihood:
    """``(z, t) -> log L_t + log p(θ)`` (with Jacobians): the model's ``−R`` with its
    Gaussian observation replaced by the noised one (``time_dependent``);
    ``noise_std(z)`` is the observation's noise scale at ``z``;
    ``gaussian_likelihood(z)`` the :class:`~numpyro_almc.path.NoisedGaussianLikelihood`
    of the flattened ScorePrior sites at ``z``'s other sites (the final stage's exact
    likelihood step)."""

    time_dependent = True

    def __init__(self, fn, noise_std_fn, observation, gaussian_likelihood_fn):
        self._fn = fn
        self.noise_std = noise_std_fn
        self.observation = observation
        self.gaussian_likelihood = gaussian_likelihood_fn

    def __call__(self, z, t):
        return self._fn(z, t)


class _drop_log_prob(Messenger):
    """The model with one site's log density dropped (its value still observed)."""

    def __init__(self, fn, site):
        self.site = site
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.site:
            msg["fn"] = msg["fn"].mask(False)


def noised_loglik_fn(
    observation, flat_model, model_args, model_kwargs, score_sites
) -> NoisedModelLikelihood:
    """The :class:`NoisedModelLikelihood` of a model (see the module docstring)."""
    site = observation.site

    # Everything but the observation's own density (the other sites' priors and
    # Jacobians, other likelihood terms). Subtracting that density from the full
    # potential instead gives inf - inf = nan once σ underflows to 0, which left a
    # chain stuck there for good (every σ proposal nan, rejected).
    without_site = _drop_log_prob(flat_model, site)

    def rest(z):
        return -potential_energy(without_site, model_args, model_kwargs, z)

    def observed(z):
        """The noised likelihood of the flattened ScorePrior sites at ``z``'s other
        sites, and the flattened sites."""
        xs = {k: z[k] for k in score_sites}
        x_flat, _ = ravel_pytree(xs)
        loc, scale, y, _ = _loc_scale(flat_model, model_args, model_kwargs, z, site)
        offset = loc - observation.apply(x_flat).astype(loc.dtype)
        residual = jnp.reshape(y - offset, jnp.shape(observation.template.y))
        lik = observation.template._replace(y=residual, noise_std=scale[0])
        return lik, x_flat

    def loglik(z, t):
        lik, x_flat = observed(z)
        # -½ log det C_t: the part of the normaliser that depends on σ.
        log_det = observation.scaled_log_det(lik, t, x_flat.dtype)
        return rest(z) + lik(x_flat, t) - 0.5 * log_det

    def noise_std(z):
        return observation_noise_std(
            observation, flat_model, model_args, model_kwargs, z
        )

    return NoisedModelLikelihood(
        loglik, noise_std, observation, lambda z: observed(z)[0]
    )


def noised_preconditioner(
    observation, noise_std
) -> NoisedGaussianPreconditioner | NoisedOperatorPreconditioner:
    """The time-dependent ``(I + ∇²(−log L_t))^{-1}`` at noise scale ``noise_std``
    (from the operator's own factorisation when ``A`` is one)."""
    if observation.is_operator:
        return NoisedOperatorPreconditioner(observation.A, noise_std)
    return observation.template.preconditioner._replace(noise_std=noise_std)


def operator_preconditioner(observation, noise_std):
    """The paper path's ``(I + AᵀA / σ²)^{-1}`` of the model's operator at noise
    scale ``noise_std``: the inverse Hessian of ``|x|²/2 + R(x)`` in ``x``."""
    return linear_gaussian_preconditioner(observation.A, noise_std)


class ModelLikelihood:
    """``z -> −R(z)`` on the paper path, with ``noise_std(z)`` the Gaussian
    observation's noise scale (for the operator's preconditioner)."""

    def __init__(self, fn, noise_std_fn):
        self._fn = fn
        self.noise_std = noise_std_fn

    def __call__(self, z):
        return self._fn(z)


def observation_noise_std(observation, flat_model, model_args, model_kwargs, z):
    """The noise scale ``σ(θ)`` of the observation at ``z``."""
    return _loc_scale(flat_model, model_args, model_kwargs, z, observation.site)[1][0]


class _XLikelihood:
    """``-R`` as a function of the ScorePrior sites (``xs``, or ``(xs, t)`` when
    time dependent), the other sites fixed; keeps the model likelihood's
    ``noise_std``."""

    def __init__(self, loglik_fn, theta):
        self._fn, self._theta = loglik_fn, theta
        self.time_dependent = getattr(loglik_fn, "time_dependent", False)
        self.noise_std = getattr(loglik_fn, "noise_std", None)

    def __call__(self, xs, *t):
        return self._fn({**xs, **self._theta}, *t)


def conditional_loglik(loglik_fn, theta):
    """``-R`` as a function of the ScorePrior sites, the other sites fixed."""
    if not theta:
        return loglik_fn
    if getattr(loglik_fn, "time_dependent", False) or hasattr(loglik_fn, "noise_std"):
        return _XLikelihood(loglik_fn, theta)

    def x_loglik(xs):
        return loglik_fn({**xs, **theta})

    return x_loglik


def conditional_score(score_fn, theta):
    """The score of the ScorePrior sites, the other sites fixed."""

    def x_score(xs, t):
        if not theta:
            return score_fn(xs, t)
        full = score_fn({**xs, **theta}, t)
        return {k: full[k] for k in xs}

    return x_score


class ModelParts(NamedTuple):
    """What :func:`init_model` learns about a model."""

    score_sites: tuple
    potential_fn_gen: object
    postprocess_fn: object
    #: The Gaussian observation: always on the noised path; on the paper path only
    #: when its operator was recognised (then it gives the "auto" preconditioner).
    observation: LinearGaussianObservation | None
    noised: bool = False
    #: On the paper path, why no operator was used (None when one was, or when
    #: nobody asked).
    operator_note: str | None = None
    #: ``likelihood_path="auto"``: which path it took and why (None otherwise).
    path_note: str | None = None


def _check_sites(tr) -> None:
    """No discrete latent site (ALMC and MALA move continuous values; NumPyro would
    ask for funsor to enumerate it), and finite observed values (a NaN datum
    otherwise surfaces as NumPyro's "Cannot find valid initial parameters")."""
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            value = site["value"]
            # numpy, not jnp: under pmap init is traced, and jnp on a concrete
            # value would be staged out too.
            if not isinstance(value, jax.core.Tracer) and not np.all(
                np.isfinite(np.asarray(value))
            ):
                raise ValueError(
                    f"The observed site '{name}' holds NaN or infinite values. Drop "
                    "those entries (or mask them: numpyro.handlers.mask, or a Mask "
                    "operator for images) before running."
                )
            continue
        support = getattr(site["fn"], "support", None)
        if getattr(support, "is_discrete", False):
            raise ValueError(
                f"The latent site '{name}' is discrete ({type(site['fn']).__name__}): "
                "ALMC moves continuous sites only. Marginalise it out in the model "
                "(e.g. a mixture distribution), or observe it."
            )


def init_model(
    model,
    rng_key,
    model_args,
    model_kwargs,
    init_strategy,
    likelihood_path,
    find_operator=False,
):
    """Initialise the model's other sites (``init_strategy``; ScorePrior sites get a
    placeholder), find its ScorePrior sites and, on the noised path, its Gaussian
    observation; on the paper path with ``find_operator``, the observation only if
    its location is an operator applied in the model (``op(x) + b``). Returns
    ``(z0, ModelParts)``."""
    flat_model = score_prior_as_flat(model)

    def placeholder(site):
        # ImproperUniform cannot be sampled: give ScorePrior sites a dummy value.
        if (site.get("infer") or {}).get("score_prior") is not None:
            return jnp.zeros(site["fn"].shape())
        return None

    tr = trace(substitute(seed(flat_model, 0), substitute_fn=placeholder)).get_trace(
        *model_args, **(model_kwargs or {})
    )
    score_sites = tuple(
        sorted(
            name
            for name, site in tr.items()
            if site["type"] == "sample"
            and (site.get("infer") or {}).get("score_prior") is not None
        )
    )
    if not score_sites:
        raise ValueError(
            "The model has no ScorePrior site: ALMC needs at least one "
            "numpyro.sample(name, ScorePrior(score_fn, event_shape)). For models "
            "with ordinary priors use NUTS."
        )
    _check_sites(tr)
    params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
        rng_key,
        flat_model,
        dynamic_args=True,
        init_strategy=init_strategy,
        model_args=model_args,
        model_kwargs=model_kwargs,
    )
    z0 = params_info[0]
    observation, note, path_note = None, None, None
    noised = likelihood_path == "noised"
    auto = likelihood_path == "auto"
    one = z0 if is_prng_key(rng_key) else jax.tree.map(lambda v: v[0], z0)
    traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(one))
    if traced and noised:
        # chain_method="parallel": NumPyro calls init inside pmap, with the model's
        # arguments traced, and recognising the observation compares numbers.
        raise ValueError(
            "likelihood_path='noised' reads the forward model from the model's "
            "values, which chain_method='parallel' traces (NumPyro initialises "
            "inside pmap). Use chain_method='vectorized' (one device) or "
            "'sequential', or likelihood_path='paper'."
        )
    if traced and auto:
        auto = False
        path_note = (
            "likelihood_path='auto' took the paper path: under chain_method="
            "'parallel' the model's values are traced at init, so its observation "
            "cannot be read."
        )
    if traced and find_operator:
        find_operator = False
        note = (
            "under chain_method='parallel' the model's values are traced at init, "
            "so an operator cannot be recognised; use chain_method='vectorized' "
            "for the operator's preconditioner."
        )
    if noised or auto:
        # "noised" raises where the observation does not allow it; "auto" takes
        # the paper's path there and says why.
        try:
            observation = find_linear_gaussian_observation(
                flat_model, model_args, model_kwargs or {}, one, score_sites
            )
        except ValueError as error:
            if not auto:
                raise
            path_note = f"likelihood_path='auto' took the paper path: {error}"
        else:
            if auto:
                noised = True
                path_note = (
                    "likelihood_path='auto' took the noised path: "
                    f"'{observation.site}' is a Gaussian observation affine in the "
                    "ScorePrior sites."
                )
    if not noised and find_operator:
        try:
            observation = find_linear_gaussian_observation(
                flat_model,
                model_args,
                model_kwargs or {},
                one,
                score_sites,
                operator_only=True,
            )
        except ValueError as error:
            note = str(error)
    parts = ModelParts(
        score_sites,
        potential_fn_gen,
        postprocess_fn,
        observation,
        noised,
        note,
        path_note,
    )
    return z0, parts


def joint_fns(model, parts: ModelParts, model_args, model_kwargs):
    """``(loglik_fn, score_fn)`` of the model on the unconstrained position ``z``:
    ``loglik_fn = −R`` (time dependent on the noised path), ``score_fn(z, t)`` the
    ScorePrior sites' score (zeros on the other sites)."""
    model_kwargs = {} if model_kwargs is None else model_kwargs
    potential = parts.potential_fn_gen(*model_args, **model_kwargs)
    flat_model = score_prior_as_flat(model)

    def score_fn(z, t):
        tr = _trace(flat_model, model_args, model_kwargs, z)
        out = {}
        for name, v in z.items():
            prior = (tr[name].get("infer") or {}).get("score_prior")
            out[name] = (
                jnp.zeros_like(v) if prior is None else prior.batched_score(v, t)
            )
        return out

    if parts.observation is not None and not parts.noised:

        def noise_std(z):
            return observation_noise_std(
                parts.observation, flat_model, model_args, model_kwargs, z
            )

        return ModelLikelihood(lambda z: -potential(z), noise_std), score_fn
    if parts.observation is not None:
        loglik = noised_loglik_fn(
            parts.observation,
            flat_model,
            model_args,
            model_kwargs,
            parts.score_sites,
        )
        return loglik, score_fn
    return (lambda z: -potential(z)), score_fn
