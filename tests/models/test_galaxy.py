"""The galaxygrad 0.2.1 galaxy priors: loading, time convention, transform, draws."""

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Not pytest.importorskip: importing galaxygrad 0.2.1 raises FileNotFoundError on
# case-sensitive file systems, which importorskip does not catch; the module under
# test never imports it either.
if importlib.util.find_spec("galaxygrad") is None:
    pytest.skip(
        "galaxygrad is not installed: pip install numpyro_almc[galaxy]",
        allow_module_level=True,
    )

from numpyro_almc import sample_prior  # noqa: E402
from numpyro_almc.models import _galaxy  # noqa: E402
from numpyro_almc.models._galaxy import (  # noqa: E402
    GALAXY_NETWORKS,
    GalaxyPrior,
    galaxy_prior,
)

# Wheel files not offered by galaxy_prior (same architecture, unused by galaxygrad).
UNLISTED = {"eqx_hsc_lognet32.eqx": 32, "eqx_hsc_lognet64.eqx": 64}
ALL_NETWORKS = [(s, n) for s, sizes in GALAXY_NETWORKS.items() for n in sizes]


@pytest.fixture(scope="module")
def hsc32():
    return galaxy_prior("HSC", 32)


@pytest.fixture(scope="module")
def references(hsc32):
    """Four clean HSC 32x32 images in u, drawn by reverse diffusion with a score
    written here from the raw network in galaxygrad's own time (s = 2 t, stated
    independently of the module), so they stay right if the module's convention
    breaks."""
    net = hsc32.network
    raw_score = jax.tree_util.Partial(lambda n, x, t: n(x[None], 2 * t)[0], net)
    return sample_prior(
        jax.random.key(3),
        raw_score,
        (32, 32),
        4,
        num_steps=50,
        initial_time=5.0,
        final_time=0.005,
    )


def test_wheel_contents_are_all_known():
    folder = _galaxy._galaxygrad_dir()
    on_disk = {p.name.lower() for p in folder.glob("*.eqx")}
    listed = {f.lower() for sizes in GALAXY_NETWORKS.values() for f in sizes.values()}
    assert on_disk == listed | set(UNLISTED)


@pytest.mark.parametrize("survey,size", ALL_NETWORKS)
def test_every_network_loads_and_tends_to_the_gaussian_score(survey, size):
    prior = galaxy_prior(survey.lower(), size)
    assert isinstance(prior, GalaxyPrior)
    assert prior.event_shape == (size, size) and prior.survey == survey
    # The weights are pytree leaves of score_fn (traced, not baked into programs).
    assert sum(leaf.size for leaf in jax.tree.leaves(prior.score_fn)) > 5e5
    x = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    score = jax.jit(prior.score_fn)(x, prior.max_time)
    assert score.shape == x.shape and score.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(score)))
    # At OU time 5 (network time 10) p_t is N(e^-5 E[U_0], ~I): the score is -x up
    # to e^-5 |E U_0| ~ 1e-3 per pixel plus the network's error (measured cos >=
    # 0.999, norm ratio within 0.5 %). An eps-predictor would give +x instead, and a
    # score scaled by sigma or 1/sigma would fail the norm check at smaller t only,
    # which the Tweedie test below covers.
    cos = jnp.vdot(score, -x) / (jnp.linalg.norm(score) * jnp.linalg.norm(x))
    ratio = jnp.linalg.norm(score) / jnp.linalg.norm(x)
    assert float(cos) > 0.99
    assert abs(float(ratio) - 1) < 0.05


@pytest.mark.parametrize("filename,size", sorted(UNLISTED.items()))
def test_unlisted_wheel_networks_load_too(filename, size):
    net = _galaxy._load_network(filename, size)
    out = net(jnp.zeros((1, size, size)), 1.0)
    assert out.shape == (1, size, size) and bool(jnp.all(jnp.isfinite(out)))


def test_galaxygrad_is_never_imported(hsc32):
    assert "galaxygrad" not in sys.modules


