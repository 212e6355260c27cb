"""One core under every front end: the same key gives the same chains, and the
NumPyro façade reaches the noised-likelihood path and the Feynman–Kac weights."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc import testbeds as tb
from numpyro_almc.run.chains import init_states, run_keys, step_keys

A = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.3]])
Y = jnp.array([0.7, -0.2])
SCORE = na.scores.gaussian_mixture_score(
    jnp.array([0.4, 0.6]),
    jnp.array([[-1.0, 0.0, 0.5], [1.0, 0.5, 0.0]]),
    jnp.array([0.3, 0.5]),
)


def loglik(x):
    return -0.5 * jnp.sum((Y - A @ x) ** 2) / 0.3**2


@pytest.mark.parametrize("noised", [False, True])
def test_vmapped_blackjax_loop_equals_run_almc(noised):
    """``jax.vmap(almc(...).step)`` over chains in lockstep is the driver's step:
    same keys, same positions (the lockstep batching rule computes the step's
    parameters once, as the driver does). XLA compiles the step inside a
    ``lax.cond`` there, so allow float32 rounding (1e-6)."""
    sched = na.budget_schedule(40, num_warm_start_steps=5)
    lik = na.noised_gaussian_likelihood(A, Y, 0.3) if noised else loglik
    precond = (
        lik.preconditioner if noised else na.linear_gaussian_preconditioner(A, 0.3)
    )
    key = jax.random.key(5)
    ref = na.run_almc(
        key, lik, SCORE, sched, jnp.zeros(3), num_chains=6, preconditioner=precond
    )
    alg = na.almc(lik, SCORE, sched, preconditioner=precond)
    keys = run_keys(key, 6)
    positions = na.run.initial_positions(key, jnp.zeros(3), 6)
    states = jax.vmap(alg.init)(positions)

    @jax.jit
    def loop(states):
        def body(states, i):
            return jax.vmap(alg.step)(step_keys(keys, i), states)[0], None

        return jax.lax.scan(body, states, jnp.arange(sched.num_steps))[0]

    out = loop(states)
    np.testing.assert_allclose(out.position, ref.state.position, rtol=1e-6, atol=1e-6)
    assert int(out.step[0]) == sched.num_steps


def test_vmapped_blackjax_step_out_of_lockstep_is_per_chain():
    """Chains at different steps take their own step's parameters."""
    sched = na.budget_schedule(20, num_warm_start_steps=3)
    alg = na.almc(loglik, SCORE, sched)
    states = jax.vmap(alg.init)(jnp.zeros((2, 3)))
    states = states._replace(step=jnp.array([0, 10], jnp.int32))
    keys = jax.random.split(jax.random.key(0), 2)
    _, info = jax.jit(jax.vmap(alg.step))(keys, states)

    def alone(c):
        return alg.step(keys[c], jax.tree.map(lambda a: a[c], states))[1]

    np.testing.assert_allclose(info.step_size, [alone(0).step_size, alone(1).step_size])
    # Step 0 is a warm-start step, step 10 an annealing step: different sizes.
    assert float(info.step_size[0]) != float(info.step_size[1])


def test_init_states_is_the_driver_start():
    sched = na.budget_schedule(20, num_warm_start_steps=3)
    positions = na.run.initial_positions(jax.random.key(1), jnp.zeros(3), 4)
    states = init_states(positions, sched, loglik, SCORE, na.mcmc.standard_normal_score)
    assert states.position.shape == (4, 3) and int(states.step[0]) == 0


def _gmm_model(problem, score):
    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(score, event_shape=(problem.dim,)))
        numpyro.sample(
            "y", dist.Normal(problem.A @ x, problem.noise_std).to_event(1), obs=y
        )

    return model


