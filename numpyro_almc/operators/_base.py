r"""The operator protocol, shared checks and the σ-reusable algebra.

Every operator ``A`` maps arrays of ``in_shape`` to arrays of ``out_shape`` and
answers, for traced scalars ``a > 0`` and ``b >= 0``,

.. math::

    (a I + b A^\top A)^{-1} v,\quad (a I + b A^\top A)^{-1/2} v,\quad
    \log\det(a I + b A^\top A),\quad (a I + b A A^\top)^{-1} w,\quad
    \log\det(a I + b A A^\top).

The factorisation (eigenvalues of ``A Aᵀ`` or ``Aᵀ A`` in some fast basis, an SVD)
is computed once, at construction, and stored as arrays; ``a`` and ``b`` only enter
elementwise functions of the stored eigenvalues, so a changed noise scale never
refactors anything and never recompiles a jitted caller.

Operators whose ``A Aᵀ`` is diagonal in a fast basis use, for any function ``f``,

.. math::

    f(A^\top A) = f(0) I + A^\top g(A A^\top) A,\qquad g(\mu) = (f(\mu) - f(0))/\mu,

(from the SVD ``A = U Σ Vᵀ``: both sides equal ``f(0) I + V (f(Σ²) - f(0)) Vᵀ``),
with ``g`` written in a form that never divides by ``μ``. Determinants use
Sylvester's identity ``det(a I_n + b AᵀA) = a^{n-m} det(a I_m + b A Aᵀ)``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import apply_stack

from numpyro_almc.types import Array, ArrayLike

__all__ = ["AbstractLinearOperator", "OperatorPreconditioner", "ScaledOperator"]

#: The type of the NumPyro message that ``op(x)`` sends (see
#: :meth:`AbstractLinearOperator.__call__`).
FORWARD_OPERATOR_MESSAGE = "forward_operator"


# ----------------------------------------------------------------------------- checks
def _is_concrete(x) -> bool:
    """True when ``x`` holds a value now (not a tracer inside ``jit``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def _check_shape_tuple(name: str, shape) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a tuple of positive integers, got {shape!r}."
        ) from None
    if not shape or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0
        for s in shape
    ):
        raise ValueError(
            f"`{name}` must be a non-empty tuple of positive integers, got {shape!r}."
        )
    return tuple(int(s) for s in shape)


def _check_image_shape(image_shape) -> tuple[int, ...]:
    shape = _check_shape_tuple("image_shape", image_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            "`image_shape` must be (height, width) or (height, width, channels), "
            f"got {shape}."
        )
    return shape


def _check_array_shape(name: str, x, shape: tuple[int, ...]) -> Array:
    x = jnp.asarray(x)
    if x.shape != shape:
        raise ValueError(
            f"`{name}` must have shape {shape}, got {x.shape}; reshape it (operators "
            "act on one unbatched array: use jax.vmap for a batch)."
        )
    return x


def _check_factors(a, b) -> None:
    """``a > 0`` and ``b >= 0`` when they are concrete scalars (traced ones pass)."""
    for name, value, strict in (("a", a, True), ("b", b, False)):
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"`{name}` must be a scalar, got shape {jnp.shape(value)}."
            )
        if _is_concrete(value):
            v = float(value)
            if not math.isfinite(v) or (v <= 0 if strict else v < 0):
                sign = "> 0" if strict else ">= 0"
                raise ValueError(
                    f"`{name}` must be finite and {sign} in (a I + b AᵀA), got {v}; "
                    "for a likelihood with noise variance s², pass a = prior "
                    "precision and b = 1 / s²."
                )


# ------------------------------------------------------------------- scalar functions
# g(μ) = (f(μ) - f(0)) / μ for f(μ) = 1 / (a + b μ), written without the division.
def _g_inverse(mu, a, b):
    return -b / (a * (a + b * mu))


# The same for f(μ) = (a + b μ)^{-1/2}.
def _g_inverse_sqrt(mu, a, b):
    ra, rab = jnp.sqrt(a), jnp.sqrt(a + b * mu)
    return -b / (ra * rab * (ra + rab))