def test_score_fn_is_jittable_and_vmappable(hsc32):
    keys = jax.random.split(jax.random.key(1), 3)
    xs = jnp.stack([jax.random.normal(k, (32, 32)) for k in keys])
    ts = jnp.array([0.01, 0.3, 2.0])
    single = jax.jit(hsc32.score_fn)
    loop = jnp.stack([single(x, t) for x, t in zip(xs, ts, strict=True)])
    both = jax.jit(jax.vmap(hsc32.score_fn))(xs, ts)
    shared_t = jax.jit(jax.vmap(hsc32.score_fn, in_axes=(0, None)))(xs, ts[1])
    np.testing.assert_allclose(both, loop, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(shared_t[1], loop[1], rtol=1e-4, atol=1e-4)
    # Eager (unjitted) calls agree, and a time of shape (1,) counts as a scalar.
    np.testing.assert_allclose(
        hsc32.score_fn(xs[0], ts[:1]), loop[0], rtol=1e-4, atol=1e-4
    )
    # The score function is a pytree of arrays: it can be a jit argument.
    as_argument = jax.jit(lambda fn, x, t: fn(x, t))(hsc32.score_fn, xs[2], ts[2])
    np.testing.assert_allclose(as_argument, loop[2], rtol=1e-4, atol=1e-4)


def test_dtype_is_kept_under_x64_and_strict_promotion(hsc32):
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        x32 = jnp.zeros((32, 32), jnp.float32)
        s32 = jax.jit(hsc32.score_fn)(x32, jnp.float32(0.1))
        s64 = jax.jit(hsc32.score_fn)(x32.astype(jnp.float64), 0.1)
        assert s32.dtype == jnp.float32 and s64.dtype == jnp.float64
        np.testing.assert_allclose(s32, s64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [0.05, 0.2])
def test_tweedie_denoising_pins_the_time_convention(hsc32, references, t):
    """E[X_0 | X_t] = e^t (x_t + sigma_t^2 s(x_t, t)) is the MMSE denoiser, so with
    the right time it must beat the naive e^t x_t, and querying the network at the
    wrong time (half or twice the OU time: network time t or 4t instead of 2t) must
    do clearly worse. Measured error ratios to the naive estimate (4 images, 4096
    pixels, so ~2 % sampling error): right 0.037 / 0.021, half 0.56 / 0.57, double
    0.25 / 0.18 at t = 0.05 / 0.2; the bounds leave a factor >= 2 of margin."""
    x0 = references
    noise = jax.random.normal(jax.random.key(7), x0.shape)
    alpha, sigma2 = jnp.exp(-t), -jnp.expm1(-2 * t)
    xt = alpha * x0 + jnp.sqrt(sigma2) * noise
    naive = jnp.mean((xt / alpha - x0) ** 2)

    batched_score = jax.jit(jax.vmap(hsc32.score_fn, in_axes=(0, None)))

    def ratio(query_time):
        score = batched_score(xt, query_time)
        denoised = (xt + sigma2 * score) / alpha
        return float(jnp.mean((denoised - x0) ** 2) / naive)

    right, half, double = ratio(t), ratio(t / 2), ratio(2 * t)
    assert right < 0.15
    assert half > 3 * right and double > 3 * right


def test_encode_decode_are_inverses(hsc32):
    flux = jnp.array([-0.5, 0.0, 1e-4, 0.3, 10.0, 1e3])
    np.testing.assert_allclose(hsc32.decode(hsc32.encode(flux)), flux, rtol=1e-5)
    u = jnp.linspace(-30.0, 60.0, 13)
    np.testing.assert_allclose(hsc32.encode(hsc32.decode(u)), u, rtol=1e-5, atol=1e-4)
    # u = log(1 + f) / 0.1 exactly; integers are accepted.
    np.testing.assert_allclose(hsc32.encode(jnp.e - 1.0), 10.0, rtol=1e-6)
    assert hsc32.encode(jnp.arange(3)).dtype == jnp.float32


def test_prior_draws_look_like_centred_galaxies(hsc32):
    u = hsc32.sample(jax.random.key(1), 4, num_steps=50)
    assert u.shape == (4, 32, 32) and u.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(u)))
    flux = np.asarray(hsc32.decode(u))
    border = np.concatenate(
        [flux[:, :4].reshape(4, -1), flux[:, -4:].reshape(4, -1)]
        + [flux[:, :, :4].reshape(4, -1), flux[:, :, -4:].reshape(4, -1)],
        axis=1,
    )
    centre = flux[:, 12:20, 12:20].mean(axis=(1, 2))
    # Measured (8 draws of 50 and of 100 steps): border mean |.| <= 2.3e-4, std <=
    # 8e-4; centre 4x4 mean flux 0.13-0.67; the brightest pixel within 1 px of the
    # centre (15.5, 15.5).
    assert np.all(np.abs(border.mean(axis=1)) < 0.01)
    assert np.all(border.std(axis=1) < 0.01)
    assert np.all(centre > 0.02) and np.all(centre > 20 * np.abs(border).mean(axis=1))
    peaks = np.array([np.unravel_index(f.argmax(), f.shape) for f in flux])
    assert np.all(np.abs(peaks - 15.5) <= 3)
    assert flux.min() > -1
    # space="flux" diffuses in u as well and returns decoded draws.
    flux_draws = galaxy_prior("HSC", 32, space="flux").sample(
        jax.random.key(1), 4, num_steps=50
    )
    np.testing.assert_allclose(flux_draws, flux, rtol=1e-5, atol=1e-6)


