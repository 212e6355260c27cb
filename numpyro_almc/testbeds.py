"""Posterior-sampling problems with exact answers, and metrics to score samplers.

Every problem has a Gaussian-mixture prior :math:`p_0 = \\sum_k w_k N(m_k, C_k)`
(a single Gaussian is ``K = 1``) and a linear-Gaussian measurement
:math:`y = A x + \\eta`, :math:`\\eta \\sim N(0, \\sigma_y^2 I)`. Along the OU
path :math:`p_t` stays a mixture,
:math:`p_t = \\sum_k w_k N(e^{-t} m_k,\\, e^{-2t} C_k + (1 - e^{-2t}) I)`, so the
tilted targets :math:`\\mu_t \\propto p_t(x)\\, N(y; Ax, \\sigma_y^2 I)` of the
annealing path, their normalising constants and the exact posterior are all
available in closed form (:meth:`LinearGaussianProblem.posterior`).

Problems
--------
* :func:`gaussian_problem`, :func:`mixture_problem`: from explicit parameters;
* :func:`bars_problem`: the 2-D "vertical bars" of Parulekar et al. (2025);
* :func:`conflict_problem`: the measurement favours the low-prior mode;
* :func:`gmm25_problem`: the 25-component benchmark of MCGdiff
  (Cardoso et al. 2023).

References
----------
.. [1] A. Parulekar, L. Rout, K. Shanmugam, S. Shakkottai. Efficient Approximate
   Posterior Sampling with Annealed Langevin Monte Carlo. arXiv:2508.07631.
.. [2] G. Cardoso, Y. Janati El Idrissi, S. Le Corff, E. Moulines. Monte Carlo
   guided Diffusion for Bayesian linear inverse problems. arXiv:2308.07983.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc.scores.exact import (
    gaussian_mixture_log_density,
    gaussian_mixture_score,
    ou_coefficients,
)
from numpyro_almc.types import Array, ArrayLike, PRNGKey

__all__ = [
    "GaussianMixture",
    "LinearGaussianProblem",
    "bars_problem",
    "conflict_problem",
    "cov_error",
    "gaussian_problem",
    "gmm25_problem",
    "max_sliced_wasserstein",
    "mean_error",
    "mixture_cov",
    "mixture_log_prob",
    "mixture_mean",
    "mixture_problem",
    "mixture_responsibilities",
    "mixture_sample",
    "mode_weight_error",
    "mode_weights",
    "monte_carlo_floor",
    "sliced_wasserstein",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# Gaussian mixtures
# ---------------------------------------------------------------------------


class GaussianMixture(NamedTuple):
    """A Gaussian mixture with full covariances.

    Attributes
    ----------
    weights
        Shape ``(K,)``, summing to one.
    means
        Shape ``(K, d)``.
    covs
        Shape ``(K, d, d)``, symmetric positive semi-definite.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> mixture_sample(jax.random.key(0), m, 5).shape
    (5, 1)
    """

    weights: Array
    means: Array
    covs: Array


@jax.jit
def _component_log_probs(mixture: GaussianMixture, x: Array) -> Array:
    """``log w_k + log N(x; m_k, C_k)`` for ``x`` of shape (n, d): (n, K)."""
    d = mixture.means.shape[-1]
    chol = jnp.linalg.cholesky(mixture.covs)  # (K, d, d)
    diff = x[:, None, :] - mixture.means[None]  # (n, K, d)
    sol = jax.vmap(
        lambda c, r: jax.scipy.linalg.solve_triangular(c, r.T, lower=True).T,
        in_axes=(0, 1),
        out_axes=1,
    )(chol, diff)  # (n, K, d): L_k^{-1}(x - m_k)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    log_norm = -0.5 * (jnp.sum(sol**2, -1) + logdet + d * _LOG_2PI)
    return jnp.log(mixture.weights) + log_norm


def _as_batch(x: ArrayLike) -> tuple[Array, bool]:
    x = jnp.asarray(x)
    return (x[None], True) if x.ndim == 1 else (x, False)


def mixture_log_prob(mixture: GaussianMixture, x: ArrayLike) -> Array:
    """Log density of ``mixture`` at ``x`` of shape ``(d,)`` or ``(n, d)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> mix = GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.eye(2)[None])
    >>> round(float(mixture_log_prob(mix, jnp.zeros(2))), 4)  # -log(2 pi)
    -1.8379
    """
    xb, single = _as_batch(x)
    out = jax.scipy.special.logsumexp(_component_log_probs(mixture, xb), axis=-1)
    return out[0] if single else out


def mixture_responsibilities(mixture: GaussianMixture, x: ArrayLike) -> Array:
    """Posterior component probabilities, shape ``(n, K)`` (``(K,)`` for one x).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> mix = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-5.0], [5.0]]),
    ...                       jnp.ones((2, 1, 1)))
    >>> mixture_responsibilities(mix, jnp.array([[4.0]])).round(3)
    Array([[0., 1.]], dtype=float32)
    """
    xb, single = _as_batch(x)
    out = jax.nn.softmax(_component_log_probs(mixture, xb), axis=-1)
    return out[0] if single else out


@functools.partial(jax.jit, static_argnames="n")
def mixture_sample(key: PRNGKey, mixture: GaussianMixture, n: int) -> Array:
    """Exact i.i.d. draws, shape ``(n, d)``.

    Component covariances are factorised by ``eigh`` (negative round-off
    eigenvalues clipped at zero), so near-singular posteriors still sample.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> mix = GaussianMixture(jnp.ones(1), jnp.zeros((1, 3)), jnp.eye(3)[None])
    >>> mixture_sample(jax.random.key(0), mix, 5).shape
    (5, 3)
    """
    key_cat, key_normal = jax.random.split(key)
    weights, means, covs = mixture
    comp = jax.random.categorical(key_cat, jnp.log(weights), shape=(n,))
    evals, evecs = jnp.linalg.eigh(covs)
    roots = evecs * jnp.sqrt(jnp.clip(evals, 0.0))[:, None, :]  # (K, d, d)
    z = jax.random.normal(key_normal, (n, means.shape[-1]), dtype=means.dtype)
    return means[comp] + jnp.einsum("nij,nj->ni", roots[comp], z)


def mixture_mean(mixture: GaussianMixture) -> Array:
    """Mean :math:`\\sum_k w_k m_k`, shape ``(d,)``.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.25, 0.75]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> mixture_mean(m)
    Array([0.5], dtype=float32)
    """
    return mixture.weights @ mixture.means


def mixture_cov(mixture: GaussianMixture) -> Array:
    """Covariance :math:`\\sum_k w_k (C_k + m_k m_k^T) - m m^T`, shape ``(d, d)``.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> mixture_cov(m)
    Array([[1.25]], dtype=float32)
    """
    mean = mixture_mean(mixture)
    centred = mixture.means - mean
    second = mixture.covs + centred[:, :, None] * centred[:, None, :]
    return jnp.einsum("k,kij->ij", mixture.weights, second)


# ---------------------------------------------------------------------------
# The problem
# ---------------------------------------------------------------------------


def _is_concrete_inf(t: ArrayLike) -> bool:
    """``True`` if ``t`` is a concrete (not traced) infinite scalar."""
    if isinstance(t, jax.core.Tracer):
        return False
    try:
        return bool(np.isinf(np.asarray(t)))
    except (TypeError, ValueError):
        return False


@jax.jit
def _noise_mixture(mixture: GaussianMixture, t: Array) -> GaussianMixture:
    """The OU-noised mixture at time ``t``."""
    alpha, sigma2 = ou_coefficients(t)
    eye = jnp.eye(mixture.means.shape[-1], dtype=mixture.means.dtype)
    return GaussianMixture(
        mixture.weights, alpha * mixture.means, alpha**2 * mixture.covs + sigma2 * eye
    )


@jax.jit
def _condition(prior: GaussianMixture, A: Array, y: Array, noise_std: Array):
    """Condition each component of ``prior`` on ``y = A x + N(0, noise_std^2 I)``.

    Returns ``(weights, post_means, post_covs, log_marg)`` with ``log_marg[k]
    = log N(y; A mu_k, G_k)``.
    """
    means, covs = prior.means, prior.covs
    eye_y = jnp.eye(y.shape[-1], dtype=means.dtype)
    cross = covs @ A.T  # (K, d, dy)
    gram = A @ cross + noise_std**2 * eye_y  # (K, dy, dy)
    chol = jnp.linalg.cholesky(gram)
    resid = y - means @ A.T  # (K, dy)

    def solve(c, b):
        return jax.scipy.linalg.cho_solve((c, True), b)

    gain_t = jax.vmap(solve)(chol, jnp.swapaxes(cross, -1, -2))  # G^-1 A S
    post_means = means + jnp.einsum("kdy,ky->kd", cross, jax.vmap(solve)(chol, resid))
    post_covs = covs - cross @ gain_t
    post_covs = 0.5 * (post_covs + jnp.swapaxes(post_covs, -1, -2))
    white = jax.vmap(lambda c, r: jax.scipy.linalg.solve_triangular(c, r, lower=True))(
        chol, resid
    )
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    log_marg = -0.5 * (
        jnp.sum(white**2, -1) + logdet + y.shape[-1] * _LOG_2PI
    )  # log N(y; A mu_k, G_k)
    return prior.weights, post_means, post_covs, log_marg


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class LinearGaussianProblem:
    """Gaussian-mixture prior, linear-Gaussian likelihood, exact posteriors.

    .. math::

        p_0 = \\sum_{k=1}^K w_k N(m_k, C_k), \\qquad
        y \\mid x \\sim N(A x, \\sigma_y^2 I).

    The instance is a JAX pytree (all fields are leaves), so it can be passed
    through :func:`jax.jit`; all methods are jit-friendly.

    Attributes
    ----------
    weights
        ``(K,)`` prior weights (summing to one).
    means
        ``(K, d)`` prior means.
    covs
        ``(K, d, d)`` prior covariances.
    A
        ``(dy, d)`` forward operator.
    y
        ``(dy,)`` observation.
    noise_std
        Scalar :math:`\\sigma_y > 0`.

    Examples
    --------
    >>> problem = bars_problem()
    >>> problem.dim, problem.obs_dim, problem.num_components
    (2, 1, 4)
    >>> problem.score_fn(jnp.zeros(2), 0.5).shape   # exact score of p_t
    (2,)
    >>> exact = problem.posterior(0.02)   # mu_tau, a GaussianMixture
    >>> exact.means.shape
    (4, 2)
    """

    weights: Array
    means: Array
    covs: Array
    A: Array
    y: Array
    noise_std: Array

    @property
    def dim(self) -> int:
        """Dimension ``d`` of ``x``."""
        return self.means.shape[-1]

    @property
    def obs_dim(self) -> int:
        """Dimension ``dy`` of ``y``."""
        return self.y.shape[-1]

    @property
    def num_components(self) -> int:
        """Number ``K`` of prior components."""
        return self.weights.shape[-1]

    # -- prior ---------------------------------------------------------------

    def score_fn(self, x: Array, t: ArrayLike) -> Array:
        """Exact OU-noised prior score :math:`\\nabla \\log p_t(x)` for one ``x``."""
        return gaussian_mixture_score(self.weights, self.means, self.covs)(x, t)

    def log_prior_density(self, x: Array, t: ArrayLike = 0.0) -> Array:
        """Exact :math:`\\log p_t(x)` for one ``x``."""
        return gaussian_mixture_log_density(self.weights, self.means, self.covs)(x, t)

    def noised_prior(self, t: ArrayLike) -> GaussianMixture:
        """:math:`p_t` as a :class:`GaussianMixture` (``t = inf``: ``N(0, I)``)."""
        if _is_concrete_inf(t):
            dtype = self.means.dtype
            return GaussianMixture(
                jnp.ones((1,), dtype),
                jnp.zeros((1, self.dim), dtype),
                jnp.eye(self.dim, dtype=dtype)[None],
            )
        return _noise_mixture(
            GaussianMixture(self.weights, self.means, self.covs),
            jnp.asarray(t, dtype=self.means.dtype),
        )

    # -- likelihood ----------------------------------------------------------

    def loglikelihood_fn(self, x: Array) -> Array:
        """:math:`\\log N(y; A x, \\sigma_y^2 I)`, fully normalised, for one ``x``."""
        resid = self.y - self.A @ x
        var = self.noise_std**2
        return -0.5 * (
            jnp.sum(resid**2) / var + self.obs_dim * jnp.log(2 * jnp.pi * var)
        )

    # -- tilted targets --------------------------------------------------------

    def _condition(self, t: ArrayLike):
        """Per-component conditioning of :math:`p_t` on ``y`` (Kalman form).

        With :math:`S_k` the component covariance of :math:`p_t`,
        :math:`G_k = A S_k A^T + \\sigma_y^2 I`, the posterior component is
        :math:`N(\\mu_k + S_k A^T G_k^{-1}(y - A\\mu_k),\\, S_k - S_k A^T G_k^{-1}
        A S_k)` and the evidence term is :math:`N(y; A\\mu_k, G_k)`. This form
        never inverts :math:`S_k`, so singular prior covariances are fine.
        """
        return _condition(self.noised_prior(t), self.A, self.y, self.noise_std)

    def posterior(self, t: ArrayLike = 0.0) -> GaussianMixture:
        """Exact :math:`\\mu_t \\propto p_t(x)\\, N(y; Ax, \\sigma_y^2 I)`.

        ``t = 0`` is the true posterior; ``t = jnp.inf`` the warm-start target
        :math:`N(0, I)\\, N(y; Ax, \\sigma_y^2 I)` (a single Gaussian).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> problem = gaussian_problem(jnp.zeros(1), 1.0, jnp.ones((1, 1)),
        ...                            jnp.array([2.0]), 1.0)
        >>> post = problem.posterior()
        >>> post.means.round(4), post.covs.round(4)
        (Array([[1.]], dtype=float32), Array([[[0.5]]], dtype=float32))
        """
        weights, means, covs, log_marg = self._condition(t)
        log_w = jnp.log(weights) + log_marg
        return GaussianMixture(jax.nn.softmax(log_w), means, covs)

    def log_evidence(self, t: ArrayLike = 0.0) -> Array:
        """:math:`\\log \\int p_t(x)\\, N(y; Ax, \\sigma_y^2 I)\\, dx`, exactly."""
        weights, _, _, log_marg = self._condition(t)
        return jax.scipy.special.logsumexp(jnp.log(weights) + log_marg)

    # -- the noised-likelihood path (numpyro_almc.noised_gaussian_likelihood) ----

    def _condition_noised(self, t: ArrayLike):
        """Conditioning of :math:`p_t` on :math:`y \\sim N(e^{t} A x, \\Sigma_t)`,
        :math:`\\Sigma_t = \\sigma_y^2 I + (e^{2t} - 1) A A^T`, by whitening with
        :math:`\\Sigma_t = L L^T`; returns it and :math:`\\log \\det L`."""
        dtype = self.means.dtype
        t = jnp.asarray(t, dtype)
        eye = jnp.eye(self.obs_dim, dtype=dtype)
        cov = self.noise_std**2 * eye + jnp.expm1(2 * t) * (self.A @ self.A.T)
        chol = jnp.linalg.cholesky(cov)
        white_A = jax.scipy.linalg.solve_triangular(
            chol, jnp.exp(t) * self.A, lower=True
        )
        white_y = jax.scipy.linalg.solve_triangular(chol, self.y, lower=True)
        logdet = jnp.sum(jnp.log(jnp.diagonal(chol)))
        cond = _condition(self.noised_prior(t), white_A, white_y, jnp.ones((), dtype))
        return cond, logdet

    def noised_path_posterior(self, t: ArrayLike) -> GaussianMixture:
        """Exact target at ``t`` of the noised-likelihood path,
        :math:`\\propto p_t(x)\\, N(y; e^{t} A x, \\Sigma_t)` (finite ``t``).

        Examples
        --------
        >>> problem = bars_problem()
        >>> post = problem.noised_path_posterior(0.0)   # = the true posterior
        >>> bool(jnp.allclose(post.weights, problem.posterior(0.0).weights,
        ...                   atol=1e-5))
        True
        """
        (weights, means, covs, log_marg), _ = self._condition_noised(t)
        return GaussianMixture(jax.nn.softmax(jnp.log(weights) + log_marg), means, covs)

    def noised_path_log_evidence(self, t: ArrayLike) -> Array:
        """:math:`\\log \\int p_t(x)\\, N(y; e^{t} A x, \\Sigma_t)\\, dx`, exactly."""
        (weights, _, _, log_marg), logdet = self._condition_noised(t)
        return jax.scipy.special.logsumexp(jnp.log(weights) + log_marg) - logdet


# ---------------------------------------------------------------------------
# Constructors
# ---------------------------------------------------------------------------


def _full_covs(covs: Array, num: int, dim: int) -> Array:
    if covs.shape == (num,):
        return covs[:, None, None] * jnp.eye(dim, dtype=covs.dtype)
    if covs.shape == (num, dim):
        return jax.vmap(jnp.diag)(covs)
    if covs.shape == (num, dim, dim):
        return 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    raise ValueError(
        f"mixture_problem: `covs` has shape {covs.shape}; with K={num}, d={dim} pass "
        f"shape {(num,)} (isotropic), {(num, dim)} (diagonal) or {(num, dim, dim)} "
        "(full)."
    )


def mixture_problem(
    weights: ArrayLike,
    means: ArrayLike,
    covs: ArrayLike,
    A: ArrayLike,
    y: ArrayLike,
    noise_std: ArrayLike,
) -> LinearGaussianProblem:
    """A problem with a Gaussian-mixture prior.

    Parameters
    ----------
    weights
        ``(K,)`` positive weights (normalised here).
    means
        ``(K, d)``.
    covs
        ``(K,)`` isotropic, ``(K, d)`` diagonal or ``(K, d, d)`` full; stored
        full.
    A
        ``(dy, d)`` forward operator.
    y
        ``(dy,)`` observation.
    noise_std
        Positive scalar.

    Raises
    ------
    ValueError
        On inconsistent shapes or a non-positive ``noise_std``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> problem = mixture_problem(jnp.array([1.0, 3.0]), jnp.array([[-2.0], [2.0]]),
    ...                           jnp.ones(2), jnp.ones((1, 1)), jnp.zeros(1), 0.5)
    >>> problem.weights
    Array([0.25, 0.75], dtype=float32)
    """
    weights = jnp.asarray(weights, dtype=jnp.result_type(float))
    means = jnp.asarray(means, dtype=weights.dtype)
    covs = jnp.asarray(covs, dtype=weights.dtype)
    A = jnp.asarray(A, dtype=weights.dtype)
    y = jnp.asarray(y, dtype=weights.dtype)
    noise_std = jnp.asarray(noise_std, dtype=weights.dtype)
    if weights.ndim != 1:
        raise ValueError(f"`weights` must be 1-D (K,), got shape {weights.shape}.")
    num = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != num:
        raise ValueError(
            f"`means` must have shape (K, d) with K={num}, got shape {means.shape}; "
            "flatten event shapes to vectors."
        )
    dim = means.shape[1]
    if A.ndim != 2 or A.shape[1] != dim:
        raise ValueError(
            f"`A` must have shape (dy, {dim}), got shape {A.shape}; write a single "
            "observed row as A[None, :]."
        )
    if y.shape != (A.shape[0],):
        raise ValueError(f"`y` must have shape {(A.shape[0],)}, got shape {y.shape}.")
    if noise_std.ndim != 0:
        raise ValueError("`noise_std` must be a scalar.")
    if not isinstance(noise_std, jax.core.Tracer) and not float(noise_std) > 0:
        raise ValueError(f"`noise_std` must be positive, got {float(noise_std)}.")
    return LinearGaussianProblem(
        weights / jnp.sum(weights), means, _full_covs(covs, num, dim), A, y, noise_std
    )


def gaussian_problem(
    mean: ArrayLike, cov: ArrayLike, A: ArrayLike, y: ArrayLike, noise_std: ArrayLike
) -> LinearGaussianProblem:
    """A problem with a Gaussian prior :math:`N(m, C)` (``K = 1``).

    ``cov`` is a scalar (isotropic), ``(d,)`` (diagonal) or ``(d, d)`` (full).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> problem = gaussian_problem(jnp.zeros(3), 2.0, jnp.eye(3)[:1], jnp.ones(1), 0.1)
    >>> problem.dim, problem.obs_dim, problem.num_components
    (3, 1, 1)
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov)
    if mean.ndim != 1:
        raise ValueError(f"`mean` must be 1-D (d,), got shape {mean.shape}.")
    return mixture_problem(jnp.ones(1), mean[None], cov[None], A, y, noise_std)


