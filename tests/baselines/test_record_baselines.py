"""MCGdiff and TDS (``numpyro_almc.baselines.mcgdiff`` / ``.tds``) against exact
posteriors: moments, log-evidence and mode weights within Monte Carlo tolerances,
exact network-pass counts, and argument checks."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_almc.baselines.mcgdiff import mcgdiff
from numpyro_almc.baselines.tds import tds
from numpyro_almc.testbeds import (
    gaussian_problem,
    mixture_problem,
    mixture_responsibilities,
)

Z = 4.5  # z-score of every Monte Carlo tolerance below


def _gaussian():
    """d = 3, d_y = 2, a correlated prior and a generic A: nothing diagonal."""
    rng = np.random.default_rng(0)
    root = rng.normal(size=(3, 3))
    cov = root @ root.T / 3 + 0.3 * np.eye(3)
    A = rng.normal(size=(2, 3))
    y = np.array([0.7, -1.2])
    return gaussian_problem(jnp.array([0.5, -0.3, 1.0]), cov, A, y, 0.4)


GAUSSIAN = _gaussian()
# Mode 2 has prior weight 0.2, posterior weight ≈ 0.63: the data favour it.
MIXTURE = mixture_problem(
    jnp.array([0.8, 0.2]),
    jnp.array([[-3.0, 0.0], [3.0, 0.0]]),
    jnp.ones(2),
    jnp.array([[1.0, 0.0]]),
    jnp.array([0.4]),
    0.5,
)


def _run(name, problem, key, num_steps, num_particles):
    if name == "mcgdiff":
        return mcgdiff(
            key, problem.score_fn, problem.A, problem.y, problem.noise_std,
            num_particles=num_particles, num_steps=num_steps,
        )  # fmt: skip
    return tds(
        key, problem.score_fn, (problem.A, problem.y, problem.noise_std),
        num_particles=num_particles, num_steps=num_steps,
    )  # fmt: skip


def _weighted_moments(res):
    w = np.exp(np.asarray(res.log_weights, np.float64))
    x = np.asarray(res.particles, np.float64)
    mean = w @ x
    centred = x - mean
    return mean, (w[:, None] * centred).T @ centred


# MCGdiff's weights vary more (its guides ignore the prior; module docstring), so it
# gets more steps; both use the default grid T = 5 → 1e-3.
STEPS = {"mcgdiff": 300, "tds": 150}
NUM_REPLICATES = 8


def _replicates(name, problem, statistic, seed=0):
    """``statistic(result)`` over independent runs: (mean, its standard error).

    The SE comes from the spread between runs, not from an ESS: after resampling
    the final weights can be uniform while the particles share few ancestors, so no
    single run's ESS measures its error."""
    values = np.array([
        statistic(_run(name, problem, jax.random.key(seed + r), STEPS[name], 1000))
        for r in range(NUM_REPLICATES)
    ])  # fmt: skip
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(NUM_REPLICATES)


@pytest.mark.parametrize("name", ["mcgdiff", "tds"])
def test_gaussian_posterior_moments(name):
    post = GAUSSIAN.posterior()
    mean_exact = np.asarray(post.means[0], np.float64)
    cov_exact = np.asarray(post.covs[0], np.float64)
    iu = np.triu_indices(3)

    def statistic(res):
        assert res.ess.shape == (STEPS[name] + 1,)
        assert int(res.num_nonfinite) == 0
        mean, cov = _weighted_moments(res)
        return np.concatenate([mean, cov[iu]])

    estimate, se = _replicates(name, GAUSSIAN, statistic)
    exact = np.concatenate([mean_exact, cov_exact[iu]])
    # z = 4.5 on every mean and covariance entry (SE from 8 runs of 1000).
    np.testing.assert_array_less(np.abs(estimate - exact), Z * se)


