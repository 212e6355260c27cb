"""Diagnostics that read ALMC output the way it is made.

Each ALMC chain is one (nearly) independent draw of ``μ_τ``: split-R̂ across chains
misreads such output. This namespace has what to look at instead (see the how-to
"Reading the diagnostics"):

* :func:`summary`: an ``az.summary``-like table with Monte Carlo errors that treat
  the chains as independent replicates, within-chain mixing apart, and a column
  that says when R̂ is the wrong check;
* :func:`path_health`: reverted steps and the likelihood along the path;
  :func:`smc_summary`: ESS along the path, resampling and the evidence of SMC;
* :func:`kernel_stein_discrepancy` with :func:`target_score`: a score-only
  goodness-of-fit of the final draws against ``μ_τ``;
* :func:`choose_early_stop_time` (with :func:`path_candidates` and
  :func:`energy_distance`): a data-driven early-stopping time.
"""

from numpyro_almc.diagnostics._early_stop import (
    EarlyStopChoice,
    EnergyDistance,
    choose_early_stop_time,
    energy_distance,
    path_candidates,
)
from numpyro_almc.diagnostics._path import PathHealth, path_health, smc_summary
from numpyro_almc.diagnostics._stein import (
    KSDResult,
    kernel_stein_discrepancy,
    target_score,
)
from numpyro_almc.diagnostics._summary import RHAT_THRESHOLD, summary

__all__ = [
    "RHAT_THRESHOLD",
    "EarlyStopChoice",
    "EnergyDistance",
    "KSDResult",
    "PathHealth",
    "choose_early_stop_time",
    "energy_distance",
    "kernel_stein_discrepancy",
    "path_candidates",
    "path_health",
    "smc_summary",
    "summary",
    "target_score",
]
