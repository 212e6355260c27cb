"""Reduced-precision score evaluation (e.g. bfloat16) with float32 sampler state."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc.types import Array, ArrayTree

__all__ = ["cast_score"]


def _is_float_array(a) -> bool:
    return isinstance(a, jax.Array | np.ndarray) and jnp.issubdtype(
        a.dtype, jnp.floating
    )


def _cast_floating(tree, dtype):
    """Floating array leaves of ``tree`` cast to ``dtype``; everything else as is."""
    return jax.tree.map(lambda a: a.astype(dtype) if _is_float_array(a) else a, tree)


class _CastScore:
    """``score_fn`` evaluated in ``dtype``; the score comes back in the input dtype."""

    __slots__ = ("score_fn", "dtype")

    def __init__(self, score_fn, dtype):
        self.score_fn = score_fn
        self.dtype = dtype

    def __call__(self, x: ArrayTree, t: Array) -> ArrayTree:
        out_dtypes = jax.tree.map(jnp.result_type, x)
        low_x = jax.tree.map(
            lambda a: (
                a.astype(self.dtype)
                if jnp.issubdtype(jnp.result_type(a), jnp.floating)
                else a
            ),
            x,
        )
        score = self.score_fn(low_x, jnp.asarray(t).astype(self.dtype))
        return jax.tree.map(lambda s, d: jnp.asarray(s).astype(d), score, out_dtypes)

    def __getattr__(self, name):
        # Attributes a caller may read from a score (flags, metadata) pass through.
        if name in ("score_fn", "dtype"):
            raise AttributeError(name)
        return getattr(self.score_fn, name)

    def __repr__(self):
        return f"cast_score({self.score_fn!r}, {jnp.dtype(self.dtype).name})"


def cast_score(
    score_fn: Callable[[ArrayTree, Array], ArrayTree],
    dtype=jnp.bfloat16,
    *,
    cast_params: bool = True,
) -> Callable[[ArrayTree, Array], ArrayTree]:
    r"""Evaluate ``score_fn`` in a lower precision; positions and state keep theirs.

    The returned ``score(x, t)`` casts the floating leaves of ``x`` and the time
    ``t`` to ``dtype``, calls ``score_fn`` and casts each leaf of the score back to
    the dtype of the matching leaf of ``x``. The sampler (positions, noise, the
    likelihood gradient, the cached score in the state) stays in the positions'
    dtype, float32 by default, so only the network runs in ``dtype``.

    A wrapper rather than a ``score_dtype=`` option of the drivers: it composes
    with everything that takes a score (:func:`~numpyro_almc.run_almc`,
    :func:`~numpyro_almc.run_almc_chunked`, :func:`~numpyro_almc.almc`,
    :class:`~numpyro_almc.ScorePrior`) without changing their signatures.

    Parameters
    ----------
    score_fn
        ``score_fn(x, t) -> ∇_x log p_t(x)``.
    dtype
        Evaluation dtype (``jnp.bfloat16``, ``jnp.float16``, ...).
    cast_params
        If ``score_fn`` is a pytree with floating array leaves (an Equinox module
        such as the digits prior's ``score_fn``), cast those weights to ``dtype``
        once, here. A plain function closing over float32 arrays cannot be cast:
        JAX then promotes ``dtype`` inputs back to float32 inside it, and the
        evaluation is effectively float32.

    Returns
    -------
    callable
        The wrapped score. Create it once and pass the same object to every run:
        the drivers compile once per score object.

    Notes
    -----
    bfloat16 keeps 8 significand bits (unit roundoff :math:`2^{-9} \approx 0.2\%`),
    so each score evaluation carries a relative error of a few tenths of a percent.
    Whether that is faster depends on the hardware: GPUs and TPUs have bfloat16
    matrix units; XLA:CPU mostly emulates it and is usually *slower* (see
    ``benchmarks/results/sharding.md``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc.scores import cast_score
    >>> score = cast_score(lambda x, t: -x * jnp.exp(-t))
    >>> score(jnp.ones(3), 0.5).dtype
    dtype('float32')
    """
    if not callable(score_fn):
        raise TypeError(f"`score_fn` must be callable, got {type(score_fn).__name__}.")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`dtype` must be a floating dtype such as jnp.bfloat16, got {dtype}."
        )
    if cast_params:
        score_fn = _cast_floating(score_fn, dtype)
    return _CastScore(score_fn, dtype)
