"""Health of the annealing path and of an SMC particle system, as tables.

A healthy ALMC path reverts (almost) no steps: a reverted step is one whose proposal,
score or likelihood was not finite (:mod:`numpyro_almc.run.health` warns above
:data:`~numpyro_almc.run.health.REVERTED_SHARE` of a chain's steps). The chain mean
of the log likelihood rises as the path leaves the warm start and the data take
over, and levels off near the early-stopping time; a trace still climbing at ``τ``
says the chains had not caught up with the path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numpyro_almc._validate import check_count
from numpyro_almc.run.driver import ALMCResult
from numpyro_almc.run.health import REVERTED_SHARE
from numpyro_almc.run.recorders import ALMCTrace
from numpyro_almc.run.smc import SMCResult

__all__ = ["PathHealth", "path_health", "smc_summary"]


class PathHealth(NamedTuple):
    """Output of :func:`path_health`.

    Attributes
    ----------
    steps
        ``pandas.DataFrame``, one row per step: ``time`` (OU time of the drift,
        ``inf`` in the warm start), ``step_size``, ``reverted_share`` (share of the
        chains whose step was reverted) and ``mean_loglik`` (chain mean of
        ``log L`` after the step).
    reverted_share
        Share of all chain-steps that were reverted.
    worst_step
        Index of the step with the largest ``reverted_share`` (-1 when none).
    final_loglik_change
        ``mean_loglik`` at the last step minus its value ``tail`` steps earlier,
        in units of its range over the whole path (near 0: levelled off).
    problems
        Sentences naming what is wrong (empty for a healthy path).
    """

    steps: object
    reverted_share: float
    worst_step: int
    final_loglik_change: float
    problems: tuple[str, ...]


def _trace_of(data, num_chains):
    """``(time, step_size, reverted_share, mean_loglik)`` arrays of a run."""
    if isinstance(data, ALMCResult):
        num_chains = int(np.shape(data.num_diverging)[0])
        data = data.trace
    if isinstance(data, ALMCTrace):
        if num_chains is None:
            raise ValueError(
                "An ALMCTrace counts reverted chains: pass num_chains= (or the "
                "ALMCResult itself)."
            )
        return (
            np.asarray(data.time, np.float64),
            np.asarray(data.step_size, np.float64),
            np.asarray(data.num_diverging, np.float64) / num_chains,
            np.asarray(data.mean_loglikelihood, np.float64),
        )
    # ArviZ data exported with warmup=True (to_inference_data).
    from numpyro_almc.diagnostics._summary import _dataset

    ds = _dataset(data, "warmup_sample_stats")
    if ds is None:
        raise TypeError(
            "Expected an ALMCResult, an ALMCTrace or ArviZ data exported with "
            "to_inference_data(..., warmup=True)."
        )
    if "num_diverging_chains" in ds:  # an ALMCResult's path: summaries over chains
        first = {k: np.asarray(ds[k].values)[0] for k in ds.data_vars}
        total = int(ds.sizes["chain"])
        return (
            first["time"],
            first["step_size"],
            first["num_diverging_chains"] / total,
            first["mean_measurement_loglik"],
        )
    # A BlackJAX history: per-chain values of every step.
    return (
        np.asarray(ds["time"].values)[0].astype(np.float64),
        np.asarray(ds["step_size"].values)[0].astype(np.float64),
        np.asarray(ds["diverging"].values).mean(axis=0),
        np.asarray(ds["measurement_loglik"].values).mean(axis=0),
    )


def path_health(data, *, num_chains: int | None = None, tail: int | None = None):
    """Per-step share of reverted steps and the likelihood trace of an ALMC run.

    Parameters
    ----------
    data
        An :class:`~numpyro_almc.run.ALMCResult` (from
        :func:`~numpyro_almc.run_almc`), its ``trace`` with ``num_chains``, or
        ArviZ data from :func:`~numpyro_almc.to_inference_data` with
        ``warmup=True`` (the kept steps only).
    num_chains
        Needed with a bare :class:`~numpyro_almc.run.ALMCTrace`.
    tail
        Steps over which ``final_loglik_change`` is measured (default: the last
        10 % of the steps).

    Returns
    -------
    PathHealth

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, budget_schedule(50, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_chains=8)
    >>> health = path_health(res)
    >>> health.steps.columns.tolist()
    ['time', 'step_size', 'reverted_share', 'mean_loglik']
    >>> health.reverted_share, health.problems
    (0.0, ())
    """
    import pandas as pd

    if num_chains is not None:
        check_count("num_chains", num_chains, 1)
    time, step_size, share, loglik = _trace_of(data, num_chains)
    num_steps = time.shape[0]
    if num_steps == 0:
        raise ValueError("The run has no steps.")
    tail = max(1, num_steps // 10) if tail is None else int(tail)
    if not 1 <= tail < max(num_steps, 2):
        raise ValueError(f"`tail` must be in [1, {num_steps - 1}], got {tail}.")
    steps = pd.DataFrame(
        {
            "time": time,
            "step_size": step_size,
            "reverted_share": share,
            "mean_loglik": loglik,
        }
    )
    steps.index.name = "step"
    problems = []
    overall = float(share.mean())
    worst = int(share.argmax()) if share.max() > 0 else -1
    if overall > REVERTED_SHARE:
        problems.append(
            f"{overall:.1%} of all steps were reverted (more than "
            f"{REVERTED_SHARE:.0%}): lower the step size or precondition."
        )
    if share[-1] > 0:
        problems.append(
            f"the last step was reverted in {share[-1]:.0%} of the chains: they did "
            "not end at the early-stopping time."
        )
    finite = np.isfinite(loglik)
    if not finite.all():
        problems.append(
            f"the mean log likelihood is not finite at {int((~finite).sum())} steps "
            f"(first: step {int(np.flatnonzero(~finite)[0])})."
        )
        change = float("nan")
    else:
        span = float(loglik.max() - loglik.min())
        before = loglik[num_steps - 1 - tail] if num_steps > 1 else loglik[0]
        change = float((loglik[-1] - before) / span) if span > 0 else 0.0
    return PathHealth(steps, overall, worst, change, tuple(problems))


def smc_summary(data):
    """The particle system of an SMC run: ESS along the path, resampling, evidence.

    Parameters
    ----------
    data
        An :class:`~numpyro_almc.run.smc.SMCResult` (from
        :func:`~numpyro_almc.run_almc_smc`) or its ArviZ export
        (:func:`~numpyro_almc.to_inference_data`, group ``smc_path``).

    Returns
    -------
    pandas.Series
        ``num_particles``, ``num_steps``, ``final_ess``, ``min_ess``,
        ``min_ess_time`` (OU time of the drift at the smallest ESS),
        ``num_resampling_events``, ``log_evidence_ratio`` with its
        ``log_evidence_ratio_se`` (Lee–Whiteley) and ``log_evidence`` (NaN when
        no warm-start normaliser was given). An ESS near 1 particle, or an
        evidence SE above about 1, means the ensemble collapsed: the weights then
        rest on a few particles (:func:`~numpyro_almc.run.health.check_smc`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc import budget_schedule, run_almc_smc
    >>> res = run_almc_smc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                    lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                    jnp.zeros(2), num_particles=16)
    >>> row = smc_summary(res)
    >>> int(row["num_particles"]), int(row["num_steps"]), bool(row["min_ess"] > 1)
    (16, 24, True)
    """
    import pandas as pd

    if isinstance(data, SMCResult):
        ess = np.asarray(data.ess, np.float64)
        time = np.asarray(data.info.time, np.float64)
        resampled = np.asarray(data.resampled, bool)
        num_particles = int(np.shape(data.log_weights)[0])
        evidence = (
            float(data.log_evidence_ratio),
            float(data.log_evidence_ratio_se),
            float("nan") if data.log_evidence is None else float(data.log_evidence),
        )
    else:
        from numpyro_almc.diagnostics._summary import _dataset

        path = _dataset(data, "smc_path")
        stats = _dataset(data, "sample_stats")
        if path is None or stats is None:
            raise TypeError("Expected an SMCResult or its to_inference_data export.")
        ess = np.asarray(path["ess"].values, np.float64)
        time = np.asarray(path["time"].values, np.float64)
        resampled = np.asarray(path["resampled"].values, bool)
        num_particles = int(stats.sizes["draw"])

        def first(name):
            if name not in stats:
                return float("nan")
            return float(np.asarray(stats[name].values).reshape(-1)[0])

        evidence = tuple(
            first(n)
            for n in ("log_evidence_ratio", "log_evidence_ratio_se", "log_evidence")
        )
    smallest = int(np.nanargmin(ess)) if ess.size else -1
    return pd.Series(
        {
            "num_particles": num_particles,
            "num_steps": int(ess.size),
            "final_ess": float(ess[-1]) if ess.size else float("nan"),
            "min_ess": float(ess[smallest]) if ess.size else float("nan"),
            "min_ess_time": float(time[smallest]) if ess.size else float("nan"),
            "num_resampling_events": int(resampled.sum()),
            "log_evidence_ratio": evidence[0],
            "log_evidence_ratio_se": evidence[1],
            "log_evidence": evidence[2],
        },
        dtype=object,
    )