# ------------------------------------------------------------------------ base class
class AbstractLinearOperator(eqx.Module):
    """A linear map ``A`` from arrays of ``in_shape`` to arrays of ``out_shape``.

    A JAX pytree (an :class:`equinox.Module`): its arrays (eigenvalues, factors) are
    leaves, its shapes and options are static. Pass operators as arguments of jitted
    functions; changing ``a``/``b`` (the noise scale) then never recompiles.

    Subclasses implement :meth:`apply`, :meth:`adjoint` and the solves; this class
    supplies :meth:`as_matrix` and :meth:`preconditioner`. It is long because it
    declares, with docstrings and examples, the whole interface every operator
    shares (apply, adjoint, four solves and log-determinants, the spectral functions).

    Examples
    --------
    >>> from numpyro_almc.operators import Mask
    >>> op = Mask(jnp.array([[True, False], [True, True]]))
    >>> op.in_shape, op.out_shape
    ((2, 2), (2, 2))
    """

    in_shape: tuple[int, ...] = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def in_size(self) -> int:
        """``prod(in_shape)``, the length of the flattened input.

        Examples
        --------
        >>> from numpyro_almc.operators import AveragePool
        >>> AveragePool((4, 4), 2).in_size
        16
        """
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        """``prod(out_shape)``, the length of the flattened output.

        Examples
        --------
        >>> from numpyro_almc.operators import AveragePool
        >>> AveragePool((4, 4), 2).out_size
        4
        """
        return math.prod(self.out_shape)

    @property
    def dtype(self):
        """The floating dtype of the operator's stored arrays and outputs.

        Examples
        --------
        >>> from numpyro_almc.operators import AveragePool
        >>> AveragePool((4, 4), 2).dtype
        dtype('float32')
        """
        return jnp.zeros((), dtype=float).dtype

    # The two maps -------------------------------------------------------------
    def __call__(self, x: ArrayLike) -> Array:
        """``A x``, as :meth:`apply`, announced to NumPyro's effect handlers.

        Write ``dist.Normal(op(x), sigma)`` in a NumPyro model and
        :class:`~numpyro_almc.ALMC` / :class:`~numpyro_almc.ALMCSMC` recognise the
        forward operator (:mod:`numpyro_almc.infer.model_fns`). The application is
        a NumPyro message of type ``"forward_operator"`` without a name: every
        NumPyro handler passes it through untouched (as NumPyro's own nameless
        ``control_flow`` messages), ``trace`` does not record it, and outside a
        model it costs one Python dict. ``op.apply(x)`` computes the same without
        the message (then the façade cannot see the operator).

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False]))(jnp.array([3.0, 4.0]))
        Array([3., 0.], dtype=float32)
        """
        msg = {
            "type": FORWARD_OPERATOR_MESSAGE,
            "fn": self.apply,
            "args": (x,),
            "kwargs": {},
            "value": None,
            "operator": self,
        }
        return apply_stack(msg)["value"]

    def apply(self, x: ArrayLike) -> Array:
        """``A x`` for ``x`` of ``in_shape``; returns an array of ``out_shape``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).apply(jnp.array([3.0, 4.0]))
        Array([3., 0.], dtype=float32)
        """
        raise NotImplementedError

    def adjoint(self, y: ArrayLike) -> Array:
        """``Aᵀ y`` for ``y`` of ``out_shape``; returns an array of ``in_shape``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).adjoint(jnp.array([3.0, 4.0]))
        Array([3., 0.], dtype=float32)
        """
        raise NotImplementedError

    def as_matrix(self) -> Array:
        """The dense ``(prod(out_shape), prod(in_shape))`` matrix (tests only).

        Row-major (C order) flattening of inputs and outputs. Costs ``prod(in_shape)``
        applications: never call it at image sizes.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).as_matrix()
        Array([[1., 0.],
               [0., 0.]], dtype=float32)
        """
        basis = jnp.eye(self.in_size, dtype=self.dtype)
        columns = jax.vmap(lambda e: self.apply(e.reshape(self.in_shape)).ravel())(
            basis
        )
        return columns.T

    # The σ-reusable algebra -----------------------------------------------------
    def solve_normal(self, v: ArrayLike, a: ArrayLike, b: ArrayLike) -> Array:
        """``(a I + b AᵀA)^{-1} v`` for ``v`` of ``in_shape``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).solve_normal(jnp.ones(2), 1.0, 3.0)
        Array([0.25, 1.  ], dtype=float32)
        """
        raise NotImplementedError

    def sqrt_solve_normal(self, v: ArrayLike, a: ArrayLike, b: ArrayLike) -> Array:
        """``(a I + b AᵀA)^{-1/2} v``, the symmetric root, for ``v`` of ``in_shape``.

        Applying it twice equals :meth:`solve_normal`.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).sqrt_solve_normal(jnp.ones(2), 1.0, 3.0)
        Array([0.5, 1. ], dtype=float32)
        """
        raise NotImplementedError

    def logdet_normal(self, a: ArrayLike, b: ArrayLike) -> Array:
        """``log det(a I + b AᵀA)`` (a scalar).

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> float(Mask(jnp.array([True, False])).logdet_normal(1.0, 3.0))  # log 4
        1.386...
        """
        raise NotImplementedError

    def solve_outer(self, w: ArrayLike, a: ArrayLike, b: ArrayLike) -> Array:
        """``(a I + b A Aᵀ)^{-1} w`` for ``w`` of ``out_shape``.

        With ``a = σ²`` and ``b = 1`` this is the inverse of the marginal covariance
        of ``y = A x + σ ε`` under ``x ~ N(0, I)``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).solve_outer(jnp.ones(2), 1.0, 3.0)
        Array([0.25, 1.  ], dtype=float32)
        """
        raise NotImplementedError

    def logdet_outer(self, a: ArrayLike, b: ArrayLike) -> Array:
        """``log det(a I + b A Aᵀ)`` (a scalar).

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> float(Mask(jnp.array([True, False])).logdet_outer(1.0, 3.0))  # log 4
        1.386...
        """
        raise NotImplementedError

    def normal_function(self, v: ArrayLike, fn) -> Array:
        """``fn(AᵀA) v`` for an elementwise function ``fn`` of the eigenvalues.

        ``fn`` maps an array of eigenvalues ``λ >= 0`` to an array of the same shape
        and must be finite at 0. Evaluated in the operator's eigenbasis, so a bounded
        ``fn`` gives a result accurate to round-off whatever the spread of ``fn``'s
        arguments (the noised-likelihood preconditioner needs this: its commuting
        products of :meth:`sqrt_solve_normal` lose precision as ``a → 0``). Exact
        for the structured operators; matrix-free ones raise
        ``NotImplementedError``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).normal_function(
        ...     jnp.ones(2), lambda lam: 1.0 + 2.0 * lam)
        Array([3., 1.], dtype=float32)
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no eigenbasis: use the solves instead."
        )

    def outer_function(self, w: ArrayLike, fn) -> Array:
        """``fn(A Aᵀ) w`` for an elementwise function ``fn`` of the eigenvalues.

        As :meth:`normal_function`, on the output side; ``fn(0)`` only matters on
        the orthogonal complement of the range of ``A``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, False])).outer_function(
        ...     jnp.ones(2), lambda mu: 1.0 / (1.0 + mu))
        Array([0.5, 1. ], dtype=float32)
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no eigenbasis: use the solves instead."
        )

    def norm_sq_bound(self):
        """An upper bound on ``‖A‖₂²`` (the largest eigenvalue of ``AᵀA``), or None.

        Exact (the largest eigenvalue itself) for the structured operators; used to
        place the Chebyshev interval of matrix-free square roots.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> float(Mask(jnp.array([True, False])).norm_sq_bound())
        1.0
        """
        return None

    def preconditioner(self, noise_var: ArrayLike) -> OperatorPreconditioner:
        """``M = (I + AᵀA / noise_var)^{-1}`` in the package's preconditioner protocol.

        The result is a pytree with ``apply(v)`` and ``apply_sqrt(v)`` acting on
        flattened vectors of length ``prod(in_shape)`` (``apply_sqrt`` is the
        symmetric root), like :class:`numpyro_almc.DensePreconditioner`, without ever
        forming a dense matrix.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> p = Mask(jnp.array([True, False])).preconditioner(1.0)
        >>> p.apply(jnp.ones(2))
        Array([0.5, 1. ], dtype=float32)
        """
        return OperatorPreconditioner(self, noise_var)


