"""Adapters from what trained diffusion models ship to an OU score.

An :math:`\\varepsilon`-predictor with a DDPM / VP schedule, an :math:`x_0`-denoiser,
a VE score or an EDM denoiser becomes ``score_fn(x, t) = ∇_x log p_t(x)`` in OU time
(:math:`X_t = e^{-t} X_0 + \\sqrt{1 - e^{-2t}}\\, Z`), for one unbatched ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from numpyro_almc.path.ou import as_float as _as_float
from numpyro_almc.path.ou import ou_coefficients
from numpyro_almc.scores.exact import _float_dtype
from numpyro_almc.types import Array, ArrayLike

__all__ = [
    "CosineVPSchedule",
    "DiscreteVPSchedule",
    "LinearVPSchedule",
    "score_from_edm_denoiser",
    "score_from_eps",
    "score_from_ve",
    "score_from_x0",
]

ScoreFn = Callable[[Array, ArrayLike], Array]

# ---------------------------------------------------------------------------
# Noise schedules of epsilon-prediction networks
# ---------------------------------------------------------------------------


class DiscreteVPSchedule:
    """DDPM schedule given by its grid of :math:`\\bar\\alpha_k`.

    The network is called as ``eps_fn(x, k)`` with an integer timestep ``k``.
    Step ``k`` sits at OU time :math:`t_k = -\\tfrac12 \\log \\bar\\alpha_k`. For
    an arbitrary OU time ``t`` the nearest grid step (in OU time) is used,
    together with *its* :math:`\\bar\\alpha_k`, so the score is the network's
    score at :math:`t_k`. To avoid this rounding, align the ALMC time grid
    with :meth:`ou_times`.

    Parameters
    ----------
    alphas_cumprod
        Shape ``(num_steps,)``, strictly between 0 and 1 and non-increasing
        (e.g. ``jnp.cumprod(1 - betas)``). A leading ``1.0`` (as some code bases
        prepend) must be dropped: it is OU time 0, where the score of a data
        distribution is not defined.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> betas = jnp.linspace(1e-4, 0.02, 1000)
    >>> schedule = DiscreteVPSchedule(jnp.cumprod(1 - betas))
    >>> int(schedule.model_time(schedule.ou_times()[10]))
    10
    """

    def __init__(self, alphas_cumprod: ArrayLike):
        try:
            values = np.asarray(alphas_cumprod)
        except Exception as err:  # a tracer: validation needs concrete values
            raise TypeError(
                "DiscreteVPSchedule needs a concrete `alphas_cumprod` array; build "
                "the schedule outside jit."
            ) from err
        if values.ndim != 1 or values.shape[0] < 1:
            raise ValueError(
                "DiscreteVPSchedule: `alphas_cumprod` must be a non-empty 1-D "
                f"array, got shape {values.shape}."
            )
        if not np.all((values > 0) & (values < 1)):
            raise ValueError(
                "DiscreteVPSchedule: every `alphas_cumprod` value must lie strictly "
                "in (0, 1); drop a leading 1.0 (OU time 0) and any trailing 0."
            )
        if np.any(np.diff(values) > 0):
            raise ValueError(
                "DiscreteVPSchedule: `alphas_cumprod` must be non-increasing "
                "(timestep 0 = least noise); reverse it if it is increasing."
            )
        self.alphas_cumprod = jnp.asarray(alphas_cumprod)
        # float64 numpy here is deliberate: the grid is cast to the dtype of x
        # at call time.
        self._ou_times = -0.5 * np.log(values)
        self._one_minus = -np.expm1(np.log(values))

    @property
    def num_steps(self) -> int:
        """Number of grid steps."""
        return int(self.alphas_cumprod.shape[0])

    def ou_times(self) -> Array:
        """OU times :math:`t_k = -\\tfrac12\\log\\bar\\alpha_k`, increasing in ``k``."""
        return jnp.asarray(self._ou_times)

    def model_time(self, t: ArrayLike) -> Array:
        """The integer step ``k`` (int32) nearest to OU time ``t``."""
        grid = jnp.asarray(self._ou_times, dtype=_as_float(t).dtype)
        return jnp.argmin(jnp.abs(grid - t)).astype(jnp.int32)

    def noise_variance(self, t: ArrayLike) -> Array:
        """:math:`1 - \\bar\\alpha_k` of the step used for OU time ``t``."""
        return jnp.asarray(self._one_minus)[self.model_time(t)]

    def __repr__(self) -> str:
        return f"DiscreteVPSchedule(num_steps={self.num_steps})"


class LinearVPSchedule:
    """Continuous VP-SDE with linear :math:`\\beta(s)` (Song et al. 2021).

    .. math::

        \\bar\\alpha(s) = \\exp\\bigl(-\\beta_{\\min} s
        - \\tfrac12(\\beta_{\\max} - \\beta_{\\min}) s^2\\bigr), \\quad s \\in [0, 1].

    The network is called as ``eps_fn(x, s)``. Setting
    :math:`\\bar\\alpha(s) = e^{-2t}` and solving the quadratic gives
    :math:`s(t) = 4t / (\\beta_{\\min} + \\sqrt{\\beta_{\\min}^2 +
    4(\\beta_{\\max} - \\beta_{\\min}) t})` (the cancellation-free root).
    OU times beyond :attr:`max_ou_time` map to ``s > 1``, outside the range the
    network was trained on: keep the ALMC start time below it.

    Parameters
    ----------
    beta_min
        ``β_min``, the usual ``0.1`` by default.
    beta_max
        ``β_max``, the usual ``20.0`` by default.

    Examples
    --------
    >>> schedule = LinearVPSchedule()
    >>> round(float(schedule.model_time(schedule.max_ou_time)), 6)
    1.0
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (0 <= beta_min <= beta_max and beta_max > 0):
            raise ValueError(
                "LinearVPSchedule: need 0 <= beta_min <= beta_max and beta_max > 0, "
                f"got beta_min={beta_min}, beta_max={beta_max}."
            )
        self.beta_min = beta_min
        self.beta_max = beta_max

    @property
    def max_ou_time(self) -> float:
        """OU time of ``s = 1``: :math:`(\\beta_{\\min} + \\beta_{\\max}) / 4`."""
        return 0.25 * (self.beta_min + self.beta_max)

    def model_time(self, t: ArrayLike) -> Array:
        """Continuous time ``s`` with :math:`\\bar\\alpha(s) = e^{-2t}`."""
        t = _as_float(t)
        slope = self.beta_max - self.beta_min
        return 4 * t / (self.beta_min + jnp.sqrt(self.beta_min**2 + 4 * slope * t))

    def noise_variance(self, t: ArrayLike) -> Array:
        """:math:`1 - \\bar\\alpha = 1 - e^{-2t}` (exact, as ``s`` is inverted)."""
        return ou_coefficients(t)[1]

    def __repr__(self) -> str:
        return f"LinearVPSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineVPSchedule:
    """Continuous cosine schedule of Nichol & Dhariwal (2021, arXiv 2102.09672).

    .. math::

        \\bar\\alpha(u) = \\frac{f(u)}{f(0)}, \\quad
        f(u) = \\cos^2\\Bigl(\\frac{u + s}{1 + s}\\,\\frac{\\pi}{2}\\Bigr),
        \\quad u \\in [0, 1].

    The network is called as ``eps_fn(x, u)``. Inverting
    :math:`\\bar\\alpha(u) = e^{-2t}`:
    :math:`u(t) = \\tfrac{2(1+s)}{\\pi}\\arccos\\bigl(e^{-t}\\cos\\tfrac{\\pi s}{2(1+s)}
    \\bigr) - s`, evaluated as an ``arctan2`` for accuracy at small ``t``; it
    stays in ``[0, 1)`` for every finite ``t``. (The discrete DDPM version clips
    :math:`\\beta` at 0.999; use :class:`DiscreteVPSchedule` to reproduce that
    exactly.)

    Parameters
    ----------
    s
        Offset, ``0.008`` by default.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> schedule = CosineVPSchedule()
    >>> round(abs(float(schedule.model_time(0.0))), 6)  # t = 0 is u = 0
    0.0
    >>> round(float(schedule.model_time(jnp.inf)), 6)  # pure noise is u = 1
    1.0
    """

    def __init__(self, s: float = 0.008):
        s = float(s)
        if not s >= 0:
            raise ValueError(f"CosineVPSchedule: need s >= 0, got s={s}.")
        self.s = s

    def model_time(self, t: ArrayLike) -> Array:
        """Continuous time ``u`` with :math:`\\bar\\alpha(u) = e^{-2t}`."""
        s = self.s
        theta0 = 0.5 * math.pi * s / (1 + s)
        cos0, sin0 = math.cos(theta0), math.sin(theta0)
        alpha, sigma2 = ou_coefficients(t)
        # arccos(alpha cos0) is ill-conditioned for small t (float32 loses
        # ~1e-5 there); the arctan2 form with sin^2 = sin0^2 + cos0^2 sigma2 is
        # exact in exact arithmetic and well-conditioned.
        theta = jnp.arctan2(jnp.sqrt(sin0**2 + cos0**2 * sigma2), alpha * cos0)
        return (2 * (1 + s) / math.pi) * theta - s

    def noise_variance(self, t: ArrayLike) -> Array:
        """:math:`1 - \\bar\\alpha = 1 - e^{-2t}` (exact, as ``u`` is inverted)."""
        return ou_coefficients(t)[1]

    def __repr__(self) -> str:
        return f"CosineVPSchedule(s={self.s})"


