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

In a multi-process run (a ``mesh`` spanning the devices of several processes, see
``docs/multi_host.md``) every process writes the chains it holds to its own files,
``chunk_{k:06d}.p{process:03d}.npz`` and ``state.p{process:03d}.npz`` (the previous
state is kept as ``state.p{process:03d}.prev.npz``); :func:`load_chunks` merges them.

:func:`export_netcdf` streams the chunks of a run, one at a time, into one NetCDF
file with ArviZ's layout (``posterior``, ``sample_stats``), which
``arviz.from_netcdf`` opens lazily.

Safety of the run folder (see ``docs/howto/long_runs.md``):

* one writer per folder: ``run.lock`` (``run.p{process:03d}.lock`` per process of a
  multi-process run) is created with ``O_CREAT | O_EXCL`` and holds the writer's
  pid, host and start time; a second writer gets :class:`RunLockedError`. A lock
  whose pid is no longer running on this host is stale and removed with a warning;
  a lock from another host is removed only with ``break_lock=True``;
* temporary files are named ``<file>.<pid>.<random>.tmp`` and moved into place with
  ``os.replace``;
* ``resume=True`` never deletes a chunk: a folder with chunks but no state file is
  refused; only ``resume=False`` deletes an earlier run;
* every run has a run id (a uuid) and a fingerprint (sha256) of its array inputs:
  the key, the schedule's arrays, the preconditioner's leaves, the starting
  positions and the array leaves of the callables (e.g. a
  ``jax.tree_util.Partial``'s arguments, an equinox network's weights). Both are
  in the state file and ``run.json``; every chunk holds the run id, its index,
  the fingerprint's digest and a sha256 per array. A resume with other inputs,
  a chunk of another run, a chunk whose checksum or size differs from the one
  the state file recorded: each raises a ``ValueError`` naming the input or file.
  The code of the callables cannot be compared: ``tag=`` labels it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import re
import secrets
import socket
import uuid
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from numpyro_almc._static import by_identity
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc._validate import check_divergence_threshold
from numpyro_almc.mcmc.almc import ALMCState, standard_normal_score
from numpyro_almc.mcmc.finish import FinalStage, check_final_stage
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import ALMCSchedule, check_schedule
from numpyro_almc.run.chains import (
    FINISH_KEYS,
    as_arrays,
    check_floating,
    check_fns,
    check_key,
    init_states,
    offset_keys,
    run_keys,
    starting_positions,
)
from numpyro_almc.run.health import check_chains, check_finished
from numpyro_almc.run.loop import finish_chains, run_chains
from numpyro_almc.run.recorders import (
    ALMCTrace,
    SaveAt,
    site_index,
    site_names,
    welford_init,
)
from numpyro_almc.run.sharding import (
    CHAIN_AXIS,
    replicate,
    resolve_mesh,
    shard_chains,
)
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "ChunkedResult",
    "RunLockedError",
    "run_almc_chunked",
    "load_chunks",
    "export_netcdf",
]

_STATE_FILE = "state.npz"
# 2: run id, input fingerprints, chunk checksums and sizes, run.lock.
_FORMAT_VERSION = 3


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
    mean
        Per-chain running mean of the kept draws of each stored site, a dict
        ``site -> (chains, *event_shape)``.
    variance
        Per-chain running (population, ``ddof=0``) variance of the same draws, a
        dict like ``mean``.
    pooled_mean
        The mean over all chains together.
    pooled_variance
        The (population) variance over all chains together.
    num_diverging
        int32 reverted steps of each chain (a final-stage draw that was not
        finite counts as one, as in :func:`~numpyro_almc.run_almc`).
    path
        The run directory (``None`` when nothing is written).
    final_draw
        With ``final_stage`` and a complete run: each chain's last state carried
        from ``τ`` to ``t = 0`` (as :func:`~numpyro_almc.run_almc`'s
        ``final_draw``; not stored in the run directory: a resumed, finished run
        recomputes it from the saved state, bit for bit). ``None`` otherwise. The
        kept draws and their moments are of the chains at ``τ``.
    run_id
        The run's id (a uuid, fixed when the run starts, the same after every
        resume; ``None`` when nothing is written).

    Examples
    --------
    >>> from numpyro_almc import budget_schedule, run_almc_chunked
    >>> res = run_almc_chunked(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...     lambda x, t: -x, budget_schedule(20, num_warm_start_steps=10),
    ...     jnp.zeros(2), num_chains=2, num_steps=40, chunk_size=20, path=None,
    ...     max_chunks=1)
    >>> res.complete, res.num_steps_done, res.count, res.pooled_mean["x"].shape
    (False, 20, 20, (2,))
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
    final_draw: ArrayTree | None = None
    run_id: str | None = None


def _acc_dict(acc, names):
    count, means, m2s = acc
    return (
        count,
        dict(zip(names, means, strict=True)),
        dict(zip(names, m2s, strict=True)),
    )


def _acc_list(acc, names):
    count, means, m2s = acc
    return count, [means[s] for s in names], [m2s[s] for s in names]


def _key_fingerprint(rng_key) -> list[int]:
    if jnp.issubdtype(jnp.asarray(rng_key).dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(rng_key)
    else:
        data = rng_key
    return [int(v) for v in np.asarray(data).ravel()]


# --------------------------------------------------------------------------------
# One writer per run folder: an exclusive lock file.


class RunLockedError(RuntimeError):
    """Another process is writing (or was writing) this run folder.

    Raised by :func:`run_almc_chunked` when the folder's lock file exists and its
    holder is running, runs on another host, or cannot be identified. The message
    names the folder, the lock file and its holder (pid, host, start time).
    """


def _lock_file(run_dir: pathlib.Path, process: int | None) -> pathlib.Path:
    return run_dir / f"run{_suffix(process)}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_text(file: pathlib.Path) -> str | None:
    try:
        return file.read_text()
    except FileNotFoundError:
        return None


def _stale_reason(holder: dict | None) -> str | None:
    """Why a lock is stale (its holder is dead), or None if that cannot be told."""
    if not isinstance(holder, dict):
        return None
    pid, host = holder.get("pid"), holder.get("host")
    if host != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return None
    if _pid_alive(pid):
        return None
    return f"its holder, pid {pid} on this host, is no longer running"


def _break_lock(file: pathlib.Path, seen: str) -> None:
    """Remove ``file`` if it still holds ``seen`` (another process may have broken
    it and taken a new lock since it was read: that one is put back)."""
    grave = file.with_name(f"{file.name}.{os.getpid()}.{secrets.token_hex(4)}.broken")
    try:
        os.rename(file, grave)
    except FileNotFoundError:
        return
    if _read_text(grave) != seen:  # a live lock taken meanwhile: restore it
        try:
            os.link(grave, file)
        except FileExistsError:  # pragma: no cover - a third writer in between
            pass
    grave.unlink(missing_ok=True)


def _describe_holder(holder: dict | None, text: str) -> str:
    if not isinstance(holder, dict):
        return f"an unidentified holder (lock file content {text[:200]!r})"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')!r}, "
        f"since {holder.get('time')}"
    )