# -------------------------------------------------------------------- preconditioner
class OperatorPreconditioner(eqx.Module):
    r"""``M = (I + AᵀA / noise_var)^{-1}`` and its symmetric root, matrix-free.

    The inverse Hessian of the warm-start potential ``|x|²/2 + |y - A x|²/(2 s²)``
    (``noise_var = s²``): preconditioned Langevin then moves as fast along the
    directions the data pin down as along those only the prior constrains. A pytree
    (pass it through ``jax.jit``); ``noise_var`` is a traced leaf, so a new noise
    scale reuses the operator's factorisation and recompiles nothing.

    Parameters
    ----------
    operator
        The forward operator ``A``.
    noise_var
        The measurement noise variance ``s² > 0`` (a scalar).

    Examples
    --------
    >>> from numpyro_almc.operators import AveragePool
    >>> p = OperatorPreconditioner(AveragePool((2, 2), 2), 0.25)
    >>> p.apply(jnp.ones(4))  # (I + 4 AᵀA)^{-1} 1 = 1 / (1 + 4 * 1/4)
    Array([0.5, 0.5, 0.5, 0.5], dtype=float32)
    """

    operator: AbstractLinearOperator
    noise_var: Array

    def __init__(self, operator: AbstractLinearOperator, noise_var: ArrayLike):
        if not isinstance(operator, AbstractLinearOperator):
            raise TypeError(
                "`operator` must be a numpyro_almc.operators operator, got "
                f"{type(operator).__name__}."
            )
        noise_var = jnp.asarray(noise_var, dtype=operator.dtype)
        if noise_var.ndim != 0:
            raise ValueError(
                f"`noise_var` must be a scalar, got shape {noise_var.shape}."
            )
        if _is_concrete(noise_var) and not float(noise_var) > 0:
            raise ValueError(
                f"`noise_var` must be > 0, got {float(noise_var)}; pass the "
                "measurement noise variance s² (not s, and not a precision)."
            )
        self.operator = operator
        self.noise_var = noise_var

    def _factors(self, x):
        # In v's dtype: a float64 noise_var must not promote float32 positions (x64).
        precision = (1.0 / self.noise_var).astype(x.dtype)
        return jnp.ones((), x.dtype), precision

    def _check(self, v):
        v = jnp.asarray(v)
        if v.shape != (self.operator.in_size,):
            raise ValueError(
                f"The preconditioner acts on flattened vectors of shape "
                f"({self.operator.in_size},), got {v.shape}; pass v.ravel()."
            )
        return v.reshape(self.operator.in_shape)

    def apply(self, v: ArrayLike) -> Array:
        """``M v`` for a flattened ``v``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> Mask(jnp.array([True, True])).preconditioner(1.0).apply(jnp.ones(2))
        Array([0.5, 0.5], dtype=float32)
        """
        x = self._check(v)
        return self.operator.solve_normal(x, *self._factors(x)).ravel()

    def apply_sqrt(self, v: ArrayLike) -> Array:
        """``M^{1/2} v`` (the symmetric root) for a flattened ``v``.

        Examples
        --------
        >>> from numpyro_almc.operators import Mask
        >>> p = Mask(jnp.array([True, True])).preconditioner(1 / 3)
        >>> p.apply_sqrt(jnp.ones(2))
        Array([0.5, 0.5], dtype=float32)
        """
        x = self._check(v)
        return self.operator.sqrt_solve_normal(x, *self._factors(x)).ravel()


