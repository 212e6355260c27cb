"""Nothing silent after a run: bad inputs raise before tracing, diverging runs warn
(or raise with strict=True), collapsed SMC runs are flagged."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_almc as na
from numpyro_almc.run import ALMCRunWarning

A = jax.random.normal(jax.random.key(0), (3, 4))
Y = jnp.array([1.0, -0.5, 0.3])


def stiff_loglik(x):  # noise 0.01: curvature ~1e4, far above 1 / step size
    return -0.5 * jnp.sum((Y - A @ x) ** 2) / 0.01**2


def score(x, t):
    return -x


SCHED = na.budget_schedule(40, num_warm_start_steps=5)
SIZES = {
    "run_almc": dict(num_chains=2),
    "run_almc_smc": dict(num_particles=4),
    "run_almc_chunked": dict(
        num_chains=2, num_steps=SCHED.num_steps, chunk_size=20, path=None
    ),
}


def drive(name, key=None, loglik=stiff_loglik, position=None, **kw):
    """Driver ``name`` on the test problem (the stiff likelihood by default)."""
    driver = getattr(na, name)
    key = jax.random.key(0) if key is None else key
    position = jnp.zeros(4) if position is None else position
    return driver(key, loglik, score, SCHED, position, **SIZES[name], **kw)


DRIVERS = {name: functools.partial(drive, name) for name in SIZES}


@pytest.mark.parametrize("driver", sorted(DRIVERS))
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (dict(key=0), TypeError, "rng_key"),
        (dict(key=jax.random.split(jax.random.key(0), 2)), TypeError, "rng_key"),
        (dict(position=jnp.zeros(4, jnp.int32)), TypeError, "floating-point"),
        (dict(position=[0, 0, 0, 0]), TypeError, "floating-point"),
        (dict(position=jnp.zeros(4, bool)), TypeError, "floating-point"),
    ],
)
def test_bad_inputs_raise_before_tracing(driver, bad, error, match):
    with pytest.raises(error, match=match):
        DRIVERS[driver](**bad)


@pytest.mark.parametrize("driver", ["run_almc", "run_almc_smc"])
def test_nan_start_raises(driver):
    kw = {"num_chains": 2} if driver == "run_almc" else {"num_particles": 4}
    n = kw.popitem()[1]
    with pytest.raises(ValueError, match="NaN or infinite"):
        DRIVERS[driver](init_positions=jnp.full((n, 4), jnp.nan))


@pytest.mark.parametrize("driver", ["run_almc", "run_almc_chunked"])
def test_diverging_run_warns_and_strict_raises(driver):
    """Unpreconditioned Langevin on a likelihood of curvature ~1e4 with steps of
    0.5: nearly every step is reverted. The run says so."""
    with pytest.warns(ALMCRunWarning, match="reverted more than 1%"):
        res = DRIVERS[driver]()
    assert int(np.max(res.num_diverging)) > 0.01 * SCHED.num_steps
    with pytest.raises(RuntimeError, match="reverted more than 1%"):
        DRIVERS[driver](strict=True)


def test_collapsed_smc_warns():
    with pytest.warns(ALMCRunWarning, match="collapsed|not finite"):
        DRIVERS["run_almc_smc"]()


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_healthy_runs_say_nothing(driver):
    """A well-conditioned problem: no warning from any driver."""

    def loglik(x):
        return -0.5 * jnp.sum((Y - A @ x) ** 2) / 0.5**2

    with warnings.catch_warnings():
        warnings.simplefilter("error", ALMCRunWarning)
        DRIVERS[driver](
            loglik=loglik,
            preconditioner=na.linear_gaussian_preconditioner(A, 0.5),
        )
