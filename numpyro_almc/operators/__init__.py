"""Structured linear forward operators ``y = A x + noise``, with σ-reusable solves.

Every operator is a JAX pytree with static ``in_shape``/``out_shape`` and the
methods ``apply``, ``adjoint``, ``as_matrix``, ``solve_normal``,
``sqrt_solve_normal``, ``logdet_normal``, ``solve_outer``, ``logdet_outer`` and
``preconditioner``. Factorisations happen once, at construction; the factors
``a``, ``b`` of ``a I + b AᵀA`` are traced scalars, so a new noise scale neither
refactors nor recompiles.

=============================  ======================================  ==========
operator                       solves                                  logdet
=============================  ======================================  ==========
Mask                           closed form (diagonal)                  exact
PeriodicConvolution            FFT-diagonal                            exact
PooledPeriodicConvolution      coarse-FFT-diagonal ``A Aᵀ``            exact
AveragePool, SubsampledDCT     ``A Aᵀ = c I``, Woodbury                exact
DenseOperator, ChannelMixing   SVD once                                exact
ScaledOperator                 the wrapped operator's                  its own
ZeroPaddedConvolution          CG (periodic preconditioner), Chebyshev  n/a
MatrixFreeOperator, Composed   CG, Chebyshev (needs a spectral bound)  n/a
=============================  ======================================  ==========

Examples
--------
>>> import jax.numpy as jnp
>>> from numpyro_almc.operators import PeriodicConvolution
>>> op = PeriodicConvolution(jnp.ones((3, 3)) / 9, (8, 8))
>>> op.solve_normal(jnp.ones((8, 8)), 1.0, 100.0)[0, 0]  # 1 / (1 + 100)
Array(0.00990099, dtype=float32)
"""

from numpyro_almc.operators._base import (
    AbstractLinearOperator,
    OperatorPreconditioner,
    ScaledOperator,
)
from numpyro_almc.operators._compose import compose
from numpyro_almc.operators._convolution import (
    PeriodicConvolution,
    PooledPeriodicConvolution,
    ZeroPaddedConvolution,
)
from numpyro_almc.operators._dense import ChannelMixing, DenseOperator
from numpyro_almc.operators._mask import Mask
from numpyro_almc.operators._matrix_free import (
    AbstractMatrixFreeOperator,
    ComposedOperator,
    ConvergenceError,
    MatrixFreeOperator,
    SolveInfo,
)
from numpyro_almc.operators._sampling import AveragePool, SubsampledDCT

__all__ = [
    "AbstractLinearOperator",
    "AbstractMatrixFreeOperator",
    "AveragePool",
    "ChannelMixing",
    "ComposedOperator",
    "ConvergenceError",
    "DenseOperator",
    "Mask",
    "MatrixFreeOperator",
    "OperatorPreconditioner",
    "PeriodicConvolution",
    "PooledPeriodicConvolution",
    "ScaledOperator",
    "SolveInfo",
    "SubsampledDCT",
    "ZeroPaddedConvolution",
    "compose",
]
