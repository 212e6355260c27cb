"""Exact scores of OU-noised Gaussians and Gaussian mixtures.

Every score function returned here has the signature ``score_fn(x, t)`` and
returns :math:`\\nabla_x \\log p_t(x)` for **one unbatched** ``x`` and a scalar
OU time ``t > 0``, where :math:`p_t` is the law of
:math:`X_t = e^{-t} X_0 + \\sqrt{1 - e^{-2t}}\\, Z`. Batch with :func:`jax.vmap`
outside. A float32 ``x`` gives a float32 score even when ``jax_enable_x64`` is on
(the parameters are cast to the dtype of ``x`` at call time). They serve tests,
examples and :mod:`numpyro_almc.testbeds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc.path.ou import as_float as _as_float
from numpyro_almc.path.ou import ou_coefficients
from numpyro_almc.types import Array, ArrayLike

__all__ = [
    "gaussian_mixture_log_density",
    "gaussian_mixture_score",
    "gaussian_score",
]

ScoreFn = Callable[[Array, ArrayLike], Array]
_LOG_2PI = math.log(2.0 * math.pi)


def _float_dtype(x: Array):
    """The dtype the computation runs in: that of ``x`` if floating."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.result_type(float)


# Exact Gaussian / Gaussian-mixture scores
# ---------------------------------------------------------------------------


def _check_finite(where: str, name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    if not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"{where}: `{name}` holds NaN or infinite values.")


def _eigh_psd(raw_covs: ArrayLike, covs: Array) -> tuple[Array, Array]:
    """Eigendecomposition ``C_k = V_k diag(lam_k) V_k^T`` of full covariances.

    Done once, when a score function is built. Concrete inputs are decomposed
    eagerly in float64 numpy (so it also happens once when the score function
    is built inside a jit trace, where ``jax.numpy`` would stage the
    decomposition into every call); traced inputs fall back to
    :func:`jax.numpy.linalg.eigh`. Like the Cholesky factorisation it replaces,
    only the lower triangle is read. Eigenvalues are clipped at 0 (the
    round-off of a singular :math:`C`), so :math:`\\alpha^2 \\lambda + \\sigma^2 > 0`
    for every ``t > 0``.

    Returns
    -------
    lam, vecs
        Shapes ``(K, d)`` and ``(K, d, d)``, columns of ``vecs[k]`` the
        eigenvectors; numpy float64 arrays if the input is concrete.
    """
    if isinstance(raw_covs, jax.core.Tracer):
        lam, vecs = jnp.linalg.eigh(covs, UPLO="L", symmetrize_input=False)
        return jnp.maximum(lam, 0), vecs
    values = np.asarray(raw_covs, dtype=np.float64).reshape(covs.shape)
    lam, vecs = np.linalg.eigh(values, UPLO="L")
    return np.maximum(lam, 0.0), vecs


