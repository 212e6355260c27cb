"""ALMC-SMC: the score-only weight identity, mode weights and the evidence.

Statistical tolerances: a weight ``w`` estimated from weighted particles has
``SE = sqrt(w (1 - w) / ESS)`` with ``ESS = 1 / Σ W_i²`` of the final weights,
inflated by ``sqrt(2)`` for the correlations that resampling and the Langevin moves
leave between particles (the stated ESS-based inflation); we allow ``Z = 4`` such
SE per component, plus ``1 / N`` for hard assignment at weights near 0 or 1.
Seeds are fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_almc import (
    budget_schedule,
    linear_gaussian_preconditioner,
    noised_gaussian_likelihood,
    run_almc,
    run_almc_smc,
)
from numpyro_almc.scores import (
    gaussian_mixture_log_density,
    gaussian_mixture_score,
)
from numpyro_almc.smc import (
    gaussian_warm_start_log_normalizer,
    ou_log_density_time_derivative,
)
from numpyro_almc.testbeds import (
    bars_problem,
    conflict_problem,
    mixture_responsibilities,
)

NUM_PARTICLES = 1000
Z = 4.0
INFLATION = np.sqrt(2.0)


def _diag_covs(problem):
    return jnp.diagonal(problem.covs, axis1=-2, axis2=-1)


def _score_fn(problem):
    return gaussian_mixture_score(problem.weights, problem.means, _diag_covs(problem))


def _weighted_mode_weights(mixture, x, log_weights):
    assign = jnp.argmax(mixture_responsibilities(mixture, x), axis=-1)
    w = jnp.zeros(mixture.weights.shape[0]).at[assign].add(jnp.exp(log_weights))
    return np.asarray(w)


# ---------------------------------------------------------------------------
# (a) the identity ∂_t log p_t = d + x·s + ∇·s + |s|²
# ---------------------------------------------------------------------------


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


MIXTURE = dict(
    weights=np.array([0.2, 0.5, 0.3]),
    means=np.array([[-2.0, 1.0, 0.0], [1.5, -1.0, 2.0], [0.0, 3.0, -1.0]]),
    covs=np.array([[0.3, 1.0, 2.0], [1.0, 0.1, 0.5], [2.0, 2.0, 0.2]]),
)


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 2.5])
def test_time_derivative_identity_vs_finite_differences(x64, t):
    weights, means, covs = (jnp.asarray(v) for v in MIXTURE.values())
    log_p = gaussian_mixture_log_density(weights, means, covs)
    score = gaussian_mixture_score(weights, means, covs)
    xs = jax.random.normal(jax.random.key(0), (6, 3), dtype=jnp.float64) * 2.0
    h = 1e-5
    for x in xs:
        fd = float((log_p(x, t + h) - log_p(x, t - h)) / (2 * h))
        exact = ou_log_density_time_derivative(score, x, t)
        assert float(exact) == pytest.approx(fd, rel=1e-6, abs=1e-6)
        if t != 0.3:
            continue
        # Hutchinson is unbiased: the mean over many probes matches.
        hutch = ou_log_density_time_derivative(
            score,
            x,
            t,
            divergence="hutchinson",
            num_probes=20000,
            rng_key=jax.random.key(1),
        )
        assert float(hutch) == pytest.approx(fd, abs=0.05 * (1 + abs(fd)))


def test_identity_on_a_gaussian_and_dict_positions(x64):
    # p_t = N(0, v_t I) with v_0 = c: ∂_t log p = (1 - v)(|x|²/v² - d/v).
    c, t = 3.0, 0.4
    v = np.exp(-2 * t) * c + 1 - np.exp(-2 * t)
    x = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([[2.0]])}

    def score(pos, t):
        vt = jnp.exp(-2 * t) * c + 1 - jnp.exp(-2 * t)
        return jax.tree.map(lambda a: -a / vt, pos)

    sq = 0.25 + 1.0 + 4.0
    expected = (1 - v) * (sq / v**2 - 3 / v)
    got = ou_log_density_time_derivative(score, x, t)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_trapezoid_beats_right_point_on_a_mixture(x64):
    """Which quadrature of ∫ ∂_t log p_t dt along the schedule's grid is better."""
    weights, means, covs = (jnp.asarray(v) for v in MIXTURE.values())
    log_p = gaussian_mixture_log_density(weights, means, covs)
    score = gaussian_mixture_score(weights, means, covs)
    times = np.asarray(budget_schedule(100, dtype=jnp.float64).times)
    times = jnp.asarray(times[np.isfinite(times)])
    x = jnp.array([1.0, -0.5, 1.5])
    g = jax.vmap(lambda t: ou_log_density_time_derivative(score, x, t))(times)
    dt = jnp.diff(times)
    exact = log_p(x, times[-1]) - log_p(x, times[0])
    right = jnp.sum(dt * g[1:])
    trapezoid = 0.5 * (right + jnp.sum(dt * g[:-1]))
    assert abs(float(trapezoid - exact)) < 0.1 * abs(float(right - exact))


