"""Reverse-diffusion prior sampling against an exact Gaussian-mixture prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal

from numpyro_almc.scores.prior_sampling import sample_prior

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[-2.5, 0.0], [2.5, 0.0], [0.0, 3.0]])
COVS = np.array(
    [
        [[0.3, 0.0], [0.0, 0.5]],
        [[0.5, 0.2], [0.2, 0.4]],
        [[0.25, 0.0], [0.0, 0.25]],
    ]
)


def mixture_log_density(x, t):
    """log p_t(x) of the OU-noised mixture:
    p_t = sum_k w_k N(e^{-t} m_k, e^{-2t} C_k + sigma_t^2 I)."""
    decay = jnp.exp(-t)
    sigma2 = -jnp.expm1(-2.0 * t)
    eye = jnp.eye(2, dtype=x.dtype)
    logps = jnp.stack(
        [
            jnp.log(w)
            + multivariate_normal.logpdf(x, decay * m, decay**2 * c + sigma2 * eye)
            for w, m, c in zip(
                WEIGHTS, MEANS.astype(np.float32), COVS.astype(np.float32), strict=True
            )
        ]
    )
    return logsumexp(logps)


def mixture_score(x, t):
    return jax.grad(mixture_log_density)(x, t)


def exact_moments():
    mean = WEIGHTS @ MEANS
    second = sum(
        w * (c + np.outer(m, m)) for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True)
    )
    return mean, np.diag(second - np.outer(mean, mean))


def test_mixture_moments_and_mode_weights():
    n = 4000
    draws = sample_prior(jax.random.key(0), mixture_score, (2,), n, num_steps=1000)
    draws = np.asarray(draws, np.float64)
    assert np.all(np.isfinite(draws))

    mean, var = exact_moments()
    sample_mean = draws.mean(0)
    sample_var = draws.var(0, ddof=1)
    # Monte Carlo standard errors of the mean and of the variance.
    se_mean = np.sqrt(var / n)
    centred = draws - sample_mean
    se_var = np.sqrt((np.mean(centred**4, 0) - sample_var**2) / n)
    # 4 standard errors; the first-order sampler's bias at 1000 steps is far smaller.
    np.testing.assert_array_less(np.abs(sample_mean - mean), 4 * se_mean)
    np.testing.assert_array_less(np.abs(sample_var - var), 4 * se_var)

    # Mode weights: assign each draw to the component of highest responsibility.
    log_resp = np.stack(
        [
            np.log(w) + np.asarray(multivariate_normal.logpdf(jnp.asarray(draws), m, c))
            for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True)
        ],
        axis=1,
    )
    freq = np.bincount(log_resp.argmax(1), minlength=3) / n
    se_freq = np.sqrt(WEIGHTS * (1 - WEIGHTS) / n)
    # The components overlap by < 1e-3 in probability, negligible against 4 SE.
    np.testing.assert_array_less(np.abs(freq - WEIGHTS), 4 * se_freq)


def test_standard_normal_is_fixed_point():
    # p_0 = N(0, I) gives p_t = N(0, I) for every t: the score is -x.
    draws = sample_prior(jax.random.key(1), lambda x, t: -x, (3,), 4000, num_steps=50)
    draws = np.asarray(draws)
    n = draws.shape[0]
    np.testing.assert_array_less(np.abs(draws.mean(0)), 4 / np.sqrt(n))
    np.testing.assert_array_less(np.abs(draws.var(0) - 1), 4 * np.sqrt(2 / n))


@pytest.mark.parametrize("denoise", [True, False])
def test_shapes_and_dtype(denoise):
    key = jax.random.key(2)
    one = sample_prior(key, mixture_score, (2,), num_steps=10, denoise=denoise)
    assert one.shape == (2,) and one.dtype == jnp.float32
    many = sample_prior(key, mixture_score, (2,), 7, num_steps=10, denoise=denoise)
    assert many.shape == (7, 2) and many.dtype == jnp.float32
    mat = sample_prior(key, lambda x, t: -x, (2, 3), 4, num_steps=5)
    assert mat.shape == (4, 2, 3) and mat.dtype == jnp.float32
    raw_key = sample_prior(jax.random.PRNGKey(0), lambda x, t: -x, (2,), 3, num_steps=5)
    assert raw_key.shape == (3, 2)


def test_score_of_other_dtype_is_cast_back():
    # A score that returns another dtype is cast back, so the scan carry is stable.
    def score16(x, t):
        return (-x).astype(jnp.float16)

    draws = sample_prior(jax.random.key(3), score16, (2,), 3, num_steps=5)
    assert draws.dtype == jnp.float32


def test_pytree_score_fn_is_traced_not_baked():
    # A callable pytree (here a registered dataclass-like partial) works and shares the
    # compiled program across instances with equal structure.
    scale = jnp.asarray(1.0, jnp.float32)
    score = jax.tree_util.Partial(lambda s, x, t: -s * x, scale)
    a = sample_prior(jax.random.key(4), score, (2,), 3, num_steps=5)
    b = sample_prior(
        jax.random.key(4),
        jax.tree_util.Partial(score.func, scale),
        (2,),
        3,
        num_steps=5,
    )
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(score_fn=3), TypeError, "score_fn must be a callable"),
        (dict(event_shape=(2.5,)), TypeError, "event_shape must be a tuple of ints"),
        (dict(event_shape=(-1,)), ValueError, "non-negative"),
        (dict(num_samples=0), ValueError, "num_samples must be a positive int"),
        (dict(num_samples=2.0), TypeError, "num_samples must be a positive int"),
        (dict(num_steps=0), ValueError, "num_steps must be a positive int"),
        (dict(num_steps=1.5), TypeError, "num_steps must be a positive int"),
        (dict(final_time=0.0), ValueError, "final_time must be a finite positive"),
        (dict(initial_time=1e-4), ValueError, "initial_time must be finite and larger"),
        (dict(dtype=jnp.int32), ValueError, "dtype must be a floating dtype"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    args = (
        dict(rng_key=jax.random.key(0), score_fn=mixture_score, event_shape=(2,))
        | kwargs
    )
    with pytest.raises(error, match=match):
        sample_prior(**args)
