"""One Feynman–Kac step: move → weight → resample (the shape of BlackJAX's
``smc.base.step``), with the reweighting and the adaptive resampling it needs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["fk_step", "reweight", "resample_if_degenerate"]


def fk_step(
    rng_key, particles, log_weights, move_fn, weight_fn, ess_threshold, resample_fn
):
    """One step of a Feynman–Kac particle system.

    1. ``moved, diverging = move_fn(key, particles)`` (batched over particles);
    2. ``increments = weight_fn(key, moved)``: the log-weight increments;
    3. reweight (a reverted move or a non-finite increment gives weight 0);
    4. resample when ``ESS < ess_threshold · N``.

    Returns ``(particles, log_weights, ancestor_index, log_increment, ess,
    resampled, diverging)``; ``log_increment = log Σ W e^{Δ}`` is the step's
    evidence factor.
    The three keys are ``split(rng_key, 3)``.
    """
    key_move, key_weight, key_resample = jax.random.split(rng_key, 3)
    moved, diverging = move_fn(key_move, particles)
    increments = weight_fn(key_weight, moved)
    log_w, log_increment, ess = reweight(log_weights, increments, diverging)
    idx, log_w, resampled = resample_if_degenerate(
        key_resample, log_w, ess, ess_threshold, resample_fn
    )
    moved = jax.tree.map(lambda a: a[idx], moved)
    return moved, log_w, idx, log_increment, ess, resampled, diverging


def reweight(log_weights, increments, diverging):
    """``(normalised log-weights, log Σ W e^{inc}, ESS)``; a reverted move (stale
    score) or a non-finite increment gives the particle zero weight."""
    dtype = log_weights.dtype
    bad = diverging | ~jnp.isfinite(increments)
    log_w = log_weights + jnp.where(bad, -jnp.inf, increments).astype(dtype)
    log_increment = jax.scipy.special.logsumexp(log_w)
    # If every particle diverged the evidence is -inf (flagged in the info);
    # keep the previous weights rather than NaNs.
    log_w = jnp.where(jnp.isfinite(log_increment), log_w - log_increment, log_weights)
    ess = 1.0 / jnp.sum(jnp.exp(2.0 * log_w))
    return log_w, log_increment, ess


def resample_if_degenerate(rng_key, log_w, ess, ess_threshold, resample_fn):
    """``(ancestor indices, log-weights, resampled?)``: resample when
    ``ESS < ess_threshold · N``."""
    n = log_w.shape[0]
    do_resample = ess < ess_threshold * n

    def resample(_):
        idx = resample_fn(rng_key, jnp.exp(log_w), n).astype(jnp.int32)
        return idx, jnp.full((n,), -math.log(n), dtype=log_w.dtype)

    def keep(_):
        return jnp.arange(n, dtype=jnp.int32), log_w

    idx, log_w = jax.lax.cond(do_resample, resample, keep, None)
    return idx, log_w, do_resample
