"""Interval coverage on real galaxy images, with and without the final stage.

Run: ``python benchmarks/final_stage_galaxy.py [--galaxies 4] [--draws 16]``; writes
``benchmarks/results/final_stage_galaxy.md``. Needs the extra ``[galaxy]``.

The pretrained 64×64 HSC galaxy prior (``models.galaxy_prior``, galaxygrad 0.2.1),
the problem in the network's space ``u``: truths are prior draws
(``GalaxyPrior.sample``), ``y = PSF ⊛ u + 0.1 ε`` with a periodic Gaussian PSF
(width 1.5 px), σ known. Per galaxy and method, ``--draws`` posterior draws at the
same score budget; reported: PSNR of the posterior mean (peak = the truth's range)
and the share of truth pixels inside the pixelwise 50 % and 90 % intervals (an
exact sampler with few draws scores below 0.5 and 0.9: :func:`exact_coverage`).
Rows:

* ALMC on the noised path (``noised_gaussian_likelihood`` of the operator, its
  preconditioner): draws at τ, then carried to 0 by ``FinalStage(K)``, ending at
  the stage's default ``min_time`` (1e-4) or at the prior's own
  (``GalaxyPrior.min_time``, where its draws, the truths, end);
* ALMC on the paper's path (``linear_gaussian_preconditioner``), draws at τ;
* DPS at the same number of steps (one score pass and one VJP per step), its
  guidance scale chosen by PSNR on a separate galaxy.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_almc as na
from numpyro_almc import baselines
from numpyro_almc._static import by_identity
from numpyro_almc.models import galaxy_prior

RESULTS = pathlib.Path(__file__).parent / "results" / "final_stage_galaxy.md"
SIZE, NOISE = 64, 0.1
BUDGET = int(os.environ.get("GALAXY_BUDGET", 500))
DPS_SCALES = (0.03, 0.1, 0.3, 1.0)


def psf_operator():
    r = np.arange(-4, 5)
    psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    return na.operators.PeriodicConvolution(psf / psf.sum(), (SIZE, SIZE))


def metrics(draws, truth):
    draws, truth = np.asarray(draws, np.float64), np.asarray(truth, np.float64)
    peak = truth.max() - truth.min()
    mse = np.mean((draws.mean(0) - truth) ** 2)
    cover = {}
    for level in (0.5, 0.9):
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        cover[level] = float(np.mean((truth >= lo) & (truth <= hi)))
    return 10 * np.log10(peak**2 / mse), cover[0.5], cover[0.9]


def methods(prior, op, y, key, draws, stages, dps_scale):
    lik = na.noised_gaussian_likelihood(op, y, NOISE)
    sched = na.budget_schedule(BUDGET)
    zeros = jnp.zeros((SIZE, SIZE))
    out = {}
    start = time.perf_counter()
    res = na.run_almc(
        key,
        lik,
        prior.score_fn,
        sched,
        zeros,
        num_chains=draws,
        preconditioner=lik.preconditioner,
    )
    out["ALMC, noised path (draws at τ)"] = (sched.num_steps, res.state.position)
    for k in stages:
        x0, _ = na.run.loop.finish_chains(
            jax.random.split(jax.random.fold_in(key, k), draws),
            res.state,
            loglikelihood_fn=by_identity(lik),
            score_fn=by_identity(prior.score_fn),
            final_stage=na.FinalStage(num_steps=k),
        )
        out[f"ALMC, noised path + final stage K={k}"] = (sched.num_steps + k - 1, x0)
    for k in stages:
        x0, _ = na.run.loop.finish_chains(
            jax.random.split(jax.random.fold_in(key, k), draws),
            res.state,
            loglikelihood_fn=by_identity(lik),
            score_fn=by_identity(prior.score_fn),
            final_stage=na.FinalStage(num_steps=k, min_time=prior.min_time),
        )
        name = f"ALMC, noised path + final stage K={k}, min_time={prior.min_time}"
        out[name] = (sched.num_steps + k - 1, x0)

    def loglik(u):
        return -0.5 * jnp.sum((y - op.apply(u)) ** 2) / NOISE**2

    res = na.run_almc(
        key,
        loglik,
        prior.score_fn,
        sched,
        zeros,
        num_chains=draws,
        preconditioner=na.linear_gaussian_preconditioner(op, NOISE),
    )
    out["ALMC, paper path (draws at τ)"] = (sched.num_steps, res.state.position)
    out[f"DPS (ζ = {dps_scale})"] = (
        2 * sched.num_steps,
        dps(prior, loglik, key, draws, dps_scale, sched.num_steps),
    )
    return out, time.perf_counter() - start


def exact_coverage(num_draws):
    """Coverage of the empirical 50 / 90 % intervals of an exact sampler with
    ``num_draws`` draws (the truth is one more independent draw)."""
    ref = np.random.default_rng(0).standard_normal((num_draws + 1, 100_000))
    out = []
    for level in (0.5, 0.9):
        lo, hi = np.quantile(ref[:-1], [(1 - level) / 2, (1 + level) / 2], axis=0)
        out.append(float(np.mean((ref[-1] >= lo) & (ref[-1] <= hi))))
    return out


def dps(prior, loglik, key, draws, scale, steps):
    return baselines.dps(
        key,
        prior.score_fn,
        loglik,
        jnp.zeros((SIZE, SIZE)),
        num_samples=draws,
        num_steps=steps,
        guidance_scale=scale,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--galaxies", type=int, default=4)
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--stages", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    prior = galaxy_prior("HSC", SIZE)
    op = psf_operator()
    truths = prior.sample(jax.random.key(0), args.galaxies + 1, num_steps=200)
    ys = [
        op.apply(u) + NOISE * jax.random.normal(jax.random.key(10 + i), u.shape)
        for i, u in enumerate(truths)
    ]
    # DPS's guidance scale by PSNR on the last galaxy (not reported).
    tune = {
        s: metrics(
            dps(
                prior,
                lambda u: -0.5 * jnp.sum((ys[-1] - op.apply(u)) ** 2) / NOISE**2,
                jax.random.key(99),
                args.draws,
                s,
                BUDGET,
            ),
            truths[-1],
        )[0]
        for s in DPS_SCALES
    }
    scale = max(tune, key=tune.get)
    rows, seconds = {}, 0.0
    for g in range(args.galaxies):
        out, dt = methods(
            prior, op, ys[g], jax.random.key(100 + g), args.draws, args.stages, scale
        )
        seconds += dt
        for name, (passes, draws) in out.items():
            rows.setdefault(name, (passes, []))[1].append(metrics(draws, truths[g]))
        print(g, {k: rows[k][1][-1] for k in rows}, flush=True)
    exact = exact_coverage(args.draws)
    lines = [
        "# The final stage on galaxy images: interval coverage",
        "",
        f"Command: `python benchmarks/final_stage_galaxy.py --galaxies {args.galaxies} "
        f"--draws {args.draws} --stages {' '.join(map(str, args.stages))}`. Machine: "
        f"{platform.machine()}, jax {jax.__version__}, {seconds:.0f} s of sampling. "
        f"HSC 64×64 prior, truths drawn from it, periodic Gaussian PSF (1.5 px), σ = "
        f"{NOISE} known; {args.draws} draws per galaxy, `budget_schedule({BUDGET})`. "
        f"DPS's ζ from {DPS_SCALES} by PSNR on a separate galaxy "
        f"(PSNR {', '.join(f'{s}: {v:.1f}' for s, v in tune.items())}). "
        "Passes: network passes per draw (a score evaluation or a VJP). "
        f"Mean ± standard error over {args.galaxies} galaxies. An exact sampler's "
        f"{args.draws} draws would cover {exact[0]:.3f} / {exact[1]:.3f} (the "
        "empirical quantiles of few draws give narrower intervals than nominal).",
        "",
        "| method | passes / draw | PSNR (dB) | coverage 50 % | coverage 90 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (passes, values) in rows.items():
        v = np.asarray(values)
        m, se = (
            v.mean(0),
            v.std(0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0 * v[0],
        )
        cells = " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in zip(m, se, strict=True))
        lines.append(f"| {name} | {passes} | {cells} |")
    lines += [
        "",
        "The draws at τ carry OU noise of sd 0.2 in `u` on every pixel: over the",
        "nearly empty background their intervals are too wide. The rows with the",
        "final stage are draws of μ_0 (see docs/howto/final_stage.md). Which μ_0",
        "depends on where the stage ends: the truths are the prior's draws, which",
        f"end at t = {prior.min_time} with a Tweedie step (`GalaxyPrior.sample`).",
        "A stage ending at the same time targets the posterior under that prior;",
        "the default `min_time = 1e-4` queries the network below its training",
        "range (network time 0.01) in its last steps, which leaves noise in the",
        "draws and widens their intervals.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
