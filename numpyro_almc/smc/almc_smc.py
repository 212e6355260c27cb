r"""Sequential Monte Carlo along the ALMC path (ALMC-SMC), with score-only weights.

ALMC's Langevin chains cannot cross between well-separated modes once the noise is
low, so the mode weights of its output freeze at those of some intermediate
``μ_t``. Carrying importance weights fixes this. Along the path
``μ_t ∝ p_t e^{-R}`` the measurement term cancels in the ratio of neighbouring
targets, and for the OU process (``dX = -X dt + √2 dW``) the Fokker–Planck equation
gives, with ``s = ∇ log p_t(x)`` and ``d`` the dimension,

.. math::

    \partial_t \log p_t(x) = d + x \cdot s + \nabla \cdot s + |s|^2 ,

(for ``p_t = N(0, v_t I)``, ``v_t' = 2(1 - v_t)``, both sides are
``(1 - v_t)(|x|^2 / v_t^2 - d / v_t)``). A particle that has just been moved by the
Langevin kernel of ``μ_{t_i}`` is reweighted by
``log p_{t_{i+1}}(x) - log p_{t_i}(x) ≈ (t_{i+1} - t_i) ∂_t log p_t(x)``, and the
particles are resampled when the effective sample size drops below
``ess_threshold · N``: a Feynman–Kac / SMC sampler whose mode weights converge to
those of ``μ_τ`` as ``N → ∞`` (up to the time-quadrature error of the weights and
the bias of the unadjusted Langevin moves).

Cost per particle and annealing step, beyond ALMC's one score evaluation and one
likelihood gradient: the divergence ``∇·s``, either exact (``jax.jacfwd``: ``d``
forward-mode JVPs through the score, i.e. ~``d`` score evaluations, for small
``d``) or Hutchinson's estimate ``E[εᵀ J ε]`` with ``num_probes`` Rademacher
probes (``num_probes`` JVPs, each ~1–3 score evaluations). ``quadrature=
"trapezoid"`` adds one score evaluation and one divergence per step (at the old
time). The warm start and the tail at ``τ`` carry no weights and cost nothing extra.

The moves are unadjusted (no Metropolis test: the prior's density is unknown), so
the particles follow the targets only up to the O(δ) bias of unadjusted Langevin;
the weights do not correct it. It shows mostly in the evidence (with the default
``δ = 0.5`` a bias of ≈ −0.19 nats on bars; ≈ 0.01 with ``step_size=0.05``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from blackjax.smc import resampling as _resampling

from numpyro_almc._validate import (
    check_choice,
    check_count,
    check_divergence_threshold,
)
from numpyro_almc.mcmc.almc import ALMCState, build_kernel, init, standard_normal_score
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import (
    ALMCSchedule,
    StepParams,
    check_schedule,
    step_params,
)
from numpyro_almc.smc.kernel import fk_step
from numpyro_almc.smc.weights import (
    DIVERGENCES,
    likelihood_log_weight_increments,
    prior_log_weight_increments,
)
from numpyro_almc.types import Array, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = [
    "SMCState",
    "SMCInfo",
    "SMCOptions",
    "as_top_level_api",
    "check_ess_threshold",
    "build_smc_kernel",
    "init_smc",
]

RESAMPLING_SCHEMES = {
    "systematic": _resampling.systematic,
    "multinomial": _resampling.multinomial,
    "stratified": _resampling.stratified,
    "residual": _resampling.residual,
}
_QUADRATURES = ("right", "trapezoid")
_CORRECTIONS = ("tail2", "tail", "none")


class SMCState(NamedTuple):
    """The particle system (every leaf of ``particles`` has a leading axis ``N``).

    Attributes
    ----------
    particles
        Batched :class:`ALMCState` (position, cached score at ``time``, likelihood).
    log_weights
        ``(N,)`` normalised log-weights (``logsumexp = 0``).
    ancestors
        ``(N,)`` int32 index of each particle's time-0 ancestor ("Eve"), for the
        Lee–Whiteley variance estimate of the evidence.
    log_evidence_ratio
        Running estimate of ``log Z_t − log Z_∞``, ``Z_t = ∫ p_t e^{-R}``.
    num_resampling
        int32 number of resampling events so far.

    Examples
    --------
    >>> state = init_smc(jnp.zeros((8, 2)), lambda x: -jnp.sum(x**2), lambda x, t: -x)
    >>> state.particles.position.shape, state.log_weights.shape
    ((8, 2), (8,))
    """

    particles: ALMCState
    log_weights: Array
    ancestors: Array
    log_evidence_ratio: Array
    num_resampling: Array


class SMCInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes
    ----------
    time
        OU time of the drift of the step (``inf`` in the warm start).
    ess
        Effective sample size ``1 / Σ W_i²`` after reweighting, before resampling.
    resampled
        Whether the particles were resampled at this step.
    log_evidence_increment
        ``log Σ_i W_i e^{Δ_i}``, this step's contribution to the evidence ratio.
    num_diverging
        Particles whose move was reverted (their weight is set to zero).

    Examples
    --------
    >>> from numpyro_almc import run_almc_smc, budget_schedule
    >>> res = run_almc_smc(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_particles=8)
    >>> res.info.ess.shape, res.info.resampled.dtype
    ((24,), dtype('bool'))
    """

    time: Array
    ess: Array
    resampled: Array
    log_evidence_increment: Array
    num_diverging: Array


