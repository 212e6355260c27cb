"""Many chains with few draws, or few chains with many? Effective draws per network pass.

    taskset -c 1 python benchmarks/chains_vs_draws.py [--quick]

Every run goes through ``MCMC(ALMC(model), num_warmup=W, num_samples=S_MAX,
num_chains=N, chain_method="vectorized")`` with the kernel's defaults (``"auto"``
preconditioner, ``budget_schedule(W)``, τ = 0.02). One score pass per step, warm-up
and sampling alike, so a run of ``C`` chains and ``S`` draws costs ``C (W + S)``
network passes (the likelihood and the noise scale's MALA step cost none).

Why one run answers every ``(C, S)``: the chains are independent by construction
(one key each), and a chain's first ``S`` draws do not depend on ``num_samples``, so
any ``C`` of the ``N`` chains, cut after ``S`` draws, are distributed as a run with
``num_chains=C, num_samples=S``.

For each problem and each posterior mean ``E[f]`` (every coordinate, the noise scale
where it is unknown, the mode weights as ``E[r_k(x)]`` with ``r_k`` the exact
posterior responsibilities):

* **draws per chain** ``g(S) = Var_μτ(f) / MSE_1(S)``, with ``MSE_1(S)`` the mean
  squared error of one chain's ``S``-draw average against the exact value, over the
  ``N`` chains (median over the quantities). It includes the bias: a chain that ends
  in the wrong place counts against it. ``C`` chains give ``C g(S)`` effective draws
  as long as the bias is below ``sd / sqrt(C g(S))``; the **bias** column (the pooled
  mean's error over the posterior sd, minus its own noise, median over quantities)
  says where that stops.
* **per 1000 passes** ``1000 g(S) / (W + S)``: what the network passes buy, the
  number to maximise. It does not depend on ``C``.
* **reported / true**: ``diagnostics.summary``'s ``ess_bulk`` for ``C = 32`` chains
  (median over 8 disjoint groups and the quantities) over the true ``32 g(S)``: the
  ALMC-aware ESS should be near 1 for a run to be trusted.

On the digits task (64-D, the bundled network, σ unknown: the demo's model) there
is no exact posterior; the reference is the pooled mean of all ``N`` chains at the
same ``S`` and ``MSE_1`` the chains' spread about it (variance only, no bias).

Writes ``benchmarks/results/chains_vs_draws.md``. Pinned to one core: about 15 min
(``--quick``: fewer chains, for a smoke run; its numbers are not the table's).
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc import testbeds as tb
from numpyro_almc.diagnostics import summary

RESULTS = pathlib.Path(__file__).parent / "results" / "chains_vs_draws.md"

# Hand-written from the (seeded) tables of the default command, appended under them;
# keep it in sync when they change.
ANALYSIS = """\
## What the tables say, and the defaults

* **A draw of the sampling phase is worth about a hundredth of a chain, and costs a
  thousandth of one.** Within a mode, the chains at τ move slowly: 400 further steps
  add 3.2–4.1 effective draws per chain (g(400) = 4.1–5.1 on the Gaussian, the funnel
  and the digits pixels), one per 100–130 steps, while a new chain costs the W =
  1000 passes of its path for one. So for means within a mode, per network pass,
  400 draws per chain buy 3.0–3.7 effective draws per 1000 passes against 0.96–1.0
  with one draw per chain (S = 1): the sampling phase is worth its cost.
* **Slow quantities gain less.** The digits model's noise scale (the worst column)
  reaches g(400) = 1.8; the funnel's σ 2.9.
