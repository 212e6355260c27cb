"""Long ALMC runs in bounded memory: chunked scans streamed to disk, resumable.

A run of ``num_steps`` steps is cut into chunks of ``chunk_size`` steps. Each chunk is
one jitted ``lax.scan`` that continues the key stream of :func:`run_almc` (step ``i``
of chain ``c`` always uses ``fold_in(run_key_c, i)``), so the chunked run computes
the same steps as one uninterrupted ``run_almc``. After every chunk

* the kept draws (positions after every ``keep_every``-th step) and the chunk's trace
  go to ``path/chunk_{k:06d}.npz``;
* the chain states, running moments and progress go to ``path/state.npz``, written
  to a temporary file and moved into place with ``os.replace`` (atomic on POSIX), so
  a crash leaves either the previous or the new state, never a torn one.

Running per-chain means and variances of the kept draws are accumulated on device
(Welford), so posterior moments need no stored draws at all (``store=False``).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from numpyro_almc._driver import (
    ALMCTrace,
    _all_chains_step,
    _init_states,
    _replicate,
    _resolve_mesh,
    _run_keys,
    _shard_chains,
    initial_positions,
)
from numpyro_almc._kernel import ALMCState, build_kernel, standard_normal_score
from numpyro_almc._schedules import ALMCSchedule
from numpyro_almc._static import by_identity
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["ChunkedResult", "run_almc_chunked", "load_chunks"]

_STATE_FILE = "state.npz"
_FORMAT_VERSION = 1


class ChunkedResult(NamedTuple):
    """Output of :func:`run_almc_chunked`.

    Attributes
    ----------
    state
        State of every chain after the last completed step (leading chain axis).
    num_steps_done
        Steps completed (``== num_steps`` when the run is finished).
    complete
        Whether all ``num_steps`` steps are done (False after ``max_chunks``).
    count
        Number of kept draws per chain that entered the moments.
    mean, variance
        Per-chain running mean and (population, ``ddof=0``) variance of the kept
        draws of each stored site, dicts ``site -> (chains, *event_shape)``.
    pooled_mean, pooled_variance
        The same over all chains together.
    num_diverging
        int32 reverted steps of each chain.
    path
        The run directory (``None`` when nothing is written).
    """

    state: ALMCState
    num_steps_done: int
    complete: bool
    count: int
    mean: dict
    variance: dict
    pooled_mean: dict
    pooled_variance: dict
    num_diverging: Array
    path: pathlib.Path | None


def _site_names(position) -> list[str]:
    """One name per position leaf: dict keys joined by '.', ``"x"`` for a lone array."""
    paths = jax.tree_util.tree_flatten_with_path(position)[0]
    if len(paths) == 1 and not paths[0][0]:
        return ["x"]
    names = []
    for keypath, _ in paths:
        parts = []
        for k in keypath:
            for attr in ("key", "name", "idx"):
                if hasattr(k, attr):
                    parts.append(str(getattr(k, attr)))
                    break
        names.append(".".join(parts))
    return names


def _welford_init(leaves):
    return (
        jnp.zeros((), jnp.int32),
        [jnp.zeros_like(x) for x in leaves],
        [jnp.zeros_like(x) for x in leaves],
    )


def _welford_update(acc, leaves, take):
    count, means, m2s = acc
    new_count = count + take.astype(jnp.int32)
    denom = jnp.maximum(new_count, 1)
    out_means, out_m2s = [], []
    for x, m, m2 in zip(leaves, means, m2s, strict=True):
        delta = x - m
        m_new = m + delta / denom.astype(x.dtype)
        m2_new = m2 + delta * (x - m_new)
        out_means.append(jnp.where(take, m_new, m))
        out_m2s.append(jnp.where(take, m2_new, m2))
    return new_count, out_means, out_m2s


@functools.partial(
    jax.jit,
    static_argnames=(
        "loglikelihood_fn",
        "score_fn",
        "reference_score_fn",
        "chunk_length",
        "keep_every",
        "keep_from",
        "site_index",
        "initialise",
    ),
)
def _run_chunk(
    run_keys,
    states_or_positions,
    acc,
    num_diverging,
    start,
    schedule,
    preconditioner,
    *,
    loglikelihood_fn,
    score_fn,
    reference_score_fn,
    chunk_length,
    keep_every,
    keep_from,
    site_index,
    initialise,
):
    """Steps ``start .. start + chunk_length - 1`` of every chain (one scan)."""
    kernel = build_kernel(reference_score_fn)
    if initialise:
        states = _init_states(
            states_or_positions,
            schedule,
            loglikelihood_fn,
            score_fn,
            reference_score_fn,
        )
    else:
        states = states_or_positions

    def one_step(carry, i):
        states, num_diverging = carry
        states, info = _all_chains_step(
            kernel,
            run_keys,
            states,
            i,
            schedule,
            preconditioner,
            loglikelihood_fn,
            score_fn,
        )
        summary = ALMCTrace(
            time=info.time[0],
            step_size=info.step_size[0],
            num_diverging=jnp.sum(info.is_diverging, dtype=jnp.int32),
            mean_loglikelihood=jnp.mean(info.loglikelihood),
        )
        return (states, num_diverging + info.is_diverging.astype(jnp.int32)), summary

    def kept(states):
        leaves = jax.tree.leaves(states.position)
        return [leaves[j] for j in site_index]

    num_blocks, remainder = divmod(chunk_length, keep_every)

    def block(carry, b):
        inner, acc = carry
        first = start + b * keep_every
        inner, out = jax.lax.scan(one_step, inner, first + jnp.arange(keep_every))
        draws = kept(inner[0])
        # The draw after step `first + keep_every - 1` is kept when that step is at
        # or after keep_from (steps before are not stored and not in the moments).
        take = first + keep_every - 1 >= keep_from
        acc = _welford_update(acc, draws, take)
        return (inner, acc), (out, draws)

    carry = (states, num_diverging)
    carry, (trace, draws) = jax.lax.scan(block, (carry, acc), jnp.arange(num_blocks))
    carry, acc = carry
    trace = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), trace)
    if remainder:
        carry, rest = jax.lax.scan(
            one_step, carry, start + num_blocks * keep_every + jnp.arange(remainder)
        )
        trace = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), trace, rest)
    states, num_diverging = carry
    # draws: list of (blocks, chains, ...) -> (chains, blocks, ...)
    draws = [jnp.swapaxes(d, 0, 1) for d in draws]
    return states, acc, num_diverging, trace, draws


def _key_fingerprint(rng_key) -> list[int]:
    if jnp.issubdtype(jnp.asarray(rng_key).dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(rng_key)
    else:
        data = rng_key
    return [int(v) for v in np.asarray(data).ravel()]


def _atomic_savez(path: pathlib.Path, **arrays):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _chunk_file(path: pathlib.Path, k: int) -> pathlib.Path:
    return path / f"chunk_{k:06d}.npz"


def _save_state(path, config, chunks_done, steps_done, states, acc, num_diverging):
    count, means, m2s = acc
    arrays = {
        "config": np.asarray(json.dumps(config)),
        "chunks_done": np.asarray(chunks_done),
        "steps_done": np.asarray(steps_done),
        "count": np.asarray(count),
        "num_diverging": np.asarray(num_diverging),
    }
    for j, leaf in enumerate(jax.tree.leaves(states)):
        arrays[f"state_{j}"] = np.asarray(leaf)
    for j, (m, m2) in enumerate(zip(means, m2s, strict=True)):
        arrays[f"mean_{j}"] = np.asarray(m)
        arrays[f"m2_{j}"] = np.asarray(m2)
    _atomic_savez(path / _STATE_FILE, **arrays)


def _load_state(path, config, states_template, num_sites):
    with np.load(path / _STATE_FILE) as f:
        saved = json.loads(str(f["config"]))
        if saved != config:
            diff = {
                k: (saved.get(k), config.get(k))
                for k in set(saved) | set(config)
                if saved.get(k) != config.get(k)
            }
            raise ValueError(
                f"{path} holds a different run (saved vs asked: {diff}); pass the "
                "same arguments to resume, another `path`, or resume=False to "
                "overwrite it."
            )
        leaves, treedef = jax.tree.flatten(states_template)
        states = jax.tree.unflatten(
            treedef, [jnp.asarray(f[f"state_{j}"]) for j in range(len(leaves))]
        )
        acc = (
            jnp.asarray(f["count"]),
            [jnp.asarray(f[f"mean_{j}"]) for j in range(num_sites)],
            [jnp.asarray(f[f"m2_{j}"]) for j in range(num_sites)],
        )
        return (
            int(f["chunks_done"]),
            int(f["steps_done"]),
            states,
            acc,
            jnp.asarray(f["num_diverging"]),
        )


def run_almc_chunked(
    rng_key: PRNGKey,
    loglikelihood_fn: Callable[[ArrayTree], Array],
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    schedule: ALMCSchedule,
    position: ArrayLikeTree,
    *,
    num_chains: int,
    num_steps: int,
    chunk_size: int,
    path: str | os.PathLike | None,
    keep_every: int = 1,
    keep_from: int = 0,
    sites: list[str] | None = None,
    resume: bool = True,
    store: bool = True,
    max_chunks: int | None = None,
    preconditioner=None,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    devices=None,
    mesh: Mesh | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> ChunkedResult:
    r"""Run :func:`run_almc` in chunks of ``chunk_size`` steps, streaming to disk.

    Device memory holds one chunk's kept draws at most; host memory the same, as
    each chunk is written and dropped. The steps are exactly those of
    ``run_almc(rng_key, ..., num_chains=num_chains, num_steps=num_steps)``: the final
    state equals its ``state`` and the stored draws equal its ``path`` with
    ``path_every=keep_every`` (from ``keep_from`` on), bit for bit — unsharded, or
    sharded over the same devices.

    Parameters
    ----------
    rng_key, loglikelihood_fn, score_fn, schedule, position, num_chains, num_steps
        As in :func:`run_almc`.
    chunk_size
        Steps per jitted scan (a multiple of ``keep_every``). Memory per chunk is
        about ``num_chains * chunk_size / keep_every * dim`` numbers.
    path
        Directory of the run (created). ``None`` keeps nothing on disk (only the
        running moments; no resume).
    keep_every
        Keep the position after every ``keep_every``-th step (steps ``i`` with
        ``(i + 1) % keep_every == 0``), as ``path_every`` in :func:`run_almc`.
    keep_from
        Draws after steps ``i < keep_from`` are neither stored nor counted in the
        moments (e.g. ``schedule.num_steps`` to keep only the tail at ``τ``).
    sites
        Names of the position leaves to store and summarise (dict keys, ``"a.b"`` for
        nested dicts, ``"x"`` for a lone array); default all.
    resume
        If ``path`` holds a run with the same arguments, continue it from its last
        completed chunk; ``False`` starts afresh and overwrites it.
    store
        Write the kept draws (``False``: moments and state only).
    max_chunks
        Run at most this many chunks in this call (then ``complete`` is False and a
        later call with ``resume=True`` goes on).
    devices, mesh
        Shard chains over devices, as in :func:`run_almc`.
    callback
        ``callback(chunks_done, steps_done)`` after each chunk is safely on disk.

    Returns
    -------
    ChunkedResult

    Examples
    --------
    >>> import tempfile
    >>> from numpyro_almc import budget_schedule, load_chunks, run_almc_chunked
    >>> d = tempfile.mkdtemp()
    >>> res = run_almc_chunked(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...     lambda x, t: -x, budget_schedule(30), jnp.zeros(2), num_chains=4,
    ...     num_steps=200, chunk_size=50, path=d, keep_from=130)
    >>> load_chunks(d)["draws"]["x"].shape, res.count
    ((4, 70, 2), 70)
    """
    if not isinstance(schedule, ALMCSchedule):
        raise TypeError(
            f"`schedule` must be an ALMCSchedule, got {type(schedule).__name__}."
        )
    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")
    num_chains = _check_count("num_chains", num_chains, 1)
    num_steps = _check_count("num_steps", num_steps, 1)
    chunk_size = _check_count("chunk_size", chunk_size, 1)
    keep_every = _check_count("keep_every", keep_every, 1)
    keep_from = _check_count("keep_from", keep_from)
    if chunk_size % keep_every:
        raise ValueError(
            f"`chunk_size` ({chunk_size}) must be a multiple of `keep_every` "
            f"({keep_every}) so every chunk keeps whole blocks."
        )
    if max_chunks is not None:
        max_chunks = _check_count("max_chunks", max_chunks, 1)
    names = _site_names(position)
    if sites is None:
        site_index = tuple(range(len(names)))
    else:
        unknown = [s for s in sites if s not in names]
        if unknown or not sites:
            raise ValueError(f"`sites` must be a non-empty subset of {names}.")
        site_index = tuple(names.index(s) for s in sites)
    site_names = [names[j] for j in site_index]
    mesh = _resolve_mesh(devices, mesh, num_chains)

    config = {
        "version": _FORMAT_VERSION,
        "key": _key_fingerprint(rng_key),
        "num_chains": num_chains,
        "num_steps": num_steps,
        "chunk_size": chunk_size,
        "keep_every": keep_every,
        "keep_from": keep_from,
        "sites": site_names,
        "store": bool(store),
        "shapes": [list(jnp.shape(v)) for v in jax.tree.leaves(position)],
        "dtypes": [str(jnp.result_type(v)) for v in jax.tree.leaves(position)],
        "schedule_steps": schedule.num_steps,
    }

    run_keys = _shard_chains(_run_keys(rng_key, num_chains), mesh)
    schedule_d = _replicate(schedule, mesh)
    preconditioner_d = _replicate(preconditioner, mesh)
    positions = _shard_chains(initial_positions(rng_key, position, num_chains), mesh)
    statics = dict(
        loglikelihood_fn=by_identity(loglikelihood_fn),
        score_fn=by_identity(score_fn),
        reference_score_fn=by_identity(reference_score_fn),
        keep_every=keep_every,
        keep_from=keep_from,
        site_index=site_index,
    )
    pos_leaves = jax.tree.leaves(positions)
    acc = _welford_init([pos_leaves[j] for j in site_index])
    num_diverging = _shard_chains(jnp.zeros((num_chains,), jnp.int32), mesh)
    chunks_done, steps_done, states = 0, 0, positions

    run_dir = None if path is None else pathlib.Path(path)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (run_dir / _STATE_FILE).exists():
            # The tree structure of the states (to unflatten the saved leaves).
            template = jax.eval_shape(
                lambda p: _init_states(
                    p, schedule, loglikelihood_fn, score_fn, reference_score_fn
                ),
                positions,
            )
            chunks_done, steps_done, states, acc, num_diverging = _load_state(
                run_dir, config, template, len(site_index)
            )
            states = _shard_chains(states, mesh)
            acc = (acc[0], _shard_chains(acc[1], mesh), _shard_chains(acc[2], mesh))
            num_diverging = _shard_chains(num_diverging, mesh)
        else:
            for stale in [*run_dir.glob("chunk_*.npz"), run_dir / _STATE_FILE]:
                stale.unlink(missing_ok=True)
            with open(run_dir / "run.json", "w") as f:
                json.dump({**config, "site_names": names}, f)

    ran = 0
    while steps_done < num_steps and (max_chunks is None or ran < max_chunks):
        length = min(chunk_size, num_steps - steps_done)
        states, acc, num_diverging, trace, draws = _run_chunk(
            run_keys,
            states,
            acc,
            num_diverging,
            jnp.int32(steps_done),
            schedule_d,
            preconditioner_d,
            chunk_length=length,
            initialise=steps_done == 0,
            **statics,
        )
        # Step indices of the kept blocks of this chunk, and which are stored.
        ends = steps_done + keep_every * np.arange(1, length // keep_every + 1) - 1
        keep = ends >= keep_from
        if run_dir is not None:
            if store:
                arrays = {
                    f"draw/{name}": np.asarray(d)[:, keep]
                    for name, d in zip(site_names, draws, strict=True)
                }
            else:
                arrays = {}
            arrays["step"] = ends[keep].astype(np.int64)
            for field, value in trace._asdict().items():
                arrays[f"trace/{field}"] = np.asarray(value)
            _atomic_savez(_chunk_file(run_dir, chunks_done), **arrays)
        del draws, trace
        steps_done += length
        chunks_done += 1
        ran += 1
        if run_dir is not None:
            _save_state(
                run_dir, config, chunks_done, steps_done, states, acc, num_diverging
            )
        if callback is not None:
            callback(chunks_done, steps_done)

    count, means, m2s = acc
    n = int(count)
    mean = {s: m for s, m in zip(site_names, means, strict=True)}
    variance = {s: m2 / max(n, 1) for s, m2 in zip(site_names, m2s, strict=True)}
    # Pool equal-count chains: total variance = mean within + variance of means.
    pooled_mean = {s: jnp.mean(m, axis=0) for s, m in mean.items()}
    pooled_variance = {
        s: jnp.mean(variance[s], axis=0) + jnp.var(mean[s], axis=0) for s in mean
    }
    return ChunkedResult(
        state=states,
        num_steps_done=steps_done,
        complete=steps_done >= num_steps,
        count=n,
        mean=mean,
        variance=variance,
        pooled_mean=pooled_mean,
        pooled_variance=pooled_variance,
        num_diverging=num_diverging,
        path=run_dir,
    )


def load_chunks(path: str | os.PathLike) -> dict:
    """Read the completed chunks of a :func:`run_almc_chunked` run.

    Only chunks recorded as complete in the state file are read (a chunk file
    written just before a crash is ignored until its state is saved).

    Returns
    -------
    dict
        ``draws``: ``site -> (chains, draws, *event_shape)``; ``step``: the step index
        of each draw; ``trace``: :class:`ALMCTrace` fields concatenated over steps;
        ``num_steps_done``; ``posterior`` and ``sample_stats``: dicts ready for
        ``arviz.from_dict(posterior=..., sample_stats=...)`` (per-draw
        ``diverging`` is not recorded per chain; ``sample_stats`` holds the chain
        averaged trace at the kept steps, broadcast over chains).

    Examples
    --------
    >>> # idata = arviz.from_dict(**{k: v for k, v in load_chunks(d).items()
    >>> #                             if k in ("posterior", "sample_stats")})
    """
    run_dir = pathlib.Path(path)
    with np.load(run_dir / _STATE_FILE) as f:
        chunks_done = int(f["chunks_done"])
        steps_done = int(f["steps_done"])
        config = json.loads(str(f["config"]))
    draws: dict[str, list] = {s: [] for s in config["sites"]}
    steps, traces = [], {field: [] for field in ALMCTrace._fields}
    for k in range(chunks_done):
        with np.load(_chunk_file(run_dir, k)) as f:
            for s in draws:
                if f"draw/{s}" in f:
                    draws[s].append(f[f"draw/{s}"])
            steps.append(f["step"])
            for field in traces:
                traces[field].append(f[f"trace/{field}"])
    out_draws = {s: np.concatenate(v, axis=1) for s, v in draws.items() if v}
    step = np.concatenate(steps) if steps else np.zeros((0,), np.int64)
    trace = ALMCTrace(**{k: np.concatenate(v) for k, v in traces.items()})
    num_chains = config["num_chains"]
    sample_stats = {
        "mean_loglikelihood": np.broadcast_to(
            trace.mean_loglikelihood[step], (num_chains, len(step))
        ),
        "time": np.broadcast_to(trace.time[step], (num_chains, len(step))),
        "step_size": np.broadcast_to(trace.step_size[step], (num_chains, len(step))),
    }
    return {
        "draws": out_draws,
        "step": step,
        "trace": trace,
        "num_steps_done": steps_done,
        "posterior": dict(out_draws),
        "sample_stats": sample_stats,
    }
