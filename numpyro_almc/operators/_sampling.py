"""Average-pool downsampling (super-resolution) and subsampled orthonormal DCT
(compressed sensing): both have ``A Aᵀ = c I``, so every solve is closed form."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.fft

from numpyro_almc.operators._base import (
    _check_array_shape,
    _check_image_shape,
    _OuterDiagonalizable,
)
from numpyro_almc.types import Array, ArrayLike

__all__ = ["AveragePool", "SubsampledDCT"]


class AveragePool(_OuterDiagonalizable):
    r"""Average pooling by an integer factor ``k`` (super-resolution).

    ``(A x)[I, J] = k^{-2} Σ_{p, q < k} x[kI + p, kJ + q]`` on each channel. The
    blocks do not overlap, so ``A Aᵀ = I / k²`` exactly and, by Woodbury,
    ``(a I + b AᵀA)^{-1} = I/a - b/(a (a + b/k²)) AᵀA``; no boundary is involved.

    Parameters
    ----------
    image_shape
        ``(H, W)`` or ``(H, W, C)``; ``H`` and ``W`` must be multiples of ``factor``.
    factor
        The integer pooling factor ``k >= 1``.

    Examples
    --------
    >>> op = AveragePool((4, 4), 2)
    >>> op.apply(jnp.arange(16.0).reshape(4, 4))
    Array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    >>> op.solve_outer(jnp.ones((2, 2)), 1.0, 4.0)  # 1 / (1 + 4/4)
    Array([[0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
    """

    factor: int = eqx.field(static=True)

    def __init__(self, image_shape, factor: int):
        shape = _check_image_shape(image_shape)
        if isinstance(factor, bool) or not isinstance(factor, int | np.integer):
            raise TypeError(
                f"`factor` must be an integer, got {factor!r}; for a non-integer "
                "zoom use a DenseOperator or a MatrixFreeOperator."
            )
        factor = int(factor)
        if factor < 1:
            raise ValueError(f"`factor` must be >= 1, got {factor}.")
        if shape[0] % factor or shape[1] % factor:
            raise ValueError(
                f"The image's height and width {shape[:2]} must be multiples of "
                f"`factor` = {factor}; crop or pad the image first."
            )
        self.factor = factor
        self.in_shape = shape
        self.out_shape = (shape[0] // factor, shape[1] // factor) + shape[2:]

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        k = self.factor
        h, w = self.out_shape[:2]
        blocks = x.reshape((h, k, w, k) + self.in_shape[2:])
        return blocks.mean(axis=(1, 3))

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        k = self.factor
        up = jnp.repeat(jnp.repeat(y, k, axis=0), k, axis=1)
        return up / k**2

    def _outer_apply(self, w, fn):
        return fn(jnp.asarray(1.0 / self.factor**2, dtype=w.dtype)) * w

    def _outer_eigenvalues(self):
        return jnp.full(self.out_size, 1.0 / self.factor**2)


class SubsampledDCT(_OuterDiagonalizable):
    r"""Kept coefficients of the orthonormal 2-D DCT-II (compressed sensing).

    ``A x = S D x`` with ``D`` the orthonormal DCT over the two spatial axes (each
    channel separately) and ``S`` the selection of the kept coefficients (row-major
    order). ``D`` is orthogonal, so ``A Aᵀ = S Sᵀ = I`` exactly and
    ``(a I + b AᵀA)^{-1} = I/a - b/(a (a + b)) AᵀA``. A real stand-in for
    subsampled-Fourier (MRI-like) sensing with no complex bookkeeping.

    ``D`` is applied as the two orthonormal DCT matrices ``C_H`` (H × H) and ``C_W``
    (W × W), built once at construction (scipy): ``O(HW (H + W))`` per call, fast
    to compile, orthogonal to round-off.

    Parameters
    ----------
    keep
        Boolean array (or 0/1) of the image's shape: ``True`` marks a measured DCT
        coefficient. Converted once, eagerly.

    Examples
    --------
    >>> keep = jnp.array([[True, False], [False, False]])
    >>> jnp.round(SubsampledDCT(keep).apply(jnp.ones((2, 2))), 4)  # DC: 4 / 2
    Array([2.], dtype=float32)
    """

    keep: Array
    indices: Array
    dct_rows: Array
    dct_cols: Array

    def __init__(self, keep: ArrayLike):
        try:
            m = np.asarray(keep)
        except Exception as err:
            raise TypeError(
                "`keep` must be a concrete array (build operators outside jit)."
            ) from err
        if m.ndim not in (2, 3):
            raise ValueError(
                "`keep` must have the image's shape (H, W) or (H, W, C), got "
                f"{m.shape}."
            )
        if m.dtype != np.bool_:
            if not (np.issubdtype(m.dtype, np.number) and np.all((m == 0) | (m == 1))):
                raise ValueError(
                    "`keep` must be boolean or hold only 0 and 1 (True = measured "
                    "coefficient)."
                )
            m = m.astype(bool)
        if not m.any():
            raise ValueError("`keep` selects no coefficient; keep at least one.")
        self.keep = jnp.asarray(m, dtype=float)
        self.indices = jnp.asarray(np.flatnonzero(m), dtype=jnp.int32)
        self.in_shape = tuple(int(s) for s in m.shape)
        self.out_shape = (int(m.sum()),)
        # Orthonormal DCT-II matrices: column j of C is the transform of e_j.
        dtype = self.keep.dtype
        self.dct_rows = jnp.asarray(
            scipy.fft.dct(np.eye(m.shape[0]), type=2, norm="ortho", axis=0), dtype
        )
        self.dct_cols = jnp.asarray(
            scipy.fft.dct(np.eye(m.shape[1]), type=2, norm="ortho", axis=0), dtype
        )

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        rows, cols = self.dct_rows.astype(x.dtype), self.dct_cols.astype(x.dtype)
        coeffs = jnp.einsum("ih,jw,hw...->ij...", rows, cols, x)
        return coeffs.ravel()[self.indices]

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        coeffs = jnp.zeros(self.in_size, dtype=y.dtype).at[self.indices].set(y)
        coeffs = coeffs.reshape(self.in_shape)
        rows, cols = self.dct_rows.astype(y.dtype), self.dct_cols.astype(y.dtype)
        # Dᵀ = D^{-1} (orthogonal): the transposed matrices, the inverse DCT.
        return jnp.einsum("ih,jw,ij...->hw...", rows, cols, coeffs)

    def _outer_apply(self, w, fn):
        return fn(jnp.ones((), dtype=w.dtype)) * w

    def _outer_eigenvalues(self):
        return jnp.ones(self.out_size)