def init_smc(
    positions: ArrayLikeTree,
    loglikelihood_fn: Callable[[ArrayTree], Array],
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    time: Array | float = jnp.inf,
    *,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    preconditioner=None,
) -> SMCState:
    """Equally weighted particles at ``positions`` (leading axis ``N``), each with
    its warm-start step from the likelihood's stiffness (``preconditioner``: the
    move's ``M``; see :func:`~numpyro_almc.mcmc.init`).

    Examples
    --------
    >>> state = init_smc(jnp.zeros((8, 2)), lambda x: -jnp.sum(x**2), lambda x, t: -x)
    >>> int(state.num_resampling), float(state.log_evidence_ratio)
    (0, 0.0)
    """
    _check_particles(positions)
    particles = jax.vmap(
        lambda p: init(
            p,
            loglikelihood_fn,
            score_fn,
            time,
            reference_score_fn=reference_score_fn,
            preconditioner=preconditioner,
        )
    )(positions)
    n = particles.step.shape[0]
    dtype = particles.loglikelihood.dtype
    return SMCState(
        particles=particles,
        log_weights=jnp.full((n,), -math.log(n), dtype=dtype),
        ancestors=jnp.arange(n, dtype=jnp.int32),
        log_evidence_ratio=jnp.zeros((), dtype=dtype),
        num_resampling=jnp.zeros((), dtype=jnp.int32),
    )


