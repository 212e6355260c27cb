"""Pixel masks (inpainting): a diagonal 0/1 operator, closed forms everywhere."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from numpyro_almc.operators._base import _check_array_shape, _OuterDiagonalizable
from numpyro_almc.types import Array, ArrayLike

__all__ = ["Mask"]


class Mask(_OuterDiagonalizable):
    r"""Pixel mask ``A = diag(m)``, ``m ∈ {0, 1}`` (inpainting).

    Exact: ``AᵀA = A Aᵀ = diag(m)`` (or, with ``observed_only=True``, ``A = S`` the
    selection of the observed pixels, ``A Aᵀ = I`` and ``AᵀA = diag(m)``), so every
    solve is elementwise and ``log det(a I + b AᵀA) = n₀ log a + n₁ log(a + b)``.
    No boundary is involved.

    Parameters
    ----------
    mask
        Boolean array (or one holding only 0 and 1) of the image's shape; ``True`` /
        1 marks an observed pixel. Converted once, eagerly: pass a concrete array.
    observed_only
        If False (default) ``A x = m ⊙ x`` keeps the image's shape (unobserved pixels
        read 0). If True, ``A x`` is the vector of observed pixels, in row-major
        order, of shape ``(number observed,)``.

    Examples
    --------
    >>> m = jnp.array([[True, False], [True, True]])
    >>> Mask(m, observed_only=True).apply(jnp.arange(4.0).reshape(2, 2))
    Array([0., 2., 3.], dtype=float32)
    >>> Mask(m).solve_normal(jnp.ones((2, 2)), 1.0, 1.0)
    Array([[0.5, 1. ],
           [0.5, 0.5]], dtype=float32)
    """

    mask: Array
    indices: Array
    observed_only: bool = eqx.field(static=True)

    def __init__(self, mask: ArrayLike, *, observed_only: bool = False):
        try:
            m = np.asarray(mask)
        except Exception as err:  # a tracer cannot become a numpy array
            raise TypeError(
                "`mask` must be a concrete array (build operators outside jit)."
            ) from err
        if m.ndim == 0:
            raise ValueError("`mask` must be an array of the image's shape.")
        if m.dtype != np.bool_:
            if not (np.issubdtype(m.dtype, np.number) and np.all((m == 0) | (m == 1))):
                raise ValueError(
                    "`mask` must be boolean or hold only 0 and 1; for weighted "
                    "pixels use a per-pixel noise scale, or threshold it "
                    "(mask > 0.5)."
                )
            m = m.astype(bool)
        if not isinstance(observed_only, bool):
            raise TypeError("`observed_only` must be True or False.")
        self.in_shape = tuple(int(s) for s in m.shape)
        self.observed_only = observed_only
        self.mask = jnp.asarray(m, dtype=float)
        self.indices = jnp.asarray(np.flatnonzero(m), dtype=jnp.int32)
        self.out_shape = (int(m.sum()),) if observed_only else self.in_shape
        if not m.any():
            raise ValueError(
                "`mask` observes no pixel (all False): the likelihood would carry "
                "no information. Sample the prior instead (sample_prior)."
            )

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        if self.observed_only:
            return x.ravel()[self.indices]
        return self.mask.astype(x.dtype) * x

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        if self.observed_only:
            out = jnp.zeros(self.in_size, dtype=y.dtype).at[self.indices].set(y)
            return out.reshape(self.in_shape)
        return self.mask.astype(y.dtype) * y

    def _outer_apply(self, w, fn):
        if self.observed_only:  # A Aᵀ = I
            return fn(jnp.ones((), dtype=w.dtype)) * w
        return fn(self.mask.astype(w.dtype)) * w

    def _outer_eigenvalues(self):
        if self.observed_only:
            return jnp.ones(self.out_shape, dtype=self.mask.dtype)
        return self.mask.ravel()