def _acquire_lock(run_dir: pathlib.Path, process: int | None, break_lock: bool) -> str:
    """Create the folder's lock file atomically; return its token."""
    file = _lock_file(run_dir, process)
    token = uuid.uuid4().hex
    text = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "token": token,
        }
    )
    for _ in range(10):
        try:
            fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            seen = _read_text(file)
            if seen is None:  # released meanwhile
                continue
            try:
                holder = json.loads(seen)
            except ValueError:  # empty: being written, or its writer died
                holder = None
            reason = _stale_reason(holder)
            if break_lock or reason is not None:
                _break_lock(file, seen)
                if not break_lock:
                    warnings.warn(
                        f"Removed the stale lock {file} ({reason}); its run is "
                        "resumed from the last chunk it completed.",
                        stacklevel=3,
                    )
                continue
            raise RunLockedError(
                f"{run_dir} is locked by {_describe_holder(holder, seen)} (lock file "
                f"{file.name}): another run_almc_chunked writes this folder. Wait "
                "for it to finish, or write to another `path`. If that process is "
                "dead (a lock from another host, or a reused pid, cannot be "
                "checked), pass break_lock=True or delete the lock file."
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return token
    raise RunLockedError(  # pragma: no cover - ten writers racing for one lock
        f"Could not take the lock {file}: other writers keep taking it."
    )


def _release_lock(run_dir: pathlib.Path, process: int | None, token: str) -> None:
    file = _lock_file(run_dir, process)
    text = _read_text(file)
    try:
        ours = text is not None and json.loads(text).get("token") == token
    except (ValueError, AttributeError):
        ours = False
    if ours:
        file.unlink(missing_ok=True)
    else:
        warnings.warn(
            f"The lock {file} was removed or replaced by another process while this "
            "run held it (break_lock=True elsewhere?): two writers may have written "
            "this folder; check the run with load_chunks.",
            stacklevel=3,
        )


# --------------------------------------------------------------------------------
# Writing files: per-process temporary names, atomic replace.


def _tmp_name(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_dir(directory: pathlib.Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: pathlib.Path, write) -> int:
    """``write(f)`` to a temporary file moved onto ``path``; the file's size."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return size


def _atomic_savez(path: pathlib.Path, **arrays) -> int:
    return _atomic_write(path, lambda f: np.savez(f, **arrays))


# Temporary files of a killed writer: <name>.<pid>.<hex>.tmp
_TMP = re.compile(
    r"^(?:chunk_\d{6}|state|run)(?P<suffix>\.p\d{3})?(?:\.prev)?\.(?:npz|json)"
    r"\.\d+\.[0-9a-f]+\.tmp$"
)


def _remove_leftovers(run_dir: pathlib.Path, process: int | None) -> None:
    """Delete the temporary files a killed writer of this process left (the lock
    is held: nobody else writes these names)."""
    for file in run_dir.glob("*.tmp"):
        m = _TMP.match(file.name)
        if m is not None and (m["suffix"] or "") == _suffix(process):
            file.unlink(missing_ok=True)


# --------------------------------------------------------------------------------
# Fingerprints and checksums.


def _sha256(a: np.ndarray) -> str:
    """sha256 of an array's shape and bytes (C order)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(memoryview(a.reshape(-1).view(np.uint8)) if a.size else b"")
    return h.hexdigest()


def _leaf_array(x) -> np.ndarray | None:
    """A pytree leaf as numpy, or None when it is no array (a function, a string)
    or not held by this process."""
    if isinstance(x, bool | int | float | complex | np.generic):
        return np.asarray(x)
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, jax.Array):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.is_fully_addressable or x.is_fully_replicated:
            return _host(x)
    return None


def _fingerprint(name: str, tree) -> dict[str, str]:
    """``{name + leaf path: sha256}`` for every array leaf of ``tree``."""
    try:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    except Exception:  # pragma: no cover - an object jax cannot flatten
        return {}
    out = {}
    for leaf_path, leaf in leaves:
        a = _leaf_array(leaf)
        if a is not None:
            out[name + jax.tree_util.keystr(leaf_path)] = _sha256(a)
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _config_digest(config: dict) -> str:
    return _digest(json.dumps(config, sort_keys=True))


def _write_chunk(file, arrays, *, run_id, chunk, config_digest) -> tuple[str, int]:
    """Write a chunk with its fingerprint; return (digest of its meta, size)."""
    meta = json.dumps(
        {
            "run_id": run_id,
            "chunk": chunk,
            "config_sha256": config_digest,
            "arrays": {k: _sha256(v) for k, v in sorted(arrays.items())},
        },
        sort_keys=True,
    )
    size = _atomic_savez(file, meta=np.asarray(meta), **arrays)
    return _digest(meta), size


class _DamagedFile(ValueError):
    """A run file that fails a check (its message names the file)."""


def _damaged(file, problem: str, todo: str) -> ValueError:
    return _DamagedFile(f"{file} {problem}. {todo}")


_LOAD_TODO = (
    "Restore this file from a copy. If it is lost, recompute the run in a new "
    "folder with the same arguments (the same key gives the same draws, bit for "
    "bit); deleting it does not help, as every completed chunk is read."
)
_RESUME_TODO = (
    "The run cannot be continued with this chunk: restore the file from a copy, "
    "or move the folder away and rerun elsewhere, or pass resume=False to delete "
    "the run here and start afresh."
)


def _check_chunk(file, k, run_id, digest, size, todo) -> dict:
    """Check chunk ``k``'s file against the state's record; return its meta.

    Reads the small ``meta`` entry only (a zip member); the arrays' checksums are
    checked as they are read (:func:`_read_chunk`).
    """
    if not file.exists():
        raise _damaged(file, f"is missing (chunk {k} of a completed run)", todo)
    try:
        with np.load(file) as f:
            text = str(f["meta"])
        meta = json.loads(text)
    except KeyError:
        raise _damaged(
            file,
            "holds no fingerprint: it was not written by this version of "
            "run_almc_chunked (copied in from elsewhere?)",
            todo,
        ) from None
    except Exception as err:
        raise _damaged(
            file,
            f"cannot be read ({type(err).__name__}: {err}); it is truncated or damaged",
            todo,
        ) from err
    if meta.get("run_id") != run_id:
        raise _damaged(
            file,
            f"belongs to another run (run id {meta.get('run_id')}; this folder's "
            f"run is {run_id}): it was copied in from another run folder",
            todo,
        )
    if meta.get("chunk") != k:
        raise _damaged(
            file,
            f"holds chunk {meta.get('chunk')} of this run, not chunk {k} (renamed "
            "or copied over?)",
            todo,
        )
    if _digest(text) != digest:
        raise _damaged(
            file,
            "does not match the chunk the state file recorded (checksum differs)",
            todo,
        )
    actual = file.stat().st_size
    if actual != size:
        raise _damaged(
            file,
            f"has {actual} bytes where {size} were written (truncated or modified)",
            todo,
        )
    return meta


def _suffix(process: int | None) -> str:
    return "" if process is None else f".p{process:03d}"


def _chunk_file(path: pathlib.Path, k: int, process: int | None = None):
    return path / f"chunk_{k:06d}{_suffix(process)}.npz"


def _state_file(path: pathlib.Path, process: int | None = None, prev=False):
    if process is None:
        return path / _STATE_FILE
    return path / f"state{_suffix(process)}{'.prev' if prev else ''}.npz"


def _host(x) -> np.ndarray:
    """A replicated (or single-process) array as numpy, on every process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_shards[0].data)
    raise ValueError("expected a replicated array")  # pragma: no cover


def _local_rows(x) -> tuple[np.ndarray, np.ndarray]:
    """``(chain indices, rows)`` of the chains (leading axis) this process holds."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        rows = np.asarray(x)
        return np.arange(rows.shape[0]), rows
    blocks = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0
        blocks.setdefault(start, shard.data)
    starts = sorted(blocks)
    rows = [np.asarray(blocks[k]) for k in starts]
    idx = [np.arange(k, k + r.shape[0]) for k, r in zip(starts, rows, strict=True)]
    return np.concatenate(idx), np.concatenate(rows)


def _from_local_rows(rows: np.ndarray, mesh, num_chains: int):
    """The global chain-sharded array whose local rows are ``rows``."""
    if mesh is None:
        return jnp.asarray(rows)
    sharding = NamedSharding(mesh, PartitionSpec(CHAIN_AXIS))
    if sharding.is_fully_addressable:
        return shard_chains(jnp.asarray(rows), mesh)
    return jax.make_array_from_process_local_data(
        sharding, rows, (num_chains, *rows.shape[1:])
    )


class _Record(NamedTuple):
    """What a state file records of the run's files: its id, and the digest of
    every completed chunk's meta and that file's size."""

    run_id: str
    digests: list
    sizes: list


def _save_state(
    file, config, chunks_done, steps_done, states, acc, num_diverging, chains, record
):
    count, means, m2s = acc
    arrays = {
        "config": np.asarray(json.dumps(config)),
        "chunks_done": np.asarray(chunks_done),
        "steps_done": np.asarray(steps_done),
        "count": _host(count),
        "num_diverging": _local_rows(num_diverging)[1],
        "chains": chains,
        "run_id": np.asarray(record.run_id),
        "chunk_sha256": np.asarray(record.digests, dtype="<U64"),
        "chunk_bytes": np.asarray(record.sizes, dtype=np.int64),
    }
    for j, leaf in enumerate(jax.tree.leaves(states)):
        arrays[f"state_{j}"] = _local_rows(leaf)[1]
    for j, (m, m2) in enumerate(zip(means, m2s, strict=True)):
        arrays[f"mean_{j}"] = _local_rows(m)[1]
        arrays[f"m2_{j}"] = _local_rows(m2)[1]
    _atomic_savez(file, **arrays)


def _record_of(f) -> _Record | None:
    """The record in an open state file (None: a format-1 file, which has none)."""
    if "run_id" not in f:
        return None
    return _Record(
        str(f["run_id"]),
        [str(d) for d in f["chunk_sha256"]],
        [int(n) for n in f["chunk_bytes"]],
    )


_FRESH = (
    "Pass the same arguments to resume it, another `path` for a new run, or "
    "resume=False to delete it and start afresh."
)


def _check_config(file, saved, config):
    saved.setdefault("num_processes", 1)  # files written before multi-process runs
    if saved.get("version") != config["version"]:
        raise ValueError(
            f"{file.parent} holds a run written by format version "
            f"{saved.get('version')} of run_almc_chunked (this is version "
            f"{config['version']}); it cannot be resumed. load_chunks reads it; "
            "resume=False deletes it and starts afresh, or pass another `path`."
        )
    if saved != config:
        diff = {
            k: (saved.get(k), config.get(k))
            for k in sorted(set(saved) | set(config))
            if saved.get(k) != config.get(k) and k != "inputs"
        }
        old, new = saved.get("inputs", {}), config.get("inputs", {})
        inputs = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        what = []
        if inputs:
            what.append(
                "these array inputs differ (sha256 of their values): "
                + ", ".join(inputs)
            )
        if diff:
            what.append(f"these arguments differ (saved, asked): {diff}")
        raise ValueError(
            f"{file.parent} holds a different run: {'; '.join(what)}. {_FRESH}"
        )


def _chunks_done_of(file) -> int | None:
    """Completed chunks recorded in a state file (None: missing or unreadable)."""
    try:
        with np.load(file) as f:
            return int(f["chunks_done"])
    except Exception:  # missing, truncated (BadZipFile), not a state file
        return None


def _load_state(file, config, states_template, num_sites, mesh, num_chains):
    try:
        f = np.load(file)
        saved = json.loads(str(f["config"]))
    except Exception as err:
        raise ValueError(
            f"{file} cannot be read ({type(err).__name__}: {err}): the run's state "
            "is damaged. Restore it from a copy, or pass resume=False to delete the "
            "run and start afresh."
        ) from err
    with f:
        _check_config(file, saved, config)
        leaves, treedef = jax.tree.flatten(states_template)

        def put(name):
            return _from_local_rows(f[name], mesh, num_chains)

        states = jax.tree.unflatten(
            treedef, [put(f"state_{j}") for j in range(len(leaves))]
        )
        acc = (
            np.asarray(f["count"]),
            [put(f"mean_{j}") for j in range(num_sites)],
            [put(f"m2_{j}") for j in range(num_sites)],
        )
        return (
            int(f["chunks_done"]),
            int(f["steps_done"]),
            states,
            acc,
            put("num_diverging"),
            _record_of(f),
        )


def _agree(error: str | None, process: int | None, what: str) -> None:
    """Raise ``error`` here, and in every process when any process has one (so no
    process goes on to wait for the others at a barrier)."""
    if process is not None:
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(error is not None))
        if error is None and np.any(flags):
            bad = [int(p) for p in np.flatnonzero(flags)]
            error = f"Process(es) {bad} of this run found {what}; see their errors."
    if error is not None:
        raise ValueError(error)


