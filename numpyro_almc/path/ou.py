r"""The Ornstein–Uhlenbeck quantities of the path, one definition each.

The forward (noising) process is :math:`X_t = e^{-t} X_0 + \sigma_t Z` with
:math:`\sigma_t^2 = 1 - e^{-2t}` (DDPM's :math:`\bar\alpha = e^{-2t}`). Every other
module imports these instead of writing the formulas out.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from numpyro_almc.types import Array, ArrayLike

__all__ = [
    "ou_coefficients",
    "ou_noise_variance",
    "half_log_snr",
    "time_from_half_log_snr",
]


def as_float(a: ArrayLike) -> Array:
    """``jnp.asarray`` that turns integers into the default float dtype."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def _xp(t):
    """NumPy for host arrays (schedule building), jax.numpy otherwise."""
    return np if isinstance(t, np.ndarray | float | int) else jnp


def ou_noise_variance(t):
    r"""``σ_t² = 1 − e^{−2t}``, the variance of the noise the OU process adds.

    Written as ``-expm1(-2t)``, which keeps full relative precision for small ``t``.
    A NumPy array (or a Python number) gives NumPy, anything else jax.numpy.

    Examples
    --------
    >>> round(float(ou_noise_variance(1.0)), 4)
    0.8647
    """
    xp = _xp(t)
    return -xp.expm1(-2.0 * t)


def ou_coefficients(t: ArrayLike) -> tuple[Array, Array]:
    r"""Mean scale and variance of the OU transition at time ``t``.

    .. math::

        \alpha_t = e^{-t}, \qquad \sigma_t^2 = 1 - e^{-2t} = -\mathrm{expm1}(-2t).

    Parameters
    ----------
    t
        OU time (scalar or array, ``t >= 0``; ``jnp.inf`` gives ``(0, 1)``).

    Returns
    -------
    alpha, sigma2
        Arrays of the dtype of ``t`` (a Python float gives the default float).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> alpha, sigma2 = ou_coefficients(jnp.float32(1e-4))
    >>> alpha.dtype, bool(jnp.isclose(sigma2, 2e-4, rtol=1e-3))
    (dtype('float32'), True)
    """
    t = as_float(t)
    return jnp.exp(-t), ou_noise_variance(t)


def half_log_snr(t):
    r"""``λ_t = log(α_t / σ_t) = -t - ½ log(1 − e^{−2t})``, half the log-SNR.

    Examples
    --------
    >>> t = np.array([0.1, 1.0])
    >>> bool(np.allclose(time_from_half_log_snr(half_log_snr(t)), t))
    True
    """
    xp = _xp(t)
    # -½ log(e^{2t} − 1), written so that neither small nor large t loses precision.
    return -t - 0.5 * xp.log(ou_noise_variance(t))


def time_from_half_log_snr(lam):
    r"""The inverse of :func:`half_log_snr`: ``t = ½ softplus(−2λ)``."""
    xp = _xp(lam)
    return 0.5 * xp.logaddexp(0.0, -2.0 * lam)
