r"""Pretrained galaxy-image diffusion priors from galaxygrad 0.2.1 (extra ``[galaxy]``).

The ``galaxygrad`` 0.2.1 wheel (Sampson et al., arXiv:2401.07313) ships Equinox
score networks trained on survey galaxy images. This module loads them offline,
by path, and wraps them as OU score functions of this package. Facts about the
networks that the wrapper relies on (checked in ``tests/models/test_galaxy.py``):

* **Data space.** The networks model :math:`u = \log(1 + f) / 0.1` of a
  single-band flux image :math:`f` (``galaxygrad``'s own wrapper applies this map
  before calling them); :math:`f > -1`.
* **Output.** A network called as ``net(u[None], s)`` returns the score
  :math:`\nabla_u \log p^{\mathrm{VP}}_s(u)` itself (not :math:`\varepsilon`): its
  sampler integrates the probability-flow drift :math:`-\tfrac12 \beta (u +
  \mathrm{net}(u, s))`, and at large :math:`s` the output tends to :math:`-u`.
  Input and output have shape ``(1, H, W)`` (one image, one channel); ``s`` is a
  scalar.
* **Time.** The SDE is VP with :math:`\beta = 1`, i.e.
  :math:`U_s = e^{-s/2} U_0 + \sqrt{1 - e^{-s}}\, Z` for network time
  :math:`s \in [0, 10]`. This package's OU convention
  :math:`X_t = e^{-t} X_0 + \sqrt{1 - e^{-2t}}\, Z` is the same law at
  :math:`s = 2t`, so the OU score is ``net(u[None], 2 * t)[0]``, with no rescaling
  (same law, same score) and OU times :math:`t \in (0, 5]`.

``import galaxygrad`` itself fails on case-sensitive file systems (its code asks
for ``eqx_roman_ScoreNet120.eqx``, the wheel holds ``eqx_roman_Scorenet120.eqx``)
and loads every network at import, so the package is never imported here: its
architecture module and weight files are located with :mod:`importlib` and loaded
by path, lazily, inside :func:`galaxy_prior`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import pathlib
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc import sample_prior
from numpyro_almc.types import Array, ArrayLike, PRNGKey

__all__ = [
    "FLUX_SCALE",
    "GALAXY_NETWORKS",
    "GalaxyPrior",
    "galaxy_prior",
]

#: Scale of the data transform: the networks model ``u = log(1 + flux) / FLUX_SCALE``.
FLUX_SCALE = 0.1

#: The networks :func:`galaxy_prior` loads: ``{survey: {image size: weight file}}``.
#: galaxygrad's README says the ``ZTF`` networks were trained on ZTF-like
#: simulations; the ``QUASAR`` file is ``eqx_quasar_lens72.eqx`` (lensed quasars, by
#: its name; undocumented). The wheel's two ``eqx_hsc_LogNet*.eqx`` files (same
#: architecture, unused by galaxygrad's own code, undocumented) are not offered.
GALAXY_NETWORKS: dict[str, dict[int, str]] = {
    "HSC": {32: "eqx_hsc_ScoreNet32.eqx", 64: "eqx_hsc_ScoreNet64.eqx"},
    "ZTF": {32: "eqx_ZTF_ScoreNet32.eqx", 64: "eqx_ZTF_ScoreNet64.eqx"},
    "LSST": {60: "eqx_lsst_ScoreNet60.eqx"},
    "ROMAN": {120: "eqx_roman_Scorenet120.eqx"},
    "QUASAR": {72: "eqx_quasar_lens72.eqx"},
}

# Architecture of every shipped network (galaxygrad 0.2.1 ``scorenet.py``): an MLP
# mixer on 4x4 patches, one input channel plus a time plane.
_ARCHITECTURE = dict(
    patch_size=4, hidden_size=64, mix_patch_size=512, mix_hidden_size=512, num_blocks=4
)
#: Largest network time ``s`` (``t1`` of galaxygrad); the OU time is ``s / 2``.
_NETWORK_MAX_TIME = 10.0
_NETWORK_MIN_TIME = 0.01
_SPACES = ("u", "flux")
_INSTALL_HINT = "pip install numpyro_almc[galaxy]"


# ---------------------------------------------------------------------------
# Data transform
# ---------------------------------------------------------------------------


def _as_float(a: ArrayLike) -> Array:
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def _encode(flux: ArrayLike) -> Array:
    """Flux (``> -1``) → network space ``u = log(1 + flux) / 0.1``."""
    return jnp.log1p(_as_float(flux)) / FLUX_SCALE


def _decode(u: ArrayLike) -> Array:
    """Network space → flux ``expm1(0.1 u)``."""
    return jnp.expm1(FLUX_SCALE * _as_float(u))


# ---------------------------------------------------------------------------
# Score functions (pytrees: the network's arrays are leaves, so that
# ``sample_prior`` and ``jit`` trace them instead of baking them in as constants)
# ---------------------------------------------------------------------------


def _network_dtype() -> jnp.dtype:
    # galaxygrad builds its time plane with ``jnp.ones`` (the default float dtype)
    # and concatenates it with the image: with ``jax_enable_x64`` on that is float64,
    # so the whole network is run in the default float dtype (weights cast, a no-op
    # without x64) and never mixes widths (strict dtype promotion stays clean).
    return jnp.dtype(jnp.result_type(float))


def _u_score(network, x: ArrayLike, t: ArrayLike) -> Array:
    """OU score in u space: ``network(u[None], 2 t)[0]`` in the dtype of ``x``."""
    x = _as_float(x)
    if x.ndim != 2:
        raise ValueError(
            "galaxy score_fn takes one unbatched (H, W) image (vmap for a batch); "
            f"got shape {x.shape}."
        )
    t = jnp.reshape(_as_float(t), ())
    dtype = _network_dtype()
    network = jax.tree.map(
        lambda a: (
            a.astype(dtype)
            if isinstance(a, jax.Array)
            and jnp.issubdtype(a.dtype, jnp.floating)
            and a.dtype != dtype
            else a
        ),
        network,
    )
    # network time s = 2 t (VP with beta = 1 against OU; module docstring).
    score = network(x.astype(dtype)[None], (2 * t).astype(dtype))[0]
    return score.astype(x.dtype)


def _flux_score(network, flux: ArrayLike, t: ArrayLike) -> Array:
    r"""Score of the law of ``decode(U_t)`` at ``flux`` (change of variables)."""
    flux = _as_float(flux)
    one_plus = 1 + flux
    score_u = _u_score(network, jnp.log1p(flux) / FLUX_SCALE, t)
    # grad_f log p(f) = (du/df) grad_u log p(u) + grad_f log|du/df|,
    # du/df = 1 / (0.1 (1 + f)), log|du/df| = -log(0.1) - log(1 + f).
    return score_u / (FLUX_SCALE * one_plus) - 1 / one_plus


@jax.tree_util.register_pytree_node_class
class _NetworkScore:
    """``score_fn(x, t)`` of a loaded network, in ``space`` ``"u"`` or ``"flux"``.

    A pytree whose leaves are exactly the network's arrays (the rest of the
    Equinox module is static aux data), so it can be passed through ``jit`` as an
    argument and :func:`numpyro_almc.sample_prior` traces the weights instead of
    baking them into the program.
    """

    def __init__(self, params, static, space: str, size: int):
        self.params = params
        self.static = static
        self.space = space
        self.size = size

    def tree_flatten(self):
        return (self.params,), (self.static, self.space, self.size)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    @property
    def network(self):
        import equinox as eqx

        return eqx.combine(self.params, self.static)

    def __call__(self, x: ArrayLike, t: ArrayLike) -> Array:
        shape = jnp.shape(x)
        if len(shape) == 2 and shape != (self.size, self.size):
            raise ValueError(
                f"this galaxy network takes ({self.size}, {self.size}) images; got "
                f"shape {shape}."
            )
        score = _u_score if self.space == "u" else _flux_score
        return score(self.network, x, t)

    def __repr__(self) -> str:
        return f"galaxy score_fn(x, t) in {self.space} space"


# ---------------------------------------------------------------------------
# Loading galaxygrad's files without importing galaxygrad
# ---------------------------------------------------------------------------


def _galaxygrad_dir() -> pathlib.Path:
    """Install folder of galaxygrad, found without running its ``__init__``."""
    try:
        spec = importlib.util.find_spec("galaxygrad")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "galaxy_prior needs the pretrained networks of galaxygrad 0.2.1, which "
            f"is not installed: {_INSTALL_HINT}"
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _galaxygrad_version() -> str:
    try:
        return importlib.metadata.version("galaxygrad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def _architecture_module() -> types.ModuleType:
    """galaxygrad's ``models_eqx.py`` (the ``ScoreNet`` class), loaded by path."""
    path = _galaxygrad_dir() / "models_eqx.py"
    if not path.is_file():
        raise ImportError(
            f"galaxygrad {_galaxygrad_version()} has no {path.name} at {path.parent}; "
            f"the pretrained networks ship with galaxygrad 0.2.1: {_INSTALL_HINT}"
        )
    spec = importlib.util.spec_from_file_location(
        "numpyro_almc.models._galaxygrad_models_eqx", path
    )
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as err:  # equinox or einops missing
        raise ImportError(
            f"loading galaxygrad's networks failed ({err}): {_INSTALL_HINT}"
        ) from err
    return module


