r"""The final stage: carry draws of ``μ_τ`` down to ``t = 0``.

ALMC stops at the early-stopping time ``τ > 0``: its draws still carry the OU noise
of time ``τ`` (standard deviation ``σ_τ = (1 − e^{−2τ})^{1/2}``, about 0.2 at the
default ``τ = 0.02``). On the noised-likelihood path the target at time ``t`` is
``p_t(x) L_t(x)``, the law of ``X_t`` given ``y`` when ``X_0 | X_t`` is taken as
``N(e^{t} x, (e^{2t} − 1) I)``; its score
``S_t = s(x, t) + ∇ log L_t(x)`` therefore drives the reverse diffusion from ``τ`` to
``0``. Each step from ``t`` to ``t' < t`` (``h = t − t'``) draws from the OU bridge
with ``X_0`` replaced by its Tweedie estimate ``(x + σ_t² S_t(x)) e^{t}``:

.. math::

    x' = e^{h} x + 2 \sinh(h)\, S_t(x)
         + \Big(\frac{(1 − e^{−2h})\, σ_{t'}^2}{σ_t^2}\Big)^{1/2} ξ,

which is the ancestral (DDPM) step written in OU time; at ``t' = 0`` the noise
vanishes and ``x'`` is the Tweedie estimate itself. The step is stable for any
likelihood stiffness on the noised path: ``σ_t² ∇² log L_t`` has eigenvalues in
``(−1, 0]``.

A stage of ``K`` steps costs ``K − 1`` score evaluations and ``K − 1`` likelihood
gradients: the first step uses the score and gradient cached in the state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from numpyro_almc._validate import check_count, check_positive
from numpyro_almc.mcmc._checks import at_time
from numpyro_almc.path.ou import ou_noise_variance
from numpyro_almc.types import Array, ArrayTree, PRNGKey

__all__ = ["FinalStage", "as_final_stage", "check_final_stage", "finish"]


class _FinalStageFields(NamedTuple):
    num_steps: int = 32
    min_time: float = 1e-4


class FinalStage(_FinalStageFields):
    """How to carry draws from ``τ`` to ``t = 0`` (a hashable, static value).

    Attributes
    ----------
    num_steps
        Reverse-diffusion steps ``K`` (``K − 1`` network passes per draw).
    min_time
        The last nonzero time; the ``K − 1`` intermediate times are geometric from
        ``τ`` down to it, and the last step goes to ``t = 0``.

    Examples
    --------
    >>> from numpyro_almc.mcmc import FinalStage
    >>> stage = FinalStage.build(num_steps=4, min_time=1e-3)
    >>> [round(float(t), 4) for t in stage.times(0.02)]
    [0.02, 0.0074, 0.0027, 0.001, 0.0]
    """

    __slots__ = ()

    def __new__(cls, num_steps: int = 32, min_time: float = 1e-4):
        # Validated on construction (FinalStage(0) raises, not only .build(0)).
        num_steps = check_count("final_stage num_steps", num_steps, 1)
        min_time = check_positive("final_stage min_time", min_time)
        return super().__new__(cls, num_steps, min_time)

    @classmethod
    def build(cls, num_steps: int = 32, min_time: float = 1e-4) -> FinalStage:
        """Validated :class:`FinalStage` (raises before any tracing)."""
        return cls(num_steps, min_time)

    def times(self, start_time, dtype=None) -> Array:
        """``K + 1`` times from ``start_time`` (``τ``) down to 0."""
        start = jnp.asarray(start_time, dtype)
        k = self.num_steps
        if k == 1:
            return jnp.stack([start, jnp.zeros_like(start)])
        low = jnp.minimum(jnp.asarray(self.min_time, start.dtype), start)
        u = jnp.arange(k, dtype=start.dtype) / (k - 1)
        return jnp.concatenate(
            [start * (low / start) ** u, jnp.zeros((1,), start.dtype)]
        )


def as_final_stage(final_stage) -> FinalStage | None:
    """``final_stage`` (None, False, True or a :class:`FinalStage`) as a validated
    :class:`FinalStage`, or None."""
    if final_stage is None or final_stage is False:
        return None
    if final_stage is True:
        return FinalStage()
    if not isinstance(final_stage, FinalStage):
        raise TypeError(
            "`final_stage` must be None, True or a FinalStage "
            f"(FinalStage.build(num_steps=..., min_time=...)), got {final_stage!r}."
        )
    return FinalStage.build(*final_stage)


def check_final_stage(final_stage, loglikelihood_fn) -> FinalStage | None:
    """:func:`as_final_stage`, raising when the likelihood is not a noised-path
    one."""
    final_stage = as_final_stage(final_stage)
    if final_stage is None:
        return None
    if not getattr(loglikelihood_fn, "time_dependent", False):
        raise ValueError(
            "The final stage continues the noised-likelihood path down to t = 0 and "
            "needs its likelihood L_t: pass noised_gaussian_likelihood(...) as the "
            "log-likelihood (NumPyro: likelihood_path='noised'). With the paper's "
            "path the likelihood of x_t is not that of x_0, and no reverse step from "
            "its draws at τ is exact."
        )
    return final_stage


def finish(
    rng_key: PRNGKey,
    state,
    loglikelihood_fn,
    score_fn,
    stage: FinalStage | None = None,
) -> tuple[ArrayTree, Array]:
    """Carry one chain's draw at ``state.time`` (``τ``) to ``t = 0``.

    Parameters
    ----------
    rng_key
        Key of this draw's stage (step ``k`` uses ``fold_in(rng_key, k)``).
    state
        An :class:`~numpyro_almc.mcmc.ALMCState` at a finite time, whose ``score``
        and ``loglikelihood_grad`` are cached at ``state.time``.
    loglikelihood_fn
        The noised likelihood ``L_t`` (``time_dependent``), e.g.
        :func:`~numpyro_almc.noised_gaussian_likelihood`.
    score_fn
        ``score_fn(x, t)``, the prior score.
    stage
        :class:`FinalStage` (default ``FinalStage()``).

    Returns
    -------
    position, is_diverging
        The draw at ``t = 0``, and whether a step was not finite (the draw at
        ``τ`` is then returned unchanged).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro_almc import noised_gaussian_likelihood
    >>> from numpyro_almc.mcmc import FinalStage, finish, init
    >>> lik = noised_gaussian_likelihood(jnp.eye(2), jnp.array([1.0, -1.0]), 0.1)
    >>> state = init(jnp.zeros(2), lik, lambda x, t: -x, 0.02)
    >>> x0, bad = finish(jax.random.key(0), state, lik, lambda x, t: -x,
    ...                  FinalStage(num_steps=4))
    >>> x0.shape, bool(bad)
    ((2,), False)
    """
    stage = FinalStage() if stage is None else stage
    x, unravel = ravel_pytree(state.position)
    dtype = x.dtype
    times = stage.times(state.time, dtype)
    loglik = loglikelihood_fn
    exact = hasattr(loglik, "gaussian_update")

    def flat(tree):
        return ravel_pytree(tree)[0].astype(dtype)

    def drift(x, t, with_likelihood):
        position = unravel(x)
        total = flat(score_fn(position, t))
        if with_likelihood:
            total = total + flat(jax.grad(at_time(loglik, t))(position))
        return total

    def step(x, total, t, t_next, key):
        h = t - t_next
        mean = jnp.exp(h) * x + 2 * jnp.sinh(h) * total
        var = ou_noise_variance(h) * ou_noise_variance(t_next) / ou_noise_variance(t)
        if exact:
            # The prior's reverse step, then the likelihood at t_next exactly.
            return flat(loglik.gaussian_update(key, mean, var, t_next))
        return mean + jnp.sqrt(var) * jax.random.normal(key, x.shape, dtype)

    def body(carry, k):
        x, total = carry
        x = step(x, total, times[k], times[k + 1], jax.random.fold_in(rng_key, k))
        return (x, drift(x, times[k + 1], not exact)), None

    first = flat(state.score)
    if not exact:
        first = first + flat(state.loglikelihood_grad)
    k = stage.num_steps
    (x_last, total), _ = jax.lax.scan(body, (x, first), jnp.arange(k - 1))
    # The last step, to t = 0, is the Tweedie estimate of x_0 given x_t and y: no
    # noise; its drift has the likelihood's gradient in both cases.
    if exact:
        position = unravel(x_last)
        last_time = times[k - 1]
        total = total + flat(jax.grad(at_time(loglik, last_time))(position))
    h = times[k - 1]
    x_zero = jnp.exp(h) * x_last + 2 * jnp.sinh(h) * total
    bad = jnp.logical_not(jnp.all(jnp.isfinite(x_zero)))
    return unravel(jnp.where(bad, x, x_zero)), bad