def build_smc_kernel(
    *,
    divergence: str = "exact",
    num_probes: int = 1,
    resampling: str = "systematic",
    quadrature: str = "right",
    warm_start_correction: str = "tail",
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    divergence_threshold: float | None = None,
):
    r"""Build one ALMC-SMC step (pure, not jitted; vectorised over particles inside).

    Returns ``kernel(rng_key, state, loglikelihood_fn, score_fn, params,
    ess_threshold) -> (state, info)`` with ``params`` the step's
    :class:`~numpyro_almc.path.StepParams`: one :func:`~numpyro_almc.smc.kernel.fk_step`
    in which every particle makes the ALMC move of
    :func:`numpyro_almc.mcmc.build_kernel` (drift at ``time``, score cached at
    ``next_time``), is reweighted by
    ``log p_{next_time}(x') − log p_{time}(x')`` and the system is resampled when
    ``ESS < ess_threshold · N``. ``time`` and ``next_time`` must be unbatched, so the
    weight computation is skipped (a real branch) where they coincide or are both
    ``inf``. A move that lowers ``log L`` by more than ``divergence_threshold``
    (None: :func:`~numpyro_almc.mcmc.default_divergence_threshold`) or is not
    finite is reverted and its particle's weight set to zero.

    Weights:

    * ``time`` finite → ``next_time``: ``(next_time − time) · ∂_t log p`` at
      ``(x', next_time)`` (``quadrature="right"``, reuses the cached score), or the
      average of that and ``∂_t log p`` at ``(x', time)`` (``"trapezoid"``, one more
      score evaluation and divergence);
    * ``time = inf`` → ``next_time = T`` (end of the warm start, whose target is
      ``γ e^{-R}``, ``γ = N(0, I)``): ``log p_T(x) − log γ(x) = −∫_T^∞ ∂_t log p_t dt``.
      For large ``t``, ``log p_t − log γ = e^{-t} m̄·x + O(e^{-2t})`` (``m̄`` the
      prior mean), so ``∂_t log p_t ≈ −(log p_t − log γ)`` and the integral is
      ``≈ −∂_t log p_T(x)`` (``warm_start_correction="tail"``): exact for the
      mean term, off by ``O(e^{-2T})`` (covariance terms). ``"tail2"`` also
      uses ``∂_t log p`` at ``T + 1`` (one more score evaluation and divergence,
      once per run) to fit ``a e^{-t} + b e^{-2t}``: off by ``O(e^{-3T})``.
      ``"none"`` uses 0 (``p_T ≈ γ``), which needs a large ``T``. The correction
      matters for the evidence and for problems whose ``p_T`` is far from ``γ``
      (gmm25: ``log p_3 − log γ ≈ 47 ± 1.6`` across posterior draws).

    Examples
    --------
    >>> kernel = build_smc_kernel()
    >>> loglik, score = lambda x: -0.5 * jnp.sum(x**2), lambda x, t: -x
    >>> state = init_smc(jnp.zeros((8, 2)), loglik, score, 1.0)
    >>> # time 1.0 -> 0.9, step size 0.1, resample below ESS 0.5 N
    >>> key = jax.random.key(0)
    >>> from numpyro_almc.path import ANNEAL, StepParams
    >>> params = StepParams(time=1.0, next_time=0.9, step_size=0.1, phase=ANNEAL)
    >>> state, info = kernel(key, state, loglik, score, params, 0.5)
    >>> float(info.ess), bool(info.resampled)   # N(0, I) is stationary: equal weights
    (8.0, False)
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("resampling", resampling, tuple(RESAMPLING_SCHEMES))
    check_choice("quadrature", quadrature, _QUADRATURES)
    check_choice("warm_start_correction", warm_start_correction, _CORRECTIONS)
    num_probes = check_count("num_probes", num_probes, 1)
    almc_kernel = build_kernel(
        reference_score_fn, check_divergence_threshold(divergence_threshold)
    )
    resample_fn = RESAMPLING_SCHEMES[resampling]
    weight_options = dict(
        divergence=divergence,
        num_probes=num_probes,
        quadrature=quadrature,
        warm_start_correction=warm_start_correction,
    )

    def kernel(
        rng_key,
        state: SMCState,
        loglikelihood_fn,
        score_fn,
        params: StepParams,
        ess_threshold,
    ):
        n = state.log_weights.shape[0]
        dtype = state.log_weights.dtype
        time = jnp.asarray(params.time, dtype=dtype)
        next_time = jnp.asarray(params.next_time, dtype=dtype)

        def move(key, particles):
            moved, info = jax.vmap(
                lambda k, p: almc_kernel(k, p, loglikelihood_fn, score_fn, params)
            )(jax.random.split(key, n), particles)
            return moved, info.is_diverging

        def weight(key, particles):
            inc = prior_log_weight_increments(
                particles.position,
                particles.score,
                time,
                next_time,
                score_fn,
                key,
                **weight_options,
            )
            return inc + likelihood_log_weight_increments(
                loglikelihood_fn,
                particles.position,
                particles.loglikelihood,
                time,
                next_time,
            )

        particles, log_w, idx, log_increment, ess, resampled, diverging = fk_step(
            rng_key,
            state.particles,
            state.log_weights,
            move,
            weight,
            ess_threshold,
            resample_fn,
        )
        new_state = SMCState(
            particles=particles,
            log_weights=log_w,
            ancestors=state.ancestors[idx],
            log_evidence_ratio=state.log_evidence_ratio + log_increment,
            num_resampling=state.num_resampling + resampled.astype(jnp.int32),
        )
        info = SMCInfo(
            time=time,
            ess=ess,
            resampled=resampled,
            log_evidence_increment=log_increment,
            num_diverging=jnp.sum(diverging, dtype=jnp.int32),
        )
        return new_state, info

    return kernel


def _check_particles(positions) -> None:
    """Eager checks of the particles given to :func:`init_smc` (leading axis ``N``):
    floating, the same ``N >= 1`` on every leaf, finite (when concrete)."""
    leaves = jax.tree.leaves(positions)
    if not leaves:
        raise ValueError("`positions` has no arrays.")
    sizes = set()
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`positions` must hold floating-point arrays, got {dtype}; pass e.g. "
                "jnp.zeros((num_particles, d))."
            )
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                "`positions` needs a leading particle axis (shape (num_particles, "
                "...)); got a scalar leaf."
            )
        sizes.add(jnp.shape(leaf)[0])
    if len(sizes) != 1:
        raise ValueError(
            f"`positions` leaves disagree on the number of particles: {sorted(sizes)}."
        )
    if any(
        not isinstance(v, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(v)))
        for v in leaves
    ):
        raise ValueError(
            "`positions` holds NaN or infinite values: every step from there would "
            "be reverted. Start from finite positions."
        )


def _check_step_key(rng_key) -> None:
    """A step's key must be one JAX PRNG key (checked when concrete)."""
    if isinstance(rng_key, jax.core.Tracer):
        return
    from numpyro_almc.run.chains import check_key

    check_key(rng_key)


