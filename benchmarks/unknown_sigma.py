"""Per-step cost of an unknown noise scale against a known one, at 64×64.

Run: ``python benchmarks/unknown_sigma.py``; writes
``benchmarks/results/unknown_sigma.md``.

A NumPyro model with the pretrained 64×64 HSC galaxy prior (``models.galaxy_prior``,
extra ``[galaxy]``) and a periodic Gaussian PSF blur written with FFTs in the model,
``y ~ Normal(blur(x), σ)``: once with σ known, once with ``σ ~ HalfNormal(2)``.
``MCMC(ALMC(model))`` with the default ``preconditioner="auto"`` (above 2048 numbers:
the Hessian's diagonal at the start), vectorized chains. NumPyro recompiles on every
run, so the per-step cost is the difference of two run lengths divided by the extra
steps (the compile cancels), the two models timed interleaved in one process.
"""

from __future__ import annotations

import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc.models import galaxy_prior

HERE = pathlib.Path(__file__).resolve().parent
SIZE, CHAINS, SHORT, LONG, REPEATS = 64, 4, 100, 500, 5


def blur_fn(size, width=1.5):
    k = jnp.fft.fftfreq(size)
    transfer = jnp.exp(-2 * (jnp.pi * width) ** 2 * (k[:, None] ** 2 + k[None] ** 2))
    return lambda x: jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x) * transfer))


def models(prior):
    blur = blur_fn(SIZE)

    def known(y=None):
        x = numpyro.sample("x", na.ScorePrior(prior.score_fn, event_shape=(SIZE, SIZE)))
        numpyro.sample("y", dist.Normal(blur(x), 0.1).to_event(2), obs=y)

    def unknown(y=None):
        x = numpyro.sample("x", na.ScorePrior(prior.score_fn, event_shape=(SIZE, SIZE)))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        numpyro.sample("y", dist.Normal(blur(x), sigma).to_event(2), obs=y)

    return blur, {"σ known": known, "σ unknown (HalfNormal(2))": unknown}


def run(model, y, steps):
    mcmc = MCMC(
        na.ALMC(model),
        num_warmup=steps,
        num_samples=1,
        num_chains=CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), y=y)
    jax.block_until_ready(mcmc.get_samples())


def main():
    prior = galaxy_prior("HSC", SIZE)
    blur, fns = models(prior)
    truth = prior.sample(jax.random.key(1), 1)[0]
    y = blur(truth) + 0.1 * jax.random.normal(jax.random.key(2), truth.shape)
    times = {name: {SHORT: [], LONG: []} for name in fns}
    for _ in range(REPEATS):
        for name, model in fns.items():
            for steps in (SHORT, LONG):
                tic = time.perf_counter()
                run(model, y, steps)
                times[name][steps].append(time.perf_counter() - tic)
    per_step = {
        name: (statistics.median(t[LONG]) - statistics.median(t[SHORT]))
        / (LONG - SHORT)
        for name, t in times.items()
    }
    base = per_step["σ known"]
    lines = [
        "# An unknown noise scale at 64×64: per-step cost against a known one",
        "",
        f"Command: `python benchmarks/unknown_sigma.py`. Machine: {platform.machine()}, "
        f"jax {jax.__version__}. HSC 64×64 galaxy prior (galaxygrad 0.2.1), periodic "
        f'Gaussian PSF blur, {CHAINS} vectorized chains, `preconditioner="auto"`; '
        f"per step = (median of {REPEATS} runs of {LONG} steps − of {SHORT}) / "
        f"{LONG - SHORT}, both models interleaved in one process.",
        "",
        "| model | ms / step (all chains) | ratio to σ known |",
        "|---|---:|---:|",
    ]
    for name, t in per_step.items():
        lines.append(f"| {name} | {1e3 * t:.1f} | {t / base:.2f} |")
    (HERE / "results" / "unknown_sigma.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
