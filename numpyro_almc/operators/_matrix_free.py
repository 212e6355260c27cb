r"""Matrix-free operators: solves by conjugate gradients (lineax), roots by Chebyshev.

Solves of the SPD systems ``(a I + b AᵀA) u = v`` and ``(a I + b A Aᵀ) u = w`` use
:class:`lineax.CG` with the operator's ``rtol``/``atol``/``max_steps``; CG stops when
every residual entry satisfies ``|r_i| <= atol + rtol (‖rhs‖∞ + |rhs_i|)`` (so
``‖r‖∞ <= atol + 2 rtol ‖rhs‖∞``; the error in ``u`` is at most the condition
number ``1 + b‖A‖²/a`` times that, relatively). In float32 the residual stalls near
``1e-7 (1 + b‖A‖²/a)``: for ``b‖A‖²/a > 100`` loosen ``rtol`` to ``1e-4``, or
work in float64.

**Convergence.** ``*_info`` methods return ``(value, SolveInfo)``; ``SolveInfo`` says
whether the solver met its tolerance and how many steps it took. The plain methods
raise :class:`ConvergenceError` in eager use; inside ``jit``/``vmap`` nothing can
raise, so a non-converged result is returned as all-NaN (never a silently wrong
number: the sampler's non-finite guard flags it). Call the ``*_info`` form inside
``jit`` to inspect the status instead.

**Square roots.** ``(a I + b AᵀA)^{-1/2} v`` uses the Chebyshev expansion of
``λ ↦ (a + λ)^{-1/2}`` on ``[0, b L]``, ``L ≥ ‖A‖₂²`` (``norm_sq_bound``), through
the three-term recurrence: a polynomial in ``AᵀA``, hence exactly symmetric. The
number of terms ``k`` is the smallest for which the a-priori (Bernstein-ellipse)
bound on the truncation error is ``≤ rtol ‖result‖``, at most ``sqrt_max_terms``;
it grows like ``sqrt(b L / a) log(1 / rtol)`` (≈ 110 terms for ``b L / a = 100``,
``rtol = 1e-5``). Round-off in float32 adds about ``k · 1e-7`` relatively. An
``L`` below the true ``‖A‖₂²`` makes the expansion diverge: give a true upper bound.
Without a bound the root raises ``NotImplementedError``.

**Log-determinants** of matrix-free operators are not computed (they would need a
stochastic estimator such as Lanczos quadrature): they raise ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.fft as jfft
import lineax as lx
import numpy as np

from numpyro_almc.operators._base import (
    AbstractLinearOperator,
    _check_array_shape,
    _check_factors,
    _check_shape_tuple,
    _is_concrete,
)
from numpyro_almc.types import Array

__all__ = [
    "ComposedOperator",
    "ConvergenceError",
    "MatrixFreeOperator",
    "SolveInfo",
]


class ConvergenceError(RuntimeError):
    """An iterative solve or root did not meet its tolerance (eager use only).

    Examples
    --------
    >>> issubclass(ConvergenceError, RuntimeError)
    True
    """


class SolveInfo(NamedTuple):
    """Status of a matrix-free solve or square root.

    Attributes
    ----------
    converged
        Boolean scalar: the tolerance was met.
    num_steps
        ``int32`` scalar: CG iterations, or Chebyshev terms used.

    Examples
    --------
    >>> SolveInfo(jnp.array(True), jnp.array(3, dtype=jnp.int32)).converged
    Array(True, dtype=bool)
    """

    converged: Array
    num_steps: Array


def _finish(value, info: SolveInfo, what: str, hint: str):
    if _is_concrete(info.converged):
        if not bool(info.converged):
            raise ConvergenceError(
                f"{what} did not converge in {int(info.num_steps)} steps; {hint}"
            )
        return value
    return jnp.where(info.converged, value, jnp.full_like(value, jnp.nan))


_CG_HINT = (
    "raise `max_steps`, loosen `rtol`/`atol`, or check that the operator is "
    "linear (its adjoint must be exact)."
)


class AbstractMatrixFreeOperator(AbstractLinearOperator):
    """Base of operators solved iteratively; see the module docstring.

    Subclasses give ``apply``/``adjoint``; they may override
    ``_normal_preconditioner(a, b)`` / ``_outer_preconditioner(a, b)`` (a function
    ``v ↦ M v`` with ``M`` SPD, or None) to speed up CG. It is long because it holds
    every iterative solve in one place (CG through lineax with its convergence
    check, the Chebyshev root, the ``*_info`` variants).

    Examples
    --------
    >>> op = MatrixFreeOperator(lambda x: 2.0 * x, (3,), spectral_bound=4.0)
    >>> isinstance(op, AbstractMatrixFreeOperator)
    True
    """

    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    sqrt_max_terms: int = eqx.field(static=True)

    def _factors(self, a, b):
        # Arrays, not Python floats: filter_jit would make floats static (recompile).
        return jnp.asarray(a, self.dtype), jnp.asarray(b, self.dtype)

    def _normal_preconditioner(self, a, b):
        return None

    def _outer_preconditioner(self, a, b):
        return None

    def _cg(self, matvec, rhs, preconditioner) -> tuple[Array, SolveInfo]:
        structure = jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
        operator = lx.FunctionLinearOperator(
            matvec, structure, tags=lx.positive_semidefinite_tag
        )
        options = {}
        if preconditioner is not None:
            options["preconditioner"] = lx.FunctionLinearOperator(
                preconditioner, structure, tags=lx.positive_semidefinite_tag
            )
        # lineax scales the residual entrywise by atol + rtol |rhs_i|, which never
        # converges in floating point where rhs_i ≈ 0: add rtol ‖rhs‖∞ to atol so the
        # test reads |r_i| <= atol + rtol (‖rhs‖∞ + |rhs_i|), a relative residual.
        # The tolerance is not part of the answer: without stop_gradient a solve whose
        # right-hand side depends on x cannot be differentiated (lineax refuses a
        # tangent in the solver).
        atol = self.atol + self.rtol * jax.lax.stop_gradient(jnp.max(jnp.abs(rhs)))
        solver = lx.CG(rtol=self.rtol, atol=atol, max_steps=self.max_steps)
        solution = lx.linear_solve(
            operator, rhs, solver=solver, options=options, throw=False
        )
        converged = solution.result == lx.RESULTS.successful
        converged = converged & jnp.all(jnp.isfinite(solution.value))
        steps = jnp.asarray(solution.stats["num_steps"], dtype=jnp.int32)
        return solution.value, SolveInfo(converged, steps)

    def solve_normal_info(self, v, a, b) -> tuple[Array, SolveInfo]:
        """``(a I + b AᵀA)^{-1} v`` by CG, with its :class:`SolveInfo`.

        Examples
        --------
        >>> op = MatrixFreeOperator(lambda x: 2.0 * x, (3,))
        >>> u, info = op.solve_normal_info(jnp.ones(3), 1.0, 1.0)
        >>> u, bool(info.converged)
        (Array([0.2, 0.2, 0.2], dtype=float32), True)
        """
        v = _check_array_shape("v", v, self.in_shape)
        _check_factors(a, b)
        return _solve_normal_jit(self, v.astype(self.dtype), *self._factors(a, b))

    def solve_outer_info(self, w, a, b) -> tuple[Array, SolveInfo]:
        """``(a I + b A Aᵀ)^{-1} w`` by CG, with its :class:`SolveInfo`.

        Examples
        --------
        >>> op = MatrixFreeOperator(lambda x: 2.0 * x, (3,))
        >>> u, info = op.solve_outer_info(jnp.ones(3), 1.0, 1.0)
        >>> u
        Array([0.2, 0.2, 0.2], dtype=float32)
        """
        w = _check_array_shape("w", w, self.out_shape)
        _check_factors(a, b)
        return _solve_outer_jit(self, w.astype(self.dtype), *self._factors(a, b))

    def solve_normal(self, v, a, b):
        """``(a I + b AᵀA)^{-1} v`` by CG (all-NaN inside jit if not converged).

        Examples
        --------
        >>> MatrixFreeOperator(lambda x: 2.0 * x, (2,)).solve_normal(
        ...     jnp.ones(2), 1.0, 1.0)
        Array([0.2, 0.2], dtype=float32)
        """
        value, info = self.solve_normal_info(v, a, b)
        return _finish(value, info, "solve_normal (CG)", _CG_HINT)

    def solve_outer(self, w, a, b):
        """``(a I + b A Aᵀ)^{-1} w`` by CG (all-NaN inside jit if not converged).

        Examples
        --------
        >>> MatrixFreeOperator(lambda x: 2.0 * x, (2,)).solve_outer(
        ...     jnp.ones(2), 1.0, 1.0)
        Array([0.2, 0.2], dtype=float32)
        """
        value, info = self.solve_outer_info(w, a, b)
        return _finish(value, info, "solve_outer (CG)", _CG_HINT)

    def sqrt_solve_normal_info(self, v, a, b) -> tuple[Array, SolveInfo]:
        """``(a I + b AᵀA)^{-1/2} v`` by a Chebyshev expansion, with its status.

        Needs ``norm_sq_bound()``; see the module docstring for the error bound.

        Examples
        --------
        >>> op = MatrixFreeOperator(lambda x: 2.0 * x, (2,), spectral_bound=4.0)
        >>> u, info = op.sqrt_solve_normal_info(jnp.ones(2), 1.0, 0.75)
        >>> [round(float(t), 4) for t in u]  # (1 + 0.75 * 4)^{-1/2}
        [0.5, 0.5]
        """
        v = _check_array_shape("v", v, self.in_shape)
        _check_factors(a, b)
        bound = self.norm_sq_bound()
        if bound is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no spectral bound, so "
                "(a I + b AᵀA)^{-1/2} cannot be approximated safely. Pass "
                "`spectral_bound` (an upper bound on ‖A‖₂², e.g. a few power "
                "iterations times a safety factor), or use "
                "DenseOperator(op.as_matrix()) at small sizes, or a non-symmetric "
                "root such as a Cholesky factor of the dense matrix."
            )
        return _sqrt_solve_normal_jit(self, v.astype(self.dtype), *self._factors(a, b))

    def sqrt_solve_normal(self, v, a, b):
        """``(a I + b AᵀA)^{-1/2} v`` by Chebyshev (all-NaN in jit if not converged).

        Examples
        --------
        >>> op = MatrixFreeOperator(lambda x: 2.0 * x, (2,), spectral_bound=4.0)
        >>> [round(float(t), 4) for t in op.sqrt_solve_normal(jnp.ones(2), 1.0, 0.75)]
        [0.5, 0.5]
        """
        value, info = self.sqrt_solve_normal_info(v, a, b)
        return _finish(
            value,
            info,
            "sqrt_solve_normal (Chebyshev)",
            "raise `sqrt_max_terms` (terms grow like sqrt(b ‖A‖² / a)) or loosen "
            "`rtol`.",
        )

    def logdet_normal(self, a, b):
        """Not available matrix-free: raises ``NotImplementedError``.

        Examples
        --------
        >>> MatrixFreeOperator(lambda x: x, (2,)).logdet_normal(1.0, 1.0)
        Traceback (most recent call last):
        ...
        NotImplementedError: ...
        """
        raise NotImplementedError(
            f"{type(self).__name__} is matrix-free: log det(a I + b AᵀA) is not "
            "computed (it would need a stochastic Lanczos-quadrature estimate). Use a "
            "structured operator, or DenseOperator(op.as_matrix()) at small sizes."
        )

    def logdet_outer(self, a, b):
        """Not available matrix-free: raises ``NotImplementedError``.

        Examples
        --------
        >>> MatrixFreeOperator(lambda x: x, (2,)).logdet_outer(1.0, 1.0)
        Traceback (most recent call last):
        ...
        NotImplementedError: ...
        """
        raise NotImplementedError(
            f"{type(self).__name__} is matrix-free: log det(a I + b A Aᵀ) is not "
            "computed. Use a structured operator, or DenseOperator(op.as_matrix()) "
            "at small sizes."
        )


# Compiled once per operator structure (shapes, static options, the function of a
# MatrixFreeOperator): eager calls with new arrays, or a new a and b, reuse it.
@eqx.filter_jit
def _solve_normal_jit(op, v, a, b):
    def matvec(u):
        return a * u + b * op.adjoint(op.apply(u))

    return op._cg(matvec, v, op._normal_preconditioner(a, b))


@eqx.filter_jit
def _solve_outer_jit(op, w, a, b):
    def matvec(u):
        return a * u + b * op.apply(op.adjoint(u))

    return op._cg(matvec, w, op._outer_preconditioner(a, b))


@eqx.filter_jit
def _sqrt_solve_normal_jit(op, v, a, b):
    bound = jnp.asarray(op.norm_sq_bound(), v.dtype)
    return _chebyshev_inv_sqrt(
        lambda u: op.adjoint(op.apply(u)), v, a, b, bound, op.rtol, op.sqrt_max_terms
    )


def _chebyshev_inv_sqrt(normal_mv, v, a, b, bound, rtol, max_terms):
    """``(a I + b N)^{-1/2} v`` for ``N = AᵀA`` with spectrum in ``[0, bound]``."""
    num_nodes = 2 * max_terms  # interpolate on twice the nodes: small aliasing error
    # Expand on [0, width] ⊇ [0, b L]; the floor keeps b = 0 (and b L << a) finite.
    width = jnp.maximum(b * bound, 1e-6 * a)
    theta = jnp.pi * (jnp.arange(num_nodes, dtype=v.dtype) + 0.5) / num_nodes
    f_nodes = (a + 0.5 * width * (jnp.cos(theta) + 1.0)) ** -0.5
    # DCT-II: y_j = 2 Σ_k f_k cos(j θ_k), so c_j = y_j / N, with c_0 halved below.
    coeffs = jfft.dct(f_nodes, type=2) / num_nodes
    coeffs = coeffs.at[0].multiply(0.5)[:max_terms]

    # How many terms: an a-priori bound, not the computed coefficients (in float32
    # their round-off floor, summed over thousands of terms, would swamp any tail
    # test). On [-1, 1], f(x) = (α + β x)^{-1/2} with β = width/2, α = a + β, is
    # analytic inside the Bernstein ellipse E_ρ for ρ < ρ* = s + sqrt(s² - 1),
    # s = α/β; there |f| <= M = (β (s - (ρ + 1/ρ)/2))^{-1/2}, so |c_j| <= 2 M ρ^{-j}
    # and, since |T_j| <= 1 on the spectrum, stopping after k terms errs by at most
    # 2 M ρ^{-k} / (1 - 1/ρ) ‖v‖. Take the smallest k over a grid of ρ that makes
    # this <= rtol f_min ‖v‖ <= rtol ‖result‖.
    beta = 0.5 * width
    s = (a + beta) / beta  # <= 1 + 2e6 by the floor on width
    rho_max = s + jnp.sqrt(s**2 - 1.0)
    rho = 1.0 + (rho_max - 1.0) * jnp.linspace(0.05, 0.95, 19, dtype=v.dtype)
    bound_m = (beta * (s - 0.5 * (rho + 1.0 / rho))) ** -0.5
    f_min = (a + width) ** -0.5
    needed = jnp.log(2.0 * bound_m / ((1.0 - 1.0 / rho) * rtol * f_min)) / jnp.log(rho)
    needed = jnp.maximum(jnp.ceil(jnp.min(needed)), 1.0)
    converged = needed <= max_terms
    num_terms = jnp.where(converged, needed, max_terms).astype(jnp.int32)

    # Spectrum of b N mapped onto [-1, 1]: B = (2 / width) b N - I.
    def mapped(u):
        return (2.0 / width) * b * normal_mv(u) - u

    t0 = v
    t1 = mapped(v)
    acc = coeffs[0] * t0 + jnp.where(num_terms > 1, coeffs[1], 0.0) * t1

    def cond(carry):
        return carry[0] < num_terms

    def body(carry):
        k, t_prev, t_cur, acc = carry
        t_next = 2.0 * mapped(t_cur) - t_prev
        return k + 1, t_cur, t_next, acc + coeffs[k] * t_next

    _, _, _, acc = jax.lax.while_loop(cond, body, (jnp.int32(2), t0, t1, acc))
    converged = converged & jnp.all(jnp.isfinite(acc))
    return acc, SolveInfo(converged, num_terms.astype(jnp.int32))


def _check_solver_options(rtol, atol, max_steps, sqrt_max_terms):
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"`{name}` must be a float >= 0, got {value!r}.")
    if rtol == 0 and atol == 0:
        raise ValueError("Give `rtol` > 0 or `atol` > 0 (a tolerance for CG).")
    for name, value in (("max_steps", max_steps), ("sqrt_max_terms", sqrt_max_terms)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"`{name}` must be an integer >= 2, got {value!r}.")
    return float(rtol), float(atol), int(max_steps), int(sqrt_max_terms)


class MatrixFreeOperator(AbstractMatrixFreeOperator):
    r"""A linear operator given as a JAX function ``fn(x)``.

    The adjoint is ``jax.linear_transpose(fn)`` (exact). Solves are CG through
    lineax, square roots Chebyshev expansions, log-determinants unavailable (see
    the module docstring for tolerances and the convergence flag).

    ``fn`` is static (part of the tree structure): keep one function object for a
    run; a new closure recompiles.

    Parameters
    ----------
    fn
        A *linear* function of one array of ``in_shape``.
    in_shape
        Shape of ``x``; ``out_shape`` is inferred with ``jax.eval_shape``.
    dtype
        Floating dtype of ``x`` (default: JAX's default float).
    rtol
        CG relative tolerance (lineax's ``CG(rtol, atol)``), also the relative
        accuracy of the Chebyshev root; the default ``1e-5`` is float32 level.
    atol
        CG absolute tolerance.
    max_steps
        CG iteration cap (default 2000); reaching it means "not converged".
    spectral_bound
        An upper bound on ``‖A‖₂²``, needed by ``sqrt_solve_normal``.
    sqrt_max_terms
        Cap on the Chebyshev terms (default 2000).
    check_linear
        Check ``fn(x + 2y) = fn(x) + 2 fn(y)`` on random inputs at construction.

    Examples
    --------
    >>> op = MatrixFreeOperator(lambda x: jnp.cumsum(x), (3,))
    >>> op.adjoint(jnp.array([1.0, 0.0, 0.0]))
    Array([1., 0., 0.], dtype=float32)
    >>> u = op.solve_normal(jnp.ones(3), 1.0, 1.0)
    >>> bool(jnp.allclose(u + op.adjoint(op.apply(u)), 1.0, atol=1e-4))
    True
    """

    fn: Callable = eqx.field(static=True)
    spectral_bound: float | None = eqx.field(static=True)
    _dtype: np.dtype = eqx.field(static=True)

    def __init__(
        self,
        fn: Callable[[Array], Array],
        in_shape,
        dtype=None,
        *,
        rtol: float = 1e-5,
        atol: float = 0.0,
        max_steps: int = 2000,
        spectral_bound: float | None = None,
        sqrt_max_terms: int = 2000,
        check_linear: bool = True,
    ):
        if not callable(fn):
            raise TypeError(f"`fn` must be a callable x -> A x, got {fn!r}.")
        self.in_shape = _check_shape_tuple("in_shape", in_shape)
        dtype = jax.dtypes.canonicalize_dtype(float if dtype is None else dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
        self._dtype = dtype
        self.rtol, self.atol, self.max_steps, self.sqrt_max_terms = (
            _check_solver_options(rtol, atol, max_steps, sqrt_max_terms)
        )
        if spectral_bound is not None:
            if not isinstance(spectral_bound, int | float) or not spectral_bound > 0:
                raise ValueError(
                    "`spectral_bound` must be a float > 0 bounding ‖A‖₂² from "
                    f"above, got {spectral_bound!r}."
                )
            spectral_bound = float(spectral_bound)
        self.spectral_bound = spectral_bound
        try:
            out = jax.eval_shape(fn, jax.ShapeDtypeStruct(self.in_shape, dtype))
        except Exception as err:
            raise ValueError(
                f"`fn` failed on an input of shape {self.in_shape} and dtype {dtype}: "
                f"{err}"
            ) from err
        if not isinstance(out, jax.ShapeDtypeStruct) or out.dtype != dtype:
            raise TypeError(f"`fn` must return one array of dtype {dtype}, got {out}.")
        self.out_shape = tuple(out.shape) if out.shape else (1,)
        if not out.shape:
            raise ValueError("`fn` returns a scalar; return an array of shape (1,).")
        self.fn = fn
        if check_linear:
            self._check_linear()

    def _check_linear(self):
        rng = np.random.default_rng(0)
        x, y = (
            jnp.asarray(rng.standard_normal(self.in_shape), self._dtype) for _ in "xy"
        )
        lhs = self.fn(x + 2.0 * y)
        rhs = self.fn(x) + 2.0 * self.fn(y)
        scale = float(jnp.max(jnp.abs(lhs))) + float(jnp.max(jnp.abs(rhs))) + 1e-30
        if float(jnp.max(jnp.abs(lhs - rhs))) > 1e-3 * scale:
            raise ValueError(
                "`fn` is not linear (fn(x + 2y) != fn(x) + 2 fn(y)); pass the linear "
                "forward map only (no offset or nonlinearity), or check_linear=False "
                "if this is round-off."
            )

    @property
    def dtype(self):
        return self._dtype

    def apply(self, x):
        x = _check_array_shape("x", x, self.in_shape)
        return self.fn(x.astype(self._dtype))

    def adjoint(self, y):
        y = _check_array_shape("y", y, self.out_shape)
        transpose = jax.linear_transpose(
            self.fn, jax.ShapeDtypeStruct(self.in_shape, self._dtype)
        )
        return transpose(y.astype(self._dtype))[0]

    def norm_sq_bound(self):
        return self.spectral_bound


class ComposedOperator(AbstractMatrixFreeOperator):
    r"""``A = outer ∘ inner``, solved matrix-free (CG; Chebyshev root).

    Two structured operators are generally not simultaneously diagonalisable (a
    mask and a periodic convolution: the mask is diagonal in pixels, the convolution
    in Fourier), so the composition falls back to the matrix-free path. Use
    :func:`numpyro_almc.operators.compose`, which returns a structured operator where
    one exists. The spectral bound is ``bound(outer) · bound(inner)`` when both are
    known; log-determinants are unavailable.

    Parameters
    ----------
    outer
        The operator applied last, ``A x = outer(inner(x))``.
    inner
        The operator applied first, with ``inner.out_shape == outer.in_shape``.
    rtol
        As for :class:`MatrixFreeOperator`.
    atol
        As for :class:`MatrixFreeOperator`.
    max_steps
        As for :class:`MatrixFreeOperator`.
    sqrt_max_terms
        As for :class:`MatrixFreeOperator`.

    Examples
    --------
    >>> from numpyro_almc.operators import Mask, PeriodicConvolution
    >>> blur = PeriodicConvolution(jnp.array([[0.25, 0.5, 0.25]]), (4, 4))
    >>> op = ComposedOperator(Mask(jnp.eye(4, dtype=bool)), blur)
    >>> op.apply(jnp.ones((4, 4)))[0]
    Array([1., 0., 0., 0.], dtype=float32)
    """

    outer: AbstractLinearOperator
    inner: AbstractLinearOperator

    def __init__(
        self,
        outer: AbstractLinearOperator,
        inner: AbstractLinearOperator,
        *,
        rtol: float = 1e-5,
        atol: float = 0.0,
        max_steps: int = 2000,
        sqrt_max_terms: int = 2000,
    ):
        for name, op in (("outer", outer), ("inner", inner)):
            if not isinstance(op, AbstractLinearOperator):
                raise TypeError(
                    f"`{name}` must be a numpyro_almc.operators operator, got "
                    f"{type(op).__name__}."
                )
        if inner.out_shape != outer.in_shape:
            raise ValueError(
                f"Cannot compose: inner.out_shape {inner.out_shape} != outer.in_shape "
                f"{outer.in_shape}."
            )
        self.rtol, self.atol, self.max_steps, self.sqrt_max_terms = (
            _check_solver_options(rtol, atol, max_steps, sqrt_max_terms)
        )
        self.outer, self.inner = outer, inner
        self.in_shape, self.out_shape = inner.in_shape, outer.out_shape

    @property
    def dtype(self):
        return self.inner.dtype

    def apply(self, x):
        return self.outer.apply(self.inner.apply(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))

    def norm_sq_bound(self):
        b_outer, b_inner = self.outer.norm_sq_bound(), self.inner.norm_sq_bound()
        if b_outer is None or b_inner is None:
            return None
        return b_outer * b_inner
