"""The ALMC kernel and driver against exact Gaussian answers.

Statistical tolerances are Monte Carlo standard errors (z = 4.5, Bonferroni-safe for
the handful of moments checked per test); the reference is the exact stationary law
of the *discretised* (preconditioned) Langevin chain, so discretisation bias is not
mistaken for error.
"""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_exact import (  # noqa: F401  (re-exported for older imports)
    NOISE,
    PRIOR_COV,
    PRIOR_MEAN,
    SCORE,
    A,
    Y,
    Z,
    assert_moments,
    gaussian_posterior,
    gaussian_prior,
    loglik,
    noised_moments,
    ula_stationary_cov,
)

import numpyro_almc as na


@pytest.mark.parametrize("precondition", [False, True])
def test_gaussian_linear_posterior_matches_exact_discretised_law(precondition):
    tau, h = 0.05, 0.02
    schedule = na.budget_schedule(
        400,
        early_stop_time=tau,
        step_size=0.5,
        tail_fraction=0.5,
        num_warm_start_steps=50,
        warm_start_step_size=0.02,
    )
    # Replace the tail's step size by a known h so the stationary law is exact.
    steps = np.asarray(schedule.step_sizes).copy()
    steps = np.where(
        np.asarray(schedule.phases) == na.path.TAIL, h, np.minimum(steps, h)
    )
    schedule = schedule._replace(step_sizes=jnp.asarray(steps, jnp.float32))
    precond = (
        na.linear_gaussian_preconditioner(jnp.asarray(A), NOISE)
        if precondition
        else None
    )
    res = na.run_almc(
        jax.random.key(1),
        loglik,
        SCORE,
        schedule,
        jnp.zeros(3),
        num_chains=4000,
        preconditioner=precond,
    )
    assert int(res.num_diverging.sum()) == 0
    m_tau, c_tau = noised_moments(PRIOR_MEAN, PRIOR_COV, tau)
    mean, cov = gaussian_posterior(m_tau, c_tau, A, Y, NOISE)
    M = None if precond is None else np.asarray(precond.matrix, np.float64)
    stationary = ula_stationary_cov(np.linalg.inv(cov), h, M)
    assert_moments(res.state.position, mean, stationary)


def test_gaussian_posterior_is_not_the_prior():
    """The moment check above can fail: the prior at τ is rejected by it."""
    tau = 0.05
    m_tau, c_tau = noised_moments(PRIOR_MEAN, PRIOR_COV, tau)
    draws = np.random.default_rng(0).multivariate_normal(m_tau, c_tau, size=4000)
    mean, cov = gaussian_posterior(m_tau, c_tau, A, Y, NOISE)
    with pytest.raises(AssertionError):
        assert_moments(draws, mean, cov)


def test_chains_started_at_the_stationary_law_stay_there():
    tau, h = 0.1, 0.05
    m_tau, c_tau = noised_moments(PRIOR_MEAN, PRIOR_COV, tau)
    mean, cov = gaussian_posterior(m_tau, c_tau, A, Y, NOISE)
    M = np.asarray(na.linear_gaussian_preconditioner(jnp.asarray(A), NOISE).matrix)
    stationary = ula_stationary_cov(np.linalg.inv(cov), h, M)
    start = np.random.default_rng(2).multivariate_normal(mean, stationary, size=4000)
    res = na.run_almc(
        jax.random.key(3),
        loglik,
        SCORE,
        na.langevin_schedule(tau, h, 30),
        jnp.zeros(3),
        num_chains=4000,
        preconditioner=na.path.dense_preconditioner(jnp.asarray(M, jnp.float32)),
        init_positions=jnp.asarray(start, jnp.float32),
    )
    assert_moments(res.state.position, mean, stationary)


def test_one_step_transition_moments():
    precond = na.path.dense_preconditioner(
        jnp.array([[0.5, 0.1, 0.0], [0.1, 0.3, 0.0], [0.0, 0.0, 1.0]])
    )
    tau, h = 0.3, 0.1
    state = na.mcmc.init(jnp.array([0.2, -0.4, 1.0]), loglik, SCORE, tau)
    # The update's law itself: no divergence bound (from this far-from-stationary
    # start some noise draws lower log L by more than the default 66 nats, and
    # reverting them would truncate the law tested here).
    kernel = na.mcmc.build_kernel(divergence_threshold=jnp.inf)
    keys = jax.random.split(jax.random.key(4), 20000)
    params = na.path.StepParams(tau, tau, h, na.path.TAIL, precond)
    new, info = jax.vmap(lambda k: kernel(k, state, loglik, SCORE, params))(keys)
    g = np.asarray(state.score) + np.asarray(state.loglikelihood_grad)
    M = np.asarray(precond.matrix, np.float64)
    mean = np.asarray(state.position) + h * M @ g
    assert_moments(new.position, mean, 2 * h * M)
    assert not bool(info.is_diverging.any())
    np.testing.assert_array_equal(np.asarray(new.step), 1)


