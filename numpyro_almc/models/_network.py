"""Time-conditioned epsilon-prediction network, denoising score matching, file I/O."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from numpyro_almc.path.ou import ou_noise_variance
from numpyro_almc.types import Array, ArrayLike, PRNGKey

__all__ = [
    "ScoreNetwork",
    "TrainedScoreNetwork",
    "dsm_loss",
    "load_network",
    "save_network",
    "train_score_network",
]

_FORMAT_VERSION = 1


def _half_log_snr(t: Array) -> Array:
    # lambda(t) = log(e^{-t} / sigma_t); the network is conditioned on it because it is
    # the natural, scale-free coordinate of the noise level (t and sigma_t are not).
    return -0.5 * jnp.log(jnp.expm1(2.0 * t))


def _sinusoidal_embedding(lam: Array, num_frequencies: int) -> Array:
    # Periods from ~0.3 to ~125 half-log-SNR units cover lambda in [-6, 6] at all
    # resolutions.
    freqs = jnp.exp(
        jnp.linspace(math.log(0.05), math.log(20.0), num_frequencies, dtype=lam.dtype)
    )
    angles = lam * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


class _ResidualBlock(eqx.Module):
    norm: eqx.nn.LayerNorm
    film: eqx.nn.Linear
    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear

    def __init__(self, width: int, *, key: PRNGKey):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False)
        self.film = eqx.nn.Linear(width, 2 * width, key=k1)
        self.linear1 = eqx.nn.Linear(width, width, key=k2)
        linear2 = eqx.nn.Linear(width, width, key=k3)
        # Zero-initialised last layer: every block starts as the identity.
        self.linear2 = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            linear2,
            (jnp.zeros_like(linear2.weight), jnp.zeros_like(linear2.bias)),
        )

    def __call__(self, h: Array, cond: Array) -> Array:
        scale, shift = jnp.split(self.film(cond), 2)
        z = self.norm(h) * (1.0 + scale) + shift
        z = self.linear2(jax.nn.silu(self.linear1(jax.nn.silu(z))))
        return h + z


class ScoreNetwork(eqx.Module):
    r"""Residual MLP predicting the noise :math:`\varepsilon` of a noised flat vector.

    ``network(x, t)`` takes one unbatched ``x`` of shape ``(data_dim,)`` at OU time
    ``t`` (:math:`x = e^{-t} x_0 + \sigma_t \varepsilon`) and returns
    :math:`\hat\varepsilon(x, t)`; the score is :math:`-\hat\varepsilon / \sigma_t`.
    The time enters through a sinusoidal embedding of the half log-SNR
    :math:`\lambda(t) = -\tfrac12\log(e^{2t}-1)`, an MLP, and a FiLM (scale/shift)
    modulation after the LayerNorm of each residual block (LayerNorm → FiLM → SiLU →
    Linear → SiLU → Linear, added back).

    Parameters
    ----------
    data_dim
        Length of the flat data vector.
    width
        Hidden width of the residual stream.
    num_blocks
        Number of residual blocks.
    num_frequencies
        Number of sinusoidal frequencies of the noise-level embedding.
    key
        PRNG key for the initialisation (keyword-only).

    Examples
    --------
    >>> net = ScoreNetwork(4, width=16, num_blocks=1, key=jax.random.key(0))
    >>> net(jnp.zeros(4), 0.5).shape
    (4,)
    """

    input_layer: eqx.nn.Linear
    embed1: eqx.nn.Linear
    embed2: eqx.nn.Linear
    blocks: tuple[_ResidualBlock, ...]
    output_norm: eqx.nn.LayerNorm
    output_layer: eqx.nn.Linear
    num_frequencies: int = eqx.field(static=True)

    def __init__(
        self,
        data_dim: int,
        width: int = 256,
        num_blocks: int = 3,
        num_frequencies: int = 16,
        *,
        key: PRNGKey,
    ):
        keys = jax.random.split(key, num_blocks + 4)
        self.num_frequencies = num_frequencies
        self.input_layer = eqx.nn.Linear(data_dim, width, key=keys[0])
        self.embed1 = eqx.nn.Linear(2 * num_frequencies, width, key=keys[1])
        self.embed2 = eqx.nn.Linear(width, width, key=keys[2])
        self.blocks = tuple(_ResidualBlock(width, key=k) for k in keys[4:])
        self.output_norm = eqx.nn.LayerNorm(width)
        output_layer = eqx.nn.Linear(width, data_dim, key=keys[3])
        self.output_layer = eqx.tree_at(
            lambda m: m.weight, output_layer, 0.1 * output_layer.weight
        )

    def __call__(self, x: Array, t: ArrayLike) -> Array:
        t = jnp.asarray(t, x.dtype)
        emb = _sinusoidal_embedding(_half_log_snr(t), self.num_frequencies)
        cond = self.embed2(jax.nn.silu(self.embed1(emb)))
        cond = jax.nn.silu(cond)
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.output_layer(jax.nn.silu(self.output_norm(h)))


class _NetworkScore(eqx.Module):
    """``score_fn(x, t) = -eps_hat(x, t) / sigma_t`` as a pytree: its weights are
    leaves, so ``jit``/``sample_prior`` trace them instead of baking them in."""

    network: ScoreNetwork

    def __call__(self, x: Array, t: ArrayLike) -> Array:
        x = jnp.asarray(x)
        t = jnp.asarray(t, x.dtype)
        sigma = jnp.sqrt(ou_noise_variance(t))
        eps = self.network(x, t)
        return (-eps / sigma).astype(x.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedScoreNetwork:
    """A trained :class:`ScoreNetwork` with its configuration and loss history.

    Attributes
    ----------
    network
        The network (the EMA weights when EMA was used).
    config
        JSON-serialisable dict: architecture (``data_dim``, ``width``,
        ``num_blocks``, ``num_frequencies``) and training hyper-parameters.
    train_loss
        Mean training DSM loss per logging interval, ``float32[num_logs]``.
    validation_loss
        Held-out DSM loss of the (EMA) network per logging interval (empty when no
        data was held out).

    Examples
    --------
    >>> from numpyro_almc.models import digits_prior
    >>> trained = digits_prior().network
    >>> isinstance(trained, TrainedScoreNetwork), trained.config["data_dim"]
    (True, 64)
    >>> trained.score_fn(jnp.zeros(64), 0.5).shape
    (64,)
    """

    network: ScoreNetwork
    config: dict[str, Any]
    train_loss: np.ndarray
    validation_loss: np.ndarray

    @property
    def score_fn(self) -> _NetworkScore:
        r"""``score_fn(x, t) -> grad_x log p_t(x) = -eps_hat(x, t) / sigma_t``."""
        return _NetworkScore(self.network)


def _architecture(config: dict[str, Any]) -> dict[str, int]:
    return {
        k: int(config[k])
        for k in ("data_dim", "width", "num_blocks", "num_frequencies")
    }


def _sample_half_log_snr(key, shape, min_time, max_time, dtype):
    lam_low = _half_log_snr(jnp.asarray(max_time, dtype))
    lam_high = _half_log_snr(jnp.asarray(min_time, dtype))
    return jax.random.uniform(key, shape, dtype, lam_low, lam_high)


def _dsm_loss(network, key, x0, min_time, max_time):
    """Per-dimension mean of |eps_hat - eps|^2 with one (t, eps) draw per row."""
    dtype = x0.dtype
    t_key, eps_key = jax.random.split(key)
    lam = _sample_half_log_snr(t_key, x0.shape[:1], min_time, max_time, dtype)
    # alpha_t = sqrt(sigmoid(2 lambda)), sigma_t = sqrt(sigmoid(-2 lambda)).
    t = 0.5 * jax.nn.softplus(-2.0 * lam)
    alpha = jnp.sqrt(jax.nn.sigmoid(2.0 * lam))[:, None]
    sigma = jnp.sqrt(jax.nn.sigmoid(-2.0 * lam))[:, None]
    eps = jax.random.normal(eps_key, x0.shape, dtype)
    xt = alpha * x0 + sigma * eps
    eps_hat = jax.vmap(network)(xt, t)
    return jnp.mean((eps_hat - eps) ** 2)


def dsm_loss(
    network: ScoreNetwork | TrainedScoreNetwork,
    rng_key: PRNGKey,
    data: ArrayLike,
    *,
    num_repeats: int = 1,
    min_time: float = 1e-3,
    max_time: float = 5.0,
) -> Array:
    r"""Denoising score-matching loss (epsilon-prediction MSE per dimension).

    .. math::

        L = \mathbb E_{x_0, \lambda, \varepsilon}
            \tfrac1d \|\hat\varepsilon(e^{-t} x_0 + \sigma_t \varepsilon, t)
            - \varepsilon\|^2,

    i.e. score matching with weight :math:`\sigma_t^2`, with the half log-SNR
    :math:`\lambda(t)` uniform on :math:`[\lambda(T_{\max}), \lambda(t_{\min})]`.

    Parameters
    ----------
    network
        A :class:`ScoreNetwork` or :class:`TrainedScoreNetwork`.
    rng_key
        PRNG key for the noise levels and noises.
    data
        ``(n, data_dim)`` array in network space.
    num_repeats
        Independent ``(t, eps)`` draws per data row (the estimate averages
        ``n * num_repeats`` terms).
    min_time
        Smallest OU time of the noise levels.
    max_time
        Largest OU time of the noise levels.

    Returns
    -------
    Array
        The scalar loss.

    Examples
    --------
    >>> net = ScoreNetwork(4, width=16, num_blocks=1, key=jax.random.key(0))
    >>> data = jax.random.normal(jax.random.key(1), (32, 4))
    >>> dsm_loss(net, jax.random.key(2), data).shape
    ()
    """
    if isinstance(network, TrainedScoreNetwork):
        network = network.network
    data = jnp.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must have shape (n, data_dim); got {data.shape}.")
    if int(num_repeats) < 1:
        raise ValueError(f"num_repeats must be a positive int; got {num_repeats}.")
    data = jnp.tile(data, (int(num_repeats), 1))
    return eqx.filter_jit(_dsm_loss)(network, rng_key, data, min_time, max_time)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return int(value)


def _check_positive_float(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite positive number; got {value}.")
    return value


def _fit(
    network: ScoreNetwork,
    train_data: jax.Array,
    valid_data: jax.Array,
    train_key: PRNGKey,
    valid_key: PRNGKey,
    config: dict,
    *,
    log_every: int,
    progress_bar: bool,
) -> tuple[ScoreNetwork, list[float], list[float]]:
    """The optimisation of :func:`train_score_network` (settings from its checked
    ``config``): jitted chunks of ``log_every`` AdamW steps, the mean training loss
    and the validation loss of the EMA weights after each, stopping with an error on
    a non-finite loss."""
    num_steps, batch_size = config["num_steps"], config["batch_size"]
    min_time, max_time = config["min_time"], config["max_time"]
    ema_decay = config["ema_decay"]
    num_valid = valid_data.shape[0]
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config["learning_rate"],
        warmup_steps=config["warmup_steps"],
        decay_steps=num_steps,
        end_value=0.0,
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, weight_decay=config["weight_decay"]),
    )
    params, static = eqx.partition(network, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    ema_params = params
    decay = 0.0 if ema_decay is None else ema_decay

    def loss_fn(params, key, batch):
        return _dsm_loss(eqx.combine(params, static), key, batch, min_time, max_time)

    def train_step(carry, key):
        params, ema_params, opt_state = carry
        batch_key, loss_key = jax.random.split(key)
        idx = jax.random.randint(batch_key, (batch_size,), 0, train_data.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(params, loss_key, train_data[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema_params = jax.tree.map(
            lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params
        )
        return (params, ema_params, opt_state), loss

    @jax.jit
    def train_chunk(carry, keys):
        carry, losses = jax.lax.scan(train_step, carry, keys)
        return carry, jnp.mean(losses)

    @jax.jit
    def valid_loss(ema_params):
        # Fixed key: the validation curve is not noisy from step to step.
        return loss_fn(ema_params, valid_key, jnp.tile(valid_data, (4, 1)))

    iterator = range(0, num_steps, log_every)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="DSM training", unit="step")
    train_history, valid_history = [], []
    carry = (params, ema_params, opt_state)
    for start in iterator:
        n = min(log_every, num_steps - start)
        keys = jax.random.split(jax.random.fold_in(train_key, start), n)
        carry, loss = train_chunk(carry, keys)
        train_history.append(float(loss))
        postfix = {"train": f"{train_history[-1]:.4f}"}
        if num_valid > 0:
            valid_history.append(float(valid_loss(carry[1])))
            postfix["valid"] = f"{valid_history[-1]:.4f}"
        if not math.isfinite(train_history[-1]):
            if bar is not None:
                bar.close()
            raise FloatingPointError(
                f"training loss became non-finite at step {start + n}; lower "
                "learning_rate or check that data is roughly unit scale."
            )
        if bar is not None:
            bar.update(n)
            bar.set_postfix(postfix)
    if bar is not None:
        bar.close()
    params, ema_params, _ = carry
    final = ema_params if ema_decay is not None else params
    return eqx.combine(final, static), train_history, valid_history


def train_score_network(
    rng_key: PRNGKey,
    data: ArrayLike,
    *,
    num_steps: int,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_steps: int | None = None,
    width: int = 256,
    num_blocks: int = 3,
    num_frequencies: int = 16,
    ema_decay: float | None = 0.999,
    min_time: float = 1e-3,
    max_time: float = 5.0,
    validation_fraction: float = 0.1,
    log_every: int = 100,
    progress_bar: bool = True,
) -> TrainedScoreNetwork:
    r"""Train a :class:`ScoreNetwork` by denoising score matching in OU time.

    Minimises the epsilon-prediction MSE (score matching weighted by
    :math:`\lambda(t) = \sigma_t^2`), with the half log-SNR
    :math:`\lambda = -\tfrac12\log(e^{2t}-1)` drawn uniformly on
    :math:`[\lambda(\text{max\_time}), \lambda(\text{min\_time})]` — uniform in
    log-SNR puts equal effort on every decade of noise level, which is where reverse
    diffusion (:func:`numpyro_almc.scores.sample_prior`, uniform in the same
    coordinate) spends its steps. Optimiser: AdamW with linear warmup then cosine
    decay to zero, gradient clipping at norm 1. An exponential moving average (EMA) of
    the weights is kept and returned when ``ema_decay`` is not ``None``.

    Parameters
    ----------
    rng_key
        PRNG key (initialisation, validation split, batches, noise).
    data
        ``(n, data_dim)`` training data, already in network space (roughly unit scale;
        see :meth:`DigitsPrior.encode`).
    num_steps
        Number of optimiser steps.
    batch_size
        Mini-batch size (rows drawn uniformly with replacement).
    learning_rate
        Peak learning rate.
    weight_decay
        AdamW decoupled weight decay.
    warmup_steps
        Linear warmup length; default ``min(1000, num_steps // 10)``.
    width
        Hidden width, see :class:`ScoreNetwork`.
    num_blocks
        Number of residual blocks, see :class:`ScoreNetwork`.
    num_frequencies
        Frequencies of the noise-level embedding, see :class:`ScoreNetwork`.
    ema_decay
        EMA decay per step in ``[0, 1)``, or ``None`` for no EMA.
    min_time
        Smallest OU time of the training noise levels; sample with the same range.
    max_time
        Largest OU time of the training noise levels.
    validation_fraction
        Fraction of ``data`` held out (randomly, from ``rng_key``) for the
        validation loss, in ``[0, 1)``.
    log_every
        Steps per logging interval (one jitted ``lax.scan`` chunk).
    progress_bar
        Show a tqdm progress bar with the current losses.

    Returns
    -------
    TrainedScoreNetwork
        The trained network, its configuration and its loss history.

    Examples
    --------
    >>> data = jax.random.normal(jax.random.key(1), (64, 4))
    >>> trained = train_score_network(jax.random.key(0), data, num_steps=10,
    ...     batch_size=16, width=16, num_blocks=1, log_every=5, progress_bar=False)
    >>> trained.train_loss.shape, trained.score_fn(jnp.zeros(4), 0.5).shape
    ((2,), (4,))
    """
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
        raise ValueError(
            f"data must be a 2-D array (n, data_dim) with n >= 2; got {data.shape}."
        )
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError("data contains non-finite values; clean or drop them first.")
    num_steps = _check_positive_int("num_steps", num_steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    width = _check_positive_int("width", width)
    num_blocks = _check_positive_int("num_blocks", num_blocks)
    num_frequencies = _check_positive_int("num_frequencies", num_frequencies)
    log_every = _check_positive_int("log_every", log_every)
    learning_rate = _check_positive_float("learning_rate", learning_rate)
    weight_decay = float(weight_decay)
    if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}.")
    if warmup_steps is None:
        warmup_steps = min(1000, num_steps // 10)
    if isinstance(warmup_steps, bool) or not (0 <= int(warmup_steps) <= num_steps):
        raise ValueError(
            f"warmup_steps must be an int in [0, num_steps={num_steps}]; "
            f"got {warmup_steps!r}."
        )
    warmup_steps = int(warmup_steps)
    if ema_decay is not None:
        ema_decay = float(ema_decay)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None; got {ema_decay}.")
    min_time = _check_positive_float("min_time", min_time)
    max_time = _check_positive_float("max_time", max_time)
    if max_time <= min_time:
        raise ValueError(
            f"max_time must be larger than min_time; got min_time={min_time}, "
            f"max_time={max_time}."
        )
    validation_fraction = float(validation_fraction)
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in [0, 1); got {validation_fraction}."
        )
    num_valid = int(round(validation_fraction * data.shape[0]))
    if data.shape[0] - num_valid < 1:
        raise ValueError("validation_fraction leaves no training data; lower it.")

    init_key, split_key, train_key, valid_key = jax.random.split(rng_key, 4)
    perm = np.asarray(jax.random.permutation(split_key, data.shape[0]))
    valid_data = jnp.asarray(data[perm[:num_valid]])
    train_data = jnp.asarray(data[perm[num_valid:]])
    dtype = train_data.dtype

    config = {
        "format_version": _FORMAT_VERSION,
        "data_dim": int(data.shape[1]),
        "width": width,
        "num_blocks": num_blocks,
        "num_frequencies": num_frequencies,
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "ema_decay": ema_decay,
        "min_time": min_time,
        "max_time": max_time,
        "validation_fraction": validation_fraction,
        "num_train": int(train_data.shape[0]),
        "num_validation": int(num_valid),
        "time_sampling": "half log-SNR uniform on [lambda(max_time), lambda(min_time)]",
        "parameterisation": "epsilon-prediction; score = -eps_hat / sigma_t",
    }

    network = ScoreNetwork(
        config["data_dim"], width, num_blocks, num_frequencies, key=init_key
    )
    network = jax.tree.map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, network
    )
    final, train_history, valid_history = _fit(
        network,
        train_data,
        valid_data,
        train_key,
        valid_key,
        config,
        log_every=log_every,
        progress_bar=progress_bar,
    )
    return TrainedScoreNetwork(
        network=final,
        config=config,
        train_loss=np.asarray(train_history, np.float32),
        validation_loss=np.asarray(valid_history, np.float32),
    )


def save_network(path: str | os.PathLike, trained: TrainedScoreNetwork) -> None:
    """Save a :class:`TrainedScoreNetwork` to a ``.npz`` file.

    The file holds the network's arrays as ``param_000``, ``param_001``, … (in
    ``jax.tree`` leaf order), the loss histories, and the JSON config as a 0-d
    unicode array ``config`` — no pickles; :func:`load_network` round-trips exactly.

    Parameters
    ----------
    path
        Destination file (``.npz`` is appended by NumPy if missing).
    trained
        The network to save.

    Examples
    --------
    >>> import os, tempfile
    >>> from numpyro_almc.models import digits_prior
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.npz")
    >>> save_network(path, digits_prior().network)
    >>> load_network(path).config == digits_prior().network.config
    True
    """
    if not isinstance(trained, TrainedScoreNetwork):
        raise TypeError(
            f"trained must be a TrainedScoreNetwork; got {type(trained).__name__}."
        )
    leaves = jax.tree.leaves(eqx.filter(trained.network, eqx.is_array))
    arrays = {f"param_{i:03d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    np.savez(
        path,
        config=np.asarray(json.dumps(trained.config, sort_keys=True)),
        train_loss=np.asarray(trained.train_loss),
        validation_loss=np.asarray(trained.validation_loss),
        **arrays,
    )


def load_network(path: str | os.PathLike) -> TrainedScoreNetwork:
    """Load a :class:`TrainedScoreNetwork` written by :func:`save_network`.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    TrainedScoreNetwork
        The network with its configuration and loss history.

    Examples
    --------
    >>> import os, tempfile
    >>> from numpyro_almc.models import digits_prior
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.npz")
    >>> save_network(path, digits_prior().network)
    >>> x = jnp.zeros(64)
    >>> bool(jnp.allclose(load_network(path).score_fn(x, 0.5),
    ...                   digits_prior().score_fn(x, 0.5)))
    True
    """
    with np.load(path, allow_pickle=False) as npz:
        config = json.loads(str(npz["config"]))
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {config.get('format_version')}; this "
                f"version of numpyro_almc reads {_FORMAT_VERSION}. Retrain or convert."
            )
        names = sorted(k for k in npz.files if k.startswith("param_"))
        arrays = [npz[k] for k in names]
        train_loss = npz["train_loss"]
        validation_loss = npz["validation_loss"]
    skeleton = eqx.filter_eval_shape(
        ScoreNetwork, **_architecture(config), key=jax.random.key(0)
    )
    params = eqx.filter(skeleton, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    treedef = jax.tree.structure(params)
    if treedef.num_leaves != len(arrays):
        raise ValueError(
            f"{path} holds {len(arrays)} arrays but the architecture in its config "
            f"needs {treedef.num_leaves}; the file is corrupt or was edited."
        )
    for shape_dtype, array in zip(jax.tree.leaves(params), arrays, strict=True):
        if shape_dtype.shape != array.shape:
            raise ValueError(f"{path}: array shape mismatch; the file is corrupt.")
    network = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays])
    network = eqx.combine(
        network,
        eqx.filter(skeleton, lambda x: not isinstance(x, jax.ShapeDtypeStruct)),
    )
    return TrainedScoreNetwork(
        network=network,
        config=config,
        train_loss=train_loss,
        validation_loss=validation_loss,
    )
