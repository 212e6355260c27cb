"""The bundled diffusion prior on scikit-learn's 8x8 handwritten digits."""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from numpyro_almc.models._network import TrainedScoreNetwork, load_network
from numpyro_almc.scores.prior_sampling import sample_prior
from numpyro_almc.types import Array, ArrayLike, PRNGKey

__all__ = [
    "DIGITS_TEST_SIZE",
    "DIGITS_WEIGHTS",
    "DigitsPrior",
    "DigitsSplit",
    "digits_prior",
    "load_digits_split",
]

#: Number of held-out test images (of 1797) in :func:`load_digits_split`.
DIGITS_TEST_SIZE = 297
"""Number of held-out test images (of 1797) in :func:`load_digits_split`."""
#: Resource name of the bundled weights inside ``numpyro_almc.models``.
DIGITS_WEIGHTS = "weights/digits_score.npz"


class DigitsSplit(NamedTuple):
    """Fixed train/test split of scikit-learn's digits (pixel values 0–16).

    Attributes
    ----------
    train_images
        ``float32[1500, 64]``.
    train_labels
        ``int32[1500]``.
    test_images
        ``float32[297, 64]``, never trained on.
    test_labels
        ``int32[297]``.

    Examples
    --------
    >>> split = load_digits_split()
    >>> split.train_images.shape, split.test_images.shape, split.test_labels.dtype
    ((1500, 64), (297, 64), dtype('int32'))
    """

    train_images: np.ndarray  #: float32[1500, 64]
    train_labels: np.ndarray  #: int32[1500]
    test_images: np.ndarray  #: float32[297, 64]
    test_labels: np.ndarray  #: int32[297]


def load_digits_split() -> DigitsSplit:
    """Scikit-learn's 8x8 digits with the package's fixed train/test split.

    ``sklearn.model_selection.train_test_split(images, labels, test_size=297,
    random_state=0, stratify=labels)`` on ``sklearn.datasets.load_digits()``:
    1500 training and 297 held-out images, class-balanced. The bundled prior was
    trained on the training images only; the test images are never trained on.

    Returns
    -------
    DigitsSplit
        ``float32`` images with pixel values in ``[0, 16]``, shape ``(n, 64)``, and
        ``int32`` labels.

    Examples
    --------
    >>> split = load_digits_split()
    >>> float(split.train_images.min()), float(split.train_images.max())
    (0.0, 16.0)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.float32)
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=labels
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsPrior:
    """A diffusion prior on 8x8 digit images, flattened to 64-vectors.

    Network space is ``x = pixels / 8 - 1`` (pixel values 0–16 map to ``[-1, 1]``);
    ``score_fn`` is the OU score in that space.

    Attributes
    ----------
    score_fn
        ``score_fn(x, t) -> grad_x log p_t(x)`` for one ``float32[64]`` ``x``.
    network
        The loaded :class:`TrainedScoreNetwork`.
    event_shape
        ``(64,)``.

    Examples
    --------
    >>> prior = digits_prior()
    >>> prior.event_shape, prior.encode(jnp.array([0.0, 8.0, 16.0])).tolist()
    ((64,), [-1.0, 0.0, 1.0])
    >>> prior.decode(jnp.array([-2.0, 0.5])).tolist()   # clipped to [0, 16]
    [0.0, 12.0]
    """

    score_fn: object
    network: TrainedScoreNetwork
    event_shape: tuple[int, ...] = (64,)

    @staticmethod
    def encode(pixels: ArrayLike) -> Array:
        """Pixel values in ``[0, 16]`` → network space ``pixels / 8 - 1``."""
        pixels = jnp.asarray(pixels)
        if not jnp.issubdtype(pixels.dtype, jnp.floating):
            pixels = pixels.astype(jnp.float32)
        return pixels / 8 - 1

    @staticmethod
    def decode(x: ArrayLike, *, clip: bool = True) -> Array:
        """Network space → pixel values ``8 (x + 1)``, clipped to ``[0, 16]`` unless
        ``clip=False``."""
        pixels = 8 * (jnp.asarray(x) + 1)
        return jnp.clip(pixels, 0, 16) if clip else pixels

    def sample(
        self, rng_key: PRNGKey, num_samples: int | None = None, **kwargs
    ) -> Array:
        """Reverse-diffusion draws in network space (decode them for pixels).

        Keyword arguments go to :func:`numpyro_almc.scores.prior_sampling.sample_prior`
        (``num_steps``, ``initial_time``, ``final_time``, ...); the defaults use
        the network's training time range.
        """
        kwargs.setdefault("initial_time", self.network.config["max_time"])
        kwargs.setdefault("final_time", self.network.config["min_time"])
        return sample_prior(
            rng_key, self.score_fn, self.event_shape, num_samples, **kwargs
        )


@functools.lru_cache(maxsize=1)
def digits_prior() -> DigitsPrior:
    """The bundled digits prior (loaded once, then cached).

    Weights: ``numpyro_almc/models/weights/digits_score.npz``, reproduced by
    ``python -m numpyro_almc.models.train_digits --out
    numpyro_almc/models/weights/digits_score.npz``.

    Examples
    --------
    >>> import jax
    >>> from numpyro_almc.models import digits_prior
    >>> prior = digits_prior()
    >>> prior.score_fn(prior.encode(jax.numpy.zeros(64)), 0.5).shape
    (64,)
    """
    path = resources.files("numpyro_almc.models").joinpath(DIGITS_WEIGHTS)
    with resources.as_file(path) as file:
        if not file.exists():
            raise FileNotFoundError(
                f"bundled weights {file} are missing; reinstall numpyro_almc or run "
                "python -m numpyro_almc.models.train_digits --out " + str(file)
            )
        trained = load_network(file)
    return DigitsPrior(score_fn=trained.score_fn, network=trained)