_Schedule = DiscreteVPSchedule | LinearVPSchedule | CosineVPSchedule


# ---------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------


def score_from_eps(eps_fn: Callable[[Array, Array], Array], schedule) -> ScoreFn:
    """OU score from an :math:`\\varepsilon`-prediction network.

    .. math::

        \\nabla \\log p_t(x) = -\\frac{\\varepsilon(x, \\tau(t))}
        {\\sqrt{1 - \\bar\\alpha(\\tau(t))}},

    where :math:`\\tau(t)` is the network's own time (``schedule.model_time``).

    Parameters
    ----------
    eps_fn
        ``eps_fn(x, model_time) -> eps`` for one unbatched ``x``.
    schedule
        :class:`DiscreteVPSchedule`, :class:`LinearVPSchedule` or
        :class:`CosineVPSchedule`.

    Returns
    -------
    score_fn
        ``score_fn(x, t)`` in OU time, of the dtype of ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> schedule = DiscreteVPSchedule(jnp.cumprod(1 - jnp.linspace(1e-4, 0.02, 1000)))
    >>> def eps_fn(x, k):  # exact eps of a N(0, I) prior: sqrt(1 - abar_k) x
    ...     return jnp.sqrt(1 - schedule.alphas_cumprod[k]) * x
    >>> score_fn = score_from_eps(eps_fn, schedule)
    >>> score_fn(jnp.array([2.0, -1.0]), 0.3)  # the score of N(0, I) is -x
    Array([-2.,  1.], dtype=float32)
    """
    if not callable(eps_fn):
        raise TypeError(
            f"score_from_eps: `eps_fn` must be a callable eps_fn(x, t), got "
            f"{type(eps_fn).__name__}."
        )
    if not isinstance(schedule, _Schedule):
        raise TypeError(
            "score_from_eps: `schedule` must be a DiscreteVPSchedule, "
            f"LinearVPSchedule or CosineVPSchedule, got {type(schedule).__name__}."
        )

    def score_fn(x: Array, t: ArrayLike) -> Array:
        x = jnp.asarray(x)
        dtype = _float_dtype(x)
        t = jnp.asarray(t, dtype=dtype)
        eps = eps_fn(x, schedule.model_time(t))
        sigma2 = jnp.asarray(schedule.noise_variance(t), dtype=dtype)
        return (-eps / jnp.sqrt(sigma2)).astype(dtype)

    return score_fn


