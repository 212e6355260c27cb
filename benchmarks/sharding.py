"""Sharded-chain throughput and peak memory of streamed (chunked) runs.

    python benchmarks/sharding.py

Throughput: chain-steps per second of ``run_almc`` (median of 3 timed runs after a
compile run) against the number of chains and of *simulated* CPU devices (1, 2, 4,
each in a fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count``;
chains sharded with ``devices="all"``). Simulated devices share the same CPU cores,
so no real speedup is expected: the table measures sharding overhead only.

Memory: resident-set high-water mark (``ru_maxrss``) of a fresh process that keeps
every step's draw of a D-dimensional site, either all in memory (``run_almc`` with
``path_every=1``) or streamed to disk in chunks (``run_almc_chunked``), and of a
10^6-draw run of a 4096-D site streamed to disk (and with moments only).

Precision: chain-steps per second of ``run_almc`` with the digits score network
(64-D, Equinox) evaluated in float32 and in bfloat16 (``cast_score``).

    python benchmarks/sharding.py [--skip-big]

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
RAW = RESULTS.with_suffix(".json")
CHAINS = [64, 256, 1024, 4096]
DEVICES = [1, 2, 4]
DIM, STEPS = 16, 200
MEM = dict(dim=4096, chains=8, steps=3000, chunk=250)
# 10^6 draws of a 4096-D float32 site: 8 chains x 125,000 steps, every step kept.
BIG = dict(dim=4096, chains=8, steps=125_000, chunk=250)
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": str(1 << 16)}

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
                              chunk_size=cfg["chunk"], path=cfg["path"],
                              store=cfg["mode"] == "stream")
    m = float(jnp.mean(res.pooled_mean["x"]))
    if cfg["path"] is not None:
        import pathlib
        disk = sum(f.stat().st_size for f in pathlib.Path(cfg["path"]).iterdir())
        for f in pathlib.Path(cfg["path"]).iterdir():
            f.unlink()  # 16 GB for the 10^6-draw run: do not keep it
print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024, "seconds": time.perf_counter() - t,
                  "disk_gib": disk / 2**30 if cfg["mode"] != "store" and cfg["path"]
                  else 0.0}))
"""

_PRECISION = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp
import numpyro_almc as na
from numpyro_almc.models import digits_prior
cfg = json.loads(sys.argv[1])
prior = digits_prior()
x0 = prior.encode(jnp.full(64, 8.0))
obs = jnp.arange(0, 64, 4)
loglik = lambda z: -0.5 * jnp.sum((z[obs] - x0[obs]) ** 2) / 0.05
sched = na.budget_schedule(cfg["steps"], num_warm_start_steps=0, step_size=0.01)
scores = {"float32": prior.score_fn, "bfloat16": na.scores.cast_score(prior.score_fn)}
out = {}
for name, score in scores.items():
    for n in cfg["chains"]:
        run = lambda k: na.run_almc(jax.random.key(k), loglik, score, sched, x0,
                                    num_chains=n)
        jax.block_until_ready(run(0))
        ts = []
        for k in range(3):
            t = time.perf_counter(); jax.block_until_ready(run(k + 1))
            ts.append(time.perf_counter() - t)
        out[f"{name}/{n}"] = n * sched.num_steps / statistics.median(ts)
