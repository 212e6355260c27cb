r"""Annealed Langevin Monte Carlo as a BlackJAX-style kernel.

One step moves the position with the drift cached in the state and caches the score
and likelihood gradient of the new position, so a step costs exactly one score
evaluation and one likelihood gradient:

.. math::

    x_{i+1} = x_i + \delta_i M \big(s(x_i, t_i) + \nabla \log L(x_i)\big)
              + \sqrt{2 \delta_i}\, M^{1/2} \xi_i, \qquad \xi_i \sim N(0, I),

then ``s(x_{i+1}, t_{i+1})`` and ``∇ log L(x_{i+1})`` are cached. ``t = +inf`` stands
for the warm start, whose prior is ``N(0, I)`` (score ``-x``; no network call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.flatten_util import ravel_pytree

from numpyro_almc._validate import (
    as_arrays,
    check_bound,
    check_divergence_threshold,
    check_fns,
    check_key,
    is_concrete,
)
from numpyro_almc.mcmc._checks import at_time, check_tree, float_dtype, score_at
from numpyro_almc.mcmc.stiffness import stable_step_size
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import (
    WARM_START,
    ALMCSchedule,
    StepParams,
    check_schedule,
    step_params,
)
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "ALMCState",
    "ALMCInfo",
    "init",
    "build_kernel",
    "default_divergence_threshold",
    "as_top_level_api",
    "standard_normal_score",
]

ScoreFn = Callable[[ArrayTree, Array], ArrayTree]
LogLikelihoodFn = Callable[[ArrayTree], Array]


class ALMCState(NamedTuple):
    """What the next step needs.

    Attributes
    ----------
    position
        Current position (any pytree).
    score
        Prior score ``∇ log p_t(position)`` at OU time ``time`` (same tree).
    loglikelihood
        ``log L(position) = -R(position)``.
    loglikelihood_grad
        ``∇ log L(position)`` (same tree as ``position``).
    time
        OU time at which ``score`` was evaluated; ``+inf`` is the ``N(0, I)``
        reference of the warm start.
    step
        int32 number of steps taken: the index into the schedule of the next step.
    warm_start_step_size
        The largest warm-start step this chain takes: a warm-start step is
        ``min(schedule step, this)``. :func:`init` sets it from the likelihood's
        stiffness at the start (:func:`~numpyro_almc.mcmc.stiffness.stable_step_size`);
        ``inf`` takes the schedule's steps as they are.

    Examples
    --------
    >>> state = init({"a": jnp.zeros(2), "b": jnp.ones(())},
    ...              lambda p: -jnp.sum(p["a"] ** 2),
    ...              lambda p, t: jax.tree.map(jnp.negative, p))
    >>> state.position["a"].shape, float(state.score["b"]), int(state.step)
    ((2,), -1.0, 0)
    """

    position: ArrayTree
    score: ArrayTree
    loglikelihood: Array
    loglikelihood_grad: ArrayTree
    time: Array
    step: Array
    warm_start_step_size: Array


class ALMCInfo(NamedTuple):
    """What a person wants to look at after a step.

    Attributes
    ----------
    time
        OU time of the score used by this step's drift (``inf`` in the warm start).
    step_size
        The step size ``δ`` used.
    is_diverging
        True when the proposal (or its score or likelihood) was not finite, or when
        it lowered ``log L`` by more than the kernel's ``divergence_threshold``; the
        step was then reverted: the state is the previous one with ``step``
        advanced.
    loglikelihood
        ``log L`` of the returned position.
    loglikelihood_drop
        ``log L`` of the old position less that of the proposal (reverted or
        not), both at the step's new time: how far the step went toward the
        divergence threshold.

    Examples
    --------
    >>> kernel = build_kernel()
    >>> loglik, score = lambda x: -jnp.sum(x**2), lambda x, t: -x
    >>> state = init(jnp.zeros(2), loglik, score)
    >>> from numpyro_almc.path import ANNEAL, StepParams
    >>> params = StepParams(time=jnp.inf, next_time=1.0, step_size=0.1, phase=ANNEAL)
    >>> state, info = kernel(jax.random.key(0), state, loglik, score, params)
    >>> float(info.time), float(state.time), bool(info.is_diverging)
    (inf, 1.0, False)
    """

    time: Array
    step_size: Array
    is_diverging: Array
    loglikelihood: Array
    loglikelihood_drop: Array


def standard_normal_score(position: ArrayTree) -> ArrayTree:
    """Score of ``N(0, I)``: the prior of the warm start (``t = ∞``).

    Examples
    --------
    >>> standard_normal_score({"x": jnp.array([1.0, -2.0])})["x"]
    Array([-1.,  2.], dtype=float32)
    """
    return jax.tree.map(jnp.negative, position)


def init(
    position: ArrayLikeTree,
    loglikelihood_fn: LogLikelihoodFn,
    score_fn: ScoreFn,
    time: Array | float = jnp.inf,
    *,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    preconditioner=None,
    warm_start_step_size: float | None = None,
) -> ALMCState:
    """Create the state at ``position``, caching the score at OU time ``time``.

    Parameters
    ----------
    position
        Initial position (pytree of floating arrays).
    loglikelihood_fn
        ``position -> log L(position)`` (a scalar; ``-R`` in the paper).
    score_fn
        ``score_fn(position, t) -> ∇ log p_t(position)``.
    time
        OU time of the first drift; ``inf`` (default) starts with the warm start.
    reference_score_fn
        Score of the warm-start prior, ``-x`` by default.
    preconditioner
        The move's ``M`` (a time-dependent one is evaluated at ``time``): the
        warm-start step is measured in its metric.
    warm_start_step_size
        Cap on the warm-start steps. None (default): when ``time`` is ``inf``,
        ``1/λ̂`` with ``λ̂`` the largest eigenvalue of ``M (I + H)`` at the start
        (:func:`~numpyro_almc.mcmc.stiffness.stable_step_size`, 20 likelihood
        Hessian-vector products, no network pass), so a stiff likelihood cannot
        blow the warm start up; ``inf``: the schedule's steps as they are.

    Examples
    --------
    >>> s = init(jnp.zeros(2), lambda x: -jnp.sum(x**2), lambda x, t: -x)
    >>> int(s.step), float(s.time), round(float(s.warm_start_step_size), 3)
    (0, inf, 0.333)
    """
    position = as_arrays("position", position)
    dtype = float_dtype(position)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`position` must hold floating-point arrays, got {dtype}; pass e.g. "
            "jnp.zeros(d) rather than integers or booleans."
        )
    leaves = jax.tree.leaves(position)
    # numpy on concrete values: inside a trace jnp would stage them out.
    if not any(isinstance(v, jax.core.Tracer) for v in leaves) and not all(
        np.all(np.isfinite(np.asarray(v))) for v in leaves
    ):
        raise ValueError(
            "`position` holds NaN or infinite values: every step from there would "
            "be reverted. Start from finite positions."
        )
    check_fns(loglikelihood_fn, score_fn, position)
    time = jnp.asarray(time, dtype=dtype)
    out = jax.eval_shape(at_time(loglikelihood_fn, time), position)
    if jnp.shape(out) != ():
        raise ValueError(
            "loglikelihood_fn must return a scalar for one unbatched position, got "
            f"shape {jnp.shape(out)}."
        )
    loglikelihood, loglikelihood_grad = jax.value_and_grad(
        at_time(loglikelihood_fn, time)
    )(position)
    check_tree("score_fn", jax.eval_shape(score_fn, position, time), position)
    score = score_at(score_fn, reference_score_fn, position, time)
    return ALMCState(
        position=position,
        score=score,
        loglikelihood=loglikelihood,
        loglikelihood_grad=loglikelihood_grad,
        time=time,
        step=jnp.zeros((), dtype=jnp.int32),
        warm_start_step_size=_warm_start_cap(
            warm_start_step_size, loglikelihood_fn, position, preconditioner, time
        ),
    )


def _warm_start_cap(value, loglikelihood_fn, position, preconditioner, time):
    """The state's ``warm_start_step_size`` (see :func:`init`)."""
    dtype = time.dtype
    value = check_bound(
        "warm_start_step_size",
        value,
        meaning="the largest warm-start step",
        off="no cap",
    )
    if value is not None:
        return jnp.asarray(value, dtype)
    if getattr(preconditioner, "time_dependent", False):
        preconditioner = preconditioner.at(time)

    def estimate(_):
        h = stable_step_size(loglikelihood_fn, position, preconditioner, time=time)
        return jnp.asarray(h, dtype)

    def no_cap(_):
        return jnp.asarray(jnp.inf, dtype)

    # Only a run that starts with the warm start needs it: decided here for a
    # concrete time (nothing traced for the other), else a real branch (``time``
    # is shared by every chain).
    if is_concrete(time):
        return estimate(None) if np.isinf(np.asarray(time)) else no_cap(None)
    return jax.lax.cond(jnp.isinf(time), estimate, no_cap, None)


