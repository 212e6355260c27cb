"""The ALMC-aware summary: chains as independent replicates, R̂ as ArviZ's, the flag."""

import arviz as az
import numpy as np
import pytest

from numpyro_almc.diagnostics import summary
from numpyro_almc.io.arviz import arviz_major_version

pytestmark = pytest.mark.arviz  # CI runs these under ArviZ 1.x too


def from_dict(posterior):
    """``az.from_dict`` of ArviZ 0.2x (keyword per group) and 1.x (nested dict)."""
    if arviz_major_version() >= 1:
        return az.from_dict({"posterior": posterior})
    return az.from_dict(posterior=posterior)


def ar1(rng, num_chains, num_draws, phi, start=None):
    x = np.empty((num_chains, num_draws))
    x[:, 0] = rng.normal(size=num_chains) if start is None else start
    noise = rng.normal(size=(num_chains, num_draws)) * np.sqrt(1 - phi**2)
    for t in range(1, num_draws):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_mcse_is_calibrated_across_replicates():
    """The MCSE of the mean matches the spread of the mean over repeated runs, for
    autocorrelated chains (phi = 0.95) and for frozen ones (each chain one draw)."""
    rng = np.random.default_rng(0)
    for phi in (0.95, 1.0):
        means, mcses, ess = [], [], []
        for _ in range(60):
            x = ar1(rng, 32, 200, phi)
            table = summary({"x": x})
            means.append(x.mean())
            mcses.append(table.loc["x", "mcse_mean"])
            ess.append(table.loc["x", "ess_bulk"])
        ratio = np.mean(mcses) / np.std(means)
        assert 0.8 < ratio < 1.2, (phi, ratio)
        if phi == 1.0:  # frozen chains: each worth one draw
            assert 20 < np.median(ess) < 45
        else:  # 32 · 200 · (1 − φ)/(1 + φ) ≈ 164
            assert 100 < np.median(ess) < 260


def test_one_draw_per_chain_is_iid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 1))
    row = summary({"x": x}).loc["x"]
    assert 300 < row["ess_bulk"] <= 400
    assert np.isclose(row["mcse_mean"], x.std(ddof=1) / 20)
    assert row["r_hat_check"] == "n/a" and np.isnan(row["r_hat"])


def test_rhat_matches_arviz():
    rng = np.random.default_rng(2)
    x = ar1(rng, 8, 300, 0.9) + np.linspace(0, 1, 8)[:, None]
    ours = summary({"x": x}).loc["x", "r_hat"]
    assert np.isclose(ours, float(az.rhat(x)), rtol=1e-10)


def test_flag_separates_design_from_drift():
    rng = np.random.default_rng(3)
    stuck = rng.normal(size=(32, 1)) + 0.05 * rng.normal(size=(32, 100))
    drifting = stuck + np.linspace(1.0, 0.0, 100)  # every chain still relaxing
    mixed = rng.normal(size=(32, 100))
    table = summary({"stuck": stuck, "drifting": drifting, "mixed": mixed})
    assert table.loc["stuck", "r_hat"] > 1.5
    assert table.loc["stuck", "r_hat_check"] == "wrong check"
    assert table.loc["drifting", "r_hat_check"] == "drift"
    assert table.loc["mixed", "r_hat_check"] == "ok"
    assert table.loc["mixed", "lag1"] < 0.1 < table.loc["drifting", "lag1"]


def test_inference_data_coords_and_names():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 50, 3))
    idata = from_dict({"x": x, "s": rng.normal(size=(4, 50))})
    table = summary(idata, var_names=["x", "s"], coords={"x_dim_0": [0, 2]})
    assert table.index.tolist() == ["x[0]", "x[2]", "s"]
    assert np.isclose(table.loc["x[2]", "mean"], x[..., 2].mean())
    assert table.attrs == {"num_chains": 4, "num_draws": 50}
    # the same from a dict and from the Dataset
    same = summary({"x": x}).loc["x[2]"]
    assert np.isclose(same["ess_bulk"], table.loc["x[2]", "ess_bulk"])
    posterior = idata["posterior"]
    dataset = posterior.to_dataset() if hasattr(posterior, "to_dataset") else posterior
    assert summary(dataset, var_names="s").index.tolist() == ["s"]
    with pytest.raises(ValueError, match="not in the data"):
        summary(idata, var_names="nope")
