"""The final stage carries draws of μ_τ to μ_0: exact Gaussian and mixture
posteriors, every front end, and clear errors where it does not apply."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from gaussian_exact import assert_moments, gaussian_posterior, gaussian_prior
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc import testbeds as tb
from numpyro_almc.mcmc import FinalStage, finish
from numpyro_almc.run.chains import FINISH_KEYS, offset_keys, run_keys

# A stiff problem: posterior sd ≈ 0.1, while the OU noise left at τ has variance
# σ_τ² ≈ 0.006: μ_τ is 60 % too wide. (At larger τ the noised path's own
# flat-prior approximation of p(y | x_t) shows at this Monte Carlo precision.)
MEAN = np.array([0.5, -1.0, 0.2])
COV = np.array([[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.6]])
A = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, -0.3, 1.0]])
Y = np.array([0.8, -0.6, 0.1])
NOISE = 0.1
TAU = 0.003
SCORE = gaussian_prior(MEAN, COV)
LIK = na.noised_gaussian_likelihood(
    jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32), NOISE
)


A32, Y32 = jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32)


def model(y=None):
    x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=(3,)))
    numpyro.sample("y", dist.Normal(A32 @ x, NOISE).to_event(1), obs=y)


def finished(problem, lik, n, stage=None):
    """Exact draws of the noised path's target at τ, and the same carried to 0."""
    x_tau = tb.mixture_sample(jax.random.key(0), problem.noised_path_posterior(TAU), n)
    states = jax.vmap(lambda x: na.mcmc.init(x, lik, problem.score_fn, TAU))(x_tau)
    keys = jax.random.split(jax.random.key(1), n)
    x0, bad = jax.jit(
        jax.vmap(lambda k, s: finish(k, s, lik, problem.score_fn, stage))
    )(keys, states)
    assert not bool(bad.any())
    return x_tau, x0


def test_final_stage_draws_the_gaussian_posterior():
    """Exact draws of μ_τ carried to 0 match μ_0's moments within Monte Carlo
    error (z = 4.5); the draws at τ do not."""
    problem = tb.gaussian_problem(
        *(np.asarray(v, np.float32) for v in (MEAN, COV, A, Y)), NOISE
    )
    x_tau, x0 = finished(problem, LIK, 4000)
    mean, cov = gaussian_posterior(MEAN, COV, A, Y, NOISE)
    assert_moments(x0, mean, cov)
    with pytest.raises(AssertionError):
        assert_moments(x_tau, mean, cov)


def test_first_order_stage_without_the_exact_likelihood_step_is_worse():
    """A likelihood without ``gaussian_update`` gets the plain ancestral step
    with the likelihood in the drift: on this stiff problem it under-disperses
    (the reason the noised likelihoods take their exact Gaussian step)."""
    problem = tb.gaussian_problem(
        *(np.asarray(v, np.float32) for v in (MEAN, COV, A, Y)), NOISE
    )

    class Plain:
        time_dependent = True

        def __call__(self, x, t):
            return LIK(x, t)

    _, x0 = finished(problem, Plain(), 4000, FinalStage(num_steps=8))
    _, cov = gaussian_posterior(MEAN, COV, A, Y, NOISE)
    ratio = np.diag(np.cov(np.asarray(x0, np.float64).T)) / np.diag(cov)
    assert np.all(ratio < 1 - 4.5 * np.sqrt(2 / 4000)), ratio


def test_final_stage_of_exact_noised_draws_on_a_mixture():
    """Exact draws of the noised path's target at τ (a two-mode mixture),
    carried to 0: mean, covariance, the variance along the observed direction and
    the mode weights of μ_0 within Monte Carlo error; at τ that variance is
    several times too large."""
    problem = tb.mixture_problem(
        jnp.array([0.5, 0.5]),
        jnp.array([[-1.0, 0.0], [1.5, 0.5]]),
        jnp.array([0.3, 0.4]),
        jnp.array([[1.0, 1.0]]),
        jnp.array([0.6]),
        0.05,
    )
    lik = na.noised_gaussian_likelihood(problem.A, problem.y, problem.noise_std)
    n = 20000
    x_tau, x0 = finished(problem, lik, n)
    post = problem.posterior()
    mean = np.asarray(tb.mixture_mean(post), np.float64)
    cov = np.asarray(tb.mixture_cov(post), np.float64)
    assert_moments(x0, mean, cov)
    # Along the observed direction the posterior is tight (sd ≈ 0.035) and the
    # noise left at τ (sd ≈ 0.08) dominates μ_τ.
    u = np.array([1.0, 1.0]) / np.sqrt(2)
    want = u @ cov @ u
    tol = 4.5 * want * np.sqrt(2 / n)
    assert abs(np.var(np.asarray(x0) @ u) - want) < tol
    assert abs(np.var(np.asarray(x_tau) @ u) - want) > tol
    tolerance = 4.5 * 0.5 * np.sqrt(2 / n)
    assert float(tb.mode_weight_error(post, x0)) < tolerance