def test_determinism_and_chain_independence():
    sched = na.budget_schedule(60, num_warm_start_steps=10, step_size=0.1)
    # With step size 0.1 and no preconditioner the likelihood's curvature (~25)
    # makes a third of the steps diverge (run_almc now warns): precondition.
    precond = na.linear_gaussian_preconditioner(jnp.asarray(A), NOISE)

    def run(key, n):
        return na.run_almc(
            key,
            loglik,
            SCORE,
            sched,
            jnp.zeros(3),
            num_chains=n,
            final_window=10,
            preconditioner=precond,
            strict=True,
        )

    a, b = run(jax.random.key(5), 6), run(jax.random.key(5), 6)
    np.testing.assert_array_equal(a.state.position, b.state.position)
    np.testing.assert_array_equal(a.window_draw, b.window_draw)
    single = run(jax.random.key(5), 1)
    np.testing.assert_array_equal(single.state.position[0], a.state.position[0])
    np.testing.assert_array_equal(single.window_draw[0], a.window_draw[0])
    other = run(jax.random.key(6), 6)
    assert not np.allclose(other.state.position, a.state.position)


def test_driver_equals_blackjax_sampling_algorithm():
    sched = na.budget_schedule(40, num_warm_start_steps=10, step_size=0.1)
    # Preconditioned: unpreconditioned, δ = 0.1 is beyond the stability limit of
    # the likelihood's curvature (~25) and steps are reverted (the time of a
    # reverted step stays where it was, which the last check would see).
    precond = na.linear_gaussian_preconditioner(jnp.asarray(A), NOISE)
    key = jax.random.key(7)
    res = na.run_almc(
        key, loglik, SCORE, sched, jnp.zeros(3), num_chains=2, preconditioner=precond
    )
    alg = na.almc(loglik, SCORE, sched, preconditioner=precond)
    start = na.run.initial_positions(key, jnp.zeros(3), 2)[1]
    run_key = jax.random.split(na.run.chain_keys(key, 2)[1])[1]

    def body(state, i):
        return alg.step(jax.random.fold_in(run_key, i), state)

    state, _ = jax.lax.scan(body, alg.init(start), jnp.arange(sched.num_steps))
    np.testing.assert_allclose(state.position, res.state.position[1], rtol=1e-6)
    # and it runs under BlackJAX's own loop
    final, (_, info) = blackjax.util.run_inference_algorithm(
        key, alg, sched.num_steps, initial_position=jnp.zeros(3)
    )
    assert info.time.shape == (sched.num_steps,)
    assert int(final.step) == sched.num_steps
    assert np.isinf(np.asarray(info.time[:10])).all()
    assert np.isfinite(np.asarray(info.time[10:])).all()


