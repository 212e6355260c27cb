"""Ablations of ALMC on multimodal problems with exact posteriors.

    python benchmarks/almc_ablation.py

Problems: bars (d = 2), conflict_problem d = 2 and d = 10 (prior weight 0.05 on the
mode the data favour), gmm25 d = 8, d_y = 1 (problem seeds 0-1). Budgets 300, 1000,
3000 score evaluations per chain (the full sweep at 300 and 1000 only), 2000
chains, last iterate. Families:

A. schedule: grid (uniform / log / snr) x step_rule (constant / noise) x step size;
B. early-stopping time τ;
C. warm start on / off;
D. preconditioning on / off;
E. paper_schedule at equal δ: slow (large κ) vs too fast (small κ);
F. tail_fraction.

Everything not varied is the current ``budget_schedule`` default. Metrics: TV (mode
weights vs the exact μ_0 weights), SW (sliced W2 to exact μ_0 draws), with the Monte
Carlo floor in the column header. Writes ``benchmarks/results/almc_ablation.md``
with a generated "What holds" paragraph.
"""

from __future__ import annotations

import inspect
import pathlib
import time

import numpy as np
from almc_quality import (
    floors,
    fmt,
    gmm25_problems,
    sample_batch,
    score_batch,
)

from numpyro_almc import budget_schedule, paper_schedule
from numpyro_almc.testbeds import bars_problem, conflict_problem, mode_weight_error

RESULTS = pathlib.Path(__file__).parent / "results"
BUDGETS = (300, 1000, 3000)
SWEEP_BUDGETS = (300, 1000)  # the full sweep; 3000 only for the key ablations
NUM_CHAINS = 2000
GMM_SEEDS = 2
DEFAULTS = {
    k: v.default
    for k, v in inspect.signature(budget_schedule).parameters.items()
    if v.default is not inspect.Parameter.empty and k != "dtype"
}


def problem_sets():
    gmm, seeds = gmm25_problems(1, GMM_SEEDS)
    sets = {
        "bars": ([bars_problem()], [0]),
        "conflict d=2": ([conflict_problem(dim=2)], [0]),
        "conflict d=10": ([conflict_problem(dim=10)], [0]),
        "gmm25 d=8 d_y=1": (gmm, seeds),
    }
    out = {}
    for name, (problems, seeds) in sets.items():
        out[name] = (problems, seeds, floors(problems, seeds, n=NUM_CHAINS))
    return out


def evaluate(sets, schedule, *, precondition=True):
    """{problem: {"tv", "sw", "tv_tau", "nonfinite"}} (means over seeds)."""
    tau = float(schedule.early_stop_time)
    res = {}
    for name, (problems, seeds, exact) in sets.items():
        draws = np.asarray(
            sample_batch(
                problems,
                seeds,
                schedule,
                precondition=precondition,
                num_chains=NUM_CHAINS,
            )
        )
        draws = np.where(np.isfinite(draws), draws, 1e30)
        rows = score_batch(draws, exact)
        tv_tau = [
            float(mode_weight_error(p.posterior(tau), x))
            for p, x in zip(problems, draws, strict=True)
        ]
        res[name] = {
            "tv": float(np.mean([r["tv"] for r in rows])),
            "sw": float(np.mean([r["sw"] for r in rows])),
            "tv_tau": float(np.mean(tv_tau)),
            "nonfinite": sum(r["nonfinite"] for r in rows),
        }
    return res


