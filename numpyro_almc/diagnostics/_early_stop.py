r"""A data-driven early-stopping time: stop where the posterior stops moving.

ALMC's draws approach :math:`\mu_\tau \propto p_\tau e^{-R}`; the bias of stopping at
:math:`\tau` is how far :math:`\mu_\tau` is from :math:`\mu_0`. A smaller :math:`\tau`
is less biased but costs more (smaller steps near :math:`t = 0`, a score network
least accurate there, mode weights frozen earlier), so the useful :math:`\tau` is the
largest one at which going further changes nothing the draws can resolve.

:func:`choose_early_stop_time` takes draws at candidate times
:math:`\tau_0 > \tau_1 > \dots > \tau_{K-1}` (e.g. the path of one run to a small
:math:`\tau_{K-1}`, :func:`path_candidates`) and compares each candidate with the
smallest time (or with the next one) by the energy distance

.. math::

    \mathcal{E}(P, Q) = 2\, \mathbb{E}|X - Y| - \mathbb{E}|X - X'| - \mathbb{E}|Y - Y'|,

estimated by its unbiased U-statistic (zero mean when :math:`P = Q`). The chains are
split once into two halves: candidate :math:`k` is read from one half and its
reference from the other, so the two sets are independent even though they come
from the same chains, and a permutation test over the pooled draws gives the
statistic's Monte Carlo noise :math:`s_k` at this sample size. A candidate has
*moved* when :math:`(\hat{\mathcal E}_k - \text{null mean}) / s_k` exceeds
``tolerance``; the chosen time is the largest :math:`\tau_k` after which no
candidate moved. Coordinates are scaled by their pooled standard deviation first
(the energy distance is not scale-free).

Comparing with the smallest time (``reference="last"``, the default) measures the
bias of stopping at :math:`\tau_k` relative to going all the way. Comparing
consecutive candidates (``reference="next"``) is noisier and misses slow drifts:
each step's change can be below the noise while their sum is not (on the conflict
test bed with 2048 draws, ``"next"`` keeps :math:`\tau = 1`, whose bias is about
eight noise units).

The rule is relative to the Monte Carlo noise by design: with more draws smaller
changes are resolved and a smaller :math:`\tau` is chosen, as it should be. The
benchmark ``benchmarks/early_stop_time.py`` compares the choice with the exact bias
of stopping at :math:`\tau` on the test beds.

References
----------
.. [1] G. J. Székely, M. L. Rizzo. Energy statistics: a class of statistics based on
   distances. J. Stat. Planning and Inference 143 (2013).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from numpyro_almc._validate import check_choice, check_count, check_positive
from numpyro_almc.diagnostics._pairwise import as_matrix, kernel_matvec

__all__ = [
    "EarlyStopChoice",
    "EnergyDistance",
    "choose_early_stop_time",
    "energy_distance",
    "path_candidates",
]


class EnergyDistance(NamedTuple):
    """Output of :func:`energy_distance`.

    Attributes
    ----------
    value
        The unbiased U-statistic of the squared energy distance (mean 0 for two
        samples of one law; it can be negative).
    null_mean
        Mean of the statistic over label permutations of the pooled draws (NaN
        without permutations).
    null_sd
        Its standard deviation over those permutations (NaN without
        permutations): the statistic's Monte Carlo noise.
    p_value
        Permutation p-value of "one law" (NaN without permutations).
    """

    value: float
    null_mean: float
    null_sd: float
    p_value: float


class EarlyStopChoice(NamedTuple):
    """Output of :func:`choose_early_stop_time`.

    Attributes
    ----------
    time
        The chosen early-stopping time.
    index
        Its index among the candidates sorted by decreasing time.
    settled
        False when even the comparison of the two smallest candidates moved: the
        posterior still changes at the smallest time (then ``time`` is that time;
        try a smaller one or keep it).
    table
        ``pandas.DataFrame``, one row per candidate (decreasing time):
        ``reference_time`` (what it was compared with), ``energy_distance``,
        ``null_mean``, ``null_sd``, ``z`` and ``moved``.
    """

    time: float
    index: int
    settled: bool
    table: object


def _distance_rows(z: np.ndarray):
    sq_norm = np.einsum("nd,nd->n", z, z)

    def rows(sl):
        d2 = sq_norm[sl, None] + sq_norm[None, :] - 2.0 * z[sl] @ z.T
        out = np.sqrt(np.maximum(d2, 0.0))
        idx = np.arange(sl.start, sl.stop)
        out[idx - sl.start, idx] = 0.0  # exact zeros on the diagonal
        return out

    return rows


def _energy(x, y, num_permutations, key, block_size) -> EnergyDistance:
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"Need at least 2 draws in each set, got {n} and {m}.")
    z = np.concatenate([x, y], axis=0)
    total = n + m
    labels = np.zeros((total, 1 + num_permutations))
    labels[:n, 0] = 1.0
    if num_permutations:
        perms = np.asarray(
            jax.vmap(lambda k: jax.random.permutation(k, total))(
                jax.random.split(key, num_permutations)
            )
        )
        labels[:, 1:] = (perms < n).T  # the first n of each permutation are "x"
    vectors = np.concatenate([np.ones((total, 1)), labels], axis=1)
    dv = kernel_matvec(_distance_rows(z), total, vectors, block_size)
    s_all = vectors[:, 0] @ dv[:, 0]
    s_a1 = labels.T @ dv[:, 0]  # aᵀ D 1
    s_aa = np.einsum("np,np->p", labels, dv[:, 1:])  # aᵀ D a
    s_xy = s_a1 - s_aa
    s_yy = s_all - 2.0 * s_a1 + s_aa
    stats = 2.0 * s_xy / (n * m) - s_aa / (n * (n - 1)) - s_yy / (m * (m - 1))
    value = float(stats[0])
    if not num_permutations:
        nan = float("nan")
        return EnergyDistance(value, nan, nan, nan)
    null = stats[1:]
    p_value = float((1 + np.sum(null >= value)) / (1 + num_permutations))
    return EnergyDistance(value, float(null.mean()), float(null.std()), p_value)


def energy_distance(
    x, y, *, num_permutations: int = 0, rng_key=None, block_size: int = 512
) -> EnergyDistance:
    """Squared energy distance between two sets of independent draws.

    Parameters
    ----------
    x
        An ``(n, ...)`` array, or a pytree of such.
    y
        An ``(m, ...)`` array, or a pytree of such (the structure of ``x``).
    num_permutations
        Label permutations for the null distribution (0: none).
    rng_key
        Key of the permutations (default ``jax.random.key(0)``).
    block_size
        Rows of the pooled distance matrix made at once (memory about
        ``block_size · (n + m)`` floats).

    Returns
    -------
    EnergyDistance

    Examples
    --------
    >>> x = jax.random.normal(jax.random.key(0), (300, 2))
    >>> y = jax.random.normal(jax.random.key(1), (300, 2))
    >>> same = energy_distance(x, y, num_permutations=100)
    >>> moved = energy_distance(x, y + 0.5, num_permutations=100)
    >>> bool(same.p_value > 0.05), bool(moved.p_value < 0.05)
    (True, True)
    """
    num_permutations = check_count("num_permutations", num_permutations)
    block_size = check_count("block_size", block_size, 1)
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y flatten to {x.shape} and {y.shape}.")
    key = jax.random.key(0) if rng_key is None else rng_key
    return _energy(x, y, num_permutations, key, block_size)


def choose_early_stop_time(
    times: Sequence[float],
    draws,
    *,
    tolerance: float = 2.0,
    reference: str = "last",
    num_permutations: int = 200,
    standardize: bool = True,
    rng_key=None,
    block_size: int = 512,
) -> EarlyStopChoice:
    """Pick the largest candidate ``τ`` after which the draws no longer move.

    Parameters
    ----------
    times
        ``K ≥ 2`` candidate OU times (any order; they are sorted decreasing).
    draws
        The draws at each time: a sequence of ``K`` draw sets ``(N, ...)`` (or
        pytrees of such), or one array ``(K, N, ...)``; the same ``N`` at every
        time, draw ``i`` the same chain at every time (as in a path) or not.
    tolerance
        A candidate has moved when its energy distance to the reference exceeds
        the permutation null mean by more than ``tolerance`` null standard
        deviations.
    reference
        ``"last"``: compare each candidate with the smallest time (the bias of
        stopping there, relative to going all the way); ``"next"``: with the next
        smaller time.
    num_permutations
        Permutations per comparison (the noise estimate).
    standardize
        Scale each coordinate by its pooled standard deviation over all
        candidates first.
    rng_key
        Key of the chain split and the permutations (default
        ``jax.random.key(0)``).
    block_size
        As in :func:`energy_distance`.

    Returns
    -------
    EarlyStopChoice

    Examples
    --------
    Draws whose mean moves from 1 to 0.5 to 0 over the three largest times and then
    stays put: the chosen time is the first one at 0.

    >>> import jax.numpy as jnp
    >>> times = [1.0, 0.5, 0.2, 0.1, 0.05]
    >>> noise = jax.random.normal(jax.random.key(0), (len(times), 400, 2))
    >>> draws = noise + jnp.array([[1.0], [0.5], [0.0], [0.0], [0.0]])[:, :, None]
    >>> choice = choose_early_stop_time(times, draws, num_permutations=100)
    >>> choice.time, choice.settled, choice.table["moved"].tolist()
    (0.2, True, [True, True, False, False, False])
    """
    import pandas as pd

    check_choice("reference", reference, ("next", "last"))
    check_positive("tolerance", tolerance)
    num_permutations = check_count("num_permutations", num_permutations, 10)
    block_size = check_count("block_size", block_size, 1)
    times = np.asarray(times, np.float64).reshape(-1)
    if isinstance(draws, np.ndarray | jax.Array) and np.ndim(draws) >= 2:
        sets = [np.asarray(draws[k]) for k in range(np.shape(draws)[0])]
    else:
        sets = list(draws)
    if times.size < 2 or len(sets) != times.size:
        raise ValueError(
            f"Need K ≥ 2 candidate times and one draw set per time; got {times.size} "
            f"times and {len(sets)} draw sets."
        )
    if not np.all(np.isfinite(times)) or len(set(times.tolist())) != times.size:
        raise ValueError("Candidate times must be finite and distinct.")
    mats = [as_matrix(s, f"draws[{k}]") for k, s in enumerate(sets)]
    if len({m.shape for m in mats}) != 1:
        raise ValueError(
            "Every candidate needs the same number and shape of draws; got "
            f"{sorted({m.shape for m in mats})}."
        )
    num = mats[0].shape[0]
    if num < 8:
        raise ValueError(f"Need at least 8 draws per candidate, got {num}.")
    order = np.argsort(-times)
    times = times[order]
    mats = [mats[k] for k in order]
    if standardize:
        sd = np.concatenate(mats, axis=0).std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        mats = [m / sd for m in mats]
    key = jax.random.key(0) if rng_key is None else rng_key
    key_split, key_perm = jax.random.split(key)
    chains = np.asarray(jax.random.permutation(key_split, num))
    half_a, half_b = chains[: num // 2], chains[num // 2 :]
    rows = []
    for k in range(times.size - 1):
        ref = k + 1 if reference == "next" else times.size - 1
        res = _energy(
            mats[k][half_a],
            mats[ref][half_b],
            num_permutations,
            jax.random.fold_in(key_perm, k),
            block_size,
        )
        z = (res.value - res.null_mean) / res.null_sd if res.null_sd > 0 else 0.0
        rows.append(
            {
                "time": times[k],
                "reference_time": times[ref],
                "energy_distance": res.value,
                "null_mean": res.null_mean,
                "null_sd": res.null_sd,
                "z": z,
                "moved": bool(z > tolerance),
            }
        )
    nan = float("nan")
    rows.append(
        {
            "time": times[-1],
            "reference_time": nan,
            "energy_distance": nan,
            "null_mean": nan,
            "null_sd": nan,
            "z": nan,
            "moved": False,
        }
    )
    table = pd.DataFrame(rows)
    moved = table["moved"].to_numpy()
    last_moved = int(np.flatnonzero(moved).max()) if moved.any() else -1
    index = last_moved + 1
    settled = not moved[times.size - 2]
    return EarlyStopChoice(float(times[index]), index, settled, table)


def path_candidates(result, schedule, *, path_every: int, times: Sequence[float]):
    """Draws of a run's kept path at the entries nearest to the requested times.

    Parameters
    ----------
    result
        An :class:`~numpyro_almc.run.ALMCResult` of
        :func:`~numpyro_almc.run_almc` with ``path_every > 0``.
    schedule
        The schedule of the run (the time of the position after step ``i`` is
        ``schedule.times[i + 1]``).
    path_every
        The ``path_every`` of the run.
    times
        Requested candidate times; each gives the kept entry closest to it in
        ``log t`` (distinct entries; duplicates are dropped).

    Returns
    -------
    tuple
        ``(times, draws)``: the times of the chosen entries and their draws, a list
        of ``(chains, ...)`` pytrees, ready for :func:`choose_early_stop_time`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> sched = budget_schedule(100, num_warm_start_steps=5, early_stop_time=0.01)
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum((x - 1) ** 2),
    ...                lambda x, t: -x, sched, jnp.zeros(2), num_chains=8,
    ...                path_every=5)
    >>> ts, xs = path_candidates(res, sched, path_every=5, times=[1.0, 0.1, 0.01])
    >>> len(ts), xs[0].shape
    (3, (8, 2))
    """
    path_every = check_count("path_every", path_every, 1)
    if result.path is None:
        raise ValueError("The run kept no path: run run_almc(..., path_every=k).")
    leaves = jax.tree.leaves(result.path)
    kept = np.shape(leaves[0])[1]
    steps = path_every * np.arange(1, kept + 1) - 1
    grid = np.asarray(schedule.times, np.float64)
    if steps[-1] + 1 >= grid.size:
        steps = np.minimum(steps, grid.size - 2)
    kept_times = grid[steps + 1]
    finite = np.isfinite(kept_times) & (kept_times > 0)
    if not finite.any():
        raise ValueError("No kept entry lies on the annealing path (finite time).")
    chosen = []
    for t in np.asarray(times, np.float64).reshape(-1):
        check_positive("times", t)
        gap = np.where(
            finite,
            np.abs(np.log(np.where(finite, kept_times, 1.0)) - np.log(t)),
            np.inf,
        )
        j = int(gap.argmin())
        if j not in chosen:
            chosen.append(j)
    draws = [
        jax.tree.map(lambda leaf, j=j: np.asarray(leaf)[:, j], result.path)
        for j in chosen
    ]
    return [float(kept_times[j]) for j in chosen], draws