def _weight_file(filename: str) -> pathlib.Path:
    """Path of a weight file, matched case-insensitively (the wheel's names are not
    the ones its code uses)."""
    folder = _galaxygrad_dir()
    matches = [p for p in folder.iterdir() if p.name.lower() == filename.lower()]
    if not matches:
        raise ImportError(
            f"galaxygrad {_galaxygrad_version()} at {folder} has no weight file "
            f"{filename}; the weights ship with galaxygrad 0.2.1 only (0.3.0 has "
            f"none): {_INSTALL_HINT}"
        )
    return matches[0]


@functools.cache  # at most the 9 files of the wheel
def _load_network(filename: str, size: int):
    """Deserialise one shipped network of image size ``size`` (an ``eqx.Module``)."""
    import equinox as eqx

    module = _architecture_module()
    like = eqx.filter_eval_shape(
        module.ScoreNet,
        (1, size, size),
        **_ARCHITECTURE,
        t1=_NETWORK_MAX_TIME,
        key=jax.random.key(0),
    )
    # The files hold float32 weights; the skeleton is built abstractly (no random
    # initialisation) and set to float32 so that loading works under x64 too.
    like = jax.tree.map(
        lambda a: (
            jax.ShapeDtypeStruct(a.shape, jnp.float32)
            if isinstance(a, jax.ShapeDtypeStruct)
            and jnp.issubdtype(a.dtype, jnp.floating)
            else a
        ),
        like,
    )
    return eqx.tree_deserialise_leaves(_weight_file(filename), like)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GalaxyPrior:
    r"""A pretrained diffusion prior on single-band galaxy images.

    Built by :func:`galaxy_prior`. The diffusion lives in the network's space
    :math:`u = \log(1 + f) / 0.1` of a flux image :math:`f`; :meth:`encode` and
    :meth:`decode` map between the two.

    Attributes
    ----------
    score_fn
        ``score_fn(x, t) -> grad_x log p_t(x)`` for one ``(size, size)`` image ``x``
        and a scalar OU time ``t`` in ``(0, 5]``; jittable, vmappable, returns the
        dtype of ``x``. A pytree whose leaves are exactly the weights. In
        ``space="u"`` it is the OU score of :math:`u`; in ``space="flux"`` the
        change-of-variables score of :math:`f = \mathrm{decode}(U_t)` (see
        :func:`galaxy_prior`).
    network
        The loaded Equinox network (galaxygrad's ``ScoreNet``), called as
        ``network(u[None], s)`` with network time ``s = 2 t``.
    survey
        ``"HSC"``, ``"ZTF"``, ``"LSST"``, ``"ROMAN"`` or ``"QUASAR"``.
    size
        Image side in pixels.
    space
        ``"u"`` or ``"flux"``: the space of ``score_fn`` and of :meth:`sample`.
    event_shape
        ``(size, size)``.

    Examples
    --------
    >>> import importlib.util, pytest
    >>> if importlib.util.find_spec("galaxygrad") is None:  # the [galaxy] extra
    ...     pytest.skip("needs pip install numpyro_almc[galaxy]")
    >>> import jax.numpy as jnp
    >>> prior = galaxy_prior("HSC", 32)
    >>> prior.event_shape
    (32, 32)
    >>> prior.decode(prior.encode(jnp.array([0.0, 1.0, 10.0]))).round(4).tolist()
    [0.0, 1.0, 10.0]
    """

    score_fn: Callable[[Array, ArrayLike], Array] = dataclasses.field(repr=False)
    network: object = dataclasses.field(repr=False)
    survey: str
    size: int
    space: str = "u"
    event_shape: tuple[int, ...] = ()

    #: Largest OU time the networks were trained at (network time 10).
    max_time = _NETWORK_MAX_TIME / 2
    #: Smallest OU time of :meth:`sample`'s reverse diffusion (network time 0.01),
    #: which ends there with a Tweedie step: the prior's draws are the denoised law
    #: at this time. End a final stage at the same time,
    #: ``FinalStage(num_steps, min_time=prior.min_time)``, for draws of the posterior
    #: under that prior (``benchmarks/results/final_stage_galaxy.md``: the stage's
    #: default ``1e-4``, below the network's range, over-covers).
    min_time = _NETWORK_MIN_TIME / 2

    @staticmethod
    def encode(flux: ArrayLike) -> Array:
        r"""Flux → network space :math:`u = \log(1 + f) / 0.1` (``nan`` for
        :math:`f < -1`)."""
        return _encode(flux)

    @staticmethod
    def decode(u: ArrayLike) -> Array:
        r"""Network space → flux :math:`f = e^{0.1 u} - 1` (always :math:`> -1`)."""
        return _decode(u)

    @property
    def u_score_fn(self) -> Callable[[Array, ArrayLike], Array]:
        """The OU score ``(u, t) -> grad_u log p_t(u)`` in ``u`` space, whatever
        :attr:`space` is (equal to :attr:`score_fn` when ``space="u"``)."""
        if self.space == "u":
            return self.score_fn
        return _NetworkScore(self.score_fn.params, self.score_fn.static, "u", self.size)

    def sample(
        self, rng_key: PRNGKey, num_samples: int | None = None, **kwargs
    ) -> Array:
        """Prior draws by reverse diffusion in ``u``, returned in :attr:`space`.

        The reverse diffusion always runs on the ``u``-space OU score (the OU path
        in flux space is not the one the network knows); with ``space="flux"`` the
        draws are decoded. Keyword arguments go to :func:`numpyro_almc.sample_prior`
        (``num_steps``: 500 by default, 50 already give clean images;
        ``initial_time``, ``final_time``, ``dtype``, ``denoise``). The defaults run
        over the training range, from OU time 5 (network time 10) down to 0.005
        (network time 0.01: noise of 0.1 in ``u``, i.e. 1 % in ``1 + f``).

        Examples
        --------
        >>> import importlib.util, pytest
        >>> if importlib.util.find_spec("galaxygrad") is None:  # the [galaxy] extra
        ...     pytest.skip("needs pip install numpyro_almc[galaxy]")
        >>> import jax
        >>> prior = galaxy_prior("HSC", 32)
        >>> prior.sample(jax.random.key(0), 2, num_steps=10).shape
        (2, 32, 32)
        """
        kwargs.setdefault("initial_time", self.max_time)
        kwargs.setdefault("final_time", self.min_time)
        draws = sample_prior(
            rng_key, self.u_score_fn, self.event_shape, num_samples, **kwargs
        )
        return _decode(draws).astype(draws.dtype) if self.space == "flux" else draws


