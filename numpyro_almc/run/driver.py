"""The jitted multi-chain driver: many independent ALMC chains, one ``lax.scan``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax.sharding import Mesh

from numpyro_almc._static import by_identity
from numpyro_almc._validate import check_count, check_divergence_threshold
from numpyro_almc.mcmc.almc import ALMCState, standard_normal_score
from numpyro_almc.mcmc.finish import FinalStage, check_final_stage
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import ALMCSchedule, check_schedule
from numpyro_almc.run.chains import (
    FINISH_KEYS,
    as_arrays,
    check_fns,
    offset_keys,
    run_keys,
    starting_positions,
)
from numpyro_almc.run.health import check_chains, check_finished
from numpyro_almc.run.loop import finish_chains, run_chains
from numpyro_almc.run.recorders import ALMCTrace, SaveAt
from numpyro_almc.run.sharding import replicate, resolve_mesh, shard_chains
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["ALMCResult", "run_almc"]


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
        int32 number of reverted steps of each chain (a final-stage draw that was
        not finite counts as one).
    final_draw
        With ``final_stage``: each chain's last state carried from ``τ`` to
        ``t = 0`` (:func:`~numpyro_almc.mcmc.finish`), draws of ``μ_0`` rather
        than ``μ_τ``; ``None`` otherwise.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
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
    final_draw: ArrayTree | None = None


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
    final_stage: FinalStage | bool | None = None,
    strict: bool = False,
    divergence_threshold: float | None = None,
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
    loglikelihood_fn
        As in :func:`numpyro_almc.almc`. Pass the same function object on every call
        to reuse the compiled run (it is a static argument of the jit).
    score_fn
        As in :func:`numpyro_almc.almc`; static, as ``loglikelihood_fn``.
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
    final_stage
        None (default), True or a :class:`~numpyro_almc.mcmc.FinalStage`: carry
        each chain's last state from ``τ`` to ``t = 0`` (``final_draw``; ``K − 1``
        network passes per chain for ``K`` steps). Needs the noised likelihood
        (:func:`~numpyro_almc.noised_gaussian_likelihood`) as
        ``loglikelihood_fn``.
    strict
        After the run, a chain that reverted more than 1 % of its steps, or did not
        end at the early-stopping time, gives an ``ALMCRunWarning``
        (:mod:`numpyro_almc.run.health`); with ``strict=True`` a ``RuntimeError``.
    divergence_threshold
        A step that lowers ``log L`` by more than this many nats is reverted and
        counted in ``num_diverging``, as a non-finite one is. None: the
        dimension's default, :func:`~numpyro_almc.mcmc.default_divergence_threshold`
        (``2d + 10√(2d) + 50``); ``inf``: only non-finite steps.

    Returns
    -------
    ALMCResult

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, budget_schedule(100), jnp.zeros(3),
    ...                num_chains=8, final_window=20)
    >>> res.state.position.shape, res.window_draw.shape
    ((8, 3), (8, 3))
    """
    check_schedule(schedule)
    num_chains = check_count("num_chains", num_chains, 1)
    divergence_threshold = check_divergence_threshold(divergence_threshold)
    num_steps = schedule.num_steps if num_steps is None else num_steps
    num_steps = check_count("num_steps", num_steps, 1)
    position = as_arrays("position", position)
    save = SaveAt.build(
        position,
        num_steps=num_steps,
        final_window=final_window,
        every=path_every,
        sites=sites,
    )
    final_stage = check_final_stage(final_stage, loglikelihood_fn)
    init_positions = starting_positions(rng_key, position, num_chains, init_positions)
    check_fns(loglikelihood_fn, score_fn, position)
    check_preconditioner(preconditioner, position)
    mesh = resolve_mesh(devices, mesh, num_chains)
    keys = shard_chains(run_keys(rng_key, num_chains), mesh)
    out = run_chains(
        keys,
        shard_chains(init_positions, mesh),
        0,
        replicate(schedule, mesh),
        replicate(preconditioner, mesh),
        None,
        shard_chains(jnp.zeros((num_chains,), jnp.int32), mesh),
        loglikelihood_fn=by_identity(loglikelihood_fn),
        score_fn=by_identity(score_fn),
        reference_score_fn=by_identity(reference_score_fn),
        num_steps=num_steps,
        total_steps=num_steps,
        save=save,
        initialise=True,
        divergence_threshold=divergence_threshold,
    )
    check_chains(
        out.num_diverging,
        num_steps,
        out.states.time,
        schedule.times[-1],
        strict=strict,
        full_path=num_steps >= schedule.num_steps,
    )
    num_diverging, final_draw = out.num_diverging, None
    if final_stage is not None:
        # Chain c after step i: fold_in(run key, FINISH_KEYS + i), as NumPyro's ALMC.
        final_draw, bad = finish_chains(
            offset_keys(keys, FINISH_KEYS, out.states.step),
            out.states,
            loglikelihood_fn=by_identity(loglikelihood_fn),
            score_fn=by_identity(score_fn),
            final_stage=final_stage,
        )
        num_diverging = num_diverging + bad.astype(num_diverging.dtype)
        check_finished(bad, strict=strict)
    return ALMCResult(
        state=out.states,
        window_draw=out.window_draw,
        trace=out.trace,
        path=out.kept,
        num_diverging=num_diverging,
        final_draw=final_draw,
    )
