"""The move of the sites that are not ScorePriors: MALA on their exact conditional."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["THETA_TARGET_ACCEPT", "theta_mala_step"]

#: Target acceptance of the MALA update of the non-score sites (Roberts & Rosenthal).
THETA_TARGET_ACCEPT = 0.574


def theta_mala_step(key, loglik_fn, xs, theta, h, adapt):
    """MALA with a truncated drift (MALTA) on the non-score sites given the
    signal ``xs``; adapts ``h``.

    Written here rather than taken from ``blackjax.mala`` for two reasons: the
    gradient at the accepted point is of the *whole* position (signal and
    other sites), and it is cached as the signal's likelihood gradient for the
    next ALMC step; ``blackjax.mala`` keeps only the gradient in the sites it
    moves, which would cost one more likelihood gradient per step. And
    blackjax 1.7's MALA promotes float32 positions to float64 under x64
    (its noise goes through a Python float); this draws in the position's
    dtype.
    """
    key_prop, key_acc = jax.random.split(key)
    flat, unravel = ravel_pytree(theta)
    dtype = flat.dtype

    def full(v):
        ll, grad = jax.value_and_grad(loglik_fn)({**xs, **unravel(v)})
        g_theta, _ = ravel_pytree({k: grad[k] for k in theta})
        return ll, grad, g_theta

    def drift(g):
        # MALTA (Roberts & Tweedie 1996): the drift h·g truncated to norm 1 in
        # the unconstrained space. With an observation of thousands of numbers
        # the gradient in log σ reaches 1e4-1e5 away from the fit, and plain
        # MALA's proposal overflows (σ = e^{400}) and is rejected until h has
        # shrunk; truncated, it moves σ by at most a factor e per step. The
        # proposal density below uses the same drift: still exact MH.
        norm = jnp.sqrt(jnp.sum(g**2))
        return h * g * jnp.minimum(1.0, 1.0 / (h * norm + 1e-30)).astype(dtype)

    ll0, grad0, g0 = full(flat)
    noise = jax.random.normal(key_prop, flat.shape, dtype)
    prop = flat + drift(g0) + jnp.sqrt(2 * h) * noise
    ll1, grad1, g1 = full(prop)

    def log_q(to, frm, g):
        return -jnp.sum((to - frm - drift(g)) ** 2) / (4 * h)

    log_ratio = ll1 - ll0 + log_q(flat, prop, g1) - log_q(prop, flat, g0)
    finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(g1))
    log_ratio = jnp.where(finite, log_ratio, -jnp.inf)
    accept_prob = jnp.minimum(1.0, jnp.exp(log_ratio)).astype(dtype)
    accept = jnp.log(jax.random.uniform(key_acc, dtype=dtype)) < log_ratio
    z = {**xs, **unravel(jnp.where(accept, prop, flat))}
    ll = jnp.where(accept, ll1, ll0)
    grad = jax.tree.map(lambda a, b: jnp.where(accept, a, b), grad1, grad0)
    # Robbins-Monro on log h during warmup only (frozen while sampling).
    new_h = h * jnp.exp(0.05 * (accept_prob - THETA_TARGET_ACCEPT))
    h = jnp.where(adapt, new_h, h).astype(dtype)
    return z, ll, grad, h, accept_prob, jnp.logical_not(finite)
