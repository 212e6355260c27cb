"""The default warm-start step comes from the likelihood's stiffness: ``1/λ̂`` with
``λ̂`` the largest eigenvalue of ``M (I + H)`` at each chain's start, in every
front end."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc.mcmc import init
from numpyro_almc.mcmc.stiffness import stable_step_size
from numpyro_almc.path import WARM_START
from numpyro_almc.run.health import ALMCRunWarning
from numpyro_almc.testbeds import gaussian_problem

A = jax.random.normal(jax.random.key(0), (3, 4))
Y = jnp.ones(3)
NOISE = 0.5


def _exact_lambda(A, noise, M=None):
    B = np.eye(A.shape[1]) + np.asarray(A).T @ np.asarray(A) / noise**2
    if M is not None:
        B = np.asarray(M) @ B
    return float(np.max(np.abs(np.linalg.eigvals(B))))


def _problem():
    return gaussian_problem(jnp.zeros(4), 1.0, A, Y, NOISE)


@pytest.mark.parametrize("shape", [(3, 4), (20, 30), (30, 10)])
def test_stable_step_is_one_over_the_largest_eigenvalue(shape):
    """Against numpy's eigenvalues of ``I + AᵀA/σ²``: never above ``1/λ_max``'s
    stability limit ``2/λ_max`` (what matters) and within 2 % of ``1/λ_max``."""
    a = jax.random.normal(jax.random.key(shape[0]), shape)
    problem = gaussian_problem(jnp.zeros(shape[1]), 1.0, a, jnp.zeros(shape[0]), 0.3)
    h = float(stable_step_size(problem.loglikelihood_fn, jnp.ones(shape[1])))
    lam = _exact_lambda(a, 0.3)
    assert h <= 2 / lam
    np.testing.assert_allclose(h, 1 / lam, rtol=0.02)


def test_with_the_exact_preconditioner_the_step_is_one():
    """``M = (I + AᵀA/σ²)^{-1}`` makes ``M (I + H) = I``: the cap is 1, above the
    schedule's default 0.5, so preconditioned runs keep their warm start."""
    problem = _problem()
    precond = na.linear_gaussian_preconditioner(A, NOISE)
    h = float(stable_step_size(problem.loglikelihood_fn, jnp.zeros(4), precond))
    np.testing.assert_allclose(h, 1.0, rtol=1e-4)
    state = init(
        jnp.zeros(4),
        problem.loglikelihood_fn,
        problem.score_fn,
        preconditioner=precond,
    )
    np.testing.assert_allclose(state.warm_start_step_size, 1.0, rtol=1e-4)


def test_init_sets_the_cap_only_for_a_warm_start_and_honours_an_explicit_one():
    problem = _problem()
    args = (jnp.zeros(4), problem.loglikelihood_fn, problem.score_fn)
    lam = _exact_lambda(A, NOISE)
    np.testing.assert_allclose(init(*args).warm_start_step_size, 1 / lam, rtol=0.02)
    assert float(init(*args, time=1.0).warm_start_step_size) == np.inf
    off = init(*args, warm_start_step_size=jnp.inf)
    assert float(off.warm_start_step_size) == np.inf
    with pytest.raises(ValueError, match="warm_start_step_size"):
        init(*args, warm_start_step_size=0.0)


def _warm_start_only(num_steps=200):
    return na.langevin_schedule(1.0, 0.5, num_steps)._replace(
        times=jnp.full(num_steps + 1, jnp.inf),
        phases=jnp.full(num_steps, WARM_START, jnp.int32),
    )


def test_kernel_takes_the_capped_step_in_the_warm_start_only():
    """``info.step_size`` is ``min(schedule, cap)`` in the warm start and the
    schedule's own step in annealing."""
    problem = _problem()
    schedule = na.budget_schedule(10, num_warm_start_steps=3)
    alg = na.almc(problem.loglikelihood_fn, problem.score_fn, schedule)
    state = alg.init(jnp.zeros(4))
    cap = float(state.warm_start_step_size)
    assert cap < 0.5
    sizes = []
    for i in range(schedule.num_steps):
        state, info = alg.step(jax.random.key(i), state)
        sizes.append(float(info.step_size))
    np.testing.assert_allclose(sizes[:3], cap, rtol=1e-6)
    np.testing.assert_allclose(sizes[3:], schedule.step_sizes[3:], rtol=1e-6)


