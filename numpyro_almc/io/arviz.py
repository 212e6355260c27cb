"""ArviZ export of the BlackJAX / driver path (ArviZ 0.2x and 1.x).

:func:`to_inference_data` turns an :class:`~numpyro_almc.run.ALMCResult` (from
:func:`~numpyro_almc.run_almc`) or a ``(states, infos)`` history (from
``blackjax.util.run_inference_algorithm``, chains stacked on a leading axis) into the
groups ``az.from_numpyro`` gives for the NumPyro kernel: ``posterior`` with
``(chain, draw)`` dimensions, ``sample_stats`` with ``diverging``, ``step_size``,
``time`` (OU time) and ``measurement_loglik``, and, on request, the annealing path as
``warmup_posterior`` / ``warmup_sample_stats``.

ArviZ 0.2x returns an ``InferenceData``; ArviZ 1.x an xarray ``DataTree``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from numpyro_almc.mcmc.almc import ALMCInfo, ALMCState
from numpyro_almc.run.driver import ALMCResult
from numpyro_almc.run.smc import SMCResult

__all__ = ["to_inference_data", "arviz_major_version"]


def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 for the 0.2x line, 1 for 1.x)."""
    import arviz as az

    return int(str(az.__version__).split(".")[0])


def _names_and_leaves(position, var_names, lead: int):
    """``{name: np.ndarray}`` of a position pytree whose leaves have ``lead`` axes."""
    if isinstance(position, Mapping):
        out = {str(k): np.asarray(v) for k, v in position.items()}
        if var_names is not None:
            names = [var_names] if isinstance(var_names, str) else list(var_names)
            unknown = [n for n in names if n not in out]
            if unknown:
                raise ValueError(
                    f"var_names {unknown} are not in the position; it has "
                    f"{sorted(out)}."
                )
            out = {n: out[n] for n in names}
    else:
        leaves = [np.asarray(v) for v in jax.tree.leaves(position)]
        if var_names is None:
            names = (
                ["x"] if len(leaves) == 1 else [f"x_{i}" for i in range(len(leaves))]
            )
        else:
            names = [var_names] if isinstance(var_names, str) else list(var_names)
            if len(names) != len(leaves):
                raise ValueError(
                    f"The position has {len(leaves)} array(s) but var_names has "
                    f"{len(names)} name(s); give one name per array."
                )
        out = dict(zip(names, leaves, strict=True))
    for name, v in out.items():
        if v.ndim < lead:
            raise ValueError(
                f"'{name}' has shape {v.shape}; expected {lead} leading "
                "(chain, ...) axes."
            )
    return out


def _build(groups: dict, *, coords, dims, attrs):
    import arviz as az

    groups = {g: v for g, v in groups.items() if v}
    save_warmup = any(g.startswith("warmup_") for g in groups)
    with warnings.catch_warnings():
        # An ALMCResult has one draw per chain: ArviZ's "more chains than draws"
        # shape check does not apply.
        warnings.filterwarnings("ignore", message=r".*[Cc]hain.*than draw")
        warnings.filterwarnings("ignore", message=r".*chain dimension to be longer")
        if arviz_major_version() >= 1:
            # ArviZ 1.x reads `attrs` per group ({group: {...}}) and drops the rest
            # with a warning; these describe the whole run: the root's attributes.
            data = az.from_dict(
                groups, save_warmup=save_warmup, coords=coords, dims=dims
            )
            data.attrs.update(attrs or {})
            return data
        return az.from_dict(
            **groups, save_warmup=save_warmup, coords=coords, dims=dims, attrs=attrs
        )