* **Mode weights come from chains only.** On the four-mode bars g stays at 0.94–1.00
  for every S (a chain never changes bar at τ), so every draw after the first is
  spent for nothing there (S = 400 at W = 1000: 0.71 against 0.93 per 1000 passes),
  and the bias (0.05 sd: ALMC's frozen mode weights) caps what any number of chains
  can reach at about 400 effective draws.
* **The ALMC-aware ESS is right** whatever the mix: `summary`'s `ess_bulk` for 32
  chains is 0.96–1.08 × the true one on the Gaussian, the funnel and the digits, and
  1.1–1.2 × on the bars (where the bias, invisible to any spread, is not in it). Its
  own relative error is about √(2 / (C − 1)): ±35 % with 16 chains, ±18 % with 64.
* **A shorter path is cheaper where it suffices.** W = 250 buys about four times the
  effective draws per pass of W = 1000 at a bias of 0.01 sd on the Gaussian but
  0.03–0.04 sd on the funnel (against 0.006–0.017): fine for 100 effective draws,
  the dominant error past about 1000.
* **With the final stage** (`final_stage=`, K − 1 = 31 passes per collected draw)
  a draw costs about 32 passes, not 1, and few draws per chain become the better
  buy: S = 1 gives 0.93 effective draws per 1000 passes, S = 400 about 0.34.

**Defaults that follow.** Many chains, because they are what the error estimate,
the mode weights and the slow parameters need, and a sampling phase of a fifth of
the path, because it raises the effective draws per chain 1.5–3× for 20 % more
passes: the demo runs 64 chains × 200 draws after 1000 path steps (it ran 16 × 400;
measured on one core, 51 s against 35 s, the noise scale's MCSE 0.0033 against
0.0073), and the README and the getting-started examples use 64 chains. On
multimodal posteriors raise the chains and cut the draws (`num_samples` of a few);
with the final stage, collect one or a few draws per chain.
"""
DRAWS = (1, 2, 5, 10, 20, 50, 100, 200, 400)
WARMUPS = (250, 1000)
REPORTED_CHAINS = 32
REPORTED_GROUPS = 8
SIGMA_PRIOR = 1.0  # HalfNormal scale of the funnel's noise sd
FUNNEL_NOISE = 0.3  # the noise that made the funnel's data


def gaussian_problem():
    return tb.gaussian_problem(
        jnp.array([2.0, -1.0, 0.5, 0.0]),
        jnp.array([0.3, 2.0, 0.5, 1.0]),
        jnp.eye(4)[:2],
        jnp.array([1.0, -0.5]),
        0.2,
    )


def known_noise_model(problem):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(problem.score_fn, (problem.dim,)))
        numpyro.sample(
            "y", dist.Normal(problem.A @ x, problem.noise_std).to_event(1), obs=y
        )

    return model


def funnel_model(prior):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(prior.score_fn, (prior.dim,)))
        sigma = numpyro.sample("sigma", dist.HalfNormal(SIGMA_PRIOR))
        numpyro.sample("y", dist.Normal(x, sigma).to_event(1), obs=y)

    return model


def funnel_exact(prior, y, tau):
    """Exact means and variances of ``x`` and ``σ`` under μ_τ ∝ p_τ(x) p(σ) N(y; x, σ²)
    (``p_τ`` Gaussian, so ``x`` integrates out; quadrature over ``σ``)."""
    noised = prior.noised_prior(tau)
    m = np.asarray(noised.means[0], np.float64)
    cov = np.asarray(noised.covs[0], np.float64)
    y = np.asarray(y, np.float64)
    sig = np.linspace(1e-4, 8 * SIGMA_PRIOR, 40001)
    log_w, means, variances = [], [], []
    for s in sig:
        marg = cov + s**2 * np.eye(len(m))
        inv = np.linalg.inv(marg)
        logdet = np.linalg.slogdet(marg)[1]
        r = y - m
        log_w.append(-0.5 * (r @ inv @ r) - 0.5 * logdet - 0.5 * (s / SIGMA_PRIOR) ** 2)
        gain = cov @ inv
        means.append(m + gain @ r)
        variances.append(np.diag(cov - gain @ cov))
    log_w = np.array(log_w)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    means, variances = np.array(means), np.array(variances)
    x_mean = w @ means
    x_var = w @ variances + w @ (means - x_mean) ** 2
    s_mean = w @ sig
    s_var = w @ (sig - s_mean) ** 2
    return np.append(x_mean, s_mean), np.append(x_var, s_var)


def problems(quick):
    """name -> (model, y, exact means or None, exact variances or None, features, N)."""
    n_exact = 1024 if quick else 4096
    out = {}

    gauss = gaussian_problem()
    post = gauss.posterior(0.02)
    out["gaussian (d = 4, σ known)"] = (
        known_noise_model(gauss),
        gauss.y,
        np.asarray(tb.mixture_mean(post)),
        np.diag(np.asarray(tb.mixture_cov(post))),
        lambda s: s["x"],
        n_exact,
    )

    bars = tb.bars_problem()
    post = bars.posterior(0.02)
    exact_draws = tb.mixture_sample(jax.random.key(99), post, 200_000)

    def bars_features(s, post=post):
        x = s["x"]
        resp = tb.mixture_responsibilities(post, x.reshape(-1, 2)).reshape(
            *x.shape[:-1], -1
        )
        return jnp.concatenate([x, resp], -1)

    ref = np.asarray(bars_features({"x": exact_draws}))
    out["bars (d = 2, 4 modes; means and mode weights)"] = (
        known_noise_model(bars),
        bars.y,
        np.concatenate([np.asarray(tb.mixture_mean(post)), np.asarray(post.weights)]),
        ref.var(0),
        bars_features,
        n_exact,
    )

    prior = tb.gaussian_problem(  # only its prior is used
        jnp.zeros(4), jnp.array([0.5, 1.0, 2.0, 1.0]), jnp.eye(4), jnp.zeros(4), 1.0
    )
    x_true = jnp.array([0.5, -1.0, 1.5, 0.0])
    y = x_true + FUNNEL_NOISE * jax.random.normal(jax.random.key(5), (4,))
    mean, var = funnel_exact(prior, y, 0.02)
    out["funnel (d = 4, σ unknown; x and σ)"] = (
        funnel_model(prior),
        y,
        mean,
        var,
        lambda s: jnp.concatenate([s["x"], s["sigma"][..., None]], -1),
        n_exact,
    )
    return out


def digits_problem(quick):
    from numpyro_almc.models import digits_prior, load_digits_split
    from numpyro_almc.models._inverse import linear_inverse_model, make_task

    prior = digits_prior()
    x_true = prior.encode(load_digits_split().test_images[0])
    A = make_task("inpaint_block")
    y = A @ x_true + 0.1 * jax.random.normal(jax.random.key(0), (A.shape[0],))
    return (
        linear_inverse_model(prior.score_fn, A),
        y,
        None,
        None,
        lambda s: jnp.concatenate([s["x"], s["sigma"][..., None]], -1),
        256 if quick else 2048,
    )


def run(model, y, num_warmup, num_chains, num_samples, seed=0):
    mcmc = MCMC(
        na.ALMC(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), y=y)
    return mcmc.get_samples(group_by_chain=True)


def analyse(features, exact_mean, exact_var):
    """Rows for each S: draws per chain, per 1000 passes (filled by the caller),
    bias and the summary's ESS over the truth. ``features``: (N, S_MAX, q)."""
    features = np.asarray(features, np.float64)
    n = features.shape[0]
    rows = {}
    for s in DRAWS:
        chain_means = features[:, :s].mean(1)  # (N, q)
        pooled = chain_means.mean(0)
        if exact_mean is None:  # spread about the pooled mean (variance only)
            mse = chain_means.var(0, ddof=1)
            var = features[:, :s].reshape(-1, features.shape[-1]).var(0)
            bias = np.full_like(pooled, np.nan)
        else:
            mse = ((chain_means - exact_mean) ** 2).mean(0)
            var = exact_var
            # the pooled mean's squared error less its own noise, in posterior sd
            excess = (pooled - exact_mean) ** 2 - chain_means.var(0, ddof=1) / n
            bias = np.sqrt(np.clip(excess, 0, None) / var)
        g = var / mse
        ratios = []
        for k in range(REPORTED_GROUPS):
            block = features[k * REPORTED_CHAINS : (k + 1) * REPORTED_CHAINS, :s]
            if s < 4 or block.shape[0] < REPORTED_CHAINS:
                break
            table = summary({"f": block})
            ratios.append(table["ess_bulk"].to_numpy() / (REPORTED_CHAINS * g))
        rows[s] = dict(
            g=float(np.median(g)),
            g_min=float(np.min(g)),
            bias=float(np.nanmedian(bias)) if exact_mean is not None else None,
            reported=float(np.median(ratios)) if ratios else None,
        )
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    cases = problems(args.quick)
    cases["digits inpaint_block (d = 64, σ unknown; the demo's model)"] = (
        digits_problem(args.quick)
    )
    results = []
    for name, (model, y, mean, var, features, n) in cases.items():
        warmups = WARMUPS if mean is not None else (1000,)
        for w in warmups:
            t0 = time.perf_counter()
            samples = run(model, y, w, n, max(DRAWS))
            seconds = time.perf_counter() - t0
            rows = analyse(features(samples), mean, var)
            results.append(dict(name=name, warmup=w, chains=n, rows=rows, s=seconds))
            print(name, w, f"{seconds:.0f} s", flush=True)
            for s, r in rows.items():
                print("  ", s, r, flush=True)
            jax.clear_caches()
    write(results, time.perf_counter() - start, args.quick)


def write(results, seconds, quick):
    lines = [
        "# Chains against draws: effective draws per network pass",
        "",
        "Command: `taskset -c 1 python benchmarks/chains_vs_draws.py"
        + (" --quick" if quick else "")
        + f"` ({seconds / 60:.0f} min on one core of {platform.machine()}; "
        "float32). Each problem is one `MCMC(ALMC(model))` run of N vectorized "
        f"chains with the kernel's defaults, {max(DRAWS)} draws after W warm-up "
        "(path) steps; any C chains cut after S draws are distributed as a run "
        "with `num_chains=C, num_samples=S`, which costs C (W + S) network passes.",
        "",
        "**g(S)**: effective draws per chain, Var(f) / MSE of one chain's S-draw "
        "mean against the exact μ_τ value (median over the posterior means f; "
        "worst in brackets). **per 1000 passes**: 1000 g(S) / (W + S), what the "
        "passes buy; it does not depend on C. **bias**: the pooled mean's error "
        "over the posterior sd, its own noise removed (median over f): C chains "
        "give C g(S) effective draws while bias < 1 / sqrt(C g(S)). **ESS "
        f"reported / true**: `diagnostics.summary`'s `ess_bulk` for "
        f"{REPORTED_CHAINS} chains over the true {REPORTED_CHAINS} g(S) (median over "
        f"{REPORTED_GROUPS} groups and the f; S ≥ 4).",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['name']}, W = {res['warmup']}",
            "",
            f"N = {res['chains']} chains, {res['s']:.0f} s for the run.",
            "",
            "| S | g(S) | per 1000 passes | bias (sd) | ESS reported / true |",
            "|---|---|---|---|---|",
        ]
        for s, r in res["rows"].items():
            per = 1000 * r["g"] / (res["warmup"] + s)
            bias = "—" if r["bias"] is None else f"{r['bias']:.3f}"
            rep = "—" if r["reported"] is None else f"{r['reported']:.2f}"
            lines.append(
                f"| {s} | {r['g']:.2f} ({r['g_min']:.2f}) | {per:.3f} | {bias} "
                f"| {rep} |"
            )
        lines.append("")
    lines.append(ANALYSIS)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