#: Parameters of :func:`bars_problem` (x1 centre, x2 offset, prior weight).
_BARS_CENTRES = (-3.0, -1.0, 1.0, 3.0)
_BARS_OFFSETS = (-2.0, 1.0, 0.0, 3.0)
_BARS_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
_BARS_STD = (0.15, 1.5)


def bars_problem(noise_std: float = 0.05, y: float = 2.0) -> LinearGaussianProblem:
    """The 2-D "vertical bars" example (after Parulekar et al. 2025, [1]_).

    Four vertically elongated Gaussian bars, standard deviation 0.15 in
    :math:`x_1` and 1.5 in :math:`x_2`, centred at :math:`x_1 \\in
    \\{-3, -1, 1, 3\\}` (13 standard deviations apart), with vertical offsets
    :math:`\\{-2, 1, 0, 3\\}` and prior weights :math:`\\{0.4, 0.3, 0.2, 0.1\\}`.
    Only :math:`x_2` is observed (``A = [[0, 1]]``), so the measurement cannot
    move mass between bars: it only re-weights them, by
    :math:`w_k N(y; o_k, 1.5^2 + \\sigma_y^2)`. With the default ``y = 2``
    the posterior weights are about ``(0.03, 0.58, 0.20, 0.19)``: the heaviest
    prior bar becomes the lightest. (The paper's exact parameters are not
    reproduced; these are chosen to make the re-weighting obvious.)

    Parameters
    ----------
    noise_std
        :math:`\\sigma_y`.
    y
        The observed value of :math:`x_2`.

    Examples
    --------
    >>> problem = bars_problem()
    >>> [round(float(w), 2) for w in problem.posterior().weights]
    [0.03, 0.58, 0.2, 0.19]
    """
    means = jnp.array(
        [[c, o] for c, o in zip(_BARS_CENTRES, _BARS_OFFSETS, strict=True)]
    )
    variances = jnp.array(_BARS_STD) ** 2
    covs = jnp.broadcast_to(variances, (len(_BARS_CENTRES), 2))
    return mixture_problem(
        jnp.array(_BARS_WEIGHTS),
        means,
        covs,
        jnp.array([[0.0, 1.0]]),
        jnp.array([y]),
        noise_std,
    )


