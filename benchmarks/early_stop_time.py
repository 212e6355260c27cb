"""Is the data-driven early-stopping time right? Against the exact bias of stopping.

    taskset -c 1 python benchmarks/early_stop_time.py

``choose_early_stop_time`` picks the largest candidate τ whose draws cannot be told
from those at the smallest candidate (energy distance, permutation noise, tolerance
2). On the exact test beds μ_τ and μ_0 are known, so the bias of stopping at τ can be
measured: the energy distance between large exact draw sets of μ_τ and μ_0, in units
of the chooser's own noise (the permutation sd of the statistic at N/2 against N/2
draws). A right choice has a bias of a few noise units at most, and the largest
candidate (a needless choice of the smallest time would not be "right", only safe)
is shown for scale.

Two sources of candidate draws: **exact** (independent exact draws of μ_τ at each
candidate; tests the rule alone) and **path** (one ALMC run to τ_min = 0.002 with
``budget_schedule(1000)`` and ``linear_gaussian_preconditioner``, its path read at
the candidates with ``path_candidates``; what a user does). For the path the last
column is the error the user keeps: the energy distance of the ALMC draws at the
chosen τ to exact draws of μ_0, beside the same for the draws at τ_min, both in
noise units.

Writes ``benchmarks/results/early_stop_time.md``. Pinned to one core: about 3 min.
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_almc as na
from numpyro_almc import testbeds as tb
from numpyro_almc.diagnostics import (
    choose_early_stop_time,
    energy_distance,
    path_candidates,
)

RESULTS = pathlib.Path(__file__).parent / "results"
TIMES = np.geomspace(1.0, 0.002, 8)
SIZES = (512, 2048)
SEEDS = (0, 1, 2)
EXACT_N = 3000  # exact draws per side for the bias


def problems():
    return {
        "gaussian (d = 4)": tb.gaussian_problem(
            jnp.array([2.0, -1.0, 0.5, 0.0]),
            jnp.array([0.3, 2.0, 0.5, 1.0]),
            jnp.eye(4)[:2],
            jnp.array([1.0, -0.5]),
            0.2,
        ),
        "bars (d = 2)": tb.bars_problem(),
        "conflict (d = 2)": tb.conflict_problem(),
        "gmm25 (d = 8, d_y = 2)": tb.gmm25_problem(jax.random.key(0), 8, 2),
    }


def exact_bias(problem, times, scale):
    x0 = tb.mixture_sample(jax.random.key(100), problem.posterior(0.0), EXACT_N)
    out = []
    for t in times:
        xt = tb.mixture_sample(jax.random.key(101), problem.posterior(t), EXACT_N)
        out.append(energy_distance(xt / scale, x0 / scale).value)
    return np.array(out)


def path_draws(problem, num, seed):
    sched = na.budget_schedule(1000, early_stop_time=float(TIMES[-1]))
    res = na.run_almc(
        jax.random.key(seed),
        problem.loglikelihood_fn,
        problem.score_fn,
        sched,
        jnp.zeros(problem.dim),
        num_chains=num,
        preconditioner=na.linear_gaussian_preconditioner(problem.A, problem.noise_std),
        path_every=4,
    )
    return path_candidates(res, sched, path_every=4, times=TIMES)


def error_to_posterior(problem, draws, scale, seed):
    exact = tb.mixture_sample(
        jax.random.key(200 + seed), problem.posterior(0.0), draws.shape[0]
    )
    res = energy_distance(
        np.asarray(draws) / scale,
        np.asarray(exact) / scale,
        num_permutations=200,
        rng_key=jax.random.key(seed),
    )
    return (res.value - res.null_mean) / res.null_sd


def main():
    start = time.perf_counter()
    rows = []
    for name, problem in problems().items():
        ref = np.concatenate(
            [
                np.asarray(
                    tb.mixture_sample(jax.random.key(7), problem.posterior(t), 500)
                )
                for t in TIMES
            ]
        )
        scale = ref.std(0)  # the chooser's standardisation, up to sampling noise
        bias = exact_bias(problem, TIMES, scale)
        for num in SIZES:
            for source in ("exact", "path"):
                chosen, bias_units, first_units, settled, kept = [], [], [], [], []
                for seed in SEEDS:
                    if source == "exact":
                        times = TIMES
                        draws = [
                            tb.mixture_sample(
                                jax.random.key(1000 * seed + i),
                                problem.posterior(t),
                                num,
                            )
                            for i, t in enumerate(TIMES)
                        ]
                    else:
                        times, draws = path_draws(problem, num, seed)
                    choice = choose_early_stop_time(
                        times, draws, rng_key=jax.random.key(seed)
                    )
                    noise = float(np.nanmedian(choice.table["null_sd"]))
                    # the candidate times of a path are the kept ones, close to TIMES
                    index = int(np.argmin(np.abs(np.log(TIMES) - np.log(choice.time))))
                    chosen.append(choice.time)
                    bias_units.append(bias[index] / noise)
                    first_units.append(bias[0] / noise)
                    settled.append(choice.settled)
                    if source == "path":
                        kept.append(
                            (
                                error_to_posterior(
                                    problem, draws[choice.index], scale, seed
                                ),
                                error_to_posterior(problem, draws[-1], scale, seed),
                            )
                        )
                rows.append(
                    dict(
                        problem=name,
                        num=num,
                        source=source,
                        chosen=chosen,
                        bias=bias_units,
                        first=float(np.mean(first_units)),
                        settled=sum(settled),
                        kept=kept,
                    )
                )
                print(rows[-1], flush=True)
    seconds = time.perf_counter() - start
    write(rows, seconds)


def fmt_times(ts):
    return ", ".join(f"{t:.3g}" for t in ts)


def write(rows, seconds):
    lines = [
        "# A data-driven early-stopping time against the exact bias",
        "",
        "Command: `taskset -c 1 python benchmarks/early_stop_time.py` (float32 runs, "
        f"float64 statistics, one CPU core, {seconds:.0f} s). "
        f"Candidates: {len(TIMES)} times from {TIMES[0]:g} to {TIMES[-1]:g}, "
        "geometric; `choose_early_stop_time` with its defaults (compare with the "
        "smallest time, tolerance 2 noise sd, 200 permutations); seeds "
        f"{', '.join(map(str, SEEDS))}.",
        "",
        "**Bias** is the exact energy distance between μ_τ and μ_0 (from "
        f"{EXACT_N} exact draws each, coordinates scaled by the candidates' sd), in "
        "units of the chooser's noise (the permutation sd of its statistic at N/2 "
        "against N/2 draws, median over candidates). **exact**: independent exact "
        "draws of μ_τ at every candidate (the rule alone); **path**: one ALMC run "
        "of N chains to τ = 0.002 (`budget_schedule(1000)`, "
        "`linear_gaussian_preconditioner`, path kept every 4 steps) read at the "
        "candidates (`path_candidates`). **kept error**: energy distance of the "
        "ALMC draws at the chosen τ (and at τ_min) to N exact draws of μ_0, as "
        "z-scores of a permutation test (|z| ≲ 2: indistinguishable).",
        "",
        "| problem | N | draws | chosen τ per seed | bias at chosen τ (noise units) | "
        "bias at τ = 1 | settled | kept error z: chosen τ / τ_min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kept = (
            "; ".join(f"{a:.1f} / {b:.1f}" for a, b in r["kept"]) if r["kept"] else "—"
        )
        lines.append(
            f"| {r['problem']} | {r['num']} | {r['source']} | {fmt_times(r['chosen'])} "
            f"| {', '.join(f'{b:.1f}' for b in r['bias'])} | {r['first']:.0f} "
            f"| {r['settled']}/{len(SEEDS)} | {kept} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "early_stop_time.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
