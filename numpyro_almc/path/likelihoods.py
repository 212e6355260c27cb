r"""Annealing paths that also anneal the likelihood.

The paper's path is ``μ_t ∝ p_t(x) L(x)``: the likelihood scores the *noised* position
``x_t ≈ e^{-t} x_0``. With well-separated prior modes this selects, at the time the
modes separate, those with ``e^{-t} A m_k ≈ y`` rather than ``A m_k ≈ y``, and Langevin
cannot move mass between modes afterwards (``docs/tuning.md``). The *noised
likelihood* path replaces ``L`` by the likelihood of ``y`` given ``x_t`` when
``X_0 | X_t = x`` is taken as ``N(e^{t} x, (e^{2t} − 1) I)`` (the flat-prior
posterior):

.. math::

    L_t(x) = N\big(y;\; e^{t} A x,\; σ_y^2 I + (e^{2t} − 1) A A^T\big),

which equals ``L`` at ``t = 0`` and stays log-concave in ``x`` for every ``t``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from numpyro_almc.path.preconditioners import (
    DensePreconditioner,
    inverse_hessian_preconditioner,
)
from numpyro_almc.types import Array, ArrayLike

__all__ = ["NoisedGaussianLikelihood", "noised_gaussian_likelihood"]


def _scaled_system(A, noise_std, t, dtype):
    """``a = e^{-t}`` and ``C = a² σ² I + (1 − a²) A Aᵀ`` (the covariance × e^{-2t}).

    Written in ``a`` so ``t = inf`` (the warm start) is exact: ``a = 0``.
    """
    t = jnp.asarray(t, dtype)
    a = jnp.where(jnp.isinf(t), jnp.zeros_like(t), jnp.exp(-t))
    eye = jnp.eye(A.shape[0], dtype=dtype)
    cov = a**2 * noise_std**2 * eye + (1 - a**2) * (A @ A.T)
    return a, cov


class NoisedGaussianLikelihood(NamedTuple):
    r"""The noised likelihood ``L_t`` of ``y = A x + N(0, σ_y² I)`` (a pytree).

    Call it as ``lik(x, t)``; ALMC's kernel sees ``time_dependent = True`` and
    evaluates it at the OU time of each cached drift. ``lik.preconditioner`` is the
    matching time-dependent ``(I + ∇²(−log L_t))^{-1}``. With ``t = 0`` it is the
    ordinary Gaussian log-likelihood (up to a constant).

    :func:`~numpyro_almc.run_almc_smc` accepts it: its weights then add the exact change
    ``lik(x, t') − lik(x, t)``, and its evidence uses :meth:`log_normalizer` and
    :meth:`warm_start_log_normalizer`.

    Examples
    --------
    >>> lik = noised_gaussian_likelihood(jnp.eye(2), jnp.ones(2), 0.1)
    >>> isinstance(lik, NoisedGaussianLikelihood), lik.time_dependent
    (True, True)
    >>> x = jnp.full(2, 2.0)
    >>> round(float(lik(x, 0.0)), 3), round(float(lik(x, jnp.inf)), 3)
    (-100.0, -4.0)
    >>> lik.preconditioner.at(1.0).matrix.shape
    (2, 2)
    """

    A: Array
    y: Array
    noise_std: Array
    #: ``U`` of ``A = U diag(s) Vᵀ`` (``d_y × d_y``) and ``s²`` padded with zeros to
    #: ``d_y``: with them ``C_t = U diag(a² σ² + (1 − a²) s²) Uᵀ`` needs no solve.
    #: ``None`` (a hand-built instance): solve ``C_t`` at every call instead.
    left: Array | None = None
    sq_singular: Array | None = None

    time_dependent = True

    def __call__(self, x: Array, t) -> Array:
        dtype = x.dtype
        A = self.A.astype(dtype)
        # e^{t}·(a y − A x) has covariance e^{2t} C: the e^{t} factors cancel.
        if self.left is None:
            a, cov = _scaled_system(A, self.noise_std.astype(dtype), t, dtype)
            r = a * self.y.astype(dtype) - A @ x
            return -0.5 * r @ jnp.linalg.solve(cov, r)
        t = jnp.asarray(t, dtype)
        a = jnp.where(jnp.isinf(t), jnp.zeros_like(t), jnp.exp(-t))
        c = a**2 * self.noise_std.astype(dtype) ** 2 + (1 - a**2) * (
            self.sq_singular.astype(dtype)
        )
        r = self.left.astype(dtype).T @ (a * self.y.astype(dtype) - A @ x)
        # c_i = 0 only at t = inf along a null direction of Aᵀ, where r_i = 0 too.
        positive = c > 0
        return -0.5 * jnp.sum(jnp.where(positive, r**2 / jnp.where(positive, c, 1), 0))

    def log_normalizer(self, t) -> Array:
        r"""``c_t`` with ``log N(y; e^{t} A x, Σ_t) = lik(x, t) + c_t`` (finite ``t``).

        ``c_t = −½ log det Σ_t − (d_y / 2) log 2π``,
        ``Σ_t = σ_y² I + (e^{2t} − 1) A Aᵀ``.
        """
        dtype = self.A.dtype
        t = jnp.asarray(t, dtype)
        eye = jnp.eye(self.A.shape[0], dtype=dtype)
        cov = self.noise_std.astype(dtype) ** 2 * eye + jnp.expm1(2 * t) * (
            self.A @ self.A.T
        )
        _, logdet = jnp.linalg.slogdet(cov)
        return -0.5 * logdet - 0.5 * self.A.shape[0] * jnp.log(2 * jnp.pi).astype(dtype)

    def warm_start_log_normalizer(self) -> Array:
        r"""``log ∫ N(x; 0, I) e^{lik(x, ∞)} dx = −½ log det(I + Aᵀ (A Aᵀ)^{-1} A)``.

        ``lik(x, ∞) = −½ |P x|²`` with ``P`` the projection on the row space of
        ``A`` (full row rank assumed), so this is ``−(d_y / 2) log 2``. With
        :meth:`log_normalizer` it turns :func:`~numpyro_almc.run_almc_smc`'s evidence
        ratio into ``log ∫ p_τ(x) N(y; e^{τ} A x, Σ_τ) dx``.
        """
        dtype = self.A.dtype
        hessian = jnp.eye(self.A.shape[1], dtype=dtype) + self.A.T @ jnp.linalg.solve(
            self.A @ self.A.T, self.A
        )
        _, logdet = jnp.linalg.slogdet(hessian)
        return -0.5 * logdet

    @property
    def preconditioner(self) -> NoisedGaussianPreconditioner:
        return NoisedGaussianPreconditioner(self.A, self.noise_std)


class NoisedGaussianPreconditioner(NamedTuple):
    """``M_t = (I + Aᵀ C_t^{-1} A)^{-1}``, the inverse Hessian of the warm-start-like
    potential ``|x|²/2 − log L_t(x)`` at time ``t``; ``at(t)`` gives it."""

    A: Array
    noise_std: Array

    time_dependent = True

    def at(self, t) -> DensePreconditioner:
        dtype = self.A.dtype
        A = self.A
        _, cov = _scaled_system(A, self.noise_std.astype(dtype), t, dtype)
        hessian = jnp.eye(A.shape[1], dtype=dtype) + A.T @ jnp.linalg.solve(cov, A)
        return inverse_hessian_preconditioner(hessian)


def noised_gaussian_likelihood(
    A: ArrayLike, y: ArrayLike, noise_std: ArrayLike
) -> NoisedGaussianLikelihood:
    r"""The noised-likelihood path for ``y = A x + N(0, σ_y² I)``.

    Pass it as ``loglikelihood_fn`` to :func:`~numpyro_almc.run_almc` or
    :func:`~numpyro_almc.almc`, and ``lik.preconditioner`` as the preconditioner.
    On the 25-component benchmark (d = 8, 1000 score evaluations, 10 seeds) it cut
    ALMC's mode-weight error from 0.83 / 0.87 / 0.53 to 0.44 / 0.35 / 0.14 for
    ``d_y = 1 / 2 / 4``, and with :func:`~numpyro_almc.run_almc_smc` on top to
    0.054 / 0.012 / 0.000 (``benchmarks/results/baselines_gmm.md``); on the bars it
    made no difference (TV 0.039).

    Examples
    --------
    >>> lik = noised_gaussian_likelihood(jnp.eye(2), jnp.ones(2), 0.1)
    >>> round(float(lik(jnp.zeros(2), 0.0)), 1)   # -|y|² / (2σ²)
    -100.0
    """
    A = jnp.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"`A` must be a (d_y, d) matrix, got shape {A.shape}.")
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(jnp.float32)
    y = jnp.asarray(y, A.dtype)
    if y.shape != A.shape[:1]:
        raise ValueError(f"`y` must have shape {A.shape[:1]}, got {y.shape}.")
    noise_std = jnp.asarray(noise_std, A.dtype)
    if noise_std.ndim != 0 or not bool(noise_std > 0):
        raise ValueError("`noise_std` must be a positive scalar.")
    # Factor A once, so no call solves a d_y × d_y system (10× faster on CPU).
    left, singular, _ = jnp.linalg.svd(A, full_matrices=True)
    sq_singular = (
        jnp.zeros(A.shape[0], A.dtype).at[: singular.shape[0]].set(singular**2)
    )
    return NoisedGaussianLikelihood(A, y, noise_std, left, sq_singular)
