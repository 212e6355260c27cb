"""The noised-likelihood path and preconditioners with structured operators.

Every operator-backed quantity is checked against the dense path on the operator's
matrix (computed in float64), then the whole path against the exact discretised
target of a Gaussian problem, then a 64 × 64 deblurring run for finiteness.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_exact import assert_moments, noised_moments, ula_stationary_cov

import numpyro_almc as na
from numpyro_almc import operators as ops
from numpyro_almc.scores import gaussian_score

SIGMA = 0.2
TIMES = [0.0, 0.3, 1.0, 3.0, 8.0, np.inf]
PSF = np.array([[0.05, 0.1, 0.05], [0.1, 1.0, 0.1], [0.05, 0.1, 0.05]])


def _operators():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 6)) < 0.5
    keep = np.zeros((6, 6), bool)
    keep[:3, :3] = True
    keep[4, 5] = True
    dense = rng.standard_normal((10, 36)) / 6
    return {
        "mask": ops.Mask(mask),
        "mask_observed_only": ops.Mask(mask, observed_only=True),
        "periodic": ops.PeriodicConvolution(PSF, (6, 6)),
        "periodic_rgb": ops.PeriodicConvolution(PSF, (6, 6, 2)),
        "average_pool": ops.AveragePool((6, 6), 2),
        "subsampled_dct": ops.SubsampledDCT(keep),
        "pooled_periodic": ops.PooledPeriodicConvolution(PSF, (6, 6), 2),
        "dense": ops.DenseOperator(dense, in_shape=(6, 6)),
        "channel_mixing": ops.ChannelMixing([[0.3, 0.6, 0.1]], (3, 4, 3)),
        "scaled": ops.compose(1.7, ops.AveragePool((6, 6), 3)),
        # no eigenbasis: the solve-based fallback
        "zero_padded": ops.ZeroPaddedConvolution(PSF, (6, 6), rtol=1e-6),
    }


OPERATORS = _operators()
# A Aᵀ singular: the dense warm-start normaliser assumes full row rank.
RANK_DEFICIENT = {"mask"}


def _problem(op, seed=1):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(op.in_shape), jnp.float32)
    y = jnp.asarray(rng.standard_normal(op.out_shape), jnp.float32)
    return x, y


def _reference(A, x, y, t):
    """Value, gradient, ``M_t``, its symmetric root and ``c_t`` (float64 numpy).

    ``C_t^+`` (pseudo-inverse): at t = inf a mask that keeps the image's shape has
    ``C_∞ = A Aᵀ`` singular.
    """
    a = np.exp(-t)
    C = a**2 * SIGMA**2 * np.eye(A.shape[0]) + (1 - a**2) * A @ A.T
    C_pinv = np.linalg.pinv(C, hermitian=True)
    r = a * y - A @ x
    M = np.linalg.inv(np.eye(A.shape[1]) + A.T @ C_pinv @ A)
    evals, evecs = np.linalg.eigh(M)
    root = (evecs * np.sqrt(evals)) @ evecs.T
    c_t = None
    if np.isfinite(t):
        cov = SIGMA**2 * np.eye(A.shape[0]) + np.expm1(2 * t) * A @ A.T
        c_t = -0.5 * np.linalg.slogdet(cov)[1] - 0.5 * A.shape[0] * np.log(2 * np.pi)
    return -0.5 * r @ C_pinv @ r, A.T @ C_pinv @ r, M, root, c_t


@jax.jit
def _evaluate(lik, x, v, t):
    value, grad = jax.value_and_grad(lik)(x, t)
    precond = lik.preconditioner.at(t)
    return value, grad, precond.apply(v), precond.apply_sqrt(v)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_likelihood_equals_the_dense_one(name):
    op = OPERATORS[name]
    x, y = _problem(op)
    lik = na.noised_gaussian_likelihood(op, y, SIGMA)
    assert isinstance(lik, na.path.likelihoods.NoisedOperatorLikelihood)
    A = np.asarray(op.as_matrix(), np.float64)
    dense = na.noised_gaussian_likelihood(A, np.ravel(y), SIGMA)
    v = jnp.asarray(np.random.default_rng(2).standard_normal(op.in_size), jnp.float32)
    x64, y64 = np.ravel(np.asarray(x, np.float64)), np.ravel(np.asarray(y, np.float64))
    for t in TIMES:
        value, grad, M, root, c_t = _reference(A, x64, y64, t)
        tol = 2e-4 * (1 + abs(value))
        # the dense path itself, where it is defined (C_∞ invertible)
        if name not in RANK_DEFICIENT or np.isfinite(t):
            got = _evaluate(dense, jnp.ravel(x), v, jnp.float32(t))
            np.testing.assert_allclose(got[0], value, atol=tol, err_msg=t)
            np.testing.assert_allclose(got[2], M @ v, atol=5e-5, err_msg=t)
        got_value, got_grad, got_apply, got_root = _evaluate(lik, x, v, jnp.float32(t))
        np.testing.assert_allclose(got_value, value, atol=tol, err_msg=t)
        np.testing.assert_allclose(
            np.ravel(got_grad), grad, atol=2e-4 * (1 + np.abs(grad).max()), err_msg=t
        )
        np.testing.assert_allclose(got_apply, M @ v, atol=2e-5, err_msg=t)
        # Matrix-free roots are Chebyshev expansions whose length grows like
        # 1 / (a σ): past t ≈ 2 here they exceed sqrt_max_terms and return NaN.
        if name != "zero_padded" or t <= 1 or np.isinf(t):
            np.testing.assert_allclose(got_root, root @ v, atol=5e-5, err_msg=t)
        if c_t is not None and name != "zero_padded":
            np.testing.assert_allclose(lik.log_normalizer(t), c_t, rtol=1e-5)
            np.testing.assert_allclose(dense.log_normalizer(t), c_t, rtol=1e-5)
    if name == "zero_padded":  # matrix-free: no log-determinants
        return
    expected = -0.5 * np.linalg.matrix_rank(A) * np.log(2)
    if name not in RANK_DEFICIENT:
        np.testing.assert_allclose(dense.warm_start_log_normalizer(), expected, 1e-4)
    np.testing.assert_allclose(lik.warm_start_log_normalizer(), expected, rtol=1e-4)


def test_noise_scale_swaps_without_refactoring_and_jits():
    op = OPERATORS["periodic"]
    x, y = _problem(op)
    lik = na.noised_gaussian_likelihood(op, y, SIGMA)

    traces = []

    @jax.jit
    def value(lik, sigma, t):
        traces.append(sigma)  # runs once per trace, not per call
        swapped = lik._replace(noise_std=sigma)
        return swapped(x, t), swapped.preconditioner.at(t).apply_sqrt(x.ravel())

    for sigma in (0.1, 0.5):
        got, root = value(lik, jnp.float32(sigma), jnp.float32(1.0))
        fresh = na.noised_gaussian_likelihood(op, y, sigma)
        np.testing.assert_allclose(got, fresh(x, 1.0), rtol=1e-5)
        np.testing.assert_allclose(
            root, fresh.preconditioner.at(1.0).apply_sqrt(x.ravel()), rtol=1e-5
        )
    # One trace for both σ (counted in Python: jit's own cache counter reads 0
    # when an earlier test in the same worker left the C++ fast path off).
    assert len(traces) == 1


def test_float32_stays_float32_under_x64():
    with jax.enable_x64(True):
        op = ops.AveragePool((4, 4), 2)  # float64 arrays under x64
        lik = na.noised_gaussian_likelihood(op, jnp.ones((2, 2)), 0.1)
        x = jnp.ones((4, 4), jnp.float32)
        assert lik(x, jnp.float32(1.0)).dtype == jnp.float32
        assert jax.grad(lik)(x, 1.0).dtype == jnp.float32
        for t in (1.0, jnp.inf):
            p = lik.preconditioner.at(t)
            assert p.apply(x.ravel()).dtype == jnp.float32
            assert p.apply_sqrt(x.ravel()).dtype == jnp.float32
        p = na.linear_gaussian_preconditioner(op, 0.1)
        assert p.apply(x.ravel()).dtype == jnp.float32


def test_linear_gaussian_preconditioner_accepts_operators():
    op = OPERATORS["subsampled_dct"]
    p = na.linear_gaussian_preconditioner(op, SIGMA)
    dense = na.linear_gaussian_preconditioner(np.asarray(op.as_matrix()), SIGMA)
    v = jnp.linspace(-1.0, 1.0, op.in_size)
    np.testing.assert_allclose(p.apply(v), dense.matrix @ v, atol=1e-5)
    with pytest.raises(ValueError, match="prior_precision"):
        na.linear_gaussian_preconditioner(op, SIGMA, prior_precision=2.0)
    with pytest.raises(ValueError, match="scalar"):
        na.linear_gaussian_preconditioner(op, jnp.ones(op.out_size))
    with pytest.raises(ValueError, match="out_shape"):
        na.noised_gaussian_likelihood(op, jnp.ones(3), SIGMA)
    with pytest.raises(ValueError, match="positive"):
        na.noised_gaussian_likelihood(op, jnp.ones(op.out_shape), -1.0)


def test_operator_noised_path_reaches_the_exact_discretised_target():
    """Prior N(0, I) (so p_τ = N(0, I)), an average-pool likelihood on a 4 × 4 image:
    at τ the chain's stationary law with the tail's step and M_τ is known exactly."""
    op = ops.AveragePool((4, 4), 2)
    rng = np.random.default_rng(3)
    y = jnp.asarray(rng.standard_normal(op.out_shape), jnp.float32)
    tau, h, d = 0.05, 0.05, op.in_size
    lik = na.noised_gaussian_likelihood(op, y, SIGMA)
    schedule = na.budget_schedule(
        300, early_stop_time=tau, tail_fraction=0.5, warm_start_step_size=h
    )
    tail = np.asarray(schedule.phases) == na.path.TAIL
    steps = np.where(tail, h, np.minimum(np.asarray(schedule.step_sizes), h))
    schedule = schedule._replace(step_sizes=jnp.asarray(steps, jnp.float32))
    score = gaussian_score(jnp.zeros(op.in_shape), 1.0)
    res = na.run_almc(
        jax.random.key(4),
        lik,
        score,
        schedule,
        jnp.zeros(op.in_shape),
        num_chains=4000,
        preconditioner=lik.preconditioner,
    )
    assert int(res.num_diverging.sum()) == 0
    m_tau, c_tau = noised_moments(np.zeros(d), np.eye(d), tau)
    A = np.asarray(op.as_matrix(), np.float64)
    a = np.exp(-tau)
    K = a**2 * SIGMA**2 * np.eye(A.shape[0]) + (1 - a**2) * A @ A.T
    precision = np.linalg.inv(c_tau) + A.T @ np.linalg.solve(K, A)
    cov = np.linalg.inv(precision)
    y64 = np.ravel(np.asarray(y, np.float64))
    mean = cov @ (np.linalg.solve(c_tau, m_tau) + A.T @ np.linalg.solve(K, a * y64))
    precond = lik.preconditioner.at(tau)
    M = np.asarray(jax.vmap(precond.apply)(jnp.eye(d)), np.float64).T
    draws = np.asarray(res.state.position).reshape(-1, d)
    assert_moments(draws, mean, ula_stationary_cov(precision, h, M))


def test_deblurring_at_64x64_runs_and_stays_finite():
    op = ops.PeriodicConvolution(np.ones((5, 5)) / 25, (64, 64))
    truth = jnp.asarray(np.random.default_rng(5).standard_normal((64, 64)))
    y = op.apply(truth)
    lik = na.noised_gaussian_likelihood(op, y, 0.05)
    res = na.run_almc(
        jax.random.key(6),
        lik,
        gaussian_score(jnp.zeros((64, 64)), 1.0),
        na.budget_schedule(60),
        jnp.zeros((64, 64)),
        num_chains=4,
        preconditioner=lik.preconditioner,
    )
    assert res.state.position.shape == (4, 64, 64)
    assert bool(jnp.all(jnp.isfinite(res.state.position)))
    assert int(res.num_diverging.sum()) == 0