def score_from_x0(denoiser: Callable[[Array, Array], Array]) -> ScoreFn:
    """OU score from an :math:`x_0`-predictor (posterior-mean denoiser).

    By Tweedie's formula, with :math:`D(x, t) \\approx E[X_0 \\mid X_t = x]`,

    .. math::

        \\nabla \\log p_t(x) = \\frac{e^{-t} D(x, t) - x}{1 - e^{-2t}}.

    Parameters
    ----------
    denoiser
        ``denoiser(x, t) -> x0_hat`` in OU time ``t``.

    Returns
    -------
    score_fn
        ``score_fn(x, t)``, of the dtype of ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score_fn = score_from_x0(lambda x, t: jnp.zeros_like(x))  # X_0 = 0
    >>> round(float(score_fn(jnp.array([1.0]), 1.0)[0]), 4)  # p_t = N(0, 1 - e^{-2})
    -1.1565
    """
    if not callable(denoiser):
        raise TypeError(
            f"score_from_x0: `denoiser` must be a callable denoiser(x, t), got "
            f"{type(denoiser).__name__}."
        )

    def score_fn(x: Array, t: ArrayLike) -> Array:
        x = jnp.asarray(x)
        dtype = _float_dtype(x)
        alpha, sigma2 = ou_coefficients(jnp.asarray(t, dtype=dtype))
        x0 = denoiser(x, jnp.asarray(t, dtype=dtype))
        return ((alpha * x0 - x) / sigma2).astype(dtype)

    return score_fn


