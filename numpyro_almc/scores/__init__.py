"""Score functions: exact scores, adapters from trained diffusion models, reduced
precision, and prior draws by reverse diffusion."""

from numpyro_almc.scores.adapters import (
    CosineVPSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    score_from_edm_denoiser,
    score_from_eps,
    score_from_ve,
    score_from_x0,
)
from numpyro_almc.scores.exact import (
    gaussian_mixture_log_density,
    gaussian_mixture_score,
    gaussian_score,
)
from numpyro_almc.scores.precision import cast_score
from numpyro_almc.scores.prior_sampling import sample_prior

__all__ = [
    "CosineVPSchedule",
    "DiscreteVPSchedule",
    "LinearVPSchedule",
    "cast_score",
    "gaussian_mixture_log_density",
    "gaussian_mixture_score",
    "gaussian_score",
    "sample_prior",
    "score_from_edm_denoiser",
    "score_from_eps",
    "score_from_ve",
    "score_from_x0",
]
