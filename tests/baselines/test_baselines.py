"""Baselines (DPS, fixed-t Langevin, Song & Ermon annealed Langevin) on a Gaussian
prior with a linear-Gaussian likelihood, where the posterior is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_almc import linear_gaussian_preconditioner
from numpyro_almc.baselines import (
    annealed_langevin,
    annealed_langevin_schedule,
    dps,
    langevin,
)
from numpyro_almc.scores import gaussian_score
from numpyro_almc.testbeds import gaussian_problem, mixture_cov, mixture_mean

PROBLEM = gaussian_problem(
    jnp.array([1.0, -0.5]),
    jnp.array([[1.0, 0.3], [0.3, 0.5]]),
    jnp.array([[1.0, 1.0]]),
    jnp.array([2.0]),
    0.5,
)
SCORE = gaussian_score(PROBLEM.means[0], PROBLEM.covs[0])
LOGLIK = PROBLEM.loglikelihood_fn
NUM = 2000


def _residual_loglik(x):
    # The Gaussian log-likelihood without its constant: DPS's normalised step is then
    # exactly ζ'/||y - A x0_hat|| (see the dps docstring).
    r = PROBLEM.y - PROBLEM.A @ x
    return -0.5 * jnp.sum(r**2) / PROBLEM.noise_std**2


def _zero_loglik(x):
    return 0.0 * jnp.sum(x)


# Bias allowances (per coordinate, absolute; posterior sds are 0.53 and 0.48),
# measured at these settings with 4000 draws: DPS |bias| ≈ (0.15, 0.02) (DPS is
# biased even for Gaussians: p(y | x_t) ≈ p(y | x0_hat) and the ancestral step's
# variance deficit); Langevin ≈ (0.01, 0.01) (O(h) + O(t)); Song–Ermon with the
# preconditioner ≈ (0.03, 0.02).
CASES = {
    "dps": (
        lambda key, n: dps(
            key, SCORE, _residual_loglik, jnp.zeros(2), num_samples=n,
            num_steps=100, guidance_scale=0.2,
        ),
        0.25,
    ),
    "langevin": (
        lambda key, n: langevin(
            key, SCORE, LOGLIK, jnp.zeros(2), num_samples=n, num_steps=300,
            step_size=0.05, time=0.01,
        ),
        0.05,
    ),
    "annealed_langevin": (
        lambda key, n: annealed_langevin(
            key, SCORE, LOGLIK, jnp.zeros(2), num_samples=n, num_levels=10,
            steps_per_level=30, step_size=0.01,
            preconditioner=linear_gaussian_preconditioner(
                PROBLEM.A, PROBLEM.noise_std
            ),
        ),
        0.08,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_mean_close_to_exact_posterior(name):
    run, bias = CASES[name]
    x = np.asarray(run(jax.random.key(0), NUM), np.float64)
    post = PROBLEM.posterior()
    mean = np.asarray(mixture_mean(post))
    sd = np.sqrt(np.diag(np.asarray(mixture_cov(post))))
    # 4 MC standard errors (sample sd, which DPS may inflate) + measured bias.
    tol = 4 * np.maximum(x.std(0), sd) / np.sqrt(NUM) + bias
    assert np.all(np.isfinite(x))
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), tol)
    # ... and it is not the prior (whose first coordinate has mean 1.0).
    assert abs(x.mean(0)[0] - 1.0) > 0.5


@pytest.mark.parametrize("name", sorted(CASES))
def test_determinism_and_sample_independence(name):
    run, _ = CASES[name]
    a = np.asarray(run(jax.random.key(3), 8))
    b = np.asarray(run(jax.random.key(3), 8))
    c = np.asarray(run(jax.random.key(4), 8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert len(np.unique(a[:, 0])) == 8  # draws differ from each other
    # Sample c depends on fold_in(key, c) only, not on how many run beside it.
    d = np.asarray(run(jax.random.key(3), 5))
    np.testing.assert_allclose(a[:5], d, rtol=1e-5, atol=1e-5)


def _run_all(position, n=3):
    key = jax.random.key(0)

    def score(x, t):
        return -x

    return [
        dps(key, score, _zero_loglik, position, num_samples=n, num_steps=4,
            guidance_scale=0.1),
        langevin(key, score, _zero_loglik, position, num_samples=n, num_steps=4,
                 step_size=0.1),
        annealed_langevin(key, score, _zero_loglik, position, num_samples=n,
                          num_levels=2, steps_per_level=2, step_size=0.01),
    ]  # fmt: skip


def test_shapes_and_dtypes_preserved_under_x64():
    for out in _run_all(jnp.zeros((2, 3))):
        assert out.shape == (3, 2, 3) and out.dtype == jnp.float32
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            for out in _run_all(jnp.zeros(4, dtype)):
                assert out.shape == (3, 4) and out.dtype == dtype


def test_annealed_langevin_schedule_follows_song_ermon():
    s = annealed_langevin_schedule(5, 3, 0.01, 3.0, 0.01)
    assert s.num_steps == 15 and s.num_score_evals == 16
    times = np.asarray(s.times, np.float64)
    levels = times[:-1:3]
    assert np.all(np.diff(levels) < 0) and np.isclose(times[-1], 0.01)
    sigma_ve = np.sqrt(np.expm1(2 * levels))  # geometric VE noise levels
    ratios = sigma_ve[1:] / sigma_ve[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
    # OU step = ε σ_i²/σ_L² · e^{-2 t_i} (VE step α_i converted), last = ε e^{-2 t_L}.
    steps = np.asarray(s.step_sizes, np.float64)[::3]
    expected = 0.01 * sigma_ve**2 / sigma_ve[-1] ** 2 * np.exp(-2 * levels)
    np.testing.assert_allclose(steps, expected, rtol=1e-4)


BAD = [
    (dps, dict(num_samples=0, num_steps=5, guidance_scale=1.0), "num_samples"),
    (dps, dict(num_samples=2, num_steps=0, guidance_scale=1.0), "num_steps"),
    (dps, dict(num_samples=2, num_steps=5, guidance_scale=-1.0), "guidance_scale"),
    (dps, dict(num_samples=2, num_steps=5, guidance_scale=float("nan")),
     "guidance_scale"),
    (dps, dict(num_samples=2, num_steps=5, guidance_scale=1.0, initial_time=0.1,
               final_time=0.5), "initial_time > final_time"),
    (dps, dict(num_samples=2, num_steps=5, guidance_scale=1.0, final_time=0.0),
     "final_time"),
    (langevin, dict(num_samples=2, num_steps=5, step_size=0.0), "step_size"),
    (langevin, dict(num_samples=2, num_steps=5, step_size=0.1, time=-1.0), "time"),
    (annealed_langevin, dict(num_samples=2, num_levels=0, steps_per_level=2,
                             step_size=0.1), "num_levels"),
    (annealed_langevin, dict(num_samples=2, num_levels=3, steps_per_level=0,
                             step_size=0.1), "steps_per_level"),
    (annealed_langevin, dict(num_samples=2, num_levels=3, steps_per_level=2,
                             step_size=float("inf")), "step_size"),
]  # fmt: skip


@pytest.mark.parametrize("fn, kwargs, match", BAD)
def test_bad_arguments_raise(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(jax.random.key(0), SCORE, LOGLIK, jnp.zeros(2), **kwargs)


def test_bad_types_raise():
    with pytest.raises(TypeError, match="integer"):
        dps(jax.random.key(0), SCORE, LOGLIK, jnp.zeros(2), num_samples=2.0,
            num_steps=5, guidance_scale=1.0)  # fmt: skip
    with pytest.raises(TypeError, match="floating"):
        langevin(jax.random.key(0), SCORE, LOGLIK, jnp.zeros(2, jnp.int32),
                 num_samples=2, num_steps=5, step_size=0.1)  # fmt: skip
    with pytest.raises(TypeError, match="callables"):
        annealed_langevin(jax.random.key(0), None, LOGLIK, jnp.zeros(2),
                          num_samples=2, num_levels=2, steps_per_level=2,
                          step_size=0.1)  # fmt: skip


def test_numeric_knobs_may_be_traced():
    # Sweeping the main knob under vmap/jit: one compile, same draws as eager calls.
    def run(g, h, eps):
        key = jax.random.key(1)
        return (
            dps(key, SCORE, LOGLIK, jnp.zeros(2), num_samples=4, num_steps=5,
                guidance_scale=g),
            langevin(key, SCORE, LOGLIK, jnp.zeros(2), num_samples=4, num_steps=5,
                     step_size=h),
            annealed_langevin(key, SCORE, LOGLIK, jnp.zeros(2), num_samples=4,
                              num_levels=2, steps_per_level=2, step_size=eps),
        )  # fmt: skip

    knobs = (jnp.array([0.01, 0.02]), jnp.array([0.05, 0.1]), jnp.array([1e-3, 2e-3]))
    swept = jax.jit(jax.vmap(run))(*knobs)
    eager = run(0.02, 0.1, 2e-3)
    for a, b in zip(swept, eager, strict=True):
        assert a.shape == (2, 4, 2)
        np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-5)
