"""Sharded-chain throughput and peak memory of streamed (chunked) runs.

    python benchmarks/sharding.py

Throughput: chain-steps per second of ``run_almc`` (median of 3 timed runs after a
compile run) against the number of chains and of *simulated* CPU devices (1, 2, 4,
each in a fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count``;
chains sharded with ``devices="all"``). Simulated devices share the same CPU cores,
so no real speedup is expected: the table measures sharding overhead only.

Memory: resident-set high-water mark (``ru_maxrss``) of a fresh process that keeps
every step's draw of a D-dimensional site, either all in memory (``run_almc`` with
``path_every=1``) or streamed to disk in chunks (``run_almc_chunked``).
Writes ``benchmarks/results/sharding.md``.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

RESULTS = pathlib.Path(__file__).parent / "results" / "sharding.md"
CHAINS = [64, 256, 1024, 4096]
DEVICES = [1, 2, 4]
DIM, STEPS = 16, 200
MEM = dict(dim=4096, chains=8, steps=3000, chunk=250)

_THROUGHPUT = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp
import numpyro_almc as na
cfg = json.loads(sys.argv[1])
dim, steps = cfg["dim"], cfg["steps"]
A = jnp.eye(dim)[: dim // 4]
def loglik(x):
    return -0.5 * jnp.sum((A @ x - 1.0) ** 2) / 0.1**2
score = lambda x, t: -x
sched = na.budget_schedule(steps, num_warm_start_steps=0)
out = {}
for n in cfg["chains"]:
    dev = None if len(jax.devices()) == 1 else "all"
    run = lambda k: na.run_almc(jax.random.key(k), loglik, score, sched,
                                jnp.zeros(dim), num_chains=n, devices=dev)
    jax.block_until_ready(run(0))
    ts = []
    for k in range(3):
        t = time.perf_counter(); jax.block_until_ready(run(k + 1))
        ts.append(time.perf_counter() - t)
    out[n] = n * sched.num_steps / statistics.median(ts)
print(json.dumps(out))
"""

_MEMORY = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
import numpyro_almc as na
cfg = json.loads(sys.argv[1])
dim, chains, steps = cfg["dim"], cfg["chains"], cfg["steps"]
loglik = lambda x: -0.5 * jnp.sum((x - 1.0) ** 2)
score = lambda x, t: -x
sched = na.budget_schedule(100, num_warm_start_steps=0)
t = time.perf_counter()
if cfg["mode"] == "store":
    res = na.run_almc(jax.random.key(0), loglik, score, sched, jnp.zeros(dim),
                      num_chains=chains, num_steps=steps, path_every=1)
    m = float(jnp.mean(res.path))
else:
    res = na.run_almc_chunked(jax.random.key(0), loglik, score, sched,
                              jnp.zeros(dim), num_chains=chains, num_steps=steps,
                              chunk_size=cfg["chunk"], path=cfg["path"])
    m = float(jnp.mean(res.pooled_mean["x"]))
print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024, "seconds": time.perf_counter() - t}))
"""


def _child(code, cfg, devices=1):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    rows = {}
    for d in DEVICES:
        rows[d] = _child(_THROUGHPUT, {"dim": DIM, "steps": STEPS, "chains": CHAINS}, d)
        print(d, rows[d], flush=True)
    mem = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("baseline", "store", "stream", "stream2x"):
            cfg = {**MEM, "mode": mode, "path": f"{tmp}/{mode}"}
            if mode == "baseline":
                cfg["steps"] = 1
                cfg["mode"] = "store"
            if mode == "stream2x":  # twice the steps: same memory
                cfg["steps"] = 2 * MEM["steps"]
                cfg["mode"] = "stream"
            mem[mode] = _child(_MEMORY, cfg)
            print(mode, mem[mode], flush=True)
    draws_mib = MEM["chains"] * MEM["steps"] * MEM["dim"] * 4 / 2**20
    chunk_mib = MEM["chains"] * MEM["chunk"] * MEM["dim"] * 4 / 2**20
    lines = [
        "# Sharded chains and streamed runs",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs), JAX CPU backend.",
        "Produced by `python benchmarks/sharding.py`.",
        "",
        f"## Throughput (chain-steps/s), D={DIM}, {STEPS} steps, "
        "linear-Gaussian likelihood",
        "",
        "Simulated devices (`--xla_force_host_platform_device_count`) share the same",
        "CPU cores, so **no speedup is expected**: this measures sharding overhead.",
        "Real gains need real devices (several GPUs, or hosts).",
        "",
        "| chains | " + " | ".join(f"{d} device(s)" for d in DEVICES) + " |",
        "|---:|" + "---:|" * len(DEVICES),
    ]
    for n in CHAINS:
        cells = " | ".join(f"{rows[d][str(n)]:,.0f}" for d in DEVICES)
        lines.append(f"| {n} | {cells} |")
    lines += [
        "",
        f"## Peak RSS: {MEM['chains']} chains x {MEM['steps']} steps of a "
        f"{MEM['dim']}-D float32 site, every step kept",
        "",
        f"Draws: {draws_mib:,.0f} MiB in all; one chunk of {MEM['chunk']} steps: "
        f"{chunk_mib:,.0f} MiB.",
        "",
        "| run | peak RSS (MiB) | seconds |",
        "|---|---:|---:|",
        f"| import + 1 step (baseline) | {mem['baseline']['rss_mib']:,.0f} | "
        f"{mem['baseline']['seconds']:.1f} |",
        f"| `run_almc(path_every=1)` (all in memory) | {mem['store']['rss_mib']:,.0f}"
        f" | {mem['store']['seconds']:.1f} |",
        f"| `run_almc_chunked(chunk_size={MEM['chunk']})` to disk | "
        f"{mem['stream']['rss_mib']:,.0f} | {mem['stream']['seconds']:.1f} |",
        f"| same, twice the steps ({2 * MEM['steps']}) | "
        f"{mem['stream2x']['rss_mib']:,.0f} | {mem['stream2x']['seconds']:.1f} |",
        "",
    ]
    store_extra = mem["store"]["rss_mib"] - mem["baseline"]["rss_mib"]
    stream_extra = mem["stream"]["rss_mib"] - mem["baseline"]["rss_mib"]
    big = MEM["chains"] * 100_000 * MEM["dim"] * 4 / 2**30
    lines += [
        f"Above baseline: storing costs {store_extra:,.0f} MiB "
        f"({store_extra / draws_mib:.1f}x the draws), streaming {stream_extra:,.0f} "
        "MiB (a few chunks; compare the 2x-steps row for growth with the "
        "number of steps).",
        f"Extrapolation to 10^5 draws of the {MEM['dim']}-D site, {MEM['chains']} "
        f"chains: the draws alone are {big:,.1f} GiB, so storing needs at least "
        "that (times the factor above), while streaming stays at the streamed row "
        "(memory is set by `chunk_size`, not by the number of steps).",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