# ---------------------------------------------------------------------------
# (b) mode weights
# ---------------------------------------------------------------------------


def _conflict(dim):
    # σ_y = 2: the posterior weight of the rare prior mode (0.05) is 0.64, that of
    # μ_1 (t = 1) is 0.17: the weights change late, after the modes separate.
    return conflict_problem(dim=dim, noise_std=2.0)


def _run_both(problem, schedule, seed=0):
    pre = linear_gaussian_preconditioner(problem.A, problem.noise_std)
    score = _score_fn(problem)
    post = problem.posterior(float(schedule.early_stop_time))
    smc = run_almc_smc(
        jax.random.key(seed),
        problem.loglikelihood_fn,
        score,
        schedule,
        jnp.zeros(problem.dim),
        num_particles=NUM_PARTICLES,
        preconditioner=pre,
    )
    # The same moves with the weights switched off (never resampled, weights
    # ignored): plain ALMC's particle system.
    off = run_almc_smc(
        jax.random.key(seed),
        problem.loglikelihood_fn,
        score,
        schedule,
        jnp.zeros(problem.dim),
        num_particles=NUM_PARTICLES,
        preconditioner=pre,
        ess_threshold=0.0,
    )
    almc = run_almc(
        jax.random.key(seed),
        problem.loglikelihood_fn,
        score,
        schedule,
        jnp.zeros(problem.dim),
        num_chains=NUM_PARTICLES,
        preconditioner=pre,
    )
    uniform = jnp.full((NUM_PARTICLES,), -np.log(NUM_PARTICLES))
    w_smc = _weighted_mode_weights(post, smc.particles, smc.log_weights)
    w_off = _weighted_mode_weights(post, off.particles, uniform)
    w_almc = _weighted_mode_weights(post, almc.state.position, uniform)
    ess = float(1.0 / jnp.sum(jnp.exp(2 * smc.log_weights)))
    return np.asarray(post.weights), w_smc, w_off, w_almc, ess


def _tolerance(w, ess):
    return Z * INFLATION * np.sqrt(w * (1 - w) / ess) + 1.0 / NUM_PARTICLES


@pytest.mark.parametrize("dim", [2, 10])
def test_conflict_mode_weights(dim):
    problem = _conflict(dim)
    w, w_smc, w_off, w_almc, ess = _run_both(problem, budget_schedule(300))
    assert 0.5 < w[1] < 0.8 and problem.posterior(1.0).weights[1] < 0.3
    tol = _tolerance(w, ess)
    assert np.all(np.abs(w_smc - w) <= tol), (w_smc, w, tol)
    # Plain ALMC is measurably off: > 5 SE of an exact sampler with N draws.
    se_exact = np.sqrt(w[1] * (1 - w[1]) / NUM_PARTICLES)
    assert abs(w_almc[1] - w[1]) > 5 * se_exact, (w_almc, w)
    # Switching the weights off gives an error beyond the tolerance.
    assert np.any(np.abs(w_off - w) > tol), (w_off, w, tol)


def test_bars_mode_weights():
    problem = bars_problem()
    schedule = budget_schedule(300, step_size=0.1)
    w, w_smc, _, _, ess = _run_both(problem, schedule)
    tol = _tolerance(w, ess)
    # (Plain ALMC is within this tolerance on bars too: the weights-off check is
    # done on the conflict problems, where it is not.)
    assert np.all(np.abs(w_smc - w) <= tol), (w_smc, w, tol)


# ---------------------------------------------------------------------------
# (c) the evidence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem_fn, budget, step_size",
    [(lambda: _conflict(2), 500, 0.1), (bars_problem, 300, 0.05)],
    ids=["conflict", "bars"],
)
def test_log_evidence_within_reported_error(problem_fn, budget, step_size):
    problem = problem_fn()
    # A small step: the unadjusted Langevin moves bias the evidence by O(δ).
    schedule = budget_schedule(budget, step_size=step_size)
    tau = float(schedule.early_stop_time)
    exact = float(problem.log_evidence(tau))
    log_z_inf = gaussian_warm_start_log_normalizer(
        problem.A, problem.y, problem.noise_std
    )
    pre = linear_gaussian_preconditioner(problem.A, problem.noise_std)
    score = _score_fn(problem)
    inside = 0
    for seed in range(20):
        res = run_almc_smc(
            jax.random.key(seed),
            problem.loglikelihood_fn,
            score,
            schedule,
            jnp.zeros(problem.dim),
            num_particles=1000,
            preconditioner=pre,
            warm_start_log_normalizer=log_z_inf,
        )
        se = float(res.log_evidence_ratio_se)
        assert 0 < se < 0.3
        inside += abs(float(res.log_evidence) - exact) <= 2 * se
    assert inside >= 16, inside


