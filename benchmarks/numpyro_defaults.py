"""The NumPyro front end's defaults, chosen by measurement.

Run: ``python benchmarks/numpyro_defaults.py [--seeds 5] [--chains 1000] [--digits 8]
[--draws 32] [--repeats 3] [--quick]``; writes ``benchmarks/results/numpyro_defaults.md``
and its raw numbers ``numpyro_defaults.json`` (about 25 minutes on one idle CPU core
with the defaults, NumPyro's per-run compilation being most of it; ``--quick``: 2
seeds, 500 chains, 3 digits, 16 draws). An interrupted run resumes from the .json;
``--report`` rebuilds the table from it.

Four configurations of the NumPyro kernels, each through ``MCMC(kernel,
num_warmup=schedule.num_steps, num_samples=1, num_chains=N,
chain_method="vectorized")`` with the same ``budget_schedule(1000)`` (1000 score
evaluations per draw; the draws are the N vectorized chains, or the N particles of
``ALMCSMC`` resampled to equal weights at the end of warmup):

* ``ALMC(model, likelihood_path="paper")`` (the default today),
* ``ALMC(model, likelihood_path="noised")``,
* ``ALMCSMC(model, likelihood_path="paper")``,
* ``ALMCSMC(model, likelihood_path="noised")``,
* ``ALMC`` and ``ALMCSMC`` with ``likelihood_path="auto"`` (the noised path on these
  models) and ``final_stage=True`` (``FinalStage(32)``: 31 more passes per draw).

Everything else is each kernel's default (``preconditioner="auto"``, ESS threshold
0.5, systematic resampling); ``ALMCSMC`` takes the exact divergence (d JVPs per
step) at d = 8 and Hutchinson's estimate with one probe (one JVP per step) at
d = 64, as ``baselines_gmm.py`` does.

Problems:

1. **gmm25**, d = 8, d_y = 1, 2, 4 (``baselines_gmm.SECTIONS``), problem seeds
   ``0 .. --seeds-1``, ``--chains`` draws, the model of ``numpyro_frontend.py``;
   mode-weight TV and sliced W2 against exact posterior draws
   (``baselines_gmm.score``, ``exact_sets``), mean ± standard error over seeds.
2. **Digits**, each task of ``numpyro_almc.models._inverse.TASKS`` on the first
   ``--digits`` held-out test digits, one ``MCMC`` run of ``--draws`` chains per
   digit: ``x ~ ScorePrior(digits_prior().score_fn, (64,))``,
   ``y ~ Normal(A x, 0.1)`` observed (noise known), ``y = A x* + 0.1 ε`` as in
   ``digits_posterior.py``. PSNR of the posterior mean and coverage of the
   pixelwise 90 % interval (pixels 0–16), mean ± standard error over digits; also
   the mean pixelwise posterior standard deviation, and for ``ALMCSMC`` the
   number of resamplings and of surviving starting ancestors.

Cost per draw in network passes: one score evaluation per step for the move; the
weights of ``ALMCSMC`` add the divergence of the score in
``smc/weights.py`` (``jax.linearize`` of the score, then d JVPs, or one per
Hutchinson probe), counted as one pass per JVP as in ``numpyro_frontend.md``. Wall
times are per problem (gmm25) or per digit, including NumPyro's compilation, which
it repeats at every ``run``; a last section times one run of each configuration,
interleaved, ``--repeats`` times. The paragraph under the tables is generated from the
numbers: a configuration "wins" a row and metric when it is best and every other is
worse by more than two standard errors of the paired difference (same problems,
same keys).
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from baselines_gmm import SECTIONS, exact_sets, score  # noqa: E402

import numpyro_almc as na  # noqa: E402
from numpyro_almc.models import digits_prior, load_digits_split  # noqa: E402
from numpyro_almc.models._inverse import TASKS, make_task  # noqa: E402

BUDGET = 1000
NOISE = 0.1
GMM_DIM = 8
OBS_DIMS = (1, 2, 4)
RESULTS = HERE / "results" / "numpyro_defaults.md"
CONFIGS = (
    ("ALMC", "paper"),
    ("ALMC", "noised"),
    ("ALMCSMC", "paper"),
    ("ALMCSMC", "noised"),
    # likelihood_path="auto" (the noised path on these models) with the final stage
    ("ALMC", "auto+stage"),
    ("ALMCSMC", "auto+stage"),
)
STAGE_PASSES = na.mcmc.FinalStage().num_steps - 1  # per collected draw
# Hand-written from the (seeded) tables of the default command, appended under the
# generated paragraph; keep it in sync when they change (``--report`` rebuilds).
ANALYSIS = """\
## Which wins where, and the defaults