def test_warm_start_makes_no_score_evaluations():
    calls = []

    def counting_score(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return SCORE(x, t)

    sched = na.budget_schedule(20, num_warm_start_steps=15)
    na.run_almc(jax.random.key(0), loglik, counting_score, sched, jnp.zeros(3))
    assert len(calls) == sched.num_score_evals == 20


def test_float32_stays_float32_under_x64_and_float64_works():
    with jax.enable_x64(True):
        sched = na.budget_schedule(30, num_warm_start_steps=5)
        for dtype in (jnp.float32, jnp.float64):
            res = na.run_almc(
                jax.random.key(0),
                loglik,
                SCORE,
                sched,
                jnp.zeros(3, dtype),
                num_chains=2,
                final_window=5,
                preconditioner=na.linear_gaussian_preconditioner(
                    jnp.asarray(A, dtype), NOISE
                ),
            )
            for leaf in jax.tree.leaves(res.state):
                if jnp.issubdtype(leaf.dtype, jnp.floating):
                    assert leaf.dtype == dtype
            assert res.state.step.dtype == jnp.int32
            assert res.window_draw.dtype == dtype


def test_changing_numeric_knobs_does_not_recompile():
    base = na.budget_schedule(50, num_warm_start_steps=5, step_size=0.2)
    na.run_almc(jax.random.key(0), loglik, SCORE, base, jnp.zeros(3), num_chains=3)
    size = na.run.loop.run_chains._cache_size()
    other = na.budget_schedule(
        50, num_warm_start_steps=5, step_size=0.05, early_stop_time=0.3
    )
    na.run_almc(jax.random.key(1), loglik, SCORE, other, jnp.zeros(3), num_chains=3)
    assert na.run.loop.run_chains._cache_size() == size


def test_pytree_positions_match_the_flat_run():
    def tree_loglik(p):
        return loglik(jnp.concatenate([p["a"], p["b"].ravel()]))

    def tree_score(p, t):
        s = SCORE(jnp.concatenate([p["a"], p["b"].ravel()]), t)
        return {"a": s[:1], "b": s[1:].reshape(1, 2)}

    sched = na.budget_schedule(50, num_warm_start_steps=5, step_size=0.1)
    key = jax.random.key(9)
    flat_start = jax.random.normal(key, (4, 3))
    tree_start = {"a": flat_start[:, :1], "b": flat_start[:, 1:].reshape(4, 1, 2)}
    flat = na.run_almc(
        key, loglik, SCORE, sched, jnp.zeros(3), num_chains=4, init_positions=flat_start
    )
    tree = na.run_almc(
        key,
        tree_loglik,
        tree_score,
        sched,
        {"a": jnp.zeros(1), "b": jnp.zeros((1, 2))},
        num_chains=4,
        init_positions=tree_start,
        path_every=7,
        final_window=3,
    )
    got = jnp.concatenate(
        [tree.state.position["a"], tree.state.position["b"].reshape(4, 2)], axis=1
    )
    np.testing.assert_allclose(got, flat.state.position, rtol=1e-5, atol=1e-6)
    assert tree.path["b"].shape == (4, sched.num_steps // 7, 1, 2)


def test_non_finite_step_is_reverted_and_flagged():
    def bad_loglik(x):
        # NaN outside a ball: a proposal landing there must be reverted.
        return jnp.where(jnp.sum(x**2) < 4.0, loglik(x), jnp.nan)

    sched = na.langevin_schedule(0.5, 0.5, 200)
    res = na.run_almc(
        jax.random.key(0),
        bad_loglik,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=50,
        init_positions=jnp.zeros((50, 3)),
    )
    assert int(res.num_diverging.sum()) > 0
    assert int(res.trace.num_diverging.sum()) == int(res.num_diverging.sum())
    assert np.isfinite(np.asarray(res.state.position)).all()
    assert (np.sum(np.asarray(res.state.position) ** 2, axis=1) < 4.0).all()
    # the kernel itself: a reverted step keeps the position and flags it
    state = na.mcmc.init(jnp.array([1.9, 0.0, 0.0]), bad_loglik, SCORE, 0.5)
    params = na.path.StepParams(0.5, 0.5, 5.0, na.path.TAIL)
    new, info = na.mcmc.build_kernel()(
        jax.random.key(1), state, bad_loglik, SCORE, params
    )
    assert bool(info.is_diverging)
    np.testing.assert_array_equal(new.position, state.position)
    assert int(new.step) == 1


def test_random_window_draw_differs_from_last_iterate():
    sched = na.budget_schedule(80, num_warm_start_steps=0, step_size=0.2)
    res = na.run_almc(
        jax.random.key(0),
        loglik,
        SCORE,
        sched,
        jnp.zeros(3),
        num_chains=64,
        final_window=40,
    )
    same = np.all(np.asarray(res.window_draw) == np.asarray(res.state.position), 1)
    # P(last iterate chosen) = 1/40 per chain
    assert same.sum() < 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_score_evals=1), "num_score_evals"),
        (dict(num_score_evals=10.0), "integer"),
        (
            dict(num_score_evals=100, early_stop_time=2.0, initial_time=1.0),
            "T > τ|initial_time > early_stop_time",
        ),
        (dict(num_score_evals=100, early_stop_time=0.0), "early_stop_time"),
        (dict(num_score_evals=100, step_size=-1.0), "step_size"),
        (dict(num_score_evals=100, grid="cosine"), "grid"),
        (dict(num_score_evals=100, step_rule="adaptive"), "step_rule"),
        (dict(num_score_evals=100, tail_fraction=1.0), "tail_fraction"),
        (dict(num_score_evals=100, num_warm_start_steps=-1), "num_warm_start_steps"),
    ],
)
def test_budget_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        na.budget_schedule(**kwargs)


