"""Exact Gaussian answers shared by the tests of several layers: an OU-noised
Gaussian score written independently of ``numpyro_almc.scores``, noised and
posterior moments, the stationary law of the discretised Langevin chain, and
moment checks with Monte Carlo standard errors (z = 4.5)."""

import jax.numpy as jnp
import numpy as np
import scipy.linalg

Z = 4.5


def gaussian_prior(mean, cov):
    """Exact OU-noised score of N(mean, cov) (written here, independent of scores)."""
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov)

    def score(x, t):
        a = jnp.exp(-t)
        c = a**2 * cov + (1 - a**2) * jnp.eye(mean.shape[0], dtype=cov.dtype)
        return -jnp.linalg.solve(c, x - a * mean)

    return score


def noised_moments(mean, cov, t):
    a = np.exp(-t)
    return a * np.asarray(mean), a**2 * np.asarray(cov) + (1 - a**2) * np.eye(len(mean))


def gaussian_posterior(prior_mean, prior_cov, A, y, noise_std):
    prec = np.linalg.inv(prior_cov) + A.T @ A / noise_std**2
    cov = np.linalg.inv(prec)
    mean = cov @ (np.linalg.solve(prior_cov, prior_mean) + A.T @ y / noise_std**2)
    return mean, cov


def ula_stationary_cov(precision, h, M=None):
    """Exact stationary covariance of x' = x - h M P x + sqrt(2h) M^{1/2} xi."""
    d = precision.shape[0]
    M = np.eye(d) if M is None else M
    B = np.eye(d) - h * M @ precision
    return scipy.linalg.solve_discrete_lyapunov(B, 2 * h * M)


def assert_moments(draws, mean, cov):
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), Z * se_mean)
    emp = np.cov(draws.T)
    var = np.diag(cov)
    se_cov = np.sqrt((np.outer(var, var) + cov**2) / n)
    np.testing.assert_array_less(np.abs(emp - cov), Z * se_cov)


# A 3-D problem: correlated Gaussian prior, two noisy linear measurements.
PRIOR_MEAN = np.array([1.0, -0.5, 0.3])
PRIOR_COV = np.array([[0.5, 0.2, 0.0], [0.2, 0.8, -0.1], [0.0, -0.1, 0.3]])
A = np.array([[1.0, 0.5, 0.0], [0.0, -1.0, 1.0]])
Y = np.array([1.5, 0.2])
NOISE = 0.2


def loglik(x):
    r = (jnp.asarray(Y, x.dtype) - jnp.asarray(A, x.dtype) @ x) / NOISE
    return -0.5 * jnp.sum(r**2)


SCORE = gaussian_prior(PRIOR_MEAN, PRIOR_COV)
