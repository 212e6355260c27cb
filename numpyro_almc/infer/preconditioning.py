"""Which preconditioner the NumPyro kernels use, and the log line saying why.

The policy behind ``preconditioner="auto"`` (and a user's choice) of
:class:`~numpyro_almc.infer.ALMC` and :class:`~numpyro_almc.infer.ALMCSMC`, as
functions of the choice, the model's parts (from ``model_fns.init_model``) and the
current values of the ScorePrior sites ``xs`` and the other sites ``theta``:

* with a recognised Gaussian observation affine in the ScorePrior sites, the
  observation's own ``(I + AᵀA/σ²)^{-1}`` (paper path) or the time-dependent
  ``(I + ∇²(−log L_t))^{-1}`` (noised path) at the current noise scale, from the
  operator's factorisation or one SVD of a dense ``A``;
* otherwise the inverse of ``I +`` the dense Hessian of ``R`` at ``x = 0``, re-formed
  when other sites move, up to :data:`AUTO_DENSE_MAX_DIM` ScorePrior numbers; above
  it the Hessian's diagonal at the start, fixed for the run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from numpyro_almc.infer.model_fns import noised_preconditioner, operator_preconditioner
from numpyro_almc.path.preconditioners import (
    hessian_diagonal_preconditioner,
    hessian_preconditioner,
)

__all__ = [
    "AUTO_DENSE_MAX_DIM",
    "auto_description",
    "conditional_preconditioner",
    "diagonal_auto",
    "tracks_other_sites",
]

#: Above this many ScorePrior numbers, ``preconditioner="auto"`` uses the Hessian's
#: diagonal at the start (``d`` Hessian-vector products once) instead of a dense
#: ``d × d`` Hessian, re-formed and factored at every step when other sites move.
AUTO_DENSE_MAX_DIM = 2048


def conditional_preconditioner(choice, parts, x_loglik, xs, theta):
    """The preconditioner of the ScorePrior sites given the other sites ``theta``.

    ``choice`` is the kernel's ``preconditioner`` argument: ``"auto"``, ``None``, a
    preconditioner, or a function of ``theta`` returning one; ``x_loglik`` the
    log-likelihood of ``xs`` at these ``theta``.
    """
    observation = None if parts is None else parts.observation
    if isinstance(choice, str) and observation is not None:
        noise_std = x_loglik.noise_std({**xs, **theta})
        if parts.noised:
            # "auto" on the noised path: (I + ∇²(−log L_t))^{-1} at the current
            # σ, time dependent (evaluated at each step's time).
            return noised_preconditioner(observation, noise_std)
        # "auto" on the paper path with the model's operator: (I + AᵀA/σ²)^{-1}
        # at the current σ, from the operator's factorisation (no d × d matrix).
        return operator_preconditioner(observation, noise_std)
    if isinstance(choice, str):  # "auto": curvature at x = 0 (the prior mean)
        zeros = jax.tree.map(jnp.zeros_like, xs)
        if diagonal_auto(choice, parts, xs):
            return hessian_diagonal_preconditioner(x_loglik, zeros)
        return hessian_preconditioner(x_loglik, zeros)
    if callable(choice) and not hasattr(choice, "apply"):
        return choice(theta)
    return choice


def diagonal_auto(choice, parts, xs) -> bool:
    """Whether ``"auto"`` takes the Hessian's diagonal, fixed at the start: above
    :data:`AUTO_DENSE_MAX_DIM` ScorePrior numbers, unless the preconditioner comes
    from the observation (the noised path, or the model's operator)."""
    size = sum(math.prod(jnp.shape(v)) for v in jax.tree.leaves(xs))
    observation = None if parts is None else parts.observation
    return isinstance(choice, str) and observation is None and size > AUTO_DENSE_MAX_DIM


def tracks_other_sites(choice, parts, xs, theta) -> bool:
    """Whether the preconditioner is recomputed at every step from the other sites'
    current values (it may depend on them, e.g. ``(I + AᵀA/σ²)^{-1}``). Given those
    values it is constant, so the signal's update still targets its exact
    conditional."""
    return bool(theta) and choice is not None and not diagonal_auto(choice, parts, xs)


def auto_description(parts, xs) -> str:
    """The log line saying which preconditioner ``"auto"`` chose, and why."""
    observation = parts.observation
    if observation is not None:
        A = observation.A
        source = (
            f"the model's operator {type(A).__name__} (its own factorisation, "
            "no dense matrix)"
            if observation.is_operator
            else f"the dense {A.shape[0]}x{A.shape[1]} forward matrix (SVD once)"
        )
        form = (
            "the noised path's (I + A^T C_t^-1 A)^-1"
            if parts.noised
            else "(I + A^T A / sigma^2)^-1"
        )
        return (
            f"ALMC: preconditioner='auto' is {form} of '{observation.site}' from "
            f"{source}, re-evaluated at the current noise scale."
        )
    note = parts.operator_note
    why = "" if note is None else f" No operator preconditioner: {note}"
    if diagonal_auto("auto", parts, xs):
        return (
            f"ALMC: preconditioner='auto' with more than {AUTO_DENSE_MAX_DIM} "
            "ScorePrior numbers uses the diagonal of the Hessian of R at the "
            "start, fixed for the run (a dense Hessian per step would cost "
            "O(d^3)); write the location as op(x) with an operator of "
            "numpyro_almc.operators, or pass a preconditioner, for more." + why
        )
    return (
        "ALMC: preconditioner='auto' is the inverse of I + the dense Hessian of R "
        "at x = 0, re-formed when other sites move." + why
    )
