"""Sums over all pairs of draws in bounded memory: ``K @ V`` in row blocks.

Both the kernel Stein discrepancy and the energy distance are quadratic forms
``vᵀ K v`` of an ``N × N`` kernel matrix ``K`` over the draws. The matrix is never
formed: rows of ``K`` are made ``block_size`` at a time from matrix products of the
draws (never an ``N × N × d`` array), multiplied by ``V`` and dropped, so memory is
``O(block_size · N + N · P)``. It runs in float64 NumPy on the host: the statistics
are means of ``N²`` large terms of both signs (products of scores of order
``1 / σ²``) that cancel, which float32 accumulation does not resolve.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["as_matrix", "kernel_matvec"]


def as_matrix(draws, name: str = "draws") -> np.ndarray:
    """``(N, d)`` float64 array of draws given as an array ``(N, ...)`` or a pytree
    whose leaves have a leading axis ``N`` (flattened in ``ravel_pytree`` order)."""
    leaves = jax.tree.leaves(draws)
    if not leaves:
        raise ValueError(f"`{name}` is empty.")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            f"Every leaf of `{name}` needs the same leading (draw) axis; got leading "
            f"sizes {sorted(s for s in sizes if s is not None)} and scalars: "
            f"{None in sizes}."
        )
    if sizes == {0}:
        raise ValueError(f"`{name}` has zero draws (a leading axis of length 0).")
    if len(leaves) == 1 and not isinstance(draws, dict | list | tuple):
        arr = np.asarray(draws, np.float64)
        arr = arr.reshape(arr.shape[0], -1)
    else:
        flat = jax.vmap(lambda tree: ravel_pytree(tree)[0])(draws)
        arr = np.asarray(flat, np.float64)
    if not np.all(np.isfinite(arr)):
        rows = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(
            f"`{name}` holds NaN or infinite values ({rows} of {arr.shape[0]} "
            "draws): drop the diverged chains first (their num_diverging > 0)."
        )
    return arr


def kernel_matvec(
    block_kernel: Callable[[slice], np.ndarray],
    num: int,
    vectors: np.ndarray,
    block_size: int = 512,
) -> np.ndarray:
    """``K @ vectors`` for the ``num × num`` matrix whose rows ``sl`` are
    ``block_kernel(sl)`` (shape ``(len(sl), num)``), one block of rows at a time."""
    vectors = np.asarray(vectors, np.float64)
    out = np.empty((num,) + vectors.shape[1:], np.float64)
    for start in range(0, num, block_size):
        rows = slice(start, min(start + block_size, num))
        out[rows] = block_kernel(rows) @ vectors
    return out
