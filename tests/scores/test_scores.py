"""Exact scores and the adapters from diffusion-model parameterisations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_almc.path import ou_coefficients
from numpyro_almc.scores import (
    CosineVPSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    gaussian_mixture_log_density,
    gaussian_mixture_score,
    gaussian_score,
    score_from_edm_denoiser,
    score_from_eps,
    score_from_ve,
    score_from_x0,
)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _mixture(dtype=np.float64):
    rng = np.random.default_rng(0)
    weights = np.array([0.2, 0.5, 0.3])
    means = rng.normal(size=(3, 2)) * 2
    root = rng.normal(size=(3, 2, 2))
    covs = root @ np.swapaxes(root, -1, -2) + 0.1 * np.eye(2)
    return (
        jnp.asarray(weights, dtype),
        jnp.asarray(means, dtype),
        jnp.asarray(covs, dtype),
    )


POINTS = np.array([[0.3, -1.2], [2.0, 1.0], [-4.0, 3.0]])
TIMES = [0.01, 0.3, 2.0]


def _posterior_mean_np(x, t, weights, means, covs):
    """E[X_0 | X_t = x] for a Gaussian mixture, computed directly in numpy."""
    a, s2 = np.exp(-t), -np.expm1(-2 * t)
    logs, cond = [], []
    for w, m, c in zip(weights, means, covs, strict=True):
        cov_t = a**2 * c + s2 * np.eye(len(m))
        diff = x - a * m
        sol = np.linalg.solve(cov_t, diff)
        _, logdet = np.linalg.slogdet(cov_t)
        logs.append(np.log(w) - 0.5 * (diff @ sol + logdet))
        cond.append(m + a * c @ sol)
    logs = np.array(logs)
    resp = np.exp(logs - logs.max())
    return (resp / resp.sum()) @ np.array(cond)


def test_ou_coefficients_small_and_large_t(x64):
    alpha, sigma2 = ou_coefficients(jnp.float32(1e-6))
    assert alpha.dtype == sigma2.dtype == jnp.float32
    np.testing.assert_allclose(sigma2, 2e-6, rtol=1e-5)
    alpha, sigma2 = ou_coefficients(jnp.inf)
    assert float(alpha) == 0.0 and float(sigma2) == 1.0


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
def test_mixture_score_is_grad_of_log_density(x64, kind):
    weights, means, covs = _mixture()
    if kind == "iso":
        covs = jnp.array([0.5, 1.5, 0.2])
    elif kind == "diag":
        covs = jnp.diagonal(covs, axis1=-2, axis2=-1)
    score_fn = gaussian_mixture_score(weights, means, covs)
    grad_fn = jax.grad(gaussian_mixture_log_density(weights, means, covs))
    for x in POINTS:
        for t in TIMES:
            np.testing.assert_allclose(
                score_fn(jnp.asarray(x), t), grad_fn(jnp.asarray(x), t), rtol=1e-10
            )


@pytest.mark.parametrize("kind", ["iso", "diag", "full"])
def test_gaussian_equals_one_component_mixture(x64, kind):
    mean = jnp.array([1.0, -2.0])
    if kind == "iso":
        cov = jnp.asarray(0.7)
        full = cov * jnp.eye(2)
    elif kind == "diag":
        cov = jnp.array([0.3, 2.0])
        full = jnp.diag(cov)
    else:
        cov = full = jnp.array([[1.0, 0.4], [0.4, 0.5]])
    score_fn = gaussian_score(mean, cov)
    mix_fn = gaussian_mixture_score(jnp.ones(1), mean[None], cov[None])
    for x in POINTS:
        for t in TIMES:
            a, s2 = np.exp(-t), -np.expm1(-2 * t)
            expected = -np.linalg.solve(a**2 * full + s2 * np.eye(2), x - a * mean)
            np.testing.assert_allclose(score_fn(x, t), expected, rtol=1e-10)
            np.testing.assert_allclose(mix_fn(x, t), expected, rtol=1e-10)


def _dense_mixture_np(x, t, weights, means, covs):
    """log p_t(x) and its score by dense solves in float64 numpy (reference)."""
    a, s2 = np.exp(-t), -np.expm1(-2 * t)
    logs, grads = [], []
    weights = np.asarray(weights) / np.sum(weights)
    for w, m, c in zip(weights, means, covs, strict=True):
        cov_t = a**2 * c + s2 * np.eye(len(m))
        diff = x - a * m
        sol = np.linalg.solve(cov_t, diff)
        _, logdet = np.linalg.slogdet(cov_t)
        quad = diff @ sol + logdet + len(m) * np.log(2 * np.pi)
        logs.append(np.log(w) - 0.5 * quad)
        grads.append(-sol)
    logs = np.array(logs)
    top = logs.max()
    resp = np.exp(logs - top)
    log_p = top + np.log(resp.sum())
    return log_p, (resp / resp.sum()) @ np.array(grads)


def _random_spd_mixture(d=3, num=4, seed=1):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 2.0, size=num)  # unnormalised on purpose
    means = rng.normal(size=(num, d)) * 2
    q, _ = np.linalg.qr(rng.normal(size=(num, d, d)))
    lam = np.exp(rng.uniform(np.log(0.05), np.log(5.0), size=(num, d)))
    covs = np.einsum("kij,kj,klj->kil", q, lam, q)
    return weights, means, 0.5 * (covs + np.swapaxes(covs, -1, -2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("traced", [False, True])
def test_full_cov_mixture_matches_dense_solve(x64, dtype, traced):
    weights, means, covs = _random_spd_mixture()
    args = [jnp.asarray(a, dtype) for a in (weights, means, covs)]

    def both(x, t, weights, means, covs):
        return (
            gaussian_mixture_log_density(weights, means, covs)(x, t),
            gaussian_mixture_score(weights, means, covs)(x, t),
        )

    if traced:  # built under jit, from traced parameters
        fn = jax.jit(both)
    else:  # built under jit, closing over concrete parameters
        fn = jax.jit(lambda x, t, *_: both(x, t, *args))
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(size=(3, 3)) * 3, means[:1] + 1e-3])
    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (2e-4, 2e-4)
    for t in [1e-3, 0.05, 0.7, 3.0, 25.0]:
        for x in points:
            log_p, score = fn(jnp.asarray(x, dtype), jnp.asarray(t, dtype), *args)
            assert log_p.dtype == score.dtype == dtype
            ref_log_p, ref_score = _dense_mixture_np(x, t, weights, means, covs)
            np.testing.assert_allclose(log_p, ref_log_p, rtol=rtol, atol=atol)
            scale = max(1.0, np.abs(ref_score).max())
            np.testing.assert_allclose(score, ref_score, rtol=rtol, atol=atol * scale)
    # t = inf: p_t = N(0, I) whatever the prior.
    x = jnp.asarray(points[0], dtype)
    log_p, score = fn(x, jnp.asarray(jnp.inf, dtype), *args)
    np.testing.assert_allclose(score, -x, rtol=rtol)
    ref = -0.5 * (np.sum(points[0] ** 2) + 3 * np.log(2 * np.pi))
    np.testing.assert_allclose(log_p, ref, rtol=rtol)


def test_full_cov_singular_prior(x64):
    # A rank-one C is fine for t > 0 (round-off eigenvalues are clipped at 0).
    v = np.array([[0.6, 0.8]])
    covs = (v.T @ v)[None]
    means = np.array([[1.0, -1.0]])
    score_fn = gaussian_mixture_score(jnp.ones(1), means, covs)
    for t in [1e-3, 0.5]:
        x = np.array([0.3, 0.2])
        _, ref = _dense_mixture_np(x, t, np.ones(1), means, covs)
        np.testing.assert_allclose(score_fn(jnp.asarray(x), t), ref, rtol=1e-9)


def test_mixture_score_far_from_modes_is_finite(x64):
    weights, means, covs = _mixture()
    score = gaussian_mixture_score(weights, means, covs)(jnp.array([300.0, -500]), 0.01)
    assert np.all(np.isfinite(score))


def test_event_shape_is_kept(x64):
    score_fn = gaussian_score(jnp.zeros((2, 3)), jnp.ones((2, 3)))
    assert score_fn(jnp.ones((2, 3)), 0.5).shape == (2, 3)
    batched = jax.vmap(score_fn, in_axes=(0, None))(jnp.ones((5, 2, 3)), 0.5)
    np.testing.assert_allclose(batched, -jnp.ones((5, 2, 3)))


def _exact(dtype=np.float64):
    weights, means, covs = _mixture(dtype)
    return weights, means, covs, gaussian_mixture_score(weights, means, covs)


def _linear_abar(s, beta_min=0.1, beta_max=20.0):
    return jnp.exp(-beta_min * s - 0.5 * (beta_max - beta_min) * s**2)


def _cosine_abar(u, s=0.008):
    f = lambda v: jnp.cos((v + s) / (1 + s) * jnp.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


@pytest.mark.parametrize(
    "schedule, abar_fn",
    [(LinearVPSchedule(), _linear_abar), (CosineVPSchedule(), _cosine_abar)],
)
def test_eps_adapter_continuous(x64, schedule, abar_fn):
    *_, exact = _exact()

    def eps_fn(x, s):  # exact eps in the network's own time s
        abar = abar_fn(s)
        return -jnp.sqrt(1 - abar) * exact(x, -0.5 * jnp.log(abar))

    score_fn = score_from_eps(eps_fn, schedule)
    for x in POINTS:
        for t in TIMES:
            np.testing.assert_allclose(score_fn(x, t), exact(x, t), rtol=1e-9)


def test_eps_adapter_discrete(x64):
    *_, exact = _exact()
    abar = jnp.cumprod(1 - jnp.linspace(1e-4, 0.02, 1000))
    schedule = DiscreteVPSchedule(abar)
    grid = schedule.ou_times()
    np.testing.assert_allclose(grid, -0.5 * np.log(np.asarray(abar)), rtol=1e-12)

    def eps_fn(x, k):
        return -jnp.sqrt(1 - abar[k]) * exact(x, grid[k])

    score_fn = jax.jit(score_from_eps(eps_fn, schedule))
    x = jnp.asarray(POINTS[0])
    for k in [0, 17, 500, 999]:
        np.testing.assert_allclose(score_fn(x, grid[k]), exact(x, grid[k]), rtol=1e-9)
    # Off the grid: the nearest grid step (in OU time) is used.
    t = 0.4 * grid[100] + 0.6 * grid[101]
    assert int(schedule.model_time(t)) == 101
    np.testing.assert_allclose(score_fn(x, t), exact(x, grid[101]), rtol=1e-9)


def test_x0_adapter_tweedie(x64):
    weights, means, covs, exact = _exact()

    def denoiser(x, t):
        return jnp.asarray(
            _posterior_mean_np(np.asarray(x), float(t), weights, means, covs)
        )

    score_fn = score_from_x0(denoiser)
    for x in POINTS:
        for t in TIMES:
            np.testing.assert_allclose(score_fn(x, t), exact(x, t), rtol=1e-8)


def _ve_log_density(z, sigma, weights, means, covs):
    eye = jnp.eye(means.shape[-1])
    logs = jnp.log(weights) + jnp.array(
        [
            jax.scipy.stats.multivariate_normal.logpdf(z, m, c + sigma**2 * eye)
            for m, c in zip(means, covs, strict=True)
        ]
    )
    return jax.scipy.special.logsumexp(logs)


def test_ve_adapter(x64):
    weights, means, covs, exact = _exact()
    score_ve = jax.grad(lambda z, s: _ve_log_density(z, s, weights, means, covs))
    score_fn = score_from_ve(score_ve)
    for x in POINTS:
        for t in TIMES:
            np.testing.assert_allclose(score_fn(x, t), exact(x, t), rtol=1e-8)


def test_edm_adapter(x64):
    weights, means, covs, exact = _exact()

    def denoiser(z, sigma):  # E[X_0 | X_0 + sigma Z = z], componentwise
        # In VE the posterior mean is the OU one at alpha=1/sqrt(1+sigma^2).
        t = 0.5 * float(jnp.log1p(sigma**2))
        x = np.asarray(z) * np.exp(-t)
        return jnp.asarray(_posterior_mean_np(x, t, weights, means, covs))

    score_fn = score_from_edm_denoiser(denoiser)
    for x in POINTS:
        for t in TIMES:
            np.testing.assert_allclose(score_fn(x, t), exact(x, t), rtol=1e-7)


def test_float32_stays_float32_under_x64(x64):
    weights, means, covs, exact = _exact(np.float64)
    x = jnp.asarray(POINTS[1], jnp.float32)
    t = jnp.float32(0.3)
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    fns = [
        exact,
        gaussian_score(means[0], covs[0]),
        gaussian_score(means[0], 1.0),
        gaussian_mixture_score(weights, means, jnp.ones(3)),
        score_from_eps(zero, DiscreteVPSchedule(np.linspace(0.99, 0.01, 50))),
        score_from_eps(zero, LinearVPSchedule()),
        score_from_eps(zero, CosineVPSchedule()),
        score_from_x0(zero),
        score_from_ve(zero),
        score_from_edm_denoiser(zero),
    ]
    for fn in fns:
        assert fn(x, t).dtype == jnp.float32
        assert fn(x, 0.3).dtype == jnp.float32  # Python float t
    log_p = gaussian_mixture_log_density(weights, means, covs)
    assert log_p(x, t).dtype == jnp.float32
    # ... and float32 agrees with the float64 computation.
    np.testing.assert_allclose(exact(x, t), exact(POINTS[1], 0.3), rtol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="pass a scalar"):
        gaussian_score(jnp.zeros(3), jnp.ones(2))
    with pytest.raises(ValueError, match="at least one dimension"):
        gaussian_score(0.0, 1.0)
    with pytest.raises(ValueError, match="matching `weights`"):
        gaussian_mixture_score(jnp.ones(2), jnp.zeros((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="isotropic"):
        gaussian_mixture_score(jnp.ones(2), jnp.zeros((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="1-D"):
        gaussian_mixture_log_density(jnp.ones((2, 1)), jnp.zeros((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="jax.vmap"):
        gaussian_score(jnp.zeros(2), 1.0)(jnp.zeros((4, 2)), 0.5)


def test_schedule_validation():
    with pytest.raises(ValueError, match="drop a leading 1.0"):
        DiscreteVPSchedule(np.array([1.0, 0.9, 0.5]))
    with pytest.raises(ValueError, match="non-increasing"):
        DiscreteVPSchedule(np.array([0.5, 0.9]))
    with pytest.raises(ValueError, match="beta_min"):
        LinearVPSchedule(beta_min=5.0, beta_max=1.0)
    with pytest.raises(TypeError, match="schedule"):
        score_from_eps(lambda x, t: x, "linear")


def test_schedule_inversions(x64):
    t = jnp.array([1e-4, 0.1, 1.0, 4.0])
    linear = LinearVPSchedule()
    np.testing.assert_allclose(
        -0.5 * jnp.log(_linear_abar(linear.model_time(t))), t, rtol=1e-10
    )
    assert abs(float(linear.model_time(linear.max_ou_time)) - 1.0) < 1e-12
    cosine = CosineVPSchedule()
    np.testing.assert_allclose(
        -0.5 * jnp.log(_cosine_abar(cosine.model_time(t))), t, rtol=1e-9
    )
