"""The divergence test beyond "not finite": a step that lowers log L by more than
the threshold is reverted and flagged, in every front end, and the user hears
about it after the run."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc.mcmc import default_divergence_threshold
from numpyro_almc.run.chains import initial_positions, run_keys
from numpyro_almc.run.health import ALMCRunWarning
from numpyro_almc.testbeds import bars_problem, gaussian_problem

A = jax.random.normal(jax.random.key(0), (3, 4))
Y = jnp.ones(3)


def _exploding(noise=1.0):
    """The fault probe's run: no preconditioner on a likelihood with curvature
    ‖A‖²/σ² ≈ 10. The warm start is capped at its stable step, but the annealing
    steps ``0.5 σ_t²`` are unstable at large ``t``."""
    problem = gaussian_problem(jnp.zeros(4), 1.0, A, Y, noise)
    return problem, na.budget_schedule(30, num_warm_start_steps=5)


def _run(threshold, noise=1.0):
    problem, schedule = _exploding(noise)
    return na.run_almc(
        jax.random.key(1),
        problem.loglikelihood_fn,
        problem.score_fn,
        schedule,
        jnp.zeros(4),
        num_chains=2,
        divergence_threshold=threshold,
    )


def test_finite_only_lets_the_fault_probe_run_explode_unflagged():
    """What the finiteness check alone did (and ``inf`` still does): the chains
    pass 1e6 with no step flagged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ALMCRunWarning)
        res = _run(jnp.inf)
    assert float(jnp.max(jnp.abs(res.state.position))) > 1e6
    assert int(res.num_diverging.sum()) == 0


@pytest.mark.parametrize("noise", [1.0, 0.5, 0.01])
def test_default_bound_reverts_flags_and_warns(noise):
    """With the default bound the unstable steps are reverted (the chains stay
    where a stable step left them), counted, and the run warns."""
    with pytest.warns(ALMCRunWarning, match="reverted more than 1%"):
        res = _run(None, noise)
    assert int(res.num_diverging.min()) > 0
    assert float(jnp.max(jnp.abs(res.state.position))) < 100
    assert np.all(np.isfinite(np.asarray(res.state.position)))
    drops = np.asarray(res.trace.max_loglikelihood_drop)
    assert drops.max() > default_divergence_threshold(4)


def test_healthy_run_stays_far_below_the_bound():
    """The bars with their preconditioner (the exact-posterior test's setting):
    no step flagged, and the largest one-step drop of log L over 256 chains is a
    small share of the bound."""
    problem = bars_problem()
    res = na.run_almc(
        jax.random.key(0),
        problem.loglikelihood_fn,
        problem.score_fn,
        na.budget_schedule(1000),
        jnp.zeros(2),
        num_chains=256,
        preconditioner=na.linear_gaussian_preconditioner(problem.A, problem.noise_std),
    )
    assert int(res.num_diverging.sum()) == 0
    share = float(res.trace.max_loglikelihood_drop.max()) / (
        default_divergence_threshold(2)
    )
    assert share < 0.5, share


def test_a_tiny_threshold_flags_ordinary_steps():
    """The bound is live: at 1e-3 nats even healthy steps (which lower log L by
    O(1) half the time) are reverted."""
    problem = bars_problem()
    with pytest.warns(ALMCRunWarning):
        res = na.run_almc(
            jax.random.key(0),
            problem.loglikelihood_fn,
            problem.score_fn,
            na.budget_schedule(100),
            jnp.zeros(2),
            num_chains=16,
            preconditioner=na.linear_gaussian_preconditioner(
                problem.A, problem.noise_std
            ),
            divergence_threshold=1e-3,
        )
    assert int(res.num_diverging.min()) > 5


def test_blackjax_object_flags_the_same_steps_as_the_driver():
    """``almc(...)`` step by step: the same reverted steps as ``run_almc`` for
    chain 0 (the same keys), with ``info.is_diverging``."""
    problem, schedule = _exploding()
    alg = na.almc(problem.loglikelihood_fn, problem.score_fn, schedule)
    key = jax.random.key(1)
    with pytest.warns(ALMCRunWarning):
        ref = _run(None)
    keys = run_keys(key, 2)[0]
    state = alg.init(initial_positions(key, jnp.zeros(4), 2)[0])
    flags = []
    for i in range(schedule.num_steps):
        state, info = jax.jit(alg.step)(jax.random.fold_in(keys, i), state)
        flags.append(bool(info.is_diverging))
    assert sum(flags) == int(ref.num_diverging[0]) > 0
    np.testing.assert_allclose(state.position, ref.state.position[0], rtol=1e-5)


def _model(y=None):
    x = numpyro.sample("x", na.ScorePrior(lambda x, t: -x, event_shape=(4,)))
    numpyro.sample("y", dist.Normal(A @ x, 0.01).to_event(1), obs=y)


