"""Score networks and the bundled digits prior (optional extra ``[nn]``).

Needs ``equinox`` and ``optax`` (``pip install numpyro_almc[nn]``); the core
package never imports this subpackage.
"""

from numpyro_almc.models._digits import (
    DIGITS_TEST_SIZE,
    DigitsPrior,
    DigitsSplit,
    digits_prior,
    load_digits_split,
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
