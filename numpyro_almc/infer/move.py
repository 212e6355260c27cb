"""One chain's move in the NumPyro kernels, and the state it carries.

:class:`ChainMove` is the update of :class:`~numpyro_almc.infer.ALMC` (and of each
particle of :class:`~numpyro_almc.infer.ALMCSMC`) at step ``i``: the ALMC move of the
ScorePrior sites (:func:`numpyro_almc.mcmc.build_kernel`, fed by
:func:`~numpyro_almc.path.schedules.step_params`), one MALA step of the other sites
given the new signal (:func:`~numpyro_almc.infer.mala.theta_mala_step`), and in the
sampling phase the draw carried to ``t = 0`` by the final stage. The kernels build it
at ``init`` from their settings and the model's parts; it holds no array.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from numpyro_almc.infer.mala import theta_mala_step
from numpyro_almc.infer.model_fns import (
    ModelParts,
    conditional_loglik,
    conditional_score,
)
from numpyro_almc.infer.preconditioning import (
    conditional_preconditioner,
    tracks_other_sites,
)
from numpyro_almc.mcmc._checks import at_time
from numpyro_almc.mcmc.almc import ALMCState, build_kernel
from numpyro_almc.mcmc.finish import FinalStage, finish
from numpyro_almc.path.schedules import ALMCSchedule, step_params
from numpyro_almc.types import Array, ArrayTree

__all__ = ["ALMCSamplerState", "ChainMove", "split_sites"]


class ALMCSamplerState(NamedTuple):
    """State of the :class:`ALMC` NumPyro kernel (one chain, or batched chains).

    ``i`` is the step counter (the schedule index; it never resets, so the phase is
    known across ``run`` calls); ``z`` the unconstrained values of every latent site;
    ``score`` the prior score of the ScorePrior sites at OU time ``time``;
    ``measurement_loglik`` is ``-R(z)``: the log likelihood plus the log density
    (with Jacobian) of every latent site that is not a ScorePrior.
    ``theta_step_size`` and ``theta_accept_prob`` belong to the MALA update of those
    other sites. ``draw`` is ``z`` carried to ``t = 0`` by the final stage in the
    sampling phase (None without a final stage; then the draws are ``z``).
    ``warm_start_step_size`` caps the warm-start steps (set at the start from the
    likelihood's stiffness; see :func:`numpyro_almc.mcmc.init`).

    Examples
    --------
    >>> import jax, numpyro
    >>> from numpyro_almc import ALMC, ScorePrior
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", ScorePrior(lambda x, t: -x, event_shape=(2,)))
    >>> mcmc = MCMC(ALMC(model), num_warmup=20, num_samples=5, progress_bar=False)
    >>> mcmc.run(jax.random.key(0))
    >>> state = mcmc.last_state
    >>> tau = float(mcmc.sampler.schedule.early_stop_time)
    >>> int(state.i), sorted(state.z), float(state.time) == tau
    (25, ['x'], True)
    """

    i: Array
    z: ArrayTree
    score: ArrayTree
    measurement_loglik: Array
    measurement_loglik_grad: ArrayTree
    time: Array
    step_size: Array
    warm_start_step_size: Array
    diverging: Array
    num_diverging: Array
    theta_step_size: Array
    theta_accept_prob: Array
    preconditioner: object
    draw: ArrayTree
    rng_key: Array


def split_sites(score_sites, z):
    """``(score-site values, other values)`` of ``z``; with ``score_sites=None``
    (a kernel built from ``potential_fn``, no model) all of ``z`` is score."""
    if score_sites is None:
        return z, {}
    xs = {k: v for k, v in z.items() if k in score_sites}
    theta = {k: v for k, v in z.items() if k not in score_sites}
    return xs, theta


@dataclasses.dataclass(frozen=True)
class ChainMove:
    """The move of one chain at step ``i`` (see the module docstring).

    ``preconditioner`` is the kernel's argument (``"auto"``, None, an object, or a
    function of the other sites), resolved at each step by
    :func:`~numpyro_almc.infer.preconditioning.conditional_preconditioner` when it
    tracks the other sites; ``parts`` the model's parts (None without a model);
    ``keep_draw`` fills the state's ``draw`` with the position when there is no
    stage to run (``final_stage="auto"`` off the noised path: the kernel's sample
    field is still ``draw``).
    """

    score_sites: tuple[str, ...] | None
    preconditioner: object
    parts: ModelParts | None
    schedule: ALMCSchedule
    num_warmup: int
    divergence_threshold: float | None
    final_stage: FinalStage | None
    keep_draw: bool = False

    def split(self, z):
        return split_sites(self.score_sites, z)

    def __call__(self, key_x, key_theta, st, i, loglik_fn, score_fn, key_finish=None):
        """The move of one chain at step ``i`` (``rng_key`` carried unchanged), and
        in the sampling phase its draw carried to ``t = 0`` (with a final stage)."""
        xs, theta = self.split(st.z)
        x_grad, _ = self.split(st.measurement_loglik_grad)
        x_loglik = conditional_loglik(loglik_fn, theta)
        core = ALMCState(
            xs,
            st.score,
            st.measurement_loglik,
            x_grad,
            st.time,
            st.i,
            st.warm_start_step_size,
        )
        precond = st.preconditioner
        if tracks_other_sites(self.preconditioner, self.parts, xs, theta):
            precond = conditional_preconditioner(
                self.preconditioner, self.parts, x_loglik, xs, theta
            )
        new, info = build_kernel(divergence_threshold=self.divergence_threshold)(
            key_x,
            core,
            x_loglik,
            conditional_score(score_fn, theta),
            step_params(self.schedule, i, precond),
        )
        diverging = info.is_diverging
        if theta:
            z, ll, grad, theta_h, accept, theta_bad = theta_mala_step(
                key_theta,
                at_time(loglik_fn, new.time),
                new.position,
                theta,
                st.theta_step_size,
                i < self.num_warmup,
            )
            diverging = diverging | theta_bad
        else:
            z, ll = new.position, new.loglikelihood
            grad, theta_h, accept = (
                new.loglikelihood_grad,
                st.theta_step_size,
                st.theta_accept_prob,
            )
        draw = z if self.keep_draw else None
        if self.final_stage is not None:
            draw, stage_bad = self._finish_draw(
                key_finish, new, z, grad, i, loglik_fn, score_fn
            )
            diverging = diverging | stage_bad
        return ALMCSamplerState(
            i=new.step,
            z=z,
            score=new.score,
            measurement_loglik=ll,
            measurement_loglik_grad=grad,
            time=new.time,
            step_size=info.step_size.astype(st.step_size.dtype),
            warm_start_step_size=st.warm_start_step_size,
            diverging=diverging,
            num_diverging=st.num_diverging + diverging.astype(jnp.int32),
            theta_step_size=theta_h,
            theta_accept_prob=accept,
            preconditioner=precond,
            draw=draw,
            rng_key=st.rng_key,
        )

    def _finish_draw(self, key, new, z, grad, i, loglik_fn, score_fn):
        """``z`` with its ScorePrior sites carried from ``τ`` to ``t = 0`` in the
        sampling phase (``z`` itself during warmup: a real branch, ``i`` is shared
        by the chains, so warmup steps cost no network pass for it), and whether
        the stage was not finite (the draw is then ``z``, and the step is flagged
        ``diverging``)."""

        def finished(z):
            xs, theta = self.split(z)
            x_grad, _ = ravel_pytree(self.split(grad)[0])
            x_flat, unravel = ravel_pytree(xs)
            # The observation's noised likelihood of the flattened sites: its
            # exact Gaussian step (the model's other terms do not involve xs).
            core = new._replace(
                position=x_flat,
                score=ravel_pytree(new.score)[0],
                loglikelihood_grad=x_grad,
            )
            x_score = conditional_score(score_fn, theta)
            x0, bad = finish(
                key,
                core,
                loglik_fn.gaussian_likelihood(z),
                lambda x, t: ravel_pytree(x_score(unravel(x), t))[0],
                self.final_stage,
            )
            return {**z, **unravel(x0)}, bad

        def at_tau(z):
            return z, jnp.zeros((), bool)

        return jax.lax.cond(i >= self.num_warmup, finished, at_tau, z)