class _MixtureParams:
    """Validated mixture parameters, flattened to vectors of length ``d``.

    ``kind`` is ``"iso"`` (covs (K,)), ``"diag"`` (covs (K, d)) or ``"full"``
    (covs (K, d, d)). The event shape is kept to reshape ``x`` and the score.
    Full covariances are eigendecomposed here, once (:func:`_eigh_psd`), so a
    call needs only matrix-vector products.
    """

    def __init__(self, weights, means, covs, *, single: bool):
        raw_covs = covs
        means = _as_float(means)
        covs = _as_float(covs)
        if single:
            if means.ndim < 1:
                raise ValueError(
                    "gaussian_score: `mean` must have at least one dimension "
                    f"(the event shape), got shape {means.shape}; wrap a scalar "
                    "as jnp.array([m])."
                )
            event_shape = means.shape
            d = math.prod(event_shape)
            if covs.ndim == 0:
                kind = "iso"
            elif covs.shape == event_shape:
                kind = "diag"
            elif covs.shape == (d, d):
                kind = "full"
            else:
                raise ValueError(
                    f"gaussian_score: `cov` has shape {covs.shape} but `mean` has "
                    f"shape {event_shape}; pass a scalar (isotropic), an array of "
                    f"shape {event_shape} (diagonal) or of shape {(d, d)} (full)."
                )
            means = means.reshape(1, d)
            covs = covs[None]
            if kind == "diag":
                covs = covs.reshape(1, d)
            log_weights = jnp.zeros((1,), dtype=means.dtype)
        else:
            weights = _as_float(weights)
            if weights.ndim != 1:
                raise ValueError(
                    "gaussian_mixture_score: `weights` must be 1-D of shape (K,), "
                    f"got shape {weights.shape}."
                )
            num = weights.shape[0]
            if means.ndim < 2 or means.shape[0] != num:
                raise ValueError(
                    f"gaussian_mixture_score: `means` must have shape (K, *event) "
                    f"with K={num} matching `weights`, got shape {means.shape}."
                )
            event_shape = means.shape[1:]
            d = math.prod(event_shape)
            if covs.shape == (num,):
                kind = "iso"
            elif covs.shape == (num, *event_shape):
                kind = "diag"
                covs = covs.reshape(num, d)
            elif covs.shape == (num, d, d):
                kind = "full"
            else:
                raise ValueError(
                    f"gaussian_mixture_score: `covs` has shape {covs.shape}; with "
                    f"K={num} and event shape {event_shape} pass shape {(num,)} "
                    f"(isotropic), {(num, *event_shape)} (diagonal) or "
                    f"{(num, d, d)} (full)."
                )
            means = means.reshape(num, d)
            # Unnormalised weights are accepted; normalise in log space.
            log_weights = jnp.log(weights)
            log_weights = log_weights - jax.scipy.special.logsumexp(log_weights)
        where = "gaussian_score" if single else "gaussian_mixture_score"
        mean_name, cov_name = ("mean", "cov") if single else ("means", "covs")
        _check_finite(where, mean_name, means)
        _check_finite(where, cov_name, covs)
        if not single:
            _check_finite(where, "weights", weights)
            if not isinstance(weights, jax.core.Tracer):
                w = np.asarray(weights)
                if np.any(w < 0) or not np.sum(w) > 0:
                    raise ValueError(
                        f"{where}: `weights` must be >= 0 with a positive sum, got "
                        f"{w.tolist()}."
                    )
        if kind == "full":
            self.eigvals, self.eigvecs = _eigh_psd(raw_covs, covs)
            lam = self.eigvals
            if not isinstance(lam, jax.core.Tracer):
                raw = np.linalg.eigvalsh(
                    np.asarray(raw_covs, dtype=np.float64).reshape(covs.shape),
                    UPLO="L",
                )
                scale = np.max(np.abs(raw), initial=0.0)
                if np.any(raw < -1e-6 * max(scale, 1e-30)):
                    raise ValueError(
                        f"{where}: `{cov_name}` must be positive semi-definite, got "
                        f"an eigenvalue {float(raw.min()):.3g}; pass a covariance "
                        "(e.g. C @ C.T), not a precision or its negative."
                    )
        elif not isinstance(covs, jax.core.Tracer) and np.any(np.asarray(covs) < 0):
            raise ValueError(
                f"{where}: `{cov_name}` must be variances >= 0, got a negative entry "
                f"{float(np.min(np.asarray(covs))):.3g}."
            )
        self.log_weights = log_weights
        self.means = means
        self.covs = covs
        self.kind = kind
        self.event_shape = tuple(event_shape)
        self.dim = d

    def terms(self, x: Array, t: ArrayLike) -> tuple[Array, Array, Array]:
        """Per-component ``log w_k + log N_k(x)`` (K,) and gradients (K, d).

        Returns the flattened ``x`` as well. Component ``k`` of :math:`p_t` is
        :math:`N(\\alpha m_k, \\alpha^2 C_k + \\sigma^2 I)`; for full
        :math:`C_k = V_k \\mathrm{diag}(\\lambda_k) V_k^T` its covariance is
        :math:`V_k \\mathrm{diag}(\\alpha^2 \\lambda_k + \\sigma^2) V_k^T`.
        """
        x = jnp.asarray(x)
        if x.shape != self.event_shape:
            raise ValueError(
                f"score_fn: x has shape {x.shape} but the event shape is "
                f"{self.event_shape}; score functions take one unbatched x, use "
                "jax.vmap to batch."
            )
        dtype = _float_dtype(x)
        xf = x.reshape(self.dim).astype(dtype)
        alpha, sigma2 = ou_coefficients(jnp.asarray(t, dtype=dtype))
        means = self.means.astype(dtype)
        log_w = self.log_weights.astype(dtype)
        diff = xf[None, :] - alpha * means  # (K, d)
        d = self.dim
        if self.kind == "iso":
            var = alpha**2 * self.covs.astype(dtype) + sigma2  # (K,)
            grad = -diff / var[:, None]
            logpdf = -0.5 * (jnp.sum(diff**2, axis=-1) / var + d * jnp.log(var))
        elif self.kind == "diag":
            var = alpha**2 * self.covs.astype(dtype) + sigma2  # (K, d)
            grad = -diff / var
            logpdf = -0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=-1)
        else:
            # Explicit casts: float64 numpy eigenpairs must not promote x.
            vecs = jnp.asarray(self.eigvecs, dtype=dtype)  # (K, d, d)
            var = alpha**2 * jnp.asarray(self.eigvals, dtype=dtype) + sigma2  # (K, d)
            # Rotate diff (not x and the means apart): no cancellation near a mean.
            rot = jnp.einsum("kji,kj->ki", vecs, diff)  # V_k^T diff_k
            scaled = rot / var
            grad = -jnp.einsum("kij,kj->ki", vecs, scaled)
            logpdf = -0.5 * jnp.sum(rot * scaled + jnp.log(var), axis=-1)
        logpdf = logpdf - jnp.asarray(0.5 * d * _LOG_2PI, dtype=dtype)
        return log_w + logpdf, grad, xf


