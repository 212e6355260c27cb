# ruff: noqa: E501  (the case tables keep one case per line where they can)
"""Bad input gets a clear error, never a wrong answer (issue 14).

Every case is one bad input or fault a realistic user could make, on one public
entry point. It expects EITHER a clear error (the exception type and a message that
names the argument) OR a correct result: a finite answer, or a run whose faulty
steps were reverted and flagged (``num_diverging > 0`` and an ``ALMCRunWarning``).

The cases live in tables of ``(id, callable, expected)``; each callable builds its
inputs with the helpers below, on a 2-D Gaussian likelihood with the score
``lambda x, t: -x`` and a few steps. The functions passed to the jitted drivers are
module-level objects, so the runs that do compile share their compilation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import arviz  # noqa: F401  (imported up front: the export cases time it otherwise)
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_almc as na
from numpyro_almc import baselines, diagnostics, scores
from numpyro_almc.path.preconditioners import (
    DiagonalPreconditioner,
    dense_preconditioner,
    diagonal_preconditioner,
)
from numpyro_almc.run.health import ALMCRunWarning

# ---------------------------------------------------------------------------------
# The tiny problem and its helpers
# ---------------------------------------------------------------------------------

D = 2
KEY = jax.random.key(0)
X0 = jnp.zeros(D)
A_OBS = jnp.array([[1.0, 0.5]])
Y_OBS = jnp.array([0.3])


def LL(x):
    """The 2-D Gaussian log-likelihood (mean 1, sd 1)."""
    return -0.5 * jnp.sum((x - 1.0) ** 2)


def SCORE(x, t):
    return -x


def NAN_SCORE(x, t):
    return jnp.full_like(x, jnp.nan)


def NAN_LL(x):
    return jnp.nan * jnp.sum(x)


def HOLE_LL(x):
    """Finite except below x[0] < -5, where it is NaN (a start in the hole)."""
    return jnp.where(x[0] < -5.0, jnp.nan, LL(x))


def VECTOR_LL(x):
    return -((x - 1.0) ** 2)


def SHORT_SCORE(x, t):
    return -x[:1]


def ONE_ARG_SCORE(x):
    return -x


def LL_F64(x):
    """A float64 likelihood (under x64) on float32 positions."""
    return -0.5 * jnp.sum((x.astype(jnp.float64) - 1.0) ** 2)


def AX_LL(x):
    return -0.5 * jnp.sum((A_OBS @ x - Y_OBS) ** 2) / 0.01


SCHED = na.budget_schedule(8, num_warm_start_steps=2)
N_STEPS = SCHED.num_steps


def sched_with(**arrays):
    """``SCHED`` with some of its arrays replaced (a hand-built schedule)."""
    return SCHED._replace(**{k: jnp.asarray(v) for k, v in arrays.items()})


def _put(a, i, value):
    a = np.array(a, dtype=np.float32)
    a[i] = value
    return a


BAD_SCHEDULES = {
    "nan_step": lambda: sched_with(step_sizes=_put(SCHED.step_sizes, 4, np.nan)),
    "negative_step": lambda: sched_with(step_sizes=_put(SCHED.step_sizes, 4, -0.1)),
    "inf_step": lambda: sched_with(step_sizes=_put(SCHED.step_sizes, 4, np.inf)),
    "nan_time": lambda: sched_with(times=_put(SCHED.times, 4, np.nan)),
    "negative_time": lambda: sched_with(times=_put(SCHED.times, -1, -0.5)),
    "minus_inf_time": lambda: sched_with(times=_put(SCHED.times, 5, -np.inf)),
    "times_too_short": lambda: sched_with(times=SCHED.times[:-1]),
    "phases_too_short": lambda: sched_with(phases=SCHED.phases[:-1]),
    "step_sizes_2d": lambda: sched_with(step_sizes=SCHED.step_sizes[None, :]),
    "int_times": lambda: sched_with(times=jnp.arange(N_STEPS + 1, 0, -1)),
}
SCHEDULE_MATCH = {
    "nan_step": "step_sizes",
    "negative_step": "step_sizes",
    "inf_step": "step_sizes",
    "nan_time": "times",
    "negative_time": "times",
    "minus_inf_time": "times",
    "times_too_short": "times",
    "phases_too_short": "phases",
    "step_sizes_2d": "step_sizes",
    "int_times": "times",
}


class Out(NamedTuple):
    """What a case's result is checked on: positions, reverted steps, extra."""

    position: Any
    num_diverging: Any = None
    extra: Any = None


def run(**kw):
    args = dict(
        rng_key=KEY,
        loglikelihood_fn=LL,
        score_fn=SCORE,
        schedule=SCHED,
        position=X0,
        num_chains=2,
    )
    args.update(kw)
    res = na.run_almc(**args)
    return Out(res.state.position, res.num_diverging, res)


def smc(**kw):
    args = dict(
        rng_key=KEY,
        loglikelihood_fn=LL,
        score_fn=SCORE,
        schedule=SCHED,
        position=X0,
        num_particles=4,
    )
    args.update(kw)
    res = na.run_almc_smc(**args)
    return Out(res.particles, res.info.num_diverging, res)


def chunked(**kw):
    args = dict(
        rng_key=KEY,
        loglikelihood_fn=LL,
        score_fn=SCORE,
        schedule=SCHED,
        position=X0,
        num_chains=2,
        num_steps=N_STEPS,
        chunk_size=N_STEPS,
        path=None,
    )
    args.update(kw)
    res = na.run_almc_chunked(**args)
    return Out(res.state.position, res.num_diverging, res)


def bj(position=X0, steps=2, loglik=LL, score=SCORE, schedule=SCHED, key=KEY, **kw):
    """The BlackJAX-style kernel: build, init, a few eager steps."""
    alg = na.almc(loglik, score, schedule, **kw)
    state = alg.init(position)
    div = 0
    for i in range(steps):
        state, info = alg.step(jax.random.fold_in(key, i) if key is KEY else key, state)
        div += int(info.is_diverging)
    return Out(state.position, div)


def bjsmc(positions=None, loglik=LL, score=SCORE, schedule=SCHED, key=KEY, **kw):
    alg = na.almc_smc(loglik, score, schedule, **kw)
    state = alg.init(jnp.zeros((4, D)) if positions is None else positions)
    state, info = alg.step(key, state)
    return Out(state.particles.position, info.num_diverging)


def prior(**kw):
    args = dict(
        rng_key=KEY, score_fn=SCORE, event_shape=(D,), num_samples=3, num_steps=5
    )
    args.update(kw)
    return Out(scores.sample_prior(**args))


def dps(**kw):
    args = dict(
        rng_key=KEY,
        score_fn=SCORE,
        loglikelihood_fn=LL,
        position=X0,
        num_samples=2,
        num_steps=4,
        guidance_scale=0.1,
    )
    args.update(kw)
    return Out(baselines.dps(**args))


def langevin(**kw):
    args = dict(
        rng_key=KEY,
        score_fn=SCORE,
        loglikelihood_fn=LL,
        position=X0,
        num_samples=2,
        num_steps=4,
        step_size=0.01,
    )
    args.update(kw)
    return Out(baselines.langevin(**args))


def annealed(**kw):
    args = dict(
        rng_key=KEY,
        score_fn=SCORE,
        loglikelihood_fn=LL,
        position=X0,
        num_samples=2,
        num_levels=2,
        steps_per_level=2,
        step_size=0.01,
    )
    args.update(kw)
    return Out(baselines.annealed_langevin(**args))


def mcgdiff(**kw):
    args = dict(
        rng_key=KEY,
        score_fn=SCORE,
        A=A_OBS,
        y=Y_OBS,
        noise_std=0.1,
        num_particles=4,
        num_steps=4,
    )
    args.update(kw)
    res = baselines.mcgdiff(**args)
    return Out(res.particles, None, res)


def tds(**kw):
    args = dict(
        rng_key=KEY,
        score_fn=SCORE,
        likelihood=(A_OBS, Y_OBS, 0.1),
        num_particles=4,
        num_steps=4,
    )
    args.update(kw)
    res = baselines.tds(**args)
    return Out(res.particles, None, res)


def score_site(score=SCORE, shape=(D,)):
    return na.ScorePrior(score, event_shape=shape)


def model(y=None):
    x = numpyro.sample("x", score_site())
    numpyro.sample("y", dist.Normal(x.sum(), 0.5), obs=y)


def model_sigma(y=None):
    x = numpyro.sample("x", score_site())
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(x.sum(), sigma), obs=y)


def model_no_score_prior(y=None):
    x = numpyro.sample("x", dist.Normal(jnp.zeros(D), 1.0).to_event(1))
    numpyro.sample("y", dist.Normal(x.sum(), 0.5), obs=y)


def model_discrete(y=None):
    x = numpyro.sample("x", score_site())
    k = numpyro.sample("k", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(x.sum() + k, 0.5), obs=y)


def model_nan_score(y=None):
    x = numpyro.sample("x", score_site(NAN_SCORE))
    numpyro.sample("y", dist.Normal(x.sum(), 0.5), obs=y)


def model_poisson(y=None):
    x = numpyro.sample("x", score_site())
    numpyro.sample("y", dist.Poisson(jnp.exp(x.sum())), obs=y)


def mcmc(
    model_fn=model,
    *,
    kernel=None,
    num_warmup=12,
    num_samples=2,
    num_chains=1,
    rng_key=KEY,
    init_params=None,
    y=1.0,
    **kernel_kw,
):
    kernel = (kernel or na.ALMC)(model_fn, **kernel_kw)
    m = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    m.run(rng_key, y=y, init_params=init_params)
    return Out(m.get_samples()["x"], None, m)


def history(num_steps=4, chains=2):
    """A (states, infos) history of the BlackJAX kernel, chains on a leading axis."""
    alg = na.almc(LL, SCORE, SCHED)

    def one(key):
        state = alg.init(X0)
        return jax.lax.scan(
            lambda s, k: (lambda out: (out[0], out))(alg.step(k, s)),
            state,
            jax.random.split(key, num_steps),
        )[1]

    return jax.vmap(one)(jax.random.split(KEY, chains))


_CACHE: dict = {}


def cached(name, make):
    if name not in _CACHE:
        _CACHE[name] = make()
    return _CACHE[name]


def run_result():
    return cached("run", lambda: run(final_window=2).extra)


def smc_result():
    return cached("smc", lambda: smc().extra)


def smc_with_log_weights(values):
    res = smc_result()
    return res._replace(log_weights=jnp.asarray(values, res.log_weights.dtype))


def idata(draws):
    return arviz.from_dict(posterior={"x": np.asarray(draws)})


def draws(n=20, d=D, fill=None):
    x = np.array(jax.random.normal(jax.random.key(1), (n, d)))
    if fill is not None:
        x[3, 0] = fill
    return x


def x64(fn):
    """``fn`` run with float64 enabled (the x64-mix cases)."""

    def wrapped():
        with jax.enable_x64(True):
            return fn()

    return wrapped


# ---------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------


class Raises(NamedTuple):
    exc: type | tuple
    match: str


class Correct(NamedTuple):
    check: Callable[[Out, list], None]
    what: str


def err(exc, match):
    """A clear error: ``exc`` with a message naming ``match`` (any case)."""
    return Raises(exc, "(?i)" + match)


def _leaves_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in jax.tree.leaves(tree))


def _check_finite(out, caught):
    assert _leaves_finite(out.position), "non-finite result"
    if out.num_diverging is not None:
        assert int(np.sum(out.num_diverging)) == 0, "unexpected reverted steps"


