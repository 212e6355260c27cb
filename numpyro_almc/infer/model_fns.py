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
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import constrain_fn, initialize_model
from numpyro.util import is_prng_key

from numpyro_almc.infer.score_prior import score_prior_as_flat
from numpyro_almc.path.likelihoods import (
    NoisedGaussianLikelihood,
    NoisedGaussianPreconditioner,
    noised_gaussian_likelihood,
)
from numpyro_almc.types import Array

__all__ = [
    "LinearGaussianObservation",
    "conditional_loglik",
    "conditional_score",
    "find_linear_gaussian_observation",
]


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
    """The observed site ``y ~ N(A x + b(θ), σ(θ)² I)`` found in a model."""

    site: str
    A: Array
    template: NoisedGaussianLikelihood


def _loc_scale(flat_model, model_args, model_kwargs, z, site):
    tr = _trace(flat_model, model_args, model_kwargs, z)
    normal = _normal_of(tr[site]["fn"])
    value = jnp.asarray(tr[site]["value"])
    loc = jnp.broadcast_to(normal.loc, value.shape).reshape(-1)
    scale = jnp.broadcast_to(normal.scale, value.shape).reshape(-1)
    return loc, scale, value.reshape(-1), tr[site]["fn"]


def find_linear_gaussian_observation(
    flat_model, model_args, model_kwargs, z, score_sites
) -> LinearGaussianObservation:
    """Recognise the linear-Gaussian observation of ``flat_model`` at ``z``, or raise
    a ``ValueError`` saying which condition fails (eager, before any run)."""
    xs = {k: z[k] for k in score_sites}
    x0, unravel = ravel_pytree(xs)

    def with_x(x_flat):
        return {**z, **unravel(x_flat)}

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

    def loc_fn(x_flat):
        return _loc_scale(flat_model, model_args, model_kwargs, with_x(x_flat), site)[0]

    A = jax.jacfwd(loc_fn)(jnp.zeros_like(x0))
    loc0, scale0, y, _ = _loc_scale(
        flat_model, model_args, model_kwargs, with_x(jnp.zeros_like(x0)), site
    )
    loc1, scale1, _, _ = _loc_scale(
        flat_model, model_args, model_kwargs, with_x(x1), site
    )
    tol = 1e-4 * (1.0 + float(jnp.max(jnp.abs(loc1))))
    if float(jnp.max(jnp.abs(loc1 - (loc0 + A @ x1)))) > tol:
        raise ValueError(
            f"likelihood_path='noised': the location of '{site}' is not affine in "
            "the ScorePrior sites (checked at a random point). Use "
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
    if theta:
        moved = {k: v + 0.37 for k, v in theta.items()}
        z_moved = {**z, **moved}

        def loc_moved(x_flat):
            return _loc_scale(
                flat_model,
                model_args,
                model_kwargs,
                {**z_moved, **unravel(x_flat)},
                site,
            )[0]

        A_moved = jax.jacfwd(loc_moved)(jnp.zeros_like(x0))
        if not np.allclose(np.asarray(A), np.asarray(A_moved), rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"likelihood_path='noised': the forward operator of '{site}' depends "
                "on other latent sites; only its offset and noise scale may. Use "
                "likelihood_path='paper'."
            )
    template = noised_gaussian_likelihood(A, jnp.zeros_like(y), jnp.ones((), y.dtype))
    return LinearGaussianObservation(site, A, template)


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


def noised_loglik_fn(
    observation, potential, flat_model, model_args, model_kwargs, score_sites
) -> NoisedModelLikelihood:
    """The :class:`NoisedModelLikelihood` of a model (see the module docstring)."""
    site = observation.site

    def observed(z):
        """The noised likelihood of the flattened ScorePrior sites at ``z``'s other
        sites, the observation's own log density, and the flattened sites."""
        xs = {k: z[k] for k in score_sites}
        x_flat, _ = ravel_pytree(xs)
        loc, scale, y, fn = _loc_scale(flat_model, model_args, model_kwargs, z, site)
        offset = loc - observation.A.astype(loc.dtype) @ x_flat
        observed_loglik = jnp.sum(fn.log_prob(jnp.reshape(y, jnp.shape(fn.mean))))
        lik = observation.template._replace(y=y - offset, noise_std=scale[0])
        return lik, observed_loglik, x_flat

    def loglik(z, t):
        lik, observed_loglik, x_flat = observed(z)
        # -½ log det C_t: the part of the normaliser that depends on σ.
        log_det = lik.scaled_log_det(t, x_flat.dtype)
        return -potential(z) - observed_loglik + lik(x_flat, t) - 0.5 * log_det

    def noise_std(z):
        return observation_noise_std(
            observation, flat_model, model_args, model_kwargs, z
        )

    return NoisedModelLikelihood(
        loglik, noise_std, observation, lambda z: observed(z)[0]
    )


def noised_preconditioner(observation, noise_std) -> NoisedGaussianPreconditioner:
    """The time-dependent ``(I + ∇²(−log L_t))^{-1}`` at noise scale ``noise_std``."""
    return NoisedGaussianPreconditioner(observation.A, noise_std)


def observation_noise_std(observation, flat_model, model_args, model_kwargs, z):
    """The noise scale ``σ(θ)`` of the observation at ``z``."""
    return _loc_scale(flat_model, model_args, model_kwargs, z, observation.site)[1][0]


class _XLikelihood:
    """A time-dependent ``-R`` as a function of the ScorePrior sites (``(xs, t)``),
    the other sites fixed."""

    time_dependent = True

    def __init__(self, loglik_fn, theta):
        self._fn, self._theta = loglik_fn, theta
        self.noise_std = getattr(loglik_fn, "noise_std", None)

    def __call__(self, xs, t):
        return self._fn({**xs, **self._theta}, t)


def conditional_loglik(loglik_fn, theta):
    """``-R`` as a function of the ScorePrior sites, the other sites fixed."""
    if not theta:
        return loglik_fn
    if getattr(loglik_fn, "time_dependent", False):
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
    observation: LinearGaussianObservation | None


def init_model(
    model, rng_key, model_args, model_kwargs, init_strategy, likelihood_path
):
    """Initialise the model's other sites (``init_strategy``; ScorePrior sites get a
    placeholder), find its ScorePrior sites and, on the noised path, its Gaussian
    observation. Returns ``(z0, ModelParts)``."""
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
    params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
        rng_key,
        flat_model,
        dynamic_args=True,
        init_strategy=init_strategy,
        model_args=model_args,
        model_kwargs=model_kwargs,
    )
    z0 = params_info[0]
    observation = None
    if likelihood_path == "noised":
        one = z0 if is_prng_key(rng_key) else jax.tree.map(lambda v: v[0], z0)
        observation = find_linear_gaussian_observation(
            flat_model, model_args, model_kwargs or {}, one, score_sites
        )
    return z0, ModelParts(score_sites, potential_fn_gen, postprocess_fn, observation)


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

    if parts.observation is not None:
        loglik = noised_loglik_fn(
            parts.observation,
            potential,
            flat_model,
            model_args,
            model_kwargs,
            parts.score_sites,
        )
        return loglik, score_fn
    return (lambda z: -potential(z)), score_fn
