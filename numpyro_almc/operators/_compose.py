"""``compose(A, B)``: structured where the algebra allows, else matrix-free."""

from __future__ import annotations

import numbers

import jax

from numpyro_almc.operators._base import AbstractLinearOperator, ScaledOperator
from numpyro_almc.operators._convolution import (
    PeriodicConvolution,
    PooledPeriodicConvolution,
)
from numpyro_almc.operators._matrix_free import ComposedOperator
from numpyro_almc.operators._sampling import AveragePool

__all__ = ["compose"]


def compose(outer, inner, **solver_options) -> AbstractLinearOperator:
    r"""The operator ``outer ∘ inner`` (``x ↦ outer(inner(x))``).

    Structured results, exact:

    * a scalar with an operator (either side): :class:`ScaledOperator`;
    * :class:`AveragePool` after :class:`PeriodicConvolution`:
      :class:`PooledPeriodicConvolution`.

    Everything else (e.g. a mask after a periodic convolution: diagonal in pixels
    against diagonal in Fourier, not simultaneously diagonalisable) is a
    :class:`ComposedOperator`, solved matrix-free by CG.

    Parameters
    ----------
    outer
        The operator applied last (or one real scalar), ``A x = outer(inner(x))``.
    inner
        The operator applied first (or one real scalar), with
        ``inner.out_shape == outer.in_shape``.
    **solver_options
        ``rtol``, ``atol``, ``max_steps``, ``sqrt_max_terms`` for the matrix-free
        fallback.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_almc.operators import AveragePool, Mask, PeriodicConvolution
    >>> blur = PeriodicConvolution(jnp.ones((3, 3)) / 9, (6, 6))
    >>> type(compose(AveragePool((6, 6), 2), blur)).__name__
    'PooledPeriodicConvolution'
    >>> type(compose(Mask(jnp.ones((6, 6), bool)), blur)).__name__
    'ComposedOperator'
    >>> type(compose(2.0, blur)).__name__
    'ScaledOperator'
    """
    outer_scalar = isinstance(outer, numbers.Real | jax.Array) and not isinstance(
        outer, AbstractLinearOperator
    )
    inner_scalar = isinstance(inner, numbers.Real | jax.Array) and not isinstance(
        inner, AbstractLinearOperator
    )
    if outer_scalar and inner_scalar:
        raise TypeError("At least one of `outer`, `inner` must be an operator.")
    if outer_scalar:
        return ScaledOperator(inner, outer)
    if inner_scalar:
        return ScaledOperator(outer, inner)
    for name, op in (("outer", outer), ("inner", inner)):
        if not isinstance(op, AbstractLinearOperator):
            raise TypeError(
                f"`{name}` must be a numpyro_almc.operators operator or a real "
                f"scalar, got {type(op).__name__}."
            )
    if inner.out_shape != outer.in_shape:
        raise ValueError(
            f"Cannot compose: inner.out_shape {inner.out_shape} != outer.in_shape "
            f"{outer.in_shape}."
        )
    if isinstance(outer, AveragePool) and isinstance(inner, PeriodicConvolution):
        return PooledPeriodicConvolution(inner.psf, inner.in_shape, outer.factor)
    return ComposedOperator(outer, inner, **solver_options)
