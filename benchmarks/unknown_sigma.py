"""Per-step cost and memory of an unknown noise scale against a known one.

Run: ``python benchmarks/unknown_sigma.py [--sizes 32 64 120] [--quick]``; writes
``benchmarks/results/unknown_sigma.md`` (about 40 minutes on one CPU core; ``--quick``:
32² only, short runs, for a smoke test).

NumPyro models with a pretrained galaxy prior of the ``galaxygrad`` 0.2.1 wheel
(``models.galaxy_prior``, extra ``[galaxy]``): HSC at 32² and 64², ROMAN at 120² (the
wheel's largest network, in place of 128²), ``y ~ Normal(A(x), σ)`` once with σ known
and once with ``σ ~ HalfNormal(2)``, through ``MCMC(ALMC(model))`` with
``preconditioner="auto"``:

1. **Each operator at each size**, written as ``op(x)`` (the façade recognises it and
   ``"auto"`` is ``(I + AᵀA/σ²)^{-1}`` from the operator's own factorisation at each
   chain's current σ, on the paper path): ``Mask``, ``PeriodicConvolution``,
   ``ZeroPaddedConvolution`` (its solves by conjugate gradients / Chebyshev),
   ``AveragePool(4)``, ``SubsampledDCT`` (25 %), a ``MatrixFreeOperator`` (finite
   differences, CG) and, at 32² only, a dense ``DenseOperator`` (SVD once).
   ``ChannelMixing`` needs a colour prior, which the wheel does not have.
2. **The PSF blur at 64² written two ways**: as a JAX function of ``x`` (FFTs in the
   model: the façade sees no operator, and ``"auto"`` above 2048 numbers takes the
   Hessian's diagonal at the start, fixed), and as ``op(x)`` on the paper and the
   noised path.

Per step: one ``MCMC`` run per model (its reverted steps counted), then the kernel's
step of all chains (``kernel.sample``) compiled alone from the state the run ended in
and timed over chained calls, every model of a size interleaved in one process (NumPyro
recompiles its whole loop at every ``run``, which would swamp a step). *Step
memory*: XLA's buffers of that compiled step (arguments + outputs + temporaries, from
``compiled.memory_analysis()``), the memory a run needs beyond the network's weights
and the collected draws.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc.mcmc import default_divergence_threshold
from numpyro_almc.models import galaxy_prior
from numpyro_almc.run.health import ALMCRunWarning

HERE = pathlib.Path(__file__).resolve().parent
#: image side -> the wheel's network of that size
PRIORS = {32: ("HSC", 32), 64: ("HSC", 64), 120: ("ROMAN", 120)}
NOISE = 0.1
CHAINS, REPEATS = 4, 5
#: warmup steps of the run whose reverted steps are counted, per size
STEPS = {32: 200, 64: 200, 120: 100}
#: chained calls of the compiled step per timing, per size
CALLS = {32: 40, 64: 20, 120: 10}


def psf(width=1.5):
    r = np.arange(-4, 5)
    kernel = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * width**2))
    return kernel / kernel.sum()


def _finite_differences(x):
    return jnp.concatenate(
        [jnp.diff(x, axis=0).ravel(), jnp.diff(x, axis=1).ravel(), 0.5 * x.ravel()]
    )


def operators(size):
    """The operators of section 1 at ``size``² (seeded)."""
    rng = np.random.default_rng(0)
    shape = (size, size)
    ops = {
        "Mask (50 %)": na.operators.Mask(rng.random(shape) < 0.5),
        "PeriodicConvolution": na.operators.PeriodicConvolution(psf(), shape),
        "ZeroPaddedConvolution (CG)": na.operators.ZeroPaddedConvolution(psf(), shape),
        "AveragePool(4)": na.operators.AveragePool(shape, 4),
        "SubsampledDCT (25 %)": na.operators.SubsampledDCT(rng.random(shape) < 0.25),
        "MatrixFree finite diff (CG)": na.operators.MatrixFreeOperator(
            _finite_differences, shape, spectral_bound=8.25
        ),
    }
    if size <= 32:  # a dense d × d SVD beyond d = 1024 is what the structure avoids
        matrix = rng.standard_normal((size * size // 4, size * size)) / size
        ops["DenseOperator (SVD once)"] = na.operators.DenseOperator(
            matrix, in_shape=shape
        )
    return ops


def model_of(prior, forward, sigma_known):
    shape = tuple(prior.event_shape)

    def fn(y=None):
        x = numpyro.sample("x", na.ScorePrior(prior.score_fn, event_shape=shape))
        if sigma_known:
            sigma = NOISE
        else:
            sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        event = jnp.ndim(y) if y is not None else 2
        numpyro.sample("y", dist.Normal(forward(x), sigma).to_event(event), obs=y)

    return fn


def models(prior, size):
    """``{(operator, form, path, σ label): (model, operator)}`` of one size."""
    out = {}
    for name, op in operators(size).items():
        for known in (True, False):
            label = "σ known" if known else "σ ~ HalfNormal(2)"
            out[(name, "op(x)", "paper", label)] = (model_of(prior, op, known), op)
    if size == 64:
        op = na.operators.PeriodicConvolution(psf(), (size, size))
        for form, forward in (("a function", op.apply), ("op(x)", op)):
            paths = ("paper", "noised") if form == "op(x)" else ("paper",)
            for path in paths:
                if form == "op(x)" and path == "paper":
                    continue  # the PeriodicConvolution rows of section 1
                for known in (True, False):
                    label = "σ known" if known else "σ ~ HalfNormal(2)"
                    out[("PeriodicConvolution", form, path, label)] = (
                        model_of(prior, forward, known),
                        op,
                    )
    return out


def sampler(model, path, steps):
    return MCMC(
        na.ALMC(model, likelihood_path=path),
        num_warmup=steps,
        num_samples=1,
        num_chains=CHAINS,
        chain_method="vectorized",
        progress_bar=False,
        jit_model_args=True,
    )


def reverted_steps(mcmc, y):
    """Run ``mcmc`` once and return its reverted steps over the whole path (the
    last state's counter, summed over chains)."""
    with warnings.catch_warnings():  # counted here instead
        warnings.simplefilter("ignore", ALMCRunWarning)
        mcmc.run(jax.random.key(0), y=y)
        jax.block_until_ready(mcmc.get_samples())
        jax.effects_barrier()
    return int(mcmc.last_state.num_diverging.sum())


def compiled_step(mcmc, y):
    """One step of all chains (``kernel.sample``) compiled on its own, from the
    state a run ended in, and the bytes of its XLA buffers (arguments + outputs +
    temporaries − aliased)."""
    kernel = mcmc.sampler
    step = jax.jit(lambda st, y: kernel.sample(st, (), {"y": y}))
    compiled = step.lower(mcmc.last_state, y).compile()
    stats = compiled.memory_analysis()
    memory = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return compiled, memory


def measure(size, steps, calls):
    """Rows ``(size, operator, form, path, σ, s / step, reverted, bytes)``: one
    ``MCMC`` run of ``steps`` warmup steps per model (its reverted steps), then its
    step compiled alone and timed over ``calls`` chained calls, every model of the
    size interleaved, ``REPEATS`` times."""
    survey, side = PRIORS[size]
    prior = galaxy_prior(survey, side)
    truth = prior.sample(jax.random.key(1), 1)[0]
    steps_of, states, data, reverted, memory = {}, {}, {}, {}, {}
    for key, (model, op) in models(prior, size).items():
        y = op.apply(truth)
        data[key] = y + NOISE * jax.random.normal(jax.random.key(2), y.shape)
        mcmc = sampler(model, key[2], steps)
        reverted[key] = reverted_steps(mcmc, data[key])
        steps_of[key], memory[key] = compiled_step(mcmc, data[key])
        states[key] = mcmc.last_state
        print(size, key, f"run done, {memory[key] / 2**20:.1f} MiB", flush=True)
    times = {key: [] for key in steps_of}
    for _ in range(REPEATS):
        for key, step in steps_of.items():
            state = states[key]
            tic = time.perf_counter()
            for _ in range(calls):
                state = step(state, data[key])
            jax.block_until_ready(state)
            times[key].append((time.perf_counter() - tic) / calls)
            states[key] = state
    rows = []
    for key, t in times.items():
        per_step = statistics.median(t)
        rows.append((size, *key, per_step, reverted[key], memory[key]))
        print(size, key, f"{1e3 * per_step:.1f} ms", flush=True)
    return rows


def report(rows, sizes, quick, seconds):
    known = {r[:4]: r[5] for r in rows if r[4] == "σ known"}
    known_mem = {r[:4]: r[7] for r in rows if r[4] == "σ known"}
    command = (
        "python benchmarks/unknown_sigma.py"
        + (f" --sizes {' '.join(map(str, sizes))}" if sizes != list(PRIORS) else "")
        + (" --quick" if quick else "")
    )
    priors = ", ".join(f"{PRIORS[n][0]} at {n}²" for n in sizes)
    lines = [
        "# An unknown noise scale: per-step cost and memory against a known one",
        "",
        f"Command: `{command}` ({seconds / 60:.0f} min). Machine: "
        f"{platform.machine()}, jax {jax.__version__}. Galaxy priors of galaxygrad "
        f"0.2.1 ({priors}), `y ~ Normal(A(x), σ)` with σ = {NOISE} in the data, "
        f'{CHAINS} vectorized chains, `preconditioner="auto"`. Per step: one '
        "step of all chains (the kernel's `sample`) compiled alone from the state "
        "an `MCMC` run ended in, timed over chained calls (median of "
        f"{REPEATS}; every model of a size interleaved in one process). *Ratio*: "
        "to the same operator, form and path with σ known, measured in the same "
        "run. *Step memory*: XLA's buffers of that compiled step (arguments + "
        "outputs + temporaries − aliased; the network's weights are constants of "
        "the program, not counted).",
        "",
        "| size | operator | written as | path | σ | ms / step (all chains) "
        "| ratio to σ known | step memory (MiB) | memory ratio | reverted steps |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for size, name, form, path, label, t, div, mem in rows:
        ratio = t / known[(size, name, form, path)]
        mem_ratio = mem / known_mem[(size, name, form, path)]
        lines.append(
            f"| {size}² | {name} | {form} | {path} | {label} | {1e3 * t:.1f} | "
            f"{ratio:.2f} | {mem / 2**20:.1f} | {mem_ratio:.2f} | {div} |"
        )
    unknown = [
        r[5] / known[r[:4]] for r in rows if r[4] != "σ known" and r[2] == "op(x)"
    ]
    if unknown:
        lines += [
            "",
            f"Written as `op(x)`, the unknown σ costs {min(unknown):.2f}–"
            f"{max(unknown):.2f}× the known one per step (median "
            f"{statistics.median(unknown):.2f}; the target is ≤ 1.3×). These are "
            "medians of interleaved timings on a shared machine: a ratio's noise "
            "is a few per cent. The operators solved by conjugate gradients "
            "(`ZeroPaddedConvolution`, `MatrixFreeOperator`) take more iterations "
            "the smaller the current σ (`operators_cost.md`), so with σ unknown "
            "their step follows each chain's σ: a chain still above the data's σ "
            "steps faster (120², `ZeroPaddedConvolution`). Memory is the same with "
            "σ known or not, except for the dense operator, whose σ-known state "
            "carries the preconditioner built at the start.",
        ]
    lines += [
        "",
        "With the blur as a function the façade cannot see the operator, and "
        '`"auto"` falls back to the Hessian\'s diagonal fixed at the start; as '
        "`op(x)` it uses the operator's own factorisation, re-evaluated at each "
        "chain's σ. *Reverted steps*: steps the divergence check reverted (a drop "
        "of log L above `default_divergence_threshold(d)` "
        f"({default_divergence_threshold(64**2):.0f} nats at 64²), or not "
        "finite), summed over chains and the run's steps: the diagonal "
        "preconditioner leaves the blur's lowest frequency (curvature 1 + 1/σ² = "
        "101 against the diagonal's 1 + Σ psf²/σ² ≈ 4.5) beyond the stability "
        "limit of the annealing steps (the warm-start step is capped at the "
        "stable 1/λ̂ of each chain's start; the annealing steps are not).",
    ]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=list(PRIORS), choices=list(PRIORS)
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    tic = time.perf_counter()
    rows = []
    for size in args.sizes:
        steps, calls = (20, 5) if args.quick else (STEPS[size], CALLS[size])
        rows += measure(size, steps, calls)
    lines = report(rows, args.sizes, args.quick, time.perf_counter() - tic)
    out = HERE / "results" / "unknown_sigma.md"
    if not args.quick:
        out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