def check_ess_threshold(ess_threshold) -> float:
    """``ess_threshold`` as a float in ``[0, 1]`` (a numeric knob: traced, so
    changing it does not recompile)."""
    if not isinstance(ess_threshold, numbers.Real) or not 0 <= ess_threshold <= 1:
        raise ValueError(f"`ess_threshold` must be in [0, 1], got {ess_threshold!r}.")
    return float(ess_threshold)


class SMCOptions(NamedTuple):
    """The structural knobs of ALMC-SMC, validated once by :meth:`build`
    (hashable: a static argument of the jitted driver). The numeric
    ``ess_threshold`` is checked by :func:`check_ess_threshold` and traced.

    Attributes
    ----------
    resampling
        A scheme of ``blackjax.smc.resampling`` (see ``RESAMPLING_SCHEMES``).
    divergence
        How ``∇·s`` in the score-only weights is computed (see
        :func:`build_smc_kernel`).
    num_probes
        Probes of the Hutchinson divergence (see :func:`build_smc_kernel`).
    quadrature
        The time quadrature of the weights (see :func:`build_smc_kernel`).
    warm_start_correction
        The weight of the warm start (see :func:`build_smc_kernel`).
    divergence_threshold
        The move's bound on the one-step drop of ``log L`` (see
        :func:`build_smc_kernel`; None: the dimension's default).

    Examples
    --------
    >>> SMCOptions.build(divergence="hutchinson", num_probes=2).weight_options
    {'divergence': 'hutchinson', 'num_probes': 2, 'quadrature': 'right', \
'warm_start_correction': 'tail'}
    """

    resampling: str = "systematic"
    divergence: str = "exact"
    num_probes: int = 1
    quadrature: str = "right"
    warm_start_correction: str = "tail"
    divergence_threshold: float | None = None

    @classmethod
    def build(
        cls,
        *,
        resampling="systematic",
        divergence="exact",
        num_probes=1,
        quadrature="right",
        warm_start_correction="tail",
        divergence_threshold=None,
    ) -> SMCOptions:
        """Check every knob (in Python, before tracing) and return the options."""
        check_choice("divergence", divergence, DIVERGENCES)
        check_choice("resampling", resampling, tuple(RESAMPLING_SCHEMES))
        check_choice("quadrature", quadrature, _QUADRATURES)
        check_choice("warm_start_correction", warm_start_correction, _CORRECTIONS)
        num_probes = check_count("num_probes", num_probes, 1)
        return cls(
            resampling,
            divergence,
            num_probes,
            quadrature,
            warm_start_correction,
            check_divergence_threshold(divergence_threshold),
        )

    @property
    def weight_options(self) -> dict:
        """The keyword arguments of the score-only weight term."""
        return dict(
            divergence=self.divergence,
            num_probes=self.num_probes,
            quadrature=self.quadrature,
            warm_start_correction=self.warm_start_correction,
        )

    def kernel(self, reference_score_fn=standard_normal_score):
        """:func:`build_smc_kernel` with these options."""
        return build_smc_kernel(
            resampling=self.resampling,
            reference_score_fn=reference_score_fn,
            divergence_threshold=self.divergence_threshold,
            **self.weight_options,
        )