def test_run_almc_final_draw_is_finish_of_its_final_states():
    sched = na.budget_schedule(40, num_warm_start_steps=5, early_stop_time=TAU)
    stage = FinalStage(num_steps=4)
    res = na.run_almc(
        jax.random.key(2),
        LIK,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=3,
        final_stage=stage,
    )
    keys = offset_keys(run_keys(jax.random.key(2), 3), FINISH_KEYS, res.state.step)
    want, _ = jax.vmap(lambda k, s: finish(k, s, LIK, SCORE, stage))(keys, res.state)
    np.testing.assert_allclose(res.final_draw, want, rtol=1e-6, atol=1e-6)
    assert res.final_draw.shape == (3, 3)


def test_numpyro_final_draws_are_run_almc_final_draws():
    """``MCMC(ALMC(model, likelihood_path="noised", final_stage=...))`` collects
    the finished draw of each sampling step; its first is run_almc's final draw
    after the same steps, for the same key."""
    stage = FinalStage(num_steps=4)
    sched = na.budget_schedule(30, num_warm_start_steps=5, early_stop_time=TAU)
    mcmc = MCMC(
        na.ALMC(
            model,
            likelihood_path="noised",
            schedule=sched,
            preconditioner=None,
            final_stage=stage,
        ),
        num_warmup=sched.num_steps,
        num_samples=3,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(3), y=Y32)
    draws = mcmc.get_samples(group_by_chain=True)["x"]
    at_tau = mcmc.get_extra_fields(group_by_chain=True)
    ref = na.run_almc(
        jax.random.key(3),
        LIK,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=4,
        num_steps=sched.num_steps + 1,
        final_stage=stage,
    )
    np.testing.assert_allclose(draws[:, 0], ref.final_draw, rtol=1e-5, atol=1e-5)
    assert at_tau is not None
    # The collected draws are not the chain positions at τ.
    assert not np.allclose(draws[:, -1], mcmc.last_state.z["x"])


def test_blackjax_style_finish_after_run_inference_algorithm():
    import blackjax

    sched = na.budget_schedule(50, num_warm_start_steps=5, early_stop_time=TAU)
    alg = na.almc(LIK, SCORE, sched, preconditioner=LIK.preconditioner)
    state, _ = blackjax.util.run_inference_algorithm(
        jax.random.key(0), alg, sched.num_steps, initial_position=jnp.zeros(3)
    )
    x0, bad = finish(jax.random.key(1), state, LIK, SCORE)
    assert x0.shape == (3,) and not bool(bad)


def test_final_stage_errors_name_what_to_do():
    with pytest.raises(ValueError, match="noised_gaussian_likelihood"):
        na.run_almc(
            jax.random.key(0),
            lambda x: -jnp.sum(x**2),
            SCORE,
            na.budget_schedule(20),
            jnp.zeros(3),
            final_stage=True,
        )
    with pytest.raises(TypeError, match="FinalStage"):
        na.run_almc(
            jax.random.key(0),
            LIK,
            SCORE,
            na.budget_schedule(20),
            jnp.zeros(3),
            final_stage=8,
        )
    with pytest.raises(ValueError, match="num_steps"):
        FinalStage.build(num_steps=0)
    with pytest.raises(ValueError, match="likelihood_path='noised'"):
        na.ALMC(lambda: None, final_stage=True)


def test_every_driver_finishes_the_same_way(tmp_path):
    """``run_almc_chunked``'s final draw is ``run_almc``'s (same steps, same key);
    ``run_almc_smc`` returns finished particles beside the ones at τ."""
    sched = na.budget_schedule(30, num_warm_start_steps=5, early_stop_time=TAU)
    stage = FinalStage(num_steps=4)
    ref = na.run_almc(
        jax.random.key(4),
        LIK,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=2,
        final_stage=stage,
    )
    chunked = na.run_almc_chunked(
        jax.random.key(4),
        LIK,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=2,
        num_steps=sched.num_steps,
        chunk_size=10,
        path=tmp_path / "run",
        final_stage=stage,
    )
    np.testing.assert_allclose(chunked.final_draw, ref.final_draw, atol=1e-6)
    smc = na.run_almc_smc(
        jax.random.key(4),
        LIK,
        SCORE,
        sched,
        jnp.zeros(3),
        num_particles=8,
        final_stage=stage,
    )
    assert smc.final_particles.shape == (8, 3)
    assert not np.allclose(smc.final_particles, smc.particles)
    with pytest.raises(ValueError, match="noised_gaussian_likelihood"):
        na.run_almc_smc(
            jax.random.key(4),
            lambda x: -jnp.sum(x**2),
            SCORE,
            sched,
            jnp.zeros(3),
            num_particles=8,
            final_stage=True,
        )