# ------------------------------------------------------------ outer-diagonal helpers
class _OuterDiagonalizable(AbstractLinearOperator):
    """Operators with ``A Aᵀ`` diagonal in a fast basis (see the module docstring).

    Subclasses implement ``_outer_apply(w, fn)`` (``fn(A Aᵀ) w`` for an elementwise
    ``fn`` of the eigenvalues) and ``_outer_eigenvalues()`` (all ``prod(out_shape)``
    eigenvalues of ``A Aᵀ``, any order).
    """

    def _outer_apply(self, w, fn):
        raise NotImplementedError

    def _outer_eigenvalues(self):
        raise NotImplementedError

    def _normal_fn(self, v, a, b, f0, g):
        v = _check_array_shape("v", v, self.in_shape)
        _check_factors(a, b)
        return f0(a) * v + self.adjoint(
            self._outer_apply(self.apply(v), lambda mu: g(mu, a, b))
        )

    def solve_normal(self, v, a, b):
        return self._normal_fn(v, a, b, lambda a: 1.0 / a, _g_inverse)

    def sqrt_solve_normal(self, v, a, b):
        return self._normal_fn(v, a, b, lambda a: 1.0 / jnp.sqrt(a), _g_inverse_sqrt)

    def logdet_outer(self, a, b):
        _check_factors(a, b)
        return jnp.sum(jnp.log(a + b * self._outer_eigenvalues()))

    def logdet_normal(self, a, b):
        # Sylvester: det(a I_n + b AᵀA) = a^{n - m} det(a I_m + b A Aᵀ).
        return (self.in_size - self.out_size) * jnp.log(a) + self.logdet_outer(a, b)

    def solve_outer(self, w, a, b):
        w = _check_array_shape("w", w, self.out_shape)
        _check_factors(a, b)
        return self._outer_apply(w, lambda mu: 1.0 / (a + b * mu))

    def normal_function(self, v, fn):
        v = _check_array_shape("v", v, self.in_shape)
        f0 = fn(jnp.zeros((), v.dtype))

        def g(mu):
            # (fn(μ) − fn(0)) / μ; μ = 0 only where A v has no component.
            positive = mu > 0
            return jnp.where(positive, (fn(mu) - f0) / jnp.where(positive, mu, 1), 0)

        out = f0 * v + self.adjoint(self._outer_apply(self.apply(v), g))
        return out.astype(v.dtype)

    def outer_function(self, w, fn):
        w = _check_array_shape("w", w, self.out_shape)
        return self._outer_apply(w, fn).astype(w.dtype)

    def norm_sq_bound(self):
        return jnp.max(self._outer_eigenvalues())