@pytest.mark.slow
def test_numpyro_smc_on_the_noised_path_gets_gmm25_mode_weights():
    """``MCMC(ALMCSMC(model, likelihood_path="noised"))`` on gmm25 (d = 8,
    d_y = 2): the mode weights within Monte Carlo tolerance of the exact posterior,
    where plain ``ALMC`` on the paper's path is far off."""
    problem = tb.gmm25_problem(jax.random.key(1), dim=8, obs_dim=2)
    post = problem.posterior()
    score = na.scores.gaussian_mixture_score(
        problem.weights, problem.means, problem.covs
    )
    model = _gmm_model(problem, score)
    n = 400
    errors = {}
    for name, kernel in {
        "smc_noised": na.ALMCSMC(model, likelihood_path="noised"),
        "almc_paper": na.ALMC(model),
    }.items():
        mcmc = MCMC(
            kernel,
            num_warmup=600,
            num_samples=1,
            num_chains=n,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(0), y=problem.y)
        errors[name] = float(tb.mode_weight_error(post, mcmc.get_samples()["x"]))
    # TV of n multinomial draws from the exact weights: E TV <= sqrt(K / n) / 2.
    tolerance = 3 * 0.5 * np.sqrt(post.weights.shape[0] / n)
    assert errors["smc_noised"] < tolerance, errors
    assert errors["almc_paper"] > tolerance, errors


def test_noised_path_in_numpyro_raises_for_non_gaussian_or_nonlinear_models():
    score = na.scores.gaussian_score(jnp.zeros(2), jnp.eye(2))

    def poisson(y=None):
        x = numpyro.sample("x", na.ScorePrior(score, event_shape=(2,)))
        numpyro.sample("y", dist.Poisson(jnp.exp(x)).to_event(1), obs=y)

    def nonlinear(y=None):
        x = numpyro.sample("x", na.ScorePrior(score, event_shape=(2,)))
        numpyro.sample("y", dist.Normal(jnp.sin(x), 0.1).to_event(1), obs=y)

    def per_point_noise(y=None):
        x = numpyro.sample("x", na.ScorePrior(score, event_shape=(2,)))
        numpyro.sample("y", dist.Normal(x, jnp.array([0.1, 0.2])).to_event(1), obs=y)

    for model, y, match in [
        (poisson, jnp.array([1.0, 2.0]), "not a Normal"),
        (nonlinear, jnp.array([0.1, 0.2]), "not affine"),
        (per_point_noise, jnp.array([0.1, 0.2]), "isotropic"),
    ]:
        mcmc = MCMC(
            na.ALMC(model, likelihood_path="noised"),
            num_warmup=20,
            num_samples=1,
            progress_bar=False,
        )
        with pytest.raises(ValueError, match=match):
            mcmc.run(jax.random.key(0), y=y)
    with pytest.raises(ValueError, match="likelihood_path"):
        na.ALMC(poisson, likelihood_path="tempered")


def test_noised_path_with_an_unknown_noise_scale_runs_finite():
    """An unknown σ moves the noised likelihood's scale (no refactorisation)."""
    score = na.scores.gaussian_score(jnp.zeros(3), jnp.eye(3))

    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(score, event_shape=(3,)))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A @ x, sigma).to_event(1), obs=y)

    mcmc = MCMC(
        na.ALMC(model, likelihood_path="noised"),
        num_warmup=100,
        num_samples=5,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), y=Y)
    samples = mcmc.get_samples()
    assert np.all(np.isfinite(samples["x"])) and np.all(samples["sigma"] > 0)
    assert int(mcmc.get_extra_fields()["diverging"].sum()) == 0


def _potential(z):
    return -loglik(z)


def _facade(kernel_class, sched, precond, num_chains):
    """``MCMC`` of a NumPyro façade on ``-(-loglik)`` (exact negations), vectorized
    chains, the warmup exactly the schedule."""
    kernel = kernel_class(
        potential_fn=_potential, score_fn=SCORE, schedule=sched, preconditioner=precond
    )
    return MCMC(
        kernel,
        num_warmup=sched.num_steps,
        num_samples=1,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )


