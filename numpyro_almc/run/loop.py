"""The one step loop: ``lax.scan`` over steps, chains vmapped, one key stream.

Every jitted front end (:func:`~numpyro_almc.run_almc`,
:func:`~numpyro_almc.run_almc_chunked`, :func:`~numpyro_almc.run_almc_smc`) is a
short caller of :func:`scan_steps`; the multi-chain ALMC runs go through
:func:`run_chains`, so that a run in one piece and a run in chunks compute the same
steps bit for bit.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_almc.mcmc.almc import build_kernel
from numpyro_almc.mcmc.finish import FinalStage, finish
from numpyro_almc.path.schedules import step_params
from numpyro_almc.run.chains import init_states, step_keys
from numpyro_almc.run.recorders import (
    ALMCTrace,
    SaveAt,
    reservoir_update,
    welford_update,
)
from numpyro_almc.types import Array, ArrayTree

#: Steps whose per-step inputs (the chains' keys) :func:`scan_steps` derives in one
#: vectorised call before scanning them; at most :data:`INPUT_BLOCK_ENTRIES` keys
#: at a time. One ``fold_in`` per chain inside every step costs a quarter of a
#: 2-D step (``benchmarks/speed_floor.py``); in blocks it costs nothing measurable.
INPUT_BLOCK = 128
INPUT_BLOCK_ENTRIES = 2**16


def scan_steps(
    one_step,
    carry,
    first,
    num_steps: int,
    *,
    every=0,
    at_block_end=None,
    inputs=None,
    input_block: int = INPUT_BLOCK,
):
    """``one_step(carry, i) -> (carry, out)`` for ``i = first, …, first+num_steps-1``.

    With ``inputs`` (``steps -> pytree`` with a leading step axis, e.g. every chain's
    key of each step), ``one_step(carry, (i, inputs_i))``: the inputs of
    ``input_block`` steps at a time are computed in one call, outside the steps.

    With ``every > 0``, ``at_block_end(carry, i) -> (carry, kept)`` runs after every
    ``every``-th step ``i`` (counted from ``first``) and its ``kept`` values are
    stacked along a leading axis; the steps are then scanned in blocks, so nothing
    is stacked per step beyond ``out``.

    Returns ``(carry, outs, kept)`` (``kept`` None without blocks).
    """
    input_block = max(1, int(input_block))

    def steps(carry, start, n: int):
        """Steps ``start … start + n − 1`` (``n`` static)."""
        if inputs is None:
            return jax.lax.scan(one_step, carry, start + jnp.arange(n))
        size = min(n, input_block)

        def chunk(carry, idx):
            return jax.lax.scan(one_step, carry, (idx, inputs(idx)))

        num_chunks, remainder = divmod(n, size)
        idx = start + jnp.arange(num_chunks * size).reshape(num_chunks, size)
        carry, out = jax.lax.scan(chunk, carry, idx)
        out = _flatten_leading(out)
        if remainder:
            carry, rest = chunk(
                carry, start + num_chunks * size + jnp.arange(remainder)
            )
            out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)
        return carry, out

    if not every:
        carry, out = steps(carry, first, num_steps)
        return carry, out, None
    num_blocks, remainder = divmod(num_steps, every)

    def block(carry, b):
        start = first + b * every
        carry, out = steps(carry, start, every)
        carry, kept = at_block_end(carry, start + every - 1)
        return carry, (out, kept)

    carry, (out, kept) = jax.lax.scan(block, carry, jnp.arange(num_blocks))
    out = _flatten_leading(out)
    if remainder:
        carry, rest = steps(carry, first + num_blocks * every, remainder)
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)
    return carry, out, kept


def _flatten_leading(tree):
    """Merge the two leading axes of every leaf."""
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def chains_step(
    kernel, step_keys, states, i, schedule, preconditioner, loglikelihood_fn, score_fn
):
    """Step ``i`` of every chain (``step_keys``: their keys of this step) with the
    step's parameters computed once.

    The step index is unbatched, so a time-dependent preconditioner is factored
    once per step and the warm-start branch of the move stays a real branch (no
    score evaluation) under the vmap over chains.
    """
    params = step_params(schedule, i, preconditioner)

    def one(key, state):
        return kernel(key, state, loglikelihood_fn, score_fn, params)

    return jax.vmap(one)(step_keys, states)


class ChainsOutput(NamedTuple):
    """What :func:`run_chains` returns (every array has a leading chain axis,
    except ``trace``, which has a leading step axis)."""

    states: ArrayTree
    window_draw: ArrayTree | None
    trace: ALMCTrace
    kept: ArrayTree | None
    moments: tuple | None
    num_diverging: Array


@functools.partial(
    jax.jit,
    static_argnames=(
        "loglikelihood_fn",
        "score_fn",
        "reference_score_fn",
        "num_steps",
        "total_steps",
        "save",
        "initialise",
        "divergence_threshold",
    ),
)
def run_chains(
    keys,
    states_or_positions,
    start,
    schedule,
    preconditioner,
    moments,
    num_diverging,
    *,
    loglikelihood_fn,
    score_fn,
    reference_score_fn,
    num_steps: int,
    total_steps: int,
    save: SaveAt,
    initialise: bool,
    divergence_threshold: float | None = None,
) -> ChainsOutput:
    """Steps ``start … start + num_steps − 1`` of a run of ``total_steps`` steps.

    ``keys`` are the chains' step keys (:func:`~numpyro_almc.run.chains.run_keys`);
    with ``initialise`` the second argument holds positions and the states are built
    here. ``moments`` (Welford accumulators) and ``num_diverging`` carry over
    between chunks. The final-window draw (``save.final_window``) is reservoir
    sampling over the last steps of the whole run.
    """
    kernel = build_kernel(reference_score_fn, divergence_threshold)
    if initialise:
        states = init_states(
            states_or_positions,
            schedule,
            loglikelihood_fn,
            score_fn,
            reference_score_fn,
            preconditioner,
        )
    else:
        states = states_or_positions
    window_start = total_steps - save.final_window

    def inputs(idx):
        """Every chain's key of each step, and the reservoir's uniforms."""
        out = {"keys": jax.vmap(lambda i: step_keys(keys, i))(idx)}
        if save.final_window:
            out["u"] = jax.vmap(
                lambda i: jax.vmap(
                    lambda k: jax.random.uniform(jax.random.fold_in(k, total_steps + i))
                )(keys)
            )(idx)
        return out

    def one_step(carry, step):
        i, per_step = step
        states, window, num_diverging, acc = carry
        states, info = chains_step(
            kernel,
            per_step["keys"],
            states,
            i,
            schedule,
            preconditioner,
            loglikelihood_fn,
            score_fn,
        )
        if save.final_window:
            # Reservoir sampling of one iterate uniformly from the final window.
            count = (i - window_start + 1).astype(jnp.float32)
            take = (i >= window_start) & (per_step["u"] * count < 1.0)
            window = reservoir_update(window, states.position, take)
        num_diverging = num_diverging + info.is_diverging.astype(jnp.int32)
        return (states, window, num_diverging, acc), ALMCTrace.per_step(info)

    def at_block_end(carry, i):
        states, window, num_diverging, acc = carry
        kept = save.kept(states.position)
        if save.moments:
            # A draw after a step before keep_from is neither stored nor counted.
            acc = welford_update(acc, kept, i >= save.keep_from)
        return (states, window, num_diverging, acc), kept if save.stack else None

    window = states.position if save.final_window else None
    carry = (states, window, num_diverging, moments)
    carry, trace, kept = scan_steps(
        one_step,
        carry,
        start,
        num_steps,
        every=save.every,
        at_block_end=at_block_end,
        inputs=inputs,
        input_block=max(1, INPUT_BLOCK_ENTRIES // keys.shape[0]),
    )
    if kept is not None:  # (blocks, chains, ...) -> (chains, blocks, ...)
        kept = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), kept)
    states, window, num_diverging, moments = carry
    trace = ALMCTrace.build(schedule, start, trace)
    return ChainsOutput(states, window, trace, kept, moments, num_diverging)


@functools.partial(
    jax.jit, static_argnames=("loglikelihood_fn", "score_fn", "final_stage")
)
def finish_chains(
    stage_keys, states, *, loglikelihood_fn, score_fn, final_stage: FinalStage
) -> tuple[ArrayTree, Array]:
    """The final stage (:func:`~numpyro_almc.mcmc.finish`) of every chain's state,
    chain ``c`` with ``stage_keys[c]``: ``(draws at t = 0, diverging)``."""

    def one(key, state):
        return finish(key, state, loglikelihood_fn, score_fn, final_stage)

    return jax.vmap(one)(stage_keys, states)
