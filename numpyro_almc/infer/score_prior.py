"""``ScorePrior``: a prior on real arrays known only through its score, and the
handler that makes its sites flat in the model's log joint."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.primitives import Messenger

from numpyro_almc.types import Array

__all__ = ["ScorePrior", "score_prior_as_flat"]


class ScorePrior(dist.Distribution):
    r"""A prior on real arrays known only through the score of its OU-noised laws.

    ``score_fn(x, t) = ∇_x log p_t(x)`` for one unbatched ``x`` of shape
    ``event_shape`` and a scalar OU time ``t``, where
    ``X_t = e^{-t} X_0 + sqrt(1-e^{-2t}) Z``.
    Sample a model holding one with :class:`ALMC`; NUTS and friends fail loudly on it
    because :meth:`log_prob` raises unless ``log_density_fn`` is given.

    Parameters
    ----------
    score_fn
        The score function (an exact score, or a network through an adapter).
    event_shape
        Shape of one draw, e.g. ``(64,)``.
    log_density_fn
        Optional ``x -> log p_0(x)`` (up to a constant) for samplers that need one.
    batch_shape
        Batch shape (``numpyro.plate`` expands it for you).
    num_sample_steps
        Steps of the reverse diffusion used by :meth:`sample` (prior predictive).

    Examples
    --------
    >>> import numpyro
    >>> prior = ScorePrior(lambda x, t: -x, event_shape=(3,))
    >>> prior.event_shape, prior.batch_shape
    ((3,), ())
    """

    arg_constraints = {}
    pytree_aux_fields = (
        "score_fn",
        "log_density_fn",
        "num_sample_steps",
    )

    def __init__(
        self,
        score_fn: Callable[[Array, Array], Array],
        event_shape,
        *,
        log_density_fn: Callable[[Array], Array] | None = None,
        batch_shape=(),
        num_sample_steps: int = 200,
        validate_args=None,
    ):
        if not callable(score_fn):
            raise TypeError(
                "`score_fn` must be a callable score_fn(x, t) -> grad log p_t(x), "
                f"got {type(score_fn).__name__}."
            )
        if isinstance(event_shape, numbers.Integral):
            event_shape = (int(event_shape),)
        event_shape = tuple(event_shape)
        if len(event_shape) == 0 or not all(
            isinstance(s, numbers.Integral) and s > 0 for s in event_shape
        ):
            raise ValueError(
                "`event_shape` must be a non-empty tuple of positive integers, e.g. "
                f"(64,), got {event_shape!r}."
            )
        if log_density_fn is not None and not callable(log_density_fn):
            raise TypeError("`log_density_fn` must be a callable or None.")
        if isinstance(num_sample_steps, bool) or not isinstance(
            num_sample_steps, numbers.Integral
        ):
            raise TypeError("`num_sample_steps` must be an integer.")
        if num_sample_steps < 1:
            raise ValueError("`num_sample_steps` must be >= 1.")
        self.score_fn = score_fn
        self.log_density_fn = log_density_fn
        self.num_sample_steps = int(num_sample_steps)
        super().__init__(
            batch_shape=tuple(batch_shape),
            event_shape=event_shape,
            validate_args=validate_args,
        )

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def sample(self, key, sample_shape=()):
        """Prior draws by reverse diffusion with the score (prior predictive checks).

        This costs ``num_sample_steps`` score evaluations per draw; ALMC never calls
        it (chains start from ``N(0, I)``), nor does ``az.from_numpyro``.
        """
        from numpyro_almc.scores.prior_sampling import sample_prior

        shape = tuple(sample_shape) + self.batch_shape
        n = math.prod(shape)
        draws = sample_prior(
            key,
            self.score_fn,
            self.event_shape,
            max(n, 1),
            num_steps=self.num_sample_steps,
        )
        return draws[:n].reshape(shape + self.event_shape)

    def log_prob(self, value):
        if self.log_density_fn is None:
            raise NotImplementedError(
                "ScorePrior has no log density: it is known only through its score. "
                "Sample models holding it with numpyro_almc.ALMC, or pass "
                "log_density_fn= if you know log p_0 (samplers such as NUTS need it)."
            )
        flat = jnp.reshape(value, (-1,) + self.event_shape)
        out = jax.vmap(self.log_density_fn)(flat)
        return out.reshape(jnp.shape(value)[: jnp.ndim(value) - len(self.event_shape)])

    def batched_score(self, value, t):
        """The score applied over every leading (sample and batch) dimension."""
        flat = jnp.reshape(value, (-1,) + self.event_shape)
        out = jax.vmap(self.score_fn, in_axes=(0, None))(flat, t)
        if out.shape != flat.shape:
            raise ValueError(
                f"score_fn returned shape {out.shape[1:]} for an input of shape "
                f"{self.event_shape}; it must return an array of the input's shape."
            )
        return out.reshape(jnp.shape(value))


def _find_score_prior(fn) -> ScorePrior | None:
    """The ScorePrior at the root of ``fn`` (through expand / to_event), if any."""
    base = fn
    while True:
        if isinstance(base, ScorePrior):
            return base
        if isinstance(base, dist.ExpandedDistribution | dist.Independent):
            base = base.base_dist
            continue
        break
    # Anything else wrapping a ScorePrior (a transform, a mask, ...) is unsupported.
    inner = getattr(base, "base_dist", None)
    while inner is not None:
        if isinstance(inner, ScorePrior):
            raise ValueError(
                f"A ScorePrior is wrapped in {type(base).__name__}: ALMC needs it on "
                "an unconstrained real site. Apply transforms to the value in the "
                "model "
                "instead (e.g. numpyro.deterministic('y', f(x)))."
            )
        inner = getattr(inner, "base_dist", None)
    return None


class score_prior_as_flat(Messenger):
    """Handler: each ScorePrior site contributes 0 to the log joint.

    The site's distribution is replaced by an ``ImproperUniform`` of the same shapes
    (its ScorePrior kept in ``msg["infer"]["score_prior"]``), so NumPyro's
    ``potential_fn`` of the wrapped model is the measurement potential ``R``: minus the
    log likelihood and minus the log density of every other latent site.
    """

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        base = _find_score_prior(msg["fn"])
        if base is None:
            return
        name = msg["name"]
        if msg.get("is_observed"):
            raise ValueError(
                f"ScorePrior site '{name}' is observed; a ScorePrior has no density to "
                "condition on. Observe a likelihood of it instead."
            )
        if (msg.get("infer") or {}).get("enumerate"):
            raise ValueError(
                f"ScorePrior site '{name}' is marked for enumeration; ScorePrior is a "
                "continuous prior on real arrays."
            )
        fn = msg["fn"]
        msg["infer"] = {**(msg.get("infer") or {}), "score_prior": base}
        msg["fn"] = dist.ImproperUniform(
            constraints.real, fn.batch_shape, fn.event_shape
        )
