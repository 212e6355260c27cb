"""The NumPyro façades: the ``ScorePrior`` distribution and the ``ALMC`` /
``ALMCSMC`` MCMC kernels (thin layers over the core's move and Feynman–Kac step)."""

from numpyro_almc.infer.almc import ALMC, ALMCSamplerState
from numpyro_almc.infer.almc_smc import ALMCSMC, ALMCSMCSamplerState
from numpyro_almc.infer.score_prior import ScorePrior, score_prior_as_flat

__all__ = [
    "ALMC",
    "ALMCSMC",
    "ALMCSamplerState",
    "ALMCSMCSamplerState",
    "ScorePrior",
    "score_prior_as_flat",
]