def _check_committed(run_dir, process, record, chunks_done) -> str | None:
    """Check every completed chunk of this process (cheap: meta and size only)."""
    for k in range(chunks_done):
        try:
            _check_chunk(
                _chunk_file(run_dir, k, process),
                k,
                record.run_id,
                record.digests[k],
                record.sizes[k],
                _RESUME_TODO,
            )
        except ValueError as err:
            return str(err)
    return None


def _data_files(run_dir, process, config_digest) -> list[pathlib.Path]:
    """The files of an earlier run that a fresh start would delete.

    A crash before the first state is saved leaves at most chunk 0 of this same
    run (same fingerprint): recomputing it loses nothing, so it is not counted.
    """
    if process is None:
        chunks = sorted(run_dir.glob("chunk_*.npz"))
        states = sorted(run_dir.glob("state*.npz"))
    else:
        chunks = sorted(run_dir.glob(f"chunk_*{_suffix(process)}.npz"))
        states = [
            f
            for f in (
                _state_file(run_dir, process),
                _state_file(run_dir, process, prev=True),
            )
            if f.exists()
        ]
    if not states and chunks == [_chunk_file(run_dir, 0, process)]:
        try:
            with np.load(chunks[0]) as f:
                meta = json.loads(str(f["meta"]))
            if meta.get("config_sha256") == config_digest:
                return []
        except Exception:
            pass
    return [*states, *chunks]