def default_divergence_threshold(dim: int) -> float:
    r"""The default bound on the one-step drop of ``log L``: ``2d + 10√(2d) + 50``.

    A Langevin step inside its stability region (``δ λ_max(M H) < 2`` for the
    likelihood's Hessian ``H``) changes a Gaussian ``log L`` near its stationary law
    by about ``−½ Σ_i λ_i (x_i'^2 − x_i^2)``, at most ``½ χ²_d`` in distribution
    (mean ``d/2``); the bound is four times that mean plus ten standard deviations
    of ``χ²_d`` and a constant for small ``d``. An unstable step multiplies the
    distance to the mode by ``|1 − δλ| > 1`` each time: the drop grows
    geometrically and crosses the bound within a few steps, long before the
    position overflows (measured in ``benchmarks/divergence_bound.py``: healthy
    runs on every testbed stay far below it).

    Examples
    --------
    >>> default_divergence_threshold(1), round(default_divergence_threshold(4096))
    (66.14213562373095, 9147)
    """
    return 2.0 * dim + 10.0 * math.sqrt(2.0 * dim) + 50.0


def build_kernel(
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    divergence_threshold: float | None = None,
):
    r"""Build the ALMC move (pure, single chain, not jitted).

    Parameters
    ----------
    reference_score_fn
        Score of the warm-start prior (used when a time is ``inf``).
    divergence_threshold
        A step that lowers ``log L`` by more than this is reverted and flagged, as
        a non-finite one is. None: :func:`default_divergence_threshold` of the
        position's size; ``inf`` keeps only the finiteness check.

    Returns
    -------
    kernel
        ``kernel(rng_key, state, loglikelihood_fn, score_fn, params) -> (state,
        info)`` with ``params`` a :class:`~numpyro_almc.path.StepParams` (from
        :func:`~numpyro_almc.path.step_params`). The drift uses the score and
        likelihood gradient cached in ``state`` (at ``state.time``); the new
        position's score is cached at ``params.next_time``.

    Notes
    -----
    The update is :math:`x' = x + \delta M g + \sqrt{2\delta} M^{1/2}\xi` with
    :math:`g = s(x, t) + \nabla \log L(x)` and :math:`M` = ``params.preconditioner``
    (the identity when None). If :math:`x'`, its score or its likelihood gradient is
    not finite the step is reverted and ``info.is_diverging`` is True.
    """

    def kernel(
        rng_key: PRNGKey,
        state: ALMCState,
        loglikelihood_fn: LogLikelihoodFn,
        score_fn: ScoreFn,
        params: StepParams,
    ) -> tuple[ALMCState, ALMCInfo]:
        x, unravel = ravel_pytree(state.position)
        dtype = x.dtype
        step_size = jnp.asarray(params.step_size, dtype=dtype)
        # The warm start's step is capped by the chain's stable step (NaN ignored).
        step_size = jnp.where(
            (params.phase == WARM_START) & (state.warm_start_step_size < step_size),
            state.warm_start_step_size.astype(dtype),
            step_size,
        )
        time = jnp.asarray(params.next_time, dtype=dtype)
        drift, _ = ravel_pytree(
            jax.tree.map(jnp.add, state.score, state.loglikelihood_grad)
        )
        # Noise in the position's dtype: no silent float32 -> float64 promotion.
        noise = jax.random.normal(rng_key, x.shape, dtype=dtype)
        scale = jnp.sqrt(2 * step_size)
        precond = params.preconditioner
        if precond is None:
            x_new = x + step_size * drift + scale * noise
        else:
            x_new = (
                x
                + step_size * precond.apply(drift).astype(dtype)
                + scale * precond.apply_sqrt(noise).astype(dtype)
            )
        position = unravel(x_new)
        loglikelihood, loglikelihood_grad = jax.value_and_grad(
            at_time(loglikelihood_fn, time)
        )(position)
        score = score_at(score_fn, reference_score_fn, position, time)

        proposal = ALMCState(
            position,
            score,
            loglikelihood,
            loglikelihood_grad,
            time,
            state.step + 1,
            state.warm_start_step_size,
        )
        # One reduction: a NaN or inf anywhere makes the total non-finite (so does a
        # total past the float range, which is a divergence too).
        wide = jnp.promote_types(dtype, jnp.float32)
        total = sum(jnp.sum(v, dtype=wide) for v in jax.tree.leaves(proposal[:4]))
        # The drop at one time: a time-dependent L_t (the noised path) also
        # changes from t to t' at a fixed x, by thousands of nats summed over an
        # image's pixels, which is the path, not a divergence. One more likelihood
        # value (no network pass) gives log L_{t'} at the old position.
        if getattr(loglikelihood_fn, "time_dependent", False):
            before = at_time(loglikelihood_fn, time)(state.position)
        else:
            before = state.loglikelihood
        drop = jnp.asarray(before, wide) - jnp.asarray(loglikelihood, wide)
        bound = (
            default_divergence_threshold(x.size)
            if divergence_threshold is None
            else divergence_threshold
        )
        # A NaN drop (a non-finite start) compares False: only finiteness decides.
        accept = jnp.isfinite(total) & jnp.logical_not(drop > bound)
        reverted = state._replace(step=state.step + 1)
        new_state = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old), proposal, reverted
        )
        info = ALMCInfo(
            time=state.time,
            step_size=step_size,
            is_diverging=jnp.logical_not(accept),
            loglikelihood=new_state.loglikelihood,
            loglikelihood_drop=drop,
        )
        return new_state, info

    return kernel