def _check_flagged(out, caught):
    assert _leaves_finite(out.position), "reverted steps should leave finite positions"
    assert out.num_diverging is not None and int(np.sum(out.num_diverging)) > 0
    assert any(issubclass(w.category, ALMCRunWarning) for w in caught), (
        "reverted steps without an ALMCRunWarning"
    )


def _check_finite_or_flagged(out, caught):
    flagged = any(issubclass(w.category, ALMCRunWarning) for w in caught)
    if flagged:
        _check_flagged(out, caught)
    else:
        _check_finite(out, caught)
        if out.extra is not None and hasattr(out.extra, "state"):
            assert _leaves_finite(out.extra.state.loglikelihood)


def _check_warned(out, caught):
    assert any(issubclass(w.category, RuntimeWarning) for w in caught) or (
        _leaves_finite(out.position)
    ), "a non-finite result without a warning"


def _check_f32(out, caught):
    _check_finite(out, caught)
    for leaf in jax.tree.leaves(out.position):
        assert leaf.dtype == jnp.float32, f"dtype changed to {leaf.dtype}"


FINITE = Correct(_check_finite, "finite")
FLAGGED = Correct(_check_flagged, "reverted and flagged")
FINITE_OR_FLAGGED = Correct(_check_finite_or_flagged, "finite or flagged")
NOT_SILENT = Correct(_check_warned, "finite or warned")
FLOAT32 = Correct(_check_f32, "finite, position's dtype")


def _nan_stats(out, caught):
    table = out.position
    assert np.isnan(np.asarray(table["mean"], dtype=float)).any() or any(
        issubclass(w.category, RuntimeWarning) for w in caught
    ), "NaN draws summarised as finite numbers without a warning"


NAN_VISIBLE = Correct(_nan_stats, "NaN visible in the summary")


def _smc_flagged(out, caught):
    assert any(issubclass(w.category, ALMCRunWarning) for w in caught), (
        "a collapsed / diverged SMC run without an ALMCRunWarning"
    )


SMC_FLAGGED = Correct(_smc_flagged, "SMC run flagged")


# ---------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------

CASES: list[tuple[str, Callable[[], Any], Raises | Correct]] = []


def add(table):
    CASES.extend(table)


# -- PRNG keys, on every entry point that takes one ----------------------------------
KEY_ENTRIES = {
    "run_almc": lambda k: run(rng_key=k),
    "run_almc_smc": lambda k: smc(rng_key=k),
    "run_almc_chunked": lambda k: chunked(rng_key=k),
    "sample_prior": lambda k: prior(rng_key=k),
    "dps": lambda k: dps(rng_key=k),
    "langevin": lambda k: langevin(rng_key=k),
    "annealed_langevin": lambda k: annealed(rng_key=k),
    "mcgdiff": lambda k: mcgdiff(rng_key=k),
    "tds": lambda k: tds(rng_key=k),
}
BAD_KEYS = {
    "int_0": lambda: 0,
    "float": lambda: 1.5,
    "none": lambda: None,
    "str": lambda: "seed",
    "uint32_3": lambda: jnp.zeros(3, jnp.uint32),
    "int32_pair": lambda: np.array([0, 1], np.int32),
    "batch_of_keys": lambda: jax.random.split(KEY, 3),
}
for entry, call in KEY_ENTRIES.items():
    for kname, make in BAD_KEYS.items():
        add(
            [
                (
                    f"{entry}-key-{kname}",
                    lambda c=call, m=make: c(m()),
                    err(TypeError, "rng_key"),
                )
            ]
        )
    # A legacy uint32[2] key is supported.
    add(
        [
            (
                f"{entry}-key-legacy_uint32",
                lambda c=call: c(jax.random.PRNGKey(0)),
                FINITE,
            )
        ]
    )
add(
    [
        ("ALMC-key-int_0", lambda: mcmc(rng_key=0), err(TypeError, "rng_key")),
        ("ALMC-key-str", lambda: mcmc(rng_key="seed"), err(TypeError, "rng_key")),
        ("almc-step-key-int_0", lambda: bj(key=0), err(TypeError, "rng_key")),
        ("almc_smc-step-key-int_0", lambda: bjsmc(key=0), err(TypeError, "rng_key")),
    ]
)

# -- positions: types, shapes, non-finite values -------------------------------------
POSITION_ENTRIES = {
    "run_almc": lambda p: run(position=p),
    "run_almc_smc": lambda p: smc(position=p),
    "run_almc_chunked": lambda p: chunked(position=p),
    "almc": lambda p: bj(position=p),
    "dps": lambda p: dps(position=p),
    "langevin": lambda p: langevin(position=p),
    "annealed_langevin": lambda p: annealed(position=p),
}
BAD_POSITIONS = {
    "int": (lambda: jnp.zeros(D, jnp.int32), TypeError),
    "bool": (lambda: jnp.zeros(D, bool), TypeError),
    "list_of_ints": (lambda: [0, 0], TypeError),
    "str": (lambda: "zeros", TypeError),
    "none": (lambda: None, (TypeError, ValueError)),
    "empty": (lambda: jnp.zeros(0), ValueError),
}
for entry, call in POSITION_ENTRIES.items():
    for pname, (make, exc) in BAD_POSITIONS.items():
        add(
            [
                (
                    f"{entry}-position-{pname}",
                    lambda c=call, m=make: c(m()),
                    err(exc, "position"),
                )
            ]
        )
add(
    [
        # run_almc's `position` is a shape template: NaN there is harmless.
        (
            "run_almc-position-nan_template",
            lambda: run(position=jnp.full(D, jnp.nan)),
            FINITE,
        ),
        (
            "almc-position-nan",
            lambda: bj(position=jnp.full(D, jnp.nan)),
            err(ValueError, "position"),
        ),
        (
            "almc-position-inf",
            lambda: bj(position=jnp.array([jnp.inf, 0.0])),
            err(ValueError, "position"),
        ),
        (
            "almc_smc-positions-nan",
            lambda: bjsmc(positions=jnp.full((4, D), jnp.nan)),
            err(ValueError, "position"),
        ),
        (
            "almc_smc-positions-int",
            lambda: bjsmc(positions=jnp.zeros((4, D), jnp.int32)),
            err(TypeError, "position"),
        ),
        (
            "run_almc-position-wrong_size_for_likelihood",
            lambda: run(loglikelihood_fn=AX_LL, position=jnp.zeros(3)),
            err((ValueError, TypeError), "loglikelihood_fn"),
        ),
        (
            "almc-position-wrong_size_for_likelihood",
            lambda: bj(loglik=AX_LL, position=jnp.zeros(3)),
            err((ValueError, TypeError), "loglikelihood_fn"),
        ),
    ]
)

INIT_ENTRIES = {
    "run_almc": lambda v: run(init_positions=v),
    "run_almc_smc": lambda v: smc(init_positions=v),
    "run_almc_chunked": lambda v: chunked(init_positions=v),
}
BAD_INITS = {
    "nan": (lambda n: jnp.full((n, D), jnp.nan), ValueError),
    "inf": (lambda n: jnp.full((n, D), jnp.inf), ValueError),
    "one_nan": (lambda n: jnp.zeros((n, D)).at[0, 1].set(jnp.nan), ValueError),
    "no_chain_axis": (lambda n: jnp.zeros(D), ValueError),
    "too_many_chains": (lambda n: jnp.zeros((n + 1, D)), ValueError),
    "wrong_event": (lambda n: jnp.zeros((n, D + 1)), ValueError),
    "int": (lambda n: jnp.zeros((n, D), jnp.int32), TypeError),
    "dict_for_array": (lambda n: {"x": jnp.zeros((n, D))}, (ValueError, TypeError)),
}
for entry, call in INIT_ENTRIES.items():
    n = 4 if entry == "run_almc_smc" else 2
    for iname, (make, exc) in BAD_INITS.items():
        add(
            [
                (
                    f"{entry}-init_positions-{iname}",
                    lambda c=call, m=make, n=n: c(m(n)),
                    err(exc, "init_positions"),
                )
            ]
        )

# -- callables -------------------------------------------------------------------------
FN_ENTRIES = {
    "run_almc": lambda **f: run(**f),
    "run_almc_smc": lambda **f: smc(**f),
    "run_almc_chunked": lambda **f: chunked(**f),
}
for entry, call in FN_ENTRIES.items():
    add(
        [
            (
                f"{entry}-score_fn-not_callable",
                lambda c=call: c(score_fn=jnp.zeros(D)),
                err(TypeError, "score_fn"),
            ),
            (
                f"{entry}-loglikelihood_fn-not_callable",
                lambda c=call: c(loglikelihood_fn=1.0),
                err(TypeError, "loglikelihood_fn"),
            ),
            (
                f"{entry}-score_fn-wrong_shape",
                lambda c=call: c(score_fn=SHORT_SCORE),
                err(ValueError, "score_fn"),
            ),
            (
                f"{entry}-score_fn-one_argument",
                lambda c=call: c(score_fn=ONE_ARG_SCORE),
                err(TypeError, "score_fn"),
            ),
            (
                f"{entry}-loglikelihood_fn-vector_valued",
                lambda c=call: c(loglikelihood_fn=VECTOR_LL),
                err(ValueError, "loglikelihood_fn"),
            ),
            (
                f"{entry}-schedule-tuple",
                lambda c=call: c(schedule=tuple(SCHED)),
                err(TypeError, "schedule"),
            ),
            (
                f"{entry}-schedule-none",
                lambda c=call: c(schedule=None),
                err(TypeError, "schedule"),
            ),
        ]
    )
add(
    [
        (
            "almc-score_fn-wrong_shape",
            lambda: bj(score=SHORT_SCORE),
            err(ValueError, "score_fn"),
        ),
        (
            "almc-score_fn-one_argument",
            lambda: bj(score=ONE_ARG_SCORE),
            err(TypeError, "score_fn"),
        ),
        (
            "almc-loglikelihood_fn-vector_valued",
            lambda: bj(loglik=VECTOR_LL),
            err(ValueError, "loglikelihood_fn"),
        ),
        (
            "almc-score_fn-not_callable",
            lambda: bj(score=jnp.zeros(D)),
            err(TypeError, "score_fn"),
        ),
        (
            "almc-loglikelihood_fn-not_callable",
            lambda: bj(loglik=None),
            err(TypeError, "loglikelihood_fn"),
        ),
        (
            "almc-schedule-tuple",
            lambda: bj(schedule=tuple(SCHED)),
            err(TypeError, "schedule"),
        ),
        (
            "almc_smc-schedule-tuple",
            lambda: bjsmc(schedule=tuple(SCHED)),
            err(TypeError, "schedule"),
        ),
        (
            "almc_smc-score_fn-wrong_shape",
            lambda: bjsmc(score=SHORT_SCORE),
            err(ValueError, "score_fn"),
        ),
        (
            "almc_smc-loglikelihood_fn-vector_valued",
            lambda: bjsmc(loglik=VECTOR_LL),
            err(ValueError, "loglikelihood_fn"),
        ),
    ]
)

