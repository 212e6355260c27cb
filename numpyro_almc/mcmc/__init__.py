"""The ALMC move as a BlackJAX-style kernel: state, info, init, build_kernel."""

from numpyro_almc.mcmc.almc import (
    ALMCInfo,
    ALMCState,
    as_top_level_api,
    build_kernel,
    init,
    scheduled_step,
    standard_normal_score,
)

__all__ = [
    "ALMCInfo",
    "ALMCState",
    "as_top_level_api",
    "build_kernel",
    "init",
    "scheduled_step",
    "standard_normal_score",
]
