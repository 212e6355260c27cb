"""Cost of the noised-likelihood path with structured operators, at image sizes.

Run: ``taskset -c 1 python benchmarks/operator_paths.py``; writes
``benchmarks/results/operator_paths.md``.

Each cell runs in its own subprocess (so its peak memory, ``ru_maxrss``, is its
own): ``run_almc`` with 8 chains on the noised path
(``noised_gaussian_likelihood(A, y, σ)``) and its time-dependent preconditioner,
with a small analytic MLP-like score ``s(x, t) = −x + W₂ᵀ tanh(W₁ x) / 10`` (hidden
width 16) so that the likelihood's cost shows. The run is compiled and run once,
then timed on a second call with another key (the compiled run is reused):
``per step`` is that wall time over the number of steps (warm start + annealing).
The dense rows use the PeriodicConvolution and Mask operators' matrices at 32²
(``A.as_matrix()``): the dense path's SVD at construction and its ``d × d``
preconditioner factorisation per step; they run 10 warm-start + 10 annealing
steps (per-step cost is what is compared). ``diverging`` counts reverted (non-finite) steps over all chains.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import time

NUM_CHAINS = 8
NUM_ANNEAL = 60  # + 100 warm-start steps (budget_schedule's default)
SIGMA = 0.05
KINDS = ("PeriodicConvolution", "AveragePool", "Mask", "SubsampledDCT")
SIZES = (32, 64, 128)

CELL = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np
import numpyro_almc as na
from numpyro_almc import operators as ops

kind, n, dense = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "dense"
rng = np.random.default_rng(0)
shape = (n, n)
if kind == "PeriodicConvolution":
    r = np.arange(5) - 2
    psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.2**2))
    op = ops.PeriodicConvolution(psf / psf.sum(), shape)
elif kind == "AveragePool":
    op = ops.AveragePool(shape, 4)
elif kind == "Mask":
    op = ops.Mask(rng.random(shape) < 0.3, observed_only=True)
else:
    keep = np.zeros(shape, bool)
    keep[: n // 4, : n // 4] = True
    op = ops.SubsampledDCT(keep)
truth = jnp.asarray(rng.standard_normal(shape), jnp.float32)
y = op.apply(truth) + SIGMA * jnp.asarray(rng.standard_normal(op.out_shape))
t0 = time.perf_counter()
if dense:
    A = np.asarray(op.as_matrix())
    lik = na.noised_gaussian_likelihood(A, np.ravel(y), SIGMA)
    position = jnp.zeros(n * n)
else:
    lik = na.noised_gaussian_likelihood(op, y, SIGMA)
    position = jnp.zeros(shape)
build_s = time.perf_counter() - t0
d, hidden = n * n, 16
W1 = jnp.asarray(rng.standard_normal((hidden, d)) / np.sqrt(d), jnp.float32)
W2 = jnp.asarray(rng.standard_normal((hidden, d)) / np.sqrt(hidden), jnp.float32)

def score(x, t):
    flat = x.ravel()
    return (-flat + 0.1 * (jnp.tanh(W1 @ flat) @ W2)).reshape(x.shape)

# The dense path costs a d × d inverse per step: a shorter run times it as well.
if dense:
    schedule = na.budget_schedule(10, num_warm_start_steps=10)
else:
    schedule = na.budget_schedule(NUM_ANNEAL)
num_steps = int(schedule.times.shape[0])

def run(seed):
    res = na.run_almc(jax.random.key(seed), lik, score, schedule, position,
                      num_chains=NUM_CHAINS, preconditioner=lik.preconditioner)
    jax.block_until_ready(res.state.position)
    return res

t0 = time.perf_counter(); run(0); first_s = time.perf_counter() - t0
t0 = time.perf_counter(); res = run(1); run_s = time.perf_counter() - t0
print(json.dumps({
    "build_s": build_s, "first_s": first_s, "run_s": run_s, "num_steps": num_steps,
    "per_step_ms": 1e3 * run_s / num_steps,
    "finite": bool(jnp.all(jnp.isfinite(res.state.position))),
    "diverging": int(res.num_diverging.sum()),
    "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def _cell(kind: str, n: int, dense: bool) -> dict:
    code = (
        f"NUM_CHAINS, NUM_ANNEAL, SIGMA = {NUM_CHAINS}, {NUM_ANNEAL}, {SIGMA}\n" + CELL
    )
    out = subprocess.run(
        [sys.executable, "-c", code, kind, str(n), "dense" if dense else "op"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    start = time.perf_counter()
    cells = [(k, n, False) for k in KINDS for n in SIZES]
    # The dense path's cost is structure-blind (a d × d factorisation per step):
    # two operators' matrices suffice, and keep the whole run under 4 minutes.
    cells += [(k, 32, True) for k in ("PeriodicConvolution", "Mask")]
    for kind, n, dense in cells:
        result = _cell(kind, n, dense)
        rows.append((kind, n, dense, result))
        print(kind, n, "dense" if dense else "operator", result, flush=True)
    total = time.perf_counter() - start
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    lines = [
        "# Noised-likelihood path with structured operators",
        "",
        "`python benchmarks/operator_paths.py` (see its docstring). "
        f"{NUM_CHAINS} chains, σ = {SIGMA}, budget_schedule({NUM_ANNEAL}) "
        "(100 warm-start + annealing steps; dense rows 10 + 10), noised path + its "
        "time-dependent "
        "preconditioner, MLP-like analytic score (hidden 16). CPU, "
        f"{cpus} core(s) visible, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}. Whole run: {total:.0f} s.",
        "",
        "| A | image | path | per step (ms) | first call, compile + run (s) "
        "| build lik (s) | peak RSS (MiB) | finite | diverging |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for kind, n, dense, r in rows:
        path = "dense matrix" if dense else "operator"
        if "error" in r:
            lines.append(f"| {kind} | {n}² | {path} | error: {r['error']} |||||")
            continue
        lines.append(
            f"| {kind} | {n}² | {path} | {r['per_step_ms']:.2f} | {r['first_s']:.1f} "
            f"| {r['build_s']:.2f} | {r['maxrss_mib']:.0f} | {r['finite']} "
            f"| {r['diverging']} |"
        )
    out = pathlib.Path(__file__).parent / "results" / "operator_paths.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
