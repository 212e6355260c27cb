"""Dense matrices (one SVD at construction) and channel mixing ``I_pixels ⊗ M``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc.operators._base import (
    AbstractLinearOperator,
    _check_array_shape,
    _check_factors,
    _check_image_shape,
    _check_shape_tuple,
    _g_inverse,
    _g_inverse_sqrt,
)
from numpyro_almc.types import Array, ArrayLike

__all__ = ["ChannelMixing", "DenseOperator"]


def _concrete_matrix(matrix, name: str) -> np.ndarray:
    try:
        m = np.asarray(matrix)
    except Exception as err:
        raise TypeError(
            f"`{name}` must be a concrete array (build operators outside jit)."
        ) from err
    if m.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D matrix, got shape {m.shape}.")
    if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
        raise TypeError(f"`{name}` must be a real numeric matrix, got {m.dtype}.")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"`{name}` has non-finite entries.")
    return m


def _svd(m: np.ndarray, dtype):
    # Once, at construction, in float64 for accuracy; stored in the working dtype.
    u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
    return (
        jnp.asarray(u, dtype=dtype),
        jnp.asarray(s**2, dtype=dtype),
        jnp.asarray(vt, dtype=dtype),
    )


class DenseOperator(AbstractLinearOperator):
    r"""A dense matrix ``A``, factored once by a thin SVD ``A = U Σ Vᵀ``.

    Exact: ``f(AᵀA) = f(0) I + V (f(Σ²) - f(0)) Vᵀ`` for every solve and root, and
    ``log det(a I + b AᵀA) = (n - r) log a + Σ log(a + b σ_i²)``. Each call costs
    ``O((m + n) r)``; the ``O(m n r)`` SVD happens once. For ``d`` in the thousands
    at most: structured operators exist for images.

    Parameters
    ----------
    matrix
        ``(m, n)`` real matrix (concrete).
    in_shape
        Shape of ``x``; None (default): ``(n,)``. Its size must be ``n`` (row-major
        flattening).
    out_shape
        Shape of ``A x``; None (default): ``(m,)``. Its size must be ``m``.

    Examples
    --------
    >>> op = DenseOperator(jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    >>> op.apply(jnp.ones(2))
    Array([2., 1., 0.], dtype=float32)
    >>> [round(float(t), 4) for t in op.solve_normal(jnp.ones(2), 1.0, 1.0)]
    [0.2, 0.5]
    """

    matrix: Array
    u: Array
    s2: Array
    vt: Array

    def __init__(self, matrix: ArrayLike, in_shape=None, out_shape=None):
        m = _concrete_matrix(matrix, "matrix")
        dtype = m.dtype if np.issubdtype(m.dtype, np.floating) else float
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        in_shape = (m.shape[1],) if in_shape is None else in_shape
        out_shape = (m.shape[0],) if out_shape is None else out_shape
        self.in_shape = _check_shape_tuple("in_shape", in_shape)
        self.out_shape = _check_shape_tuple("out_shape", out_shape)
        if self.in_size != m.shape[1] or self.out_size != m.shape[0]:
            raise ValueError(
                f"`in_shape` {self.in_shape} and `out_shape` {self.out_shape} must "
                f"have sizes {m.shape[1]} and {m.shape[0]} (the matrix's columns and "
                "rows)."
            )
        self.matrix = jnp.asarray(m, dtype=dtype)
        self.u, self.s2, self.vt = _svd(m, dtype)

    @property
    def dtype(self):
        return self.matrix.dtype

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        return (self.matrix @ x.ravel()).reshape(self.out_shape)

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        return (self.matrix.T @ y.ravel()).reshape(self.in_shape)

    def as_matrix(self):
        return self.matrix

    def _normal(self, v, a, b, f0, g):
        v = _check_array_shape("v", v, self.in_shape)
        _check_factors(a, b)
        flat = v.ravel()
        coef = self.s2 * g(self.s2, a, b)  # f(σ²) - f(0)
        out = f0(a) * flat + self.vt.T @ (coef * (self.vt @ flat))
        return out.reshape(self.in_shape)

    def solve_normal(self, v, a, b):
        return self._normal(v, a, b, lambda a: 1.0 / a, _g_inverse)

    def sqrt_solve_normal(self, v, a, b):
        return self._normal(v, a, b, lambda a: 1.0 / jnp.sqrt(a), _g_inverse_sqrt)

    def logdet_normal(self, a, b):
        _check_factors(a, b)
        rank_gap = self.in_size - self.s2.shape[0]
        return rank_gap * jnp.log(a) + jnp.sum(jnp.log(a + b * self.s2))

    def solve_outer(self, w, a, b):
        w = _check_array_shape("w", w, self.out_shape)
        _check_factors(a, b)
        flat = w.ravel()
        coef = self.s2 * _g_inverse(self.s2, a, b)
        out = flat / a + self.u @ (coef * (self.u.T @ flat))
        return out.reshape(self.out_shape)

    def logdet_outer(self, a, b):
        _check_factors(a, b)
        rank_gap = self.out_size - self.s2.shape[0]
        return rank_gap * jnp.log(a) + jnp.sum(jnp.log(a + b * self.s2))

    def normal_function(self, v, fn):
        v = _check_array_shape("v", v, self.in_shape)
        flat = v.ravel()
        f0 = fn(jnp.zeros((), v.dtype))
        out = f0 * flat + self.vt.T @ ((fn(self.s2) - f0) * (self.vt @ flat))
        return out.reshape(self.in_shape).astype(v.dtype)

    def outer_function(self, w, fn):
        w = _check_array_shape("w", w, self.out_shape)
        flat = w.ravel()
        out = self.u @ (fn(self.s2) * (self.u.T @ flat))
        if self.u.shape[1] < self.out_size:  # the complement of the range of A
            out = out + fn(jnp.zeros((), w.dtype)) * (flat - self.u @ (self.u.T @ flat))
        return out.reshape(self.out_shape).astype(w.dtype)

    def norm_sq_bound(self):
        return jnp.max(self.s2)


class ChannelMixing(AbstractLinearOperator):
    r"""Colour / channel mixing ``y[h, w, :] = M x[h, w, :]``, i.e. ``A = I ⊗ M``.

    Exact Kronecker structure: ``f(AᵀA) = I ⊗ f(MᵀM)``, with the small ``M``
    factored once by SVD; ``log det(a I + b AᵀA) = H W log det(a I + b MᵀM)``.

    Parameters
    ----------
    matrix
        ``(C_out, C_in)`` real matrix (e.g. RGB → grey is ``[[0.299, 0.587,
        0.114]]``).
    image_shape
        ``(H, W, C_in)``.

    Examples
    --------
    >>> op = ChannelMixing(jnp.array([[0.5, 0.5]]), (1, 2, 2))
    >>> op.apply(jnp.array([[[1.0, 3.0], [2.0, 2.0]]]))
    Array([[[2.],
            [2.]]], dtype=float32)
    """

    matrix: Array
    u: Array
    s2: Array
    vt: Array

    def __init__(self, matrix: ArrayLike, image_shape):
        m = _concrete_matrix(matrix, "matrix")
        shape = _check_image_shape(image_shape)
        if len(shape) != 3 or shape[2] != m.shape[1]:
            raise ValueError(
                f"`image_shape` must be (H, W, {m.shape[1]}) for a matrix with "
                f"{m.shape[1]} input channels, got {shape}."
            )
        dtype = m.dtype if np.issubdtype(m.dtype, np.floating) else float
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        self.in_shape = shape
        self.out_shape = shape[:2] + (m.shape[0],)
        self.matrix = jnp.asarray(m, dtype=dtype)
        self.u, self.s2, self.vt = _svd(m, dtype)

    @property
    def dtype(self):
        return self.matrix.dtype

    @property
    def _num_pixels(self) -> int:
        return self.in_shape[0] * self.in_shape[1]

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        return x @ self.matrix.T

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        return y @ self.matrix

    def _normal(self, v, a, b, f0, g):
        v = _check_array_shape("v", v, self.in_shape)
        _check_factors(a, b)
        coef = self.s2 * g(self.s2, a, b)
        return f0(a) * v + ((v @ self.vt.T) * coef) @ self.vt

    def solve_normal(self, v, a, b):
        return self._normal(v, a, b, lambda a: 1.0 / a, _g_inverse)

    def sqrt_solve_normal(self, v, a, b):
        return self._normal(v, a, b, lambda a: 1.0 / jnp.sqrt(a), _g_inverse_sqrt)

    def logdet_normal(self, a, b):
        _check_factors(a, b)
        gap = self.in_shape[2] - self.s2.shape[0]
        per_pixel = gap * jnp.log(a) + jnp.sum(jnp.log(a + b * self.s2))
        return self._num_pixels * per_pixel

    def solve_outer(self, w, a, b):
        w = _check_array_shape("w", w, self.out_shape)
        _check_factors(a, b)
        coef = self.s2 * _g_inverse(self.s2, a, b)
        return w / a + ((w @ self.u) * coef) @ self.u.T

    def logdet_outer(self, a, b):
        _check_factors(a, b)
        gap = self.out_shape[2] - self.s2.shape[0]
        per_pixel = gap * jnp.log(a) + jnp.sum(jnp.log(a + b * self.s2))
        return self._num_pixels * per_pixel

    def normal_function(self, v, fn):
        v = _check_array_shape("v", v, self.in_shape)
        f0 = fn(jnp.zeros((), v.dtype))
        out = f0 * v + ((v @ self.vt.T) * (fn(self.s2) - f0)) @ self.vt
        return out.astype(v.dtype)

    def outer_function(self, w, fn):
        w = _check_array_shape("w", w, self.out_shape)
        coords = w @ self.u
        out = (coords * fn(self.s2)) @ self.u.T
        if self.u.shape[1] < self.out_shape[2]:  # the complement of the range of M
            out = out + fn(jnp.zeros((), w.dtype)) * (w - coords @ self.u.T)
        return out.astype(w.dtype)

    def norm_sq_bound(self):
        return jnp.max(self.s2)
