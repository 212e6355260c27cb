"""The NumPyro façades: the ``ScorePrior`` distribution and the ``ALMC`` /
``ALMCSMC`` MCMC kernels."""

from numpyro_almc.infer.almc import (
    ALMC,
    ALMCSMC,
    ALMCSamplerState,
    ALMCSMCSamplerState,
    ScorePrior,
)

__all__ = ["ALMC", "ALMCSMC", "ALMCSamplerState", "ALMCSMCSamplerState", "ScorePrior"]
