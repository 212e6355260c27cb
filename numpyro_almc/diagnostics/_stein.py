r"""Kernel Stein discrepancy of draws against a target known through its score.

For a target :math:`\mu` with score :math:`s = \nabla \log \mu` and a kernel
:math:`k`, the Stein kernel

.. math::

    k_\mu(x, y) = s(x)^\top s(y)\, k(x, y) + s(x)^\top \nabla_y k(x, y)
        + s(y)^\top \nabla_x k(x, y) + \operatorname{tr} \nabla_x \nabla_y k(x, y)

has :math:`\mathbb{E}_{x \sim \mu}\, k_\mu(x, y) = 0` for every :math:`y`, so
:math:`\mathrm{KSD}^2(\nu, \mu) = \mathbb{E}_{x, x' \sim \nu}\, k_\mu(x, x')` is
zero for :math:`\nu = \mu` and positive otherwise. It needs only the score, never
the normaliser: for ALMC the target is :math:`\mu_\tau \propto p_\tau e^{-R}`, whose
score is the prior score at :math:`\tau` plus the likelihood gradient
(:func:`target_score`). With the inverse multiquadric kernel
:math:`k(x, y) = (c^2 + |x - y|^2)^\beta`, :math:`-1 < \beta < 0`, the KSD detects
non-convergence (Gorham & Mackey 2017). With :math:`u = c^2 + |r|^2`,
:math:`r = x - y`,

.. math::

    k_\mu(x, y) = s(x)^\top s(y)\, u^\beta + 2 \beta u^{\beta - 1} (s(y) - s(x))^\top r
        - 2 \beta d\, u^{\beta - 1} - 4 \beta (\beta - 1) u^{\beta - 2} |r|^2 .

Every term is a matrix product of the draws and scores, so rows of the Stein
kernel matrix are built in blocks (:mod:`._pairwise`). A length per coordinate
:math:`\ell` is the same kernel with :math:`c = 1` in the coordinates
:math:`x / \ell`, whose scores are :math:`s \cdot \ell`.

The KSD does not see the relative weights of well-separated modes (the score of a
mixture is that of the nearest component, whatever its weight): check mode weights
with SMC or the path, not with the KSD.

References
----------
.. [1] J. Gorham, L. Mackey. Measuring Sample Quality with Kernels. ICML 2017,
   arXiv:1703.01717.
.. [2] Q. Liu, J. D. Lee, M. Jordan. A Kernelized Stein Discrepancy for
   Goodness-of-fit Tests. ICML 2016, arXiv:1602.03253.
.. [3] K. Chwialkowski, H. Strathmann, A. Gretton. A Kernel Test of Goodness of
   Fit. ICML 2016, arXiv:1602.02964.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from numpyro_almc._validate import check_count, check_positive
from numpyro_almc.diagnostics._pairwise import as_matrix, kernel_matvec

__all__ = ["KSDResult", "kernel_stein_discrepancy", "target_score"]


class KSDResult(NamedTuple):
    """Output of :func:`kernel_stein_discrepancy`.

    Attributes
    ----------
    ksd_squared
        The U-statistic :math:`\\frac{1}{N(N-1)} \\sum_{i \\ne j} k_\\mu(x_i, x_j)`:
        unbiased for :math:`\\mathrm{KSD}^2`, so its mean is exactly 0 for exact
        draws of the target (it can then be negative). Compare runs with it.
    ksd
        :math:`\\sqrt{\\max(0, \\text{ksd\\_squared})}`, in the units of the score.
    null_sd
        Standard deviation of ``ksd_squared`` over the wild bootstrap (NaN without
        ``num_bootstrap``): the size of ``ksd_squared`` that exact draws of the
        target would give at this ``N``.
    p_value
        Wild-bootstrap p-value of "the draws are of the target" (NaN without
        ``num_bootstrap``; small means the draws are detectably not of it).
    num_draws
        ``N``.
    """

    ksd_squared: float
    ksd: float
    null_sd: float
    p_value: float
    num_draws: int


def target_score(
    score_fn: Callable, loglikelihood_fn: Callable, time: float
) -> Callable:
    """The score of :math:`\\mu_t \\propto p_t e^{-R}`: ``x ↦ score_fn(x, time) +
    ∇ loglikelihood_fn(x)``, for one unbatched ``x`` (a pytree is fine).

    Parameters
    ----------
    score_fn
        The prior score ``score_fn(x, t)`` (as given to :func:`~numpyro_almc.run_almc`).
    loglikelihood_fn
        ``x ↦ log p(y | x)`` (``−R``).
    time
        The OU time ``t``, normally the early-stopping time ``τ``.

    Examples
    --------
    >>> s = target_score(lambda x, t: -x, lambda x: -0.5 * jnp.sum((x - 2) ** 2), 0.1)
    >>> s(jnp.zeros(2))   # N(0, I) prior, N(2, I) likelihood: the score of N(1, I/2)
    Array([2., 2.], dtype=float32)
    """
    if not callable(score_fn) or not callable(loglikelihood_fn):
        raise TypeError("`score_fn` and `loglikelihood_fn` must be callables.")
    if not isinstance(time, jax.core.Tracer) and np.ndim(time) == 0:
        value = time if isinstance(time, float | int) else float(time)
        check_positive("time", value, allow_zero=True)
    grad = jax.grad(loglikelihood_fn)

    def score(x):
        return jax.tree.map(jnp.add, score_fn(x, time), grad(x))

    return score


def _scores(score_fn, draws, batch_size: int) -> np.ndarray:
    """Scores of the draws, ``(N, d)``, in batches of ``batch_size`` draws."""
    leaves = jax.tree.leaves(draws)
    first = jax.tree.map(lambda leaf: jnp.asarray(leaf)[0], draws)
    _, unravel = ravel_pytree(first)

    def flat_score(row):
        return ravel_pytree(score_fn(unravel(row)))[0]

    rows = jnp.asarray(as_matrix(draws), jnp.result_type(*leaves))
    out = jax.lax.map(flat_score, rows, batch_size=min(batch_size, rows.shape[0]))
    return np.asarray(out, np.float64)


def _stein_rows(x, s, scale: float, beta: float):
    """Rows ``sl`` of the IMQ Stein kernel matrix of draws ``x`` and scores ``s``."""
    dim = x.shape[1]
    sq_norm = np.einsum("nd,nd->n", x, x)
    s_dot_x = np.einsum("nd,nd->n", s, x)

    def rows(sl):
        xb, sb = x[sl], s[sl]
        r2 = np.maximum(sq_norm[sl, None] + sq_norm[None, :] - 2.0 * xb @ x.T, 0.0)
        u = scale**2 + r2
        # (s(y) − s(x))ᵀ(x − y) = s(y)ᵀx − s(y)ᵀy − s(x)ᵀx + s(x)ᵀy
        cross = xb @ s.T - s_dot_x[None, :] - s_dot_x[sl, None] + sb @ x.T
        u_b1 = u ** (beta - 1.0)
        return (
            (sb @ s.T) * u**beta
            + 2.0 * beta * u_b1 * cross
            - 2.0 * beta * dim * u_b1
            - 4.0 * beta * (beta - 1.0) * u ** (beta - 2.0) * r2
        )

    return rows


def _lengths(scale, x: np.ndarray) -> np.ndarray:
    """Kernel length per coordinate: a positive number, ``(d,)`` numbers, or
    ``"sd"`` (each coordinate's standard deviation over the draws)."""
    if isinstance(scale, str):
        if scale != "sd":
            raise ValueError(
                f"`scale` must be a length, ``(d,)`` lengths or 'sd', got {scale!r}."
            )
        sd = x.std(axis=0)
        return np.where(sd > 0, sd, 1.0)
    length = np.broadcast_to(np.asarray(scale, np.float64), x.shape[1:])
    if not (np.isfinite(length).all() and (length > 0).all()):
        raise ValueError(f"`scale` must be positive, got {scale!r}.")
    return length


def kernel_stein_discrepancy(
    draws,
    score_fn: Callable | None = None,
    *,
    scores=None,
    scale="sd",
    beta: float = -0.5,
    num_bootstrap: int = 0,
    rng_key=None,
    block_size: int = 512,
) -> KSDResult:
    """Kernel Stein discrepancy (IMQ kernel) of ``draws`` against a score.

    Parameters
    ----------
    draws
        ``(N, ...)`` array or a pytree of such (a dict position): ``N`` draws, e.g.
        the final iterates of ``N`` chains (``result.state.position``). Treated as
        independent.
    score_fn
        The target's score for one unbatched draw; for μ_τ use
        :func:`target_score` (prior score at τ plus the likelihood gradient).
    scores
        Instead of ``score_fn``: the scores of the draws, same structure.
    scale
        Length scale of the IMQ kernel ``(1 + |(x − y) / scale|²)^beta``, in the
        units of ``x``: a number, one per coordinate ``(d,)`` (flattened
        position), or ``"sd"`` (default), each coordinate's standard deviation
        over the draws. The kernel resolves structure on that scale: with 1 on a
        narrow posterior (scores ≫ 1) it only sees the mean of the score. To
        compare runs, pass one fixed scale to all (e.g. the sd of the healthiest
        run's draws).
    beta
        Exponent of the IMQ kernel, ``-1 < beta < 0``.
    num_bootstrap
        Rademacher wild-bootstrap replicates for ``null_sd`` and ``p_value``
        (0: none). The cost is that of one more KSD per 200 or so replicates.
    rng_key
        Key of the bootstrap (default ``jax.random.key(0)``).
    block_size
        Rows of the ``N × N`` Stein kernel made at once: memory is about
        ``block_size · N`` floats (never ``N × N × d``); time is ``O(N² d)``.

    Returns
    -------
    KSDResult

    Examples
    --------
    >>> x = jax.random.normal(jax.random.key(0), (400, 2))
    >>> exact = kernel_stein_discrepancy(x, lambda x: -x)        # N(0, I) draws
    >>> shifted = kernel_stein_discrepancy(x + 1.0, lambda x: -x)
    >>> abs(exact.ksd_squared) < 0.01, shifted.ksd_squared > 0.1
    (True, True)
    """
    if (score_fn is None) == (scores is None):
        raise ValueError("Give exactly one of `score_fn` and `scores`.")
    if not -1.0 < beta < 0.0:
        raise ValueError(f"`beta` must be in (-1, 0), got {beta}.")
    num_bootstrap = check_count("num_bootstrap", num_bootstrap)
    block_size = check_count("block_size", block_size, 1)
    x = as_matrix(draws)
    num = x.shape[0]
    if num < 2:
        raise ValueError(f"The KSD needs at least 2 draws, got {num}.")
    if scores is None:
        if not callable(score_fn):
            raise TypeError("`score_fn` must be a callable.")
        s = _scores(score_fn, draws, block_size)
    else:
        s = as_matrix(scores, "scores")
        if s.shape != x.shape:
            raise ValueError(
                f"`scores` flatten to {s.shape}, the draws to {x.shape}: give one "
                "score per draw, of the draw's structure."
            )
    if not (np.isfinite(x).all() and np.isfinite(s).all()):
        nan = float("nan")
        return KSDResult(nan, nan, nan, nan, num)
    # A length ℓ per coordinate: the kernel (1 + |(x − y) / ℓ|²)^β, i.e. the unit
    # IMQ kernel in the coordinates x / ℓ, whose scores are s · ℓ.
    length = _lengths(scale, x)
    x, s = x / length, s * length
    rows = _stein_rows(x, s, 1.0, float(beta))
    # Diagonal: r = 0, u = 1, so k_μ(x, x) = |s(x)|² − 2βd.
    diag = np.einsum("nd,nd->n", s, s) - 2 * beta * x.shape[1]
    key = jax.random.key(0) if rng_key is None else rng_key
    signs = np.asarray(jax.random.rademacher(key, (num, num_bootstrap)), np.float64)
    vectors = np.concatenate([np.ones((num, 1)), signs], axis=1)
    kv = kernel_matvec(rows, num, vectors, block_size)
    quad = np.einsum("np,np->p", vectors, kv)  # vᵀ K v per column
    u_stats = (quad - diag.sum()) / (num * (num - 1))  # w_i² = 1: the same diagonal
    ksd_squared = float(u_stats[0])
    if num_bootstrap:
        boot = u_stats[1:]
        null_sd = float(boot.std())
        p_value = float((1 + np.sum(boot >= ksd_squared)) / (1 + num_bootstrap))
    else:
        null_sd = p_value = float("nan")
    return KSDResult(
        ksd_squared, float(np.sqrt(max(ksd_squared, 0.0))), null_sd, p_value, num
    )