def _ve_sigma_and_scale(t: Array) -> tuple[Array, Array]:
    """:math:`\\sigma = \\sqrt{e^{2t} - 1}` and the scale :math:`e^{t}`."""
    return jnp.sqrt(jnp.expm1(2 * t)), jnp.exp(t)


def score_from_ve(score_ve: Callable[[Array, Array], Array]) -> ScoreFn:
    """OU score from a variance-exploding score :math:`s(z, \\sigma)`.

    :math:`X_t = e^{-t}(X_0 + \\sigma Z)` with :math:`\\sigma = \\sqrt{e^{2t}-1}`,
    hence

    .. math::

        \\nabla \\log p_t(x) = e^{t}\\, s_{VE}(e^{t} x, \\sigma).

    Parameters
    ----------
    score_ve
        ``score_ve(z, sigma) -> grad_z log p^{VE}_sigma(z)``.

    Returns
    -------
    score_fn
        ``score_fn(x, t)``, of the dtype of ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score_fn = score_from_ve(lambda z, sigma: -z / (1 + sigma**2))
    >>> score_fn(jnp.array([1.0]), 0.7).round(4)  # N(0, I) in both conventions
    Array([-1.], dtype=float32)
    """
    if not callable(score_ve):
        raise TypeError(
            f"score_from_ve: `score_ve` must be a callable score_ve(x, t), got "
            f"{type(score_ve).__name__}."
        )

    def score_fn(x: Array, t: ArrayLike) -> Array:
        x = jnp.asarray(x)
        dtype = _float_dtype(x)
        sigma, scale = _ve_sigma_and_scale(jnp.asarray(t, dtype=dtype))
        return (scale * score_ve(scale * x, sigma)).astype(dtype)

    return score_fn


def score_from_edm_denoiser(denoiser: Callable[[Array, Array], Array]) -> ScoreFn:
    """OU score from an EDM denoiser :math:`D(z, \\sigma)` (Karras et al. 2022).

    With :math:`D(z, \\sigma) \\approx E[X_0 \\mid X_0 + \\sigma Z = z]`,
    :math:`s_{VE}(z, \\sigma) = (D(z, \\sigma) - z)/\\sigma^2`, and with
    :math:`z = e^{t}x`, :math:`\\sigma = \\sqrt{e^{2t}-1}`,

    .. math::

        \\nabla \\log p_t(x) = e^{t}\\,\\frac{D(e^{t}x, \\sigma) - e^{t}x}{\\sigma^2}
        = \\frac{e^{-t} D(e^{t}x, \\sigma) - x}{1 - e^{-2t}}.

    The second form is used: it has no :math:`e^{2t}` overflow at large ``t``.

    Parameters
    ----------
    denoiser
        ``denoiser(z, sigma) -> x0_hat`` (EDM preconditioning included).

    Returns
    -------
    score_fn
        ``score_fn(x, t)``, of the dtype of ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score_fn = score_from_edm_denoiser(lambda z, sigma: z / (1 + sigma**2))
    >>> score_fn(jnp.array([1.0]), 0.7).round(4)  # N(0, I) in both conventions
    Array([-1.], dtype=float32)
    """
    if not callable(denoiser):
        raise TypeError(
            "score_from_edm_denoiser: `denoiser` must be a callable denoiser(x, t), "
            f"got {type(denoiser).__name__}."
        )

    def score_fn(x: Array, t: ArrayLike) -> Array:
        x = jnp.asarray(x)
        dtype = _float_dtype(x)
        t = jnp.asarray(t, dtype=dtype)
        sigma, scale = _ve_sigma_and_scale(t)
        alpha, sigma2 = ou_coefficients(t)
        x0 = denoiser(scale * x, sigma)
        return ((alpha * x0 - x) / sigma2).astype(dtype)

    return score_fn
