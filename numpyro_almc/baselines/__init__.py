r"""Baseline posterior samplers with the same score-only interface as ALMC.

Every sampler here takes what :func:`numpyro_almc.run_almc` takes — a prior score
``score_fn(x, t)`` in Ornstein–Uhlenbeck (OU) time (``X_t = e^{-t} X_0 +
\sqrt{1 - e^{-2t}} Z``, variance-preserving with :math:`\bar\alpha = e^{-2t}`) and a
log-likelihood ``loglikelihood_fn(x) = log p(y | x)``, both for **one unbatched**
array ``x`` — and returns ``num_samples`` independent draws, shape
``(num_samples, *position.shape)``, in the dtype of ``position``. Each run is one
jitted ``lax.scan`` vectorised over the samples; sample ``c`` uses keys derived from
``fold_in(rng_key, c)``, so it does not depend on ``num_samples``.

* :func:`dps` — Diffusion Posterior Sampling (Chung et al. 2023): a reverse VP
  diffusion guided by the likelihood of the Tweedie denoiser. One score evaluation
  **plus one vector–Jacobian product through the score** per step.
* :func:`langevin` — unadjusted Langevin on :math:`\mu_t \propto p_t\,e^{-R}` at one
  small fixed ``t``, from ``N(0, I)``. One score evaluation per step.
* :func:`annealed_langevin` — annealed Langevin dynamics (Song & Ermon 2019) over
  geometric noise levels, from ``N(0, I)`` with no warm start. One score evaluation
  per step.

They exist to be compared with ALMC (``benchmarks/baselines_gmm.py``); positions are
plain arrays (not pytrees).

References
----------
.. [1] H. Chung, J. Kim, M. T. Mccann, M. L. Klasky, J. C. Ye. Diffusion Posterior
   Sampling for General Noisy Inverse Problems. ICLR 2023, arXiv:2209.14687.
.. [2] Y. Song, S. Ermon. Generative Modeling by Estimating Gradients of the Data
   Distribution. NeurIPS 2019, arXiv:1907.05600.
.. [3] A. Parulekar, L. Rout, K. Shanmugam, S. Shakkottai. Efficient Approximate
   Posterior Sampling with Annealed Langevin Monte Carlo. arXiv:2508.07631.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_almc._static import by_identity
from numpyro_almc._validate import (
    check_count,
    check_float_dtype,
    check_initial_time,
    check_positive,
)
from numpyro_almc.baselines._reverse_smc import ReverseSMCResult
from numpyro_almc.baselines.mcgdiff import mcgdiff
from numpyro_almc.baselines.tds import tds
from numpyro_almc.path.ou import ou_coefficients, ou_noise_variance
from numpyro_almc.path.preconditioners import check_preconditioner
from numpyro_almc.path.schedules import (
    ANNEAL,
    ALMCSchedule,
    _anneal_times,
    langevin_schedule,
)
from numpyro_almc.run.chains import chain_keys, check_key, initial_positions
from numpyro_almc.run.driver import run_almc
from numpyro_almc.run.health import ALMCRunWarning
from numpyro_almc.types import Array, ArrayLike, PRNGKey

__all__ = [
    "ReverseSMCResult",
    "annealed_langevin",
    "annealed_langevin_schedule",
    "dps",
    "langevin",
    "mcgdiff",
    "tds",
]

ScoreFn = Callable[[Array, Array], Array]
LogLikelihoodFn = Callable[[Array], Array]


# ---------------------------------------------------------------------------
# Argument checks (eager, in Python)
# ---------------------------------------------------------------------------


def _knob(name: str, value, *, strict: bool = True):
    """A numeric knob that may be traced (changing it must not recompile).

    Python numbers and concrete scalar arrays are checked here; a traced value
    (e.g. a knob swept under ``jit``/``vmap``) cannot be, and is passed through.
    """
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if np.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
        if isinstance(value, jax.core.Tracer):
            return value
        value = np.asarray(value).item()
    return check_positive(name, value, allow_zero=not strict)


def _count(name: str, value, *, minimum: int = 1) -> int:
    return check_count(name, value, minimum)


def _run_unit_schedule(
    rng_key,
    score_fn,
    loglikelihood_fn,
    position,
    schedule,
    step_size,
    num_samples,
    preconditioner,
):
    """``run_almc`` on ``schedule`` with its step sizes multiplied by ``step_size``.

    The schedule is built with unit steps and scaled here by the (possibly traced)
    knob, so sweeping the step size does not recompile.
    """
    check_preconditioner(preconditioner, position)
    schedule = schedule._replace(
        step_sizes=schedule.step_sizes * jnp.asarray(step_size, position.dtype)
    )
    res = run_almc(
        rng_key,
        loglikelihood_fn,
        score_fn,
        schedule,
        position,
        num_chains=num_samples,
        preconditioner=preconditioner,
    )
    return res.state.position


def _callables(score_fn, loglikelihood_fn) -> None:
    if not callable(score_fn) or not callable(loglikelihood_fn):
        raise TypeError("`score_fn` and `loglikelihood_fn` must be callables.")


def _position(position: ArrayLike) -> Array:
    if position is None or isinstance(position, str):
        raise TypeError(
            "`position` must be a floating array (one position, e.g. jnp.zeros(d)), "
            f"got {type(position).__name__}."
        )
    if isinstance(position, dict):
        raise TypeError(
            "The baselines take a single array `position` (not a pytree); flatten "
            "the state with jax.flatten_util.ravel_pytree first."
        )
    position = jnp.asarray(position)
    if not jnp.issubdtype(position.dtype, jnp.floating):
        raise TypeError(
            f"`position` must be a floating array, got dtype {position.dtype}; "
            "pass e.g. jnp.zeros(d, jnp.float32)."
        )
    if position.size == 0:
        raise ValueError(
            f"`position` has no numbers (shape {position.shape}): pass one position "
            "of the problem's shape, e.g. jnp.zeros(d)."
        )
    return position


def _check_fns(score_fn, loglikelihood_fn, position) -> None:
    """Trace ``score_fn`` and ``loglikelihood_fn`` once on ``position`` (shapes only):
    a scalar log-likelihood and a score shaped like the position."""
    t = jnp.ones((), position.dtype)
    out = jax.eval_shape(score_fn, position, t)
    if jnp.shape(out) != position.shape:
        raise ValueError(
            f"score_fn returned shape {jnp.shape(out)} for a position of shape "
            f"{position.shape}; score_fn(x, t) takes ONE unbatched x and returns an "
            "array of the same shape."
        )
    out = jax.eval_shape(loglikelihood_fn, position)
    if jnp.shape(out) != ():
        raise ValueError(
            "loglikelihood_fn must return a scalar for one unbatched position, got "
            f"shape {jnp.shape(out)}."
        )


def _warn_if_not_finite(draws, where: str):
    """An ``ALMCRunWarning`` when a concrete result holds NaN or infinite values."""
    if isinstance(draws, jax.core.Tracer):
        return draws
    bad = ~np.isfinite(np.asarray(draws))
    if bad.any():
        warnings.warn(
            f"{where}: {int(bad.reshape(bad.shape[0], -1).any(axis=1).sum())} of "
            f"{bad.shape[0]} draws are not finite (the score or the likelihood "
            "gradient returned NaN or inf, or the steps diverged); lower the step "
            "size or check score_fn.",
            ALMCRunWarning,
            stacklevel=3,
        )
    return draws


def _time_range(initial_time, final_time) -> tuple[float, float]:
    initial_time = check_initial_time("initial_time", initial_time)
    final_time = check_positive("final_time", final_time)
    if not final_time < initial_time:
        raise ValueError(
            f"Need initial_time > final_time > 0, got initial_time={initial_time}, "
            f"final_time={final_time}; swap them or lower final_time."
        )
    return initial_time, final_time


# ---------------------------------------------------------------------------
# DPS
# ---------------------------------------------------------------------------


@functools.partial(
    jax.jit, static_argnames=("score_fn", "loglikelihood_fn", "normalize")
)
def _dps_run(
    keys, x_init, times, guidance_scale, eps, *, score_fn, loglikelihood_fn, normalize
):
    dtype = x_init.dtype

    def one_chain(key, x):
        def step(x, inputs):
            i, t, t_next = inputs
            alpha, sigma2 = ou_coefficients(t)

            def denoise(x):  # Tweedie: E[X_0 | X_t = x]
                return (x + sigma2 * score_fn(x, t)) / alpha

            # One score evaluation; the VJP below differentiates through it.
            x0_hat, vjp = jax.vjp(denoise, x)
            loglik, grad_x0 = jax.value_and_grad(loglikelihood_fn)(x0_hat)
            (grad,) = vjp(grad_x0.astype(dtype))
            if normalize:
                # DPS step ζ'/||y - A x0_hat||: the residual norm (in noise units)
                # of a Gaussian likelihood written without its constant.
                grad = grad / jnp.sqrt(jnp.maximum(-2 * loglik, 0) + eps)
            # Ancestral (DDPM posterior) step q(x_{t'} | x_t, x0_hat), t' < t.
            a2 = jnp.exp(-2 * (t - t_next))  # alpha_{t|t'}^2
            one_minus_a2 = ou_noise_variance(t - t_next)
            sigma2_next = ou_noise_variance(t_next)
            mean = (
                jnp.exp(-t_next) * one_minus_a2 / sigma2 * x0_hat
                + jnp.sqrt(a2) * sigma2_next / sigma2 * x
            )
            std = jnp.sqrt(sigma2_next * one_minus_a2 / sigma2)
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, dtype)
            x_next = mean + std * noise + guidance_scale * grad
            return x_next.astype(dtype), None

        n = times.shape[0] - 1
        inputs = (jnp.arange(n, dtype=jnp.int32), times[:-1], times[1:])
        x, _ = jax.lax.scan(step, x, inputs)
        return x

    return jax.vmap(one_chain)(keys, x_init)


def dps(
    rng_key: PRNGKey,
    score_fn: ScoreFn,
    loglikelihood_fn: LogLikelihoodFn,
    position: ArrayLike,
    *,
    num_samples: int,
    num_steps: int,
    guidance_scale: float,
    initial_time: float = 5.0,
    final_time: float = 1e-3,
    normalize: bool = True,
    eps: float = 1e-8,
) -> Array:
    r"""Diffusion Posterior Sampling (Chung et al. 2023) in OU time.

    Starting from ``x ~ N(0, I)`` at ``t_0 = initial_time``, for ``k = 0, ...,
    num_steps - 1`` (OU times ``t_0 > t_1 > ... > t_N = final_time`` uniform in the
    log signal-to-noise ratio, i.e. geometric in the VE noise level):

    .. math::

        \hat x_0(x) &= \bigl(x + \sigma_t^2\, s(x, t)\bigr) / \alpha_t
            \qquad (\text{Tweedie}), \\
        x' &= \frac{\alpha_{t'}(1 - a^2)}{\sigma_t^2}\,\hat x_0(x)
            + \frac{a\,\sigma_{t'}^2}{\sigma_t^2}\,x
            + \sqrt{\frac{\sigma_{t'}^2 (1 - a^2)}{\sigma_t^2}}\;\xi
            + \zeta_t\, \nabla_x \log p\bigl(y \mid \hat x_0(x)\bigr),

    with :math:`t = t_k`, :math:`t' = t_{k+1}`, :math:`\alpha_t = e^{-t}`,
    :math:`\sigma_t^2 = 1 - e^{-2t}`, :math:`a = e^{-(t - t')}` (the DDPM ancestral
    step from the posterior :math:`q(x_{t'} \mid x_t, \hat x_0)`). The gradient
    goes through the score network: **each step costs one score evaluation and one
    vector–Jacobian product of it** (plus a likelihood gradient), i.e. about two to
    three network passes, against one for ALMC.

    Guidance step :math:`\zeta_t`:

    * ``normalize=True`` (the paper's rule): :math:`\zeta_t = \text{guidance\_scale}
      / \sqrt{\max(-2\log p(y \mid \hat x_0), 0) + \text{eps}}`. For a Gaussian
      likelihood written **without its normalising constant**,
      :math:`\log p = -\lVert y - A\hat x_0\rVert^2 / (2\sigma_y^2)`, the root is
      :math:`\lVert y - A \hat x_0\rVert / \sigma_y` and the update is exactly DPS's
      :math:`-\zeta' \nabla_x \lVert y - A\hat x_0\rVert^2 / \lVert y - A\hat
      x_0\rVert` with :math:`\zeta' = \text{guidance\_scale} / (2 \sigma_y)`. With a
      normalised likelihood the constant :math:`d_y\log(2\pi\sigma_y^2)` enters the
      root (and it is clipped at 0): drop the constant to get the paper's rule.
    * ``normalize=False``: :math:`\zeta_t = \text{guidance\_scale}` (plain gradient
      guidance, the :math:`\zeta_t` of the DPS theory).

    The draw returned is the position at ``final_time`` (not its denoised
    :math:`\hat x_0`, which would cost one more score evaluation).

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    score_fn
        ``score_fn(x, t) -> ∇ log p_t(x)`` for one unbatched ``x`` (OU time). It must
        be differentiable in ``x`` (DPS backpropagates through it).
    loglikelihood_fn
        ``x -> log p(y | x)`` for one unbatched ``x``.
    position
        An array with the shape and (floating) dtype of one draw.
    num_samples
        Number of independent draws (vmapped).
    num_steps
        Reverse steps ``N`` (= score evaluations per draw, each plus one VJP).
    guidance_scale
        The main knob, ``>= 0`` (0 samples the prior). Too small ignores the data;
        too large overshoots and collapses onto a few modes or diverges. It is
        problem dependent: tune it on a grid (DPS used ``ζ' ∈ [0.1, 1]`` for images).
        May be a JAX scalar, traced under ``jit``/``vmap`` (a sweep then does not
        recompile; a traced value cannot be checked).
    initial_time
        OU time ``T`` of the start (``N(0, I)``). The start is exact only when
        ``e^{-T}·|x_0|`` is small: take ``T ≈ 5`` for priors of scale ~30.
    final_time
        OU time of the last step, ``0 < final_time < initial_time``; the draw carries
        OU noise of variance ``1 − e^{−2·final_time}``.
    normalize
        Use the normalised step ``ζ_t`` above (default, as in the paper).
    eps
        Added under the root of the normaliser to avoid a division by zero.

    Returns
    -------
    Array
        Shape ``(num_samples, *position.shape)``, dtype of ``position``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = dps(jax.random.key(0), lambda x, t: -x, lambda x: -0.5 * jnp.sum(x**2),
    ...         jnp.zeros(3), num_samples=4, num_steps=10, guidance_scale=0.1)
    >>> x.shape, x.dtype
    ((4, 3), dtype('float32'))

    References
    ----------
    Chung, Kim, Mccann, Klasky, Ye. Diffusion Posterior Sampling for General Noisy
    Inverse Problems. ICLR 2023, arXiv:2209.14687.
    """
    check_key(rng_key)
    _callables(score_fn, loglikelihood_fn)
    position = _position(position)
    _check_fns(score_fn, loglikelihood_fn, position)
    num_samples = _count("num_samples", num_samples)
    num_steps = _count("num_steps", num_steps)
    guidance_scale = _knob("guidance_scale", guidance_scale, strict=False)
    initial_time, final_time = _time_range(initial_time, final_time)
    eps = check_positive("eps", eps)
    if not isinstance(normalize, bool):
        raise TypeError(f"`normalize` must be a bool, got {normalize!r}.")
    dtype = position.dtype
    times = jnp.asarray(
        _anneal_times("snr", initial_time, final_time, num_steps), dtype=dtype
    )
    keys = jax.vmap(lambda k: jax.random.split(k)[1])(chain_keys(rng_key, num_samples))
    x_init = initial_positions(rng_key, position, num_samples)
    draws = _dps_run(
        keys,
        x_init,
        times,
        jnp.asarray(guidance_scale, dtype),
        jnp.asarray(eps, dtype),
        score_fn=by_identity(score_fn),
        loglikelihood_fn=by_identity(loglikelihood_fn),
        normalize=normalize,
    )
    return _warn_if_not_finite(draws, "dps")


# ---------------------------------------------------------------------------
# Langevin (fixed t) and annealed Langevin (Song & Ermon)
# ---------------------------------------------------------------------------


def langevin(
    rng_key: PRNGKey,
    score_fn: ScoreFn,
    loglikelihood_fn: LogLikelihoodFn,
    position: ArrayLike,
    *,
    num_samples: int,
    num_steps: int,
    step_size: float,
    time: float = 0.01,
    preconditioner=None,
) -> Array:
    r"""Unadjusted Langevin on :math:`\mu_t \propto p_t(x)\,p(y \mid x)` at a fixed
    small OU time ``t``, started from ``N(0, I)`` (no annealing, no warm start).

    .. math::

        x \leftarrow x + h\,M\bigl(s(x, t) + \nabla \log p(y \mid x)\bigr)
            + \sqrt{2h}\,M^{1/2}\xi .

    It is ALMC with its path removed (``run_almc`` on a ``langevin_schedule``): the
    ablation that shows what the annealing buys. On multimodal priors it stays in
    the modes nearest the start, so mode weights come out wrong however long it runs
    at a stable step size. Costs ``num_steps + 1`` score evaluations per draw (the
    first caches the start's score).

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    score_fn
        As in :func:`dps` (no differentiation through the score).
    loglikelihood_fn
        As in :func:`dps`.
    position
        An array with the shape and (floating) dtype of one draw.
    num_samples
        Number of independent draws (vmapped).
    num_steps
        Langevin steps.
    step_size
        ``h > 0``, the main knob. Stability needs ``h`` below about
        ``σ_t² = 1 − e^{−2t}`` times the prior's scale (the curvature of ``p_t`` is at
        most ``1/σ_t²``) and below ``1 / L`` for the likelihood's smoothness ``L``
        (or use ``preconditioner``); the bias grows with ``h``. May be a traced JAX
        scalar (no recompilation; not checked).
    time
        The OU time ``t > 0`` of the target :math:`\mu_t` (bias toward the noised
        prior grows with ``t``; stiffness with ``1/t``).
    preconditioner
        Optional constant preconditioner ``M`` (e.g.
        :func:`numpyro_almc.linear_gaussian_preconditioner`).

    Returns
    -------
    Array
        Shape ``(num_samples, *position.shape)``, dtype of ``position``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = langevin(jax.random.key(0), lambda x, t: -x, lambda x: 0.0 * x.sum(),
    ...              jnp.zeros(2), num_samples=3, num_steps=5, step_size=0.1)
    >>> x.shape
    (3, 2)

    References
    ----------
    Roberts, Tweedie. Exponential convergence of Langevin distributions and their
    discrete approximations. Bernoulli 2(4), 1996.
    """
    _callables(score_fn, loglikelihood_fn)
    position = _position(position)
    num_samples = _count("num_samples", num_samples)
    num_steps = _count("num_steps", num_steps)
    step_size = _knob("step_size", step_size)
    time = check_positive("time", time)
    schedule = langevin_schedule(time, 1.0, num_steps, dtype=position.dtype)
    return _run_unit_schedule(
        rng_key,
        score_fn,
        loglikelihood_fn,
        position,
        schedule,
        step_size,
        num_samples,
        preconditioner,
    )


def annealed_langevin_schedule(
    num_levels: int,
    steps_per_level: int,
    step_size: float,
    initial_time: float,
    final_time: float,
    *,
    dtype=jnp.float32,
) -> ALMCSchedule:
    """The :func:`annealed_langevin` path as an :class:`ALMCSchedule` (no warm start).

    Levels ``t_1 > ... > t_L`` are geometric in the VE noise level
    ``σ = sqrt(e^{2t} − 1)`` (uniform in log-SNR); level ``i`` runs
    ``steps_per_level`` steps of the OU step size of Song & Ermon's
    ``α_i = ε σ_i² / σ_L²`` (see :func:`annealed_langevin`).

    Examples
    --------
    >>> s = annealed_langevin_schedule(3, 4, 0.01, 5.0, 0.01)
    >>> s.num_steps, s.num_score_evals
    (12, 13)
    >>> [round(float(t), 3) for t in s.times[::4]]   # one time per level
    [5.0, 1.548, 0.01, 0.01]
    """
    num_levels = _count("num_levels", num_levels)
    steps_per_level = _count("steps_per_level", steps_per_level)
    step_size = check_positive("step_size", step_size)
    initial_time, final_time = _time_range(initial_time, final_time)
    levels = _anneal_times("snr", initial_time, final_time, max(num_levels - 1, 1))
    levels = levels[:num_levels] if num_levels > 1 else levels[-1:]
    ve_var = np.expm1(2 * levels)  # σ_i² in VE units
    # A VE step α on z = e^{t} x is an OU step α e^{-2t} on x (same Langevin chain).
    steps = step_size * ve_var / ve_var[-1] * np.exp(-2 * levels)
    times = np.concatenate([np.repeat(levels, steps_per_level), levels[-1:]])
    dtype = check_float_dtype("dtype", dtype)
    return ALMCSchedule(
        times=jnp.asarray(times, dtype=dtype),
        step_sizes=jnp.asarray(np.repeat(steps, steps_per_level), dtype=dtype),
        phases=jnp.full(num_levels * steps_per_level, ANNEAL, dtype=jnp.int32),
    )


def annealed_langevin(
    rng_key: PRNGKey,
    score_fn: ScoreFn,
    loglikelihood_fn: LogLikelihoodFn,
    position: ArrayLike,
    *,
    num_samples: int,
    num_levels: int,
    steps_per_level: int,
    step_size: float,
    initial_time: float = 5.0,
    final_time: float = 0.01,
    preconditioner=None,
) -> Array:
    r"""Annealed Langevin dynamics (Song & Ermon 2019) on the posterior path.

    ``L = num_levels`` noise levels, geometric in the VE noise scale
    :math:`\sigma_i = \sqrt{e^{2t_i} - 1}` from ``initial_time`` down to
    ``final_time`` (OU times :math:`t_1 > \dots > t_L`). At level ``i``,
    ``K = steps_per_level`` Langevin steps target
    :math:`\mu_{t_i} \propto p_{t_i}(x)\, p(y \mid x)` (the likelihood term is added
    to the drift as in ALMC):

    .. math::

        x \leftarrow x + h_i\, M\bigl(s(x, t_i) + \nabla\log p(y \mid x)\bigr)
            + \sqrt{2 h_i}\, M^{1/2}\xi, \qquad
        h_i = \varepsilon\, \frac{\sigma_i^2}{\sigma_L^2}\, e^{-2 t_i}.

    :math:`\varepsilon\,\sigma_i^2/\sigma_L^2` is Song & Ermon's step
    :math:`\alpha_i` in their VE coordinates :math:`z = e^{t}x`; the factor
    :math:`e^{-2t_i}` converts it to the OU coordinates of ``score_fn`` (the prior
    part of the chain is then exactly theirs). Started from ``N(0, I)`` with no warm
    start; no final denoising step. Costs ``L·K + 1`` score evaluations per draw.
    Implemented as :func:`numpyro_almc.run_almc` on a custom
    :class:`~numpyro_almc.path.ALMCSchedule` (:func:`annealed_langevin_schedule`).

    Differences from ALMC: the noise levels are visited at a constant number of steps
    each on a geometric grid, the step is tied to the noise level by ``ε`` (so the
    last level moves with ``ε e^{-2 t_L}``), and there is no warm start on
    :math:`N(0, I)\,e^{-R}`.

    Parameters
    ----------
    rng_key
        A JAX PRNG key.
    score_fn
        As in :func:`dps` (no differentiation through the score).
    loglikelihood_fn
        As in :func:`dps`.
    position
        An array with the shape and (floating) dtype of one draw.
    num_samples
        Number of independent draws (vmapped).
    num_levels
        ``L``, number of noise levels (Song & Ermon: 10).
    steps_per_level
        ``K``, Langevin steps per level (Song & Ermon: 100).
    step_size
        ``ε > 0``, the step at the last level (Song & Ermon: 2e-5 for images in
        [0, 1]); the main knob. Stability needs roughly ``ε < σ_L²`` (OU variance
        ``1 − e^{−2 t_L}``) times the prior's local scale and ``ε < 1/L_R`` for the
        likelihood's smoothness (or a ``preconditioner``). May be a traced JAX
        scalar (no recompilation; not checked).
    initial_time
        OU time of the first level, ``initial_time > final_time``. Song & Ermon
        take the largest σ about the largest distance between data points: for
        priors of scale ~30, ``initial_time ≈ 5``.
    final_time
        OU time of the last level, ``final_time > 0``.
    preconditioner
        Optional constant preconditioner ``M`` (not in the original method).

    Returns
    -------
    Array
        Shape ``(num_samples, *position.shape)``, dtype of ``position``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> x = annealed_langevin(jax.random.key(0), lambda x, t: -x,
    ...                       lambda x: 0.0 * x.sum(), jnp.zeros(2), num_samples=3,
    ...                       num_levels=4, steps_per_level=5, step_size=0.01)
    >>> x.shape
    (3, 2)

    References
    ----------
    Song, Ermon. Generative Modeling by Estimating Gradients of the Data
    Distribution. NeurIPS 2019, arXiv:1907.05600.
    """
    _callables(score_fn, loglikelihood_fn)
    position = _position(position)
    num_samples = _count("num_samples", num_samples)
    num_levels = _count("num_levels", num_levels)
    steps_per_level = _count("steps_per_level", steps_per_level)
    step_size = _knob("step_size", step_size)
    initial_time, final_time = _time_range(initial_time, final_time)
    schedule = annealed_langevin_schedule(
        num_levels, steps_per_level, 1.0, initial_time, final_time, dtype=position.dtype
    )
    # Steps are linear in ε: the unit schedule is scaled by (a possibly traced) ε.
    return _run_unit_schedule(
        rng_key,
        score_fn,
        loglikelihood_fn,
        position,
        schedule,
        step_size,
        num_samples,
        preconditioner,
    )
