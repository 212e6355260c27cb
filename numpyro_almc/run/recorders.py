"""What a run keeps: one object, validated once (after Diffrax's ``SaveAt``)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._validate import check_count
from numpyro_almc.path.schedules import step_params
from numpyro_almc.types import Array, ArrayTree

__all__ = ["ALMCTrace", "SaveAt"]


class ALMCTrace(NamedTuple):
    """Per-step diagnostics summarised over chains (one entry per step).

    Attributes
    ----------
    time
        Scheduled OU time of the drift of each step (``inf`` in the warm start).
    step_size
        Step size of each step.
    num_diverging
        Number of chains whose step was reverted.
    mean_loglikelihood
        Chain average of ``log L`` after the step.
    max_loglikelihood_drop
        The largest one-step drop of ``log L`` over chains (of the proposal,
        reverted or not), beside the kernel's divergence threshold
        (:func:`~numpyro_almc.mcmc.default_divergence_threshold`): how close the
        healthy steps came to being flagged. None in traces saved before it existed.

    Examples
    --------
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_chains=3)
    >>> res.trace.time.shape, int(res.trace.num_diverging.sum())
    ((24,), 0)
    """

    time: Array
    step_size: Array
    num_diverging: Array
    mean_loglikelihood: Array
    max_loglikelihood_drop: Array | None = None

    @staticmethod
    def per_step(info) -> tuple[Array, Array, Array]:
        """What the step loop stacks of one step's batched
        :class:`~numpyro_almc.mcmc.ALMCInfo`: the number of reverted chains, the
        chain mean of ``log L`` and the largest drop of ``log L``. Time and step
        size are the schedule's, filled in by :meth:`build` after the loop
        (stacking them per step costs a quarter of a 2-D step)."""
        return (
            jnp.sum(info.is_diverging, dtype=jnp.int32),
            jnp.mean(info.loglikelihood),
            jnp.max(info.loglikelihood_drop),
        )

    @classmethod
    def build(cls, schedule, first, per_step) -> ALMCTrace:
        """The trace of steps ``first, first + 1, …`` from the stacked
        :meth:`per_step` values."""
        num_diverging, mean_loglikelihood, max_drop = per_step
        steps = first + jnp.arange(num_diverging.shape[0])
        params = jax.vmap(lambda i: step_params(schedule, i))(steps)
        return cls(
            params.time, params.step_size, num_diverging, mean_loglikelihood, max_drop
        )


class SaveAt(NamedTuple):
    """What a run keeps besides the final state and the per-step trace.

    Build it with :meth:`build`, which validates every field once; the runners take
    it as a static (hashable) argument.

    Attributes
    ----------
    final_window
        Keep, per chain, one iterate drawn uniformly from the last ``final_window``
        steps of the run (0: none).
    every
        Keep the position after every ``every``-th step (0: none).
    sites
        ``((name, leaf index), ...)`` of the kept leaves, or None for the whole
        position.
    keep_from
        Kept positions after steps before ``keep_from`` do not enter the moments.
    moments
        Accumulate on-device running means and variances of the kept positions.
    stack
        Return the kept positions (False: only their moments; nothing is stacked).

    Examples
    --------
    >>> save = SaveAt.build({"x": jnp.zeros(2), "s": 0.0}, num_steps=10, every=5,
    ...                     sites=["x"])
    >>> save.every, save.sites
    (5, (('x', 1),))
    """

    final_window: int = 0
    every: int = 0
    sites: tuple | None = None
    keep_from: int = 0
    moments: bool = False
    stack: bool = True

    @classmethod
    def build(
        cls,
        position,
        *,
        num_steps: int,
        final_window: int = 0,
        every: int = 0,
        sites=None,
        keep_from: int = 0,
        moments: bool = False,
        stack: bool = True,
        every_name: str = "path_every",
    ) -> SaveAt:
        final_window = check_count("final_window", final_window)
        if final_window > num_steps:
            raise ValueError(
                f"`final_window` ({final_window}) cannot exceed num_steps "
                f"({num_steps})."
            )
        every = check_count(every_name, every)
        keep_from = check_count("keep_from", keep_from)
        index = site_index(position, sites)
        named = None if index is None else tuple(zip(sites, index, strict=True))
        return cls(final_window, every, named, keep_from, bool(moments), bool(stack))

    def kept(self, position: ArrayTree):
        """The kept part of ``position``: the whole tree, or ``{name: leaf}``."""
        if self.sites is None:
            return position
        leaves = jax.tree.leaves(position)
        return {name: leaves[j] for name, j in self.sites}


def site_names(position) -> list[str]:
    """One name per position leaf: dict keys joined by '.', ``"x"`` for a lone array."""
    paths = jax.tree_util.tree_flatten_with_path(position)[0]
    if len(paths) == 1 and not paths[0][0]:
        return ["x"]
    names = []
    for keypath, _ in paths:
        parts = []
        for k in keypath:
            for attr in ("key", "name", "idx"):
                if hasattr(k, attr):
                    parts.append(str(getattr(k, attr)))
                    break
        names.append(".".join(parts))
    return names


def site_index(position, sites) -> tuple[int, ...] | None:
    """Leaf indices of the named ``sites`` of ``position`` (None: all leaves)."""
    if sites is None:
        return None
    names = site_names(position)
    if isinstance(sites, str) or not all(isinstance(s, str) for s in sites):
        raise TypeError(
            f"`sites` must be a list of site names (a subset of {names}), got "
            f"{sites!r}."
        )
    unknown = [s for s in sites if s not in names]
    if unknown or not sites:
        raise ValueError(
            f"`sites` must be a non-empty subset of {names}; unknown: {unknown}."
        )
    return tuple(names.index(s) for s in sites)


def welford_init(tree):
    """Running moments of ``tree``'s leaves: ``(count, means, M2s)``."""
    return (
        np.zeros((), np.int32),
        jax.tree.map(jnp.zeros_like, tree),
        jax.tree.map(jnp.zeros_like, tree),
    )


def welford_update(acc, tree, take):
    """Add ``tree`` to the running moments where ``take`` (Welford's update)."""
    count, means, m2s = acc
    new_count = count + take.astype(jnp.int32)
    denom = jnp.maximum(new_count, 1)

    def mean(x, m):
        return jnp.where(take, m + (x - m) / denom.astype(x.dtype), m)

    new_means = jax.tree.map(mean, tree, means)

    def m2(x, m, m_new, s):
        return jnp.where(take, s + (x - m) * (x - m_new), s)

    return new_count, new_means, jax.tree.map(m2, tree, means, new_means, m2s)


def reservoir_update(window, positions, take):
    """Replace the window draw of the chains where ``take`` (leading chain axis)."""
    return jax.tree.map(
        lambda w, p: jnp.where(take.reshape((-1,) + (1,) * (p.ndim - 1)), p, w),
        window,
        positions,
    )
