"""A jitted driver: many independent ALMC chains, vmapped, one ``lax.scan``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from numpyro_almc._kernel import (
    ALMCState,
    build_kernel,
    init,
    standard_normal_score,
)
from numpyro_almc._schedules import ALMCSchedule, schedule_at
from numpyro_almc._static import by_identity
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "ALMCResult",
    "ALMCTrace",
    "run_almc",
    "chain_keys",
    "chain_mesh",
    "initial_positions",
]

#: Name of the mesh axis along which chains are sharded.
CHAIN_AXIS = "chain"


class ALMCTrace(NamedTuple):
    """Per-step diagnostics summarised over chains (one entry per step).

    Attributes
    ----------
    time
        OU time of the drift of each step (``inf`` in the warm start).
    step_size
        Step size of each step.
    num_diverging
        Number of chains whose step was reverted.
    mean_loglikelihood
        Chain average of ``log L`` after the step.

    Examples
    --------
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_chains=3)
    >>> res.trace.time.shape, int(res.trace.num_diverging.sum())
    ((24,), 0)
    """

    time: Array
    step_size: Array
    num_diverging: Array
    mean_loglikelihood: Array


class ALMCResult(NamedTuple):
    """Output of :func:`run_almc` (every array has a leading chain axis).

    Attributes
    ----------
    state
        Final state of every chain; ``state.position`` is the last iterate at ``τ``.
    window_draw
        Per chain, one iterate drawn uniformly from the last ``final_window`` steps
        (the paper's Fisher-divergence guarantee is for this time-averaged law);
        ``None`` when ``final_window == 0``.
    trace
        :class:`ALMCTrace`, per-step diagnostics averaged over chains.
    path
        Positions after every ``path_every``-th step, shape ``(chains, kept, ...)``;
        ``None`` when ``path_every == 0``.
    num_diverging
        int32 number of reverted steps of each chain.

    Examples
    --------
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_chains=3, path_every=5, final_window=4)
    >>> res.state.position.shape, res.window_draw.shape, res.path.shape
    ((3, 2), (3, 2), (3, 4, 2))
    >>> res.num_diverging.tolist()
    [0, 0, 0]
    """

    state: ALMCState
    window_draw: ArrayTree | None
    trace: ALMCTrace
    path: ArrayTree | None
    num_diverging: Array


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


def starting_positions(rng_key, position, num, init_positions=None, what="num_chains"):
    """``init_positions`` checked to have a leading axis of ``num``, or ``N(0, I)``
    draws shaped like ``position`` (:func:`initial_positions`) when it is None."""
    if init_positions is None:
        return initial_positions(rng_key, position, num)
    init_positions = jax.tree.map(jnp.asarray, init_positions)
    for leaf, ref in zip(
        jax.tree.leaves(init_positions), jax.tree.leaves(position), strict=True
    ):
        if leaf.shape != (num, *jnp.shape(ref)):
            raise ValueError(
                f"`init_positions` leaves must have shape ({what}, ...) = "
                f"{(num, *jnp.shape(ref))}, got {leaf.shape}."
            )
    return init_positions


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


def _site_index(position, sites) -> tuple[int, ...] | None:
    """Leaf indices of the named ``sites`` of ``position`` (None: all leaves)."""
    if sites is None:
        return None
    names = _site_names(position)
    if isinstance(sites, str) or not all(isinstance(s, str) for s in sites):
        raise TypeError(
            f"`sites` must be a list of site names (a subset of {names}), got "
            f"{sites!r}."
        )
    unknown = [s for s in sites if s not in names]
    if unknown or not sites:
        raise ValueError(
            f"`sites` must be a non-empty subset of {names}; unknown: {unknown}."
        )
    return tuple(names.index(s) for s in sites)


def _run_keys(rng_key, num_chains):
    return jax.vmap(lambda k: jax.random.split(k)[1])(chain_keys(rng_key, num_chains))


def _init_states(positions, schedule, loglikelihood_fn, score_fn, reference_score_fn):
    start_time = schedule.times[0]
    return jax.vmap(
        lambda p: init(
            p,
            loglikelihood_fn,
            score_fn,
            start_time,
            reference_score_fn=reference_score_fn,
        )
    )(positions)


def _all_chains_step(
    kernel, run_keys, states, i, schedule, preconditioner, loglikelihood_fn, score_fn
):
    """Step ``i`` of every chain; chain ``c`` uses ``fold_in(run_keys[c], i)``.

    Shared by :func:`run_almc` and the chunked driver so that both follow the same
    key stream and compute the same step bit for bit.
    """
    # The step index is not batched, so the warm-start branch in the kernel stays
    # a real branch (no score evaluation) under the vmap over chains.
    time, next_time, step_size, _ = schedule_at(schedule, i)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(run_keys)
    if getattr(preconditioner, "time_dependent", False):
        # Every chain is at the same time: factor M_t once, not once per chain.
        preconditioner = preconditioner.at(time)

    def chain_step(key, state):
        return kernel(
            key,
            state,
            loglikelihood_fn,
            score_fn,
            next_time,
            step_size,
            preconditioner,
        )

    return jax.vmap(chain_step)(keys, states)


@functools.partial(
    jax.jit,
    static_argnames=(
        "loglikelihood_fn",
        "score_fn",
        "reference_score_fn",
        "num_steps",
        "final_window",
        "path_every",
        "path_sites",
    ),
)
def _run(
    run_keys,
    positions,
    schedule,
    preconditioner,
    *,
    loglikelihood_fn,
    score_fn,
    reference_score_fn,
    num_steps,
    final_window,
    path_every,
    path_sites,
):
    kernel = build_kernel(reference_score_fn)
    states = _init_states(
        positions, schedule, loglikelihood_fn, score_fn, reference_score_fn
    )
    window_start = num_steps - final_window

    def one_step(carry, i):
        states, window = carry
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
        if final_window:
            # Reservoir sampling of one iterate uniformly from the final window.
            count = (i - window_start + 1).astype(jnp.float32)
            u = jax.vmap(
                lambda k: jax.random.uniform(jax.random.fold_in(k, num_steps + i))
            )(run_keys)
            take = (i >= window_start) & (u * count < 1.0)
            window = jax.tree.map(
                lambda w, p: jnp.where(take.reshape((-1,) + (1,) * (p.ndim - 1)), p, w),
                window,
                states.position,
            )
        summary = ALMCTrace(
            time=info.time[0],
            step_size=info.step_size[0],
            num_diverging=jnp.sum(info.is_diverging, dtype=jnp.int32),
            mean_loglikelihood=jnp.mean(info.loglikelihood),
        )
        return (states, window), (summary, info.is_diverging)

    window = positions if final_window else None
    carry = (states, window)

    def kept(position):
        if path_sites is None:
            return position
        leaves = jax.tree.leaves(position)
        return {name: leaves[j] for name, j in path_sites}

    if path_every:
        num_blocks, remainder = divmod(num_steps, path_every)

        def block(carry, b):
            carry, out = jax.lax.scan(
                one_step, carry, b * path_every + jnp.arange(path_every)
            )
            return carry, (out, kept(carry[0].position))

        carry, (out, path) = jax.lax.scan(block, carry, jnp.arange(num_blocks))
        out = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
        if remainder:
            carry, rest = jax.lax.scan(
                one_step, carry, num_blocks * path_every + jnp.arange(remainder)
            )
            out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)
        path = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), path)
    else:
        carry, out = jax.lax.scan(one_step, carry, jnp.arange(num_steps))
        path = None
    (states, window), (trace, diverging) = carry, out
    return ALMCResult(
        state=states,
        window_draw=window,
        trace=trace,
        path=path,
        num_diverging=jnp.sum(diverging, axis=0, dtype=jnp.int32),
    )


def chain_mesh(devices="all") -> Mesh:
    """A one-axis :class:`jax.sharding.Mesh` named ``"chain"`` over ``devices``.

    Parameters
    ----------
    devices
        ``"all"`` (every *local* device, ``jax.local_devices()``) or a sequence of
        devices. For a multi-host run build the mesh over ``jax.devices()`` (all
        processes' devices) yourself, see ``docs/multi_host.md``.

    Examples
    --------
    >>> chain_mesh().axis_names
    ('chain',)
    """
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(
                f"`devices` must be None, 'all' or a list of devices, got {devices!r}."
            )
        devices = jax.local_devices()
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` is empty; pass at least one device.")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("`devices` must hold jax.Device objects (see jax.devices()).")
    return Mesh(np.asarray(devices, dtype=object), (CHAIN_AXIS,))


def _resolve_mesh(devices, mesh, num_chains) -> Mesh | None:
    """The chain mesh asked for by ``devices=`` / ``mesh=`` (None: no sharding)."""
    if devices is not None and mesh is not None:
        raise ValueError("Pass either `devices` or `mesh`, not both.")
    if mesh is None:
        if devices is None:
            return None
        mesh = chain_mesh(devices)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh)}.")
    if CHAIN_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`mesh` must have an axis named {CHAIN_AXIS!r} (chains are sharded "
            f"along it), got axes {mesh.axis_names}; see chain_mesh()."
        )
    num_shards = mesh.shape[CHAIN_AXIS]
    if num_chains % num_shards:
        raise ValueError(
            f"num_chains ({num_chains}) must be a multiple of the number of devices "
            f"along the {CHAIN_AXIS!r} axis ({num_shards}); use e.g. "
            f"num_chains={-(-num_chains // num_shards) * num_shards}."
        )
    return mesh


def _put(tree, sharding: NamedSharding):
    """``device_put`` onto ``sharding``, also when it spans other processes.

    In a multi-process run ``device_put`` refuses a sharding with devices of other
    processes; every process holds the same host value (same key, same
    arguments), so each builds its own shards of the global array from it.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(one, tree)


def _shard_chains(tree, mesh: Mesh | None):
    """Put the leading (chain) axis of every leaf of ``tree`` along the mesh."""
    if mesh is None:
        return tree
    return _put(tree, NamedSharding(mesh, PartitionSpec(CHAIN_AXIS)))


def _replicate(tree, mesh: Mesh | None):
    """Copy ``tree`` (schedule, preconditioner) to every device of the mesh."""
    if mesh is None or tree is None:
        return tree
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def run_almc(
    rng_key: PRNGKey,
    loglikelihood_fn: Callable[[ArrayTree], Array],
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    schedule: ALMCSchedule,
    position: ArrayLikeTree,
    *,
    num_chains: int = 1,
    num_steps: int | None = None,
    preconditioner=None,
    final_window: int = 0,
    path_every: int = 0,
    sites: list[str] | None = None,
    init_positions: ArrayLikeTree | None = None,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    devices=None,
    mesh: Mesh | None = None,
) -> ALMCResult:
    r"""Run ``num_chains`` independent ALMC chains along ``schedule``, jitted.

    Chains start from ``N(0, I)`` (as in the paper) shaped like ``position`` unless
    ``init_positions`` (with a leading chain axis) is given. Chain ``c`` uses the keys
    derived from ``fold_in(rng_key, c)``: it is the same draw whether it runs alone or
    beside others. Only the final state, an optional uniformly random iterate of the
    final window, per-step diagnostics averaged over chains and (optionally) a thinned
    path are kept, so memory does not grow with the number of steps.

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    loglikelihood_fn, score_fn
        As in :func:`numpyro_almc.almc`. Pass the same function objects on every call
        to reuse the compiled run (they are static arguments of the jit).
    schedule
        The path. Its arrays are traced: changing step sizes or times (same number
        of steps) does not recompile.
    position
        A position of one chain (shapes and dtypes of the draws).
    num_chains
        Number of independent chains (vmapped).
    num_steps
        Steps to run; defaults to ``schedule.num_steps``. Extra steps are Langevin at
        the early-stopping time.
    preconditioner
        Optional constant preconditioner ``M`` (see ``linear_gaussian_preconditioner``).
    final_window
        Length of the final window from which ``window_draw`` is drawn (0: none).
    path_every
        Keep the positions every ``path_every`` steps (0: keep none).
    sites
        Names of the position leaves kept in ``path`` (dict keys, ``"a.b"`` for
        nested dicts, ``"x"`` for a lone array); ``path`` is then a dict
        ``name -> (chains, kept, ...)``. Default: the whole position.
    devices
        ``None`` (default: one device, as JAX places it), ``"all"`` (every local
        device) or a list of devices: chains are sharded along a one-axis mesh
        ``"chain"`` (``NamedSharding(mesh, P("chain"))`` on the initial positions and
        run keys; the schedule and preconditioner are replicated, the score and
        likelihood closures are traced once and run on every device). Every chain
        computes exactly what it computes unsharded, so draws are the same as the
        single-device run for the same key (bitwise when XLA compiles the same
        code for the per-device batch as for the whole batch; on CPU it may
        vectorise by batch size, then the last bits differ); the chain averages
        of ``trace`` may differ in the last bits (the reduction order changes).
        ``num_chains`` must be a multiple of the number of devices. Also works
        with a mesh over several processes (``mesh=``, see
        ``docs/multi_host.md``).
    mesh
        Instead of ``devices``: a :class:`jax.sharding.Mesh` with a ``"chain"``
        axis (e.g. a global mesh in a multi-host run, see ``docs/multi_host.md``).

    Returns
    -------
    ALMCResult

    Examples
    --------
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, budget_schedule(100), jnp.zeros(3),
    ...                num_chains=8, final_window=20)
    >>> res.state.position.shape, res.window_draw.shape
    ((8, 3), (8, 3))
    """
    if not isinstance(schedule, ALMCSchedule):
        raise TypeError(
            "`schedule` must be an ALMCSchedule (from paper_schedule or "
            f"budget_schedule), got {type(schedule).__name__}."
        )
    num_chains = _check_count("num_chains", num_chains, 1)
    num_steps = schedule.num_steps if num_steps is None else num_steps
    num_steps = _check_count("num_steps", num_steps, 1)
    final_window = _check_count("final_window", final_window)
    if final_window > num_steps:
        raise ValueError(
            f"`final_window` ({final_window}) cannot exceed num_steps ({num_steps})."
        )
    path_every = _check_count("path_every", path_every)
    site_index = _site_index(position, sites)
    path_sites = (
        None
        if site_index is None
        else tuple((sites[k], j) for k, j in enumerate(site_index))
    )
    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")
    init_positions = starting_positions(rng_key, position, num_chains, init_positions)
    mesh = _resolve_mesh(devices, mesh, num_chains)
    return _run(
        _shard_chains(_run_keys(rng_key, num_chains), mesh),
        _shard_chains(init_positions, mesh),
        _replicate(schedule, mesh),
        _replicate(preconditioner, mesh),
        loglikelihood_fn=by_identity(loglikelihood_fn),
        score_fn=by_identity(score_fn),
        reference_score_fn=by_identity(reference_score_fn),
        num_steps=num_steps,
        final_window=final_window,
        path_every=path_every,
        path_sites=path_sites,
    )
