"""Exact posteriors of the testbeds, checked independently, and the metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from numpyro_almc.testbeds import (
    GaussianMixture,
    bars_problem,
    conflict_problem,
    cov_error,
    gaussian_problem,
    gmm25_problem,
    max_sliced_wasserstein,
    mean_error,
    mixture_cov,
    mixture_log_prob,
    mixture_mean,
    mixture_problem,
    mixture_responsibilities,
    mixture_sample,
    mode_weight_error,
    mode_weights,
    monte_carlo_floor,
    sliced_wasserstein,
)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _gaussian_setup():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=3)
    root = rng.normal(size=(3, 3))
    cov = root @ root.T + 0.2 * np.eye(3)
    A = rng.normal(size=(2, 3))
    y = rng.normal(size=2)
    return mean, cov, A, y, 0.3


@pytest.mark.parametrize("t", [0.0, 0.4])
def test_gaussian_posterior_matches_numpy(x64, t):
    mean, cov, A, y, s = _gaussian_setup()
    problem = gaussian_problem(mean, cov, A, y, s)
    a, s2 = np.exp(-t), -np.expm1(-2 * t)
    m_t, c_t = a * mean, a**2 * cov + s2 * np.eye(3)
    # Information form, independent of the Kalman form used by the library.
    prec = np.linalg.inv(c_t) + A.T @ A / s**2
    post_cov = np.linalg.inv(prec)
    post_mean = post_cov @ (np.linalg.solve(c_t, m_t) + A.T @ y / s**2)
    post = problem.posterior(t)
    np.testing.assert_allclose(post.weights, [1.0])
    np.testing.assert_allclose(post.means[0], post_mean, rtol=1e-10)
    np.testing.assert_allclose(post.covs[0], post_cov, rtol=1e-10, atol=1e-12)
    evidence = multivariate_normal(A @ m_t, A @ c_t @ A.T + s**2 * np.eye(2)).logpdf(y)
    np.testing.assert_allclose(problem.log_evidence(t), evidence, rtol=1e-10)
    x = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(
        problem.loglikelihood_fn(x),
        multivariate_normal(A @ x, s**2 * np.eye(2)).logpdf(y),
        rtol=1e-12,
    )


def _bars_quadrature(problem, t):
    """Posterior weights and log evidence of the bars problem on a grid."""
    x1 = np.linspace(-7.0, 7.0, 701)
    x2 = np.linspace(-3.0, 7.0, 501)
    g1, g2 = np.meshgrid(x1, x2, indexing="ij")
    a, s2 = np.exp(-t), -np.expm1(-2 * t)
    weights, means = np.asarray(problem.weights), np.asarray(problem.means)
    var = a**2 * np.diagonal(np.asarray(problem.covs), axis1=1, axis2=2) + s2
    s = float(problem.noise_std)
    y = float(problem.y[0])
    lik = np.exp(-0.5 * (y - g2) ** 2 / s**2) / np.sqrt(2 * np.pi * s**2)
    mass = []
    for w, m, v in zip(weights, means, var, strict=True):
        dens = np.exp(
            -0.5 * ((g1 - a * m[0]) ** 2 / v[0] + (g2 - a * m[1]) ** 2 / v[1])
        ) / (2 * np.pi * np.sqrt(v[0] * v[1]))
        mass.append(w * np.sum(dens * lik) * (x1[1] - x1[0]) * (x2[1] - x2[0]))
    mass = np.array(mass)
    return mass / mass.sum(), np.log(mass.sum())


@pytest.mark.parametrize("t", [0.0, 0.5])
def test_bars_posterior_vs_quadrature(x64, t):
    problem = bars_problem(noise_std=0.2)
    weights, log_evidence = _bars_quadrature(problem, t)
    np.testing.assert_allclose(problem.posterior(t).weights, weights, atol=1e-8)
    np.testing.assert_allclose(problem.log_evidence(t), log_evidence, atol=1e-8)
    if t == 0.0:  # the measurement re-weights the bars clearly
        assert np.max(np.abs(weights - np.asarray(problem.weights))) > 0.2


def test_large_t_approaches_warm_start_target(x64):
    mean, cov, A, y, s = _gaussian_setup()
    problem = mixture_problem(
        jnp.array([0.3, 0.7]), jnp.stack([mean, -mean]), jnp.array([1.0, 2.0]), A, y, s
    )
    warm = problem.posterior(jnp.inf)
    assert warm.weights.shape == (1,)
    warm_cov = np.linalg.inv(np.eye(3) + A.T @ A / s**2)
    np.testing.assert_allclose(warm.covs[0], warm_cov, rtol=1e-10)
    np.testing.assert_allclose(warm.means[0], warm_cov @ A.T @ y / s**2, rtol=1e-10)
    late = problem.posterior(20.0)
    np.testing.assert_allclose(mixture_mean(late), warm.means[0], atol=1e-7)
    np.testing.assert_allclose(mixture_cov(late), warm.covs[0], atol=1e-7)
    np.testing.assert_allclose(
        problem.log_evidence(20.0), problem.log_evidence(jnp.inf), atol=1e-7
    )


def _check_score_is_grad(problem, rtol):
    x = jnp.linspace(-1.0, 1.0, problem.dim)
    for t in [0.05, 1.0]:
        np.testing.assert_allclose(
            problem.score_fn(x, t),
            jax.grad(problem.log_prior_density)(x, t),
            rtol=rtol,
            atol=rtol,
        )


def test_score_is_grad_of_log_prior_density(x64):
    _check_score_is_grad(bars_problem(), 1e-9)


def test_gmm25_score_is_grad_of_log_prior_density():
    _check_score_is_grad(gmm25_problem(jax.random.key(0), 8, 2), 1e-4)


def test_problem_is_a_jittable_pytree():
    problem = bars_problem()
    score = jax.jit(lambda p, x: p.score_fn(x, 0.5))(problem, jnp.zeros(2))
    np.testing.assert_allclose(score, problem.score_fn(jnp.zeros(2), 0.5), rtol=1e-5)
    post = jax.jit(lambda p, t: p.posterior(t))(problem, 0.3)
    np.testing.assert_allclose(post.weights, problem.posterior(0.3).weights, rtol=1e-5)
    assert problem.noised_prior(0.0).covs.shape == (4, 2, 2)


def test_mixture_sample_moments(x64):
    mixture = bars_problem(noise_std=0.5).posterior(0.2)
    n = 20000
    samples = mixture_sample(jax.random.key(0), mixture, n)
    mean = mixture_mean(mixture)
    se = np.sqrt(np.diag(mixture_cov(mixture)) / n)
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * se)
    prods = (samples - mean)[:, :, None] * (samples - mean)[:, None, :]
    se_cov = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - mixture_cov(mixture)) < 5 * se_cov)
    # log_prob is normalised and responsibilities sum to one
    np.testing.assert_allclose(mixture_responsibilities(mixture, samples).sum(-1), 1.0)
    assert mixture_log_prob(mixture, samples[0]).shape == ()


def test_mode_and_moment_metrics():
    post = bars_problem().posterior()
    exact = mixture_sample(jax.random.key(1), post, 4000)
    assert float(mode_weight_error(post, exact)) < 0.03
    np.testing.assert_allclose(mode_weights(post, exact).sum(), 1.0, rtol=1e-6)
    prior_like = jnp.concatenate([exact[:10], exact[:10] + jnp.array([-6.0, 0.0])])
    assert float(mode_weight_error(post, prior_like)) > 0.3
    assert float(mean_error(post, exact)) < 0.05
    assert float(mean_error(post, exact + 1.0)) > 0.3
    assert float(cov_error(post, exact)) < 0.1
    assert float(cov_error(post, 2.0 * exact)) > 1.0


def test_sliced_wasserstein_sanity():
    x = jax.random.normal(jax.random.key(0), (1000, 2))
    key = jax.random.key(1)
    assert float(sliced_wasserstein(key, x, x)) < 1e-6
    shift = jnp.array([3.0, 4.0])
    sw = float(sliced_wasserstein(key, x, x + shift))
    assert abs(sw - 5.0 / np.sqrt(2)) < 0.5  # E (theta . v)^2 = |v|^2 / d
    assert float(sliced_wasserstein(key, x, x + 2 * shift)) > 1.9 * sw
    np.testing.assert_allclose(max_sliced_wasserstein(key, x, x + shift), 5.0, 1e-5)
    # unequal sample sizes: quantile interpolation
    y = jax.random.normal(jax.random.key(2), (500, 2))
    assert float(sliced_wasserstein(key, x, y)) < 0.15
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        sliced_wasserstein(key, x, jnp.zeros((10, 3)))


def test_monte_carlo_floor():
    post = conflict_problem(separation=4.0).posterior()
    sw = functools.partial(sliced_wasserstein, jax.random.key(3))
    floor = float(monte_carlo_floor(jax.random.key(0), post, 1000, sw))
    assert 0 < floor < 0.2
    floor = monte_carlo_floor(
        jax.random.key(0), post, 1000, lambda x, y: mean_error(post, y)
    )
    assert float(floor) < 0.1


def test_gmm25_shapes_and_determinism():
    key = jax.random.key(0)
    problem = gmm25_problem(key, dim=8, obs_dim=2)
    assert problem.means.shape == (25, 8) and problem.covs.shape == (25, 8, 8)
    assert problem.A.shape == (2, 8) and problem.y.shape == (2,)
    np.testing.assert_allclose(problem.weights.sum(), 1.0, rtol=1e-6)
    assert set(np.unique(np.asarray(problem.means))) <= {-16, -8, 0, 8, 16}
    np.testing.assert_allclose(problem.means[7, 2:4], problem.means[7, :2])
    singular = np.linalg.svd(np.asarray(problem.A), compute_uv=False)
    assert np.all((singular > 0) & (singular < 1))
    assert 0 < float(problem.noise_std) < singular.max()
    again = gmm25_problem(key, dim=8, obs_dim=2)
    for a, b in zip(jax.tree.leaves(problem), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    other = gmm25_problem(jax.random.key(1), dim=8, obs_dim=2, noise_std=0.1)
    assert not np.allclose(other.A, problem.A)
    np.testing.assert_allclose(other.noise_std, 0.1)
    with pytest.raises(ValueError, match="even"):
        gmm25_problem(key, dim=7, obs_dim=2)


def test_conflict_problem_favours_rare_mode():
    problem = conflict_problem()
    assert float(problem.weights[1]) == pytest.approx(0.05)
    assert float(problem.posterior().weights[1]) > 0.8
    wider = conflict_problem(dim=4, separation=4.0, num_observed=2)
    assert wider.A.shape == (2, 4)
    assert float(wider.posterior().weights[1]) > 0.8


def test_constructor_validation():
    with pytest.raises(ValueError, match="isotropic"):
        mixture_problem(
            jnp.ones(2), jnp.zeros((2, 3)), jnp.ones((2, 2)), jnp.ones((1, 3)), [0], 1
        )
    with pytest.raises(ValueError, match="A\\[None, :\\]"):
        gaussian_problem(jnp.zeros(2), 1.0, jnp.ones(2), jnp.ones(1), 0.1)
    with pytest.raises(ValueError, match="positive"):
        gaussian_problem(jnp.zeros(2), 1.0, jnp.ones((1, 2)), jnp.ones(1), 0.0)
    with pytest.raises(ValueError, match="shape"):
        gaussian_problem(jnp.zeros(2), 1.0, jnp.ones((1, 2)), jnp.ones(2), 0.1)
    mixture = GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.eye(2)[None])
    assert mixture_sample(jax.random.key(0), mixture, 3).shape == (3, 2)