def test_flux_space_score_is_the_change_of_variables(hsc32):
    prior = galaxy_prior("HSC", 32, space="flux")
    assert prior.space == "flux" and prior.network is hsc32.network
    flux = 0.05 * jax.random.uniform(jax.random.key(2), (32, 32))
    t = 0.05
    # Autodiff version of J^T s_u + grad log|det J| for u = log(1 + f) / 0.1.
    u, pullback = jax.vjp(hsc32.encode, flux)
    (chain,) = pullback(jax.jit(hsc32.score_fn)(u, t))
    log_jac = jax.grad(lambda f: jnp.sum(jnp.log(jax.grad(hsc32.encode)(f))))
    expected = chain + jax.vmap(jax.vmap(log_jac))(flux)
    np.testing.assert_allclose(
        jax.jit(prior.score_fn)(flux, t), expected, rtol=1e-4, atol=1e-3
    )
    assert prior.u_score_fn.space == "u" and hsc32.u_score_fn is hsc32.score_fn


def test_flux_score_matches_an_exact_lognormal():
    """With a stand-in network whose u-law is N(0, I) at all times, decode(U) is
    log-normal: compare with the gradient of its closed-form log density."""
    standard_normal_net = jax.tree_util.Partial(lambda u, s: -u)
    flux = jnp.linspace(-0.5, 2.0, 16).reshape(4, 4)

    def log_density(f):
        u = jnp.log1p(f) / 0.1
        return jnp.sum(-0.5 * u**2 - jnp.log(0.1 * (1 + f)))

    np.testing.assert_allclose(
        _galaxy._flux_score(standard_normal_net, flux, 0.3),
        jax.grad(log_density)(flux),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_arguments_raise(hsc32):
    with pytest.raises(
        ValueError, match=r"unknown survey 'SDSS'.*HSC \(sizes 32, 64\)"
    ):
        galaxy_prior("SDSS")
    with pytest.raises(ValueError, match=r"no HSC network of size 48.*32, 64"):
        galaxy_prior("HSC", 48)
    with pytest.raises(ValueError, match=r"no LSST network of size True"):
        galaxy_prior("LSST", True)
    with pytest.raises(ValueError, match=r"space must be one of \('u', 'flux'\)"):
        galaxy_prior("HSC", 32, space="log")
    with pytest.raises(ValueError, match=r"one unbatched \(H, W\) image"):
        hsc32.score_fn(jnp.zeros((2, 32, 32)), 0.1)
    with pytest.raises(ValueError, match=r"takes \(32, 32\) images; got shape"):
        hsc32.score_fn(jnp.zeros((64, 64)), 0.1)


def test_missing_galaxygrad_says_how_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "galaxygrad" else real_find_spec(name, *args, **kwargs)

    hint = r"pip install numpyro_almc\[galaxy\]"
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", find_spec)
        with pytest.raises(ImportError, match=hint):
            _galaxy._architecture_module.__wrapped__()
        with pytest.raises(ImportError, match=hint):
            _galaxy._load_network.__wrapped__("eqx_hsc_ScoreNet32.eqx", 32)
    # A galaxygrad without weights (0.3.0 ships none).
    monkeypatch.setattr(_galaxy, "_galaxygrad_dir", lambda: tmp_path)
    with pytest.raises(ImportError, match=r"0\.2\.1 only.*" + hint):
        _galaxy._weight_file("eqx_hsc_ScoreNet32.eqx")
    with pytest.raises(ImportError, match=r"no models_eqx\.py.*" + hint):
        _galaxy._architecture_module.__wrapped__()
