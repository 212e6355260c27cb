"""Linear inverse problems on 8×8 images as NumPyro models with a ScorePrior.

Every operator acts on the flattened image in the prior's space (``(64,)``), and
every model has the noise scale as an ordinary latent site ``sigma``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_almc.infer.score_prior import ScorePrior
from numpyro_almc.types import Array, PRNGKey

__all__ = [
    "TASKS",
    "block_mask",
    "compressed_sensing_operator",
    "denoising_operator",
    "inpainting_operator",
    "linear_inverse_model",
    "make_task",
    "random_mask",
    "superresolution_operator",
]

SIDE = 8
DIM = SIDE * SIDE


def random_mask(rng_key: PRNGKey, fraction_observed: float = 0.5) -> np.ndarray:
    """A boolean ``(64,)`` mask observing a random ``fraction_observed`` of pixels."""
    if not 0 < fraction_observed <= 1:
        raise ValueError("`fraction_observed` must be in (0, 1].")
    n = max(1, int(round(fraction_observed * DIM)))
    idx = np.asarray(jax.random.permutation(rng_key, DIM)[:n])
    mask = np.zeros(DIM, bool)
    mask[idx] = True
    return mask


def block_mask(top: int = 2, left: int = 2, height: int = 4, width: int = 4):
    """A ``(64,)`` mask hiding the ``height × width`` block at ``(top, left)``."""
    if not (0 <= top < SIDE and 0 <= left < SIDE and height > 0 and width > 0):
        raise ValueError("The block must start inside the 8×8 image and be non-empty.")
    mask = np.ones((SIDE, SIDE), bool)
    mask[top : top + height, left : left + width] = False
    return mask.ravel()


def inpainting_operator(mask) -> Array:
    """Rows of the identity for the observed pixels: ``(num_observed, 64)``."""
    mask = np.asarray(mask, bool)
    if mask.shape != (DIM,) or not mask.any():
        raise ValueError("`mask` must be a (64,) boolean array observing some pixels.")
    return jnp.asarray(np.eye(DIM, dtype=np.float32)[mask])


def denoising_operator() -> Array:
    """The identity: every pixel observed with noise."""
    return jnp.eye(DIM, dtype=jnp.float32)


def superresolution_operator(factor: int = 2) -> Array:
    """Average pooling by ``factor`` (2 gives a ``(16, 64)`` operator)."""
    if not isinstance(factor, numbers.Integral) or factor < 1 or SIDE % factor:
        raise ValueError("`factor` must be a positive divisor of 8.")
    low = SIDE // factor
    A = np.zeros((low * low, DIM), np.float32)
    for i in range(SIDE):
        for j in range(SIDE):
            A[(i // factor) * low + j // factor, i * SIDE + j] = 1.0 / factor**2
    return jnp.asarray(A)


def compressed_sensing_operator(rng_key: PRNGKey, num_measurements: int = 16) -> Array:
    """A Gaussian ``(num_measurements, 64)`` matrix with ``N(0, 1/num_measurements)``
    entries (so ``|A x| ≈ |x|``)."""
    if not isinstance(num_measurements, numbers.Integral) or num_measurements < 1:
        raise ValueError("`num_measurements` must be a positive integer.")
    return jax.random.normal(rng_key, (num_measurements, DIM)) / np.sqrt(
        num_measurements
    )


def linear_inverse_model(score_fn, A, *, noise_scale: float = 0.2, event_shape=(DIM,)):
    r"""The NumPyro model ``x ~ ScorePrior``, ``σ ~ HalfNormal(noise_scale)``,
    ``y ~ N(A x, σ² I)``.

    Parameters
    ----------
    score_fn
        The prior's score (e.g. ``digits_prior().score_fn``).
    A
        ``(d_y, 64)`` forward operator in the prior's space.
    noise_scale
        Scale of the half-normal prior on the noise standard deviation ``σ``.

    Returns
    -------
    model
        ``model(y=None)``; sample it with ``MCMC(ALMC(model), ...)``.
    """
    A = jnp.asarray(A)
    if A.ndim != 2 or A.shape[1] != int(np.prod(event_shape)):
        raise ValueError(
            f"`A` must have shape (d_y, {int(np.prod(event_shape))}), got {A.shape}."
        )
    if not noise_scale > 0:
        raise ValueError("`noise_scale` must be > 0.")

    def model(y=None):
        x = numpyro.sample("x", ScorePrior(score_fn, event_shape=event_shape))
        sigma = numpyro.sample("sigma", dist.HalfNormal(noise_scale))
        numpyro.sample("y", dist.Normal(A @ x.ravel(), sigma).to_event(1), obs=y)

    return model


#: The inverse problems of the digits benchmark.
TASKS = ("inpaint_random", "inpaint_block", "denoise", "superres", "compressed")


def make_task(task: str, rng_key: PRNGKey | None = None) -> Array:
    """The forward operator of one of :data:`TASKS` (fixed key by default)."""
    key = jax.random.key(0) if rng_key is None else rng_key
    if task == "inpaint_random":
        return inpainting_operator(random_mask(key, 0.5))
    if task == "inpaint_block":
        return inpainting_operator(block_mask())
    if task == "denoise":
        return denoising_operator()
    if task == "superres":
        return superresolution_operator(2)
    if task == "compressed":
        return compressed_sensing_operator(key, 16)
    raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
