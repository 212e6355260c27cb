"""Eager argument checks shared by every public entry point (fail early, in Python)."""

from __future__ import annotations

import collections
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._static import by_identity

__all__ = [
    "as_arrays",
    "check_fns",
    "check_key",
    "MAX_INITIAL_TIME",
    "check_choice",
    "check_count",
    "check_divergence_threshold",
    "check_finite_values",
    "check_float_dtype",
    "check_initial_time",
    "check_positive",
    "is_concrete",
]

#: Largest OU start time accepted: ``p_T`` is within ``e^{-2T}`` of ``N(0, I)``, so
#: past ``T ≈ 20`` nothing changes in float64; ``e^{2T}`` overflows float32 above
#: ``T ≈ 44`` (the VE scale, the log-SNR grid), and the steps spent there are wasted.
MAX_INITIAL_TIME = 40.0


def check_count(name: str, value, minimum: int = 0) -> int:
    """``value`` as an ``int >= minimum``; a float or bool raises ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer, got {value!r}; "
            "round it yourself if you meant a count."
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value}.")
    return value


def check_bound(name: str, value, *, meaning: str, off: str) -> float | None:
    """None (the default), or a ``float > 0`` where ``inf`` switches the bound
    off; ``meaning`` and ``off`` say what the number and ``inf`` mean."""
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be None (the default), a positive number ({meaning}) "
            f"or inf ({off}), got {type(value).__name__}."
        )
    value = float(value)
    if not value > 0:
        raise ValueError(
            f"`{name}` must be > 0 ({meaning}), got {value}; pass inf for {off}."
        )
    return value


def check_divergence_threshold(value) -> float | None:
    """None (the dimension's default bound) or a ``float > 0``; ``inf`` allowed
    (only the finiteness check)."""
    return check_bound(
        "divergence_threshold",
        value,
        meaning="a drop of log L in nats",
        off="the finiteness check only",
    )


def check_choice(name: str, value, options) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"`{name}` must be one of {tuple(options)}, got {value!r}.")


def check_initial_time(name: str, value) -> float:
    """``value`` as a finite OU start time in ``(0, MAX_INITIAL_TIME]``."""
    value = check_positive(name, value)
    if value > MAX_INITIAL_TIME:
        raise ValueError(
            f"`{name}` = {value:g} is too large: p_T is N(0, I) to float precision "
            f"from T ≈ 20 on, and e^(2T) overflows float32 above T ≈ 44. Use "
            f"{name} <= {MAX_INITIAL_TIME:g} (3 to 10 is usual)."
        )
    return value


def check_float_dtype(name: str, dtype):
    """``dtype`` as a NumPy floating dtype; anything else raises ``TypeError``."""
    try:
        resolved = jnp.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a floating dtype such as jnp.float32, got {dtype!r}."
        ) from None
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(
            f"`{name}` must be a floating dtype such as jnp.float32, got {resolved} "
            "(integer or boolean times and step sizes would be truncated)."
        )
    return resolved


def is_concrete(*values) -> bool:
    """True unless one of ``values`` is a JAX tracer (value checks are skipped)."""
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


def check_finite_values(name: str, value, what: str = "") -> None:
    """Raise ``ValueError`` if a concrete ``value`` holds NaN or an infinity."""
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` holds NaN or infinite values{what}; pass finite numbers."
        )


def check_key(rng_key, *, allow_batch: bool = False) -> None:
    """Raise unless ``rng_key`` is one JAX PRNG key (typed, or raw ``uint32[2]``),
    or with ``allow_batch`` also a 1-D batch of them (one per chain)."""
    ndims = (0, 1) if allow_batch else (0,)
    if isinstance(rng_key, jax.Array) and jnp.issubdtype(
        rng_key.dtype, jax.dtypes.prng_key
    ):
        if rng_key.ndim in ndims:
            return
    elif (
        isinstance(rng_key, jax.Array | np.ndarray)
        and rng_key.dtype == np.uint32
        and rng_key.ndim - 1 in ndims
        and rng_key.shape[-1] == 2
    ):
        return
    raise TypeError(
        "`rng_key` must be one JAX PRNG key, e.g. jax.random.key(0)"
        + (" (or one per chain)" if allow_batch else "")
        + f"; got {type(rng_key).__name__} {getattr(rng_key, 'shape', '')}."
    )


def as_arrays(name: str, tree):
    """``tree`` with array leaves, or a ``TypeError`` naming ``name`` (strings,
    objects), or a ``ValueError`` when it holds no numbers."""
    try:
        tree = jax.tree.map(jnp.asarray, tree)
    except TypeError as error:
        raise TypeError(
            f"`{name}` must be an array or a pytree of arrays (e.g. jnp.zeros(d)), "
            f"got {type(tree).__name__}: {error}"
        ) from None
    leaves = jax.tree.leaves(tree)
    if not leaves or sum(leaf.size for leaf in leaves) == 0:
        raise ValueError(
            f"`{name}` has no numbers (None, an empty tree or zero-size arrays); "
            "pass one position shaped like the signal, e.g. jnp.zeros(d)."
        )
    return tree


#: Checks that passed, by the functions' identity and the position's shapes: the
#: same pair on the same shapes traces the same way (``jax.jit`` caches on the same
#: key), and a repeated driver call would otherwise trace a network twice more
#: (milliseconds, a third of a short 2-D run). Bounded; the oldest entry goes first.
_CHECKED: collections.OrderedDict = collections.OrderedDict()
_CHECKED_MAX = 64


def check_fns(loglikelihood_fn, score_fn, position) -> None:
    """Trace both functions once on one ``position`` (shapes only, no FLOPs), so
    a wrong signature or a likelihood built for another size fails here, naming
    the function. A pair already checked on these shapes is not traced again."""
    if not callable(loglikelihood_fn) or not callable(score_fn):
        raise TypeError("`loglikelihood_fn` and `score_fn` must be callables.")
    position = jax.tree.map(jnp.asarray, position)
    leaves, treedef = jax.tree.flatten(position)
    key = (
        by_identity(loglikelihood_fn),
        by_identity(score_fn),
        treedef,
        tuple((leaf.shape, leaf.dtype) for leaf in leaves),
    )
    if key in _CHECKED:
        _CHECKED.move_to_end(key)
        return
    _trace_fns(loglikelihood_fn, score_fn, position)
    _CHECKED[key] = None
    if len(_CHECKED) > _CHECKED_MAX:
        _CHECKED.popitem(last=False)


def _trace_fns(loglikelihood_fn, score_fn, position) -> None:
    t = jnp.ones((), jnp.result_type(*jax.tree.leaves(position)))
    time_dependent = getattr(loglikelihood_fn, "time_dependent", False)
    try:
        # Through lambdas: eval_shape keeps a weak reference to its function, which
        # objects with __slots__ (e.g. scores.precision's casts) cannot give.
        if time_dependent:
            jax.eval_shape(lambda x, s: loglikelihood_fn(x, s), position, t)
        else:
            jax.eval_shape(lambda x: loglikelihood_fn(x), position)
    except (TypeError, ValueError) as e:
        raise ValueError(
            "loglikelihood_fn cannot be evaluated on one position shaped like "
            f"`position` ({jax.tree.map(jnp.shape, position)}): {e}"
        ) from None
    try:
        jax.eval_shape(lambda x, s: score_fn(x, s), position, t)
    except TypeError as e:
        raise TypeError(
            f"score_fn must be score_fn(x, t) (two arguments) for one unbatched x: {e}"
        ) from None