@pytest.mark.parametrize("noise", [1.0, NOISE, 0.05])
def test_warm_start_on_a_stiff_likelihood_stays_stable(noise):
    """The fault probe's warm start (no preconditioner, schedule step 0.5): with
    the default cap no step is reverted and the chains end near the warm-start
    target's mode; with the cap off (the old constant step) it is unstable."""
    problem = gaussian_problem(jnp.zeros(4), 1.0, A, Y, noise)
    schedule = _warm_start_only(100)

    def run(cap):
        alg = na.almc(problem.loglikelihood_fn, problem.score_fn, schedule)
        states = jax.vmap(
            lambda x: init(
                x,
                problem.loglikelihood_fn,
                problem.score_fn,
                warm_start_step_size=cap,
            )
        )(jax.random.normal(jax.random.key(1), (16, 4)))

        def body(s, i):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(2), i), 16)
            s, info = jax.vmap(alg.step)(keys, s)
            return s, info.is_diverging

        s, flags = jax.lax.scan(body, states, jnp.arange(schedule.num_steps))
        return s.position, int(flags.sum())

    x, flagged = run(None)
    assert flagged == 0
    # The warm-start target N(0, I)·L is Gaussian: its mean and covariance.
    prec = np.eye(4) + np.asarray(A).T @ np.asarray(A) / noise**2
    cov = np.linalg.inv(prec)
    mean = cov @ np.asarray(A).T @ np.asarray(Y) / noise**2
    assert np.all(np.abs(np.asarray(x) - mean) < 6 * np.sqrt(np.diag(cov)) + 0.5)
    _, flagged_uncapped = run(jnp.inf)
    assert flagged_uncapped > 0


def test_drivers_and_smc_start_stable_on_the_fault_probe():
    """``run_almc`` and ``run_almc_smc`` with only a warm start: no step
    reverted, a finite log-evidence (the fault probe: ``log Z = −inf``)."""
    problem = _problem()
    schedule = _warm_start_only(50)
    args = (problem.loglikelihood_fn, problem.score_fn, schedule, jnp.zeros(4))
    res = na.run_almc(jax.random.key(1), *args, num_chains=4)
    assert int(res.num_diverging.sum()) == 0
    smc = na.run_almc_smc(jax.random.key(1), *args, num_particles=16)
    assert int(np.sum(smc.info.num_diverging)) == 0
    assert np.isfinite(float(smc.log_evidence_ratio))
    assert float(smc.log_evidence_ratio_se) < 1.0


def _model(y=None):
    x = numpyro.sample("x", na.ScorePrior(lambda x, t: -x, event_shape=(4,)))
    numpyro.sample("y", dist.Normal(A @ x, 0.05).to_event(1), obs=y)


@pytest.mark.parametrize("kernel", ["ALMC", "ALMCSMC"])
def test_numpyro_warm_start_is_capped(kernel):
    """``MCMC(ALMC)`` without a preconditioner and with a warm start: the state
    carries the cap, warm-start steps take it, and none is reverted there."""
    cls = getattr(na, kernel)
    mcmc = MCMC(
        cls(
            _model,
            preconditioner=None,
            num_warm_start_steps=20,
            likelihood_path="paper",
        ),
        num_warmup=40,
        num_samples=2,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ALMCRunWarning)
        mcmc.warmup(
            jax.random.key(1), y=Y, collect_warmup=True, extra_fields=("diverging",)
        )
        jax.effects_barrier()
    lam = _exact_lambda(A, 0.05)
    cap = np.asarray(mcmc.last_state.warm_start_step_size)
    np.testing.assert_allclose(cap, 1 / lam, rtol=0.02)
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    assert diverging.shape == (4, 40)
    assert diverging[:, :20].sum() == 0
