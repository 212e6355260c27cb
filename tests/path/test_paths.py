"""The noised-likelihood path: exact on Gaussians, and better on separated modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_exact import (
    PRIOR_COV,
    PRIOR_MEAN,
    SCORE,
    assert_moments,
    noised_moments,
    ula_stationary_cov,
)

import numpyro_almc as na
from numpyro_almc.scores import gaussian_mixture_score
from numpyro_almc.testbeds import gmm25_problem, mode_weight_error

A = np.array([[1.0, 0.5, 0.0], [0.0, -1.0, 1.0]])
Y = np.array([1.5, 0.2])
NOISE = 0.2


def test_noised_path_matches_its_exact_discretised_target():
    """At τ the target is p_τ(x) L_τ(x), Gaussian here; the chain's stationary law
    with the tail's step and M_τ is known exactly (discrete Lyapunov equation)."""
    tau, h = 0.05, 0.02
    lik = na.noised_gaussian_likelihood(A, Y, NOISE)
    schedule = na.budget_schedule(
        400, early_stop_time=tau, tail_fraction=0.5, warm_start_step_size=0.02
    )
    tail = np.asarray(schedule.phases) == na.path.TAIL
    steps = np.where(tail, h, np.minimum(np.asarray(schedule.step_sizes), h))
    schedule = schedule._replace(step_sizes=jnp.asarray(steps, jnp.float32))
    res = na.run_almc(
        jax.random.key(1),
        lik,
        SCORE,
        schedule,
        jnp.zeros(3),
        num_chains=4000,
        preconditioner=lik.preconditioner,
    )
    assert int(res.num_diverging.sum()) == 0
    m_tau, c_tau = noised_moments(PRIOR_MEAN, PRIOR_COV, tau)
    a = np.exp(-tau)
    K = a**2 * NOISE**2 * np.eye(2) + (1 - a**2) * A @ A.T
    precision = np.linalg.inv(c_tau) + A.T @ np.linalg.solve(K, A)
    cov = np.linalg.inv(precision)
    mean = cov @ (np.linalg.solve(c_tau, m_tau) + A.T @ np.linalg.solve(K, a * Y))
    M = np.asarray(lik.preconditioner.at(tau).matrix, np.float64)
    assert_moments(res.state.position, mean, ula_stationary_cov(precision, h, M))


def test_noised_likelihood_at_time_zero_is_the_likelihood():
    lik = na.noised_gaussian_likelihood(A, Y, NOISE)

    def plain(x):
        return -0.5 * jnp.sum((jnp.asarray(Y) - jnp.asarray(A) @ x) ** 2) / NOISE**2

    x = jnp.array([0.3, -0.2, 0.7])
    np.testing.assert_allclose(lik(x, 0.0), plain(x), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(lik)(x, 0.0), jax.grad(plain)(x), rtol=1e-4, atol=1e-4
    )
    # the warm start (t = inf) is finite and log-concave
    assert np.isfinite(float(lik(x, jnp.inf)))
    m = lik.preconditioner.at(jnp.inf).matrix
    assert np.all(np.linalg.eigvalsh(np.asarray(m)) > 0)


def test_noised_path_finds_the_modes_the_paper_path_misses():
    """gmm25, d = 8, d_y = 2, seed 0: the paper's path puts the chains in the wrong
    modes (TV 0.95); the noised path is at the floor (measured 0.006)."""
    problem = gmm25_problem(jax.random.key(0), 8, 2)
    covs = jnp.diagonal(problem.covs, axis1=-2, axis2=-1)
    score = gaussian_mixture_score(problem.weights, problem.means, covs)
    lik = na.noised_gaussian_likelihood(problem.A, problem.y, problem.noise_std)
    schedule = na.budget_schedule(1000)
    noised = na.run_almc(
        jax.random.key(0),
        lik,
        score,
        schedule,
        jnp.zeros(8),
        num_chains=1000,
        preconditioner=lik.preconditioner,
    )
    paper = na.run_almc(
        jax.random.key(0),
        problem.loglikelihood_fn,
        score,
        schedule,
        jnp.zeros(8),
        num_chains=1000,
        preconditioner=na.linear_gaussian_preconditioner(problem.A, problem.noise_std),
    )
    exact = problem.posterior()
    assert float(mode_weight_error(exact, paper.state.position)) > 0.5
    assert float(mode_weight_error(exact, noised.state.position)) < 0.05


def test_noised_likelihood_rejects_bad_arguments_and_smc():
    with pytest.raises(ValueError, match="matrix"):
        na.noised_gaussian_likelihood(jnp.ones(3), jnp.ones(3), 0.1)
    with pytest.raises(ValueError, match="shape"):
        na.noised_gaussian_likelihood(jnp.eye(2), jnp.ones(3), 0.1)
    with pytest.raises(ValueError, match="positive"):
        na.noised_gaussian_likelihood(jnp.eye(2), jnp.ones(2), -0.1)
    lik = na.noised_gaussian_likelihood(A, Y, NOISE)
    # run_almc_smc takes its evidence constants from the likelihood itself.
    with pytest.raises(ValueError, match="own log_normalizer"):
        na.run_almc_smc(
            jax.random.key(0),
            lik,
            SCORE,
            na.budget_schedule(10),
            jnp.zeros(3),
            num_particles=8,
            warm_start_log_normalizer=0.0,
        )