# -- non-finite functions: reverted and flagged ----------------------------------------
add(
    [
        ("run_almc-score_fn-returns_nan", lambda: run(score_fn=NAN_SCORE), FLAGGED),
        (
            "run_almc-loglikelihood_fn-nan_everywhere",
            lambda: run(loglikelihood_fn=NAN_LL),
            FLAGGED,
        ),
        (
            "run_almc-loglikelihood_fn-nan_at_start",
            lambda: run(
                loglikelihood_fn=HOLE_LL, init_positions=jnp.full((2, D), -10.0)
            ),
            FINITE_OR_FLAGGED,
        ),
        (
            "run_almc_chunked-score_fn-returns_nan",
            lambda: chunked(score_fn=NAN_SCORE),
            FLAGGED,
        ),
        (
            "run_almc_smc-score_fn-returns_nan",
            lambda: smc(score_fn=NAN_SCORE),
            SMC_FLAGGED,
        ),
        (
            "run_almc_smc-loglikelihood_fn-nan_everywhere",
            lambda: smc(loglikelihood_fn=NAN_LL),
            SMC_FLAGGED,
        ),
        (
            "almc-score_fn-returns_nan",
            lambda: bj(score=NAN_SCORE, steps=N_STEPS),
            Correct(
                lambda o, w: (
                    (_leaves_finite(o.position) and o.num_diverging > 0)
                    or pytest.fail("not flagged")
                ),
                "reverted",
            ),
        ),
        (
            "sample_prior-score_fn-returns_nan",
            lambda: prior(score_fn=NAN_SCORE),
            NOT_SILENT,
        ),
        ("dps-score_fn-returns_nan", lambda: dps(score_fn=NAN_SCORE), NOT_SILENT),
        (
            "langevin-score_fn-returns_nan",
            lambda: langevin(score_fn=NAN_SCORE),
            NOT_SILENT,
        ),
        (
            "mcgdiff-score_fn-returns_nan",
            lambda: mcgdiff(score_fn=NAN_SCORE),
            NOT_SILENT,
        ),
        ("ALMC-score-returns_nan", lambda: mcmc(model_nan_score), NOT_SILENT),
    ]
)