print(json.dumps(out))
"""
PRECISION = dict(steps=100, chains=[16, 256])


def _child(code, cfg, devices=1, env_extra=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory(tmp):
    mem = {}
    runs = {
        "baseline": ({"steps": 1, "mode": "store"}, None),
        "store": ({"mode": "store"}, None),
        "stream": ({"mode": "stream"}, None),
        "stream2x": ({"mode": "stream", "steps": 2 * MEM["steps"]}, None),
        "stream4x": ({"mode": "stream", "steps": 4 * MEM["steps"]}, None),
        "stream_fixed": ({"mode": "stream"}, FIXED_MMAP),
        "stream4x_fixed": ({"mode": "stream", "steps": 4 * MEM["steps"]}, FIXED_MMAP),
    }
    for name, (over, env) in runs.items():
        cfg = {**MEM, "path": f"{tmp}/{name}", **over}
        mem[name] = _child(_MEMORY, cfg, env_extra=env)
        print(name, mem[name], flush=True)
    return mem


def _big(tmp):
    big = {}
    for mode, path in (("stream", f"{tmp}/big"), ("moments", None)):
        big[mode] = _child(_MEMORY, {**BIG, "mode": mode, "path": path})
        print("big", mode, big[mode], flush=True)
    return big


def main():
    sections = {"throughput", "precision", "memory", "big"}
    args = sys.argv[1:]
    if args and args[0] == "--only":
        sections = set(args[1].split(","))
    elif "--skip-big" in args:
        sections.discard("big")
    # Raw figures of earlier runs: sections not rerun keep theirs.
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        if "throughput" in sections:
            raw["throughput"] = {
                str(d): _child(
                    _THROUGHPUT, {"dim": DIM, "steps": STEPS, "chains": CHAINS}, d
                )
                for d in DEVICES
            }
            print(raw["throughput"], flush=True)
        if "precision" in sections:
            raw["precision"] = _child(_PRECISION, PRECISION)
            print(raw["precision"], flush=True)
        if "memory" in sections:
            raw["memory"] = _memory(tmp)
        if "big" in sections:
            raw["big"] = _big(tmp)
    RAW.write_text(json.dumps(raw, indent=1))
    RESULTS.write_text(_report(raw))
    print(RESULTS.read_text())


def _report(raw):
    rows, mem = raw["throughput"], raw["memory"]
    draws_mib = MEM["chains"] * MEM["steps"] * MEM["dim"] * 4 / 2**20
    chunk_mib = MEM["chains"] * MEM["chunk"] * MEM["dim"] * 4 / 2**20
    lines = [
        "# Sharded chains and streamed runs",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs), JAX CPU backend.",
        "Produced by `python benchmarks/sharding.py` (raw figures in `sharding.json`).",
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
        cells = " | ".join(f"{rows[str(d)][str(n)]:,.0f}" for d in DEVICES)
        lines.append(f"| {n} | {cells} |")
    if "precision" in raw:
        prec = raw["precision"]
        lines += [
            "",
            f"## Score precision: digits network (64-D), {PRECISION['steps']} steps, "
            "1 device",
            "",
            "`cast_score(prior.score_fn)` runs the network (weights and activations) "
            "in bfloat16; positions, noise and the likelihood stay float32.",
            "",
            "| chains | float32 (chain-steps/s) | bfloat16 | bf16 / f32 |",
            "|---:|---:|---:|---:|",
        ]
        for n in PRECISION["chains"]:
            f32, b16 = prec[f"float32/{n}"], prec[f"bfloat16/{n}"]
            lines.append(f"| {n} | {f32:,.0f} | {b16:,.0f} | {b16 / f32:.2f} |")
        lines += [
            "",
            "XLA:CPU has no bfloat16 matrix units: it converts to float32 around "
            "each operation, so bfloat16 is not faster on CPU (the ratio above); it "
            "is meant for GPUs/TPUs, where it halves the weights' memory traffic and "
            "uses the bf16 tensor cores. Not measured here (no accelerator).",
        ]
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
    ]
    labels = {
        "baseline": "import + 1 step (baseline)",
        "store": "`run_almc(path_every=1)` (all in memory)",
        "stream": f"`run_almc_chunked(chunk_size={MEM['chunk']})` to disk",
        "stream2x": f"same, 2x the steps ({2 * MEM['steps']})",
        "stream4x": f"same, 4x the steps ({4 * MEM['steps']})",
        "stream_fixed": "streamed, `MALLOC_MMAP_THRESHOLD_=65536`",
        "stream4x_fixed": "same, 4x the steps",
    }
    for key, label in labels.items():
        if key in mem:
            lines.append(
                f"| {label} | {mem[key]['rss_mib']:,.0f} | {mem[key]['seconds']:.1f} |"
            )
    store_extra = mem["store"]["rss_mib"] - mem["baseline"]["rss_mib"]
    stream_extra = mem["stream"]["rss_mib"] - mem["baseline"]["rss_mib"]
    factor = store_extra / draws_mib
    lines += [
        "",
        f"Above baseline: storing costs {store_extra:,.0f} MiB "
        f"({factor:.1f}x the draws, consistent with the scan's stacked "
        "`(kept, chains, ...)` output and its transposed copy in the result), "
        f"streaming {stream_extra:,.0f} MiB (a few chunk-sized "
        "buffers, on device and on host).",
        "",
        "Streaming does not grow with the number of steps (1x, 2x, 4x rows). The "
        "tens-of-MiB differences between those rows are glibc `malloc` behaviour, "
        "not a leak: its mmap threshold adapts upwards after chunk-sized buffers "
        "are freed, so later chunk buffers come from the heap, whose peak depends "
        "on fragmentation. With the threshold fixed (`MALLOC_MMAP_THRESHOLD_`, "
        "last rows) every chunk buffer is mmapped and returned on free: the peak "
        "is lower, and 1x and 4x the steps agree to within the run-to-run noise "
        "(~15 MiB). Set it for long runs if the extra tens of MiB matter.",
    ]
    if "big" in raw:
        big = raw["big"]
        n_draws = BIG["chains"] * BIG["steps"]
        big_gib = n_draws * BIG["dim"] * 4 / 2**30
        est = mem["baseline"]["rss_mib"] / 1024 + factor * big_gib
        lines += [
            "",
            f"## A 10^6-draw run: {BIG['chains']} chains x {BIG['steps']:,} steps "
            f"of a {BIG['dim']}-D float32 site, every step kept",
            "",
            f"The draws are {big_gib:,.1f} GiB (more than this machine's memory).",
            "",
            "| run | peak RSS (MiB) | on disk (GiB) | seconds |",
            "|---|---:|---:|---:|",
            f"| `run_almc_chunked(chunk_size={BIG['chunk']})`, draws streamed to "
            f"disk (measured) | {big['stream']['rss_mib']:,.0f} | "
            f"{big['stream']['disk_gib']:,.1f} | {big['stream']['seconds']:,.0f} |",
            "| same, `path=None`: running moments only (measured) | "
            f"{big['moments']['rss_mib']:,.0f} | 0 | "
            f"{big['moments']['seconds']:,.0f} |",
            f"| `run_almc(path_every=1)`, all in memory (**estimated**: baseline + "
            f"{factor:.1f}x the draws, the factor measured at {MEM['steps']} "
            f"steps above) | {est * 1024:,.0f} | - | - |",
            "",
            "Both measured runs hold about as much as the 3000-step runs above: "
            "memory is set by `chunk_size`, not by the number of draws. (The "
            "moments-only run first peaked at 774 MiB: with nothing written, the "
            "loop never waited for a chunk and dispatch ran ahead, and each "
            "chunk's unused draws were still stacked — the likely causes, not "
            "measured apart; both fixed: draws nobody writes are not "
            "materialised, and the loop waits for each chunk.)",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
