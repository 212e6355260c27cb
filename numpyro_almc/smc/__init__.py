"""Sequential Monte Carlo along the ALMC path: the Feynman–Kac step, its weight terms
and the evidence."""

from numpyro_almc.smc.almc_smc import (
    RESAMPLING_SCHEMES,
    SMCInfo,
    SMCOptions,
    SMCState,
    as_top_level_api,
    build_smc_kernel,
    init_smc,
)
from numpyro_almc.smc.evidence import (
    gaussian_warm_start_log_normalizer,
    lee_whiteley_log_se,
)
from numpyro_almc.smc.kernel import fk_step, resample_if_degenerate, reweight
from numpyro_almc.smc.weights import (
    likelihood_log_weight_increments,
    ou_log_density_time_derivative,
    prior_log_weight_increments,
)

__all__ = [
    "RESAMPLING_SCHEMES",
    "SMCInfo",
    "SMCOptions",
    "SMCState",
    "as_top_level_api",
    "build_smc_kernel",
    "fk_step",
    "gaussian_warm_start_log_normalizer",
    "init_smc",
    "lee_whiteley_log_se",
    "likelihood_log_weight_increments",
    "ou_log_density_time_derivative",
    "prior_log_weight_increments",
    "resample_if_degenerate",
    "reweight",
]
