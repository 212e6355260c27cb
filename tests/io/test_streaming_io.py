"""Keeping only what is asked for, NetCDF/ArviZ output of chunked runs, and
bfloat16 score evaluation with float32 state."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_almc as na

SCHED = na.budget_schedule(40, num_warm_start_steps=10, step_size=0.05)
POS = {"x": jnp.zeros(3), "s": jnp.zeros((2, 2))}
CHUNKED = dict(num_chains=4, num_steps=130, chunk_size=30, keep_every=3, keep_from=20)


def tree_loglik(p):
    return -0.5 * jnp.sum((p["x"] - 1.0) ** 2) / 0.25 - 0.5 * jnp.sum(p["s"] ** 2)


def tree_score(p, t):
    return {"x": -p["x"], "s": -p["s"]}


def test_run_almc_keeps_only_the_chosen_sites():
    kw = dict(num_chains=3, num_steps=30, path_every=5)
    full = na.run_almc(jax.random.key(0), tree_loglik, tree_score, SCHED, POS, **kw)
    part = na.run_almc(
        jax.random.key(0), tree_loglik, tree_score, SCHED, POS, sites=["s"], **kw
    )
    assert list(part.path) == ["s"]
    np.testing.assert_array_equal(part.path["s"], full.path["s"])
    np.testing.assert_array_equal(part.state.position["x"], full.state.position["x"])
    with pytest.raises(ValueError, match="subset"):
        na.run_almc(
            jax.random.key(0), tree_loglik, tree_score, SCHED, POS, sites=["y"], **kw
        )
    with pytest.raises(TypeError, match="list of site names"):
        na.run_almc(
            jax.random.key(0), tree_loglik, tree_score, SCHED, POS, sites="s", **kw
        )


@pytest.mark.arviz
def test_export_netcdf_streams_chunks_into_arviz(tmp_path):
    run = tmp_path / "run"
    kw = CHUNKED
    partial = na.run_almc_chunked(
        jax.random.key(5),
        tree_loglik,
        tree_score,
        SCHED,
        POS,
        path=run,
        max_chunks=2,
        **kw,
    )
    assert not partial.complete
    # An interrupted run exports what it has completed.
    idata = az.from_netcdf(na.export_netcdf(run))
    assert idata.posterior["x"].shape == (4, 14, 3)  # steps 20, 23, ..., 59
    na.run_almc_chunked(
        jax.random.key(5), tree_loglik, tree_score, SCHED, POS, path=run, **kw
    )
    ref = na.load_chunks(run)
    file = na.export_netcdf(run, tmp_path / "all.nc")
    assert not (tmp_path / "all.nc.tmp").exists()
    idata = az.from_netcdf(file)
    for site in ("x", "s"):
        np.testing.assert_array_equal(idata.posterior[site].values, ref["draws"][site])
    assert idata.posterior["s"].dims == ("chain", "draw", "s_dim_0", "s_dim_1")
    np.testing.assert_array_equal(idata.sample_stats["step"].values, ref["step"])
    for stat in ("time", "step_size", "mean_loglikelihood"):
        np.testing.assert_array_equal(
            idata.sample_stats[stat].values, ref["sample_stats"][stat]
        )
    summary = az.summary(idata, var_names=["x"])
    np.testing.assert_allclose(
        summary["mean"].to_numpy(),
        ref["draws"]["x"].reshape(-1, 3).mean(0),
        atol=1e-3,  # az.summary rounds
    )
    # One site only, in memory, as ArviZ data.
    only = na.export_netcdf(run, tmp_path / "x.nc", sites=["x"])
    assert list(az.from_netcdf(only).posterior.data_vars) == ["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = na.load_chunks(run, as_inference_data=True, sites=["s"])
    np.testing.assert_array_equal(mem.posterior["s"].values, ref["draws"]["s"])
    with pytest.raises(ValueError, match="subset"):
        na.load_chunks(run, sites=["y"])
    with pytest.raises(FileNotFoundError, match="no state file"):
        na.load_chunks(tmp_path)


def test_export_refuses_a_run_without_draws(tmp_path):
    na.run_almc_chunked(
        jax.random.key(1),
        tree_loglik,
        tree_score,
        SCHED,
        POS,
        path=tmp_path,
        store=False,
        **{**CHUNKED, "num_steps": 30},  # the same compiled chunk as above
    )
    with pytest.raises(ValueError, match="store=False"):
        na.export_netcdf(tmp_path)


# A Gaussian prior N(m, v I) in OU time: S_t = e^{-2t} v + 1 - e^{-2t},
# score -(x - e^{-t} m) / S_t. Written as a jax.tree_util.Partial so that its
# parameter ``mean`` is a pytree leaf that cast_score can cast to bfloat16.
def _gauss_score(mean, x, t):
    decay = jnp.exp(-t)
    var = decay**2 * 0.5 + 1.0 - decay**2
    return -(x - decay * mean) / var


def _gauss_loglik(x):
    return -0.5 * jnp.sum((x[:2] - jnp.asarray([1.0, -1.0], x.dtype)) ** 2) / 0.1


def test_bfloat16_score_keeps_float32_state_and_tracks_the_float32_run():
    score32 = jax.tree_util.Partial(_gauss_score, jnp.full(4, 0.5, jnp.float32))
    score16 = na.scores.cast_score(score32, jnp.bfloat16)
    assert jax.tree.leaves(score16.score_fn)[0].dtype == jnp.bfloat16
    assert score16(jnp.ones(4), 0.3).dtype == jnp.float32
    sched = na.budget_schedule(200, num_warm_start_steps=20, step_size=0.05)
    kw = dict(num_chains=256, final_window=50)
    a = na.run_almc(
        jax.random.key(3), _gauss_loglik, score32, sched, jnp.zeros(4), **kw
    )
    b = na.run_almc(
        jax.random.key(3), _gauss_loglik, score16, sched, jnp.zeros(4), **kw
    )
    for leaf in jax.tree.leaves(b.state):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    assert b.state.score.dtype == jnp.float32
    # Same keys, a contracting (log-concave) target: chain by chain, the bf16 run
    # stays within a few bf16 roundoffs (2^-9 ~ 2e-3 relative, scores O(1-3))
    # of the float32 run; the Monte Carlo error of the moments (256 chains) is
    # ~0.05, much larger.
    diff = np.abs(np.asarray(a.state.position) - np.asarray(b.state.position))
    assert diff.max() < 0.05, diff.max()
    assert 0 < np.median(diff) < 0.01
    np.testing.assert_allclose(
        np.mean(b.window_draw, 0), np.mean(a.window_draw, 0), atol=0.01
    )


def test_bfloat16_digits_network():
    pytest.importorskip("equinox")
    from numpyro_almc.models import digits_prior

    prior = digits_prior()
    score16 = na.scores.cast_score(prior.score_fn)
    weights = [w for w in jax.tree.leaves(score16.score_fn) if hasattr(w, "dtype")]
    assert weights and all(w.dtype == jnp.bfloat16 for w in weights)
    x = prior.encode(jnp.full(64, 8.0))
    s32, s16 = prior.score_fn(x, 0.3), score16(x, 0.3)
    assert s16.dtype == jnp.float32
    # Several bf16 layers: ~1-3% of the score's scale.
    assert float(jnp.max(jnp.abs(s16 - s32)) / jnp.max(jnp.abs(s32))) < 0.05
    observed = jnp.arange(0, 64, 4)

    def loglik(z):
        return -0.5 * jnp.sum((z[observed] - x[observed]) ** 2) / 0.05

    sched = na.budget_schedule(60, num_warm_start_steps=10, step_size=0.01)
    res = na.run_almc(jax.random.key(0), loglik, score16, sched, x, num_chains=4)
    assert res.state.position.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(res.state.position)))


def test_cast_score_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        na.scores.cast_score(3.0)
    with pytest.raises(TypeError, match="floating dtype"):
        na.scores.cast_score(lambda x, t: -x, jnp.int32)
    with pytest.raises(TypeError, match="floating dtype"):
        na.scores.cast_score(lambda x, t: -x, "not a dtype")