def _short_mcmc(kernel):
    """30 warmup steps (the whole path) and 2 draws of 4 vectorized chains."""
    return MCMC(
        kernel,
        num_warmup=30,
        num_samples=2,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )


@pytest.mark.parametrize("kernel", ["ALMC", "ALMCSMC"])
def test_numpyro_kernels_flag_and_warn_at_the_end_of_the_path(kernel):
    """``MCMC(ALMC)`` and ``MCMC(ALMCSMC)`` without a preconditioner on a stiff
    likelihood: steps flagged in the extra field ``diverging``, and a warning
    when the path ends (NumPyro has no hook after a run: a host callback)."""
    cls = getattr(na, kernel)
    mcmc = _short_mcmc(
        cls(
            _model,
            preconditioner=None,
            divergence_threshold=None,
            likelihood_path="paper",
        )
    )
    with pytest.warns(ALMCRunWarning, match=rf"MCMC\({kernel}\).*reverted more"):
        mcmc.run(jax.random.key(1), y=Y)
        jax.effects_barrier()
    assert int(mcmc.get_extra_fields()["diverging"].sum()) > 0
    assert np.all(np.isfinite(np.asarray(mcmc.get_samples()["x"])))


def test_numpyro_healthy_run_does_not_warn():
    """The same model with the default ``"auto"`` preconditioner: no warning."""
    mcmc = _short_mcmc(na.ALMC(_model))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ALMCRunWarning)
        mcmc.run(jax.random.key(1), y=Y)
        jax.effects_barrier()
    assert int(mcmc.get_extra_fields()["diverging"].sum()) == 0


@pytest.mark.parametrize(
    "value, error, match",
    [
        (0.0, ValueError, "must be > 0"),
        (-1.0, ValueError, "must be > 0"),
        (float("nan"), ValueError, "must be > 0"),
        ("big", TypeError, "divergence_threshold"),
        (True, TypeError, "divergence_threshold"),
    ],
)
@pytest.mark.parametrize("front_end", ["run_almc", "almc", "ALMC"])
def test_bad_thresholds_raise_before_tracing(front_end, value, error, match):
    problem, schedule = _exploding()
    with pytest.raises(error, match=match):
        if front_end == "run_almc":
            na.run_almc(
                jax.random.key(0),
                problem.loglikelihood_fn,
                problem.score_fn,
                schedule,
                jnp.zeros(4),
                divergence_threshold=value,
            )
        elif front_end == "almc":
            na.almc(
                problem.loglikelihood_fn,
                problem.score_fn,
                schedule,
                divergence_threshold=value,
            )
        else:
            na.ALMC(_model, divergence_threshold=value)


@pytest.mark.parametrize("front_end", ["run_almc_smc", "almc_smc"])
def test_smc_front_ends_take_the_threshold(front_end):
    """``run_almc_smc`` and ``almc_smc``: a tiny bound reverts ordinary moves
    (their particles' weights go to zero), the default reverts none on the
    healthy bars, and both front ends count the same moves for the same key."""
    problem = bars_problem()
    schedule = na.budget_schedule(20, num_warm_start_steps=5)
    precond = na.linear_gaussian_preconditioner(problem.A, problem.noise_std)
    x0 = jax.random.normal(jax.random.key(3), (16, 2))

    def count(threshold):
        if front_end == "run_almc_smc":
            res = na.run_almc_smc(
                jax.random.key(0),
                problem.loglikelihood_fn,
                problem.score_fn,
                schedule,
                jnp.zeros(2),
                num_particles=16,
                init_positions=x0,
                preconditioner=precond,
                divergence_threshold=threshold,
            )
            return int(res.info.num_diverging.sum())
        alg = na.almc_smc(
            problem.loglikelihood_fn,
            problem.score_fn,
            schedule,
            preconditioner=precond,
            divergence_threshold=threshold,
        )
        state = alg.init(x0)
        total = 0
        for i in range(schedule.num_steps):
            state, info = jax.jit(alg.step)(
                jax.random.fold_in(jax.random.key(0), i), state
            )
            total += int(info.num_diverging)
        return total

    assert count(None) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ALMCRunWarning)
        assert count(1e-3) > 10


@pytest.mark.parametrize("kernel", ["ALMC", "ALMCSMC"])
def test_numpyro_strict_turns_the_warning_into_an_error(kernel):
    """``strict=True``: the end-of-path report stops the run with its message."""
    cls = getattr(na, kernel)
    mcmc = _short_mcmc(
        cls(_model, preconditioner=None, strict=True, likelihood_path="paper")
    )
    with pytest.raises(Exception, match="reverted more than 1%"):
        mcmc.run(jax.random.key(1), y=Y)
        jax.effects_barrier()


def test_numpyro_strict_must_be_a_bool():
    with pytest.raises(TypeError, match="strict"):
        na.ALMC(_model, strict="yes")
