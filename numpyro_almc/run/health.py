"""After a run: a warning (an error with ``strict=True``) when it went wrong.

Reverted steps are rare in a healthy run (none on the project's testbeds, digits and
notebooks); a run that reverts more than :data:`REVERTED_SHARE` of a chain's steps has a
step size too large for its likelihood's stiffness, and its draws are not of the target.
A chain whose last step was reverted keeps the score of an earlier time, so its final
time is not the early-stopping time. An SMC run whose effective sample size fell to one
particle, or whose evidence is not finite, has collapsed.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np

__all__ = [
    "REVERTED_SHARE",
    "ALMCRunWarning",
    "check_chains",
    "check_finished",
    "check_smc",
]

#: Largest share of a chain's steps that may be reverted before a run is flagged.
REVERTED_SHARE = 0.01


class ALMCRunWarning(RuntimeWarning):
    """A run finished, but its draws should not be trusted (see the message)."""


def _concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def _local(value) -> np.ndarray:
    """``value`` on the host; of an array spread over several processes, this
    process's shards (each process checks its own chains)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        shards = value.addressable_shards
        if value.ndim == 0 or not shards:
            return np.asarray(shards[0].data) if shards else np.zeros(0)
        return np.concatenate([np.asarray(s.data).reshape(-1) for s in shards])
    return np.asarray(value)


def _report(problems, strict: bool, where: str) -> None:
    if not problems:
        return
    message = f"{where}: " + " ".join(problems)
    if strict:
        raise RuntimeError(message)
    warnings.warn(message, ALMCRunWarning, stacklevel=3)


def check_chains(
    num_diverging,
    num_steps,
    final_time,
    early_stop_time,
    *,
    strict,
    where="run_almc",
    full_path=True,
) -> None:
    """Flag chains that reverted more than :data:`REVERTED_SHARE` of their steps, or
    (``full_path``: the run covered the whole schedule) did not end at ``τ``."""
    if not _concrete(num_diverging, final_time, early_stop_time):
        return
    reverted = _local(num_diverging).reshape(-1)
    problems = []
    bad = reverted > REVERTED_SHARE * num_steps
    if bad.any():
        problems.append(
            f"{int(bad.sum())} of {reverted.size} chains reverted more than "
            f"{REVERTED_SHARE:.0%} of their {num_steps} steps (at most "
            f"{int(reverted.max())}): the steps diverge. Lower the step size "
            "(step_size, warm_start_step_size) or pass a preconditioner "
            "(linear_gaussian_preconditioner, or the noised likelihood's)."
        )
    if full_path:
        final = _local(final_time).astype(np.float64).reshape(-1)
        tau = float(_local(early_stop_time).reshape(-1)[0])
        off = ~np.isclose(final, tau, rtol=1e-5, atol=0.0)
        if off.any():
            problems.append(
                f"{int(off.sum())} chains did not end at the early-stopping time "
                f"τ = {tau:.3g} (their last steps were reverted; e.g. t = "
                f"{final[off][0]:.3g}): their draws are not of μ_τ."
            )
    _report(problems, strict, where)


def check_finished(bad, *, strict, where="run_almc", what="chains") -> None:
    """Flag draws whose final stage (:func:`~numpyro_almc.mcmc.finish`) was not
    finite: they were left at ``τ``, so they are draws of ``μ_τ``, not ``μ_0``."""
    if not _concrete(bad):
        return
    bad = _local(bad).reshape(-1)
    if bad.any():
        _report(
            [
                f"the final stage of {int(bad.sum())} of {bad.size} {what} was not "
                "finite (a score or likelihood below τ returned NaN or inf): their "
                "final draws are left at τ, draws of μ_τ rather than μ_0. Check "
                "the score network at small times, or raise FinalStage's min_time."
            ],
            strict,
            where,
        )


def check_smc(
    ess, log_evidence_ratio, num_particles, *, strict, where="run_almc_smc"
) -> None:
    """Flag a collapsed SMC run: an ESS of about one particle after a step, or a
    non-finite evidence."""
    if not _concrete(ess, log_evidence_ratio):
        return
    ess = _local(ess).astype(np.float64)
    problems = []
    if not np.isfinite(_local(log_evidence_ratio)).all():
        problems.append(
            "the log-evidence is not finite: every particle's weight vanished (a "
            "diverged or infinitely unlikely ensemble)."
        )
    if ess.size and (np.nanmin(ess) < 1.5 or not np.isfinite(ess).all()):
        problems.append(
            f"the effective sample size fell to {np.nanmin(ess):.2f} of "
            f"{num_particles} particles: the ensemble collapsed onto one particle. "
            "Use more particles or annealing steps."
        )
    _report(problems, strict, where)
