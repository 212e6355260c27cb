r"""A summary that treats ALMC's chains as what they are: independent draws.

Every ALMC chain anneals from its own warm start, so the chains' states at the end of
the path are (nearly) independent draws of :math:`\mu_\tau`; the draws that follow
within a chain (NumPyro's sampling phase: Langevin at fixed :math:`\tau`) are
strongly autocorrelated and may not leave their neighbourhood, or their mode, within
the run. Split-:math:`\hat R` compares the spread within chains with the spread
between them, so it is large for such output even when the pooled draws are exactly
of the target: it measures how far each chain moves at :math:`\tau`, which ALMC does
not need.

:func:`summary` therefore estimates Monte Carlo errors with the chains as
independent replicates. For a function :math:`f`, chain :math:`c` has the mean
:math:`\bar f_c` of its :math:`n` draws; the estimate is
:math:`\bar f = \frac1C \sum_c \bar f_c`, and because the chains are independent and
identically distributed,

.. math::

    \operatorname{MCSE}(\bar f)^2 = \frac{1}{C} \cdot \frac{1}{C - 1}
        \sum_c (\bar f_c - \bar f)^2 , \qquad
    \mathrm{ESS} = \frac{\widehat{\operatorname{Var}} f}{\operatorname{MCSE}^2},

whatever the autocorrelation within chains (the batch-means estimator with the
chains as batches). It needs no within-chain mixing: with :math:`n` independent
draws per chain ESS is about :math:`C n`, with chains frozen at their first draw it
is :math:`C`, and with one draw per chain it is the plain :math:`C`. ``ess_bulk``
applies it to rank-normalised draws and ``ess_tail`` to the indicators of the 5 %
and 95 % quantiles, as ArviZ does with its autocorrelation estimator (Vehtari et
al. 2021). Its own relative error is about :math:`\sqrt{2 / (C - 1)}`: use many
chains.

Within-chain mixing is reported apart (``lag1``, ``ess_within``), and
``drift_z`` tests what does matter for the sampling phase: whether the chains are
stationary. It compares each chain's first-half mean with its second-half mean;
across independent chains the differences have mean 0 if the draws are stationary
(:math:`t`-distributed with :math:`C - 1` degrees of freedom), whatever the
autocorrelation. A large ``|drift_z|`` means the draws still move at
:math:`\tau`: the path did not deliver draws of :math:`\mu_\tau`.

References
----------
.. [1] A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner.
   Rank-normalization, folding, and localization: an improved :math:`\hat R` for
   assessing convergence of MCMC. Bayesian Analysis 16 (2021), arXiv:1903.08008.
.. [2] C. J. Geyer. Practical Markov chain Monte Carlo. Statistical Science 7
   (1992).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special

__all__ = ["RHAT_THRESHOLD", "summary"]

#: Split-:math:`\hat R` above this is "not mixed" (Vehtari et al. 2021).
RHAT_THRESHOLD = 1.01


# -- the posterior as {name: (chain, draw, ...)} with coordinates ----------------


def _dataset(data, group: str):
    """The xarray ``Dataset`` of ``group`` of an ``InferenceData`` (ArviZ 0.2x), a
    ``DataTree`` (ArviZ 1.x) or a ``Dataset``; None for a mapping of arrays."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    # InferenceData and DataTree are mappings too: look for the group first.
    node = getattr(data, group, None)
    is_arviz = hasattr(data, "groups") or hasattr(data, "children")
    if node is None and isinstance(data, Mapping) and not is_arviz:
        return None
    if node is None:
        raise ValueError(
            f"`data` has no group {group!r}; pass an InferenceData / DataTree with "
            "it, an xarray Dataset, or a dict {name: (chain, draw, ...) array}."
        )
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def _check_draws(name, shape) -> None:
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(
            f"'{name}' has {shape[0]} chains and {shape[1]} draws: nothing to "
            "summarise (a run with zero draws?)."
        )


def _columns(data, group, var_names, coords):
    """``[(row label, (chain, draw) array)]`` of every scalar component."""
    ds = _dataset(data, group)
    if ds is None:
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        names = list(arrays) if var_names is None else _names(var_names, arrays)
        out = []
        for name in names:
            v = arrays[name]
            if v.ndim < 2:
                raise ValueError(
                    f"'{name}' has shape {v.shape}; expected (chain, draw, ...)."
                )
            _check_draws(name, v.shape)
            flat = v.reshape(v.shape[:2] + (-1,))
            for j, idx in enumerate(np.ndindex(v.shape[2:])):
                label = name if not idx else f"{name}[{','.join(map(str, idx))}]"
                out.append((label, flat[:, :, j]))
        return out
    names = list(ds.data_vars) if var_names is None else _names(var_names, ds)
    out = []
    for name in names:
        da = ds[name]
        if coords:
            da = da.sel({k: v for k, v in coords.items() if k in da.dims})
        if "chain" not in da.dims or "draw" not in da.dims:
            raise ValueError(f"'{name}' needs dimensions (chain, draw, ...).")
        da = da.transpose("chain", "draw", ...)
        event = da.dims[2:]
        values = np.asarray(da.values)
        _check_draws(name, values.shape)
        flat = values.reshape(values.shape[:2] + (-1,))
        labels = [np.asarray(da[d].values) for d in event]
        for j, idx in enumerate(np.ndindex(values.shape[2:])):
            label = name
            if idx:
                label += "[" + ",".join(str(labels[k][i]) for k, i in enumerate(idx))
                label += "]"
            out.append((label, flat[:, :, j]))
    return out


