"""Throughput against chains and dimension, and peak memory of a long run.

    python benchmarks/scaling.py

Throughput is chain-steps per second of ``run_almc`` (median of 3 timed runs after
a compile run) on a Gaussian-mixture score with a linear-Gaussian likelihood. Peak
memory is the resident-set high-water mark of a fresh process running one long
run, storing every step (``path_every=1``), every 100th (``path_every=100``) or no
path at all. Writes ``benchmarks/results/scaling.md``.
"""

from __future__ import annotations

import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results" / "scaling.md"

_CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
import numpyro_almc as na
cfg = json.loads(sys.argv[1])
dim, chains, steps, every = cfg["dim"], cfg["chains"], cfg["steps"], cfg["every"]
A = jnp.eye(dim)[: max(1, dim // 4)]
y = jnp.ones(A.shape[0])
loglik = lambda x: -0.5 * jnp.sum((y - A @ x) ** 2) / 0.1**2
score = na.scores.gaussian_mixture_score(
    jnp.array([0.5, 0.5]), jnp.stack([-jnp.ones(dim), jnp.ones(dim)]),
    jnp.array([0.3, 0.3]))
sched = na.budget_schedule(steps, num_warm_start_steps=0)
start = time.perf_counter()
res = na.run_almc(jax.random.key(0), loglik, score, sched, jnp.zeros(dim),
                  num_chains=chains, path_every=every)
jax.block_until_ready(res)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def throughput(dim: int, chains: int, steps: int = 200) -> float:
    import jax
    import jax.numpy as jnp

    import numpyro_almc as na

    A = jnp.eye(dim)[: max(1, dim // 4)]
    y = jnp.ones(A.shape[0])

    def loglik(x):
        return -0.5 * jnp.sum((y - A @ x) ** 2) / 0.1**2

    score = na.scores.gaussian_mixture_score(
        jnp.array([0.5, 0.5]),
        jnp.stack([-jnp.ones(dim), jnp.ones(dim)]),
        jnp.array([0.3, 0.3]),
    )
    sched = na.budget_schedule(steps, num_warm_start_steps=0)

    def run():
        return na.run_almc(
            jax.random.key(0), loglik, score, sched, jnp.zeros(dim), num_chains=chains
        ).state.position

    jax.block_until_ready(run())
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return chains * sched.num_steps / statistics.median(times)


def peak_memory(dim: int, chains: int, steps: int, every: int) -> dict:
    cfg = json.dumps({"dim": dim, "chains": chains, "steps": steps, "every": every})
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, cfg], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import jax

    lines = [
        "# Scaling of `run_almc`",
        "",
        f"Command: `python benchmarks/scaling.py`. {platform.machine()}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}. "
        "Two-component Gaussian-mixture score, linear-Gaussian likelihood observing a "
        "quarter of the coordinates.",
        "",
        "## Throughput against the number of chains (d = 2, 200 steps)",
        "",
        "| chains | chain-steps / s |",
        "|---:|---:|",
    ]
    for chains in (1, 16, 256, 4096):
        rate = throughput(2, chains)
        lines.append(f"| {chains} | {rate:,.0f} |")
        print(lines[-1], flush=True)
    lines += [
        "",
        "## Throughput against the dimension (16 chains, 200 steps)",
        "",
        "| d | chain-steps / s |",
        "|---:|---:|",
    ]
    for dim in (2, 64, 512, 4096):
        rate = throughput(dim, 16)
        lines.append(f"| {dim} | {rate:,.0f} |")
        print(lines[-1], flush=True)
    steps, dim, chains = 20_000, 256, 16
    stored = steps * chains * dim * 4 / 2**20
    lines += [
        "",
        f"## Peak memory of a {steps:,}-step run (d = {dim}, {chains} chains)",
        "",
        f"Storing every step holds {stored:,.0f} MiB of draws; the driver otherwise "
        "keeps only the final state, per-step diagnostics averaged over chains and an "
        "optional random iterate of the final window.",
        "",
        "| what is kept | peak RSS (MiB) | seconds |",
        "|---|---:|---:|",
    ]
    for every, label in ((1, "every step"), (100, "every 100th step"), (0, "no path")):
        m = peak_memory(dim, chains, steps, every)
        lines.append(f"| {label} | {m['maxrss_mb']:,.0f} | {m['seconds']:.1f} |")
        print(lines[-1], flush=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