(Hand-written from the tables above; the runs are seeded, only the times vary. The
four "paper" / "noised" configurations ran at commit 412f97f (62 min on a shared
core), the two "auto" + stage ones at 1ea6d70–6023481 (45 min); the kernels' changes
in between do not touch these known-σ models' draws. Coverage is judged against
0.845, the coverage of the 5–95 % quantile interval of 32 exact draws, not 0.9.)

* **gmm25 (multimodal, mode weights)**: `ALMCSMC` on the noised path never fails
  (worst TV 0.14, at least 60 of 1000 starting ancestors survive); with the final
  stage it is the best configuration in every row and near the floor (TV 0.054 /
  0.005 / 0.001, sliced W2 2.28 / 0.23 / 0.12 against floors 0.65 / 0.19 / 0.10).
  `ALMCSMC` "paper" collapses onto one wrong mode on 3 of 15 problems (TV ≈ 1;
  the full likelihood from the start of the path degenerates the weights early).
  `ALMC` "noised" cuts plain ALMC's TV by 2–3× (0.87 → 0.41, 0.97 → 0.33,
  0.64 → 0.20), but neither `ALMC` path gets the mode weights near the floor.
* **Digits (d = 64, σ_y = 0.1)**: without the stage "paper" wins for both kernels:
  the noised path's draws keep the OU noise of τ (sd ≈ 0.2 in prior space, 1.6 grey
  levels, more than the observation noise), losing 0.5–2.7 dB and over-covering
  (0.93–0.98). The stage removes it: "auto" + stage is within the standard errors
  of "paper" in PSNR (better on 4 of 5 tasks for `ALMC`, by −0.55 to +0.57 dB) and
  its coverage straddles the target (0.73–0.89 against "paper"'s 0.86–0.95, which
  over-covers on every task); the paired test finds it closer to 0.845 on two
  tasks and farther on none.
* **Cost**: the paths cost the same in network passes; the stage adds 31 per
  collected draw (3 % here, at one draw per chain). `ALMCSMC` costs 9× the passes
  of `ALMC` with the exact divergence at d = 8, 2× with one Hutchinson probe at
  d = 64. In wall time per-run compilation dominates: the stage's own compilation
  makes a whole run 1.7–2.6× as long as `ALMC` "paper" (1.4× the same kernel
  without it).

