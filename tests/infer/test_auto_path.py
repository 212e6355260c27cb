"""``likelihood_path="auto"``: the noised path where the model's observation allows
it, the paper's path otherwise, and a log line saying which and why."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_almc as na

SCORE = na.scores.gaussian_score(jnp.array([0.5, -0.5]), jnp.eye(2))
A = jnp.array([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
Y = jnp.array([0.8, -0.2, 1.1])


def gaussian(y=None):
    x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=(2,)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(A @ x, sigma).to_event(1), obs=y)


def poisson(y=None):
    x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=(2,)))
    numpyro.sample("y", dist.Poisson(jnp.exp(A @ x)).to_event(1), obs=y)


def _draws(kernel, y=None, num_chains=4, init_params=None):
    mcmc = MCMC(
        kernel,
        num_warmup=40,
        num_samples=3,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), init_params=init_params, y=y)
    return mcmc.get_samples()


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("kernel", [na.ALMC, na.ALMCSMC])
def test_auto_takes_the_noised_path_on_a_linear_gaussian_model(kernel, caplog):
    with caplog.at_level(logging.INFO, logger="numpyro_almc"):
        auto = _draws(kernel(gaussian, likelihood_path="auto"), Y)
    _same(auto, _draws(kernel(gaussian, likelihood_path="noised"), Y))
    assert "'auto' took the noised path" in caplog.text
    # and the noised path is not the paper's (so the equality above means something)
    paper = _draws(kernel(gaussian, likelihood_path="paper"), Y)
    assert not np.allclose(auto["x"], paper["x"])


def test_auto_takes_the_paper_path_where_the_noised_one_raises(caplog):
    counts = jnp.array([2.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="Gaussian"):
        _draws(na.ALMC(poisson, likelihood_path="noised"), counts)
    with caplog.at_level(logging.INFO, logger="numpyro_almc"):
        auto = _draws(na.ALMC(poisson, likelihood_path="auto"), counts)
    _same(auto, _draws(na.ALMC(poisson, likelihood_path="paper"), counts))
    assert "'auto' took the paper path" in caplog.text
    assert "Gaussian" in caplog.text  # the reason, from the noised path's check


def test_auto_with_the_final_stage():
    """On a Gaussian model the stage runs as with "noised"; where "auto" falls back
    to the paper's path the stage cannot run, and init says why."""
    stage = na.mcmc.FinalStage(num_steps=4)
    _same(
        _draws(na.ALMC(gaussian, likelihood_path="auto", final_stage=stage), Y),
        _draws(na.ALMC(gaussian, likelihood_path="noised", final_stage=stage), Y),
    )
    with pytest.raises(ValueError, match="final_stage needs the noised path"):
        _draws(
            na.ALMC(poisson, likelihood_path="auto", final_stage=stage),
            jnp.array([2.0, 0.0, 3.0]),
        )


def test_auto_without_a_model_is_the_paper_path():
    """With ``potential_fn`` there is no observation to read: "auto" runs the
    paper's path ("noised" raises, saying what to do instead)."""

    def kernel(cls, path):
        return cls(
            potential_fn=lambda z: 0.5 * jnp.sum((A @ z - Y) ** 2),
            score_fn=SCORE,
            likelihood_path=path,
        )

    start = jnp.zeros((4, 2))
    for cls in (na.ALMC, na.ALMCSMC):
        np.testing.assert_array_equal(
            _draws(kernel(cls, "auto"), init_params=start),
            _draws(kernel(cls, "paper"), init_params=start),
        )
    with pytest.raises(ValueError, match="likelihood_path='noised'"):
        kernel(na.ALMC, "noised")


def test_the_defaults_paper_for_almc_auto_for_almc_smc():
    """The measured defaults (``benchmarks/numpyro_defaults.py``): ``ALMCSMC`` takes
    "auto" for the path and the stage (here the noised path and ``FinalStage()``;
    on a model without a Gaussian observation the paper's path and no stage).
    ``ALMC``'s ("paper", None) are its signature's, checked against the docs in
    ``tests/docs/test_api_defaults.py``."""
    default = na.ALMCSMC(gaussian)
    smc = _draws(default, Y)
    stage = na.mcmc.FinalStage()
    _same(
        smc,
        _draws(na.ALMCSMC(gaussian, likelihood_path="noised", final_stage=stage), Y),
    )
    assert default._final_stage == stage  # resolved at init: the stage ran
    other = na.ALMCSMC(poisson)
    _draws(other, jnp.array([2.0, 0.0, 3.0]))
    assert not other._parts.noised and other._final_stage is None


def test_final_stage_auto_is_the_only_string():
    with pytest.raises(ValueError, match="final_stage"):
        na.ALMC(gaussian, likelihood_path="noised", final_stage="yes")