def _names(var_names, available) -> list[str]:
    names = [var_names] if isinstance(var_names, str) else list(var_names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"var_names {unknown} are not in the data; it has {sorted(available)}."
        )
    return names


# -- estimators on one (chain, draw) array ---------------------------------------


def _rank_normalise(v: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks (average ranks for ties), Blom offsets."""
    flat = v.reshape(-1)
    order = flat.argsort(kind="mergesort")
    ranks = np.empty(flat.size, np.float64)
    ranks[order] = np.arange(1, flat.size + 1)
    # Average the ranks of ties (indicator functions, discrete sites).
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if counts.max() > 1:
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    z = special.ndtri((ranks - 0.375) / (flat.size + 0.25))
    return z.reshape(v.shape)


def _between_chain_ess(v: np.ndarray) -> float:
    """ESS with the chains as independent replicates (batch means over chains)."""
    num_chains, num_draws = v.shape
    if num_chains < 2:
        return float("nan")
    var_of_means = v.mean(axis=1).var(ddof=1)
    total_var = v.var(ddof=1) if v.size > 1 else 0.0
    if not np.isfinite(var_of_means) or not np.isfinite(total_var):
        return float("nan")
    if var_of_means <= 0.0:
        return float(v.size) if total_var > 0 else float("nan")
    return float(min(num_chains * total_var / var_of_means, v.size))


def _mcse(v: np.ndarray) -> float:
    if v.shape[0] < 2:
        return float("nan")
    return float(np.sqrt(v.mean(axis=1).var(ddof=1) / v.shape[0]))


def _within_autocorrelation(v: np.ndarray) -> np.ndarray:
    """Autocorrelation within chains (centred at each chain's mean), averaged over
    chains, by FFT."""
    num_draws = v.shape[1]
    centred = v - v.mean(axis=1, keepdims=True)
    size = 2 ** math.ceil(math.log2(2 * num_draws))
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :num_draws]
    acov = acov.mean(axis=0) / num_draws
    if acov[0] <= 0:
        return np.full(num_draws, np.nan)
    return acov / acov[0]


def _within_ess(rho: np.ndarray, num_draws: int) -> float:
    """Effective draws per chain from the within-chain autocorrelation: Geyer's
    initial monotone positive sequence."""
    if not np.isfinite(rho).all():
        return float("nan")
    pairs = rho[: 2 * ((num_draws - 1) // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.flatnonzero(pairs <= 0)
    pairs = pairs[: positive[0] if positive.size else pairs.size]
    if pairs.size == 0:
        return float(num_draws)
    tau = -1.0 + 2.0 * np.minimum.accumulate(pairs).sum()
    return float(num_draws / max(tau, 1.0 / math.log10(num_draws + 1)))


def _split_rhat(v: np.ndarray) -> float:
    """Rank-normalised split-R̂ (max of bulk and folded), Vehtari et al. (2021)."""
    num_chains, num_draws = v.shape
    if num_draws < 4 or num_chains * 2 < 2:
        return float("nan")
    half = num_draws // 2
    split = np.concatenate([v[:, :half], v[:, num_draws - half :]], axis=0)

    def rhat(w):
        w = _rank_normalise(w)
        n = w.shape[1]
        within = w.var(axis=1, ddof=1).mean()
        between = n * w.mean(axis=1).var(ddof=1)
        if within <= 0:
            return float("nan")
        return float(np.sqrt(((n - 1) / n * within + between / n) / within))

    folded = np.abs(split - np.median(split))
    return max(rhat(split), rhat(folded))


def _drift_z(v: np.ndarray) -> float:
    """t-statistic across chains of (first-half mean − second-half mean)."""
    num_chains, num_draws = v.shape
    if num_chains < 2 or num_draws < 2:
        return float("nan")
    half = num_draws // 2
    diff = v[:, :half].mean(axis=1) - v[:, num_draws - half :].mean(axis=1)
    sd = diff.std(ddof=1)
    if sd <= 0:
        return 0.0 if np.all(diff == 0) else float("nan")
    return float(diff.mean() / (sd / np.sqrt(num_chains)))


def _row(v: np.ndarray, drift_threshold: float) -> dict:
    v = np.asarray(v, np.float64)
    num_chains, num_draws = v.shape
    finite = np.isfinite(v).all()
    mean, sd = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")
    row = {
        "mean": mean,
        "sd": sd,
        "q5%": float(np.quantile(v, 0.05)),
        "q95%": float(np.quantile(v, 0.95)),
        "mcse_mean": _mcse(v),
    }
    squared = (v - mean) ** 2
    row["mcse_sd"] = _mcse(squared) / (2 * sd) if sd > 0 else float("nan")
    if finite:
        row["ess_bulk"] = _between_chain_ess(_rank_normalise(v))
        lo, hi = np.quantile(v, [0.05, 0.95])
        row["ess_tail"] = min(
            _between_chain_ess((v <= lo).astype(np.float64)),
            _between_chain_ess((v >= hi).astype(np.float64)),
        )
    else:
        row["ess_bulk"] = row["ess_tail"] = float("nan")
    if num_draws >= 4 and finite:
        rho = _within_autocorrelation(v)
        row["lag1"] = float(rho[1])
        row["ess_within"] = _within_ess(rho, num_draws)
    else:
        row["lag1"] = row["ess_within"] = float("nan")
    row["drift_z"] = _drift_z(v) if finite else float("nan")
    row["r_hat"] = _split_rhat(v) if finite else float("nan")
    row["r_hat_check"] = _rhat_check(row, num_chains, num_draws, drift_threshold)
    return row


def _rhat_check(row, num_chains, num_draws, drift_threshold) -> str:
    if num_chains < 2 or num_draws < 4 or not np.isfinite(row["r_hat"]):
        return "n/a"  # one draw per chain (run_almc): nothing to compare within
    if abs(row["drift_z"]) > drift_threshold:
        return "drift"  # the draws still move: not stationary at τ
    if row["r_hat"] <= RHAT_THRESHOLD:
        return "ok"
    return "wrong check"  # chains independent by design; read ess_bulk, mcse_mean


def summary(
    data,
    *,
    var_names: str | Sequence[str] | None = None,
    coords: dict | None = None,
    group: str = "posterior",
    drift_threshold: float = 4.0,
):
    """Posterior summary for ALMC output: chains as independent draws.

    Parameters
    ----------
    data
        ``az.from_numpyro(mcmc)`` or :func:`~numpyro_almc.to_inference_data` output
        (an ArviZ 0.2x ``InferenceData`` or an ArviZ 1.x ``DataTree``), an xarray
        ``Dataset`` with ``(chain, draw, ...)`` variables, or a dict
        ``{name: (chain, draw, ...) array}`` (e.g.
        ``mcmc.get_samples(group_by_chain=True)``).
    var_names
        Variables to summarise (default: all).
    coords
        Selections on event dimensions, as in ``az.summary``, e.g.
        ``{"x_dim_0": [27, 28]}``.
    group
        The group to summarise.
    drift_threshold
        ``|drift_z|`` above which ``r_hat_check`` says ``"drift"``. With ``C``
        chains ``drift_z`` is about t-distributed with ``C − 1`` degrees of freedom
        for stationary draws; 4 is passed by chance about once in 500 variables at
        ``C = 16``.

    Returns
    -------
    pandas.DataFrame
        One row per scalar component (``x[27]``), with columns

        * ``mean``, ``sd``, ``q5%``, ``q95%``: of the pooled draws;
        * ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``: Monte Carlo error
          with the chains as independent replicates (see the module docstring);
        * ``lag1``, ``ess_within``: the lag-1 autocorrelation within chains and
          the effective draws *per chain* from it (Geyer's initial monotone
          sequence): how fast a chain moves at ``τ``, not the accuracy of the
          estimates;
        * ``drift_z``: first half against second half across chains;
        * ``r_hat``: rank-normalised split-R̂ (as ArviZ's);
        * ``r_hat_check``: ``"ok"`` (R̂ ≤ 1.01), ``"wrong check"`` (R̂ > 1.01 but
          the chains are stationary: it measures within-chain mixing at ``τ``,
          which ALMC does not rely on; read ``ess_bulk`` and ``mcse_mean``),
          ``"drift"`` (the draws still move: look at the path and the KSD) or
          ``"n/a"`` (fewer than 4 draws per chain, e.g. one per chain from
          :func:`~numpyro_almc.run_almc`).

        ``DataFrame.attrs`` holds ``num_chains`` and ``num_draws``.

    Examples
    --------
    Sixteen chains, each a random level plus small noise: they never mix, but each
    chain is one independent draw of N(0, 1).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 1)) + 0.05 * rng.normal(size=(16, 200))
    >>> table = summary({"x": x})
    >>> row = table.loc["x"]
    >>> bool(row["r_hat"] > 2), bool(10 < row["ess_bulk"] < 40), row["r_hat_check"]
    (True, True, 'wrong check')
    """
    import pandas as pd

    if not drift_threshold > 0:
        raise ValueError(f"`drift_threshold` must be positive, got {drift_threshold}.")
    columns = _columns(data, group, var_names, coords)
    if not columns:
        raise ValueError("Nothing to summarise: no variables selected.")
    rows = {label: _row(v, drift_threshold) for label, v in columns}
    table = pd.DataFrame.from_dict(rows, orient="index")
    shape = columns[0][1].shape
    table.attrs.update(num_chains=int(shape[0]), num_draws=int(shape[1]))
    return table