def test_numpyro_almc_follows_the_drivers_key_stream():
    """``MCMC(ALMC(...), chain_method="vectorized")`` and ``run_almc`` with the same
    key run the same chains: NumPyro's chain keys are ``split(key, n)[c] ==
    fold_in(key, c)`` (partitionable threefry), and the façade draws its steps from
    them as the driver does. The likelihood is ``-(-loglik)``: exact negations."""
    sched = na.budget_schedule(40, num_warm_start_steps=5)
    precond = na.linear_gaussian_preconditioner(A, 0.3)
    key, n = jax.random.key(5), 4
    start = na.run.initial_positions(key, jnp.zeros(3), n)
    ref = na.run_almc(
        key,
        loglik,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=n,
        init_positions=start,
        preconditioner=precond,
    )
    mcmc = _facade(na.ALMC, sched, precond, n)
    mcmc.warmup(key, init_params=start)
    z = mcmc.post_warmup_state.z
    np.testing.assert_array_equal(z, ref.state.position)


def test_numpyro_almc_smc_is_run_almc_smc():
    """``ALMCSMC`` runs ``run_almc_smc``'s Feynman–Kac steps (same keys, same
    weights): the same ESS at every step and bitwise the same evidence estimate. (The
    façade resamples at the last warmup step, the driver does not, so the final
    particles differ by that resampling only.)"""
    sched = na.budget_schedule(40, num_warm_start_steps=5)
    precond = na.linear_gaussian_preconditioner(A, 0.3)
    key, n = jax.random.key(7), 16
    start = na.run.initial_positions(key, jnp.zeros(3), n)
    ref = na.run_almc_smc(
        key,
        loglik,
        SCORE,
        sched,
        jnp.zeros(3),
        num_particles=n,
        init_positions=start,
        preconditioner=precond,
    )
    mcmc = _facade(na.ALMCSMC, sched, precond, n)
    mcmc.warmup(key, init_params=start, extra_fields=("ess",), collect_warmup=True)
    ess = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["ess"])[0]
    # The ESS is a reduction over particles, which XLA may order differently in the
    # two programs (relative differences ~6e-7 seen); the evidence agrees bitwise.
    np.testing.assert_allclose(ess, ref.ess, rtol=2e-6)
    state = mcmc.post_warmup_state
    np.testing.assert_array_equal(state.log_evidence_ratio[0], ref.log_evidence_ratio)


@pytest.mark.parametrize("every", [0, 5])
def test_scan_steps_with_blocked_inputs_is_a_plain_loop(every):
    """Inputs derived in blocks (7 steps at a time, 23 steps: three full blocks and
    a remainder, inside blocks of 5 when ``every``) reach step ``i`` as
    ``inputs(i)``, in order: the same outputs and kept values as a Python loop."""
    from numpyro_almc.run.loop import scan_steps

    def one_step(carry, step):
        i, u = step
        carry = carry * 0.5 + u
        return carry, (i, carry)

    def at_block_end(carry, i):
        return carry + 1.0, carry

    carry, (idx, outs), kept = scan_steps(
        one_step,
        jnp.float32(1.0),
        3,
        23,
        every=every,
        at_block_end=at_block_end if every else None,
        inputs=lambda steps: 2.0 * steps,
        input_block=7,
    )
    want_carry, want_outs, want_kept = 1.0, [], []
    for n, i in enumerate(range(3, 26)):
        want_carry = want_carry * 0.5 + 2.0 * i
        want_outs.append(want_carry)
        if every and (n + 1) % every == 0:
            want_kept.append(want_carry)
            want_carry += 1.0
    np.testing.assert_array_equal(idx, np.arange(3, 26))
    np.testing.assert_allclose(outs, want_outs, rtol=1e-6)
    np.testing.assert_allclose(carry, want_carry, rtol=1e-6)
    if every:
        np.testing.assert_allclose(kept, want_kept, rtol=1e-6)