def scheduled_step(kernel, schedule: ALMCSchedule, preconditioner=None):
    """``step(rng_key, state, loglikelihood_fn, score_fn)`` following ``schedule``
    by the step counter in ``state``.

    Under :func:`jax.vmap` over chains the counter is batched; read naively, every
    chain would index the schedule, factor a time-dependent preconditioner and take
    the warm-start branch on its own, and that branch would become a select (the
    network evaluated in the warm start too). A custom batching rule checks that
    the chains are in lockstep (the usual case: the same number of steps taken)
    and then computes the step's parameters once, unbatched; otherwise it falls
    back to per-chain parameters.
    """

    def one(rng_key, state, loglikelihood_fn, score_fn):
        params = step_params(schedule, state.step, preconditioner)
        return kernel(rng_key, state, loglikelihood_fn, score_fn, params)

    def step(rng_key, state, loglikelihood_fn, score_fn):
        @jax.custom_batching.custom_vmap
        def batched(rng_key, state):
            return one(rng_key, state, loglikelihood_fn, score_fn)

        @batched.def_vmap
        def rule(axis_size, in_batched, rng_key, state):
            rng_key, state = jax.tree.map(
                lambda v, b: v if b else jnp.broadcast_to(v, (axis_size, *v.shape)),
                (rng_key, state),
                tuple(in_batched),
            )

            def lockstep(_):
                params = step_params(schedule, state.step[0], preconditioner)
                return jax.vmap(
                    lambda k, s: kernel(k, s, loglikelihood_fn, score_fn, params)
                )(rng_key, state)

            def per_chain(_):
                return jax.vmap(lambda k, s: one(k, s, loglikelihood_fn, score_fn))(
                    rng_key, state
                )

            same = jnp.all(state.step == state.step[0])
            out = jax.lax.cond(same, lockstep, per_chain, None)
            return out, jax.tree.map(lambda _: True, out)

        return batched(rng_key, state)

    return step