def test_noised_likelihood_path_weights_and_evidence():
    # The path that anneals the likelihood too: the weights add the exact change
    # of log L_t, and the evidence is that of the path's own target at τ,
    # ∫ p_τ(x) N(y; e^τ A x, Σ_τ) dx (closed form for a mixture prior).
    problem = _conflict(2)
    lik = noised_gaussian_likelihood(problem.A, problem.y, problem.noise_std)
    schedule = budget_schedule(500, step_size=0.1)
    tau = float(schedule.early_stop_time)
    post = problem.noised_path_posterior(tau)
    exact = float(problem.noised_path_log_evidence(tau))
    w = np.asarray(post.weights)
    score = _score_fn(problem)
    inside = 0
    for seed in range(20):
        res = run_almc_smc(
            jax.random.key(seed),
            lik,
            score,
            schedule,
            jnp.zeros(problem.dim),
            num_particles=NUM_PARTICLES,
            preconditioner=lik.preconditioner,
        )
        se = float(res.log_evidence_ratio_se)
        assert 0 < se < 0.3
        inside += abs(float(res.log_evidence) - exact) <= 2 * se
        if seed == 0:
            w_smc = _weighted_mode_weights(post, res.particles, res.log_weights)
            ess = float(1.0 / jnp.sum(jnp.exp(2 * res.log_weights)))
            tol = _tolerance(w, ess)
            assert np.all(np.abs(w_smc - w) <= tol), (w_smc, w, tol)
    assert inside >= 16, inside


# ---------------------------------------------------------------------------
# API: dtypes, schemes, errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, resampling",
    [
        (jnp.float32, "systematic"),
        (jnp.float64, "multinomial"),
        (jnp.float32, "residual"),
    ],
)
def test_dtype_stable_under_x64(x64, dtype, resampling):
    problem = conflict_problem(dim=2)
    res = run_almc_smc(
        jax.random.key(0),
        lambda x: problem.loglikelihood_fn(x.astype(jnp.float32)).astype(x.dtype),
        lambda x, t: _score_fn(problem)(x, t).astype(x.dtype),
        budget_schedule(20, num_warm_start_steps=5, dtype=dtype),
        jnp.zeros(2, dtype=dtype),
        num_particles=8,
        preconditioner=linear_gaussian_preconditioner(
            problem.A.astype(dtype), problem.noise_std
        ),
        divergence="hutchinson",
        ess_threshold=1.0,
        resampling=resampling,
    )
    assert res.particles.dtype == dtype
    assert res.log_weights.dtype == dtype
    assert res.log_evidence_ratio.dtype == dtype
    assert res.state.num_resampling.dtype == jnp.int32
    assert int(jnp.sum(res.info.num_diverging)) == 0
    assert bool(jnp.any(res.resampled))  # threshold 1: (nearly) every step
    assert float(jax.scipy.special.logsumexp(res.log_weights)) == pytest.approx(0.0)


def test_bad_arguments_raise():
    problem = conflict_problem(dim=2)
    args = (
        jax.random.key(0),
        problem.loglikelihood_fn,
        _score_fn(problem),
        budget_schedule(10),
        jnp.zeros(2),
    )
    with pytest.raises(ValueError, match="resampling"):
        run_almc_smc(*args, num_particles=4, resampling="bogus")
    with pytest.raises(ValueError, match="divergence"):
        run_almc_smc(*args, num_particles=4, divergence="bogus")
    with pytest.raises(ValueError, match="ess_threshold"):
        run_almc_smc(*args, num_particles=4, ess_threshold=2.0)
    with pytest.raises(TypeError, match="num_particles"):
        run_almc_smc(*args, num_particles=4.0)
    with pytest.raises(TypeError, match="schedule"):
        run_almc_smc(args[0], args[1], args[2], None, args[4], num_particles=4)


@pytest.mark.arviz
def test_smc_result_exports_to_arviz():
    import numpyro_almc as na
    from numpyro_almc.testbeds import conflict_problem

    problem = conflict_problem(2, noise_std=2.0)
    res = na.run_almc_smc(
        jax.random.key(0),
        problem.loglikelihood_fn,
        problem.score_fn,
        na.budget_schedule(60),
        jnp.zeros(2),
        num_particles=128,
    )
    data = na.to_inference_data(res)
    assert data.posterior["x"].shape == (1, 128, 2)
    stats = data.sample_stats
    for name in ("log_weight", "final_ess", "min_ess", "num_resampling_events"):
        assert name in stats
    # resampled to equal weights, every draw is one of the particles
    np.testing.assert_allclose(np.exp(np.asarray(stats["log_weight"])), 1 / 128)
    particles = np.asarray(res.particles)
    drawn = np.asarray(data.posterior["x"])[0]
    assert all((np.abs(particles - d).sum(1) == 0).any() for d in drawn)
    assert len(data.attrs["ess_trace"]) == np.asarray(res.ess).shape[0]
    assert int(stats["num_resampling_events"][0, 0]) == len(
        data.attrs["resampling_steps"]
    )
    raw = na.to_inference_data(res, resample=False)
    np.testing.assert_allclose(
        np.asarray(raw.sample_stats["log_weight"])[0], np.asarray(res.log_weights)
    )