def conflict_problem(
    dim: int = 2,
    prior_weight: float = 0.05,
    noise_std: float = 0.1,
    separation: float = 6.0,
    num_observed: int = 1,
) -> LinearGaussianProblem:
    """Prior and measurement disagree: the data favour the rare prior mode.

    Two unit-variance isotropic modes at :math:`\\mp (\\text{separation}/2)\\,
    e_1` with weights ``1 - prior_weight`` and ``prior_weight``. The first
    ``num_observed`` coordinates are observed, at the centre of the *rare*
    mode, :math:`y = (\\text{separation}/2, 0, \\ldots)`. Its posterior weight
    is :math:`1 / (1 + \\tfrac{1 - w}{w}\\exp(-\\tfrac{\\text{separation}^2}
    {2(1 + \\sigma_y^2)}))`, about ``1 - 3e-7`` with the defaults (and 0.99
    for ``separation = 4``). A sampler that follows the prior's mode weights
    instead of the posterior's gets it badly wrong.

    Examples
    --------
    >>> problem = conflict_problem()
    >>> bool(problem.posterior().weights[1] > 0.8)
    True
    """
    if dim < 1 or not 1 <= num_observed <= dim:
        raise ValueError(
            f"conflict_problem: need dim >= 1 and 1 <= num_observed <= dim, got "
            f"dim={dim}, num_observed={num_observed}."
        )
    if not 0 < prior_weight < 1:
        raise ValueError(f"`prior_weight` must lie in (0, 1), got {prior_weight}.")
    centre = jnp.zeros(dim).at[0].set(0.5 * separation)
    means = jnp.stack([-centre, centre])
    A = jnp.eye(num_observed, dim)
    return mixture_problem(
        jnp.array([1.0 - prior_weight, prior_weight]),
        means,
        jnp.ones(2),
        A,
        A @ centre,
        noise_std,
    )


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gmm25_arrays(key: PRNGKey, dim: int, obs_dim: int, noise_std: Array):
    """Random parts of :func:`gmm25_problem`; a NaN ``noise_std`` is drawn."""
    keys = jax.random.split(key, 6)
    grid = jnp.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], float)
    means = 8.0 * jnp.tile(grid, (1, dim // 2))
    weights = jax.random.normal(keys[0], (25,)) ** 2
    weights = weights / jnp.sum(weights)
    gauss = jax.random.normal(keys[1], (obs_dim, dim))
    u, _, vt = jnp.linalg.svd(gauss, full_matrices=False)
    singular = -jnp.sort(-jax.random.uniform(keys[2], (obs_dim,)))
    A = (u * singular) @ vt
    drawn = jax.random.uniform(keys[3]) * singular[0]
    noise_std = jnp.where(jnp.isnan(noise_std), drawn, noise_std)
    eye = jnp.broadcast_to(jnp.eye(dim), (25, dim, dim))
    x_star = mixture_sample(keys[4], GaussianMixture(weights, means, eye), 1)[0]
    y = A @ x_star + noise_std * jax.random.normal(keys[5], (obs_dim,))
    return weights, means, A, y, noise_std


def gmm25_problem(
    key: PRNGKey, dim: int = 8, obs_dim: int = 2, noise_std: float | None = None
) -> LinearGaussianProblem:
    """The 25-component Gaussian-mixture benchmark of MCGdiff [2]_.

    Prior: 25 components :math:`N(\\mu_{ij}, I_d)` with
    :math:`\\mu_{ij} = 8\\,(i, j, i, j, \\ldots, i, j)` for
    :math:`i, j \\in \\{-2, \\ldots, 2\\}`, weights :math:`\\propto \\xi_{ij}^2`
    with :math:`\\xi_{ij} \\sim N(0, 1)`. Measurement (as in the MCGdiff code):
    draw :math:`G \\sim N(0, 1)^{d_y \\times d}`, take its SVD :math:`U S V^T`,
    replace the singular values by :math:`d_y` sorted draws of
    :math:`U(0, 1)`, :math:`A = U \\tilde S V^T`; the noise scale is
    :math:`\\sigma_y = u \\max \\tilde S` with :math:`u \\sim U(0, 1)` unless
    ``noise_std`` is given; :math:`y = A x^* + \\sigma_y \\eta` with
    :math:`x^*` drawn from the prior. Deterministic given ``key``.

    Parameters
    ----------
    key
        PRNG key.
    dim
        Even dimension ``d`` (the paper uses 8, 80, 800).
    obs_dim
        ``d_y <= d`` (the paper uses 1, 2, 4).
    noise_std
        Override of the random :math:`\\sigma_y`.

    Examples
    --------
    >>> import jax
    >>> problem = gmm25_problem(jax.random.key(0), dim=8, obs_dim=2)
    >>> problem.means.shape, problem.A.shape
    ((25, 8), (2, 8))
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"gmm25_problem: `dim` must be even and >= 2, got {dim}.")
    if not 1 <= obs_dim <= dim:
        raise ValueError(f"gmm25_problem: need 1 <= obs_dim <= dim, got {obs_dim}.")
    if noise_std is not None and not float(noise_std) > 0:
        raise ValueError(f"`noise_std` must be positive, got {noise_std}.")
    weights, means, A, y, noise = _gmm25_arrays(
        key, dim, obs_dim, jnp.nan if noise_std is None else noise_std
    )
    return mixture_problem(weights, means, jnp.ones(25), A, y, noise)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _directions(key: PRNGKey, num: int, dim: int, dtype) -> Array:
    v = jax.random.normal(key, (num, dim), dtype=dtype)
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


@jax.jit
def _projected_w2_squared(x: Array, y: Array, directions: Array) -> Array:
    """Squared 1-D W2 of the projections, one per direction, shape (P,).

    Equal sample sizes compare sorted projections; otherwise both empirical
    quantile functions are evaluated on the midpoint grid of the larger set.
    """
    px = jnp.sort(x @ directions.T, axis=0)
    py = jnp.sort(y @ directions.T, axis=0)
    if px.shape[0] != py.shape[0]:
        m = max(px.shape[0], py.shape[0])
        levels = (jnp.arange(m, dtype=px.dtype) + 0.5) / m
        px = jnp.quantile(px, levels, axis=0)
        py = jnp.quantile(py, levels, axis=0)
    return jnp.mean((px - py) ** 2, axis=0)


def _check_samples(x: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"sample sets must have shapes (n, d) and (m, d), got {x.shape} and "
            f"{y.shape}."
        )
    return x, y


def sliced_wasserstein(
    key: PRNGKey, x: ArrayLike, y: ArrayLike, num_projections: int = 256
) -> Array:
    """Sliced 2-Wasserstein distance between two sample sets.

    .. math::

        SW_2(x, y) = \\Bigl(\\frac1P \\sum_{p=1}^P
        W_2^2(\\theta_p^T x, \\theta_p^T y)\\Bigr)^{1/2},

    with :math:`\\theta_p` uniform on the sphere. Sample sizes may differ
    (quantile interpolation). For a shift :math:`v` it is
    :math:`|v| / \\sqrt d`; for two exact sample sets of size ``n`` it is of
    order :math:`n^{-1/2}` (see :func:`monte_carlo_floor`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (500, 2))
    >>> float(sliced_wasserstein(jax.random.key(1), x, x))
    0.0
    """
    x, y = _check_samples(x, y)
    directions = _directions(key, num_projections, x.shape[1], x.dtype)
    return jnp.sqrt(jnp.mean(_projected_w2_squared(x, y, directions)))


def max_sliced_wasserstein(
    key: PRNGKey, x: ArrayLike, y: ArrayLike, num_projections: int = 1024
) -> Array:
    """Max-sliced 2-Wasserstein distance, maximised over random directions.

    .. math::

        \\max_{\\theta} W_2(\\theta^T x, \\theta^T y),

    approximated by the maximum over ``num_projections`` uniform directions
    plus the direction of the difference of the sample means (so a pure shift
    is found exactly). It is therefore a lower bound of the true max-sliced
    distance, tighter with more projections. (W2 here, matching
    :func:`sliced_wasserstein`; MCGdiff reports the sliced distance.)

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (500, 2))
    >>> shifted = x + jnp.array([3.0, 4.0])
    >>> round(float(max_sliced_wasserstein(jax.random.key(1), x, shifted)), 4)
    5.0
    """
    x, y = _check_samples(x, y)
    directions = _directions(key, num_projections, x.shape[1], x.dtype)
    shift = jnp.mean(y, 0) - jnp.mean(x, 0)
    norm = jnp.linalg.norm(shift)
    shift = jnp.where(norm > 0, shift / jnp.where(norm > 0, norm, 1), directions[0])
    directions = jnp.concatenate([directions, shift[None]], axis=0)
    return jnp.sqrt(jnp.max(_projected_w2_squared(x, y, directions)))


def mode_weights(mixture: GaussianMixture, samples: ArrayLike) -> Array:
    """Empirical weight of each component, shape ``(K,)``.

    Each sample is assigned to its maximum-responsibility component of
    ``mixture`` (normally the exact posterior). For well-separated components
    this is the mass a sampler puts on each mode.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> problem = conflict_problem()
    >>> post = problem.posterior()
    >>> samples = mixture_sample(jax.random.key(0), post, 1000)
    >>> mode_weights(post, samples)
    Array([0., 1.], dtype=float32)
    """
    resp = mixture_responsibilities(mixture, samples)
    if resp.ndim == 1:
        resp = resp[None]
    assign = jnp.argmax(resp, axis=-1)
    counts = jnp.zeros(resp.shape[-1], resp.dtype).at[assign].add(1)
    return counts / resp.shape[0]


def mode_weight_error(mixture: GaussianMixture, samples: ArrayLike) -> Array:
    """Total variation :math:`\\tfrac12 \\sum_k |\\hat w_k - w_k|` between
    :func:`mode_weights` and ``mixture.weights``.

    Hard assignment biases :math:`\\hat w` when components overlap; compare
    with :func:`monte_carlo_floor` rather than with zero.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> x = mixture_sample(jax.random.key(0), m, 4000)
    >>> bool(mode_weight_error(m, x) < 0.05)
    True
    """
    return 0.5 * jnp.sum(jnp.abs(mode_weights(mixture, samples) - mixture.weights))


def mean_error(mixture: GaussianMixture, samples: ArrayLike) -> Array:
    """Error of the sample mean in units of the posterior spread.

    .. math::

        \\frac{\\lVert \\hat m - m \\rVert_2}{\\sqrt{\\operatorname{tr} \\Sigma}},

    with :math:`m, \\Sigma` the exact mean and covariance of ``mixture``
    (relative to :math:`\\lVert m \\rVert` would blow up for centred targets).
    For exact samples it is about :math:`n^{-1/2}`.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> x = mixture_sample(jax.random.key(0), m, 4000)
    >>> bool(mean_error(m, x) < 0.05)
    True
    """
    samples = jnp.asarray(samples)
    err = jnp.mean(samples, axis=0) - mixture_mean(mixture)
    return jnp.linalg.norm(err) / jnp.sqrt(jnp.trace(mixture_cov(mixture)))


def cov_error(mixture: GaussianMixture, samples: ArrayLike) -> Array:
    """Relative Frobenius error of the sample covariance.

    .. math::

        \\frac{\\lVert \\hat\\Sigma - \\Sigma \\rVert_F}{\\lVert \\Sigma \\rVert_F},

    :math:`\\hat\\Sigma` the unbiased sample covariance, :math:`\\Sigma` the exact
    covariance of ``mixture``.

    Examples
    --------
    >>> m = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]),
    ...                     jnp.full((2, 1, 1), 0.25))
    >>> x = mixture_sample(jax.random.key(0), m, 4000)
    >>> bool(cov_error(m, x) < 0.1)
    True
    """
    samples = jnp.asarray(samples)
    centred = samples - jnp.mean(samples, axis=0)
    emp = centred.T @ centred / (samples.shape[0] - 1)
    exact = mixture_cov(mixture)
    return jnp.linalg.norm(emp - exact) / jnp.linalg.norm(exact)


def monte_carlo_floor(
    key: PRNGKey,
    mixture: GaussianMixture,
    n: int,
    metric: Callable[[Array, Array], Array],
) -> Array:
    """A metric between two independent exact sample sets of size ``n``.

    The value an exact sampler with ``n`` draws would score: report a
    sampler's metric next to it. ``metric(x, y)`` takes two ``(n, d)`` sample
    sets; bind a key for the sliced distances, and ignore ``x`` for metrics
    against the exact mixture.

    Examples
    --------
    >>> import functools, jax
    >>> post = bars_problem().posterior()
    >>> sw = functools.partial(sliced_wasserstein, jax.random.key(1))
    >>> floor = monte_carlo_floor(jax.random.key(0), post, 1000, sw)
    >>> bool(0 < floor < 0.5)
    True
    >>> floor = monte_carlo_floor(jax.random.key(0), post, 1000,
    ...                           lambda x, y: mode_weight_error(post, y))
    >>> bool(floor < 0.1)
    True
    """
    key_x, key_y = jax.random.split(key)
    x = mixture_sample(key_x, mixture, n)
    y = mixture_sample(key_y, mixture, n)
    return metric(x, y)
