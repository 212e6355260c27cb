"""numpyro_almc: Annealed Langevin Monte Carlo with diffusion-model (score) priors.

The core is a BlackJAX-style kernel (:func:`almc`), a jitted multi-chain driver
(:func:`run_almc`) and the schedules of the path (:func:`paper_schedule`,
:func:`budget_schedule`).
"""

from numpyro_almc._diagnostics import to_inference_data
from numpyro_almc._driver import (
    ALMCResult,
    ALMCTrace,
    chain_keys,
    chain_mesh,
    initial_positions,
    run_almc,
)
from numpyro_almc._infer import (
    ALMC,
    ALMCSMC,
    ALMCSamplerState,
    ALMCSMCSamplerState,
    ScorePrior,
)
from numpyro_almc._kernel import (
    ALMCInfo,
    ALMCState,
    as_top_level_api,
    build_kernel,
    init,
    standard_normal_score,
)
from numpyro_almc._paths import (
    NoisedGaussianLikelihood,
    noised_gaussian_likelihood,
)
from numpyro_almc._precision import cast_score
from numpyro_almc._precondition import (
    DensePreconditioner,
    DiagonalPreconditioner,
    LinearOperatorPreconditioner,
    dense_preconditioner,
    diagonal_preconditioner,
    hessian_preconditioner,
    linear_gaussian_preconditioner,
)
from numpyro_almc._prior_sampling import sample_prior
from numpyro_almc._schedules import (
    ANNEAL,
    TAIL,
    WARM_START,
    ALMCSchedule,
    budget_schedule,
    langevin_schedule,
    ou_noise_variance,
    paper_schedule,
    schedule_at,
)
from numpyro_almc._scores import (
    CosineVPSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    gaussian_mixture_log_density,
    gaussian_mixture_score,
    gaussian_score,
    ou_coefficients,
    score_from_edm_denoiser,
    score_from_eps,
    score_from_ve,
    score_from_x0,
)
from numpyro_almc._smc import (
    SMCInfo,
    SMCResult,
    SMCState,
    almc_smc,
    build_smc_kernel,
    gaussian_warm_start_log_normalizer,
    init_smc,
    ou_log_density_time_derivative,
)
from numpyro_almc._streaming import (
    ChunkedResult,
    export_netcdf,
    load_chunks,
    run_almc_chunked,
)

#: ``almc(loglikelihood_fn, score_fn, schedule)`` -> a BlackJAX ``SamplingAlgorithm``;
#: ``almc.init`` and ``almc.build_kernel`` are the pieces, as in BlackJAX.
almc = as_top_level_api
almc.init = init
almc.build_kernel = build_kernel

__version__ = "0.1.0"

__all__ = [
    "NoisedGaussianLikelihood",
    "noised_gaussian_likelihood",
    "CosineVPSchedule",
    "DiscreteVPSchedule",
    "LinearVPSchedule",
    "gaussian_mixture_log_density",
    "gaussian_mixture_score",
    "gaussian_score",
    "ou_coefficients",
    "score_from_edm_denoiser",
    "score_from_eps",
    "score_from_ve",
    "score_from_x0",
    "sample_prior",
    "ALMC",
    "ALMCSMC",
    "ALMCSamplerState",
    "ALMCSMCSamplerState",
    "ScorePrior",
    "ALMCInfo",
    "ALMCResult",
    "ALMCSchedule",
    "ALMCState",
    "ALMCTrace",
    "ANNEAL",
    "DensePreconditioner",
    "DiagonalPreconditioner",
    "LinearOperatorPreconditioner",
    "TAIL",
    "WARM_START",
    "almc",
    "budget_schedule",
    "chain_keys",
    "chain_mesh",
    "ChunkedResult",
    "cast_score",
    "export_netcdf",
    "load_chunks",
    "run_almc_chunked",
    "dense_preconditioner",
    "diagonal_preconditioner",
    "hessian_preconditioner",
    "initial_positions",
    "langevin_schedule",
    "linear_gaussian_preconditioner",
    "ou_noise_variance",
    "paper_schedule",
    "run_almc",
    "SMCInfo",
    "SMCResult",
    "SMCState",
    "almc_smc",
    "build_smc_kernel",
    "gaussian_warm_start_log_normalizer",
    "init_smc",
    "ou_log_density_time_derivative",
    "schedule_at",
    "standard_normal_score",
    "to_inference_data",
]
