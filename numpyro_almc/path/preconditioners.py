"""Constant preconditioners ``M`` for the Langevin update.

``x ← x + δ M g + sqrt(2δ) M^{1/2} ξ`` leaves the same target invariant (in the
``δ → 0`` limit) for any constant positive-definite ``M``. All preconditioners act on
the flattened position (``jax.flatten_util.ravel_pytree`` order).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._validate import check_finite_values, is_concrete
from numpyro_almc.types import Array, ArrayLike

__all__ = [
    "DensePreconditioner",
    "DiagonalPreconditioner",
    "LinearOperatorPreconditioner",
    "dense_preconditioner",
    "diagonal_preconditioner",
    "linear_gaussian_preconditioner",
    "hessian_preconditioner",
    "hessian_diagonal_preconditioner",
    "check_preconditioner",
]


class DensePreconditioner(NamedTuple):
    """``M`` as a dense matrix with its Cholesky factor ``L`` (``M = L Lᵀ``).

    Build it with :func:`dense_preconditioner`, :func:`linear_gaussian_preconditioner`
    or :func:`hessian_preconditioner`.

    Examples
    --------
    >>> p = dense_preconditioner(jnp.array([[4.0, 0.0], [0.0, 1.0]]))
    >>> p.apply(jnp.ones(2)), p.apply_sqrt(jnp.ones(2))
    (Array([4., 1.], dtype=float32), Array([2., 1.], dtype=float32))
    """

    matrix: Array
    cholesky: Array

    def apply(self, v: Array) -> Array:
        return self.matrix @ v

    def apply_sqrt(self, v: Array) -> Array:
        return self.cholesky @ v


class DiagonalPreconditioner(NamedTuple):
    """``M = diag(diagonal)``; build it with :func:`diagonal_preconditioner`.

    Examples
    --------
    >>> p = DiagonalPreconditioner(jnp.array([4.0, 1.0]))
    >>> p.apply_sqrt(jnp.ones(2))
    Array([2., 1.], dtype=float32)
    """

    diagonal: Array

    def apply(self, v: Array) -> Array:
        return self.diagonal * v

    def apply_sqrt(self, v: Array) -> Array:
        return jnp.sqrt(self.diagonal) * v


@jax.tree_util.register_pytree_node_class
class LinearOperatorPreconditioner:
    """``M`` given as two functions: ``v ↦ M v`` and ``v ↦ S v`` with ``S Sᵀ = M``.

    The functions are static (part of the tree structure): closing them over new
    arrays recompiles. Use the dense or diagonal kinds for knobs you change often.

    Examples
    --------
    >>> p = LinearOperatorPreconditioner(lambda v: 4.0 * v, lambda v: 2.0 * v)
    >>> p.apply(jnp.ones(2))
    Array([4., 4.], dtype=float32)
    """

    def __init__(
        self,
        apply_fn: Callable[[Array], Array],
        apply_sqrt_fn: Callable[[Array], Array],
    ):
        if not callable(apply_fn) or not callable(apply_sqrt_fn):
            raise TypeError("`apply_fn` and `apply_sqrt_fn` must both be callables.")
        self.apply_fn = apply_fn
        self.apply_sqrt_fn = apply_sqrt_fn

    def apply(self, v):
        return self.apply_fn(v)

    def apply_sqrt(self, v):
        return self.apply_sqrt_fn(v)

    def tree_flatten(self):
        return (), (self.apply_fn, self.apply_sqrt_fn)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux)


def dense_preconditioner(matrix: ArrayLike) -> DensePreconditioner:
    """A dense symmetric positive-definite preconditioner.

    Examples
    --------
    >>> p = dense_preconditioner(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
    >>> bool(jnp.allclose(p.cholesky @ p.cholesky.T, p.matrix))
    True
    """
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"A dense preconditioner must be a square matrix, got shape {matrix.shape}."
        )
    if not jnp.issubdtype(matrix.dtype, jnp.floating):
        raise TypeError(
            f"The preconditioner `matrix` must be floating point, got {matrix.dtype}; "
            "pass e.g. jnp.asarray(M, jnp.float32)."
        )
    check_finite_values("matrix", matrix, " (the dense preconditioner)")
    m = np.asarray(matrix, dtype=np.float64)
    if not np.allclose(m, m.T, rtol=1e-5, atol=1e-8):
        raise ValueError("The preconditioner must be symmetric; pass (M + M.T) / 2.")
    if np.linalg.eigvalsh(m).min() <= 0:
        raise ValueError("The preconditioner must be positive definite.")
    return DensePreconditioner(matrix, jnp.linalg.cholesky(matrix))


def diagonal_preconditioner(diagonal: ArrayLike) -> DiagonalPreconditioner:
    """A diagonal preconditioner ``M = diag(diagonal)`` with positive entries.

    Examples
    --------
    >>> p = diagonal_preconditioner(jnp.array([4.0, 1.0]))
    >>> p.apply(jnp.ones(2))
    Array([4., 1.], dtype=float32)
    """
    diagonal = jnp.asarray(diagonal)
    if diagonal.ndim != 1:
        raise ValueError(
            "`diagonal` must be a vector (the flattened position), got "
            f"{diagonal.shape}."
        )
    if not jnp.issubdtype(diagonal.dtype, jnp.floating):
        raise TypeError(
            f"`diagonal` must be floating point, got {diagonal.dtype}; pass e.g. "
            "jnp.asarray(d, jnp.float32)."
        )
    if not bool(jnp.all(jnp.isfinite(diagonal) & (diagonal > 0))):
        raise ValueError(
            "Every entry of `diagonal` (a diagonal preconditioner) must be finite and "
            "> 0; a zero entry freezes that coordinate, a NaN or inf one breaks every "
            "step."
        )
    return DiagonalPreconditioner(diagonal)


_OPERATOR_METHODS = ("apply", "adjoint", "solve_outer", "sqrt_solve_normal")


def is_operator(A) -> bool:
    """True for a structured forward operator (anything with the operator methods
    ``apply``, ``adjoint``, ``solve_outer``, ``sqrt_solve_normal`` and shapes), as
    opposed to a dense matrix.

    Examples
    --------
    >>> from numpyro_almc.operators import Mask
    >>> is_operator(Mask(jnp.array([True, False]))), is_operator(jnp.eye(2))
    (True, False)
    """
    return all(callable(getattr(A, m, None)) for m in _OPERATOR_METHODS) and all(
        hasattr(A, s) for s in ("in_shape", "out_shape")
    )


def linear_gaussian_preconditioner(
    A: ArrayLike, noise_std: ArrayLike, *, prior_precision: float = 1.0, dtype=None
):
    r"""``M = (λ I + Aᵀ Σ^{-1} A)^{-1}`` for the likelihood ``y = A x + N(0, Σ)``.

    This is the inverse Hessian of the warm-start potential ``|x|²/2 + R(x)`` (with
    ``λ = prior_precision = 1``): preconditioned Langevin then moves as fast along the
    directions the data pin down as along those only the prior constrains.

    Parameters
    ----------
    A
        ``(d_y, d)`` forward matrix, or a structured operator
        (:mod:`numpyro_almc.operators`): then the result is ``A.preconditioner(
        noise_std**2)``, matrix-free, acting on the flattened ``in_shape``.
    noise_std
        Scalar or ``(d_y,)`` measurement noise standard deviation (a scalar for an
        operator).
    prior_precision
        ``λ``, the curvature assumed for the prior (1 for a unit-scale prior; must
        be 1 for an operator).

    Examples
    --------
    >>> p = linear_gaussian_preconditioner(jnp.array([[0.0, 1.0]]), 0.1)
    >>> [round(float(v), 4) for v in jnp.diag(p.matrix)]
    [1.0, 0.0099]
    >>> from numpyro_almc.operators import Mask
    >>> p = linear_gaussian_preconditioner(Mask(jnp.array([False, True])), 0.1)
    >>> [round(float(v), 4) for v in p.apply(jnp.ones(2))]
    [1.0, 0.0099]
    """
    if (
        isinstance(noise_std, str)
        or not isinstance(noise_std, numbers.Real | jax.Array | np.ndarray | np.generic)
        or isinstance(noise_std, bool)
    ):
        raise TypeError(
            "`noise_std` must be a positive number or array of them, got "
            f"{type(noise_std).__name__}."
        )
    if is_concrete(noise_std):
        ns = np.asarray(noise_std, dtype=np.float64)
        if not np.all(np.isfinite(ns) & (ns > 0)):
            raise ValueError(
                f"`noise_std` must be finite and > 0, got {noise_std!r} (for a "
                "noiseless observation pass a small positive value, e.g. 1e-3)."
            )
    if isinstance(prior_precision, bool) or not isinstance(
        prior_precision, numbers.Real | jax.Array | np.ndarray | np.generic
    ):
        raise TypeError(
            f"`prior_precision` must be a positive number, got "
            f"{type(prior_precision).__name__}."
        )
    if is_concrete(prior_precision) and not (
        math.isfinite(float(prior_precision)) and float(prior_precision) > 0
    ):
        raise ValueError(
            f"`prior_precision` must be finite and > 0, got {prior_precision}."
        )
    if is_operator(A):
        if prior_precision != 1.0:
            raise ValueError(
                "`prior_precision` must be 1 with an operator `A`; rescale x so the "
                "prior has unit scale."
            )
        if jnp.ndim(noise_std) != 0:
            raise ValueError(
                "`noise_std` must be a scalar with an operator `A`; for per-pixel "
                "noise, whiten y and fold the scales into the operator."
            )
        return A.preconditioner(jnp.asarray(noise_std) ** 2)
    if (
        isinstance(A, str)
        or not hasattr(A, "__array__")
        and not isinstance(A, list | tuple)
    ):
        raise TypeError(
            "`A` must be a (d_y, d) matrix or an operator from numpyro_almc.operators, "
            f"got {type(A).__name__}."
        )
    A = jnp.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"`A` must be a (d_y, d) matrix, got shape {A.shape}.")
    check_finite_values("A", A, " (the forward matrix)")
    if dtype is not None:
        from numpyro_almc._validate import check_float_dtype

        dtype = check_float_dtype("dtype", dtype)
    dtype = dtype or (A.dtype if jnp.issubdtype(A.dtype, jnp.floating) else None)
    if jnp.ndim(noise_std) > 1 or jnp.size(noise_std) not in (1, A.shape[0]):
        raise ValueError(
            f"`noise_std` must be a scalar or have shape ({A.shape[0]},) (one per "
            f"row of A), got shape {jnp.shape(noise_std)}."
        )
    noise_std = jnp.broadcast_to(
        jnp.asarray(noise_std, dtype=dtype).reshape(-1), A.shape[:1]
    )
    if is_concrete(noise_std) and not bool(jnp.all(noise_std > 0)):
        raise ValueError(
            "`noise_std` must be > 0 (it underflows to 0 in the dtype used)."
        )
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(noise_std.dtype)
    weighted = A / noise_std[:, None]
    hessian = (
        prior_precision * jnp.eye(A.shape[1], dtype=A.dtype) + weighted.T @ weighted
    )
    return inverse_hessian_preconditioner(hessian)


def inverse_hessian_preconditioner(hessian: Array) -> DensePreconditioner:
    """``M = H^{-1}`` (symmetrised) with its Cholesky factor, for a positive-definite
    Hessian ``H``; jit-friendly (no eager checks)."""
    matrix = jnp.linalg.inv(hessian)
    matrix = 0.5 * (matrix + matrix.T)
    return DensePreconditioner(matrix, jnp.linalg.cholesky(matrix))


def hessian_preconditioner(
    loglikelihood_fn, position, *, prior_precision: float = 1.0
) -> DensePreconditioner:
    r"""``M = (λ I + [-∇² log L(position)]_+)^{-1}`` from the Hessian at one point.

    Negative curvature is clipped to zero (eigenvalues), so ``M`` is always positive
    definite. Exact for a linear-Gaussian likelihood (where it equals
    :func:`linear_gaussian_preconditioner`); elsewhere a local guess, so compute it at
    a representative point. Costs a dense Hessian: for flattened sizes up to a few
    thousand. Works under ``jit``/``vmap``.

    Examples
    --------
    >>> A = jnp.array([[0.0, 1.0]])
    >>> p = hessian_preconditioner(lambda x: -0.5 * jnp.sum((A @ x) ** 2) / 0.01,
    ...                            jnp.zeros(2))
    >>> [round(float(v), 4) for v in jnp.diag(p.matrix)]
    [1.0, 0.0099]
    """
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(position)
    hess = -jax.hessian(lambda v: loglikelihood_fn(unravel(v)))(flat)
    hess = 0.5 * (hess + hess.T)
    eigvals, eigvecs = jnp.linalg.eigh(hess)
    inv = 1.0 / (prior_precision + jnp.maximum(eigvals, 0.0))
    matrix = (eigvecs * inv) @ eigvecs.T
    # Any S with S Sᵀ = M serves as the square root; this one needs no Cholesky.
    sqrt = eigvecs * jnp.sqrt(inv)
    return DensePreconditioner(matrix.astype(flat.dtype), sqrt.astype(flat.dtype))


def hessian_diagonal_preconditioner(
    loglikelihood_fn, position, *, prior_precision: float = 1.0
) -> DiagonalPreconditioner:
    r"""``M = diag(1 / (λ + [-∂²_{ii} log L(position)]_+))``: the Hessian's diagonal.

    Costs ``d`` Hessian-vector products (``jax.lax.map`` over the unit vectors, so
    memory stays ``O(d)``) and no ``d × d`` matrix: the choice for signals too large
    for :func:`hessian_preconditioner`. Exact when ``∇²R`` is diagonal (inpainting,
    denoising); elsewhere it rescales each coordinate by its own curvature.

    Examples
    --------
    >>> A = jnp.array([[0.0, 1.0]])
    >>> p = hessian_diagonal_preconditioner(
    ...     lambda x: -0.5 * jnp.sum((A @ x) ** 2) / 0.01, jnp.zeros(2))
    >>> [round(float(v), 4) for v in p.diagonal]
    [1.0, 0.0099]
    """
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(position)

    def neg_loglik(v):
        return -loglikelihood_fn(unravel(v))

    def curvature(i):
        e = jnp.zeros_like(flat).at[i].set(1.0)
        _, hvp = jax.jvp(jax.grad(neg_loglik), (flat,), (e,))
        return hvp[i]

    diag = jax.lax.map(curvature, jnp.arange(flat.shape[0]))
    inv = 1.0 / (prior_precision + jnp.maximum(diag, 0.0))
    return DiagonalPreconditioner(inv.astype(flat.dtype))


def check_preconditioner(preconditioner, position, name: str = "preconditioner"):
    """Raise unless ``preconditioner`` is None or a preconditioner for ``position``.

    Checked eagerly, before any tracing: the kind (an object with ``apply`` and
    ``apply_sqrt``, or a time-dependent one with ``at``), its size against the
    flattened position (``apply`` on a vector of that size must return that size)
    and, for the dense and diagonal kinds with concrete arrays, finite values and
    (diagonal) positive entries.
    """
    if preconditioner is None:
        return None
    from jax.flatten_util import ravel_pytree

    if isinstance(preconditioner, str):
        raise TypeError(
            f"`{name}` must be None or a preconditioner object, got the string "
            f"{preconditioner!r} ('auto' is an option of the NumPyro kernels ALMC / "
            "ALMCSMC); build one with linear_gaussian_preconditioner(A, noise_std)."
        )
    time_dependent = getattr(preconditioner, "time_dependent", False)
    probe = preconditioner
    if time_dependent:
        if not callable(getattr(preconditioner, "at", None)):
            raise TypeError(f"The time-dependent `{name}` needs an `at(t)` method.")
    elif not (
        callable(getattr(preconditioner, "apply", None))
        and callable(getattr(preconditioner, "apply_sqrt", None))
    ):
        raise TypeError(
            f"`{name}` must be None or a preconditioner object with apply and "
            f"apply_sqrt, got {type(preconditioner).__name__}; for a matrix M use "
            "dense_preconditioner(M), for a diagonal diagonal_preconditioner(d), or "
            "linear_gaussian_preconditioner(A, noise_std)."
        )
    flat = jax.eval_shape(lambda p: ravel_pytree(p)[0], position)
    d = flat.shape[0]
    if isinstance(preconditioner, DiagonalPreconditioner):
        shapes = {"diagonal": jnp.shape(preconditioner.diagonal)}
        want = {"diagonal": (d,)}
    elif isinstance(preconditioner, DensePreconditioner):
        shapes = {
            "matrix": jnp.shape(preconditioner.matrix),
            "cholesky": jnp.shape(preconditioner.cholesky),
        }
        want = {"matrix": (d, d), "cholesky": (d, d)}
    else:
        shapes = want = {}
    for field, shape in shapes.items():
        if shape != want[field]:
            raise ValueError(
                f"`{name}` has {field} of shape {shape} but the flattened position "
                f"has {d} numbers (need {want[field]}): build it for this position."
            )
    if not shapes:
        try:
            if time_dependent:
                out = jax.eval_shape(
                    lambda v: preconditioner.at(jnp.ones((), v.dtype)).apply(v), flat
                )
            else:
                out = jax.eval_shape(probe.apply, flat)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"`{name}` cannot act on the flattened position ({d} numbers): {e}"
            ) from None
        if jnp.shape(out) != (d,):
            raise ValueError(
                f"`{name}` maps the flattened position ({d} numbers) to shape "
                f"{jnp.shape(out)}: build it for this position."
            )
    return check_preconditioner_values(preconditioner, name)


def check_preconditioner_values(preconditioner, name: str = "preconditioner"):
    """The checks of :func:`check_preconditioner` that need no position: a
    concrete diagonal finite and ``> 0``, a dense matrix and factor finite."""
    if isinstance(preconditioner, DiagonalPreconditioner) and is_concrete(
        preconditioner.diagonal
    ):
        diag = np.asarray(preconditioner.diagonal)
        if not np.all(np.isfinite(diag) & (diag > 0)):
            raise ValueError(
                f"`{name}` is diagonal with entries that are not finite and > 0 (a "
                "zero freezes a coordinate, NaN breaks every step); build it with "
                "diagonal_preconditioner(d)."
            )
    if isinstance(preconditioner, DensePreconditioner):
        check_finite_values(name, preconditioner.matrix, " (its matrix)")
        check_finite_values(name, preconditioner.cholesky, " (its Cholesky factor)")
    return preconditioner
