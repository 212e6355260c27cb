"""Speed floor: ALMC's drivers against a hand-written jitted ``lax.scan``.

Run: ``python benchmarks/speed_floor.py``; writes ``benchmarks/results/speed_floor.md``.

The floor is one jitted ``lax.scan`` of the same update (one score call and one
likelihood gradient per step, cached), vmapped over the same chains. Each driver runs
once to compile, then is timed over ``REPEATS`` runs; the table reports the median
wall time per step and its ratio to the floor measured in the same process.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC

import numpyro_almc as na

REPEATS = 5


def problem(dim: int, key):
    """A linear-Gaussian likelihood and a score: analytic (2-D) or an MLP."""
    k1, k2, k3 = jax.random.split(key, 3)
    A = jax.random.normal(k1, (max(1, dim // 4), dim)) / np.sqrt(dim)
    y = jax.random.normal(k2, (A.shape[0],))

    def loglik(x):
        return -0.5 * jnp.sum((y - A @ x) ** 2) / 0.1**2

    if dim <= 2:
        score = na.scores.gaussian_mixture_score(
            jnp.array([0.3, 0.7]),
            jnp.array([[-2.0, 0.0], [2.0, 1.0]]),
            jnp.array([0.2, 0.5]),
        )
    else:
        hidden = 512
        w1 = jax.random.normal(k3, (dim + 1, hidden)) / np.sqrt(dim)
        w2 = jax.random.normal(jax.random.fold_in(k3, 1), (hidden, dim)) / np.sqrt(
            hidden
        )

        def score(x, t):
            h = jnp.tanh(jnp.concatenate([x, t[None]]) @ w1)
            return h @ w2 - x

    return loglik, score


def floor_fn(loglik, score, schedule, num_chains, dim):
    """The hand-written floor: the same update in one jitted scan."""

    @jax.jit
    def run(key, x0):
        grad = jax.vmap(jax.grad(loglik))

        def body(carry, i):
            x, s, g = carry
            t_next = schedule.times[i + 1]
            h = schedule.step_sizes[i]
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape)
            x = x + h * (s + g) + jnp.sqrt(2 * h) * noise
            s = jax.lax.cond(
                jnp.isinf(t_next),
                lambda: -x,
                lambda: jax.vmap(score, in_axes=(0, None))(x, t_next),
            )
            return (x, s, grad(x)), None

        s0 = -x0
        (x, _, _), _ = jax.lax.scan(
            body, (x0, s0, grad(x0)), jnp.arange(schedule.num_steps)
        )
        return x

    return run


def timed_interleaved(fns: dict, key):
    """Median wall time of each function, the runs interleaved so that load from
    other processes hits every driver alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(key))  # compile
    times = {name: [] for name in fns}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(key))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(dim: int, num_chains: int, num_steps: int):
    key = jax.random.key(0)
    loglik, score = problem(dim, key)
    schedule = na.budget_schedule(num_steps, num_warm_start_steps=0, step_size=0.1)
    steps = schedule.num_steps
    x0 = jax.random.normal(key, (num_chains, dim))
    fns = {}
    floor = floor_fn(loglik, score, schedule, num_chains, dim)
    fns["hand-written lax.scan (floor)"] = lambda k: floor(k, x0)
    fns["run_almc driver"] = lambda k: (
        na.run_almc(
            k,
            loglik,
            score,
            schedule,
            jnp.zeros(dim),
            num_chains=num_chains,
            init_positions=x0,
        ).state.position
    )
    alg = na.almc(loglik, score, schedule)

    @jax.jit
    def bj(k):
        def one(k, x):
            return blackjax.util.run_inference_algorithm(
                k, alg, steps, initial_position=x, transform=lambda s, i: None
            )[0].position

        return jax.vmap(one)(jax.random.split(k, num_chains), x0)

    fns["BlackJAX run_inference_algorithm (vmap)"] = bj

    kernel = na.ALMC(
        potential_fn=lambda x: -loglik(x),
        score_fn=score,
        preconditioner=None,
        num_warm_start_steps=0,
    )

    def numpyro_run(k, num_warmup):
        mcmc = MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=1,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(k, init_params=x0)
        return mcmc.get_samples()

    # MCMC.run compiles its loop on every call: time two run lengths and difference
    # them, so the NumPyro row is the steady per-iteration cost (the compile cancels).
    fns["NumPyro MCMC(ALMC), short run"] = lambda k: numpyro_run(k, steps)
    fns["NumPyro MCMC(ALMC), double run"] = lambda k: numpyro_run(k, 2 * steps)
    rows = timed_interleaved(fns, key)
    short = rows.pop("NumPyro MCMC(ALMC), short run")
    double = rows.pop("NumPyro MCMC(ALMC), double run")
    rows["NumPyro MCMC(ALMC), vectorized (per iteration, compile differenced out)"] = (
        double - short
    )
    rows["NumPyro MCMC(ALMC), whole run incl. its compile"] = short
    return {name: t / steps for name, t in rows.items()}, steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results/speed_floor.md")
    )
    args = parser.parse_args()
    lines = [
        "# Speed floor: per-step wall time against a hand-written jitted scan",
        "",
        f"Command: `python benchmarks/speed_floor.py --steps {args.steps} "
        f"--chains {args.chains}`. Machine: {platform.machine()}"
        f", {jax.device_count()} {jax.default_backend()} device(s), jax "
        f"{jax.__version__}. Median of {REPEATS} timed runs after a compile run; "
        "ratios are to the floor measured in the same process.",
        "",
    ]
    for dim, label in ((2, "2-D analytic mixture score"), (4096, "4096-D MLP score")):
        # A 2-D step costs microseconds: run 30x longer so NumPyro's differenced
        # per-iteration cost is not swamped by the jitter of its compile.
        steps_here = args.steps * (30 if dim <= 2 else 1)
        per_step, steps = bench(dim, args.chains, steps_here)
        floor = per_step["hand-written lax.scan (floor)"]
        lines += [
            f"## {label}, {args.chains} chains, {steps} steps",
            "",
            "| driver | µs / step | ratio to floor |",
            "|---|---:|---:|",
        ]
        for name, t in per_step.items():
            lines.append(f"| {name} | {1e6 * t:.1f} | {t / floor:.2f} |")
        lines.append("")
        print("\n".join(lines[-len(per_step) - 4 :]))
    lines += [
        "NumPyro's `MCMC.run` recompiles its loop on every call. The per-iteration row",
        "times runs of `steps` and `2·steps` iterations and divides the difference by",
        "`steps`, so the compile cancels; the last row is a whole short run, compile",
        "included. The NumPyro kernel uses the default budget schedule of its",
        "num_warmup (no warm start), the others a fixed schedule of the same length.",
        "",
    ]
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
