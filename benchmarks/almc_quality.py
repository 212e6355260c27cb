"""How close are ALMC draws to the exact posterior on the bars, with the defaults?

    python benchmarks/almc_quality.py

Problem: the 2-D bars (``bars_problem()``). For each budget (score evaluations per
chain) ALMC runs with the library defaults (``budget_schedule(budget)`` +
``linear_gaussian_preconditioner``), one draw per chain (the last iterate), and is
scored against the EXACT posterior ``μ_0`` by the mode-weight error (TV) and the
sliced 2-Wasserstein distance (SW), each beside its Monte Carlo floor (the same metric
between two independent exact sample sets of the same size), with the headline check
"within 2× the floor".

The 25-component Gaussian-mixture benchmark (d = 8, 80, 800, 10 problem seeds, max-SW
beside the published MCGdiff figures, ALMC defaults beside tuned ALMC and the
baselines) is in ``benchmarks/baselines_gmm.py`` / ``results/baselines_gmm.md``.
Writes ``benchmarks/results/almc_quality.md``.

The helpers here (``sample_batch``, ``score_batch``, ``floors``, ...) are also used by
``benchmarks/almc_ablation.py``.
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc import budget_schedule, linear_gaussian_preconditioner, run_almc
from numpyro_almc.scores import gaussian_mixture_score
from numpyro_almc.testbeds import (
    bars_problem,
    gmm25_problem,
    max_sliced_wasserstein,
    mixture_sample,
    mode_weight_error,
    sliced_wasserstein,
)

RESULTS = pathlib.Path(__file__).parent / "results"
NUM_CHAINS = 2000
BUDGETS = (100, 300, 1000, 3000)
NUM_SEEDS = 10
GMM_DIM = 8

# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def stack(trees):
    """Stack a list of equally shaped pytrees along a new leading axis."""
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def preconditioners(problems):
    """``linear_gaussian_preconditioner`` of every problem, stacked."""
    return stack([linear_gaussian_preconditioner(p.A, p.noise_std) for p in problems])


@functools.partial(jax.jit, static_argnames=("num_chains",))
def _sample(problems, keys, schedule, precond, *, num_chains):
    def one(problem, key, pre):
        # The testbed covariances are diagonal here; the diagonal score is exact and
        # avoids a per-call Cholesky of the stored full covariances.
        covs = jnp.diagonal(problem.covs, axis1=-2, axis2=-1)
        score_fn = gaussian_mixture_score(problem.weights, problem.means, covs)
        res = run_almc(
            key,
            problem.loglikelihood_fn,
            score_fn,
            schedule,
            jnp.zeros(problem.dim, problem.means.dtype),
            num_chains=num_chains,
            preconditioner=pre,
        )
        return res.state.position

    return jax.vmap(one)(problems, keys, precond)


def sample_batch(
    problems, seeds, schedule, *, precondition=True, num_chains=NUM_CHAINS
):
    """ALMC draws ``(P, num_chains, d)`` for a list of same-shaped problems."""
    batch = stack(problems)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    pre = preconditioners(problems) if precondition else None
    return _sample(batch, keys, schedule, pre, num_chains=num_chains)


def _exact(problem, key, n, t=0.0):
    post = problem.posterior(t)
    k1, k2 = jax.random.split(key)
    return post, mixture_sample(k1, post, n), mixture_sample(k2, post, n)


def floors(problems, seeds, n=NUM_CHAINS, max_sliced=False):
    """Per problem: exact posterior, one exact sample set, and MC-floor metrics."""
    out = []
    for problem, seed in zip(problems, seeds, strict=True):
        key = jax.random.fold_in(jax.random.key(10_000 + seed), 1)
        post, ref, other = _exact(problem, key, n)
        kp = jax.random.key(20_000 + seed)
        floor = {
            "tv": float(mode_weight_error(post, other)),
            "sw": float(sliced_wasserstein(kp, ref, other)),
        }
        if max_sliced:
            floor["msw"] = float(max_sliced_wasserstein(kp, ref, other))
        out.append((post, ref, floor))
    return out


def score_batch(draws, exact, max_sliced=False):
    """Metrics of each problem's draws against its exact posterior (list of dicts)."""
    out = []
    for x, (post, ref, _), seed in zip(draws, exact, range(len(exact)), strict=True):
        x = jnp.asarray(x)
        kp = jax.random.key(20_000 + seed)
        ok = jnp.all(jnp.isfinite(x), axis=-1)
        m = {
            "tv": float(mode_weight_error(post, x)),
            "sw": float(sliced_wasserstein(kp, x, ref)),
            "nonfinite": int(np.sum(~np.asarray(ok))),
        }
        if max_sliced:
            m["msw"] = float(max_sliced_wasserstein(kp, x, ref))
        out.append(m)
    return out