def test_paper_schedule_rejects_bad_arguments_and_counts_steps():
    with pytest.raises(ValueError, match="initial_time > early_stop_time"):
        na.paper_schedule(0.1, 10.0, 0.5, 1.0, 5, 0.1)
    with pytest.raises(ValueError, match="path_speed"):
        na.paper_schedule(0.1, 0.0, 1.0, 0.5, 5, 0.1)
    with pytest.raises(TypeError, match="integer"):
        na.paper_schedule(0.1, 1.0, 1.0, 0.5, 5.5, 0.1)
    s = na.paper_schedule(0.1, 4.0, 2.0, 0.1, 7, 0.05, num_tail_steps=3)
    n_anneal = int(np.ceil(4.0 * 1.9 / 0.1))
    assert s.num_steps == 7 + n_anneal + 3
    np.testing.assert_allclose(
        np.diff(np.asarray(s.times[7 : 7 + n_anneal + 1])), -1.9 / n_anneal, rtol=1e-4
    )


def test_schedule_grids_are_monotone_and_end_at_tau():
    for grid in ("uniform", "log", "snr"):
        for rule in ("constant", "noise"):
            s = na.budget_schedule(
                200, grid=grid, step_rule=rule, early_stop_time=0.01, initial_time=2.0
            )
            t = np.asarray(s.times)
            anneal = t[np.isfinite(t)]
            assert anneal[0] == pytest.approx(2.0)
            assert anneal[-1] == pytest.approx(0.01)
            assert np.all(np.diff(anneal) <= 0)
            assert s.num_score_evals == 200


def test_driver_and_kernel_reject_bad_arguments():
    sched = na.budget_schedule(10)
    with pytest.raises(ValueError, match="num_chains"):
        na.run_almc(jax.random.key(0), loglik, SCORE, sched, jnp.zeros(3), num_chains=0)
    with pytest.raises(ValueError, match="final_window"):
        na.run_almc(
            jax.random.key(0), loglik, SCORE, sched, jnp.zeros(3), final_window=10_000
        )
    with pytest.raises(TypeError, match="ALMCSchedule"):
        na.run_almc(jax.random.key(0), loglik, SCORE, {"times": 1}, jnp.zeros(3))
    with pytest.raises(ValueError, match="same shape|one unbatched"):
        na.run_almc(
            jax.random.key(0), loglik, lambda x, t: jnp.zeros(4), sched, jnp.zeros(3)
        )
    with pytest.raises(ValueError, match="scalar"):
        na.mcmc.init(jnp.zeros(3), lambda x: x, SCORE, 0.5)
    with pytest.raises(ValueError, match="init_positions"):
        na.run_almc(
            jax.random.key(0),
            loglik,
            SCORE,
            sched,
            jnp.zeros(3),
            num_chains=2,
            init_positions=jnp.zeros((3, 3)),
        )
    with pytest.raises(ValueError, match="positive definite"):
        na.path.dense_preconditioner(jnp.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        na.path.dense_preconditioner(jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="> 0"):
        na.path.diagonal_preconditioner(jnp.array([1.0, 0.0]))


class _UnhashableScore:
    """Like an Equinox module holding arrays: callable but not hashable."""

    __hash__ = None

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, t):
        return self.fn(x, t)


def test_unhashable_score_objects_work_and_do_not_recompile():
    score = _UnhashableScore(SCORE)
    sched = na.budget_schedule(20, num_warm_start_steps=2)
    a = na.run_almc(jax.random.key(0), loglik, score, sched, jnp.zeros(3))
    size = na.run.loop.run_chains._cache_size()
    b = na.run_almc(jax.random.key(0), loglik, score, sched, jnp.zeros(3))
    assert na.run.loop.run_chains._cache_size() == size
    np.testing.assert_array_equal(a.state.position, b.state.position)
    ref = na.run_almc(jax.random.key(0), loglik, SCORE, sched, jnp.zeros(3))
    np.testing.assert_allclose(a.state.position, ref.state.position, rtol=1e-6)
