"""Type aliases shared by the whole package."""

from typing import Any, TypeAlias

import jax
from jax.typing import ArrayLike as _ArrayLike

__all__ = ["Array", "ArrayLike", "ArrayLikeTree", "ArrayTree", "PRNGKey"]

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = _ArrayLike
#: A JAX PRNG key: new-style ``jax.random.key`` or raw ``uint32[2]``.
PRNGKey: TypeAlias = jax.Array
#: A pytree of arrays (a position may be a dict of arrays of mixed shapes).
ArrayTree: TypeAlias = Any
#: A pytree whose leaves are array-like.
ArrayLikeTree: TypeAlias = Any