def test_numpyro_smc_collects_finished_draws():
    sched = na.budget_schedule(30, num_warm_start_steps=5, early_stop_time=TAU)
    mcmc = MCMC(
        na.ALMCSMC(
            model,
            likelihood_path="noised",
            schedule=sched,
            final_stage=FinalStage(num_steps=4),
        ),
        num_warmup=sched.num_steps,
        num_samples=2,
        num_chains=8,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), y=Y32, extra_fields=("z",))
    draws = mcmc.get_samples(group_by_chain=True)["x"]
    at_tau = mcmc.get_extra_fields(group_by_chain=True)["z"]["x"]
    assert draws.shape == (8, 2, 3) and np.all(np.isfinite(draws))
    assert not np.allclose(draws, at_tau)


def _nan_below_tau(x, t):
    """``SCORE`` on the annealing path, NaN below ``τ``: only a final stage sees it."""
    return jnp.where(t < 0.999 * TAU, jnp.nan, 1.0) * SCORE(x, t)


def nan_model(y=None):
    x = numpyro.sample("x", na.ScorePrior(_nan_below_tau, event_shape=(3,)))
    numpyro.sample("y", dist.Normal(A32 @ x, NOISE).to_event(1), obs=y)


STAGE_SCHEDULE = na.budget_schedule(30, num_warm_start_steps=5, early_stop_time=TAU)


def test_a_failed_final_stage_is_flagged_by_the_jitted_drivers():
    """A final stage whose steps are not finite leaves the draws at ``τ`` and says
    so: a warning (an error with ``strict=True``) naming the final stage, not the
    path's steps; the chains' divergence counts; SMC's per-particle flags."""
    stage = FinalStage(num_steps=4)
    common = (jax.random.key(4), LIK, _nan_below_tau, STAGE_SCHEDULE, jnp.zeros(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = na.run_almc(*common, num_chains=2, final_stage=stage)
    assert [str(w.message) for w in caught if "final stage" in str(w.message)]
    assert not [w for w in caught if "steps diverge" in str(w.message)]
    np.testing.assert_array_equal(res.final_draw, res.state.position)
    np.testing.assert_array_equal(res.num_diverging, [1, 1])
    with pytest.raises(RuntimeError, match="final stage"):
        na.run_almc(*common, num_chains=2, final_stage=stage, strict=True)
    with pytest.warns(na.run.ALMCRunWarning, match="final stage"):
        chunked = na.run_almc_chunked(
            *common,
            num_chains=2,
            num_steps=STAGE_SCHEDULE.num_steps,
            chunk_size=10,
            path=None,
            final_stage=stage,
        )
    np.testing.assert_array_equal(chunked.num_diverging, res.num_diverging)
    np.testing.assert_array_equal(chunked.final_draw, chunked.state.position)
    with pytest.warns(na.run.ALMCRunWarning, match="final stage of 4 of 4 particles"):
        smc = na.run_almc_smc(*common, num_particles=4, final_stage=stage)
    np.testing.assert_array_equal(smc.final_diverging, [True] * 4)


def test_a_failed_final_stage_is_flagged_by_numpyro():
    """NumPyro's ``diverging`` flags every sampling step whose draw could not be
    carried to 0 (``ALMCSMC`` takes the same move, :class:`ChainMove`)."""
    mcmc = MCMC(
        na.ALMC(
            nan_model,
            likelihood_path="noised",
            schedule=STAGE_SCHEDULE,
            preconditioner=None,
            final_stage=FinalStage(num_steps=4),
        ),
        num_warmup=STAGE_SCHEDULE.num_steps,
        num_samples=2,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(3), y=Y32)
    diverging = mcmc.get_extra_fields(group_by_chain=True)["diverging"]
    np.testing.assert_array_equal(diverging, np.ones((4, 2), bool))
    draws = mcmc.get_samples(group_by_chain=True)["x"]
    np.testing.assert_array_equal(draws[:, -1], mcmc.last_state.z["x"])
