"""The ALMC path: OU time grid, step sizes and phases as plain arrays.

A schedule is a pytree of arrays describing every step of a run: step ``i`` uses the
drift cached at OU time ``times[i]`` (``+inf`` marks the warm start, whose prior score
is that of ``N(0, I)``), moves with step size ``step_sizes[i]`` and caches the score of
the new position at ``times[i + 1]``. Steps past the end repeat the last one: Langevin
at the early-stopping time ``τ``, which is what NumPyro's sampling phase runs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from numpyro_almc._validate import check_choice, check_float_dtype, is_concrete
from numpyro_almc._validate import check_count as _check_count
from numpyro_almc._validate import check_initial_time as _check_initial_time
from numpyro_almc._validate import check_positive as _check_positive
from numpyro_almc.path.ou import (
    half_log_snr,
    ou_noise_variance,
    time_from_half_log_snr,
)
from numpyro_almc.types import Array

__all__ = [
    "ALMCSchedule",
    "WARM_START",
    "ANNEAL",
    "TAIL",
    "paper_schedule",
    "budget_schedule",
    "langevin_schedule",
    "StepParams",
    "step_params",
]

#: Phase codes reported in ``ALMCInfo.phase``.
WARM_START, ANNEAL, TAIL = 0, 1, 2

_GRIDS = ("uniform", "log", "snr")
#: Most steps a schedule builder makes (a larger one is a typo, and would not fit).
MAX_STEPS = 10**7
_STEP_RULES = ("constant", "noise")


class ALMCSchedule(NamedTuple):
    """Every step of an ALMC run, as arrays (a pytree: jit-friendly, no recompiles).

    Attributes
    ----------
    times
        ``(num_steps + 1,)`` OU times. ``times[i]`` is the time of the score used by
        step ``i``'s drift; ``times[i + 1]`` the time at which the new position's score
        is cached. ``+inf`` marks the warm start (reference ``N(0, I)``).
    step_sizes
        ``(num_steps,)`` Langevin step sizes.
    phases
        ``(num_steps,)`` int32 phase codes: ``WARM_START``, ``ANNEAL`` or ``TAIL``.

    Examples
    --------
    >>> s = budget_schedule(10, num_warm_start_steps=3)
    >>> s.num_steps, s.num_score_evals, [int(p) for p in s.phases[:5]]
    (12, 10, [0, 0, 0, 1, 1])
    >>> float(s.times[0]), float(s.times[3]), round(float(s.early_stop_time), 3)
    (inf, 3.0, 0.02)
    """

    times: Array
    step_sizes: Array
    phases: Array

    @property
    def num_steps(self) -> int:
        return int(self.step_sizes.shape[-1])

    @property
    def num_score_evals(self) -> int:
        """Score evaluations of one chain over the schedule (init included)."""
        return int(np.sum(np.isfinite(np.asarray(self.times))))

    @property
    def early_stop_time(self) -> Array:
        return self.times[-1]


def check_schedule(schedule) -> ALMCSchedule:
    """``schedule`` if it is a valid :class:`ALMCSchedule`; else a ``TypeError`` saying
    how to build one, or a ``ValueError`` naming the bad array.

    A hand-built (or edited) schedule is checked eagerly: 1-D arrays of
    ``num_steps + 1`` floating times and ``num_steps`` floating step sizes and int
    phases; step sizes finite and ``>= 0``; times ``> 0`` (``+inf`` for the warm
    start), never NaN; phases ``WARM_START``, ``ANNEAL`` or ``TAIL``. Value checks are
    skipped for traced arrays (a schedule built inside ``jit``).
    """
    if not isinstance(schedule, ALMCSchedule):
        raise TypeError(
            "`schedule` must be an ALMCSchedule (from paper_schedule or "
            f"budget_schedule), got {type(schedule).__name__}."
        )
    times, steps, phases = (jnp.asarray(a) for a in schedule)
    for name, arr in (("times", times), ("step_sizes", steps), ("phases", phases)):
        if arr.ndim != 1:
            raise ValueError(
                f"`schedule.{name}` must be 1-D, got shape {arr.shape}; build the "
                "schedule with budget_schedule or paper_schedule."
            )
    n = steps.shape[0]
    if n == 0:
        raise ValueError("`schedule.step_sizes` is empty: the schedule has no steps.")
    if times.shape[0] != n + 1:
        raise ValueError(
            f"`schedule.times` must have num_steps + 1 = {n + 1} entries (the time "
            f"of each step's drift and the last cached one), got {times.shape[0]}."
        )
    if phases.shape[0] != n:
        raise ValueError(
            f"`schedule.phases` must have num_steps = {n} entries, got "
            f"{phases.shape[0]}."
        )
    for name, arr in (("times", times), ("step_sizes", steps)):
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(
                f"`schedule.{name}` must be floating point, got {arr.dtype}; build "
                "the schedule with a floating dtype (e.g. jnp.float32)."
            )
    if not jnp.issubdtype(phases.dtype, jnp.integer):
        raise TypeError(f"`schedule.phases` must be integers, got {phases.dtype}.")
    if not is_concrete(times, steps, phases):
        return schedule
    t, h, p = np.asarray(times), np.asarray(steps), np.asarray(phases)
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        bad = int(np.flatnonzero(~(np.isfinite(h) & (h >= 0)))[0])
        raise ValueError(
            f"`schedule.step_sizes` must be finite and >= 0, got {h[bad]} at step "
            f"{bad}; fix the hand-built step sizes (e.g. np.clip) or rebuild the "
            "schedule with budget_schedule."
        )
    if np.any(np.isnan(t)) or np.any(t <= 0):
        bad = int(np.flatnonzero(np.isnan(t) | (t <= 0))[0])
        raise ValueError(
            f"`schedule.times` must be OU times > 0 (+inf for the warm start), got "
            f"{t[bad]} at index {bad}; the score is singular at t <= 0."
        )
    if not np.all(np.isin(p, (WARM_START, ANNEAL, TAIL))):
        raise ValueError(
            "`schedule.phases` must hold WARM_START (0), ANNEAL (1) or TAIL (2), got "
            f"{sorted(set(p.tolist()) - {WARM_START, ANNEAL, TAIL})}."
        )
    return schedule


class StepParams(NamedTuple):
    """The parameters of one step, shared by every chain of a run.

    Attributes
    ----------
    time
        OU time of the score in this step's drift (``inf`` in the warm start).
    next_time
        OU time at which the moved position's score is cached.
    step_size
        Langevin step size ``δ``.
    phase
        ``WARM_START``, ``ANNEAL`` or ``TAIL``.
    preconditioner
        The preconditioner at ``time`` (a time-dependent one already evaluated with
        ``.at(time)``), or None.
    """

    time: Array
    next_time: Array
    step_size: Array
    phase: Array
    preconditioner: object = None


def step_params(schedule: ALMCSchedule, step: Array, preconditioner=None) -> StepParams:
    """The :class:`StepParams` of step index ``step``: the one place that indexes a
    schedule and evaluates a time-dependent preconditioner.

    Indices past the end give Langevin at the final time with the last step size
    (phase ``TAIL``), so a sampler may run as long as it likes. Call it with an
    unbatched ``step`` (every chain at the same step) so that a time-dependent
    preconditioner is factored once per step, not once per chain, and the kernel's
    warm-start branch stays a real branch.

    Examples
    --------
    >>> s = budget_schedule(10, num_warm_start_steps=3)
    >>> p = step_params(s, 0)
    >>> float(p.time), float(p.next_time), int(p.phase) == WARM_START
    (inf, inf, True)
    >>> p = step_params(s, 100)
    >>> int(p.phase) == TAIL, bool(p.time == s.early_stop_time)
    (True, True)
    """
    n = schedule.step_sizes.shape[-1]
    past_end = step >= n
    i = jnp.minimum(step, n - 1)
    time = jnp.where(past_end, schedule.times[-1], schedule.times[i])
    next_time = schedule.times[jnp.minimum(step + 1, n)]
    phase = jnp.where(past_end, jnp.int32(TAIL), schedule.phases[i])
    if getattr(preconditioner, "time_dependent", False):
        preconditioner = preconditioner.at(time)
    return StepParams(time, next_time, schedule.step_sizes[i], phase, preconditioner)


def _anneal_times(grid: str, initial_time: float, final_time: float, n: int):
    """``n + 1`` decreasing OU times from ``initial_time`` to ``final_time``."""
    u = np.linspace(0.0, 1.0, n + 1)
    if grid == "uniform":  # the paper's grid: t decreases by δ/κ per step
        return initial_time + (final_time - initial_time) * u
    if grid == "log":  # geometric in t: equal ratios t_{k+1}/t_k
        return initial_time * (final_time / initial_time) ** u

    # "snr": uniform in the log signal-to-noise ratio log(e^{-2t} / σ_t²) = 2 λ_t
    lam_0 = half_log_snr(np.float64(initial_time))
    lam_1 = half_log_snr(np.float64(final_time))
    return time_from_half_log_snr(lam_0 + (lam_1 - lam_0) * u)


def _anneal_steps(rule: str, step_size: float, times, floor: float):
    if rule == "constant":
        return np.full(times.shape, step_size)
    # "noise": δ_t = δ · σ_t², floored. The local curvature of p_t is at most 1/σ_t²
    # (Tweedie), so a fixed δ that is right at large t is unstable at small t.
    return step_size * np.maximum(ou_noise_variance(times), floor)


def _assemble(
    *,
    num_warm_start_steps: int,
    warm_start_step_size: float,
    anneal_times,
    anneal_step_sizes,
    num_tail_steps: int,
    tail_step_size: float,
    dtype,
) -> ALMCSchedule:
    tau = anneal_times[-1]
    times = np.concatenate(
        [
            np.full(num_warm_start_steps, np.inf),
            anneal_times,
            np.full(num_tail_steps, tau),
        ]
    )
    step_sizes = np.concatenate(
        [
            np.full(num_warm_start_steps, warm_start_step_size),
            anneal_step_sizes,
            np.full(num_tail_steps, tail_step_size),
        ]
    )
    phases = np.concatenate(
        [
            np.full(num_warm_start_steps, WARM_START),
            np.full(len(anneal_step_sizes), ANNEAL),
            np.full(num_tail_steps, TAIL),
        ]
    ).astype(np.int32)
    if len(step_sizes) == 0:
        raise ValueError("The schedule has no steps; ask for at least one step.")
    dtype = check_float_dtype("dtype", dtype)
    cast_tau = np.asarray(tau).astype(dtype)
    if not cast_tau > 0:
        raise ValueError(
            f"`early_stop_time` = {float(tau):g} is 0 in {dtype}: the last steps "
            "would query the score at t = 0. Use a larger early_stop_time (e.g. "
            "1e-3) or a wider dtype."
        )
    cast_steps = np.asarray(step_sizes).astype(dtype)
    if np.any(cast_steps <= 0):
        raise ValueError(
            f"Some step sizes underflow to 0 in {dtype} (smallest "
            f"{float(np.min(step_sizes)):g}): raise `step_size` / "
            "`min_step_fraction`, or `early_stop_time`."
        )
    return ALMCSchedule(
        times=jnp.asarray(times, dtype=dtype),
        step_sizes=jnp.asarray(step_sizes, dtype=dtype),
        phases=jnp.asarray(phases),
    )


def paper_schedule(
    step_size: float,
    path_speed: float,
    initial_time: float,
    early_stop_time: float,
    num_warm_start_steps: int,
    warm_start_step_size: float,
    *,
    num_tail_steps: int = 0,
    dtype=jnp.float32,
) -> ALMCSchedule:
    r"""The schedule of Parulekar et al. (2025), Algorithm 1.

    Warm start: ``M`` Langevin steps of size ``h`` on ``N(0, I)·e^{-R}``. Annealing:
    the OU time decreases uniformly by ``δ/κ`` per step from ``T`` to ``τ``, i.e.
    ``⌈κ (T − τ) / δ⌉`` steps of size ``δ``. Then ``num_tail_steps`` steps at ``τ``.

    Parameters
    ----------
    step_size
        ``δ``, the annealing Langevin step size. The analysis takes ``δ = κ^{-1/4}``.
    path_speed
        ``κ``: larger is slower annealing (better tracking, more score evaluations).
    initial_time
        ``T``, the OU time where annealing starts (``p_T ≈ N(0, I)`` for ``T ≳ 3``).
    early_stop_time
        ``τ`` with ``0 < τ < T``. The output is close to ``μ_τ`` in KL and to ``μ_0``
        in Fisher divergence; going to ``t = 0`` is not covered by the guarantee.
    num_warm_start_steps
        ``M`` (no score evaluations).
    warm_start_step_size
        ``h``. The move takes ``min(h, 1/λ̂)`` per chain, ``λ̂`` the largest
        eigenvalue of ``M (I + ∇²R)`` at the chain's start (see
        :func:`numpyro_almc.mcmc.init`; ``warm_start_step_size=inf`` there turns
        the cap off).

    Returns
    -------
    ALMCSchedule

    Examples
    --------
    >>> s = paper_schedule(0.1, 10.0, 1.0, 0.5, num_warm_start_steps=5,
    ...                    warm_start_step_size=0.1)
    >>> s.num_steps, float(s.early_stop_time)
    (55, 0.5)

    References
    ----------
    Parulekar, Rout, Shanmugam, Shakkottai. Efficient Approximate Posterior Sampling
    with Annealed Langevin Monte Carlo. ICLR 2026, arXiv:2508.07631.
    """
    step_size = _check_positive("step_size", step_size)
    path_speed = _check_positive("path_speed", path_speed)
    initial_time = _check_initial_time("initial_time", initial_time)
    early_stop_time = _check_positive("early_stop_time", early_stop_time)
    if not early_stop_time < initial_time:
        raise ValueError(
            f"Need initial_time > early_stop_time > 0, got T={initial_time}, "
            f"τ={early_stop_time}; swap them or lower τ (`early_stop_time`)."
        )
    m = _check_count("num_warm_start_steps", num_warm_start_steps)
    h = _check_positive("warm_start_step_size", warm_start_step_size)
    tail = _check_count("num_tail_steps", num_tail_steps)
    n = max(1, math.ceil(path_speed * (initial_time - early_stop_time) / step_size))
    if n > MAX_STEPS:
        raise ValueError(
            f"path_speed * (initial_time - early_stop_time) / step_size = {n:.3g} "
            f"annealing steps (more than {MAX_STEPS:.0e}): check `step_size`, "
            "`path_speed` and `initial_time`."
        )
    times = _anneal_times("uniform", initial_time, early_stop_time, n)
    return _assemble(
        num_warm_start_steps=m,
        warm_start_step_size=h,
        anneal_times=times,
        anneal_step_sizes=np.full(n, step_size),
        num_tail_steps=tail,
        tail_step_size=step_size,
        dtype=dtype,
    )


def budget_schedule(
    num_score_evals: int,
    *,
    early_stop_time: float = 0.02,
    initial_time: float = 3.0,
    step_size: float = 0.5,
    grid: str = "snr",
    step_rule: str = "noise",
    min_step_fraction: float = 0.0,
    tail_fraction: float = 0.0,
    num_warm_start_steps: int = 100,
    warm_start_step_size: float | None = None,
    dtype=jnp.float32,
) -> ALMCSchedule:
    r"""A schedule that spends a given number of score evaluations per chain.

    ``num_score_evals`` steps go to annealing from ``T`` to ``τ`` and then a
    fixed-``τ`` tail of ``tail_fraction`` of them; the warm start costs none.

    Parameters
    ----------
    num_score_evals
        Score evaluations per chain (annealing + tail), at least 2.
    early_stop_time
        ``τ``. Smaller is less biased (``μ_τ → μ_0``) but mode weights freeze earlier;
        see the benchmark tables in ``benchmarks/results``.
    initial_time
        ``T``; ``p_T`` is within ``e^{-2T}`` of ``N(0, I)``.
    step_size
        ``δ``. With ``step_rule="noise"`` the step at time ``t`` is ``δ σ_t²``
        (``σ_t² = 1 − e^{−2t}``), which keeps ``δ`` the fraction of the local scale of
        ``p_t`` a step moves; with ``"constant"`` every step is ``δ`` (the paper).
    grid
        ``"uniform"`` in ``t`` (the paper), ``"log"`` (geometric in ``t``) or ``"snr"``
        (uniform in the log signal-to-noise ratio, which spends more steps at small
        ``t`` where the prior's structure appears).
    min_step_fraction
        Floor of ``σ_t²`` in the ``"noise"`` rule.
    tail_fraction
        Fraction of the budget spent at ``τ`` after annealing, in ``[0, 1)``.
    num_warm_start_steps
        Steps of the warm start.
    warm_start_step_size
        Its step size ``h``; None: ``min(step_size, 0.5)``. The move takes
        ``min(h, 1/λ̂)`` per chain, ``λ̂`` the largest eigenvalue of ``M (I + ∇²R)``
        at the chain's start, so a stiff likelihood cannot blow the warm start up.

    Examples
    --------
    >>> s = budget_schedule(1000)
    >>> s.num_score_evals
    1000
    """
    budget = _check_count("num_score_evals", num_score_evals, minimum=2)
    if budget > MAX_STEPS:
        raise ValueError(
            f"`num_score_evals` = {budget} is more than {MAX_STEPS:.0e} steps; run a "
            "long chain in chunks (run_almc_chunked) instead."
        )
    tau = _check_positive("early_stop_time", early_stop_time)
    T = _check_initial_time("initial_time", initial_time)
    if not tau < T:
        raise ValueError(
            f"Need initial_time > early_stop_time > 0, got T={T}, τ={tau}; "
            "swap them or lower early_stop_time."
        )
    delta = _check_positive("step_size", step_size)
    check_choice("grid", grid, _GRIDS)
    check_choice("step_rule", step_rule, _STEP_RULES)
    floor = _check_positive("min_step_fraction", min_step_fraction, allow_zero=True)
    tail_fraction = _check_positive("tail_fraction", tail_fraction, allow_zero=True)
    if tail_fraction >= 1:
        raise ValueError(f"`tail_fraction` must be in [0, 1), got {tail_fraction}.")
    m = _check_count("num_warm_start_steps", num_warm_start_steps)
    h = min(delta, 0.5) if warm_start_step_size is None else warm_start_step_size
    h = _check_positive("warm_start_step_size", h)
    num_tail = int(round(tail_fraction * budget))
    # The score is cached once at T before annealing, then once per step.
    num_anneal = max(1, budget - num_tail - 1)
    times = _anneal_times(grid, T, tau, num_anneal)
    steps = _anneal_steps(step_rule, delta, times[:-1], floor)
    tail_step = float(_anneal_steps(step_rule, delta, np.array([tau]), floor)[0])
    return _assemble(
        num_warm_start_steps=m,
        warm_start_step_size=h,
        anneal_times=times,
        anneal_step_sizes=steps,
        num_tail_steps=num_tail,
        tail_step_size=tail_step,
        dtype=dtype,
    )


def langevin_schedule(
    time: float, step_size: float, num_steps: int, *, dtype=jnp.float32
) -> ALMCSchedule:
    """Plain Langevin at a fixed OU time ``t`` (phase ``TAIL``): no annealing.

    Useful to continue a chain at ``τ`` or to run Langevin on ``μ_t`` from a given
    start (e.g. exact draws, to check invariance).

    Examples
    --------
    >>> langevin_schedule(0.1, 0.01, 5).num_score_evals
    6
    """
    time = _check_positive("time", time)
    step_size = _check_positive("step_size", step_size)
    n = _check_count("num_steps", num_steps, minimum=1)
    dtype = check_float_dtype("dtype", dtype)
    return ALMCSchedule(
        times=jnp.full(n + 1, time, dtype=dtype),
        step_sizes=jnp.full(n, step_size, dtype=dtype),
        phases=jnp.full(n, TAIL, dtype=jnp.int32),
    )