# -- schedule builders -----------------------------------------------------------------
BUDGET_BAD = [
    ("step_size-negative", dict(step_size=-0.5), ValueError, "step_size"),
    ("step_size-zero", dict(step_size=0.0), ValueError, "step_size"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("step_size-inf", dict(step_size=float("inf")), ValueError, "step_size"),
    ("step_size-str", dict(step_size="0.5"), TypeError, "step_size"),
    ("step_size-array", dict(step_size=jnp.array([0.5, 0.5])), TypeError, "step_size"),
    ("initial_time-huge_400", dict(initial_time=400.0), ValueError, "initial_time"),
    ("initial_time-1e6", dict(initial_time=1e6), ValueError, "initial_time"),
    ("initial_time-nan", dict(initial_time=float("nan")), ValueError, "initial_time"),
    ("initial_time-inf", dict(initial_time=float("inf")), ValueError, "initial_time"),
    ("initial_time-negative", dict(initial_time=-1.0), ValueError, "initial_time"),
    ("initial_time-zero", dict(initial_time=0.0), ValueError, "initial_time"),
    ("early_stop_time-equal", dict(early_stop_time=3.0), ValueError, "early_stop_time"),
    ("early_stop_time-above", dict(early_stop_time=5.0), ValueError, "early_stop_time"),
    ("early_stop_time-zero", dict(early_stop_time=0.0), ValueError, "early_stop_time"),
    (
        "early_stop_time-negative",
        dict(early_stop_time=-0.1),
        ValueError,
        "early_stop_time",
    ),
    (
        "early_stop_time-nan",
        dict(early_stop_time=float("nan")),
        ValueError,
        "early_stop_time",
    ),
    (
        "early_stop_time-underflows_1e-50",
        dict(early_stop_time=1e-50),
        ValueError,
        "early_stop_time",
    ),
    ("grid-unknown", dict(grid="linear"), ValueError, "grid"),
    ("grid-case", dict(grid="SNR"), ValueError, "grid"),
    ("grid-none", dict(grid=None), ValueError, "grid"),
    ("step_rule-unknown", dict(step_rule="adaptive"), ValueError, "step_rule"),
    ("step_rule-none", dict(step_rule=None), ValueError, "step_rule"),
    (
        "min_step_fraction-negative",
        dict(min_step_fraction=-0.1),
        ValueError,
        "min_step_fraction",
    ),
    (
        "min_step_fraction-nan",
        dict(min_step_fraction=float("nan")),
        ValueError,
        "min_step_fraction",
    ),
    ("tail_fraction-one", dict(tail_fraction=1.0), ValueError, "tail_fraction"),
    ("tail_fraction-negative", dict(tail_fraction=-0.1), ValueError, "tail_fraction"),
    (
        "tail_fraction-nan",
        dict(tail_fraction=float("nan")),
        ValueError,
        "tail_fraction",
    ),
    (
        "num_warm_start_steps-negative",
        dict(num_warm_start_steps=-1),
        ValueError,
        "num_warm_start_steps",
    ),
    (
        "num_warm_start_steps-float",
        dict(num_warm_start_steps=2.5),
        TypeError,
        "num_warm_start_steps",
    ),
    (
        "warm_start_step_size-zero",
        dict(warm_start_step_size=0.0),
        ValueError,
        "warm_start_step_size",
    ),
    (
        "warm_start_step_size-nan",
        dict(warm_start_step_size=float("nan")),
        ValueError,
        "warm_start_step_size",
    ),
    (
        "warm_start_step_size-negative",
        dict(warm_start_step_size=-0.1),
        ValueError,
        "warm_start_step_size",
    ),
    ("dtype-int32", dict(dtype=jnp.int32), (TypeError, ValueError), "dtype"),
    ("dtype-bool", dict(dtype=bool), (TypeError, ValueError), "dtype"),
    ("dtype-str", dict(dtype="half-precision"), (TypeError, ValueError), "dtype"),
]
for name, kw, exc, match in BUDGET_BAD:
    add(
        [
            (
                f"budget_schedule-{name}",
                lambda kw=kw: na.budget_schedule(100, **kw),
                err(exc, match),
            )
        ]
    )
for name, n, exc in [
    ("zero", 0, ValueError),
    ("negative", -5, ValueError),
    ("one", 1, ValueError),
    ("float", 100.0, TypeError),
    ("float_frac", 2.5, TypeError),
    ("bool", True, TypeError),
    ("str", "100", TypeError),
    ("none", None, TypeError),
]:
    add(
        [
            (
                f"budget_schedule-num_score_evals-{name}",
                lambda n=n: na.budget_schedule(n),
                err(exc, "num_score_evals"),
            )
        ]
    )
add(
    [
        (
            "budget_schedule-num_score_evals-numpy_int",
            lambda: Out(na.budget_schedule(np.int64(10)).step_sizes),
            FINITE,
        )
    ]
)

PAPER_OK = dict(
    step_size=0.1,
    path_speed=2.0,
    initial_time=1.0,
    early_stop_time=0.5,
    num_warm_start_steps=2,
    warm_start_step_size=0.1,
)
PAPER_BAD = [
    ("step_size-zero", dict(step_size=0.0), ValueError, "step_size"),
    ("step_size-negative", dict(step_size=-0.1), ValueError, "step_size"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("step_size-inf", dict(step_size=float("inf")), ValueError, "step_size"),
    ("path_speed-zero", dict(path_speed=0.0), ValueError, "path_speed"),
    ("path_speed-nan", dict(path_speed=float("nan")), ValueError, "path_speed"),
    ("path_speed-inf", dict(path_speed=float("inf")), ValueError, "path_speed"),
    ("initial_time-huge", dict(initial_time=1e12), ValueError, "initial_time"),
    ("step_size-tiny_too_many_steps", dict(step_size=1e-12), ValueError, "steps"),
    ("initial_time-nan", dict(initial_time=float("nan")), ValueError, "initial_time"),
    ("initial_time-inf", dict(initial_time=float("inf")), ValueError, "initial_time"),
    ("early_stop_time-equal", dict(early_stop_time=1.0), ValueError, "early_stop_time"),
    ("early_stop_time-above", dict(early_stop_time=2.0), ValueError, "early_stop_time"),
    ("early_stop_time-zero", dict(early_stop_time=0.0), ValueError, "early_stop_time"),
    (
        "num_warm_start_steps-negative",
        dict(num_warm_start_steps=-1),
        ValueError,
        "num_warm_start_steps",
    ),
    (
        "num_warm_start_steps-float",
        dict(num_warm_start_steps=1.5),
        TypeError,
        "num_warm_start_steps",
    ),
    (
        "warm_start_step_size-zero",
        dict(warm_start_step_size=0.0),
        ValueError,
        "warm_start_step_size",
    ),
    (
        "warm_start_step_size-nan",
        dict(warm_start_step_size=float("nan")),
        ValueError,
        "warm_start_step_size",
    ),
    ("num_tail_steps-negative", dict(num_tail_steps=-1), ValueError, "num_tail_steps"),
    ("num_tail_steps-float", dict(num_tail_steps=1.5), TypeError, "num_tail_steps"),
    ("dtype-int32", dict(dtype=jnp.int32), (TypeError, ValueError), "dtype"),
]
for name, kw, exc, match in PAPER_BAD:
    add(
        [
            (
                f"paper_schedule-{name}",
                lambda kw=kw: na.paper_schedule(**{**PAPER_OK, **kw}),
                err(exc, match),
            )
        ]
    )

LANGEVIN_BAD = [
    ("time-nan", dict(time=float("nan")), ValueError, "time"),
    ("time-zero", dict(time=0.0), ValueError, "time"),
    ("time-negative", dict(time=-1.0), ValueError, "time"),
    ("time-inf", dict(time=float("inf")), ValueError, "time"),
    ("step_size-zero", dict(step_size=0.0), ValueError, "step_size"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("num_steps-zero", dict(num_steps=0), ValueError, "num_steps"),
    ("num_steps-negative", dict(num_steps=-3), ValueError, "num_steps"),
    ("num_steps-float", dict(num_steps=2.5), TypeError, "num_steps"),
    ("dtype-int32", dict(dtype=jnp.int32), (TypeError, ValueError), "dtype"),
]
for name, kw, exc, match in LANGEVIN_BAD:
    args = {**dict(time=0.1, step_size=0.01, num_steps=5), **kw}
    add(
        [
            (
                f"langevin_schedule-{name}",
                lambda a=args: na.langevin_schedule(**a),
                err(exc, match),
            )
        ]
    )

ANNEALED_SCHED_BAD = [
    ("num_levels-zero", dict(num_levels=0), ValueError, "num_levels"),
    ("steps_per_level-zero", dict(steps_per_level=0), ValueError, "steps_per_level"),
    ("steps_per_level-float", dict(steps_per_level=1.5), TypeError, "steps_per_level"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("step_size-negative", dict(step_size=-1.0), ValueError, "step_size"),
    (
        "times-swapped",
        dict(initial_time=0.01, final_time=5.0),
        ValueError,
        "initial_time",
    ),
    ("final_time-zero", dict(final_time=0.0), ValueError, "final_time"),
    ("dtype-int32", dict(dtype=jnp.int32), (TypeError, ValueError), "dtype"),
]
for name, kw, exc, match in ANNEALED_SCHED_BAD:
    args = {
        **dict(
            num_levels=3,
            steps_per_level=2,
            step_size=0.01,
            initial_time=5.0,
            final_time=0.01,
        ),
        **kw,
    }
    add(
        [
            (
                f"annealed_langevin_schedule-{name}",
                lambda a=args: baselines.annealed_langevin_schedule(**a),
                err(exc, match),
            )
        ]
    )

# -- hand-built schedules on every driver that takes one ------------------------------
SCHEDULE_ENTRIES = {
    "run_almc": lambda s: run(schedule=s),
    "run_almc_smc": lambda s: smc(schedule=s),
    "run_almc_chunked": lambda s: chunked(schedule=s),
    "almc": lambda s: bj(schedule=s),
    "almc_smc": lambda s: bjsmc(schedule=s),
    "ALMC": lambda s: mcmc(schedule=s, num_warmup=s.num_steps),
}
for entry, call in SCHEDULE_ENTRIES.items():
    for sname, make in BAD_SCHEDULES.items():
        exc = (TypeError, ValueError) if sname == "int_times" else ValueError
        add(
            [
                (
                    f"{entry}-schedule-{sname}",
                    lambda c=call, m=make: c(m()),
                    err(exc, SCHEDULE_MATCH[sname]),
                )
            ]
        )

# -- counts and step options ----------------------------------------------------------
BAD_COUNTS = [
    ("zero", 0, ValueError),
    ("negative", -1, ValueError),
    ("float", 2.5, TypeError),
    ("bool", True, TypeError),
    ("str", "4", TypeError),
    ("none", None, TypeError),
]
for name, n, exc in BAD_COUNTS:
    add(
        [
            (
                f"run_almc-num_chains-{name}",
                lambda n=n: run(num_chains=n),
                err(exc, "num_chains"),
            ),
            (
                f"run_almc_chunked-num_chains-{name}",
                lambda n=n: chunked(num_chains=n),
                err(exc, "num_chains"),
            ),
            (
                f"run_almc_smc-num_particles-{name}",
                lambda n=n: smc(num_particles=n),
                err(exc, "num_particles"),
            ),
        ]
    )
    if n is not None:  # sample_prior(num_samples=None) is one unbatched draw
        add(
            [
                (
                    f"sample_prior-num_samples-{name}",
                    lambda n=n: prior(num_samples=n),
                    err(exc, "num_samples"),
                )
            ]
        )
add(
    [
        (
            "run_almc_smc-num_particles-one",
            lambda: smc(num_particles=1),
            err(ValueError, "num_particles"),
        ),
        ("run_almc-num_chains-numpy_int", lambda: run(num_chains=np.int64(2)), FINITE),
        (
            "run_almc-num_steps-zero",
            lambda: run(num_steps=0),
            err(ValueError, "num_steps"),
        ),
        (
            "run_almc-num_steps-negative",
            lambda: run(num_steps=-4),
            err(ValueError, "num_steps"),
        ),
        (
            "run_almc-num_steps-float",
            lambda: run(num_steps=4.0),
            err(TypeError, "num_steps"),
        ),
        (
            "run_almc-final_window-negative",
            lambda: run(final_window=-1),
            err(ValueError, "final_window"),
        ),
        (
            "run_almc-final_window-float",
            lambda: run(final_window=2.5),
            err(TypeError, "final_window"),
        ),
        (
            "run_almc-final_window-too_long",
            lambda: run(final_window=N_STEPS + 5),
            err(ValueError, "final_window"),
        ),
        (
            "run_almc-path_every-negative",
            lambda: run(path_every=-1),
            err(ValueError, "path_every"),
        ),
        (
            "run_almc-path_every-float",
            lambda: run(path_every=1.5),
            err(TypeError, "path_every"),
        ),
        (
            "run_almc-sites-unknown",
            lambda: run(path_every=2, sites=["nope"]),
            err(ValueError, "sites"),
        ),
        (
            "run_almc-divergence_threshold-zero",
            lambda: run(divergence_threshold=0.0),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "run_almc-divergence_threshold-negative",
            lambda: run(divergence_threshold=-5.0),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "run_almc-divergence_threshold-nan",
            lambda: run(divergence_threshold=float("nan")),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "run_almc-divergence_threshold-str",
            lambda: run(divergence_threshold="big"),
            err(TypeError, "divergence_threshold"),
        ),
        (
            "run_almc_smc-divergence_threshold-zero",
            lambda: smc(divergence_threshold=0.0),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "run_almc_smc-divergence_threshold-nan",
            lambda: smc(divergence_threshold=float("nan")),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "run_almc_smc-divergence_threshold-str",
            lambda: smc(divergence_threshold="big"),
            err(TypeError, "divergence_threshold"),
        ),
        (
            "almc_smc-divergence_threshold-zero",
            lambda: bjsmc(divergence_threshold=0.0),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "almc_smc-divergence_threshold-nan",
            lambda: bjsmc(divergence_threshold=float("nan")),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "almc_smc-divergence_threshold-str",
            lambda: bjsmc(divergence_threshold="big"),
            err(TypeError, "divergence_threshold"),
        ),
        (
            "run_almc-final_stage-paper_likelihood",
            lambda: run(final_stage=True),
            err(ValueError, "final.stage"),
        ),
        (
            "run_almc-final_stage-str",
            lambda: run(final_stage="yes"),
            err((TypeError, ValueError), "final_stage"),
        ),
        (
            "run_almc-devices-str",
            lambda: run(devices="gpu0"),
            err((TypeError, ValueError), "devices"),
        ),
        (
            "run_almc_chunked-num_steps-zero",
            lambda: chunked(num_steps=0),
            err(ValueError, "num_steps"),
        ),
        (
            "run_almc_chunked-chunk_size-zero",
            lambda: chunked(chunk_size=0),
            err(ValueError, "chunk_size"),
        ),
        (
            "run_almc_chunked-chunk_size-float",
            lambda: chunked(chunk_size=2.5),
            err(TypeError, "chunk_size"),
        ),
        (
            "run_almc_chunked-keep_every-zero",
            lambda: chunked(keep_every=0),
            err(ValueError, "keep_every"),
        ),
        (
            "run_almc_chunked-keep_from-negative",
            lambda: chunked(keep_from=-1),
            err(ValueError, "keep_from"),
        ),
        ("run_almc_chunked-tag-int", lambda: chunked(tag=3), err(TypeError, "tag")),
        (
            "run_almc_smc-ess_threshold-negative",
            lambda: smc(ess_threshold=-0.1),
            err(ValueError, "ess_threshold"),
        ),
        (
            "run_almc_smc-ess_threshold-above_one",
            lambda: smc(ess_threshold=1.5),
            err(ValueError, "ess_threshold"),
        ),
        (
            "run_almc_smc-ess_threshold-nan",
            lambda: smc(ess_threshold=float("nan")),
            err(ValueError, "ess_threshold"),
        ),
        (
            "run_almc_smc-ess_threshold-str",
            lambda: smc(ess_threshold="half"),
            err((TypeError, ValueError), "ess_threshold"),
        ),
        (
            "run_almc_smc-num_probes-zero",
            lambda: smc(divergence="hutchinson", num_probes=0),
            err(ValueError, "num_probes"),
        ),
        (
            "run_almc_smc-num_probes-float",
            lambda: smc(divergence="hutchinson", num_probes=1.5),
            err(TypeError, "num_probes"),
        ),
        (
            "run_almc_smc-final_stage-paper_likelihood",
            lambda: smc(final_stage=True),
            err(ValueError, "final.stage"),
        ),
        (
            "run_almc_smc-warm_start_log_normalizer-nan",
            lambda: smc(warm_start_log_normalizer=float("nan")),
            err(ValueError, "warm_start_log_normalizer"),
        ),
        (
            "run_almc_smc-warm_start_log_normalizer-vector",
            lambda: smc(warm_start_log_normalizer=jnp.zeros(3)),
            err(ValueError, "warm_start_log_normalizer"),
        ),
        (
            "almc-divergence_threshold-zero",
            lambda: bj(divergence_threshold=0.0),
            err(ValueError, "divergence_threshold"),
        ),
        (
            "almc_smc-ess_threshold-above_one",
            lambda: bjsmc(ess_threshold=2.0),
            err(ValueError, "ess_threshold"),
        ),
        (
            "almc_smc-num_probes-zero",
            lambda: bjsmc(num_probes=0),
            err(ValueError, "num_probes"),
        ),
    ]
)

# -- unknown option strings -------------------------------------------------------------
OPTIONS = [
    ("divergence", "approx"),
    ("resampling", "bogus"),
    ("quadrature", "simpson"),
    ("warm_start_correction", "both"),
]
for opt, value in OPTIONS:
    add(
        [
            (
                f"run_almc_smc-{opt}-unknown",
                lambda o=opt, v=value: smc(**{o: v}),
                err(ValueError, opt),
            ),
            (
                f"almc_smc-{opt}-unknown",
                lambda o=opt, v=value: bjsmc(**{o: v}),
                err(ValueError, opt),
            ),
            (
                f"ALMCSMC-{opt}-unknown",
                lambda o=opt, v=value: na.ALMCSMC(model, **{o: v}),
                err(ValueError, opt),
            ),
        ]
    )
add(
    [
        (
            "run_almc_smc-divergence-case",
            lambda: smc(divergence="Exact"),
            err(ValueError, "divergence"),
        ),
        (
            "ALMC-likelihood_path-unknown",
            lambda: na.ALMC(model, likelihood_path="noisy"),
            err(ValueError, "likelihood_path"),
        ),
        (
            "ALMCSMC-likelihood_path-unknown",
            lambda: na.ALMCSMC(model, likelihood_path="exact"),
            err(ValueError, "likelihood_path"),
        ),
        (
            "ALMC-grid-unknown",
            lambda: na.ALMC(model, grid="linear"),
            err(ValueError, "grid"),
        ),
        (
            "ALMC-step_rule-unknown",
            lambda: na.ALMC(model, step_rule="adaptive"),
            err(ValueError, "step_rule"),
        ),
        (
            "ALMCSMC-grid-unknown",
            lambda: na.ALMCSMC(model, grid="cosine"),
            err(ValueError, "grid"),
        ),
        (
            "ALMC-preconditioner-unknown_str",
            lambda: na.ALMC(model, preconditioner="diag"),
            err(ValueError, "preconditioner"),
        ),
        (
            "mcgdiff-resampling-unknown",
            lambda: mcgdiff(resampling="bogus"),
            err(ValueError, "resampling"),
        ),
        (
            "tds-resampling-unknown",
            lambda: tds(resampling="bogus"),
            err(ValueError, "resampling"),
        ),
        (
            "to_inference_data-draw-unknown",
            lambda: na.to_inference_data(run_result(), draw="first"),
            err(ValueError, "draw"),
        ),
        (
            "choose_early_stop_time-reference-unknown",
            lambda: diagnostics.choose_early_stop_time(
                [0.1, 0.2], [draws(), draws()], reference="first"
            ),
            err(ValueError, "reference"),
        ),
    ]
)

# -- NumPyro kernels: arguments -------------------------------------------------------
for kname, K in [("ALMC", na.ALMC), ("ALMCSMC", na.ALMCSMC)]:
    add(
        [
            (
                f"{kname}-theta_step_size-inf",
                lambda K=K: K(model, theta_step_size=float("inf")),
                err(ValueError, "theta_step_size"),
            ),
            (
                f"{kname}-theta_step_size-negative",
                lambda K=K: K(model, theta_step_size=-0.01),
                err(ValueError, "theta_step_size"),
            ),
            (
                f"{kname}-theta_step_size-zero",
                lambda K=K: K(model, theta_step_size=0.0),
                err(ValueError, "theta_step_size"),
            ),
            (
                f"{kname}-theta_step_size-nan",
                lambda K=K: K(model, theta_step_size=float("nan")),
                err(ValueError, "theta_step_size"),
            ),
            (
                f"{kname}-step_size-negative",
                lambda K=K: K(model, step_size=-0.5),
                err(ValueError, "step_size"),
            ),
            (
                f"{kname}-step_size-nan",
                lambda K=K: K(model, step_size=float("nan")),
                err(ValueError, "step_size"),
            ),
            (
                f"{kname}-initial_time-huge_400",
                lambda K=K: K(model, initial_time=400.0),
                err(ValueError, "initial_time"),
            ),
            (
                f"{kname}-early_stop_time-above_initial",
                lambda K=K: K(model, early_stop_time=4.0),
                err(ValueError, "early_stop_time"),
            ),
            (
                f"{kname}-num_warm_start_steps-negative",
                lambda K=K: K(model, num_warm_start_steps=-1),
                err(ValueError, "num_warm_start_steps"),
            ),
            (
                f"{kname}-num_warm_start_steps-float",
                lambda K=K: K(model, num_warm_start_steps=2.5),
                err(TypeError, "num_warm_start_steps"),
            ),
            (
                f"{kname}-divergence_threshold-zero",
                lambda K=K: K(model, divergence_threshold=0.0),
                err(ValueError, "divergence_threshold"),
            ),
            (
                f"{kname}-schedule-tuple",
                lambda K=K: K(model, schedule=tuple(SCHED)),
                err(TypeError, "schedule"),
            ),
            (
                f"{kname}-final_stage-paper_path",
                lambda K=K: K(model, likelihood_path="paper", final_stage=True),
                err(ValueError, "final_stage"),
            ),
            (
                f"{kname}-score_fn-with_model",
                lambda K=K: K(model, score_fn=SCORE),
                err(ValueError, "score_fn"),
            ),
            (f"{kname}-no_model", lambda K=K: K(), err(ValueError, "model")),
            (
                f"{kname}-preconditioner-matrix",
                lambda K=K: mcmc(
                    kernel=K,
                    preconditioner=jnp.eye(D),
                    num_chains=2 if K is na.ALMCSMC else 1,
                ),
                err((TypeError, ValueError), "preconditioner"),
            ),
            (
                f"{kname}-preconditioner-zero_diagonal",
                lambda K=K: mcmc(
                    kernel=K,
                    preconditioner=DiagonalPreconditioner(jnp.zeros(D)),
                    num_chains=2 if K is na.ALMCSMC else 1,
                ),
                err(ValueError, "preconditioner"),
            ),
        ]
    )
add(
    [
        (
            "ALMCSMC-ess_threshold-above_one",
            lambda: na.ALMCSMC(model, ess_threshold=1.5),
            err(ValueError, "ess_threshold"),
        ),
        (
            "ALMCSMC-num_probes-zero",
            lambda: na.ALMCSMC(model, divergence="hutchinson", num_probes=0),
            err(ValueError, "num_probes"),
        ),
        (
            "ALMCSMC-num_chains-one",
            lambda: mcmc(kernel=na.ALMCSMC, num_chains=1),
            err(ValueError, "num_chains"),
        ),
        (
            "ALMC-potential_fn-no_score_fn",
            lambda: na.ALMC(potential_fn=lambda z: jnp.sum(z**2)),
            err(ValueError, "score_fn"),
        ),
        (
            "ALMC-potential_fn-noised_path",
            lambda: na.ALMC(potential_fn=LL, score_fn=SCORE, likelihood_path="noised"),
            err(ValueError, "likelihood_path"),
        ),
        (
            "ALMC-potential_fn-no_init_params",
            lambda: mcmc(None, potential_fn=lambda z: -LL(z), score_fn=SCORE),
            err(ValueError, "init_params"),
        ),
    ]
)

# -- NumPyro models --------------------------------------------------------------------
add(
    [
        (
            "ALMC-model-no_score_prior",
            lambda: mcmc(model_no_score_prior),
            err(ValueError, "ScorePrior"),
        ),
        (
            "ALMCSMC-model-no_score_prior",
            lambda: mcmc(model_no_score_prior, kernel=na.ALMCSMC, num_chains=2),
            err(ValueError, "ScorePrior"),
        ),
        (
            "ALMC-model-discrete_latent",
            lambda: mcmc(model_discrete),
            err((ValueError, TypeError), "discrete|k"),
        ),
        (
            "ALMCSMC-model-discrete_latent",
            lambda: mcmc(model_discrete, kernel=na.ALMCSMC, num_chains=2),
            err((ValueError, TypeError), "discrete|k"),
        ),
        (
            "ALMC-init_params-wrong_shape",
            lambda: mcmc(init_params={"x": jnp.zeros(D + 1)}),
            err(ValueError, "init_params"),
        ),
        (
            "ALMC-init_params-nan",
            lambda: mcmc(init_params={"x": jnp.full(D, jnp.nan)}),
            err(ValueError, "init_params"),
        ),
        (
            "ALMC-init_params-unknown_site",
            lambda: mcmc(init_params={"z": jnp.zeros(D)}),
            err(ValueError, "init_params"),
        ),
        (
            "ALMC-init_params-int",
            lambda: mcmc(init_params={"x": jnp.zeros(D, jnp.int32)}),
            err(TypeError, "init_params"),
        ),
        (
            "ALMC-num_warmup-zero",
            lambda: mcmc(num_warmup=0),
            err(ValueError, "num_warmup"),
        ),
        (
            "ALMC-num_warmup-too_small",
            lambda: mcmc(num_warmup=5),
            err(ValueError, "num_warmup"),
        ),
        (
            "ALMCSMC-num_warmup-too_small",
            lambda: mcmc(kernel=na.ALMCSMC, num_chains=2, num_warmup=3),
            err(ValueError, "num_warmup"),
        ),
        (
            "ALMC-num_warmup-schedule_mismatch",
            lambda: mcmc(schedule=SCHED, num_warmup=N_STEPS + 1),
            err(ValueError, "num_warmup"),
        ),
        (
            "ALMC-num_warm_start_steps-fills_warmup",
            lambda: mcmc(num_warm_start_steps=11),
            err(ValueError, "num_warm_start_steps"),
        ),
        (
            "ALMC-noised_path-poisson_observation",
            lambda: mcmc(model_poisson, likelihood_path="noised", y=2.0),
            err(ValueError, "noised|Gaussian"),
        ),
        (
            "ALMC-observation-nan",
            lambda: mcmc(y=float("nan")),
            err((ValueError, RuntimeError), r"obs|`y`|observ"),
        ),
    ]
)

# -- ScorePrior --------------------------------------------------------------------------
add(
    [
        (
            "ScorePrior-score_fn-not_callable",
            lambda: na.ScorePrior(jnp.zeros(D), event_shape=(D,)),
            err(TypeError, "score_fn"),
        ),
        (
            "ScorePrior-event_shape-str",
            lambda: na.ScorePrior(SCORE, event_shape="2"),
            err((TypeError, ValueError), "event_shape"),
        ),
        (
            "ScorePrior-event_shape-negative",
            lambda: na.ScorePrior(SCORE, event_shape=(-2,)),
            err(ValueError, "event_shape"),
        ),
        (
            "ScorePrior-event_shape-float",
            lambda: na.ScorePrior(SCORE, event_shape=(2.5,)),
            err((TypeError, ValueError), "event_shape"),
        ),
        (
            "ScorePrior-log_density_fn-not_callable",
            lambda: na.ScorePrior(SCORE, event_shape=(D,), log_density_fn=1.0),
            err(TypeError, "log_density_fn"),
        ),
        (
            "ScorePrior-num_sample_steps-zero",
            lambda: na.ScorePrior(SCORE, event_shape=(D,), num_sample_steps=0),
            err(ValueError, "num_sample_steps"),
        ),
        (
            "ScorePrior-num_sample_steps-float",
            lambda: na.ScorePrior(SCORE, event_shape=(D,), num_sample_steps=2.5),
            err(TypeError, "num_sample_steps"),
        ),
        (
            "ScorePrior-log_prob-without_density",
            lambda: na.ScorePrior(SCORE, event_shape=(D,)).log_prob(X0),
            err(NotImplementedError, "log_density_fn"),
        ),
        (
            "ScorePrior-score_fn-wrong_shape_in_model",
            lambda: mcmc(
                lambda y=None: numpyro.sample(
                    "y",
                    dist.Normal(
                        numpyro.sample("x", score_site(SHORT_SCORE)).sum(), 0.5
                    ),
                    obs=y,
                )
            ),
            err(ValueError, "score_fn"),
        ),
    ]
)

# -- preconditioners --------------------------------------------------------------------
PRECOND_ENTRIES = {
    "run_almc": lambda p: run(preconditioner=p),
    "run_almc_smc": lambda p: smc(preconditioner=p),
    "run_almc_chunked": lambda p: chunked(preconditioner=p),
    "almc": lambda p: bj(preconditioner=p),
    "almc_smc": lambda p: bjsmc(preconditioner=p),
    "langevin": lambda p: langevin(preconditioner=p),
    "annealed_langevin": lambda p: annealed(preconditioner=p),
}
BAD_PRECONDS = {
    "wrong_size": (
        lambda: na.linear_gaussian_preconditioner(jnp.ones((1, D + 1)), 0.1),
        ValueError,
    ),
    "raw_matrix": (lambda: jnp.eye(D), TypeError),
    "str_auto": (lambda: "auto", (TypeError, ValueError)),
    "zero_diagonal": (lambda: DiagonalPreconditioner(jnp.zeros(D)), ValueError),
    "nan_diagonal": (lambda: DiagonalPreconditioner(jnp.full(D, jnp.nan)), ValueError),
    "diagonal_wrong_size": (
        lambda: DiagonalPreconditioner(jnp.ones(D + 1)),
        ValueError,
    ),
}
for entry, call in PRECOND_ENTRIES.items():
    for pname, (make, exc) in BAD_PRECONDS.items():
        add(
            [
                (
                    f"{entry}-preconditioner-{pname}",
                    lambda c=call, m=make: c(m()),
                    err(exc, "preconditioner"),
                )
            ]
        )

LGP_BAD = [
    (
        "noise_std-nan",
        lambda: na.linear_gaussian_preconditioner(A_OBS, float("nan")),
        ValueError,
        "noise_std",
    ),
    (
        "noise_std-negative",
        lambda: na.linear_gaussian_preconditioner(A_OBS, -0.1),
        ValueError,
        "noise_std",
    ),
    (
        "noise_std-zero",
        lambda: na.linear_gaussian_preconditioner(A_OBS, 0.0),
        ValueError,
        "noise_std",
    ),
    (
        "noise_std-inf",
        lambda: na.linear_gaussian_preconditioner(A_OBS, float("inf")),
        ValueError,
        "noise_std",
    ),
    (
        "noise_std-wrong_length",
        lambda: na.linear_gaussian_preconditioner(A_OBS, jnp.ones(3)),
        ValueError,
        "noise_std",
    ),
    (
        "noise_std-str",
        lambda: na.linear_gaussian_preconditioner(A_OBS, "0.1"),
        TypeError,
        "noise_std",
    ),
    (
        "A-1d",
        lambda: na.linear_gaussian_preconditioner(jnp.ones(D), 0.1),
        ValueError,
        "A",
    ),
    (
        "A-3d",
        lambda: na.linear_gaussian_preconditioner(jnp.ones((1, 1, D)), 0.1),
        ValueError,
        "A",
    ),
    (
        "A-nan",
        lambda: na.linear_gaussian_preconditioner(A_OBS.at[0, 0].set(jnp.nan), 0.1),
        ValueError,
        "A",
    ),
    (
        "A-inf",
        lambda: na.linear_gaussian_preconditioner(A_OBS.at[0, 0].set(jnp.inf), 0.1),
        ValueError,
        "A",
    ),
    ("A-str", lambda: na.linear_gaussian_preconditioner("eye", 0.1), TypeError, "A"),
    (
        "prior_precision-zero",
        lambda: na.linear_gaussian_preconditioner(A_OBS, 0.1, prior_precision=0.0),
        ValueError,
        "prior_precision",
    ),
    (
        "prior_precision-nan",
        lambda: na.linear_gaussian_preconditioner(
            A_OBS, 0.1, prior_precision=float("nan")
        ),
        ValueError,
        "prior_precision",
    ),
    (
        "prior_precision-inf",
        lambda: na.linear_gaussian_preconditioner(
            A_OBS, 0.1, prior_precision=float("inf")
        ),
        ValueError,
        "prior_precision",
    ),
    (
        "dtype-int32",
        lambda: na.linear_gaussian_preconditioner(A_OBS, 0.1, dtype=jnp.int32),
        (TypeError, ValueError),
        "dtype",
    ),
]
for name, fn, exc, match in LGP_BAD:
    add([(f"linear_gaussian_preconditioner-{name}", fn, err(exc, match))])
add(
    [
        (
            "linear_gaussian_preconditioner-A-int",
            lambda: Out(
                na.linear_gaussian_preconditioner(
                    jnp.eye(2, dtype=jnp.int32), 0.1
                ).matrix
            ),
            FINITE,
        ),
        (
            "diagonal_preconditioner-zeros",
            lambda: diagonal_preconditioner(jnp.zeros(D)),
            err(ValueError, "diagonal"),
        ),
        (
            "diagonal_preconditioner-nan",
            lambda: diagonal_preconditioner(jnp.array([1.0, jnp.nan])),
            err(ValueError, "diagonal"),
        ),
        (
            "diagonal_preconditioner-inf",
            lambda: diagonal_preconditioner(jnp.array([1.0, jnp.inf])),
            err(ValueError, "diagonal"),
        ),
        (
            "diagonal_preconditioner-2d",
            lambda: diagonal_preconditioner(jnp.ones((D, D))),
            err(ValueError, "diagonal"),
        ),
        (
            "diagonal_preconditioner-int",
            lambda: diagonal_preconditioner(jnp.ones(D, jnp.int32)),
            err(TypeError, "diagonal"),
        ),
        (
            "dense_preconditioner-nan",
            lambda: dense_preconditioner(jnp.full((D, D), jnp.nan)),
            err(ValueError, "matrix|preconditioner"),
        ),
        (
            "dense_preconditioner-not_symmetric",
            lambda: dense_preconditioner(jnp.array([[1.0, 0.5], [0.0, 1.0]])),
            err(ValueError, "symmetric"),
        ),
        (
            "dense_preconditioner-not_positive",
            lambda: dense_preconditioner(-jnp.eye(D)),
            err(ValueError, "positive definite"),
        ),
        (
            "dense_preconditioner-not_square",
            lambda: dense_preconditioner(jnp.ones((D, D + 1))),
            err(ValueError, "square"),
        ),
        (
            "dense_preconditioner-int",
            lambda: dense_preconditioner(jnp.eye(D, dtype=jnp.int32)),
            err(TypeError, "matrix|preconditioner"),
        ),
    ]
)

# -- the noised likelihood ----------------------------------------------------------------
NGL_BAD = [
    ("noise_std-nan", dict(noise_std=float("nan")), ValueError, "noise_std"),
    ("noise_std-negative", dict(noise_std=-0.1), ValueError, "noise_std"),
    ("noise_std-zero", dict(noise_std=0.0), ValueError, "noise_std"),
    ("noise_std-inf", dict(noise_std=float("inf")), ValueError, "noise_std"),
    ("noise_std-vector", dict(noise_std=jnp.ones(1) * 0.1), ValueError, "noise_std"),
    ("noise_std-str", dict(noise_std="0.1"), TypeError, "noise_std"),
    ("y-wrong_shape", dict(y=jnp.zeros(3)), ValueError, "y"),
    ("y-2d", dict(y=Y_OBS[None, :]), ValueError, "y"),
    ("y-nan", dict(y=jnp.array([jnp.nan])), ValueError, "y"),
    ("y-inf", dict(y=jnp.array([jnp.inf])), ValueError, "y"),
    ("y-str", dict(y="0.3"), (TypeError, ValueError), "y"),
    ("A-1d", dict(A=jnp.ones(D)), ValueError, "A"),
    ("A-3d", dict(A=jnp.ones((1, 1, D))), ValueError, "A"),
    ("A-nan", dict(A=A_OBS.at[0, 1].set(jnp.nan)), ValueError, "A"),
    ("A-empty_rows", dict(A=jnp.zeros((0, D)), y=jnp.zeros(0)), ValueError, "A"),
]
for name, kw, exc, match in NGL_BAD:
    args = {**dict(A=A_OBS, y=Y_OBS, noise_std=0.1), **kw}
    add(
        [
            (
                f"noised_gaussian_likelihood-{name}",
                lambda a=args: na.noised_gaussian_likelihood(**a),
                err(exc, match),
            )
        ]
    )
NOISED = na.noised_gaussian_likelihood(A_OBS, Y_OBS, 0.1)
add(
    [
        (
            "noised_gaussian_likelihood-A-int",
            lambda: Out(
                na.noised_gaussian_likelihood(
                    jnp.eye(2, dtype=jnp.int32), jnp.zeros(2), 0.1
                )(X0, 0.5)
            ),
            FINITE,
        ),
        (
            "run_almc-noised-wrong_position_size",
            lambda: run(loglikelihood_fn=NOISED, position=jnp.zeros(D + 1)),
            err(ValueError, "loglikelihood_fn|position"),
        ),
        (
            "run_almc_smc-noised-wrong_position_size",
            lambda: smc(loglikelihood_fn=NOISED, position=jnp.zeros(D + 1)),
            err(ValueError, "loglikelihood_fn|position"),
        ),
        (
            "run_almc_smc-noised-warm_start_log_normalizer",
            lambda: smc(loglikelihood_fn=NOISED, warm_start_log_normalizer=0.0),
            err(ValueError, "warm_start_log_normalizer"),
        ),
    ]
)

# -- x64 mixes ---------------------------------------------------------------------------
add(
    [
        (
            "run_almc-x64-float64_likelihood_float32_position",
            x64(lambda: run(loglikelihood_fn=LL_F64)),
            FLOAT32,
        ),
        (
            "run_almc-x64-float64_init_float32_position",
            x64(lambda: run(init_positions=jnp.zeros((2, D), jnp.float64))),
            FINITE,
        ),
        (
            "run_almc_smc-x64-float64_likelihood_float32_position",
            x64(lambda: smc(loglikelihood_fn=LL_F64)),
            FLOAT32,
        ),
        (
            "almc-x64-float64_likelihood_float32_position",
            x64(lambda: bj(loglik=LL_F64)),
            FLOAT32,
        ),
        (
            "run_almc-x64-float64_noised_likelihood",
            x64(
                lambda: run(
                    loglikelihood_fn=na.noised_gaussian_likelihood(
                        A_OBS.astype(jnp.float64), Y_OBS.astype(jnp.float64), 0.1
                    )
                )
            ),
            FLOAT32,
        ),
        (
            "run_almc-x64-float64_preconditioner",
            x64(
                lambda: run(
                    preconditioner=na.linear_gaussian_preconditioner(
                        A_OBS.astype(jnp.float64), 0.1
                    )
                )
            ),
            FLOAT32,
        ),
    ]
)

# -- ArviZ export --------------------------------------------------------------------------
add(
    [
        (
            "to_inference_data-history-zero_draws",
            lambda: na.to_inference_data(history(), num_warmup=4),
            err(ValueError, "num_warmup|draws"),
        ),
        (
            "to_inference_data-history-num_warmup_too_large",
            lambda: na.to_inference_data(history(), num_warmup=10),
            err(ValueError, "num_warmup"),
        ),
        (
            "to_inference_data-history-num_warmup_negative",
            lambda: na.to_inference_data(history(), num_warmup=-1),
            err(ValueError, "num_warmup"),
        ),
        (
            "to_inference_data-history-num_warmup_float",
            lambda: na.to_inference_data(history(), num_warmup=1.5),
            err((TypeError, ValueError), "num_warmup"),
        ),
        (
            "to_inference_data-history-swapped",
            lambda: na.to_inference_data(tuple(reversed(history()))),
            err(TypeError, "history"),
        ),
        (
            "to_inference_data-none",
            lambda: na.to_inference_data(None),
            err(TypeError, "ALMCResult"),
        ),
        (
            "to_inference_data-str",
            lambda: na.to_inference_data("run.nc"),
            err(TypeError, "ALMCResult"),
        ),
        (
            "to_inference_data-draw-window_without_window",
            lambda: na.to_inference_data(run(final_window=0).extra, draw="window"),
            err(ValueError, "final_window"),
        ),
        (
            "to_inference_data-warmup-without_path",
            lambda: na.to_inference_data(run_result(), warmup=True),
            err(ValueError, "path_every"),
        ),
        (
            "to_inference_data-var_names-unknown",
            lambda: na.to_inference_data(
                run(
                    position={"a": X0},
                    loglikelihood_fn=lambda p: LL(p["a"]),
                    score_fn=lambda p, t: {"a": -p["a"]},
                ).extra,
                var_names=["b"],
            ),
            err(ValueError, "var_names|b"),
        ),
        (
            "to_inference_data-smc-nan_log_weight",
            lambda: na.to_inference_data(
                smc_with_log_weights([0.0, jnp.nan, 0.0, 0.0])
            ),
            err(ValueError, "log_weight"),
        ),
        (
            "to_inference_data-smc-all_minus_inf",
            lambda: na.to_inference_data(smc_with_log_weights([-jnp.inf] * 4)),
            err(ValueError, "log_weight"),
        ),
        (
            "to_inference_data-smc-plus_inf_log_weight",
            lambda: na.to_inference_data(
                smc_with_log_weights([0.0, jnp.inf, 0.0, 0.0])
            ),
            err(ValueError, "log_weight"),
        ),
        (
            "to_inference_data-smc-nan_log_weight_no_resample",
            lambda: na.to_inference_data(
                smc_with_log_weights([0.0, jnp.nan, 0.0, 0.0]), resample=False
            ),
            err(ValueError, "log_weight"),
        ),
        (
            "to_inference_data-smc-seed_str",
            lambda: na.to_inference_data(smc_result(), seed="a"),
            err((TypeError, ValueError), "seed"),
        ),
    ]
)

# -- sample_prior ---------------------------------------------------------------------------
PRIOR_BAD = [
    ("score_fn-not_callable", dict(score_fn=None), TypeError, "score_fn"),
    ("event_shape-str", dict(event_shape="2"), TypeError, "event_shape"),
    ("event_shape-negative", dict(event_shape=(-1,)), ValueError, "event_shape"),
    ("event_shape-float", dict(event_shape=(2.5,)), TypeError, "event_shape"),
    ("event_shape-none", dict(event_shape=None), TypeError, "event_shape"),
    ("num_steps-zero", dict(num_steps=0), ValueError, "num_steps"),
    ("num_steps-negative", dict(num_steps=-1), ValueError, "num_steps"),
    ("num_steps-float", dict(num_steps=2.5), TypeError, "num_steps"),
    ("initial_time-nan", dict(initial_time=float("nan")), ValueError, "initial_time"),
    ("initial_time-below_final", dict(initial_time=1e-4), ValueError, "initial_time"),
    ("initial_time-huge_400", dict(initial_time=400.0), ValueError, "initial_time"),
    ("initial_time-str", dict(initial_time="5"), TypeError, "initial_time"),
    ("final_time-zero", dict(final_time=0.0), ValueError, "final_time"),
    ("final_time-negative", dict(final_time=-1e-3), ValueError, "final_time"),
    ("final_time-nan", dict(final_time=float("nan")), ValueError, "final_time"),
    ("dtype-int32", dict(dtype=jnp.int32), ValueError, "dtype"),
    ("denoise-str", dict(denoise="yes"), TypeError, "denoise"),
]
for name, kw, exc, match in PRIOR_BAD:
    add([(f"sample_prior-{name}", lambda kw=kw: prior(**kw), err(exc, match))])
add(
    [
        (
            "sample_prior-score_fn-wrong_shape",
            lambda: prior(score_fn=SHORT_SCORE),
            err(ValueError, "score_fn"),
        )
    ]
)

# -- baselines ------------------------------------------------------------------------------
DPS_BAD = [
    ("num_samples-zero", dict(num_samples=0), ValueError, "num_samples"),
    ("num_samples-float", dict(num_samples=2.5), TypeError, "num_samples"),
    ("num_steps-zero", dict(num_steps=0), ValueError, "num_steps"),
    (
        "guidance_scale-nan",
        dict(guidance_scale=float("nan")),
        ValueError,
        "guidance_scale",
    ),
    (
        "guidance_scale-negative",
        dict(guidance_scale=-1.0),
        ValueError,
        "guidance_scale",
    ),
    (
        "guidance_scale-inf",
        dict(guidance_scale=float("inf")),
        ValueError,
        "guidance_scale",
    ),
    (
        "times-swapped",
        dict(initial_time=0.001, final_time=5.0),
        ValueError,
        "initial_time",
    ),
    ("initial_time-huge_400", dict(initial_time=400.0), ValueError, "initial_time"),
    ("final_time-zero", dict(final_time=0.0), ValueError, "final_time"),
    ("eps-zero", dict(eps=0.0), ValueError, "eps"),
    ("normalize-str", dict(normalize="yes"), TypeError, "normalize"),
    ("score_fn-not_callable", dict(score_fn=1.0), TypeError, "score_fn"),
    (
        "loglikelihood_fn-vector_valued",
        dict(loglikelihood_fn=VECTOR_LL),
        ValueError,
        "loglikelihood_fn",
    ),
    ("score_fn-wrong_shape", dict(score_fn=SHORT_SCORE), ValueError, "score_fn"),
]
for name, kw, exc, match in DPS_BAD:
    add([(f"dps-{name}", lambda kw=kw: dps(**kw), err(exc, match))])
LANGEVIN_BASE_BAD = [
    ("num_samples-zero", dict(num_samples=0), ValueError, "num_samples"),
    ("num_steps-negative", dict(num_steps=-1), ValueError, "num_steps"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("step_size-zero", dict(step_size=0.0), ValueError, "step_size"),
    ("step_size-inf", dict(step_size=float("inf")), ValueError, "step_size"),
    ("time-nan", dict(time=float("nan")), ValueError, "time"),
    ("time-negative", dict(time=-0.1), ValueError, "time"),
    (
        "loglikelihood_fn-not_callable",
        dict(loglikelihood_fn="ll"),
        TypeError,
        "loglikelihood_fn",
    ),
    ("score_fn-wrong_shape", dict(score_fn=SHORT_SCORE), ValueError, "score_fn"),
]
for name, kw, exc, match in LANGEVIN_BASE_BAD:
    add([(f"langevin-{name}", lambda kw=kw: langevin(**kw), err(exc, match))])
ANNEALED_BAD = [
    ("num_levels-zero", dict(num_levels=0), ValueError, "num_levels"),
    ("steps_per_level-float", dict(steps_per_level=1.5), TypeError, "steps_per_level"),
    ("step_size-nan", dict(step_size=float("nan")), ValueError, "step_size"),
    ("step_size-negative", dict(step_size=-0.1), ValueError, "step_size"),
    (
        "times-swapped",
        dict(initial_time=0.01, final_time=5.0),
        ValueError,
        "initial_time",
    ),
    ("num_samples-bool", dict(num_samples=True), TypeError, "num_samples"),
]
for name, kw, exc, match in ANNEALED_BAD:
    add([(f"annealed_langevin-{name}", lambda kw=kw: annealed(**kw), err(exc, match))])
MCGDIFF_BAD = [
    ("A-1d", dict(A=jnp.ones(D)), ValueError, "A"),
    ("A-3d", dict(A=jnp.ones((1, 1, D))), ValueError, "A"),
    ("A-nan", dict(A=A_OBS.at[0, 0].set(jnp.nan)), ValueError, "A"),
    ("y-wrong_shape", dict(y=jnp.zeros(3)), ValueError, "y"),
    ("y-nan", dict(y=jnp.array([jnp.nan])), ValueError, "y"),
    ("noise_std-nan", dict(noise_std=float("nan")), ValueError, "noise_std"),
    ("noise_std-negative", dict(noise_std=-0.1), ValueError, "noise_std"),
    ("noise_std-zero", dict(noise_std=0.0), ValueError, "noise_std"),
    ("noise_std-vector", dict(noise_std=jnp.ones(1)), ValueError, "noise_std"),
    ("num_particles-one", dict(num_particles=1), ValueError, "num_particles"),
    ("num_particles-float", dict(num_particles=4.0), TypeError, "num_particles"),
    ("num_steps-zero", dict(num_steps=0), ValueError, "num_steps"),
    ("ess_threshold-two", dict(ess_threshold=2.0), ValueError, "ess_threshold"),
    (
        "ess_threshold-nan",
        dict(ess_threshold=float("nan")),
        ValueError,
        "ess_threshold",
    ),
    (
        "times-swapped",
        dict(initial_time=0.001, final_time=5.0),
        ValueError,
        "initial_time",
    ),
    ("score_fn-not_callable", dict(score_fn=None), TypeError, "score_fn"),
]
for name, kw, exc, match in MCGDIFF_BAD:
    add([(f"mcgdiff-{name}", lambda kw=kw: mcgdiff(**kw), err(exc, match))])
TDS_BAD = [
    (
        "likelihood-tuple_of_two",
        dict(likelihood=(A_OBS, Y_OBS)),
        (TypeError, ValueError),
        "likelihood",
    ),
    (
        "likelihood-callable_no_position",
        dict(likelihood=LL),
        (TypeError, ValueError),
        "position",
    ),
    ("likelihood-A_1d", dict(likelihood=(jnp.ones(D), Y_OBS, 0.1)), ValueError, "A"),
    (
        "likelihood-y_wrong_shape",
        dict(likelihood=(A_OBS, jnp.zeros(3), 0.1)),
        ValueError,
        "y",
    ),
    (
        "likelihood-noise_std_nan",
        dict(likelihood=(A_OBS, Y_OBS, float("nan"))),
        ValueError,
        "noise_std",
    ),
    (
        "likelihood-noise_std_zero",
        dict(likelihood=(A_OBS, Y_OBS, 0.0)),
        ValueError,
        "noise_std",
    ),
    ("likelihood-str", dict(likelihood="gaussian"), TypeError, "likelihood"),
    ("position-wrong_size", dict(position=jnp.zeros(D + 1)), ValueError, "position"),
    (
        "position-int_with_callable",
        dict(likelihood=LL, position=jnp.zeros(D, jnp.int32)),
        TypeError,
        "position",
    ),
    ("num_particles-one", dict(num_particles=1), ValueError, "num_particles"),
    ("num_steps-float", dict(num_steps=2.5), TypeError, "num_steps"),
    ("ess_threshold-negative", dict(ess_threshold=-0.5), ValueError, "ess_threshold"),
    ("final_time-nan", dict(final_time=float("nan")), ValueError, "final_time"),
]
for name, kw, exc, match in TDS_BAD:
    add([(f"tds-{name}", lambda kw=kw: tds(**kw), err(exc, match))])

# -- scores ---------------------------------------------------------------------------------
add(
    [
        (
            "gaussian_score-cov_wrong_shape",
            lambda: scores.gaussian_score(jnp.zeros(D), jnp.eye(D + 1)),
            err(ValueError, "cov"),
        ),
        (
            "gaussian_score-cov_not_positive",
            lambda: scores.gaussian_score(jnp.zeros(D), -jnp.eye(D)),
            err(ValueError, "cov"),
        ),
        (
            "gaussian_score-mean_nan",
            lambda: scores.gaussian_score(jnp.full(D, jnp.nan), jnp.eye(D)),
            err(ValueError, "mean"),
        ),
        (
            "gaussian_score-cov_nan",
            lambda: scores.gaussian_score(jnp.zeros(D), jnp.full((D, D), jnp.nan)),
            err(ValueError, "cov"),
        ),
        (
            "gaussian_score-mean_scalar",
            lambda: scores.gaussian_score(0.0, 1.0),
            err(ValueError, "mean"),
        ),
        (
            "gaussian_mixture_score-negative_weight",
            lambda: scores.gaussian_mixture_score(
                jnp.array([1.5, -0.5]), jnp.zeros((2, D)), jnp.stack([jnp.eye(D)] * 2)
            ),
            err(ValueError, "weights"),
        ),
        (
            "gaussian_mixture_score-nan_weight",
            lambda: scores.gaussian_mixture_score(
                jnp.array([jnp.nan, 0.5]),
                jnp.zeros((2, D)),
                jnp.stack([jnp.eye(D)] * 2),
            ),
            err(ValueError, "weights"),
        ),
        (
            "gaussian_mixture_score-shape_mismatch",
            lambda: scores.gaussian_mixture_score(
                jnp.array([0.5, 0.5]), jnp.zeros((3, D)), jnp.stack([jnp.eye(D)] * 2)
            ),
            err(ValueError, "means|weights"),
        ),
        (
            "gaussian_mixture_score-covs_wrong_shape",
            lambda: scores.gaussian_mixture_score(
                jnp.array([0.5, 0.5]), jnp.zeros((2, D)), jnp.ones(3)
            ),
            err(ValueError, "covs"),
        ),
        (
            "LinearVPSchedule-beta_min_negative",
            lambda: scores.LinearVPSchedule(beta_min=-0.1),
            err(ValueError, "beta_min"),
        ),
        (
            "LinearVPSchedule-beta_max_below_min",
            lambda: scores.LinearVPSchedule(beta_min=5.0, beta_max=1.0),
            err(ValueError, "beta_max"),
        ),
        (
            "LinearVPSchedule-beta_max_nan",
            lambda: scores.LinearVPSchedule(beta_max=float("nan")),
            err(ValueError, "beta_max"),
        ),
        (
            "CosineVPSchedule-s_negative",
            lambda: scores.CosineVPSchedule(s=-0.1),
            err(ValueError, "s"),
        ),
        (
            "DiscreteVPSchedule-alphas_above_one",
            lambda: scores.DiscreteVPSchedule(jnp.array([0.9, 1.2])),
            err(ValueError, "alphas_cumprod"),
        ),
        (
            "DiscreteVPSchedule-alphas_increasing",
            lambda: scores.DiscreteVPSchedule(jnp.array([0.5, 0.9])),
            err(ValueError, "alphas_cumprod"),
        ),
        (
            "DiscreteVPSchedule-alphas_nan",
            lambda: scores.DiscreteVPSchedule(jnp.array([0.9, jnp.nan])),
            err(ValueError, "alphas_cumprod"),
        ),
        (
            "DiscreteVPSchedule-alphas_2d",
            lambda: scores.DiscreteVPSchedule(jnp.full((2, 2), 0.5)),
            err(ValueError, "alphas_cumprod"),
        ),
        (
            "score_from_eps-not_callable",
            lambda: scores.score_from_eps(None, scores.LinearVPSchedule()),
            err(TypeError, "eps_fn"),
        ),
        (
            "score_from_eps-schedule_str",
            lambda: scores.score_from_eps(SCORE, "linear"),
            err(TypeError, "schedule"),
        ),
        (
            "score_from_x0-not_callable",
            lambda: scores.score_from_x0(3),
            err(TypeError, "denoiser"),
        ),
        (
            "score_from_ve-not_callable",
            lambda: scores.score_from_ve("ve"),
            err(TypeError, "score_ve"),
        ),
        (
            "score_from_edm_denoiser-not_callable",
            lambda: scores.score_from_edm_denoiser(None),
            err(TypeError, "denoiser"),
        ),
        (
            "cast_score-dtype_int32",
            lambda: scores.cast_score(SCORE, jnp.int32),
            err((TypeError, ValueError), "dtype"),
        ),
        (
            "cast_score-not_callable",
            lambda: scores.cast_score(None),
            err(TypeError, "score_fn"),
        ),
        (
            "FinalStage-num_steps_zero",
            lambda: na.FinalStage(num_steps=0),
            err(ValueError, "num_steps"),
        ),
        (
            "FinalStage-num_steps_float",
            lambda: na.FinalStage(num_steps=2.5),
            err(TypeError, "num_steps"),
        ),
        (
            "FinalStage-min_time_negative",
            lambda: na.FinalStage(min_time=-1.0),
            err(ValueError, "min_time"),
        ),
        (
            "FinalStage-min_time_nan",
            lambda: na.FinalStage(min_time=float("nan")),
            err(ValueError, "min_time"),
        ),
    ]
)

# -- diagnostics ------------------------------------------------------------------------------
add(
    [
        (
            "summary-zero_draws",
            lambda: diagnostics.summary(idata(np.zeros((2, 0, D)))),
            err(ValueError, "draw"),
        ),
        (
            "summary-nan_draws",
            lambda: Out(diagnostics.summary(idata(np.full((2, 10, D), np.nan)))),
            NAN_VISIBLE,
        ),
        (
            "summary-none",
            lambda: diagnostics.summary(None),
            err((TypeError, ValueError), "data|InferenceData"),
        ),
        (
            "summary-var_names_unknown",
            lambda: diagnostics.summary(
                idata(np.zeros((2, 10, D))), var_names=["nope"]
            ),
            err(ValueError, "nope"),
        ),
        (
            "summary-drift_threshold_zero",
            lambda: diagnostics.summary(
                idata(np.zeros((2, 10, D))), drift_threshold=0.0
            ),
            err(ValueError, "drift_threshold"),
        ),
        (
            "summary-drift_threshold_nan",
            lambda: diagnostics.summary(
                idata(np.zeros((2, 10, D))), drift_threshold=float("nan")
            ),
            err(ValueError, "drift_threshold"),
        ),
        (
            "summary-group_unknown",
            lambda: diagnostics.summary(idata(np.zeros((2, 10, D))), group="warmup"),
            err(ValueError, "group|warmup"),
        ),
        (
            "path_health-none",
            lambda: diagnostics.path_health(None),
            err((TypeError, ValueError), "data|ALMCResult"),
        ),
        (
            "path_health-tail_zero",
            lambda: diagnostics.path_health(run_result(), tail=0),
            err(ValueError, "tail"),
        ),
        (
            "path_health-tail_too_long",
            lambda: diagnostics.path_health(run_result(), tail=10_000),
            err(ValueError, "tail"),
        ),
        (
            "path_health-num_chains_zero",
            lambda: diagnostics.path_health(run_result(), num_chains=0),
            err(ValueError, "num_chains"),
        ),
        (
            "smc_summary-none",
            lambda: diagnostics.smc_summary(None),
            err((TypeError, ValueError), "SMCResult|smc_path"),
        ),
        (
            "smc_summary-almc_result",
            lambda: diagnostics.smc_summary(run_result()),
            err((TypeError, ValueError), "SMCResult|smc_path"),
        ),
        (
            "kernel_stein_discrepancy-empty",
            lambda: diagnostics.kernel_stein_discrepancy(np.zeros((0, D)), SCORE),
            err(ValueError, "draws"),
        ),
        (
            "kernel_stein_discrepancy-one_draw",
            lambda: diagnostics.kernel_stein_discrepancy(np.zeros((1, D)), SCORE),
            err(ValueError, "draws"),
        ),
        (
            "kernel_stein_discrepancy-nan_draw",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(fill=np.nan), lambda x: -x
            ),
            err(ValueError, "draws"),
        ),
        (
            "kernel_stein_discrepancy-inf_draw",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(fill=np.inf), lambda x: -x
            ),
            err(ValueError, "draws"),
        ),
        (
            "kernel_stein_discrepancy-nan_scores",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), scores=draws(fill=np.nan)
            ),
            err(ValueError, "scores"),
        ),
        (
            "kernel_stein_discrepancy-scores_wrong_shape",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), scores=draws(d=D + 1)
            ),
            err(ValueError, "scores"),
        ),
        (
            "kernel_stein_discrepancy-both_score_inputs",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), lambda x: -x, scores=draws()
            ),
            err(ValueError, "score_fn"),
        ),
        (
            "kernel_stein_discrepancy-beta_positive",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), lambda x: -x, beta=0.5
            ),
            err(ValueError, "beta"),
        ),
        (
            "kernel_stein_discrepancy-scale_negative",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), lambda x: -x, scale=-1.0
            ),
            err(ValueError, "scale"),
        ),
        (
            "kernel_stein_discrepancy-scale_nan",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), lambda x: -x, scale=float("nan")
            ),
            err(ValueError, "scale"),
        ),
        (
            "kernel_stein_discrepancy-num_bootstrap_negative",
            lambda: diagnostics.kernel_stein_discrepancy(
                draws(), lambda x: -x, num_bootstrap=-1
            ),
            err(ValueError, "num_bootstrap"),
        ),
        (
            "energy_distance-empty",
            lambda: diagnostics.energy_distance(np.zeros((0, D)), draws()),
            err(ValueError, "draws|x"),
        ),
        (
            "energy_distance-nan",
            lambda: diagnostics.energy_distance(draws(fill=np.nan), draws()),
            err(ValueError, "x"),
        ),
        (
            "energy_distance-inf_y",
            lambda: diagnostics.energy_distance(draws(), draws(fill=np.inf)),
            err(ValueError, "y"),
        ),
        (
            "energy_distance-dim_mismatch",
            lambda: diagnostics.energy_distance(draws(), draws(d=D + 1)),
            err(ValueError, "x and y"),
        ),
        (
            "energy_distance-num_permutations_float",
            lambda: diagnostics.energy_distance(draws(), draws(), num_permutations=1.5),
            err(TypeError, "num_permutations"),
        ),
        (
            "choose_early_stop_time-nan_draws",
            lambda: diagnostics.choose_early_stop_time(
                [0.1, 0.2], [draws(fill=np.nan), draws()]
            ),
            err(ValueError, "draws"),
        ),
        (
            "choose_early_stop_time-empty",
            lambda: diagnostics.choose_early_stop_time([], []),
            err(ValueError, "times|candidate"),
        ),
        (
            "choose_early_stop_time-length_mismatch",
            lambda: diagnostics.choose_early_stop_time(
                [0.1, 0.2, 0.3], [draws(), draws()]
            ),
            err(ValueError, "times|draws"),
        ),
        (
            "choose_early_stop_time-nan_time",
            lambda: diagnostics.choose_early_stop_time(
                [0.1, float("nan")], [draws(), draws()]
            ),
            err(ValueError, "times|finite"),
        ),
        (
            "choose_early_stop_time-tolerance_zero",
            lambda: diagnostics.choose_early_stop_time(
                [0.1, 0.2], [draws(), draws()], tolerance=0.0
            ),
            err(ValueError, "tolerance"),
        ),
        (
            "path_candidates-no_path",
            lambda: diagnostics.path_candidates(
                run_result(), SCHED, path_every=2, times=[0.1]
            ),
            err(ValueError, "path_every"),
        ),
        (
            "target_score-not_callable",
            lambda: diagnostics.target_score(None, LL, 0.1),
            err(TypeError, "score_fn"),
        ),
        (
            "target_score-time_nan",
            lambda: diagnostics.target_score(SCORE, LL, float("nan")),
            err(ValueError, "time"),
        ),
        (
            "target_score-time_negative",
            lambda: diagnostics.target_score(SCORE, LL, -1.0),
            err(ValueError, "time"),
        ),
    ]
)