# ---------------------------------------------------------------------- scalar multiple
class ScaledOperator(AbstractLinearOperator):
    r"""``c A`` for a scalar ``c``, keeping every closed form of ``A``.

    Exact: ``(a I + b (cA)ᵀ(cA))`` is ``A``'s normal matrix with ``b → b c²``, so
    every solve and determinant is ``A``'s with ``b c²``. ``c`` is a traced leaf.

    Parameters
    ----------
    operator
        ``A``.
    scale
        The real scalar ``c``.

    Examples
    --------
    >>> from numpyro_almc.operators import Mask
    >>> op = ScaledOperator(Mask(jnp.array([True, False])), 2.0)
    >>> op.apply(jnp.ones(2)), op.solve_normal(jnp.ones(2), 1.0, 0.75)
    (Array([2., 0.], dtype=float32), Array([0.25, 1.  ], dtype=float32))
    """

    operator: AbstractLinearOperator
    scale: Array

    def __init__(self, operator: AbstractLinearOperator, scale: ArrayLike):
        if not isinstance(operator, AbstractLinearOperator):
            raise TypeError(
                "`operator` must be a numpyro_almc.operators operator, got "
                f"{type(operator).__name__}."
            )
        scale = jnp.asarray(scale, dtype=operator.dtype)
        if scale.ndim != 0:
            raise ValueError(f"`scale` must be a scalar, got shape {scale.shape}.")
        if _is_concrete(scale) and not bool(jnp.isfinite(scale)):
            raise ValueError(f"`scale` must be finite, got {float(scale)}.")
        self.operator = operator
        self.scale = scale
        self.in_shape = operator.in_shape
        self.out_shape = operator.out_shape

    @property
    def dtype(self):
        return self.operator.dtype

    def apply(self, x):
        return self.scale * self.operator.apply(x)

    def adjoint(self, y):
        return self.scale * self.operator.adjoint(y)

    def solve_normal(self, v, a, b):
        return self.operator.solve_normal(v, a, b * self.scale**2)

    def sqrt_solve_normal(self, v, a, b):
        return self.operator.sqrt_solve_normal(v, a, b * self.scale**2)

    def logdet_normal(self, a, b):
        return self.operator.logdet_normal(a, b * self.scale**2)

    def solve_outer(self, w, a, b):
        return self.operator.solve_outer(w, a, b * self.scale**2)

    def logdet_outer(self, a, b):
        return self.operator.logdet_outer(a, b * self.scale**2)

    def normal_function(self, v, fn):
        return self.operator.normal_function(v, lambda lam: fn(self.scale**2 * lam))

    def outer_function(self, w, fn):
        return self.operator.outer_function(w, lambda mu: fn(self.scale**2 * mu))

    def norm_sq_bound(self):
        bound = self.operator.norm_sq_bound()
        return None if bound is None else self.scale**2 * bound