@pytest.mark.parametrize("name", ["mcgdiff", "tds"])
def test_gaussian_log_evidence(name):
    """Within 3 reported SEs of log N(y; A m, A C Aᵀ + σ² I) in 3 of 4 runs.

    The SE covers the Monte Carlo error only, not the bias of the DDPM kernel
    (its variance misses c_x0² Cov[X_0 | X_t] per step): that bias is O(1 / steps)
    (≈ +0.02 nats for TDS at 150 steps here), so these runs take 4× the steps of
    the moment test and a quarter of the particles (the same cost, SE × 2)."""
    exact_log_z = float(GAUSSIAN.log_evidence())
    hits = 0
    for seed in range(4):
        res = _run(name, GAUSSIAN, jax.random.key(seed), 4 * STEPS[name], 500)
        se = float(res.log_evidence_se)
        assert 0 < se < 0.5, se  # informative
        hits += abs(float(res.log_evidence) - exact_log_z) < 3 * se
    assert hits >= 3, hits


@pytest.mark.parametrize("name", ["mcgdiff", "tds"])
def test_mixture_mode_weights(name):
    post = MIXTURE.posterior()
    exact = float(post.weights[1])
    assert 0.55 < exact < 0.7  # the rare prior mode dominates the posterior

    def statistic(res):
        # E_post[r_2(x)] is exactly the posterior weight of mode 2 (soft assignment).
        w = np.exp(np.asarray(res.log_weights, np.float64))
        resp = np.asarray(mixture_responsibilities(post, res.particles), np.float64)
        return w @ resp[:, 1]

    estimate, se = _replicates(name, MIXTURE, statistic, seed=11)
    assert abs(estimate - exact) < Z * se, (estimate, exact, se)


# ---------------------------------------------------------------------------
# Network passes: count the network's forward and backward calls in the program
# ---------------------------------------------------------------------------


def _counted(score_fn):
    """``score_fn`` whose forward and backward passes show up in the jaxpr as calls
    named ``net_fwd`` / ``net_bwd``."""

    def net_fwd(x, t):
        return score_fn(x, t)

    forward = jax.jit(net_fwd)  # a `pjit` equation named net_fwd in the jaxpr

    @jax.custom_vjp
    def score(x, t):
        return forward(x, t)

    def fwd(x, t):
        return forward(x, t), (x, t)

    def bwd(res, g):
        x, t = res

        def net_bwd(x, t, g):
            return jax.vjp(lambda x: score_fn(x, t), x)[1](g)[0]

        return jax.jit(net_bwd)(x, t, g), None

    score.defvjp(fwd, bwd)
    return score


def _sub_jaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def _count_calls(jaxpr, times=1):
    """Calls of ``net_fwd`` / ``net_bwd`` per particle (vmap does not multiply),
    each weighted by the lengths of the scans around it."""
    counts = collections.Counter()
    for eqn in jaxpr.eqns:
        name = eqn.params.get("name")
        if name in ("net_fwd", "net_bwd"):
            counts[name] += times
            continue
        inner = times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                counts += _count_calls(sub, inner)
    return counts


@pytest.mark.parametrize("num_steps", [1, 7])
def test_network_passes_are_counted_exactly(num_steps):
    score = _counted(GAUSSIAN.score_fn)
    A, y, noise = GAUSSIAN.A, GAUSSIAN.y, GAUSSIAN.noise_std

    def run_mcgdiff(key):
        return mcgdiff(key, score, A, y, noise, num_particles=4, num_steps=num_steps)

    def run_tds(key):
        return tds(key, score, (A, y, noise), num_particles=4, num_steps=num_steps)

    for run, forward, backward in (
        (run_mcgdiff, num_steps, 0),
        (run_tds, num_steps, num_steps),
    ):
        reported = []

        def traced(key, run=run, reported=reported):
            res = run(key)
            reported.append(res.num_network_passes)
            return res.particles

        # Traced only (nothing compiled or run).
        counts = _count_calls(jax.make_jaxpr(traced)(jax.random.key(0)).jaxpr)
        assert counts["net_fwd"] == forward
        assert counts["net_bwd"] == backward
        # A VJP counts as one pass beyond the forward one (the dps convention).
        assert reported == [forward + backward]


