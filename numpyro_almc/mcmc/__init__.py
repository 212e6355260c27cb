"""The ALMC move as a BlackJAX-style kernel: state, info, init, build_kernel; and
the final stage that carries draws from ``τ`` to ``t = 0``."""

from numpyro_almc.mcmc.almc import (
    ALMCInfo,
    ALMCState,
    as_top_level_api,
    build_kernel,
    default_divergence_threshold,
    init,
    scheduled_step,
    standard_normal_score,
)
from numpyro_almc.mcmc.finish import FinalStage, finish
from numpyro_almc.mcmc.stiffness import stable_step_size

__all__ = [
    "FinalStage",
    "finish",
    "ALMCInfo",
    "ALMCState",
    "as_top_level_api",
    "build_kernel",
    "default_divergence_threshold",
    "init",
    "scheduled_step",
    "stable_step_size",
    "standard_normal_score",
]