def _path_every(num_steps: int, kept: int, path_every: int | None) -> int:
    if path_every is not None:
        if num_steps // path_every != kept:
            raise ValueError(
                f"path_every={path_every} does not match a path of {kept} entries "
                f"over {num_steps} steps."
            )
        return path_every
    candidates = [p for p in range(1, num_steps + 1) if num_steps // p == kept]
    if len(candidates) != 1:
        raise ValueError(
            f"Cannot tell path_every from a path of {kept} entries over {num_steps} "
            "steps; pass path_every= (the value given to run_almc)."
        )
    return candidates[0]


def _from_result(result: ALMCResult, *, var_names, warmup, draw, path_every):
    state = result.state
    if draw == "window":
        if result.window_draw is None:
            raise ValueError(
                "draw='window' needs run_almc(..., final_window=k) with k > 0."
            )
        position = result.window_draw
    elif draw == "last":
        position = state.position
    else:
        raise ValueError(f"`draw` must be 'last' or 'window', got {draw!r}.")
    posterior = {
        k: v[:, None] for k, v in _names_and_leaves(position, var_names, 1).items()
    }
    num_chains = next(iter(posterior.values())).shape[0]
    ones = np.ones((num_chains, 1))
    trace = result.trace
    num_div = np.asarray(result.num_diverging)
    sample_stats = {
        # One draw per chain: it counts as divergent if any step of the chain was.
        "diverging": (num_div > 0)[:, None],
        "num_diverging": num_div[:, None],
        "step_size": np.asarray(trace.step_size)[-1] * ones,
        "time": np.asarray(state.time)[:, None],
        "measurement_loglik": np.asarray(state.loglikelihood)[:, None],
    }
    groups = {"posterior": posterior, "sample_stats": sample_stats}
    if warmup:
        if result.path is None:
            raise ValueError(
                "warmup=True exports result.path: run run_almc(..., path_every=k) "
                "with k > 0."
            )
        path = _names_and_leaves(result.path, var_names, 2)
        kept = next(iter(path.values())).shape[1]
        num_steps = int(np.shape(trace.time)[0])
        every = _path_every(num_steps, kept, path_every)
        idx = every * np.arange(1, kept + 1) - 1  # the step after which it was kept
        wones = np.ones((num_chains, kept))
        groups["warmup_posterior"] = path
        groups["warmup_sample_stats"] = {
            # Per-step statistics of run_almc are summaries over chains.
            "time": np.asarray(trace.time)[idx] * wones,
            "step_size": np.asarray(trace.step_size)[idx] * wones,
            "mean_measurement_loglik": np.asarray(trace.mean_loglikelihood)[idx]
            * wones,
            "num_diverging_chains": np.asarray(trace.num_diverging)[idx]
            * wones.astype(np.int32),
        }
    return groups


def _from_history(history, *, var_names, warmup, num_warmup):
    try:
        states, infos = history
    except (TypeError, ValueError):
        raise TypeError(
            "Expected an ALMCResult or a (states, infos) history from "
            "blackjax.util.run_inference_algorithm."
        ) from None
    if not isinstance(states, ALMCState) or not isinstance(infos, ALMCInfo):
        raise TypeError(
            "The history must be (ALMCState, ALMCInfo) with stacked steps (the default "
            "transform of run_inference_algorithm), got "
            f"({type(states).__name__}, {type(infos).__name__})."
        )
    time = np.asarray(infos.time)
    if time.ndim == 1:  # one chain: add the chain axis
        states, infos = jax.tree.map(lambda a: np.asarray(a)[None], (states, infos))
        time = time[None]
    if time.ndim != 2:
        raise ValueError(
            f"infos.time has shape {time.shape}; expected (chain, draw) or (draw,)."
        )
    num_draws = time.shape[1]
    if (
        isinstance(num_warmup, bool)
        or not isinstance(num_warmup, int | np.integer)
        or not 0 <= num_warmup <= num_draws
    ):
        raise ValueError(
            f"`num_warmup` must be an integer in [0, {num_draws}], got {num_warmup!r}."
        )
    if num_warmup == num_draws:
        raise ValueError(
            f"`num_warmup` = {num_warmup} is every step of the history: the posterior "
            "would have zero draws. Lower num_warmup or run more steps."
        )
    position = _names_and_leaves(states.position, var_names, 2)
    stats = {
        "diverging": np.asarray(infos.is_diverging),
        "step_size": np.asarray(infos.step_size),
        "time": np.asarray(infos.time),
        "measurement_loglik": np.asarray(infos.loglikelihood),
    }

    def cut(d, sl):
        return {k: v[:, sl] for k, v in d.items()}

    keep = slice(num_warmup, None)
    groups = {"posterior": cut(position, keep), "sample_stats": cut(stats, keep)}
    if warmup:
        groups["warmup_posterior"] = cut(position, slice(0, num_warmup))
        groups["warmup_sample_stats"] = cut(stats, slice(0, num_warmup))
    return groups


def _from_smc(result, *, var_names, resample: bool, seed: int):
    """Particles as one chain of draws; weights, ESS and resampling in stats."""
    log_w = np.asarray(result.log_weights, np.float64)
    n = log_w.shape[0]
    if np.isnan(log_w).any() or np.isposinf(log_w).any():
        bad = int(np.sum(np.isnan(log_w) | np.isposinf(log_w)))
        raise ValueError(
            f"`result.log_weights` holds {bad} NaN or +inf value(s) of {n}: the "
            "weights are undefined (a particle's score or likelihood was not "
            "finite). Rerun with a smaller step size or more particles; do not "
            "export these particles as draws."
        )
    if not np.isfinite(log_w).any():
        raise ValueError(
            "`result.log_weights` are all -inf: every particle's weight vanished, "
            "there is no posterior to export."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"`seed` must be an integer, got {seed!r}.")
    particles = _names_and_leaves(result.particles, var_names, 1)
    if resample:
        # Systematic resampling to equal weights: ArviZ treats draws as equally
        # weighted, so exporting weighted particles as they are would be wrong.
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        u = (np.random.default_rng(seed).random() + np.arange(n)) / n
        idx = np.minimum(np.searchsorted(np.cumsum(w), u), n - 1)
        particles = {k: v[idx] for k, v in particles.items()}
        log_w = np.full(n, -np.log(n))
    ess = np.asarray(result.ess)
    resampled = np.asarray(result.resampled)
    row = np.ones((1, n))
    sample_stats = {
        "log_weight": log_w[None, :],
        "final_ess": float(ess[-1]) * row,
        "min_ess": float(ess.min()) * row,
        "num_resampling_events": int(resampled.sum()) * row.astype(np.int64),
        # Run-level numbers, repeated per draw like final_ess (sample_stats only
        # holds (chain, draw) variables).
        "log_evidence_ratio": float(result.log_evidence_ratio) * row,
        "log_evidence_ratio_se": float(result.log_evidence_ratio_se) * row,
    }
    if result.log_evidence is not None:
        sample_stats["log_evidence"] = float(result.log_evidence) * row
    attrs = {
        "ess_trace": ess.tolist(),
        "resampling_steps": np.flatnonzero(resampled).tolist(),
        "log_evidence_ratio": float(result.log_evidence_ratio),
        "log_evidence_ratio_se": float(result.log_evidence_ratio_se),
    }
    if result.log_evidence is not None:
        attrs["log_evidence"] = float(result.log_evidence)
    posterior = {k: v[None] for k, v in particles.items()}
    # The path, one entry per step: a group of its own (dimension "step").
    smc_path = {
        "time": np.asarray(result.info.time),
        "ess": ess,
        "resampled": resampled,
        "log_evidence_increment": np.asarray(result.info.log_evidence_increment),
        "num_diverging": np.asarray(result.info.num_diverging),
    }
    return {"posterior": posterior, "sample_stats": sample_stats}, attrs, smc_path


def _add_step_group(data, name: str, variables: dict):
    """Add ``name`` with ``(step,)`` variables to an InferenceData or DataTree."""
    import xarray as xr

    ds = xr.Dataset({k: ("step", np.asarray(v)) for k, v in variables.items()})
    if arviz_major_version() >= 1:
        data[name] = xr.DataTree(ds)
    else:
        data.add_groups({name: ds})
    return data


def to_inference_data(
    result,
    *,
    var_names: str | Sequence[str] | None = None,
    warmup: bool = False,
    num_warmup: int = 0,
    draw: str = "last",
    path_every: int | None = None,
    resample: bool = True,
    seed: int = 0,
    coords: dict | None = None,
    dims: dict | None = None,
    attrs: dict | None = None,
):
    """ArviZ data of a BlackJAX / driver ALMC run (``InferenceData`` or ``DataTree``).

    Parameters
    ----------
    result
        An :class:`~numpyro_almc.run.ALMCResult` from :func:`~numpyro_almc.run_almc`, or
        the ``(states, infos)`` history of ``blackjax.util.run_inference_algorithm``
        with the ALMC algorithm, steps stacked and chains on a leading axis (a
        single chain without that axis is accepted).
    var_names
        For a dict position, the sites to keep (None: all); for an array position,
        its name (None: ``"x"``, or ``x_0, x_1, ...`` for a tuple of arrays).
    warmup
        Also export the annealing path as ``warmup_posterior`` and
        ``warmup_sample_stats``: for an ``ALMCResult`` from ``result.path`` (run with
        ``path_every > 0``; the per-step statistics there are summaries over chains),
        for a history its first ``num_warmup`` steps.
    num_warmup
        History only: how many leading steps are warmup (not in ``posterior``).
    draw
        ``ALMCResult`` only: ``"last"`` (the final iterate of each chain) or
        ``"window"`` (the uniformly random iterate of the final window). Either way
        each chain gives one draw: ``posterior`` has ``draw`` of length 1.
    path_every
        ``ALMCResult`` only: the ``path_every`` of the run, when it cannot be
        inferred from the path's length.
    resample
        ``SMCResult`` (from :func:`~numpyro_almc.run_almc_smc`) only: the particles
        become one chain of draws; with ``resample=True`` they are first resampled
        (systematic, with ``seed``) to equal weights, since ArviZ treats draws as
        equally weighted. ``sample_stats`` holds ``log_weight``, ``final_ess``,
        ``min_ess``, ``num_resampling_events`` and the evidence
        (``log_evidence_ratio``, its ``log_evidence_ratio_se`` and, when known,
        ``log_evidence``), repeated per
        draw; a group ``smc_path`` holds, per step (dimension ``step``), ``time``,
        ``ess``, ``resampled``, ``log_evidence_increment`` and ``num_diverging``
        (read it with :func:`numpyro_almc.diagnostics.smc_summary`). The ESS trace,
        the resampling steps and the evidence also go to the attributes.
    seed
        ``SMCResult`` only: the seed of that resampling.
    coords
        Passed to ``arviz.from_dict``.
    dims
        Passed to ``arviz.from_dict``.
    attrs
        Passed to ``arviz.from_dict``.

    Returns
    -------
    InferenceData or DataTree
        ``arviz.InferenceData`` (ArviZ 0.2x) or ``xarray.DataTree`` (ArviZ 1.x),
        with ``posterior`` and ``sample_stats`` (``diverging``, ``step_size``,
        ``time``, ``measurement_loglik``), plus the warmup groups when asked.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro_almc import budget_schedule, run_almc
    >>> res = run_almc(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
    ...                lambda x, t: -x, budget_schedule(20, num_warm_start_steps=5),
    ...                jnp.zeros(2), num_chains=4)
    >>> idata = to_inference_data(res)
    >>> idata.posterior["x"].shape   # (chain, draw, x_dim_0): one draw per chain
    (4, 1, 2)
    >>> bool(idata.sample_stats["diverging"].any())
    False
    """
    if isinstance(result, SMCResult):
        groups, smc_attrs, smc_path = _from_smc(
            result, var_names=var_names, resample=resample, seed=seed
        )
        data = _build(
            groups, coords=coords, dims=dims, attrs={**smc_attrs, **(attrs or {})}
        )
        return _add_step_group(data, "smc_path", smc_path)
    if isinstance(result, ALMCResult):
        groups = _from_result(
            result, var_names=var_names, warmup=warmup, draw=draw, path_every=path_every
        )
    else:
        groups = _from_history(
            result, var_names=var_names, warmup=warmup, num_warmup=num_warmup
        )
    return _build(groups, coords=coords, dims=dims, attrs=attrs)