# -- operators (forward models) ----------------------------------------------------------
ops = na.operators
add(
    [
        (
            # 0/1 integers are documented as a mask; weights are not.
            "Mask-weights_not_0_1",
            lambda: ops.Mask(jnp.array([0.5, 1.0])),
            err((TypeError, ValueError), "mask"),
        ),
        (
            "Mask-all_false",
            lambda: ops.Mask(jnp.array([False, False])),
            err(ValueError, "mask"),
        ),
        (
            "DenseOperator-1d",
            lambda: ops.DenseOperator(jnp.ones(D)),
            err(ValueError, "matrix|A"),
        ),
        (
            "DenseOperator-nan",
            lambda: ops.DenseOperator(jnp.full((1, D), jnp.nan)),
            err(ValueError, "matrix|A|finite"),
        ),
        (
            "PeriodicConvolution-kernel_larger_than_image",
            lambda: ops.PeriodicConvolution(jnp.ones((5, 5)), (3, 3)),
            err(ValueError, "psf|kernel"),
        ),
        (
            "noised_gaussian_likelihood-operator_y_wrong_shape",
            lambda: na.noised_gaussian_likelihood(
                ops.Mask(jnp.array([True, False])), jnp.zeros(3), 0.1
            ),
            err(ValueError, "y"),
        ),
        (
            "linear_gaussian_preconditioner-operator_vector_noise",
            lambda: na.linear_gaussian_preconditioner(
                ops.Mask(jnp.array([True, False])), jnp.ones(1)
            ),
            err(ValueError, "noise_std"),
        ),
        (
            "linear_gaussian_preconditioner-operator_nan_noise",
            lambda: na.linear_gaussian_preconditioner(
                ops.Mask(jnp.array([True, False])), float("nan")
            ),
            err(ValueError, "noise_std"),
        ),
        (
            "noised_gaussian_likelihood-operator_nan_y",
            lambda: na.noised_gaussian_likelihood(
                ops.Mask(jnp.array([True, False])), jnp.array([jnp.nan]), 0.1
            ),
            err(ValueError, "y"),
        ),
    ]
)


IDS = [c[0] for c in CASES]
assert len(IDS) == len(set(IDS)), [i for i in IDS if IDS.count(i) > 1]


def run_case(fn, expected):
    """Run one case against its expectation (shared with the classification script)."""
    if isinstance(expected, Raises):
        with pytest.raises(expected.exc, match=expected.match):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    if not isinstance(out, Out):
        out = Out(out)
    expected.check(out, caught)


def test_enough_cases():
    assert len(CASES) >= 300


def _params():
    for case_id, fn, expected in CASES:
        yield pytest.param(fn, expected, id=case_id)


@pytest.mark.parametrize(("fn", "expected"), list(_params()))
def test_bad_input(fn, expected):
    run_case(fn, expected)