def gaussian_score(mean: ArrayLike, cov: ArrayLike) -> ScoreFn:
    """Exact OU score of a Gaussian prior :math:`N(m, C)`.

    .. math::

        p_t = N(e^{-t} m,\\; e^{-2t} C + (1 - e^{-2t}) I), \\qquad
        \\nabla \\log p_t(x) = -(e^{-2t} C + (1 - e^{-2t}) I)^{-1}(x - e^{-t} m).

    Parameters
    ----------
    mean
        Mean, of the event shape (at least 1-D).
    cov
        Scalar (isotropic :math:`c I`), array of the event shape (diagonal) or
        of shape ``(d, d)`` with ``d = mean.size`` (full, positive definite;
        a singular ``C`` is fine for ``t > 0``).

    Returns
    -------
    score_fn
        ``score_fn(x, t)`` for one ``x`` of the event shape and a scalar ``t``.

    Raises
    ------
    ValueError
        If the shapes of ``mean`` and ``cov`` do not match.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score_fn = gaussian_score(jnp.zeros(2), 1.0)
    >>> score_fn(jnp.array([1.0, -2.0]), 0.5)  # N(0, I) is OU-invariant
    Array([-1.,  2.], dtype=float32)
    """
    params = _MixtureParams(None, mean, cov, single=True)

    def score_fn(x: Array, t: ArrayLike) -> Array:
        _, grad, _ = params.terms(x, t)
        return grad[0].reshape(params.event_shape)

    return score_fn


def gaussian_mixture_log_density(
    weights: ArrayLike, means: ArrayLike, covs: ArrayLike
) -> Callable[[Array, ArrayLike], Array]:
    """Exact log density of the OU-noised Gaussian mixture.

    .. math::

        \\log p_t(x) = \\log \\sum_k w_k\\,
        N(x;\\, e^{-t} m_k,\\, e^{-2t} C_k + (1 - e^{-2t}) I),

    computed with ``logsumexp``. Its gradient is
    :func:`gaussian_mixture_score`.

    Parameters
    ----------
    weights
        Mixture weights, shape ``(K,)`` (normalised internally).
    means
        Component means, shape ``(K, *event_shape)``.
    covs
        Shape ``(K,)`` (isotropic), ``(K, *event_shape)`` (diagonal) or
        ``(K, d, d)`` (full).

    Returns
    -------
    log_density_fn
        ``log_density_fn(x, t)`` for one ``x`` and a scalar ``t``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> log_p = gaussian_mixture_log_density(
    ...     jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.array([1.0, 1.0])
    ... )
    >>> bool(jnp.isclose(log_p(jnp.array([0.0]), 10.0), -0.5 * jnp.log(2 * jnp.pi)))
    True
    """
    params = _MixtureParams(weights, means, covs, single=False)

    def log_density_fn(x: Array, t: ArrayLike) -> Array:
        log_terms, _, _ = params.terms(x, t)
        return jax.scipy.special.logsumexp(log_terms)

    return log_density_fn


def gaussian_mixture_score(
    weights: ArrayLike, means: ArrayLike, covs: ArrayLike
) -> ScoreFn:
    """Exact OU score of a Gaussian-mixture prior.

    .. math::

        \\nabla \\log p_t(x) = \\sum_k r_k(x)\\,
        \\bigl(-S_k^{-1}(x - e^{-t} m_k)\\bigr), \\quad
        S_k = e^{-2t} C_k + (1 - e^{-2t}) I,

    with responsibilities :math:`r_k = \\mathrm{softmax}_k(\\log w_k +
    \\log N(x; e^{-t} m_k, S_k))`, so far-away points do not underflow.

    Parameters
    ----------
    weights
        Mixture weights, shape ``(K,)`` (normalised internally).
    means
        Component means, shape ``(K, *event_shape)``.
    covs
        Shape ``(K,)`` (isotropic), ``(K, *event_shape)`` (diagonal) or
        ``(K, d, d)`` (full).

    Returns
    -------
    score_fn
        ``score_fn(x, t)`` for one ``x`` and a scalar ``t``.

    Raises
    ------
    ValueError
        If the shapes are inconsistent.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> score_fn = gaussian_mixture_score(
    ...     jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.array([1.0, 1.0])
    ... )
    >>> score_fn(jnp.array([0.0]), 0.1)  # symmetric: zero at the origin
    Array([0.], dtype=float32)
    """
    params = _MixtureParams(weights, means, covs, single=False)

    def score_fn(x: Array, t: ArrayLike) -> Array:
        log_terms, grads, _ = params.terms(x, t)
        resp = jax.nn.softmax(log_terms)
        return (resp @ grads).reshape(params.event_shape)

    return score_fn
