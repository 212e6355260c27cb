"""KSD: the Stein kernel is the one the formula says; it is ~0 for exact draws and
separates a healthy ALMC run from broken ones on the exact test beds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_almc as na
from numpyro_almc import testbeds as tb
from numpyro_almc.diagnostics import kernel_stein_discrepancy, target_score
from numpyro_almc.diagnostics._stein import _stein_rows

TAU = 0.02
GAUSS = tb.gaussian_problem(
    jnp.array([2.0, -1.0, 0.5, 0.0]),
    jnp.array([0.3, 2.0, 0.5, 1.0]),
    jnp.eye(4)[:2],
    jnp.array([1.0, -0.5]),
    0.2,
)


def test_stein_kernel_matches_autodiff():
    rng = np.random.default_rng(0)
    x, s = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    beta = -0.5
    rows = _stein_rows(x, s, 1.0, beta)(slice(0, 6))

    def k(a, b):
        return (1.0 + jnp.sum((a - b) ** 2)) ** beta

    for i, j in [(0, 1), (2, 5), (3, 3)]:
        a, b = jnp.asarray(x[i]), jnp.asarray(x[j])
        sa, sb = jnp.asarray(s[i]), jnp.asarray(s[j])
        expected = (
            sa @ sb * k(a, b)
            + sa @ jax.grad(k, 1)(a, b)
            + sb @ jax.grad(k, 0)(a, b)
            + jnp.trace(jax.jacfwd(jax.grad(k, 0), 1)(a, b))
        )
        assert np.isclose(rows[i, j], float(expected), rtol=1e-4, atol=1e-6)


def test_blocks_pytrees_and_scores_agree():
    x = jax.random.normal(jax.random.key(0), (50, 3)) + 0.3
    full = kernel_stein_discrepancy(x, lambda v: -v, scale=1.0)
    blocked = kernel_stein_discrepancy(x, lambda v: -v, scale=1.0, block_size=7)
    given = kernel_stein_discrepancy(x, scores=-x, scale=1.0)
    tree = kernel_stein_discrepancy(
        {"a": x[:, :1], "b": x[:, 1:]},
        lambda v: jax.tree.map(jnp.negative, v),
        scale=1.0,
    )
    for other in (blocked, given, tree):
        assert np.isclose(other.ksd_squared, full.ksd_squared, rtol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        kernel_stein_discrepancy(x)
    with pytest.raises(ValueError, match="beta"):
        kernel_stein_discrepancy(x, lambda v: -v, beta=-1.5)


def test_zero_in_expectation_for_exact_draws():
    """Over independent exact draw sets the U-statistic averages to 0 (within 3
    standard errors), and the bootstrap p-values are not small."""
    post = GAUSS.posterior(TAU)
    score = target_score(GAUSS.score_fn, GAUSS.loglikelihood_fn, TAU)
    scale = np.asarray(jnp.sqrt(jnp.diagonal(post.covs[0])))
    values, pvals = [], []
    for k in range(12):
        x = tb.mixture_sample(jax.random.key(k), post, 256)
        res = kernel_stein_discrepancy(
            x, score, scale=scale, num_bootstrap=100, rng_key=jax.random.key(k)
        )
        values.append(res.ksd_squared)
        pvals.append(res.p_value)
    values = np.array(values)
    assert abs(values.mean()) < 3 * values.std(ddof=1) / np.sqrt(values.size)
    assert np.median(pvals) > 0.2
    # a shifted set of the same size is far outside that spread
    shifted = tb.mixture_sample(jax.random.key(99), post, 256) + 0.3 * scale
    far = kernel_stein_discrepancy(shifted, score, scale=scale).ksd_squared
    assert far > values.mean() + 10 * values.std(ddof=1)


def final_draws(problem, schedule, num_chains=512, precondition=True, **kw):
    pre = (
        na.linear_gaussian_preconditioner(problem.A, problem.noise_std)
        if precondition
        else None
    )
    res = na.run_almc(
        jax.random.key(1),
        problem.loglikelihood_fn,
        problem.score_fn,
        schedule,
        jnp.zeros(problem.dim),
        num_chains=num_chains,
        preconditioner=pre,
        **kw,
    )
    return res.state.position


@pytest.mark.parametrize("name", ["gaussian", "bars"])
def test_separates_healthy_from_broken_runs(name):
    problem = GAUSS if name == "gaussian" else tb.bars_problem()
    post = problem.posterior(TAU)
    score = target_score(problem.score_fn, problem.loglikelihood_fn, TAU)
    exact = tb.mixture_sample(jax.random.key(7), post, 20000)
    scale = np.asarray(exact.std(0))  # one fixed kernel for every run

    def ksd(x):
        return kernel_stein_discrepancy(x, score, scale=scale, num_bootstrap=200)

    healthy = ksd(final_draws(problem, na.budget_schedule(1000, early_stop_time=TAU)))
    frozen = ksd(
        final_draws(
            problem,
            na.budget_schedule(
                1000, early_stop_time=TAU, step_size=1e-6, warm_start_step_size=1e-6
            ),
        )
    )
    # healthy: indistinguishable from exact draws at 512 chains
    assert healthy.p_value > 0.01
    assert frozen.p_value < 0.01
    assert frozen.ksd_squared > healthy.ksd_squared + 20 * healthy.null_sd
    if name == "gaussian":  # a too-short path (10 score evaluations)
        short = ksd(
            final_draws(
                problem,
                na.budget_schedule(10, early_stop_time=TAU, num_warm_start_steps=5),
            )
        )
        assert short.p_value < 0.01
        assert short.ksd_squared > healthy.ksd_squared + 10 * healthy.null_sd
