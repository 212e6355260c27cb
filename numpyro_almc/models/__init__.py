"""Score networks, the bundled digits prior (optional extra ``[nn]``) and the
pretrained galaxy priors of the ``galaxygrad`` wheel (extra ``[galaxy]``).

Needs ``equinox`` and ``optax`` (``pip install numpyro_almc[nn]``); the galaxy
networks also need ``pip install numpyro_almc[galaxy]`` (loaded from the installed
wheel by path, nothing downloads). The core package never imports this subpackage.
"""

from numpyro_almc.models._digits import (
    DIGITS_TEST_SIZE,
    DigitsPrior,
    DigitsSplit,
    digits_prior,
    load_digits_split,
)
from numpyro_almc.models._galaxy import (
    FLUX_SCALE,
    GALAXY_NETWORKS,
    GalaxyPrior,
    galaxy_prior,
)
from numpyro_almc.models._network import (
    ScoreNetwork,
    TrainedScoreNetwork,
    dsm_loss,
    load_network,
    save_network,
    train_score_network,
)

__all__ = [
    "FLUX_SCALE",
    "GALAXY_NETWORKS",
    "GalaxyPrior",
    "galaxy_prior",
    "DIGITS_TEST_SIZE",
    "DigitsPrior",
    "DigitsSplit",
    "ScoreNetwork",
    "TrainedScoreNetwork",
    "digits_prior",
    "dsm_loss",
    "load_digits_split",
    "load_network",
    "save_network",
    "train_score_network",
]