def as_top_level_api(
    loglikelihood_fn: LogLikelihoodFn,
    score_fn: ScoreFn,
    schedule: ALMCSchedule,
    *,
    preconditioner=None,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    divergence_threshold: float | None = None,
) -> SamplingAlgorithm:
    r"""ALMC as a ``blackjax.base.SamplingAlgorithm`` following ``schedule``.

    ``step(rng_key, state)`` reads the step counter in the state, so the algorithm
    runs under ``blackjax.util.run_inference_algorithm``; steps past the end of the
    schedule are Langevin at the early-stopping time. Vmapped over chains in
    lockstep it computes each step's parameters once for all chains (see
    :func:`scheduled_step`), so it costs what the jitted driver costs.

    Parameters
    ----------
    loglikelihood_fn
        ``position -> log L(position)``, i.e. ``-R``.
    score_fn
        ``score_fn(position, t) -> ∇ log p_t(position)`` for OU time ``t``.
    schedule
        An :class:`ALMCSchedule` (``paper_schedule`` or ``budget_schedule``).
    preconditioner
        Optional ``M`` (see ``linear_gaussian_preconditioner``); a time-dependent one
        is evaluated at each step's time.
    reference_score_fn
        Score of the warm-start prior (used when a time is ``inf``).
    divergence_threshold
        A step that lowers ``log L`` by more than this many nats is reverted and
        flagged (``info.is_diverging``). None: :func:`default_divergence_threshold`
        of the position's size; ``inf``: only non-finite steps.

    Examples
    --------
    >>> import blackjax
    >>> from numpyro_almc import almc, budget_schedule
    >>> sched = budget_schedule(50, num_warm_start_steps=10)
    >>> alg = almc(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), lambda x, t: -x, sched)
    >>> state, (states, infos) = blackjax.util.run_inference_algorithm(
    ...     jax.random.key(0), alg, sched.num_steps, initial_position=jnp.zeros(2))
    >>> states.position.shape, infos.is_diverging.shape
    ((59, 2), (59,))

    References
    ----------
    Parulekar, Rout, Shanmugam, Shakkottai. Efficient Approximate Posterior Sampling
    with Annealed Langevin Monte Carlo. ICLR 2026, arXiv:2508.07631.
    """
    check_schedule(schedule)
    kernel = build_kernel(
        reference_score_fn, check_divergence_threshold(divergence_threshold)
    )
    step = scheduled_step(kernel, schedule, preconditioner)

    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")

    def init_fn(position: ArrayLikeTree, rng_key: PRNGKey | None = None) -> ALMCState:
        del rng_key
        if not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(position)):
            check_preconditioner(preconditioner, as_arrays("position", position))
        return init(
            position,
            loglikelihood_fn,
            score_fn,
            schedule.times[0],
            reference_score_fn=reference_score_fn,
            preconditioner=preconditioner,
        )

    def step_fn(rng_key: PRNGKey, state: ALMCState) -> tuple[ALMCState, ALMCInfo]:
        if not isinstance(rng_key, jax.core.Tracer):
            check_key(rng_key)
        return step(rng_key, state, loglikelihood_fn, score_fn)

    return SamplingAlgorithm(init_fn, step_fn)
