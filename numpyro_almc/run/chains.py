"""Chains: per-chain keys and starting positions, one key stream for every front end.

Chain ``c`` of a run with key ``k`` uses ``fold_in(k, c)`` (equal to
``jax.random.split(k, n)[c]`` with JAX's partitionable threefry, which is how NumPyro
hands keys to vectorized chains); its start is drawn from ``split(fold_in(k, c))[0]``
and step ``i`` uses ``fold_in(split(fold_in(k, c))[1], i)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from numpyro_almc._validate import as_arrays, check_fns, check_key  # noqa: F401 (re-exported)
from numpyro_almc.mcmc.almc import init
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["chain_keys", "initial_positions", "standard_normal_like"]


def chain_keys(rng_key: PRNGKey, num_chains: int) -> Array:
    """Per-chain keys ``fold_in(rng_key, c)``: chain ``c`` does not depend on how
    many chains run beside it.

    Examples
    --------
    >>> keys = chain_keys(jax.random.key(0), 4)
    >>> keys.shape
    (4,)
    >>> first_two = jax.random.key_data(chain_keys(jax.random.key(0), 2))
    >>> bool(jnp.all(first_two == jax.random.key_data(keys[:2])))
    True
    """
    return jax.vmap(lambda c: jax.random.fold_in(rng_key, c))(
        jnp.arange(num_chains, dtype=jnp.uint32)
    )


@functools.partial(jax.jit, static_argnums=2)
def initial_positions(rng_key: PRNGKey, position: ArrayLikeTree, num_chains: int):
    """``N(0, I)`` draws shaped like ``position`` (one per chain), the paper's start.

    Chain ``c`` uses ``split(fold_in(rng_key, c))[0]``, so it is the same whatever
    ``num_chains`` is.

    Examples
    --------
    >>> x0 = initial_positions(jax.random.key(0), {"x": jnp.zeros(3), "s": 0.0}, 4)
    >>> x0["x"].shape, x0["s"].shape
    ((4, 3), (4,))
    """

    def one(key):
        return standard_normal_like(jax.random.split(key)[0], position)

    return jax.vmap(one)(chain_keys(rng_key, num_chains))


def standard_normal_like(rng_key: PRNGKey, tree: ArrayLikeTree) -> ArrayTree:
    """One ``N(0, I)`` draw shaped like ``tree`` (one key per leaf, split from
    ``rng_key``; each leaf keeps its dtype)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(rng_key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            jax.random.normal(k, jnp.shape(v), dtype=jnp.result_type(v))
            for k, v in zip(keys, leaves, strict=True)
        ],
    )


def check_floating(name: str, tree) -> None:
    """Raise unless every leaf of ``tree`` is a floating-point array."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` has no arrays.")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`{name}` must hold floating-point arrays (got {dtype}); pass e.g. "
                "jnp.zeros(d) rather than integers, booleans or lists of ints."
            )


def starting_positions(rng_key, position, num, init_positions=None, what="num_chains"):
    """``init_positions`` checked to have a leading axis of ``num`` and finite
    floating values, or ``N(0, I)`` draws shaped like ``position``
    (:func:`initial_positions`) when it is None. Checks the key and the position's
    dtypes first (before any tracing)."""
    check_key(rng_key)
    position = as_arrays("position", position)
    check_floating("position", position)
    if init_positions is None:
        return initial_positions(rng_key, position, num)
    init_positions = as_arrays("init_positions", init_positions)
    check_floating("init_positions", init_positions)
    if jax.tree.structure(init_positions) != jax.tree.structure(position):
        raise ValueError(
            "`init_positions` must have the tree structure of `position` (the same "
            "sites), with a leading chain axis: got "
            f"{jax.tree.structure(init_positions)} for {jax.tree.structure(position)}."
        )
    for leaf, ref in zip(
        jax.tree.leaves(init_positions), jax.tree.leaves(position), strict=True
    ):
        if leaf.shape != (num, *jnp.shape(ref)):
            raise ValueError(
                f"`init_positions` leaves must have shape ({what}, ...) = "
                f"{(num, *jnp.shape(ref))}, got {leaf.shape}."
            )
        if not isinstance(leaf, jax.core.Tracer) and not bool(
            jnp.all(jnp.isfinite(leaf))
        ):
            raise ValueError(
                "`init_positions` holds NaN or infinite values: every step from "
                "there would be reverted. Start from finite positions."
            )
    return init_positions


@functools.partial(jax.jit, static_argnums=1)
def run_keys(rng_key: PRNGKey, num_chains: int) -> Array:
    """Per-chain keys of the steps: ``split(fold_in(rng_key, c))[1]`` (jitted: run
    eagerly, the derivation costs a driver call milliseconds)."""
    return jax.vmap(lambda k: jax.random.split(k)[1])(chain_keys(rng_key, num_chains))


#: Step ``i`` of the non-score sites (NumPyro) uses ``fold_in(run key, THETA_KEYS +
#: i)`` and the final stage of the draw after step ``i`` ``fold_in(run key,
#: FINISH_KEYS + i)``: ranges of the run key's fold_ins that the signal's steps
#: (``fold_in(run key, i)``, ``i < 2**31``) and each other never reach.
THETA_KEYS = 2**31
FINISH_KEYS = 3 * 2**30


def offset_key(key: PRNGKey, offset: int, i) -> PRNGKey:
    """``fold_in(key, offset + i)`` (``i`` int32), in uint32 arithmetic."""
    return jax.random.fold_in(
        key, jnp.uint32(offset) + jnp.asarray(i).astype(jnp.uint32)
    )


def offset_keys(keys: Array, offset: int, i) -> Array:
    """:func:`offset_key` of every chain (``i`` unbatched or per chain)."""
    i = jnp.broadcast_to(jnp.asarray(i), keys.shape)
    return jax.vmap(lambda k, j: offset_key(k, offset, j))(keys, i)


def step_keys(keys: Array, i) -> Array:
    """The keys of step ``i`` of every chain: ``fold_in(keys[c], i)``."""
    return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)


def init_states(
    positions,
    schedule,
    loglikelihood_fn,
    score_fn,
    reference_score_fn,
    preconditioner=None,
):
    """The ALMC state of every chain (leading axis) at the schedule's first time
    (each chain's warm-start step from the likelihood's stiffness at its start)."""
    start_time = schedule.times[0]
    return jax.vmap(
        lambda p: init(
            p,
            loglikelihood_fn,
            score_fn,
            start_time,
            reference_score_fn=reference_score_fn,
            preconditioner=preconditioner,
        )
    )(positions)