def as_top_level_api(
    loglikelihood_fn: Callable[[ArrayTree], Array],
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    schedule: ALMCSchedule,
    *,
    ess_threshold: float = 0.5,
    preconditioner=None,
    resampling: str = "systematic",
    divergence: str = "exact",
    num_probes: int = 1,
    quadrature: str = "right",
    warm_start_correction: str = "tail",
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    divergence_threshold: float | None = None,
) -> SamplingAlgorithm:
    """ALMC-SMC as a ``blackjax.base.SamplingAlgorithm`` following ``schedule``.

    ``init(positions)`` takes the particles (leading axis ``N``); ``step(rng_key,
    state)`` reads the step counter of the particles, so the algorithm runs under
    ``blackjax.util.run_inference_algorithm``. The knobs are those of
    :func:`~numpyro_almc.run_almc_smc`, the jitted driver of the same step.

    Examples
    --------
    >>> import blackjax
    >>> from numpyro_almc import almc_smc, budget_schedule
    >>> sched = budget_schedule(30, num_warm_start_steps=5)
    >>> alg = almc_smc(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), lambda x, t: -x,
    ...                sched)
    >>> state, _ = blackjax.util.run_inference_algorithm(
    ...     jax.random.key(0), alg, sched.num_steps,
    ...     initial_position=jnp.zeros((16, 2)))
    >>> state.particles.position.shape, state.log_weights.shape
    ((16, 2), (16,))
    """
    check_schedule(schedule)
    ess_threshold = check_ess_threshold(ess_threshold)
    kernel = SMCOptions.build(
        resampling=resampling,
        divergence=divergence,
        num_probes=num_probes,
        quadrature=quadrature,
        warm_start_correction=warm_start_correction,
        divergence_threshold=divergence_threshold,
    ).kernel(reference_score_fn)

    def init_fn(positions: ArrayLikeTree, rng_key: PRNGKey | None = None) -> SMCState:
        del rng_key
        positions = jax.tree.map(jnp.asarray, positions)
        _check_particles(positions)
        check_preconditioner(preconditioner, jax.tree.map(lambda a: a[0], positions))
        return init_smc(
            positions,
            loglikelihood_fn,
            score_fn,
            schedule.times[0],
            reference_score_fn=reference_score_fn,
            preconditioner=preconditioner,
        )

    def step_fn(rng_key: PRNGKey, state: SMCState):
        _check_step_key(rng_key)
        # Every particle is at the same step.
        params = step_params(schedule, state.particles.step[0], preconditioner)
        threshold = jnp.asarray(ess_threshold, state.log_weights.dtype)
        return kernel(rng_key, state, loglikelihood_fn, score_fn, params, threshold)

    return SamplingAlgorithm(init_fn, step_fn)