def _refuse_without_state(run_dir, files) -> str:
    names = [f.name for f in files]
    listed = ", ".join(names[:3]) + (
        f", … ({len(names)} files)" if len(names) > 3 else ""
    )
    return (
        f"{run_dir} holds files of an earlier run ({listed}) but no usable state "
        "file, so that run cannot be continued, and resume=True never deletes "
        "data. To keep them, move them elsewhere first (load_chunks needs the "
        "state file to read chunks); to delete them and start afresh here, pass "
        "resume=False; or pass another `path`."
    )


def _process_state_file(run_dir, process) -> pathlib.Path | None:
    """This process's state file to resume from, agreed with all processes.

    A crash can leave one process a chunk ahead of another (each saves its state
    after a barrier that follows every process's chunk write); all processes then
    resume from the smallest common chunk count, which the ahead ones still hold
    in their ``.prev`` file.
    """
    from jax.experimental import multihost_utils

    files = [_state_file(run_dir, process), _state_file(run_dir, process, prev=True)]
    done = {f: _chunks_done_of(f) for f in files}
    local = max([d for d in done.values() if d is not None], default=-1)
    common = int(np.min(multihost_utils.process_allgather(np.int64(local))))
    if common < 0:
        return None
    for f, d in done.items():
        if d == common:
            return f
    raise ValueError(  # pragma: no cover - needs a crash of two chunks' distance
        f"Process {process} has no saved state at chunk {common} in {run_dir}; "
        "resume=False restarts the run."
    )


def _run_config(
    rng_key,
    position,
    schedule,
    *,
    counts,
    sites,
    store,
    num_processes,
    tag,
    divergence_threshold,
    inputs,
):
    """What a resume must match: the arguments, and fingerprints of ``inputs``."""
    config = {
        "version": _FORMAT_VERSION,
        "key": _key_fingerprint(rng_key),
        **counts,
        "sites": sites,
        "store": bool(store),
        "shapes": [list(jnp.shape(v)) for v in jax.tree.leaves(position)],
        "dtypes": [str(jnp.result_type(v)) for v in jax.tree.leaves(position)],
        "schedule_steps": schedule.num_steps,
        "num_processes": num_processes,
        "tag": tag,
        "divergence_threshold": divergence_threshold,
    }
    if inputs is not None:
        config["inputs"] = {
            k: v
            for name, tree in inputs.items()
            for k, v in _fingerprint(name, tree).items()
        }
    return config


def _check_counts(num_chains, num_steps, chunk_size, keep_every, keep_from, max_chunks):
    """The step and chain counts of :func:`run_almc_chunked`, checked."""
    counts = (
        _check_count("num_chains", num_chains, 1),
        _check_count("num_steps", num_steps, 1),
        _check_count("chunk_size", chunk_size, 1),
        _check_count("keep_every", keep_every, 1),
        _check_count("keep_from", keep_from),
        None if max_chunks is None else _check_count("max_chunks", max_chunks, 1),
    )
    chunk_size, keep_every = counts[2], counts[3]
    if chunk_size % keep_every:
        raise ValueError(
            f"`chunk_size` ({chunk_size}) must be a multiple of `keep_every` "
            f"({keep_every}) so every chunk keeps whole blocks."
        )
    return counts


def _open_run(run_dir, process, resume, config, names, template, mesh, num_chains):
    """Resume the run in ``run_dir`` or start afresh: ``(saved, record)``.

    ``saved`` is None for a fresh start, else ``(chunks_done, steps_done, states,
    acc, num_diverging)`` of the last completed chunk, after checking every
    completed chunk's file; ``template()`` gives the states' tree structure.
    """
    _remove_leftovers(run_dir, process)
    if not resume:
        state_file = None
    elif process is None:
        state_file = _state_file(run_dir)
        state_file = state_file if state_file.exists() else None
    else:
        state_file = _process_state_file(run_dir, process)
    if state_file is None:
        return None, _start_fresh(run_dir, process, config, names, resume)
    *saved, record = _load_state(
        state_file, config, template(), len(config["sites"]), mesh, num_chains
    )
    chunks_done = saved[0]
    _agree(
        _check_committed(run_dir, process, record, chunks_done),
        process,
        "a damaged chunk",
    )
    return tuple(saved), record


def _start_fresh(run_dir, process, config, names, resume) -> _Record:
    """Clear an earlier run out of ``run_dir`` and record a new one (its id, run.json).

    With ``resume=True`` files of an earlier run without a state file are refused
    rather than deleted.
    """
    if resume:
        files = _data_files(run_dir, process, _config_digest(config))
        _agree(
            _refuse_without_state(run_dir, files) if files else None,
            process,
            "files of an earlier run without a state file",
        )
    if process is None:  # everything of an earlier run, states first
        stale = [*run_dir.glob("state*.npz"), *run_dir.glob("chunk_*.npz")]
    else:  # this process's files only (and process 0 a one-process run's)
        stale = [
            _state_file(run_dir, process),
            _state_file(run_dir, process, prev=True),
            *run_dir.glob(f"chunk_*{_suffix(process)}.npz"),
        ]
        if process == 0:
            stale.insert(0, _state_file(run_dir))
            stale += [*run_dir.glob("chunk_" + "[0-9]" * 6 + ".npz")]
    for file in stale:
        file.unlink(missing_ok=True)
    run_id = uuid.uuid4()
    if process is not None:  # one id for all processes: process 0's
        from jax.experimental import multihost_utils

        shared = multihost_utils.broadcast_one_to_all(
            np.frombuffer(run_id.bytes, np.uint8)
        )
        run_id = uuid.UUID(bytes=bytes(np.asarray(shared).astype(np.uint8)))
    record = _Record(run_id.hex, [], [])
    if process in (None, 0):
        text = json.dumps({**config, "site_names": names, "run_id": record.run_id})
        _atomic_write(run_dir / "run.json", lambda f: f.write(text.encode()))
    return record


def _store_chunk(
    file, record, *, chunk, config_digest, draws, steps, keep_from, trace, chains
) -> _Record:
    """Write one chunk's draws from ``keep_from`` on and its trace; the new record.

    ``draws`` maps site names to this process's draws (empty: ``store=False``),
    ``steps`` the step index of each kept block.
    """
    keep = steps >= keep_from
    arrays = {}
    for name, d in draws.items():
        rows = _local_rows(d)[1]
        # No copy when the whole chunk is kept (one chunk less on host).
        arrays[f"draw/{name}"] = rows if keep.all() else rows[:, keep]
    arrays["step"] = steps[keep].astype(np.int64)
    for field, value in trace._asdict().items():
        arrays[f"trace/{field}"] = _host(value)
    if chains is not None:
        arrays["chain"] = chains
    digest, size = _write_chunk(
        file, arrays, run_id=record.run_id, chunk=chunk, config_digest=config_digest
    )
    return _Record(record.run_id, [*record.digests, digest], [*record.sizes, size])