def galaxy_prior(
    survey: str = "HSC", size: int = 64, *, space: str = "u"
) -> GalaxyPrior:
    r"""A pretrained galaxy-image diffusion prior from galaxygrad 0.2.1, offline.

    Loads the network's weights from the installed ``galaxygrad`` 0.2.1 wheel
    (``pip install numpyro_almc[galaxy]``) by path, without importing galaxygrad
    (its ``__init__`` fails on case-sensitive file systems), and returns its score
    in this package's OU convention: the network is a VP-SDE score model with
    :math:`\beta = 1`, so the OU score at time :math:`t` is the network's output at
    network time :math:`2t`. Nothing is downloaded. Loaded networks are cached.

    **Which space to write the model in.** The network models
    :math:`u = \log(1 + f)/0.1` of the flux :math:`f`, and the OU path
    :math:`p_t` of ALMC and of reverse diffusion is the path of :math:`u`. Write
    the NumPyro model in :math:`u` (``space="u"``, the default) and map to flux
    inside the likelihood::

        u = numpyro.sample("u", ScorePrior(prior.score_fn, prior.event_shape))
        numpyro.sample("y", dist.Normal(A(prior.decode(u)), sigma), obs=y)

    The likelihood is then non-linear in :math:`u` (convex in flux, not in
    :math:`u`), but prior, path and warm start are exactly those the network was
    trained for. As a density on flux, the prior picks up the Jacobian of
    :math:`u = \log(1 + f)/0.1`:

    .. math::

        \log p^f(f) = \log p^u(u(f)) - \sum_i \log\big(0.1\,(1 + f_i)\big),
        \qquad
        \nabla_f \log p^f(f) = \frac{\nabla_u \log p^u(u(f))}{0.1\,(1 + f)}
            - \frac{1}{1 + f}.

    ``space="flux"`` returns this score, with :math:`p^u` replaced by the
    noised :math:`p^u_t`: the score of :math:`\mathrm{decode}(U_t)`. It is the flux
    prior's score as :math:`t \to 0` (galaxygrad's own wrapper omits the
    :math:`-1/(1+f)` term), useful for MAP or gradient-based fitting in flux at
    small ``t``. It is **not** an OU path in flux space: its :math:`t \to \infty`
    law is that of :math:`e^{0.1 Z} - 1`, not :math:`N(0, I)`, and it is undefined
    for :math:`f \le -1`, where Langevin noise would take a flux iterate; so do not
    anneal ALMC or reverse diffusion with it (:meth:`GalaxyPrior.sample` always
    diffuses in ``u``).

    Parameters
    ----------
    survey
        ``"HSC"`` (sizes 32, 64), ``"ZTF"`` (32, 64; ZTF-like simulations),
        ``"LSST"`` (60), ``"ROMAN"`` (120) or ``"QUASAR"`` (72; undocumented,
        lensed quasars by its file name); case-insensitive. See
        :data:`GALAXY_NETWORKS`.
    size
        Image side in pixels.
    space
        ``"u"`` (default): ``score_fn`` is the OU score of :math:`u`. ``"flux"``:
        the change-of-variables score above.

    Returns
    -------
    GalaxyPrior
        With ``score_fn(x, t)`` for one ``(size, size)`` image and scalar OU time
        ``t`` in ``(0, 5]``, ``event_shape == (size, size)``, ``encode``,
        ``decode`` and ``sample``.

    Raises
    ------
    ValueError
        For an unknown survey, size or space (the message lists the available ones).
    ImportError
        If galaxygrad 0.2.1 (or equinox) is not installed.

    Examples
    --------
    >>> import importlib.util, pytest
    >>> if importlib.util.find_spec("galaxygrad") is None:  # the [galaxy] extra
    ...     pytest.skip("needs pip install numpyro_almc[galaxy]")
    >>> import jax, jax.numpy as jnp
    >>> prior = galaxy_prior("HSC", 32)
    >>> u = prior.encode(jnp.zeros((32, 32)))          # an empty image
    >>> score = jax.jit(prior.score_fn)(u, 0.1)
    >>> score.shape, score.dtype
    ((32, 32), dtype('float32'))
    >>> batched = jax.jit(jax.vmap(prior.score_fn, in_axes=(0, None)))
    >>> batched(jnp.stack([u, u]), 0.1).shape
    (2, 32, 32)

    References
    ----------
    Sampson, Melchior, Ward, Birmingham, "Score-matching neural networks for
    improved multi-band source separation", arXiv:2401.07313 (galaxygrad).
    Song et al., "Score-based generative modeling through stochastic differential
    equations", arXiv:2011.13456 (the VP SDE).
    """
    if not isinstance(survey, str) or survey.upper() not in GALAXY_NETWORKS:
        available = ", ".join(
            f"{name} (sizes {', '.join(map(str, sizes))})"
            for name, sizes in GALAXY_NETWORKS.items()
        )
        raise ValueError(f"unknown survey {survey!r}; available: {available}.")
    survey = survey.upper()
    sizes = GALAXY_NETWORKS[survey]
    if (
        isinstance(size, bool)
        or not isinstance(size, int | np.integer)
        or int(size) not in sizes
    ):
        raise ValueError(
            f"no {survey} network of size {size!r}; available sizes: "
            f"{', '.join(map(str, sizes))}."
        )
    if space not in _SPACES:
        raise ValueError(f"space must be one of {_SPACES}; got {space!r}.")
    size = int(size)
    return _galaxy_prior(survey, size, space)


@functools.cache  # at most 2 spaces x 7 networks
def _galaxy_prior(survey: str, size: int, space: str) -> GalaxyPrior:
    import equinox as eqx

    network = _load_network(GALAXY_NETWORKS[survey][size], size)
    params, static = eqx.partition(network, eqx.is_array)
    return GalaxyPrior(
        score_fn=_NetworkScore(params, static, space, size),
        network=network,
        survey=survey,
        size=size,
        space=space,
        event_shape=(size, size),
    )