def test_tds_general_loglikelihood():
    """A callable log-likelihood (twist log p(y | x̂_0)) targets the same posterior.

    That twist ignores the spread of X_0 given X_t, so it is overconfident for a
    sharp likelihood and its weights are then heavy-tailed (at noise 0.4 here the
    ESS misjudges the error); the check uses a broad likelihood, where it is sound.
    """
    problem = gaussian_problem(
        GAUSSIAN.means[0], GAUSSIAN.covs[0], GAUSSIAN.A, GAUSSIAN.y, 2.0
    )
    post = problem.posterior()
    res = tds(
        jax.random.key(3), problem.score_fn, problem.loglikelihood_fn,
        jnp.zeros(3), num_particles=1000, num_steps=STEPS["tds"],
    )  # fmt: skip
    mean, _ = _weighted_moments(res)
    # One run: the ESS-based tolerance, with the smallest ESS along the run (the
    # system never holds more information than at its narrowest point).
    w = np.exp(np.asarray(res.log_weights, np.float64))
    ess = min(1.0 / np.sum(w**2), float(np.min(np.asarray(res.ess))))
    sd = np.sqrt(np.diag(np.asarray(post.covs[0])))
    np.testing.assert_array_less(
        np.abs(mean - np.asarray(post.means[0])), Z * sd / np.sqrt(ess)
    )
    # Evidence with 4× the steps (see test_gaussian_log_evidence).
    res = tds(
        jax.random.key(4), problem.score_fn, problem.loglikelihood_fn,
        jnp.zeros(3), num_particles=500, num_steps=4 * STEPS["tds"],
    )  # fmt: skip
    se = float(res.log_evidence_se)
    assert 0 < se < 0.5
    assert abs(float(res.log_evidence) - float(problem.log_evidence())) < 3 * se


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _score(x, t):
    return -x


A2 = jnp.array([[1.0, 0.0]])
Y1 = jnp.array([1.0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_particles=1), ValueError, "num_particles"),
        (dict(num_particles=8.0), TypeError, "integer"),
        (dict(num_steps=0), ValueError, "num_steps"),
        (dict(initial_time=0.01, final_time=1.0), ValueError, "initial_time >"),
        (dict(ess_threshold=1.5), ValueError, "ess_threshold"),
        (dict(resampling="best"), ValueError, "resampling"),
    ],
)
def test_bad_knobs_raise(kwargs, error, match):
    base = dict(num_particles=8, num_steps=3)
    with pytest.raises(error, match=match):
        mcgdiff(jax.random.key(0), _score, A2, Y1, 0.5, **{**base, **kwargs})
    with pytest.raises(error, match=match):
        tds(jax.random.key(0), _score, (A2, Y1, 0.5), **{**base, **kwargs})


def test_bad_problems_raise():
    key, kw = jax.random.key(0), dict(num_particles=8, num_steps=3)
    with pytest.raises(TypeError, match="score_fn"):
        mcgdiff(key, "not a function", A2, Y1, 0.5, **kw)
    with pytest.raises(ValueError, match="2-D"):
        mcgdiff(key, _score, jnp.ones(2), Y1, 0.5, **kw)
    with pytest.raises(ValueError, match=r"`y` must have shape \(1,\)"):
        mcgdiff(key, _score, A2, jnp.ones(2), 0.5, **kw)
    with pytest.raises(ValueError, match="noise_std` must be finite and > 0"):
        mcgdiff(key, _score, A2, Y1, 0.0, **kw)
    with pytest.raises(ValueError, match="scalar"):
        tds(key, _score, (A2, Y1, jnp.ones(1)), **kw)
    with pytest.raises(TypeError, match="callable x -> log p"):
        tds(key, _score, {"A": A2}, **kw)
    with pytest.raises(TypeError, match="pass `position`"):
        tds(key, _score, lambda x: -jnp.sum(x**2), **kw)
    with pytest.raises(TypeError, match="floating"):
        tds(key, _score, lambda x: -jnp.sum(x**2), jnp.zeros(2, jnp.int32), **kw)
    with pytest.raises(ValueError, match="acts on shape"):
        tds(key, _score, (A2, Y1, 0.5), jnp.zeros(3), **kw)