def _commit_state(run_dir, process, config, chunks_done, *state) -> None:
    """Save the state after a chunk; in a multi-process run only once every
    process's chunk is on disk, keeping the previous state as ``.prev``."""
    file = _state_file(run_dir, process)
    if process is not None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"almc chunk {chunks_done}")
        if file.exists():
            os.replace(file, _state_file(run_dir, process, prev=True))
    _save_state(file, config, chunks_done, *state)


def _result(
    acc,
    kept_names,
    *,
    states,
    keys,
    steps_done,
    num_steps,
    num_diverging,
    schedule,
    final_stage,
    statics,
    strict,
    run_dir,
    record,
) -> ChunkedResult:
    """The run's moments (per chain and pooled), health check and final stage."""
    count, means, m2s = acc
    n = int(_host(count))
    mean = {s: m for s, m in zip(kept_names, means, strict=True)}
    variance = {s: m2 / max(n, 1) for s, m2 in zip(kept_names, m2s, strict=True)}
    # Pool equal-count chains: total variance = mean within + variance of means.
    pooled_mean = {s: jnp.mean(m, axis=0) for s, m in mean.items()}
    pooled_variance = {
        s: jnp.mean(variance[s], axis=0) + jnp.var(mean[s], axis=0) for s in mean
    }
    if steps_done >= num_steps:
        check_chains(
            num_diverging,
            num_steps,
            states.time,
            schedule.times[-1],
            strict=strict,
            where="run_almc_chunked",
            full_path=num_steps >= schedule.num_steps,
        )
    final_draw = None
    if final_stage is not None and steps_done >= num_steps:
        final_draw, bad = finish_chains(
            offset_keys(keys, FINISH_KEYS, states.step),
            states,
            loglikelihood_fn=statics["loglikelihood_fn"],
            score_fn=statics["score_fn"],
            final_stage=final_stage,
        )
        num_diverging = num_diverging + bad.astype(num_diverging.dtype)
        check_finished(bad, strict=strict, where="run_almc_chunked")
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
        final_draw=final_draw,
        run_id=None if record is None else record.run_id,
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
    final_stage: FinalStage | bool | None = None,
    strict: bool = False,
    init_positions: ArrayLikeTree | None = None,
    tag: str | None = None,
    break_lock: bool = False,
    divergence_threshold: float | None = None,
) -> ChunkedResult:
    r"""Run :func:`run_almc` in chunks of ``chunk_size`` steps, streaming to disk.

    (Long because it is the file protocol in order: checks, the run's fingerprint
    (``_run_config``), the lock, fresh start or resume (``_open_run``), then per
    chunk the steps (:func:`numpyro_almc.run.loop.run_chains`), the chunk file
    (``_store_chunk``) and the state behind a barrier (``_commit_state``), and the
    moments (``_result``).)

    Device memory holds one chunk's kept draws at most; host memory the same, as
    each chunk is written and dropped. The steps are exactly those of
    ``run_almc(rng_key, ..., num_chains=num_chains, num_steps=num_steps)``: the final
    state equals its ``state`` and the stored draws equal its ``path`` with
    ``path_every=keep_every`` (from ``keep_from`` on), bit for bit — unsharded, or
    sharded over the same devices.

    Parameters
    ----------
    rng_key
        As in :func:`run_almc`.
    loglikelihood_fn
        As in :func:`run_almc`.
    score_fn
        As in :func:`run_almc`.
    schedule
        As in :func:`run_almc`.
    position
        As in :func:`run_almc`.
    num_chains
        As in :func:`run_almc` (required here).
    num_steps
        As in :func:`run_almc` (required here).
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
        nested dicts, ``"x"`` for a lone array); None: all.
    resume
        If ``path`` holds a run with the same arguments, continue it from its last
        completed chunk (after checking that every completed chunk's file is there,
        of its recorded size and checksum, and of this run). A run with other
        arguments or array inputs, or chunk files without a state file, raise a
        ``ValueError`` and nothing is deleted. ``False`` deletes an earlier run in
        ``path`` and starts afresh: the only way chunks are ever deleted.
    store
        Write the kept draws (``False``: moments and state only).
    max_chunks
        Run at most this many chunks in this call (then ``complete`` is False and a
        later call with ``resume=True`` goes on).
    devices
        Shard chains over devices, as in :func:`run_almc`.
    mesh
        Shard chains over a mesh, as in :func:`run_almc`. With a ``mesh`` over
        the devices of several processes (``jax.distributed``), each process
        writes its own chains' files; see ``docs/multi_host.md``.
    callback
        ``callback(chunks_done, steps_done)`` after each chunk is safely on disk.
    final_stage
        None (default), True or a :class:`~numpyro_almc.mcmc.FinalStage`: carry
        the chains' last states to ``t = 0`` when the run completes
        (``final_draw``). Needs the noised likelihood.
    strict
        As in :func:`~numpyro_almc.run_almc`: the health check of a completed run
        warns, or with ``strict=True`` raises (the chunks stay on disk).
    init_positions
        Starting positions with a leading chain axis, as in :func:`run_almc`
        (default: ``N(0, I)`` draws from ``rng_key``).
    tag
        A label of what the fingerprint cannot compare, stored in the run and
        compared on resume: the code of ``loglikelihood_fn``, ``score_fn`` and
        ``reference_score_fn`` and data they close over (e.g. ``"model v3, data
        2024-05-01"``).
    divergence_threshold
        As in :func:`~numpyro_almc.run_almc` (part of the run's fingerprint).
    break_lock
        Remove the folder's lock file even if its holder cannot be shown dead (a
        lock from another host, or an unreadable one). Only when no other process
        writes ``path``.

    Returns
    -------
    ChunkedResult

    Raises
    ------
    RunLockedError
        Another process holds the folder's lock (``run.lock``): its pid runs on
        this host, or it is on another host (then pass ``break_lock=True`` once
        that process is known to be dead). A lock whose pid no longer runs on
        this host is removed with a warning.
    ValueError
        On resume: the folder holds a different run (the message names the
        differing arguments or array inputs), chunk files without a state file,
        or a completed chunk that is missing, truncated, of another run or with
        another checksum (the message names the file and what to do).

    Notes
    -----
    The fingerprint covers every array input: ``rng_key``, the arrays of
    ``schedule``, the leaves of ``preconditioner``, the starting positions, and
    the array leaves of the three callables when they are pytrees (a
    ``jax.tree_util.Partial``'s arguments, an equinox module's weights). It
    cannot cover the callables' code or the data a plain closure captures: a
    resume with another likelihood of the same shapes is not detected. Label
    them with ``tag``, or start each changed model in a fresh ``path``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import tempfile
    >>> from numpyro_almc import budget_schedule, load_chunks, run_almc_chunked
    >>> d = tempfile.mkdtemp()
    >>> res = run_almc_chunked(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...     lambda x, t: -x, budget_schedule(30), jnp.zeros(2), num_chains=4,
    ...     num_steps=200, chunk_size=50, path=d, keep_from=130)
    >>> load_chunks(d)["draws"]["x"].shape, res.count
    ((4, 70, 2), 70)
    """
    check_schedule(schedule)
    check_key(rng_key)
    final_stage = check_final_stage(final_stage, loglikelihood_fn)
    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")
    counts = _check_counts(
        num_chains, num_steps, chunk_size, keep_every, keep_from, max_chunks
    )
    num_chains, num_steps, chunk_size, keep_every, keep_from, max_chunks = counts
    divergence_threshold = check_divergence_threshold(divergence_threshold)
    position = as_arrays("position", position)
    check_floating("position", position)
    check_fns(loglikelihood_fn, score_fn, position)
    check_preconditioner(preconditioner, position)
    if tag is not None and not isinstance(tag, str):
        raise TypeError(f"`tag` must be a string or None, got {type(tag).__name__}.")
    names = site_names(position)
    kept_index = site_index(position, sites) or tuple(range(len(names)))
    kept_names = [names[j] for j in kept_index]
    save = SaveAt.build(
        position,
        num_steps=num_steps,
        every=keep_every,
        sites=kept_names,
        keep_from=keep_from,
        moments=True,
        stack=path is not None and bool(store),
        every_name="keep_every",
    )
    mesh = resolve_mesh(devices, mesh, num_chains)

    # Several processes (a mesh over their devices): each writes its own chains.
    processes = set() if mesh is None else {d.process_index for d in mesh.devices.flat}
    process = jax.process_index() if len(processes) > 1 else None

    keys = shard_chains(run_keys(rng_key, num_chains), mesh)
    schedule_d = replicate(schedule, mesh)
    preconditioner_d = replicate(preconditioner, mesh)
    starts = starting_positions(rng_key, position, num_chains, init_positions)
    config = _run_config(
        rng_key,
        position,
        schedule,
        counts=dict(
            num_chains=num_chains,
            num_steps=num_steps,
            chunk_size=chunk_size,
            keep_every=keep_every,
            keep_from=keep_from,
        ),
        sites=kept_names,
        store=store,
        num_processes=max(len(processes), 1),
        tag=tag,
        divergence_threshold=divergence_threshold,
        inputs=None
        if path is None
        else dict(
            schedule=schedule,
            preconditioner=preconditioner,
            init_positions=starts,
            loglikelihood_fn=loglikelihood_fn,
            score_fn=score_fn,
            reference_score_fn=reference_score_fn,
        ),
    )
    positions = shard_chains(starts, mesh)
    del starts
    statics = dict(
        loglikelihood_fn=by_identity(loglikelihood_fn),
        score_fn=by_identity(score_fn),
        reference_score_fn=by_identity(reference_score_fn),
        total_steps=num_steps,
        save=save,
        divergence_threshold=divergence_threshold,
    )
    # The moments as lists in site order (the state files' layout).
    acc = _acc_list(welford_init(save.kept(positions)), kept_names)
    num_diverging = shard_chains(jnp.zeros((num_chains,), jnp.int32), mesh)
    chunks_done, steps_done, states = 0, 0, positions
    chains = _local_rows(num_diverging)[0]
    config_digest = _config_digest(config)
    record = None

    run_dir = None if path is None else pathlib.Path(path)
    lock = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _acquire_lock(run_dir, process, break_lock)
    try:
        if run_dir is not None:
            # The tree structure of the states (to unflatten saved leaves).
            def template():
                return jax.eval_shape(
                    lambda p: init_states(
                        p, schedule, loglikelihood_fn, score_fn, reference_score_fn
                    ),
                    positions,
                )

            saved, record = _open_run(
                run_dir, process, resume, config, names, template, mesh, num_chains
            )
            if saved is not None:
                chunks_done, steps_done, states, acc, num_diverging = saved

        ran = 0
        while steps_done < num_steps and (max_chunks is None or ran < max_chunks):
            length = min(chunk_size, num_steps - steps_done)
            out = run_chains(
                keys,
                states,
                np.int32(steps_done),
                schedule_d,
                preconditioner_d,
                _acc_dict(acc, kept_names),
                num_diverging,
                num_steps=length,
                initialise=steps_done == 0,
                **statics,
            )
            states, num_diverging, trace = out.states, out.num_diverging, out.trace
            acc = _acc_list(out.moments, kept_names)
            draws = None if out.kept is None else [out.kept[s] for s in kept_names]
            if run_dir is None:
                # Nothing below waits for the chunk: without this, dispatch would run
                # ahead and queue many chunks' buffers at once.
                jax.block_until_ready(states)
            if run_dir is not None:
                # Step indices of the kept blocks of this chunk.
                ends = steps_done + keep_every * np.arange(1, length // keep_every + 1)
                record = _store_chunk(
                    _chunk_file(run_dir, chunks_done, process),
                    record,
                    chunk=chunks_done,
                    config_digest=config_digest,
                    draws=dict(zip(kept_names, draws, strict=True)) if store else {},
                    steps=ends - 1,
                    keep_from=keep_from,
                    trace=trace,
                    chains=None if process is None else chains,
                )
            del draws, trace
            steps_done += length
            chunks_done += 1
            ran += 1
            if run_dir is not None:
                _commit_state(
                    run_dir,
                    process,
                    config,
                    chunks_done,
                    steps_done,
                    states,
                    acc,
                    num_diverging,
                    chains,
                    record,
                )
            if callback is not None:
                callback(chunks_done, steps_done)
    finally:
        if lock is not None:
            _release_lock(run_dir, process, lock)

    return _result(
        acc,
        kept_names,
        states=states,
        keys=keys,
        steps_done=steps_done,
        num_steps=num_steps,
        num_diverging=num_diverging,
        schedule=schedule,
        final_stage=final_stage,
        statics=statics,
        strict=strict,
        run_dir=run_dir,
        record=record,
    )


class _RunFiles(NamedTuple):
    config: dict
    chunks_done: int
    steps_done: int
    processes: list  # [None] for a single-process run
    records: dict  # process -> _Record, or None for a format-1 run (no checks)


def _run_files(path) -> _RunFiles:
    """What is safely on disk: the chunks every writing process has recorded."""
    run_dir = pathlib.Path(path)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory.")
    if _state_file(run_dir).exists():
        files = {None: [_state_file(run_dir)]}
    else:
        pids = sorted(
            {int(f.name.split(".")[1][1:]) for f in run_dir.glob("state.p*.npz")}
        )
        files = {
            p: [_state_file(run_dir, p), _state_file(run_dir, p, prev=True)]
            for p in pids
        }
    if not files:
        chunks = sorted(run_dir.glob("chunk_*.npz"))
        if chunks:
            raise FileNotFoundError(
                f"{run_dir} has no state file but {len(chunks)} chunk file(s) "
                f"({chunks[0].name} … {chunks[-1].name}): the state file was lost, "
                "and without it the chunks cannot be checked or read. Restore "
                f"{_STATE_FILE} from a copy."
            )
        raise FileNotFoundError(
            f"{run_dir} has no state file: no chunk of a run_almc_chunked run has "
            "completed there."
        )
    best = {}
    for p, candidates in files.items():
        done = [(_chunks_done_of(f), f) for f in candidates]
        done = [(d, f) for d, f in done if d is not None]
        if not done:
            names = ", ".join(f.name for f in candidates if f.exists())
            raise FileNotFoundError(
                f"{run_dir}: no readable state file of process {p} ({names} "
                "truncated or damaged). Restore it from a copy."
            )
        best[p] = max(done, key=lambda df: df[0])
    chunks_done, file = min(best.values(), key=lambda df: df[0])
    with np.load(file) as f:
        config = json.loads(str(f["config"]))
        steps_done = int(f["steps_done"])
    records = {}
    for p, (_, f_p) in best.items():
        with np.load(f_p) as f:
            records[p] = _record_of(f)
    if any(r is None for r in records.values()):
        warnings.warn(
            f"{run_dir} was written by format version {config.get('version')} of "
            "run_almc_chunked: its chunks carry no checksums and are read unchecked.",
            stacklevel=3,
        )
        records = None
    elif len({r.run_id for r in records.values()}) > 1:
        ids = {p: r.run_id for p, r in records.items()}
        raise ValueError(
            f"{run_dir} holds the state files of different runs (run ids by "
            f"process: {ids}): gather the files of one run in one directory."
        )
    config.setdefault("num_processes", 1)
    if len(files) != config["num_processes"]:
        raise FileNotFoundError(
            f"{run_dir} holds the state of {len(files)} process(es) of a run written "
            f"by {config['num_processes']}: gather every host's files in one "
            "directory."
        )
    return _RunFiles(config, chunks_done, steps_done, list(files), records)


def _read_chunk(run_dir, k, info: _RunFiles, sites):
    """Chunk ``k``: draws (chains in order), kept steps and the trace, each array
    checked against the checksum its file holds, the file against the state."""
    parts = []
    for p in info.processes:
        file = _chunk_file(run_dir, k, p)
        sums = None
        if info.records is not None:
            rec = info.records[p]
            meta = _check_chunk(
                file, k, rec.run_id, rec.digests[k], rec.sizes[k], _LOAD_TODO
            )
            sums = meta["arrays"]
        try:
            with np.load(file) as f:

                def get(name, f=f, sums=sums, file=file):
                    a = f[name]
                    if sums is not None and _sha256(a) != sums.get(name):
                        raise _damaged(
                            file, f"has a wrong checksum for {name!r}", _LOAD_TODO
                        )
                    return a

                parts.append(
                    {
                        "draws": {
                            s: get(f"draw/{s}") for s in sites if f"draw/{s}" in f
                        },
                        "chain": get("chain") if "chain" in f else None,
                        "step": get("step"),
                        "trace": {x: get(f"trace/{x}") for x in ALMCTrace._fields},
                    }
                )
        except _DamagedFile:
            raise
        except Exception as err:
            raise _damaged(
                file,
                f"cannot be read ({type(err).__name__}: {err}); it is truncated "
                "or damaged",
                _LOAD_TODO,
            ) from err
    draws = parts[0]["draws"]
    if len(parts) > 1:
        order = np.argsort(np.concatenate([q["chain"] for q in parts]))
        draws = {
            s: np.concatenate([q["draws"][s] for q in parts])[order] for s in draws
        }
    return draws, parts[0]["step"], parts[0]["trace"]


def _check_sites(config, sites):
    stored = config["sites"]
    if sites is None:
        return list(stored)
    if isinstance(sites, str) or any(s not in stored for s in sites) or not sites:
        raise ValueError(f"`sites` must be a non-empty subset of {stored}.")
    return list(sites)


def _site_layout(run_dir, config, names):
    """Event shapes and dtypes of the stored sites ``names``."""
    try:
        with open(run_dir / "run.json") as f:
            all_names = json.load(f)["site_names"]
        index = {n: all_names.index(n) for n in names}
    except (OSError, ValueError, KeyError):
        # run.json lost (or written on another host): read them off a chunk.
        info = _run_files(run_dir)
        chunk = _read_chunk(run_dir, 0, info, names)[0]
        return (
            {n: list(chunk[n].shape[2:]) for n in names},
            {n: chunk[n].dtype for n in names},
        )
    shapes = {n: config["shapes"][index[n]] for n in names}
    dtypes = {n: np.dtype(config["dtypes"][index[n]]) for n in names}
    return shapes, dtypes


def _sample_stats(trace, step, num_chains):
    shape = (num_chains, len(step))
    return {
        "mean_loglikelihood": np.broadcast_to(trace.mean_loglikelihood[step], shape),
        "time": np.broadcast_to(trace.time[step], shape),
        "step_size": np.broadcast_to(trace.step_size[step], shape),
    }


def load_chunks(
    path: str | os.PathLike,
    *,
    sites: list[str] | None = None,
    as_inference_data: bool = False,
):
    """Read the completed chunks of a :func:`run_almc_chunked` run into memory.

    Only chunks recorded as complete in the state file(s) are read (a chunk file
    written just before a crash is ignored until its state is saved). The files of
    a multi-process run (one set per process) are merged, chains in order. Every
    chunk is checked as it is read: its run id, index, size and meta checksum
    against the state file's record, each array read against its sha256 (a
    ``ValueError`` names the file and what to do).

    Parameters
    ----------
    path
        The run directory.
    sites
        Read only these stored sites (default: all stored).
    as_inference_data
        Return ArviZ data (``InferenceData`` with ArviZ 0.2x, ``DataTree`` with 1.x)
        with ``posterior`` (the draws) and ``sample_stats`` (``time``,
        ``step_size``, ``mean_loglikelihood``: the chain-averaged trace at the kept
        steps, broadcast over chains) instead of a dict. This holds every draw in
        memory; for runs that do not fit, see :func:`export_netcdf`.

    Returns
    -------
    dict or ArviZ data
        The dict has ``draws``: ``site -> (chains, draws, *event_shape)``; ``step``:
        the step index of each draw; ``trace``: :class:`ALMCTrace` fields over all
        completed steps; ``num_steps_done``; ``run_id``; ``posterior`` and
        ``sample_stats``: dicts ready for ``arviz.from_dict``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import tempfile
    >>> from numpyro_almc import budget_schedule, load_chunks, run_almc_chunked
    >>> d = tempfile.mkdtemp()
    >>> _ = run_almc_chunked(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...     lambda x, t: -x, budget_schedule(30), jnp.zeros(2), num_chains=2,
    ...     num_steps=60, chunk_size=30, path=d, keep_every=3)
    >>> idata = load_chunks(d, as_inference_data=True)
    >>> idata.posterior["x"].shape
    (2, 20, 2)
    """
    run_dir = pathlib.Path(path)
    info = _run_files(run_dir)
    names = _check_sites(info.config, sites)
    draws: dict[str, list] = {s: [] for s in names}
    steps, traces = [], {field: [] for field in ALMCTrace._fields}
    for k in range(info.chunks_done):
        chunk, step, trace = _read_chunk(run_dir, k, info, names)
        for s, d in chunk.items():
            draws[s].append(d)
        steps.append(step)
        for field in traces:
            traces[field].append(trace[field])
    out_draws = {s: np.concatenate(v, axis=1) for s, v in draws.items() if v}
    step = np.concatenate(steps) if steps else np.zeros((0,), np.int64)
    trace = ALMCTrace(**{k: np.concatenate(v) for k, v in traces.items()})
    sample_stats = _sample_stats(trace, step, info.config["num_chains"])
    if as_inference_data:
        from numpyro_almc.io.arviz import _build

        if not out_draws:
            raise ValueError(
                "The run stored no draws (store=False); there is no posterior."
            )
        return _build(
            {"posterior": dict(out_draws), "sample_stats": sample_stats},
            coords=None,
            dims=None,
            attrs=None,
        )
    return {
        "draws": out_draws,
        "step": step,
        "trace": trace,
        "num_steps_done": info.steps_done,
        "run_id": None
        if info.records is None
        else info.records[info.processes[0]].run_id,
        "posterior": dict(out_draws),
        "sample_stats": sample_stats,
    }


def export_netcdf(
    path: str | os.PathLike,
    filename: str | os.PathLike | None = None,
    *,
    sites: list[str] | None = None,
) -> pathlib.Path:
    """Stream the completed chunks of a run into one NetCDF file for ArviZ.

    Chunks are read and appended one at a time (HDF5 datasets that grow along
    ``draw``), so memory holds one chunk whatever the length of the run. The file
    has ArviZ's layout: groups ``posterior`` (one variable per site, dimensions
    ``(chain, draw, <site>_dim_0, ...)``) and ``sample_stats`` (``time``,
    ``step_size``, ``mean_loglikelihood`` at the kept steps, broadcast over
    chains, and ``step``, the step index of each draw). It is written to
    a temporary file (``filename.<pid>.<random>.tmp``) and moved into place when
    complete, so a crash never leaves a torn file; export again to include chunks
    completed since. Chunks are checked as in :func:`load_chunks`.

    ``arviz.from_netcdf(file)`` opens it lazily (ArviZ 0.2x ``InferenceData``, 1.x
    ``DataTree``): ``az.summary(idata, var_names=[...])`` reads only the sites it
    summarises; with ``dask`` installed, ``group_kwargs={"posterior": {"chunks":
    {}}}`` (0.2x) makes the computations out of core as well.

    Parameters
    ----------
    path
        The run directory of :func:`run_almc_chunked`.
    filename
        The NetCDF file to write (default ``path / "posterior.nc"``).
    sites
        Export only these stored sites (default: all stored).

    Returns
    -------
    pathlib.Path
        The file written. Needs ``h5netcdf`` (``pip install h5netcdf``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import tempfile, arviz as az
    >>> from numpyro_almc import budget_schedule, export_netcdf, run_almc_chunked
    >>> d = tempfile.mkdtemp()
    >>> _ = run_almc_chunked(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...     lambda x, t: -x, budget_schedule(30), jnp.zeros(2), num_chains=2,
    ...     num_steps=60, chunk_size=30, path=d, keep_every=3)
    >>> az.from_netcdf(export_netcdf(d)).posterior["x"].shape
    (2, 20, 2)
    """
    try:
        import h5netcdf
    except ImportError:  # pragma: no cover - h5netcdf is a test dependency
        raise ImportError(
            "export_netcdf needs h5netcdf: pip install h5netcdf "
            "(or numpyro_almc[netcdf])."
        ) from None
    run_dir = pathlib.Path(path)
    info = _run_files(run_dir)
    config = info.config
    if not config["store"]:
        raise ValueError("The run stored no draws (store=False); nothing to export.")
    names = _check_sites(config, sites)
    target = run_dir / "posterior.nc" if filename is None else pathlib.Path(filename)
    shapes, dtypes = _site_layout(run_dir, config, names)
    tmp = _tmp_name(target)
    try:
        _write_netcdf(h5netcdf, tmp, run_dir, info, names, shapes, dtypes)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _write_netcdf(h5netcdf, tmp, run_dir, info, names, shapes, dtypes):
    config, num_chains = info.config, info.config["num_chains"]
    with h5netcdf.File(tmp, "w") as f:
        f.attrs["created_by"] = "numpyro_almc.export_netcdf"
        f.attrs["num_steps_done"] = info.steps_done
        f.attrs["keep_every"] = config["keep_every"]
        f.attrs["keep_from"] = config["keep_from"]
        post, stats = f.create_group("posterior"), f.create_group("sample_stats")
        for g in (post, stats):
            g.dimensions["chain"] = num_chains
            g.dimensions["draw"] = None  # unlimited: grows chunk by chunk
            g.create_variable("chain", ("chain",), data=np.arange(num_chains))
            g.create_variable("draw", ("draw",), dtype=np.int64)
        variables = {}
        for n in names:
            dims = [f"{n}_dim_{i}" for i in range(len(shapes[n]))]
            for d, size in zip(dims, shapes[n], strict=True):
                post.dimensions[d] = size
            # HDF5 chunks of one chain and at most ~4 MiB.
            size = max(int(np.prod(shapes[n])), 1) * dtypes[n].itemsize
            block = max(1, min(4096, (4 << 20) // size))
            variables[n] = post.create_variable(
                n,
                ("chain", "draw", *dims),
                dtype=dtypes[n],
                chunks=(1, block, *shapes[n]),
            )
        stat_vars = {
            k: stats.create_variable(
                k, ("chain", "draw"), dtype=np.float32, chunks=(1, 4096)
            )
            for k in ("mean_loglikelihood", "time", "step_size")
        }
        step_var = stats.create_variable("step", ("draw",), dtype=np.int64)
        done = 0
        for k in range(info.chunks_done):
            chunk, step, trace = _read_chunk(run_dir, k, info, names)
            m = len(step)
            if not m:
                continue
            for g in (post, stats):
                g.resize_dimension("draw", done + m)
                g.variables["draw"][done : done + m] = np.arange(done, done + m)
            for n in names:
                variables[n][:, done : done + m] = chunk[n]
            # The chunk's trace starts at step k * chunk_size.
            local = step - k * config["chunk_size"]
            ss = _sample_stats(ALMCTrace(**trace), local, num_chains)
            for key, var in stat_vars.items():
                var[:, done : done + m] = ss[key]
            step_var[done : done + m] = step
            done += m