def mean_of(rows, key):
    return float(np.mean([r[key] for r in rows]))


def se_of(rows, key):
    v = np.array([r[key] for r in rows])
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def fmt(v, digits=3):
    return f"{v:.{digits}f}"


def gmm25_problems(obs_dim, num_seeds=NUM_SEEDS, dim=GMM_DIM):
    seeds = list(range(num_seeds))
    return [
        gmm25_problem(jax.random.key(s), dim=dim, obs_dim=obs_dim) for s in seeds
    ], seeds


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------


def main():
    t_start = time.perf_counter()
    defaults = budget_schedule(1000)
    lines = [
        "# ALMC posterior quality on the bars (defaults, exact posterior)",
        "",
        "Command: `python benchmarks/almc_quality.py` (float32, CPU). Settings: "
        f"{NUM_CHAINS} independent chains, one draw per chain (the last iterate at "
        f"τ = {float(defaults.early_stop_time):g}); library defaults "
        "`budget_schedule(budget)` + `linear_gaussian_preconditioner(A, noise_std)`; "
        f"budgets {', '.join(map(str, BUDGETS))} score evaluations per chain (the warm "
        "start costs none). `bars_problem()` (σ_y = 0.05, y = 2), chain seed 0.",
        "",
        "Metrics against the exact posterior μ_0: **TV** = mode-weight error "
        "(`mode_weight_error`, ½ Σ|ŵ_k − w_k|, hard assignment to the most "
        "responsible component); **SW** = sliced 2-Wasserstein (`sliced_wasserstein`, "
        f"256 random directions) to {NUM_CHAINS} exact posterior draws. The floor is "
        "the same metric between two independent exact sample sets of size "
        f"{NUM_CHAINS}. The 25-component mixture (10 problem seeds, d = 8 / 80 / 800, "
        "max-SW beside MCGdiff's published figures, the same headline check) is in "
        "`baselines_gmm.md`.",
        "",
        "| budget | TV (floor) | within 2× floor | SW (floor) | non-finite draws "
        "| seconds |",
        "|---|---|---|---|---|---|",
    ]
    bars = [bars_problem()]
    bars_exact = floors(bars, [0])
    f = bars_exact[0][2]
    for budget in BUDGETS:
        t0 = time.perf_counter()
        draws = sample_batch(bars, [0], budget_schedule(budget))
        m = score_batch(np.asarray(draws), bars_exact)[0]
        ok = "yes" if m["tv"] <= 2 * f["tv"] else "**no**"
        lines.append(
            f"| {budget} | {fmt(m['tv'])} ({fmt(f['tv'])}) | {ok} | {fmt(m['sw'])} "
            f"({fmt(f['sw'])}) | {m['nonfinite']} | {time.perf_counter() - t0:.1f} |"
        )
        print("bars", budget, m, flush=True)
    lines += [
        "",
        "Why the defaults stay above 2× the floor: the mode weights are set while the "
        "noise is high and freeze once it is low (Langevin at small t does not move "
        "mass between bars), so bar 2 comes out a few percent too light at every "
        "budget, the weights of a slightly noisier posterior; more evaluations do not "
        "remove it. See `smc_modes.md` (Feynman–Kac reweighting fixes the weights) "
        "and `almc_ablation.md` (no grid, step rule, τ or warm-start setting does).",
        "",
        f"Total wall time {time.perf_counter() - t_start:.0f} s "
        f"({jax.devices()[0].platform}, {jax.device_count()} device).",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "almc_quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
