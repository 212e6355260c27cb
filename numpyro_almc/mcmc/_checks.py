"""Trace-time checks and small helpers shared by the ALMC move and its callers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from numpyro_almc.types import ArrayTree


def check_tree(name: str, value: ArrayTree, position: ArrayTree) -> None:
    """Raise (at trace time) unless ``value`` has the structure of ``position``."""
    value_def = jax.tree.structure(value)
    pos_def = jax.tree.structure(position)
    if value_def != pos_def:
        raise ValueError(
            f"{name} returned a tree {value_def} but the position is {pos_def}; "
            "it must return one array per position leaf."
        )
    for v, p in zip(jax.tree.leaves(value), jax.tree.leaves(position), strict=True):
        if jnp.shape(v) != jnp.shape(p):
            raise ValueError(
                f"{name} returned shape {jnp.shape(v)} for a position leaf of shape "
                f"{jnp.shape(p)}; score_fn(x, t) takes ONE unbatched x and returns "
                "an array of the same shape (vmap outside for batches)."
            )


def float_dtype(position: ArrayTree):
    """The common floating dtype of the position's leaves (raise if none)."""
    leaves = jax.tree.leaves(position)
    if not leaves:
        raise ValueError("The position has no arrays.")
    return jnp.result_type(*leaves)


def at_time(loglikelihood_fn, time):
    """``position -> log L(position)``, or ``log L_t`` for a likelihood whose
    ``time_dependent`` attribute is true (``loglikelihood_fn(position, t)``, e.g.
    :func:`~numpyro_almc.noised_gaussian_likelihood`)."""
    if getattr(loglikelihood_fn, "time_dependent", False):
        return lambda position: loglikelihood_fn(position, time)
    return loglikelihood_fn


def score_at(score_fn, reference_score_fn, position, time):
    """Score at OU ``time``; the reference (no network call) where ``time`` is inf.

    With an unbatched ``time`` (every caller passes the step's shared parameters)
    this is a real branch, so warm-start steps cost no score evaluation. Under a
    ``vmap`` over ``time`` it would become a select; the network then sees a finite
    dummy time, never ``inf``.
    """
    is_reference = jnp.isinf(time)
    safe_time = jnp.where(is_reference, jnp.ones_like(time), time)

    def network(_):
        score = score_fn(position, safe_time)
        # A network may compute in another precision; the state keeps the position's.
        return jax.tree.map(lambda s, p: jnp.asarray(s, p.dtype), score, position)

    def reference(_):
        return reference_score_fn(position)

    return jax.lax.cond(is_reference, reference, network, None)
