r"""The Feynman–Kac weight terms of the ALMC path, one piece each.

* :func:`prior_log_weight_increments`: ``log p_{t'}(x) − log p_t(x)`` from the score
  alone, by the Fokker–Planck identity ``∂_t log p_t = d + x·s + ∇·s + |s|²`` (see
  :mod:`numpyro_almc.smc.almc_smc` for the derivation and the warm-start tail);
* :func:`likelihood_log_weight_increments`: ``log L_{t'}(x) − log L_t(x)`` for a
  path that anneals the likelihood too (``noised_gaussian_likelihood``).

A new weighting is one more function here with the same signature shape.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from numpyro_almc._validate import check_choice
from numpyro_almc.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

#: How ``∇·s`` is computed: exactly (``d`` JVPs) or by Hutchinson's estimator.
DIVERGENCES = ("exact", "hutchinson")

__all__ = [
    "likelihood_log_weight_increments",
    "ou_log_density_time_derivative",
    "prior_log_weight_increments",
]


def _flat_score(score_fn, unravel):
    def fn(x_flat, t):
        s = score_fn(unravel(x_flat), t)
        s_flat, _ = ravel_pytree(s)
        return s_flat.astype(x_flat.dtype)

    return fn


def _divergence(flat_score, x, t, *, divergence, num_probes, rng_key):
    """``(s(x, t), ∇·s(x, t))`` for a flat ``x``."""

    def f(v):
        return flat_score(v, t)

    s, jvp_fn = jax.linearize(f, x)
    if divergence == "exact":
        # d forward-mode JVPs, one per basis vector (the trace of jacfwd).
        eye = jnp.eye(x.shape[0], dtype=x.dtype)
        return s, jnp.sum(jax.vmap(lambda e: jnp.vdot(e, jvp_fn(e)))(eye))
    probes = jax.random.rademacher(rng_key, (num_probes, x.shape[0]), dtype=x.dtype)
    quad = jax.vmap(lambda e: jnp.vdot(e, jvp_fn(e)))(probes)
    return s, jnp.mean(quad)


def _dlogp_dt(x, s, div):
    d = jnp.asarray(x.shape[0], dtype=x.dtype)
    return d + jnp.vdot(x, s) + div + jnp.vdot(s, s)


def ou_log_density_time_derivative(
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    position: ArrayLikeTree,
    time: ArrayLike,
    *,
    divergence: str = "exact",
    num_probes: int = 1,
    rng_key: PRNGKey | None = None,
) -> Array:
    r"""``∂_t log p_t(x)`` of the OU-noised prior, from the score alone.

    .. math::

        \partial_t \log p_t(x) = d + x \cdot s + \nabla \cdot s + |s|^2,
        \qquad s = \nabla \log p_t(x),

    from the Fokker–Planck equation ``∂_t p = ∇·(x p) + Δp`` of
    ``dX = -X dt + √2 dW`` (``Δp / p = ∇·s + |s|²``).

    Parameters
    ----------
    score_fn
        ``score_fn(x, t)`` for one unbatched ``x``.
    position
        One position (pytree).
    time
        OU time ``t > 0``.
    divergence
        ``"exact"`` (``d`` JVPs) or ``"hutchinson"`` (``num_probes`` Rademacher
        probes, unbiased; needs ``rng_key``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> # N(0, I) is stationary: ∂_t log p_t = 0.
    >>> float(ou_log_density_time_derivative(lambda x, t: -x, jnp.ones(3), 0.5))
    0.0
    """
    check_choice("divergence", divergence, DIVERGENCES)
    if divergence == "hutchinson" and rng_key is None:
        raise ValueError("divergence='hutchinson' needs an `rng_key` for the probes.")
    x, unravel = ravel_pytree(jax.tree.map(jnp.asarray, position))
    t = jnp.asarray(time, dtype=x.dtype)
    s, div = _divergence(
        _flat_score(score_fn, unravel),
        x,
        t,
        divergence=divergence,
        num_probes=num_probes,
        rng_key=rng_key,
    )
    return _dlogp_dt(x, s, div)


def prior_log_weight_increments(
    positions,
    scores,
    time,
    next_time,
    score_fn,
    rng_key,
    *,
    divergence,
    num_probes,
    quadrature,
    warm_start_correction,
    context=None,
):
    """``log p_{next_time}(x) − log p_{time}(x)`` for each particle (leading axis).

    ``scores`` are the scores cached at ``(x, next_time)``. Three cases, chosen by a
    real branch (``time`` and ``next_time`` are unbatched): equal times (warm start,
    tail at ``τ``) give 0; ``time = inf`` is the end of the warm start (see
    :func:`build_smc_kernel` for the tail correction); otherwise the quadrature.
    With a ``context`` (a pytree with the same leading axis, e.g. the other sites
    of a NumPyro model), the score is ``score_fn(x, t, context_i)``.
    """
    n = jax.tree.leaves(positions)[0].shape[0]
    dtype = jnp.result_type(*jax.tree.leaves(positions))
    one_position = jax.tree.map(lambda a: a[0], positions)
    _, unravel = ravel_pytree(one_position)
    keys = jax.random.split(rng_key, n)

    def dlogp(x_flat, s_flat, t, key, cached, ctx):
        if context is None:
            flat_score = _flat_score(score_fn, unravel)
        else:
            flat_score = _flat_score(lambda x, tt: score_fn(x, tt, ctx), unravel)
        s_new, div = _divergence(
            flat_score,
            x_flat,
            t,
            divergence=divergence,
            num_probes=num_probes,
            rng_key=key,
        )
        # With ``cached`` the score is the one the move cached (same x, t).
        return _dlogp_dt(x_flat, s_flat if cached else s_new, div)

    def flat(x, s):
        return ravel_pytree(x)[0], ravel_pytree(s)[0].astype(dtype)

    def anneal_increments(_):
        def one(x, s, key, ctx):
            x_flat, s_flat = flat(x, s)
            key_a, key_b = jax.random.split(key)
            g_next = dlogp(x_flat, s_flat, next_time, key_a, True, ctx)
            if quadrature == "trapezoid":
                g_old = dlogp(x_flat, s_flat, time, key_b, False, ctx)
                g_next = 0.5 * (g_next + g_old)
            return (next_time - time) * g_next

        return jax.vmap(one)(positions, scores, keys, context)

    def warm_start_increments(_):
        # log p_T(x) - log γ(x) = -∫_T^∞ ∂_t log p_t(x) dt, see build_smc_kernel.
        def one(x, s, key, ctx):
            x_flat, s_flat = flat(x, s)
            key_a, key_b = jax.random.split(key)
            g_start = dlogp(x_flat, s_flat, next_time, key_a, True, ctx)
            if warm_start_correction == "tail":
                return -g_start
            # "tail2": fit g(t) = -A e^{-(t-T)} - 2B e^{-2(t-T)} through g(T)
            # and g(T + 1) at the same x; log p_T - log γ = A + B = -g(T) - B.
            # One more score evaluation + divergence, once per run.
            g_late = dlogp(x_flat, s_flat, next_time + 1.0, key_b, False, ctx)
            r = jnp.exp(jnp.asarray(-1.0, dtype=dtype))
            b = (g_late - r * g_start) / (2.0 * r * (1.0 - r))
            return -g_start - b

        return jax.vmap(one)(positions, scores, keys, context)

    def no_increments(_):
        return jnp.zeros((n,), dtype=dtype)

    # 0: no weight (warm start, tail at τ); 1: end of the warm start; 2: anneal.
    starts_annealing = jnp.isinf(time) & jnp.isfinite(next_time)
    anneals = jnp.isfinite(time) & (next_time != time)
    if warm_start_correction == "none":
        starts_annealing = jnp.zeros_like(starts_annealing)
    branch = jnp.where(starts_annealing, 1, jnp.where(anneals, 2, 0))
    # Every branch in the positions' dtype: a float64 time (an x64 run with a
    # float64 likelihood) would otherwise give the branches different types.
    branches = [
        lambda _, f=f: f(_).astype(dtype)
        for f in (no_increments, warm_start_increments, anneal_increments)
    ]
    inc = jax.lax.switch(branch, branches, None)
    return inc.astype(dtype)


def likelihood_log_weight_increments(
    loglikelihood_fn, positions, new_logliks, time, next_time
) -> Array:
    """``log L_{next_time}(x') − log L_{time}(x')`` per particle (leading axis).

    For a likelihood whose ``time_dependent`` attribute is true the ``R`` term no
    longer cancels in the ratio of neighbouring targets. ``new_logliks`` are the
    values the move cached at ``next_time``; one likelihood evaluation per particle
    at ``time`` completes the term. Equal times (warm start, tail) add 0; a likelihood
    that is not time dependent adds 0 (then ``R`` cancels).
    """
    if not getattr(loglikelihood_fn, "time_dependent", False):
        return jnp.zeros_like(new_logliks)
    old = jax.vmap(lambda x: loglikelihood_fn(x, time))(positions)
    return jnp.where(next_time != time, new_logliks - old, 0.0).astype(
        new_logliks.dtype
    )