# ---------------------------------------------------------------------------
# The NumPyro ensemble kernel ALMCSMC
# ---------------------------------------------------------------------------


def _conflict_model(problem, score, with_theta):
    import numpyro
    import numpyro.distributions as dist

    from numpyro_almc import ScorePrior

    def model(y=None):
        x = numpyro.sample("x", ScorePrior(score, event_shape=(problem.dim,)))
        if with_theta:
            # A site that the data do not inform: it takes the MALA step and must
            # leave the signal's weights alone.
            numpyro.sample("u", dist.Normal(0.0, 1.0))
        numpyro.sample(
            "y", dist.Normal(problem.A @ x, problem.noise_std).to_event(1), obs=y
        )

    return model


@pytest.mark.arviz
@pytest.mark.parametrize("with_theta", [False, True])
def test_numpyro_ensemble_kernel_mode_weights(with_theta):
    import arviz as az
    from numpyro.infer import MCMC

    from numpyro_almc import ALMC, ALMCSMC

    problem = _conflict(2)
    model = _conflict_model(problem, _score_fn(problem), with_theta)
    num_warmup = 300
    post = problem.posterior(float(budget_schedule(num_warmup).early_stop_time))
    w = np.asarray(post.weights)

    def mcmc_of(kernel):
        return MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=2,
            num_chains=NUM_PARTICLES,
            chain_method="vectorized",
            progress_bar=False,
        )

    # The paper's path: its target at τ is the exact p_τ e^{-R} of `post`.
    smc = mcmc_of(ALMCSMC(model, likelihood_path="paper"))
    # The path alone (collecting its ESS trace), then the sampling phase: the
    # split NumPyro offers must work for an ensemble kernel.
    smc.warmup(
        jax.random.key(3),
        y=problem.y,
        extra_fields=("ess", "resampled"),
        collect_warmup=True,
    )
    path = smc.get_extra_fields(group_by_chain=True)
    assert path["ess"].shape == (NUM_PARTICLES, num_warmup)
    assert bool(path["resampled"][0, num_warmup - 1])  # the final resampling
    # ESS of the last reweighting, before the final resampling to equal weights.
    ess = float(path["ess"][0, num_warmup - 1])
    smc.run(jax.random.key(4), y=problem.y)
    x = smc.get_samples(group_by_chain=True)["x"][:, -1]
    uniform = jnp.full((NUM_PARTICLES,), -np.log(NUM_PARTICLES))
    w_smc = _weighted_mode_weights(post, x, uniform)
    tol = _tolerance(w, ess)
    assert np.all(np.abs(w_smc - w) <= tol), (w_smc, w, tol)
    assert bool(jnp.all(smc.last_state.log_weight == uniform[0]))
    log_ratio, se = smc.sampler.log_evidence_ratio(smc.last_state)
    assert np.isfinite(float(log_ratio)) and float(se) >= 0

    idata = az.from_numpyro(smc)
    assert idata.posterior["x"].shape[:2] == (NUM_PARTICLES, 2)
    if with_theta:
        return
    # Plain ALMC, the same model and budget, is measurably off.
    plain = mcmc_of(ALMC(model))
    plain.run(jax.random.key(3), y=problem.y)
    x_plain = plain.get_samples(group_by_chain=True)["x"][:, -1]
    w_plain = _weighted_mode_weights(post, x_plain, uniform)
    se_exact = np.sqrt(w[1] * (1 - w[1]) / NUM_PARTICLES)
    assert abs(w_plain[1] - w[1]) > 5 * se_exact, (w_plain, w)


def test_numpyro_ensemble_kernel_needs_vectorized_chains():
    from numpyro.infer import MCMC

    from numpyro_almc import ALMCSMC

    problem = _conflict(2)
    model = _conflict_model(problem, _score_fn(problem), False)
    mcmc = MCMC(ALMCSMC(model), num_warmup=20, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="chain_method='vectorized'"):
        mcmc.run(jax.random.key(0), y=problem.y)
    with pytest.raises(ValueError, match="ess_threshold"):
        ALMCSMC(model, ess_threshold=2.0)
    with pytest.raises(ValueError, match="divergence"):
        ALMCSMC(model, divergence="approx")
