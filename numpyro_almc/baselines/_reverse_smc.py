r"""Shared pieces of the reverse-diffusion SMC baselines (MCGdiff, TDS).

Both samplers run a particle system along the reverse of the OU process
``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z`` on a decreasing grid of OU times
``t_0 = T > t_1 > ... > t_N`` (uniform in the log signal-to-noise ratio, the grid
of :func:`numpyro_almc.baselines.dps`). Their base kernel is the DDPM ancestral step
in OU time: with the Tweedie denoiser
:math:`\hat x_0(x) = (x + \sigma_t^2 s(x, t)) / \alpha_t`,

.. math::

    p(x' \mid x) = N\Bigl(x';\; \frac{\alpha_{t'}(1 - a^2)}{\sigma_t^2}\,\hat x_0(x)
        + \frac{a\,\sigma_{t'}^2}{\sigma_t^2}\,x,\;
        \frac{\sigma_{t'}^2 (1 - a^2)}{\sigma_t^2}\, I\Bigr),
    \qquad a = e^{-(t - t')},

with :math:`\alpha_t = e^{-t}`, :math:`\sigma_t^2 = 1 - e^{-2t}`. The weights are
those of a Feynman–Kac model. The OU quantities come from :mod:`numpyro_almc.path.ou`,
the time grid is the one of ``dps``, and the reweight / resample step and the
Lee–Whiteley standard error are the core's (:mod:`numpyro_almc.smc.kernel`,
:mod:`numpyro_almc.smc.evidence`); this module only adds what the two samplers share
on top of them: the ancestral step, the particle-system carry (Eve indices, evidence,
non-finite count) and the argument checks of a linear-Gaussian problem.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._validate import (
    check_finite_values,
    check_initial_time,
    check_positive,
)
from numpyro_almc.path.ou import ou_coefficients
from numpyro_almc.run.health import ALMCRunWarning
from numpyro_almc.smc.almc_smc import RESAMPLING_SCHEMES
from numpyro_almc.smc.kernel import resample_if_degenerate, reweight
from numpyro_almc.types import Array


class ReverseSMCResult(NamedTuple):
    r"""Output of :func:`~numpyro_almc.baselines.mcgdiff.mcgdiff` and
    :func:`~numpyro_almc.baselines.tds.tds`.

    Attributes
    ----------
    particles
        ``(num_particles, d)`` positions at ``final_time``, **weighted** by
        ``log_weights`` (not resampled after the last reweighting; resample them,
        e.g. with ``blackjax.smc.resampling.systematic``, for equally weighted
        draws).
    log_weights
        ``(num_particles,)`` normalised log-weights (``logsumexp = 0``).
    ess
        ``(num_steps + 1,)`` effective sample size after each reweighting (the start
        and every step), before any resampling.
    resampled
        ``(num_steps + 1,)`` bool, whether the system was resampled there.
    log_evidence
        Estimate of :math:`\log p(y)`: the log of the product over the reweightings
        of the weighted mean incremental weight (the unbiased SMC estimate of
        :math:`p(y)`; its log is biased low by about ``se² / 2``).
    log_evidence_se
        Standard error of ``log_evidence`` from the Lee–Whiteley (2018) estimator of
        the relative variance ``V`` of the unbiased evidence (Eve indices), reported
        as ``sqrt(log(1 + V))``. When every particle descends from one initial
        particle it is ``sqrt(log 2) ≈ 0.83``, i.e. uninformative, not small.
    num_network_passes
        Network passes **per particle**: score evaluations plus one per
        vector–Jacobian product through the score (the convention of the DPS
        baseline: a step of DPS costs two). The whole run costs
        ``num_particles × num_network_passes``.
    num_nonfinite
        Number of non-finite incremental log-weights (such a particle gets weight 0;
        nonzero means the run should not be trusted).

    Examples
    --------
    >>> ReverseSMCResult._fields[:4]
    ('particles', 'log_weights', 'ess', 'resampled')
    """

    particles: Array
    log_weights: Array
    ess: Array
    resampled: Array
    log_evidence: Array
    log_evidence_se: Array
    num_network_passes: int
    num_nonfinite: Array


class ParticleSystem(NamedTuple):
    """What the reweight / resample step carries between steps."""

    log_weights: Array  # (N,) normalised
    eves: Array  # (N,) int32, index of each particle's initial ancestor
    num_resampling: Array  # int32
    log_evidence: Array  # scalar
    num_nonfinite: Array  # int32


def init_system(num_particles: int, dtype) -> ParticleSystem:
    """Uniform weights, each particle its own Eve, no evidence yet."""
    return ParticleSystem(
        log_weights=jnp.full((num_particles,), -math.log(num_particles), dtype),
        eves=jnp.arange(num_particles, dtype=jnp.int32),
        num_resampling=jnp.zeros((), jnp.int32),
        log_evidence=jnp.zeros((), dtype),
        num_nonfinite=jnp.zeros((), jnp.int32),
    )


def reweight_and_resample(rng_key, system, log_increments, ess_threshold, scheme):
    """The core's :func:`~numpyro_almc.smc.kernel.reweight` then
    :func:`~numpyro_almc.smc.kernel.resample_if_degenerate`, with the carry of these
    samplers around them.

    Returns ``(system, ancestors, ess, resampled)``; index every per-particle array
    with ``ancestors`` (the identity when nothing was resampled). A non-finite
    increment gives the particle weight 0; if every increment is non-finite, the
    previous weights are kept and the evidence becomes ``-inf`` (the core's rule).
    """
    # Why a wrapper: these samplers have no reverted moves (``diverging`` is all
    # False) but report how many increments were non-finite (``num_nonfinite``),
    # which the core's reweight does not count, and they carry Eve indices for the
    # Lee–Whiteley error rather than the core's state.
    finite = jnp.isfinite(log_increments)
    log_w, log_norm, ess = reweight(
        system.log_weights, log_increments, jnp.zeros(finite.shape, bool)
    )
    ancestors, log_w, do_resample = resample_if_degenerate(
        rng_key, log_w, ess, ess_threshold, RESAMPLING_SCHEMES[scheme]
    )
    system = ParticleSystem(
        log_weights=log_w,
        eves=system.eves[ancestors],
        num_resampling=system.num_resampling + do_resample.astype(jnp.int32),
        log_evidence=system.log_evidence + log_norm,
        num_nonfinite=system.num_nonfinite + jnp.sum(~finite, dtype=jnp.int32),
    )
    return system, ancestors, ess, do_resample


# ---------------------------------------------------------------------------
# The ancestral step (OU quantities from path.ou)
# ---------------------------------------------------------------------------


def warn_if_not_finite(where: str, particles) -> None:
    """After a run: an ``ALMCRunWarning`` when any particle is not finite."""
    if not isinstance(particles, jax.core.Tracer) and not bool(
        jnp.all(jnp.isfinite(particles))
    ):
        warnings.warn(
            f"{where}: some particles are not finite (the score returned NaN or "
            "inf, or the steps diverged); check score_fn.",
            ALMCRunWarning,
            stacklevel=3,
        )


def tweedie(x, score, t):
    """``E[X_0 | X_t = x] = (x + σ_t² s) / α_t``."""
    alpha, sigma2 = ou_coefficients(t)
    return (x + sigma2 * score) / alpha


def ancestral_coefficients(t, t_next):
    """``(c_x0, c_x, var)`` of the DDPM step ``N(c_x0 x̂_0 + c_x x, var I)`` from OU
    time ``t`` to ``t_next < t``."""
    _, sigma2 = ou_coefficients(t)
    alpha_next, sigma2_next = ou_coefficients(t_next)
    # The OU transition from t_next to t: mean scale a, variance 1 − a².
    a, one_minus_a2 = ou_coefficients(t - t_next)
    c_x0 = alpha_next * one_minus_a2 / sigma2
    c_x = a * sigma2_next / sigma2
    return c_x0, c_x, sigma2_next * one_minus_a2 / sigma2


def log_normal(x, mean, var):
    """Elementwise ``log N(x; mean, var)``."""
    return -0.5 * ((x - mean) ** 2 / var + jnp.log(2.0 * jnp.pi * var))


# ---------------------------------------------------------------------------
# Argument checks (eager, in Python)
# ---------------------------------------------------------------------------


def check_times(initial_time, final_time) -> tuple[float, float]:
    initial_time = check_initial_time("initial_time", initial_time)
    final_time = check_positive("final_time", final_time)
    if not final_time < initial_time:
        raise ValueError(
            f"Need initial_time > final_time > 0, got initial_time={initial_time}, "
            f"final_time={final_time}; swap them or lower final_time."
        )
    return initial_time, final_time


def check_ess_threshold(value) -> float:
    value = check_positive("ess_threshold", value, allow_zero=True)
    if not value <= 1.0:
        raise ValueError(
            f"`ess_threshold` must lie in [0, 1] (0: never resample, 1: every step), "
            f"got {value}."
        )
    return value


def check_callable(name: str, value) -> None:
    if not callable(value):
        raise TypeError(f"`{name}` must be a callable, got {type(value).__name__}.")


def check_noise_std(noise_std, dtype) -> Array:
    if isinstance(noise_std, bool) or not (
        isinstance(noise_std, numbers.Real | jax.Array | np.ndarray | np.generic)
    ):
        raise TypeError(
            f"`noise_std` must be a positive scalar, got {type(noise_std).__name__}."
        )
    if np.ndim(noise_std) != 0:
        raise ValueError(
            f"`noise_std` must be a scalar, got shape {np.shape(noise_std)}; these "
            "baselines take isotropic noise y = A x + noise_std · ε."
        )
    if not isinstance(noise_std, jax.core.Tracer):
        value = float(np.asarray(noise_std))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"`noise_std` must be finite and > 0, got {value} (for a noiseless "
                "observation pass a small positive value, e.g. 1e-3)."
            )
    return jnp.asarray(noise_std, dtype)


def check_linear_gaussian(A, y, noise_std) -> tuple[Array, Array, Array]:
    """``(A, y, noise_std)`` as arrays of one floating dtype, shapes checked."""
    A = jnp.asarray(A)
    y = jnp.asarray(y)
    if A.ndim != 2:
        raise ValueError(
            f"`A` must be a 2-D (d_y, d) matrix, got shape {A.shape}; write a single "
            "observed row as A[None, :]."
        )
    if y.shape != (A.shape[0],):
        raise ValueError(
            f"`y` must have shape {(A.shape[0],)} to match A {A.shape}, got {y.shape}."
        )
    dtype = jnp.result_type(A, y)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    check_finite_values("A", A, " (the forward matrix)")
    check_finite_values("y", y, " (the observation); drop or impute missing entries")
    return A.astype(dtype), y.astype(dtype), check_noise_std(noise_std, dtype)
