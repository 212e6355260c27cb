"""Digits inverse problems and the demo (the main job), end to end but small."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("equinox")

from numpyro.infer import MCMC  # noqa: E402

from numpyro_almc import ALMC  # noqa: E402
from numpyro_almc.__main__ import main  # noqa: E402
from numpyro_almc.models import digits_prior, load_digits_split  # noqa: E402
from numpyro_almc.models._inverse import (  # noqa: E402
    TASKS,
    block_mask,
    inpainting_operator,
    linear_inverse_model,
    make_task,
    random_mask,
    superresolution_operator,
)


def test_operators_have_the_documented_shapes_and_meaning():
    img = jnp.arange(64.0)
    A = superresolution_operator(2)
    assert A.shape == (16, 64)
    np.testing.assert_allclose(A.sum(1), 1.0)
    # the top-left low-resolution pixel averages pixels 0, 1, 8, 9
    assert float((A @ img)[0]) == (0 + 1 + 8 + 9) / 4
    mask = block_mask(2, 2, 4, 4)
    assert mask.sum() == 64 - 16
    np.testing.assert_array_equal(inpainting_operator(mask) @ img, img[mask])
    assert random_mask(jax.random.key(0), 0.25).sum() == 16
    for task in TASKS:
        assert make_task(task).shape[1] == 64
    with pytest.raises(ValueError, match="one of"):
        make_task("deblur")
    with pytest.raises(ValueError, match="divisor"):
        superresolution_operator(3)
    with pytest.raises(ValueError, match="observing some pixels"):
        inpainting_operator(np.zeros(64, bool))


def test_short_run_of_the_demo_model_gives_finite_draws():
    prior = digits_prior()
    x_true = prior.encode(load_digits_split().test_images[3])
    A = make_task("superres")
    y = A @ x_true + 0.05 * jax.random.normal(jax.random.key(1), (16,))
    mcmc = MCMC(
        ALMC(linear_inverse_model(prior.score_fn, A)),
        num_warmup=60,
        num_samples=10,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), y=y)
    samples = mcmc.get_samples()
    assert samples["x"].shape == (20, 64)
    assert np.isfinite(np.asarray(samples["x"])).all()
    assert (np.asarray(samples["sigma"]) > 0).all()


def test_demo_command_writes_its_figure(tmp_path, capsys):
    out = tmp_path / "fig.png"
    code = main(
        [
            "demo",
            "--num-warmup",
            "40",
            "--num-samples",
            "8",
            "--num-chains",
            "2",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert out.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "sigma" in printed and "PSNR" in printed
