"""The best sampler of ``baselines_gmm.md`` through NumPyro's ``MCMC``.

Run: ``python benchmarks/numpyro_frontend.py [--seeds N]``; writes
``benchmarks/results/numpyro_frontend.md``.

``MCMC(ALMCSMC(model, likelihood_path="noised"))`` on the gmm25 problems at d = 8
(d_y = 1, 2, 4), the same problem seeds, draw count (1000 particles), budget
(``budget_schedule(1000)``) and metrics as the "ALMC-SMC + noised likelihood" rows
of ``baselines_gmm.md``, which call ``run_almc_smc`` with
``noised_gaussian_likelihood`` directly. The model is an ordinary NumPyro model; the
façade finds its Gaussian observation and builds the noised path itself. The
direct rows are read from ``benchmarks/results/baselines_gmm_parts``.
"""

from __future__ import annotations

import argparse
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

from baselines_gmm import REPORT_SEEDS, SECTIONS, exact_sets, score  # noqa: E402

import numpyro_almc as na  # noqa: E402

BUDGET = 1000
RESULTS = HERE / "results"


def model_of(problem):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(problem.score_fn, event_shape=(8,)))
        numpyro.sample(
            "y", dist.Normal(problem.A @ x, problem.noise_std).to_event(1), obs=y
        )

    return model


def run(problem, key, num_samples):
    schedule = na.budget_schedule(BUDGET)
    mcmc = MCMC(
        na.ALMCSMC(
            model_of(problem),
            likelihood_path="noised",
            final_stage=None,  # as almc_smc's rows of baselines_gmm.md
            schedule=schedule,
        ),
        num_warmup=schedule.num_steps,
        num_samples=1,
        num_chains=num_samples,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key, y=problem.y)
    return np.asarray(mcmc.get_samples()["x"])


def direct_rows(section):
    part = RESULTS / "baselines_gmm_parts" / f"{section}__smc_noised.json"
    return json.loads(part.read_text())["cells"][str(BUDGET)]["rows"]


def mean_se(values):
    v = np.asarray(values, float)
    return v.mean(), v.std(ddof=1) / np.sqrt(len(v))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=len(REPORT_SEEDS))
    args = parser.parse_args(argv)
    seeds = list(REPORT_SEEDS[: args.seeds])
    lines = [
        "# The best sampler through NumPyro: `MCMC(ALMCSMC(model, "
        'likelihood_path="noised"))`',
        "",
        f"Command: `python benchmarks/numpyro_frontend.py --seeds {len(seeds)}`. "
        f"Machine: {platform.machine()}, jax {jax.__version__}. gmm25, d = 8, "
        f"{BUDGET} score evaluations (+ the exact divergence, 8 JVPs per step), 1000 "
        "particles, problem seeds "
        f"{seeds[0]}–{seeds[-1]}; the direct rows are `run_almc_smc` + "
        "`noised_gaussian_likelihood` from `baselines_gmm.md` (same seeds and "
        "metrics). Mean ± standard error over seeds.",
        "",
        "| d_y | front end | mode-weight TV | sliced W2 | max-sliced W2 | s / problem |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dy in (1, 2, 4):
        section = SECTIONS[f"d8y{dy}"]
        problems = section.make(seeds)
        exact = exact_sets(problems, seeds, section.num_samples)
        tic = time.perf_counter()
        draws = [
            run(p, jax.random.key(s), section.num_samples)
            for p, s in zip(problems, seeds, strict=True)
        ]
        seconds = (time.perf_counter() - tic) / len(seeds)
        rows = score(draws, exact, seeds)
        direct = direct_rows(f"d8y{dy}")[: len(seeds)]
        for name, rs, sec in (("NumPyro `MCMC(ALMCSMC)`", rows, f"{seconds:.1f}"),
                              ("`run_almc_smc` (baselines_gmm)", direct, "")):  # fmt: skip
            cells = []
            for metric in ("tv", "sw", "msw"):
                m, se = mean_se([r[metric] for r in rs])
                cells.append(f"{m:.3f} ± {se:.3f}")
            lines.append(f"| {dy} | {name} | {' | '.join(cells)} | {sec} |")
        print("\n".join(lines[-2:]), flush=True)
    (RESULTS / "numpyro_frontend.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
