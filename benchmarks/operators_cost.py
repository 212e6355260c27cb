"""Cost of the forward operators' σ-reusable algebra at image sizes.

Run: ``python benchmarks/operators_cost.py``; writes
``benchmarks/results/operators_cost.md``.

For each operator and image size (32², 64², 128²) one jitted function computes
``solve_normal + sqrt_solve_normal + adjoint(apply(v))`` with ``a = 1`` and
``b = 1/σ²``. It is compiled and timed at σ₁ = 0.1 (median of ``REPEATS`` calls),
then called at σ₂ = 0.05: the first σ₂ call, which would include a recompile or a
refactorisation if either happened, and the median σ₂ call. A Python side-effect
counter records the traces (1 means: no retrace when σ changed). Iterative
operators (CG / Chebyshev) legitimately cost more at smaller σ (worse conditioning):
their σ₂/σ₁ ratio measures iteration counts, not refactorisation.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc.operators import (
    AbstractMatrixFreeOperator,
    AveragePool,
    ChannelMixing,
    DenseOperator,
    Mask,
    MatrixFreeOperator,
    PeriodicConvolution,
    PooledPeriodicConvolution,
    SubsampledDCT,
    ZeroPaddedConvolution,
    compose,
)

REPEATS = 5
SIGMAS = (0.1, 0.05)


def _gaussian_psf(width: int = 5, scale: float = 1.2) -> np.ndarray:
    r = np.arange(width) - width // 2
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * scale**2))
    return k / k.sum()


def _finite_differences(x):
    return jnp.concatenate(
        [jnp.diff(x, axis=0).ravel(), jnp.diff(x, axis=1).ravel(), 0.5 * x.ravel()]
    )


def operators(n: int):
    rng = np.random.default_rng(0)
    mask = rng.random((n, n)) < 0.5
    psf = _gaussian_psf()
    ops = {
        "Mask": Mask(mask),
        "PeriodicConvolution": PeriodicConvolution(psf, (n, n)),
        "ZeroPaddedConvolution (CG)": ZeroPaddedConvolution(psf, (n, n)),
        "AveragePool(4)": AveragePool((n, n), 4),
        "PooledPeriodicConvolution(2)": PooledPeriodicConvolution(psf, (n, n), 2),
        "SubsampledDCT (25 %)": SubsampledDCT(rng.random((n, n)) < 0.25),
        "ChannelMixing RGB→grey": ChannelMixing(
            np.array([[0.299, 0.587, 0.114]]), (n, n, 3)
        ),
        "Mask ∘ PeriodicConv (CG)": compose(
            Mask(mask), PeriodicConvolution(psf, (n, n))
        ),
        "MatrixFree finite diff (CG)": MatrixFreeOperator(
            _finite_differences, (n, n), spectral_bound=8.25
        ),
    }
    if n <= 32:  # a dense d × d SVD beyond d = 1024 is what the structure avoids
        matrix = rng.standard_normal((n * n // 4, n * n)) / n
        ops["DenseOperator (SVD once)"] = DenseOperator(matrix, in_shape=(n, n))
    return ops


def _time(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def measure(op):
    traces = []

    @jax.jit
    def step(op, v, a, b):
        traces.append(1)
        return (
            op.solve_normal(v, a, b)
            + op.sqrt_solve_normal(v, a, b)
            + op.adjoint(op.apply(v))
        )

    v = jnp.asarray(np.random.default_rng(1).standard_normal(op.in_shape), jnp.float32)
    a = jnp.float32(1.0)
    b1, b2 = (jnp.float32(1.0 / s**2) for s in SIGMAS)
    first = _time(step, op, v, a, b1)
    per_call_1 = statistics.median(_time(step, op, v, a, b1) for _ in range(REPEATS))
    first_2 = _time(step, op, v, a, b2)
    per_call_2 = statistics.median(_time(step, op, v, a, b2) for _ in range(REPEATS))
    # Calls that each follow a change of σ (alternating σ₁, σ₂): the median is robust
    # to the scheduling noise of a shared machine, unlike the single first call.
    switched = statistics.median(
        _time(step, op, v, a, (b1, b2)[i % 2]) for i in range(2 * REPEATS)
    )
    iterations = "closed form"
    if isinstance(op, AbstractMatrixFreeOperator):
        counts = [
            (
                int(op.solve_normal_info(v, a, b)[1].num_steps),
                int(op.sqrt_solve_normal_info(v, a, b)[1].num_steps),
            )
            for b in (b1, b2)
        ]
        iterations = " → ".join(f"{cg} / {cheb}" for cg, cheb in counts)
    return {
        "iterations": iterations,
        "compile": first,
        "sigma1": per_call_1,
        "sigma2_first": first_2,
        "sigma2": per_call_2,
        "switched": switched,
        "traces": len(traces),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "operators_cost.md",
    )
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for name, op in operators(n).items():
            r = measure(op)
            rows.append((name, n, r))
            print(
                f"{name:32s} {n:4d}  compile {r['compile']:.2f}s  "
                f"σ1 {1e3 * r['sigma1']:.2f}ms  σ2 first {1e3 * r['sigma2_first']:.2f}ms"
                f"  σ2 {1e3 * r['sigma2']:.2f}ms  traces {r['traces']}",
                flush=True,
            )
    lines = [
        "# Forward operators: cost of one jitted solve + root + apply/adjoint",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()} CPU ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end: shared with other jobs), "
        f"jax {jax.__version__}, backend {jax.default_backend()}, float32. "
        f"σ₁ = {SIGMAS[0]}, σ₂ = {SIGMAS[1]} (b = 1/σ²); per-call times are medians "
        f"of {REPEATS} calls. `python benchmarks/operators_cost.py` regenerates it.",
        "",
        "| operator | image | compile + 1st call (s) | per call at σ₁ (ms) "
        "| 1st call after σ₁→σ₂ (ms) | per call at σ₂ (ms) "
        "| call after a σ change (ms) | σ₂ / σ₁ | after change / σ₁ | traces "
        "| CG steps / Chebyshev terms, σ₁ → σ₂ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n, r in rows:
        lines.append(
            f"| {name} | {n}² | {r['compile']:.2f} | {1e3 * r['sigma1']:.2f} "
            f"| {1e3 * r['sigma2_first']:.2f} | {1e3 * r['sigma2']:.2f} "
            f"| {1e3 * r['switched']:.2f} | {r['sigma2'] / r['sigma1']:.2f} "
            f"| {r['switched'] / r['sigma1']:.2f} | {r['traces']} | {r['iterations']} |"
        )
    lines += [
        "",
        "`traces` = 1 everywhere: changing σ neither retraces nor recompiles, and a "
        "call right after a change of σ costs a normal call (no refactorisation: "
        "the FFT eigenvalues, SVD and pooling constants were computed at "
        "construction; `tests/operators` checks that no eigh/svd/cholesky/qr/lu is "
        "traced per call). The 1st-call column is one sample on a shared machine, "
        "so a single outlier there is scheduling noise; the 'after a σ change' "
        "column is the median of alternating σ₁/σ₂ calls. The closed-form "
        "operators cost the same at both σ. The CG / Chebyshev operators (marked) "
        "cost more at the smaller σ because the normal matrix is worse conditioned "
        "(more iterations, last column), not because anything is refactored; their "
        "'after change' median mixes σ₁ and σ₂ calls.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
