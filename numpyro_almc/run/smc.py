"""The jitted ALMC-SMC driver: one particle system along the path, one scan."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._static import by_identity
from numpyro_almc._validate import check_count, check_finite_values
from numpyro_almc.mcmc.almc import standard_normal_score
from numpyro_almc.mcmc.finish import FinalStage, check_final_stage
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import ALMCSchedule, check_schedule, step_params
from numpyro_almc.run.chains import check_fns, starting_positions
from numpyro_almc.run.health import check_finished, check_smc
from numpyro_almc.run.loop import finish_chains, scan_steps
from numpyro_almc.smc.almc_smc import (
    SMCInfo,
    SMCOptions,
    SMCState,
    check_ess_threshold,
    init_smc,
)
from numpyro_almc.smc.evidence import lee_whiteley_log_se
from numpyro_almc.types import Array, ArrayLike, ArrayLikeTree, ArrayTree, PRNGKey

__all__ = ["SMCResult", "run_almc_smc"]


class SMCResult(NamedTuple):
    """Output of :func:`run_almc_smc`.

    Attributes
    ----------
    particles
        Final positions, leading axis ``N`` (weighted by ``log_weights``).
    log_weights
        ``(N,)`` normalised log-weights.
    ess
        ``(num_steps,)`` ESS trace (after reweighting, before resampling).
    resampled
        ``(num_steps,)`` bool trace of resampling events.
    log_evidence_ratio
        Estimate of ``log Z_τ − log Z_∞`` with ``Z_t = ∫ p_t(x) e^{-R(x)} dx``
        (``Z_∞`` is the normaliser of the warm-start target ``γ e^{-R}``).
    log_evidence_ratio_se
        Its Monte Carlo standard error, from the Lee–Whiteley (2018) estimator of
        the relative variance ``V`` of the unbiased ``Ẑ`` (Eve indices), reported
        as ``sqrt(log(1 + V))`` (the sd of ``log Ẑ`` for a log-normal ``Ẑ``).
    log_evidence
        ``log_evidence_ratio + warm_start_log_normalizer`` (``log Z_τ``, the
        marginal likelihood under the noised prior ``p_τ``), or ``None`` when no
        ``warm_start_log_normalizer`` was given. Its SE is ``log_evidence_ratio_se``.
    state
        The final :class:`SMCState`.
    info
        :class:`SMCInfo`, one entry per step.
    final_particles
        With ``final_stage``: the particles carried from ``τ`` to ``t = 0``
        (:func:`~numpyro_almc.mcmc.finish`; same weights), else ``None``.
    final_diverging
        With ``final_stage``: ``(N,)`` bool, True where a particle's final stage
        was not finite and its final particle is left at ``τ`` (a warning names
        how many), else ``None``.

    Examples
    --------
    >>> from numpyro_almc import run_almc_smc, budget_schedule
    >>> res = run_almc_smc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_particles=8)
    >>> res.particles.shape, round(float(jnp.exp(jax.nn.logsumexp(res.log_weights))), 4)
    ((8, 2), 1.0)
    >>> res.log_evidence is None   # no warm_start_log_normalizer given
    True
    """

    particles: ArrayTree
    log_weights: Array
    ess: Array
    resampled: Array
    log_evidence_ratio: Array
    log_evidence_ratio_se: Array
    log_evidence: Array | None
    state: SMCState
    info: SMCInfo
    final_particles: ArrayTree | None = None
    final_diverging: Array | None = None


@functools.partial(
    jax.jit,
    static_argnames=(
        "loglikelihood_fn",
        "score_fn",
        "reference_score_fn",
        "options",
    ),
)
def _run_smc(
    rng_key,
    positions,
    schedule,
    preconditioner,
    ess_threshold,
    *,
    loglikelihood_fn,
    score_fn,
    reference_score_fn,
    options,
):
    kernel = options.kernel(reference_score_fn)
    state = init_smc(
        positions,
        loglikelihood_fn,
        score_fn,
        schedule.times[0],
        reference_score_fn=reference_score_fn,
        preconditioner=preconditioner,
    )
    dtype = state.log_weights.dtype
    ess_threshold = jnp.asarray(ess_threshold, dtype=dtype)

    def one_step(state, i):
        key = jax.random.fold_in(rng_key, i)
        params = step_params(schedule, i, preconditioner)
        return kernel(key, state, loglikelihood_fn, score_fn, params, ess_threshold)

    num_steps = schedule.step_sizes.shape[0]
    state, info, _ = scan_steps(one_step, state, jnp.int32(0), num_steps)
    return state, info, lee_whiteley_log_se(state)


def run_almc_smc(
    rng_key: PRNGKey,
    loglikelihood_fn: Callable[[ArrayTree], Array],
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    schedule: ALMCSchedule,
    position: ArrayLikeTree,
    *,
    num_particles: int,
    preconditioner=None,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    divergence: str = "exact",
    num_probes: int = 1,
    quadrature: str = "right",
    warm_start_correction: str = "tail",
    warm_start_log_normalizer: ArrayLike | None = None,
    init_positions: ArrayLikeTree | None = None,
    reference_score_fn: Callable[[ArrayTree], ArrayTree] = standard_normal_score,
    final_stage: FinalStage | bool | None = None,
    strict: bool = False,
    divergence_threshold: float | None = None,
) -> SMCResult:
    r"""ALMC as a sequential Monte Carlo sampler: ALMC moves, score-only weights.

    ``num_particles`` particles start from ``N(0, I)``, run the warm start (no
    weights), then follow the annealing path of ``schedule``; after each move a
    particle at ``x`` is reweighted by
    ``log p_{t_{i+1}}(x) − log p_{t_i}(x) ≈ (t_{i+1} − t_i) ∂_t log p(x)`` with
    ``∂_t log p_t = d + x·s + ∇·s + |s|²`` (see the module docstring), and the
    system is resampled when ``ESS / N < ess_threshold``. Jitted (one ``lax.scan``).

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    loglikelihood_fn
        As in :func:`numpyro_almc.run_almc` (static: pass the same object to reuse
        the compiled run).
    score_fn
        As in :func:`numpyro_almc.run_almc` (static, as ``loglikelihood_fn``).
    schedule
        The path (``budget_schedule`` / ``paper_schedule``): its score-evaluation
        count is that of ALMC; the weights add the divergence cost below.
    position
        One position (shapes and dtypes).
    num_particles
        ``N``; mode weights converge as ``N → ∞``.
    preconditioner
        Constant preconditioner of the moves (``linear_gaussian_preconditioner``).
        It changes only the moves, not the weights.
    ess_threshold
        Resample when ``ESS < ess_threshold · N`` (0: never, 1: every step).
    resampling
        ``"systematic"`` (default), ``"stratified"``, ``"residual"`` or
        ``"multinomial"`` (the schemes of ``blackjax.smc.resampling``).
    divergence
        ``"exact"``: ``∇·s`` by ``d`` JVPs per particle and step (cost ~``d`` score
        evaluations; for small ``d``). ``"hutchinson"``: unbiased
        ``E[εᵀ (∂s/∂x) ε]`` with ``num_probes`` Rademacher probes (cost
        ``num_probes`` JVPs); the noise enters the weights, so it costs ESS.
    quadrature
        ``"right"``: ``(t_{i+1} − t_i) ∂_t log p_{t_{i+1}}(x)`` from the cached
        score (free). ``"trapezoid"``: the mean with ``∂_t log p_{t_i}(x)`` (one more
        score evaluation and divergence per step; second-order in the time step).
    warm_start_correction
        ``"tail"`` (default), ``"tail2"`` or ``"none"``: the weight of the warm
        start → annealing transition, ``log p_T − log γ`` (see
        :func:`build_smc_kernel`).
    warm_start_log_normalizer
        ``log ∫ γ e^{-R}`` if known (:func:`gaussian_warm_start_log_normalizer` for a
        linear-Gaussian likelihood); then ``log_evidence`` is returned.
    init_positions
        Optional ``(N, ...)`` starting positions instead of ``N(0, I)`` draws.
    final_stage
        None (default), True or a :class:`~numpyro_almc.mcmc.FinalStage`: carry
        the particles from ``τ`` to ``t = 0`` (``final_particles``; ``K − 1``
        network passes per particle). Needs the noised likelihood.
    strict
        After the run, a collapsed ensemble (ESS of about one particle, a
        non-finite evidence) gives an ``ALMCRunWarning``; with ``strict=True`` a
        ``RuntimeError``.
    divergence_threshold
        A move that lowers ``log L`` by more than this many nats is reverted and
        its particle's weight set to zero (``info.num_diverging``). None:
        :func:`~numpyro_almc.mcmc.default_divergence_threshold` of the position's
        size; ``inf``: only non-finite moves.

    Returns
    -------
    SMCResult

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc import run_almc_smc, budget_schedule
    >>> res = run_almc_smc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, budget_schedule(50, num_warm_start_steps=10),
    ...                jnp.zeros(2), num_particles=16)
    >>> res.particles.shape, res.ess.shape
    ((16, 2), (59,))

    References
    ----------
    Parulekar, Rout, Shanmugam, Shakkottai. Efficient Approximate Posterior Sampling
    with Annealed Langevin Monte Carlo. arXiv:2508.07631.
    Del Moral, Doucet, Jasra. Sequential Monte Carlo samplers. JRSS B, 2006.
    Lee, Whiteley. Variance estimation in the particle filter. Biometrika, 2018.
    """
    check_schedule(schedule)
    num_particles = check_count("num_particles", num_particles, 2)
    ess_threshold = check_ess_threshold(ess_threshold)
    options = SMCOptions.build(
        resampling=resampling,
        divergence=divergence,
        num_probes=num_probes,
        quadrature=quadrature,
        warm_start_correction=warm_start_correction,
        divergence_threshold=divergence_threshold,
    )
    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")
    time_dependent = getattr(loglikelihood_fn, "time_dependent", False)
    final_stage = check_final_stage(final_stage, loglikelihood_fn)
    if time_dependent and warm_start_log_normalizer is not None:
        raise ValueError(
            "With a time-dependent likelihood (noised_gaussian_likelihood) the "
            "evidence comes from the likelihood's own log_normalizer and "
            "warm_start_log_normalizer methods; do not pass "
            "`warm_start_log_normalizer`."
        )
    if warm_start_log_normalizer is not None:
        if np.ndim(warm_start_log_normalizer) != 0:
            raise ValueError(
                "`warm_start_log_normalizer` must be a scalar (log ∫ γ e^{-R}), got "
                f"shape {np.shape(warm_start_log_normalizer)}."
            )
        check_finite_values(
            "warm_start_log_normalizer",
            jnp.asarray(warm_start_log_normalizer),
            " (log ∫ γ e^{-R}); pass None if it is not known",
        )
    init_positions = starting_positions(
        rng_key, position, num_particles, init_positions, what="num_particles"
    )
    check_fns(loglikelihood_fn, score_fn, position)
    check_preconditioner(preconditioner, position)
    run_key = jax.random.fold_in(rng_key, 1)
    state, info, log_se = _run_smc(
        run_key,
        init_positions,
        schedule,
        preconditioner,
        ess_threshold,
        loglikelihood_fn=by_identity(loglikelihood_fn),
        score_fn=by_identity(score_fn),
        reference_score_fn=by_identity(reference_score_fn),
        options=options,
    )
    log_evidence = None
    if time_dependent and hasattr(loglikelihood_fn, "warm_start_log_normalizer"):
        # The likelihood's values omit its t-dependent constant c_t: add c_τ, and
        # the normaliser of the warm-start target γ e^{lik(·, ∞)}.
        dtype = state.log_evidence_ratio.dtype
        log_evidence = (
            state.log_evidence_ratio
            + jnp.asarray(loglikelihood_fn.warm_start_log_normalizer(), dtype)
            + jnp.asarray(loglikelihood_fn.log_normalizer(schedule.times[-1]), dtype)
        )
    elif warm_start_log_normalizer is not None:
        log_evidence = state.log_evidence_ratio + jnp.asarray(
            warm_start_log_normalizer, dtype=state.log_evidence_ratio.dtype
        )
    check_smc(info.ess, state.log_evidence_ratio, num_particles, strict=strict)
    final_particles = final_diverging = None
    if final_stage is not None:
        # Particle c: fold_in(fold_in(run key, num_steps), 2N + c), the key
        # NumPyro's ALMCSMC gives the draw of its next step.
        step_key = jax.random.fold_in(run_key, schedule.num_steps)
        stage_keys = jax.vmap(lambda c: jax.random.fold_in(step_key, c))(
            jnp.arange(2 * num_particles, 3 * num_particles, dtype=jnp.uint32)
        )
        final_particles, final_diverging = finish_chains(
            stage_keys,
            state.particles,
            loglikelihood_fn=by_identity(loglikelihood_fn),
            score_fn=by_identity(score_fn),
            final_stage=final_stage,
        )
        check_finished(
            final_diverging, strict=strict, where="run_almc_smc", what="particles"
        )
    return SMCResult(
        particles=state.particles.position,
        log_weights=state.log_weights,
        ess=info.ess,
        resampled=info.resampled,
        log_evidence_ratio=state.log_evidence_ratio,
        log_evidence_ratio_se=log_se,
        log_evidence=log_evidence,
        state=state,
        info=info,
        final_particles=final_particles,
        final_diverging=final_diverging,
    )