**Defaults taken.** `ALMCSMC`: `likelihood_path="auto"` and `final_stage="auto"`
(the noised path and the stage wherever the model's observation allows it; the
paper's path and no stage otherwise): it is the only configuration without a
mode-weight failure and the best on gmm25, and on the digits it matches "paper".
Its runs are usually one draw per particle, so the stage costs 31 passes on top of
2,000–9,000. `ALMC`: `likelihood_path="paper"`, no stage. "auto" + stage is better
in 5 of 16 (row, metric) cells and worse in none at one draw per chain, but an
`ALMC` run typically collects hundreds of draws per chain, and the stage costs 31
passes for each (the demo's 64 chains × 200 draws would go from about 1,200 to
7,400 passes per chain); pass `likelihood_path="auto", final_stage=True` for
many-chains, few-draws runs. Not measured here: whether the stage changes the
sampling phase's mixing diagnostics, which a default for `ALMC` would need.
"""
DEFAULT_CONFIG = ("ALMC", "paper")


def label(config):
    kernel, path = config
    if path == "auto+stage":
        return f'`{kernel}` "auto" + stage'
    return f'`{kernel}` "{path}"'


def divergence_of(dim):
    """What ``ALMCSMC`` uses for ``∇·s``: exact up to d = 8, else one probe."""
    return "exact" if dim <= GMM_DIM else "hutchinson"


def passes_per_draw(config, dim):
    kernel, path = config
    stage = STAGE_PASSES if path == "auto+stage" else 0
    if kernel == "ALMC":
        return BUDGET + stage
    return BUDGET * (1 + (dim if divergence_of(dim) == "exact" else 1)) + stage


def make_mcmc(model, config, dim, num_chains, **mcmc_kwargs):
    kernel, path = config
    schedule = na.budget_schedule(BUDGET)
    # final_stage explicit: ALMCSMC's default ("auto") would add the stage to the
    # noised rows
    options = dict(likelihood_path=path, schedule=schedule, final_stage=None)
    if path == "auto+stage":
        options.update(likelihood_path="auto", final_stage=True)
    if kernel == "ALMC":
        sampler = na.ALMC(model, **options)
    else:
        sampler = na.ALMCSMC(model, divergence=divergence_of(dim), **options)
    return MCMC(
        sampler,
        num_warmup=schedule.num_steps,
        num_samples=1,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
        **mcmc_kwargs,
    )


def smc_diagnostics(mcmc, config):
    """``(resamplings along the path, distinct starting ancestors)`` of an
    ``ALMCSMC`` run; ``(nan, nan)`` for ``ALMC``."""
    if config[0] != "ALMCSMC":
        return float("nan"), float("nan")
    state = mcmc.last_state
    return (
        float(state.num_resampling[0]),
        float(np.unique(np.asarray(state.ancestor)).size),
    )


def fmt_smc(resamplings, lineages):
    if np.isnan(np.mean(resamplings)):
        return "—"
    return f"{np.mean(resamplings):.1f} / {np.mean(lineages):.1f}"


def mean_se(values):
    v = np.asarray(values, float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return v.mean(), se


def fmt(values, digits=3):
    m, se = mean_se(values)
    return f"{m:.{digits}f} ± {se:.{digits}f}"


# ---------------------------------------------------------------------------
# gmm25, d = 8
# ---------------------------------------------------------------------------


def gmm_model(problem):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(problem.score_fn, event_shape=(GMM_DIM,)))
        numpyro.sample(
            "y", dist.Normal(problem.A @ x, problem.noise_std).to_event(1), obs=y
        )

    return model


def release():
    """Drop JAX's compiled executables (after each configuration): NumPyro compiles
    anew at every ``run``, and the cached executables grow the process by ~50 MB a
    run (LLVM ran out of memory after ~80 runs here, with other jobs running)."""
    jax.clear_caches()
    gc.collect()


def gmm_section(seeds, num_chains, results, floors, save):
    """Fill ``results[(d_y, config)] = {"tv": [...], "sw": [...], ...}`` and
    ``floors[d_y] = {"tv": [...], "sw": [...]}``, skipping what is already there."""
    for dy in OBS_DIMS:
        if all((dy, c) in results for c in CONFIGS) and dy in floors:
            continue
        problems = SECTIONS[f"d{GMM_DIM}y{dy}"].make(seeds)
        exact = exact_sets(problems, seeds, num_chains)
        floors[dy] = {m: [e[2][m] for e in exact] for m in ("tv", "sw")}
        for config in CONFIGS:
            if (dy, config) in results:
                continue
            draws, resamplings, lineages = [], [], []
            tic = time.perf_counter()
            for problem, seed in zip(problems, seeds, strict=True):
                mcmc = make_mcmc(gmm_model(problem), config, GMM_DIM, num_chains)
                mcmc.run(jax.random.key(seed), y=problem.y)
                draws.append(np.asarray(mcmc.get_samples()["x"]))
                r, lin = smc_diagnostics(mcmc, config)
                resamplings.append(r)
                lineages.append(lin)
            seconds = (time.perf_counter() - tic) / len(seeds)
            release()
            rows = score(draws, exact, seeds)
            results[(dy, config)] = {
                "tv": [r["tv"] for r in rows],
                "sw": [r["sw"] for r in rows],
                "nonfinite": sum(r["nonfinite"] for r in rows),
                "resamplings": resamplings,
                "lineages": lineages,
                "seconds": seconds,
            }
            r = results[(dy, config)]
            print(
                f"gmm25 d_y={dy} {label(config)}: TV {fmt(r['tv'])}, SW "
                f"{fmt(r['sw'])}, {seconds:.1f} s/problem",
                flush=True,
            )
            save()


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


def digits_model(score_fn, A):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(score_fn, event_shape=(64,)))
        numpyro.sample("y", dist.Normal(A @ x, NOISE).to_event(1), obs=y)

    return model


def digit_metrics(prior, x, truth_pixels):
    """PSNR of the posterior mean, 90 % coverage and the mean pixelwise posterior
    standard deviation (pixels 0–16) of one digit's draws."""
    if not np.isfinite(x).all():
        return float("nan"), float("nan"), float("nan")
    pixels = np.asarray(prior.decode(x))
    mse = np.mean((pixels.mean(0) - truth_pixels) ** 2)
    psnr = 10 * np.log10(16.0**2 / max(mse, 1e-12))
    lo, hi = np.quantile(pixels, [0.05, 0.95], axis=0)
    coverage = np.mean((truth_pixels >= lo) & (truth_pixels <= hi))
    return float(psnr), float(coverage), float(np.mean(pixels.std(0, ddof=1)))


def digits_section(tasks, num_digits, num_draws, results, save):
    """Fill ``results[(task, config)] = {"psnr": [...], "coverage": [...], "sd":
    [...], "resamplings": [...], "lineages": [...], "seconds": s}`` (one entry per
    digit in the lists), skipping what is already there."""
    prior = digits_prior()
    split = load_digits_split()
    truth_pixels = np.asarray(split.test_images[:num_digits], np.float32)
    truth = prior.encode(truth_pixels)
    key_y, key_run = jax.random.split(jax.random.key(0))
    for task in tasks:
        A = make_task(task)
        y = truth @ A.T + NOISE * jax.random.normal(key_y, (num_digits, A.shape[0]))
        model = digits_model(prior.score_fn, A)
        for config in CONFIGS:
            if (task, config) in results:
                continue
            # One MCMC per task and configuration, run once per digit.
            mcmc = make_mcmc(model, config, 64, num_draws, jit_model_args=True)
            out = {k: [] for k in ("psnr", "coverage", "sd", "resamplings", "lineages")}
            tic = time.perf_counter()
            for i in range(num_digits):
                mcmc.run(jax.random.fold_in(key_run, i), y=y[i])
                x = np.asarray(mcmc.get_samples()["x"])
                psnr, cov, sd = digit_metrics(prior, x, truth_pixels[i])
                resamplings, lineages = smc_diagnostics(mcmc, config)
                for k, v in (("psnr", psnr), ("coverage", cov), ("sd", sd),
                             ("resamplings", resamplings), ("lineages", lineages)):  # fmt: skip
                    out[k].append(v)
            out["seconds"] = (time.perf_counter() - tic) / num_digits
            del mcmc
            release()
            results[(task, config)] = out
            print(
                f"digits {task} {label(config)}: PSNR {fmt(out['psnr'], 2)}, "
                f"coverage {fmt(out['coverage'])}, sd {fmt(out['sd'], 2)}, "
                f"SMC {fmt_smc(out['resamplings'], out['lineages'])}, "
                f"{out['seconds']:.1f} s/digit",
                flush=True,
            )
            save()


# ---------------------------------------------------------------------------
# Wall time, interleaved
# ---------------------------------------------------------------------------


def timing_section(num_chains, num_draws, repeats, timing, save):
    """Fill ``timing[config] = {"gmm": [s, ...], "digits": [s, ...]}``: seconds of
    one whole ``MCMC`` (build + ``run``) on gmm25 d_y = 2, seed 0, and on digit 0 of
    ``inpaint_random``, ``repeats`` times with the configurations interleaved (the
    tables' per-row times are sequential, so a busy machine shifts them)."""
    if all(len(timing.get(c, {}).get("digits", [])) >= repeats for c in CONFIGS):
        return
    problem = SECTIONS[f"d{GMM_DIM}y2"].make([0])[0]
    prior = digits_prior()
    A = make_task("inpaint_random")
    truth = prior.encode(np.asarray(load_digits_split().test_images[0], np.float32))
    y = A @ truth + NOISE * jax.random.normal(jax.random.key(1), (A.shape[0],))
    for _ in range(repeats):
        for config in CONFIGS:
            entry = timing.setdefault(config, {"gmm": [], "digits": []})
            if len(entry["digits"]) >= repeats:
                continue
            tic = time.perf_counter()
            mcmc = make_mcmc(gmm_model(problem), config, GMM_DIM, num_chains)
            mcmc.run(jax.random.key(0), y=problem.y)
            np.asarray(mcmc.get_samples()["x"])
            entry["gmm"].append(time.perf_counter() - tic)
            tic = time.perf_counter()
            model = digits_model(prior.score_fn, A)
            mcmc = make_mcmc(model, config, 64, num_draws, jit_model_args=True)
            mcmc.run(jax.random.key(0), y=y)
            np.asarray(mcmc.get_samples()["x"])
            entry["digits"].append(time.perf_counter() - tic)
            del mcmc
            release()
            print(
                f"timing {label(config)}: gmm {entry['gmm'][-1]:.1f} s, digit "
                f"{entry['digits'][-1]:.1f} s",
                flush=True,
            )
            save()


# ---------------------------------------------------------------------------
# What the numbers say
# ---------------------------------------------------------------------------


def paired_better(a, b, lower_is_better):
    """Whether ``a`` beats ``b`` by more than 2 SE of the paired difference."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if not np.all(np.isfinite(diff)):
        return bool(np.isfinite(a).all() and not np.isfinite(b).all())
    m, se = mean_se(diff)
    margin = 2 * se if np.isfinite(se) else 0.0
    return bool(m < -margin) if lower_is_better else bool(m > margin)


def expected_coverage(num_draws, level=0.9):
    """The coverage of the ``level`` interval between the empirical quantiles of
    ``num_draws`` exact posterior draws (``np.quantile``'s linear interpolation), for
    a truth exchangeable with them: ``level (n − 1) / (n + 1)`` (0.847 at n = 32, not
    0.9; a simulation of uniforms gives 0.846)."""
    return level * (num_draws - 1) / (num_draws + 1)


def comparisons(gmm, digits, num_draws):
    """``[(row, metric, {config: per-problem values}, lower_is_better)]``."""
    out = []
    for dy in OBS_DIMS if gmm else ():
        for metric in ("tv", "sw"):
            vals = {c: gmm[(dy, c)][metric] for c in CONFIGS}
            out.append((f"gmm25 d_y={dy}", metric.upper(), vals, True))
    tasks = sorted({t for t, _ in digits}, key=list(TASKS).index) if digits else []
    target = expected_coverage(num_draws)
    for task in tasks:
        psnr = {c: digits[(task, c)]["psnr"] for c in CONFIGS}
        cov = {
            c: list(np.abs(np.asarray(digits[(task, c)]["coverage"]) - target))
            for c in CONFIGS
        }
        out.append((f"digits {task}", "PSNR", psnr, False))
        out.append((f"digits {task}", f"|coverage − {target:.3f}|", cov, True))
    return out


def what_holds(gmm, digits, num_draws):
    comps = comparisons(gmm, digits, num_draws)
    lines = ["## What holds (generated from the numbers above)", ""]
    wins = {c: [] for c in CONFIGS}
    for row, metric, vals, lower in comps:
        means = {c: np.mean(v) for c, v in vals.items()}
        best = (min if lower else max)(means, key=means.get)
        if all(paired_better(vals[best], vals[c], lower) for c in CONFIGS if c != best):
            wins[best].append(f"{row} {metric}")
    for c in CONFIGS:
        where = "; ".join(wins[c]) if wins[c] else "nowhere"
        lines.append(f"* {label(c)} wins (best, all others > 2 paired SE): {where}.")
    lines.append("")
    for kernel, other in (
        (k, o) for k in ("ALMC", "ALMCSMC") for o in ("noised", "auto+stage")
    ):
        paper, alt = (kernel, "paper"), (kernel, other)
        better = {paper: [], alt: []}
        for row, metric, vals, lower in comps:
            for a, b in ((paper, alt), (alt, paper)):
                if paired_better(vals[a], vals[b], lower):
                    better[a].append(f"{row} {metric}")
        n_p, n_n = len(better[paper]), len(better[alt])
        choice = label(alt) if n_n > n_p else "paper" if n_p > n_n else "neither"
        dims = ([GMM_DIM] if gmm else []) + ([64] if digits else [])
        costs = list(dict.fromkeys(passes_per_draw(alt, d) for d in dims))
        cost = " / ".join(f"{c:,}" for c in costs)
        lines.append(
            f'* {label(alt)} better than "paper" by > 2 paired SE in {n_n} '
            f"of {len(comps)} (row, metric) cells"
            + (f" ({'; '.join(better[alt])})" if n_n else "")
            + f', "paper" better in {n_p}'
            + (f" ({'; '.join(better[paper])})" if n_p else "")
            + f". The count alone favours {choice}; {label(alt)} costs "
            f"{cost} network passes per draw"
            + (" at " + " / ".join(f"d = {d}" for d in dims) if len(costs) > 1 else "")
            + "."
        )
    if gmm:
        # Means hide single failures (a chain system in the wrong mode: TV ≈ 1).
        worst = []
        for c in CONFIGS:
            tvs = [tv for dy in OBS_DIMS for tv in gmm[(dy, c)]["tv"]]
            failed = sum(tv > 0.5 for tv in tvs)
            worst.append(
                f"{label(c)} {max(tvs):.2f} ({failed} of {len(tvs)} above 0.5)"
            )
        lines.append(
            "* Worst gmm25 mode-weight TV over all problems: " + "; ".join(worst) + "."
        )
    return lines


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def report(args, gmm, floors, digits, seconds_total, timing):
    seeds = list(range(args.seeds))
    command = " ".join(["python benchmarks/numpyro_defaults.py", *args.argv])
    lines = [
        "# The NumPyro front end's defaults: `likelihood_path` of `ALMC` and `ALMCSMC`",
        "",
        f"Command: `{command}` ({seconds_total / 60:.0f} min on one CPU core). "
        f"Machine: {platform.machine()}, jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}. Every configuration runs through "
        "`MCMC(kernel, num_warmup=schedule.num_steps, num_samples=1, num_chains=N, "
        f'chain_method="vectorized")` with `schedule=budget_schedule({BUDGET})` '
        f"({BUDGET} score evaluations per draw) and the kernels' other defaults "
        '(`preconditioner="auto"`); `ALMCSMC` computes ∇·s of its weights exactly '
        "(d JVPs per step) at d = 8 and by Hutchinson with one probe (1 JVP per step) "
        "at d = 64. *Passes / draw*: network passes per draw, one per score "
        "evaluation or JVP. Wall times include NumPyro's compilation, repeated at "
        "every `run`; the tables' times ran one after another on one core shared "
        "with other jobs, so compare configurations by the interleaved table.",
        "",
    ]
    if gmm:
        lines += [
            f"## gmm25, d = {GMM_DIM}",
            "",
            f"Problem seeds {seeds[0]}–{seeds[-1]}, {args.chains} draws (chains or "
            "particles) per problem, the model `x ~ ScorePrior(score, (8,))`, "
            "`y ~ Normal(A x, σ_y)` of `numpyro_frontend.py`; mode-weight TV and "
            "sliced W2 against exact posterior draws (`baselines_gmm.score`), mean "
            "± standard error over seeds. *Floor*: the same metrics between two "
            "exact sample sets of that size. *SMC*: resamplings along the path / "
            "distinct starting ancestors of the final particles (means over seeds).",
            "",
            "| d_y | configuration | passes / draw | mode-weight TV | sliced W2 | "
            "SMC | s / problem |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for dy in OBS_DIMS:
            for config in CONFIGS:
                r = gmm[(dy, config)]
                bad = f" ({r['nonfinite']} non-finite)" if r["nonfinite"] else ""
                lines.append(
                    f"| {dy} | {label(config)}{bad} | "
                    f"{passes_per_draw(config, GMM_DIM):,} | {fmt(r['tv'])} | "
                    f"{fmt(r['sw'])} | {fmt_smc(r['resamplings'], r['lineages'])} | "
                    f"{r['seconds']:.1f} |"
                )
            f = floors[dy]
            lines.append(
                f"| {dy} | *floor (exact draws)* | | {fmt(f['tv'])} | {fmt(f['sw'])} "
                "| | |"
            )
        lines.append("")
    if digits:
        tasks = sorted({t for t, _ in digits}, key=list(TASKS).index)
        lines += [
            "## Digits, d = 64",
            "",
            f"Held-out test digits 0–{args.digits - 1}, one `MCMC` run of "
            f"{args.draws} chains (particles) per digit; `x ~ ScorePrior("
            "digits_prior().score_fn, (64,))`, `y ~ Normal(A x, 0.1)` (noise known, "
            "prior space), `A` from `_inverse.make_task`. PSNR of the posterior mean "
            "(dB, pixels 0–16) and coverage of the pixelwise 90 % interval between "
            "the draws' 5 % and 95 % quantiles (target "
            f"{expected_coverage(args.draws):.3f}, that of {args.draws} exact draws "
            "for a truth exchangeable with them), mean ± standard error over "
            "digits; *sd*: mean pixelwise posterior "
            "standard deviation (pixels); *SMC*: resamplings along the path / "
            "distinct starting ancestors of the final particles (means over digits).",
            "",
            "| task | configuration | passes / draw | PSNR | 90 % coverage | sd | "
            "SMC | s / digit |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for task in tasks:
            for config in CONFIGS:
                r = digits[(task, config)]
                lines.append(
                    f"| {task} | {label(config)} | {passes_per_draw(config, 64):,} | "
                    f"{fmt(r['psnr'], 2)} | {fmt(r['coverage'])} | "
                    f"{fmt(r['sd'], 2)} | {fmt_smc(r['resamplings'], r['lineages'])} | "
                    f"{r['seconds']:.1f} |"
                )
        lines.append("")
    if timing:
        lines += [
            "## Wall time, interleaved",
            "",
            f"Seconds of one whole `MCMC` run (built anew, compiled, run; median of "
            f"{min(len(t['gmm']) for t in timing.values())} runs with the four "
            "configurations interleaved): gmm25 d_y = 2, seed 0, "
            f"{args.chains} chains; digit 0 of `inpaint_random`, {args.draws} "
            'chains. Ratio: to `ALMC` "paper" (the default).',
            "",
            "| configuration | passes / draw (d = 8 / 64) | gmm25 s | ratio | "
            "digit s | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        base = {k: np.median(timing[DEFAULT_CONFIG][k]) for k in ("gmm", "digits")}
        for config in CONFIGS:
            g, d = (np.median(timing[config][k]) for k in ("gmm", "digits"))
            lines.append(
                f"| {label(config)} | {passes_per_draw(config, GMM_DIM):,} / "
                f"{passes_per_draw(config, 64):,} | {g:.1f} | {g / base['gmm']:.2f} | "
                f"{d:.1f} | {d / base['digits']:.2f} |"
            )
        lines.append("")
    lines += what_holds(gmm, digits, args.draws)
    if ANALYSIS and not args.quick and args.argv == []:
        lines += ["", ANALYSIS.rstrip()]
    return lines


def _save(path, args, gmm, floors, digits, seconds_total, timing):
    def key(k):
        return "|".join(str(p) for p in (k[0], *k[1]))

    path.write_text(
        json.dumps(
            {
                "args": {
                    k: v for k, v in vars(args).items() if k not in ("report", "out")
                },
                "seconds_total": seconds_total,
                "gmm": {key(k): v for k, v in gmm.items()},
                "floors": {str(k): v for k, v in floors.items()},
                "digits": {key(k): v for k, v in digits.items()},
                "timing": {"|".join(k): v for k, v in timing.items()},
            },
            indent=1,
        )
    )


def _load(path):
    raw = json.loads(path.read_text())

    def unkey(k, first=str):
        a, kernel, lik = k.split("|")
        return first(a), (kernel, lik)

    args = argparse.Namespace(**raw["args"])
    gmm = {unkey(k, int): v for k, v in raw["gmm"].items()}
    floors = {int(k): v for k, v in raw["floors"].items()}
    digits = {unkey(k): v for k, v in raw["digits"].items()}
    timing = {tuple(k.split("|")): v for k, v in raw.get("timing", {}).items()}
    return args, gmm, floors, digits, raw["seconds_total"], timing


def main(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="gmm25 problem seeds")
    parser.add_argument("--chains", type=int, default=1000, help="gmm25 draws")
    parser.add_argument("--digits", type=int, default=8, help="test digits per task")
    parser.add_argument("--draws", type=int, default=32, help="draws per digit")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--sections",
        nargs="*",
        default=["gmm", "digits", "timing"],
        choices=["gmm", "digits", "timing"],
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timing runs"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, 500 chains, 3 digits, 16 draws",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--report",
        action="store_true",
        help="rebuild --out from its .json (no runs; e.g. after editing ANALYSIS)",
    )
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.report:
        lines = report(*_load(out.with_suffix(".json")))
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    # The command as run, without --out (where the table went is not part of it).
    args.argv = [
        a
        for i, a in enumerate(argv)
        if not a.startswith("--out") and (i == 0 or argv[i - 1] != "--out")
    ]
    if args.quick:
        args.seeds, args.chains, args.digits, args.draws = 2, 500, 3, 16
        args.repeats = 1
    # Resume: every finished (row, configuration) of the same command is kept in the
    # .json next to --out and not run again (delete the .json to start afresh).
    cache = out.with_suffix(".json")
    gmm, floors, digits, seconds_before, timing = {}, {}, {}, 0.0, {}
    if cache.exists():
        old_args, gmm, floors, digits, seconds_before, timing = _load(cache)
        if old_args.argv != args.argv:
            gmm, floors, digits, seconds_before, timing = {}, {}, {}, 0.0, {}
        else:
            print(f"resuming from {cache}", flush=True)
    tic = time.perf_counter()

    def save():
        elapsed = seconds_before + time.perf_counter() - tic
        _save(cache, args, gmm, floors, digits, elapsed, timing)

    if "gmm" in args.sections:
        gmm_section(list(range(args.seeds)), args.chains, gmm, floors, save)
    if "digits" in args.sections:
        digits_section(args.tasks, args.digits, args.draws, digits, save)
    if "timing" in args.sections:
        timing_section(args.chains, args.draws, args.repeats, timing, save)
    save()
    lines = report(*_load(cache))
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
