"""Path health and the SMC summary: from results and from their ArviZ export."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_almc as na
from numpyro_almc.diagnostics import path_health, smc_summary

pytestmark = pytest.mark.arviz  # CI runs these under ArviZ 1.x too

A = jax.random.normal(jax.random.key(0), (3, 4))
Y = jnp.array([1.0, -0.5, 0.3])


def loglik(x):
    return -0.5 * jnp.sum((Y - A @ x) ** 2) / 0.5**2


def stiff_loglik(x):  # noise 0.01: curvature ~1e4, far above 1 / step size
    return -0.5 * jnp.sum((Y - A @ x) ** 2) / 0.01**2


def score(x, t):
    return -x


SCHED = na.budget_schedule(60, num_warm_start_steps=10)
PRE = na.linear_gaussian_preconditioner(A, 0.5)


def test_healthy_path():
    res = na.run_almc(
        jax.random.key(0),
        loglik,
        score,
        SCHED,
        jnp.zeros(4),
        num_chains=16,
        path_every=10,
        preconditioner=PRE,
    )
    health = path_health(res)
    assert health.problems == () and health.reverted_share == 0.0
    assert health.worst_step == -1
    assert len(health.steps) == SCHED.num_steps
    steps = health.steps
    # the data take over along the path: the mean log likelihood rises
    assert steps["mean_loglik"].iloc[-1] > steps["mean_loglik"].iloc[0]
    # the export of the path gives the same numbers at the kept steps
    idata = na.to_inference_data(res, warmup=True, path_every=10)
    kept = path_health(idata).steps
    rows = 10 * np.arange(1, len(kept) + 1) - 1
    assert np.allclose(kept["mean_loglik"], steps["mean_loglik"].to_numpy()[rows])
    with pytest.raises(ValueError, match="num_chains"):
        path_health(res.trace)
    assert path_health(res.trace, num_chains=16).reverted_share == 0.0


def test_diverging_path_is_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = na.run_almc(
            jax.random.key(0), stiff_loglik, score, SCHED, jnp.zeros(4), num_chains=8
        )
    health = path_health(res)
    assert health.reverted_share > 0.01
    assert health.steps["reverted_share"].max() > 0
    assert any("reverted" in p for p in health.problems)


def test_smc_summary_and_export():
    res = na.run_almc_smc(
        jax.random.key(0),
        loglik,
        score,
        SCHED,
        jnp.zeros(4),
        num_particles=32,
        warm_start_log_normalizer=0.0,
        preconditioner=PRE,
    )
    row = smc_summary(res)
    assert row["num_particles"] == 32 and row["num_steps"] == SCHED.num_steps
    assert np.isclose(row["min_ess"], float(res.ess.min()))
    assert row["num_resampling_events"] == int(res.resampled.sum())
    assert np.isclose(row["log_evidence_ratio"], float(res.log_evidence_ratio))
    idata = na.to_inference_data(res)
    path = idata["smc_path"]
    assert np.allclose(np.asarray(path["ess"]), np.asarray(res.ess))
    stats = idata["sample_stats"]
    assert np.allclose(
        np.asarray(stats["log_evidence_ratio_se"]), float(res.log_evidence_ratio_se)
    )
    from_export = smc_summary(idata)
    for key in row.index:
        assert np.isclose(float(from_export[key]), float(row[key]), equal_nan=True)
