"""What the path is, without sampling: OU quantities, schedules and their per-step
parameters, time-dependent likelihoods and preconditioners."""

from numpyro_almc.path.likelihoods import (
    NoisedGaussianLikelihood,
    NoisedGaussianPreconditioner,
    NoisedOperatorLikelihood,
    NoisedOperatorPreconditioner,
    OperatorFunctionPreconditioner,
    noised_gaussian_likelihood,
)
from numpyro_almc.path.ou import (
    half_log_snr,
    ou_coefficients,
    ou_noise_variance,
    time_from_half_log_snr,
)
from numpyro_almc.path.preconditioners import (
    DensePreconditioner,
    DiagonalPreconditioner,
    LinearOperatorPreconditioner,
    dense_preconditioner,
    diagonal_preconditioner,
    hessian_diagonal_preconditioner,
    hessian_preconditioner,
    is_operator,
    linear_gaussian_preconditioner,
)
from numpyro_almc.path.schedules import (
    ANNEAL,
    TAIL,
    WARM_START,
    ALMCSchedule,
    StepParams,
    budget_schedule,
    langevin_schedule,
    paper_schedule,
    step_params,
)

__all__ = [
    "ANNEAL",
    "TAIL",
    "WARM_START",
    "ALMCSchedule",
    "DensePreconditioner",
    "DiagonalPreconditioner",
    "LinearOperatorPreconditioner",
    "NoisedGaussianLikelihood",
    "NoisedGaussianPreconditioner",
    "NoisedOperatorLikelihood",
    "NoisedOperatorPreconditioner",
    "OperatorFunctionPreconditioner",
    "StepParams",
    "budget_schedule",
    "dense_preconditioner",
    "diagonal_preconditioner",
    "half_log_snr",
    "hessian_diagonal_preconditioner",
    "hessian_preconditioner",
    "is_operator",
    "langevin_schedule",
    "linear_gaussian_preconditioner",
    "noised_gaussian_likelihood",
    "ou_coefficients",
    "ou_noise_variance",
    "paper_schedule",
    "step_params",
    "time_from_half_log_snr",
]