def main():
    t_start = time.perf_counter()
    sets = problem_sets()
    names = list(sets)
    floor = {
        n: {k: float(np.mean([e[2][k] for e in sets[n][2]])) for k in ("tv", "sw")}
        for n in names
    }
    results = {}  # (family, label, budget) -> res

    def run(family, label, budget, schedule, precondition=True):
        t0 = time.perf_counter()
        results[(family, label, budget)] = evaluate(
            sets, schedule, precondition=precondition
        )
        r = results[(family, label, budget)]
        print(
            f"{family:10s} {label:38s} {budget:5d} "
            + " ".join(f"{r[n]['tv']:.3f}/{r[n]['sw']:.3f}" for n in names)
            + f"  {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

    step_sizes = {"noise": (0.3, 1.0), "constant": (0.01, 0.03)}
    taus = (0.005, 0.02, 0.1, 0.3)
    for budget in BUDGETS:
        sweep = budget in SWEEP_BUDGETS
        run("precond", "preconditioned (defaults)", budget, budget_schedule(budget))
        default = results[("precond", "preconditioned (defaults)", budget)]
        # A. schedule options
        for grid in ("uniform", "log", "snr"):
            for rule, sizes in step_sizes.items():
                for delta in sizes:
                    if not sweep and not (
                        grid == DEFAULTS["grid"] and rule == DEFAULTS["step_rule"]
                    ):
                        continue
                    run(
                        "schedule",
                        f"grid={grid} rule={rule} δ={delta:g}",
                        budget,
                        budget_schedule(
                            budget, grid=grid, step_rule=rule, step_size=delta
                        ),
                    )
        # C. warm start
        results[("warm start", "num_warm_start_steps=100", budget)] = default
        run(
            "warm start",
            "num_warm_start_steps=0",
            budget,
            budget_schedule(budget, num_warm_start_steps=0),
        )
        # D. preconditioning
        run(
            "precond",
            "not preconditioned, rule=noise δ=0.01",
            budget,
            budget_schedule(budget, step_size=0.01),
            False,
        )
        if not sweep:
            continue
        # B. early-stopping time
        for tau in taus:
            if tau == DEFAULTS["early_stop_time"]:
                results[("tau", f"τ={tau:g}", budget)] = default
                continue
            run(
                "tau",
                f"τ={tau:g}",
                budget,
                budget_schedule(budget, early_stop_time=tau),
            )
        # F. tail fraction
        results[("tail", "tail_fraction=0", budget)] = default
        for frac in (0.1, 0.3):
            run(
                "tail",
                f"tail_fraction={frac:g}",
                budget,
                budget_schedule(budget, tail_fraction=frac),
            )
    # E. paper schedule, equal δ, κ sets the number of steps (hence the cost).
    T, tau0 = 3.0, 0.02
    for delta in (0.01,):
        for steps in BUDGETS:
            kappa = steps * delta / (T - tau0)
            sched = paper_schedule(delta, kappa, T, tau0, 100, 0.5)
            run(
                "paper",
                f"paper δ={delta:g} κ={kappa:.2f}",
                sched.num_score_evals,
                sched,
            )

    # ---------------------------------------------------------------- report
    header = [
        "# ALMC ablations on multimodal problems",
        "",
        f"Command: `python benchmarks/almc_ablation.py` (float32, CPU). {NUM_CHAINS} "
        "chains per problem, last iterate; budgets "
        f"{', '.join(map(str, BUDGETS))} score evaluations per chain. Problems: "
        "`bars_problem()`; `conflict_problem(dim=2)` and `(dim=10)` (prior weight "
        "0.05 on the mode the data favour, exact posterior weight ≈ 1); "
        f"`gmm25_problem(key(s), 8, 1)` for s = 0–{GMM_SEEDS - 1} (means over seeds). "
        "Unless a row says otherwise: `budget_schedule` defaults "
        f"`{DEFAULTS}` + `linear_gaussian_preconditioner`.",
        "",
        "Cells: `TV / SW` — TV = mode-weight error vs the exact μ_0 weights, SW = "
        "sliced W2 (256 directions) to "
        f"{NUM_CHAINS} exact μ_0 draws. Monte Carlo floors (two exact sample sets of "
        "the same size) in the column headers. Where τ is varied, `TV_τ` (vs the "
        "exact μ_τ weights) is also given. `inf`/huge SW = diverged chains.",
        "",
    ]
    cols = " | ".join(
        f"{n} TV / SW (floor {fmt(floor[n]['tv'])} / {fmt(floor[n]['sw'])})"
        for n in names
    )
    body = []
    titles = {
        "schedule": "A. Grid × step rule × step size",
        "tau": "B. Early-stopping time τ (TV_τ in brackets)",
        "warm start": "C. Warm start",
        "precond": "D. Preconditioning",
        "paper": "E. paper_schedule at equal δ = 0.01: κ sets the speed (budget = steps)",
        "tail": "F. Fixed-τ tail after annealing",
    }

    def cell(r, n, with_tau=False):
        s = f"{fmt(r[n]['tv'])} / {fmt(r[n]['sw'], 2) if r[n]['sw'] < 1e3 else 'diverged'}"
        if with_tau:
            s += f" [{fmt(r[n]['tv_tau'])}]"
        return s

    for fam, title in titles.items():
        body += [
            f"## {title}",
            "",
            f"| config | budget | {cols} |",
            "|---|---|" + "---|" * len(names),
        ]
        keys = [k for k in results if k[0] == fam]
        keys.sort(key=lambda k: (k[2], list(results).index(k)))
        for k in keys:
            r = results[k]
            body.append(
                f"| {k[1]} | {k[2]} | "
                + " | ".join(cell(r, n, fam == "tau") for n in names)
                + " |"
            )
        body.append("")

    # ------------------------------------------------------ choose the schedule
    # Rank each schedule config per (problem, budget) on TV and on SW; average.
    sched_keys = [k for k in results if k[0] == "schedule"]
    labels = sorted({k[1] for k in sched_keys}, key=[k[1] for k in sched_keys].index)
    ranks = {lab: [] for lab in labels}
    excess = {lab: [] for lab in labels}
    for b in SWEEP_BUDGETS:
        for n in names:
            for metric in ("tv", "sw"):
                vals = np.array(
                    [results[("schedule", lab, b)][n][metric] for lab in labels]
                )
                vals = np.where(np.isfinite(vals), vals, np.inf)
                order = np.argsort(np.argsort(vals, kind="stable"), kind="stable")
                for lab, rnk in zip(labels, order, strict=True):
                    ranks[lab].append(rnk + 1)
            for lab in labels:
                excess[lab].append(
                    results[("schedule", lab, b)][n]["tv"] - floor[n]["tv"]
                )
    mean_rank = {lab: float(np.mean(v)) for lab, v in ranks.items()}
    mean_excess = {lab: float(np.mean(v)) for lab, v in excess.items()}
    order = sorted(labels, key=lambda lab: mean_rank[lab])
    body += [
        "## Ranking of the schedule options",
        "",
        "Mean rank over the 4 problems × budgets 300, 1000 × {TV, SW} (1 = best of "
        f"{len(labels)}), and the mean TV excess over its floor.",
        "",
        "| config | mean rank | mean TV − floor |",
        "|---|---|---|",
    ]
    for lab in order:
        body.append(f"| {lab} | {mean_rank[lab]:.1f} | {fmt(mean_excess[lab])} |")
    body.append("")

    # ------------------------------------------------------------ what holds
    def fam_mean(fam, label, metric="tv", problems=names, budgets=BUDGETS):
        return float(
            np.mean(
                [results[(fam, label, b)][n][metric] for b in budgets for n in problems]
            )
        )

    best = order[0]
    default_label = (
        f"grid={DEFAULTS['grid']} rule={DEFAULTS['step_rule']} "
        f"δ={DEFAULTS['step_size']:g}"
    )
    holds = ["## What holds (generated from the numbers above)", ""]
    holds.append(
        f"* Schedule: best mean rank `{best}` ({mean_rank[best]:.1f}, mean TV excess "
        f"{fmt(mean_excess[best])}); the current default `{default_label}` ranks "
        + (
            f"{mean_rank[default_label]:.1f} (mean TV excess "
            f"{fmt(mean_excess[default_label])})."
            if default_label in mean_rank
            else "— (not in the grid)."
        )
        + " Top five: "
        + ", ".join(f"`{lab}` ({mean_rank[lab]:.1f})" for lab in order[:5])
        + "."
    )
    tau_tv = {t: fam_mean("tau", f"τ={t:g}", budgets=SWEEP_BUDGETS) for t in taus}
    tau_sw = {t: fam_mean("tau", f"τ={t:g}", "sw", budgets=SWEEP_BUDGETS) for t in taus}
    holds.append(
        "* τ: mean TV over problems and budgets "
        + ", ".join(f"τ={t:g}: {fmt(v)}" for t, v in tau_tv.items())
        + "; mean SW "
        + ", ".join(f"τ={t:g}: {fmt(v)}" for t, v in tau_sw.items())
        + f". Lowest TV at τ = {min(tau_tv, key=tau_tv.get):g}, lowest SW at τ = "
        f"{min(tau_sw, key=tau_sw.get):g}."
    )
    for b in BUDGETS:
        w0 = {
            n: results[("warm start", "num_warm_start_steps=0", b)][n]["tv"]
            for n in names
        }
        w1 = {
            n: results[("warm start", "num_warm_start_steps=100", b)][n]["tv"]
            for n in names
        }
        holds.append(
            f"* Warm start at budget {b}: TV without / with (100 steps): "
            + ", ".join(f"{n} {fmt(w0[n])} / {fmt(w1[n])}" for n in names)
            + "."
        )
    for b in BUDGETS:
        on = results[("precond", "preconditioned (defaults)", b)]
        offs = [
            k
            for k in results
            if k[0] == "precond" and k[2] == b and k[1].startswith("not")
        ]
        best_off = {n: min(results[k][n]["tv"] for k in offs) for n in names}
        holds.append(
            f"* Preconditioning at budget {b}: TV with / best without: "
            + ", ".join(f"{n} {fmt(on[n]['tv'])} / {fmt(best_off[n])}" for n in names)
            + "."
        )
    pk = [k for k in results if k[0] == "paper"]
    holds.append(
        "* paper_schedule, δ = 0.01: TV (bars, conflict d=2, conflict d=10, gmm25) by "
        "κ: "
        + "; ".join(
            f"{k[1].split()[-1]} ({k[2]} evals): "
            + ", ".join(fmt(results[k][n]["tv"]) for n in names)
            for k in pk
        )
        + "."
    )
    tails = {
        f: fam_mean("tail", f"tail_fraction={f:g}", budgets=SWEEP_BUDGETS)
        for f in (0.0, 0.1, 0.3)
    }
    holds.append(
        "* tail_fraction: mean TV "
        + ", ".join(f"{f:g}: {fmt(v)}" for f, v in tails.items())
        + "."
    )
    holds += [
        "",
        f"Total wall time {time.perf_counter() - t_start:.0f} s.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(header + body + holds)
    (RESULTS / "almc_ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
