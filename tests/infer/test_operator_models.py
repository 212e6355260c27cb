"""The NumPyro façade on models that write their forward model as an operator,
``numpyro.sample("y", dist.Normal(op(x), sigma), obs=y)``: recognised from the
model (no dense matrix), equal to the same model written with the dense matrix,
exact Gaussian posteriors at τ, an unknown σ, and the checks that raise."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.linalg
from gaussian_exact import Z, ula_stationary_cov
from numpyro.handlers import block, scope, seed
from numpyro.infer import MCMC, Predictive

import numpyro_almc as na
from numpyro_almc import operators as ops
from numpyro_almc.infer import model_fns
from numpyro_almc.infer import preconditioning as almc_module

SIZE = 8
SHAPE = (SIZE, SIZE)
D = SIZE * SIZE


def _operators():
    rng = np.random.default_rng(3)
    psf = np.array([[0.0, 0.1, 0.0], [0.15, 0.5, 0.1], [0.0, 0.1, 0.05]])
    keep = np.zeros(SHAPE, bool)
    keep.ravel()[rng.choice(D, 24, replace=False)] = True
    return {
        "mask": ops.Mask(rng.uniform(size=SHAPE) < 0.6),
        "blur": ops.PeriodicConvolution(jnp.asarray(psf, jnp.float32), SHAPE),
        "pool": ops.AveragePool(SHAPE, 2),
        "dct": ops.SubsampledDCT(keep),
    }


OPERATORS = _operators()


def _prior():
    """A correlated Gaussian prior on 8×8 images, N(m, C): smooth mean, squared-
    exponential correlation between pixels."""
    ii, jj = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    pos = np.stack([ii.ravel(), jj.ravel()], 1).astype(float)
    dist2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    cov = 0.3 * np.eye(D) + 0.5 * np.exp(-dist2 / 4.0)
    mean = 0.5 * np.sin(pos[:, 0] / 3.0) * np.cos(pos[:, 1] / 4.0)
    return mean, cov


PRIOR_MEAN, PRIOR_COV = _prior()
SCORE = na.scores.gaussian_score(
    jnp.asarray(PRIOR_MEAN.reshape(SHAPE), jnp.float32),
    jnp.asarray(PRIOR_COV, jnp.float32),
)
TRUE_SIGMA = 0.3


def _data(op, key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    chol = jnp.asarray(scipy.linalg.cholesky(PRIOR_COV, lower=True), jnp.float32)
    x = jnp.asarray(PRIOR_MEAN, jnp.float32) + chol @ jax.random.normal(k1, (D,))
    x = x.reshape(SHAPE)
    return op.apply(x) + TRUE_SIGMA * jax.random.normal(k2, op.out_shape)


def _model(op, *, dense=False, sigma=None, offset=0.0):
    """``y ~ N(op(x) + offset, σ)``; ``dense`` writes the same with the matrix."""
    matrix = op.as_matrix() if dense else None

    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=SHAPE))
        s = numpyro.sample("sigma", dist.HalfNormal(1.0)) if sigma is None else sigma
        if dense:
            loc = (matrix @ x.ravel()).reshape(op.out_shape)
        else:
            loc = op(x)
        numpyro.sample(
            "y", dist.Normal(loc + offset, s).to_event(len(op.out_shape)), obs=y
        )

    return model


def _mcmc(kernel, num_warmup, num_samples, num_chains):
    return MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )


def _chain0(tree):
    return jax.tree.map(lambda v: v[0], tree)


# ------------------------------------------------------------------ the operator
def test_calling_an_operator_applies_it_and_is_recorded_by_the_handler():
    """``op(x)`` is ``op.apply(x)``; inside a model the application reaches
    :class:`record_operators` through the user's own handlers, and NumPyro's
    ``Predictive`` and ``trace`` run the model unchanged (nothing recorded as a
    site)."""
    op = OPERATORS["blur"]
    x = jax.random.normal(jax.random.key(0), SHAPE)
    np.testing.assert_array_equal(op(x), op.apply(x))
    np.testing.assert_array_equal(jax.jit(lambda o, v: o(v))(op, x), op.apply(x))

    def model():
        v = numpyro.sample("v", dist.Normal(jnp.zeros(SHAPE)).to_event(2))
        numpyro.sample("y", dist.Normal(op(v), 0.1).to_event(2))

    wrapped = block(scope(seed(model, 0), prefix="inner"), hide=["inner/v"])
    recorder = model_fns.record_operators(wrapped)
    recorder()
    assert recorder.operators == [op]
    tr = numpyro.handlers.trace(seed(model, 0)).get_trace()
    assert set(tr) == {"v", "y"}
    draws = Predictive(model, num_samples=3)(jax.random.key(1))
    assert draws["y"].shape == (3, *SHAPE)


# ----------------------------------------------------------- equal to the dense
@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("known_sigma", [True, False])
def test_operator_model_equals_dense_model_on_the_noised_path(name, known_sigma):
    """The same key gives the same chains whether the model writes ``op(x)`` or
    the dense ``A @ x`` (read by ``jacfwd``, SVD): the noised likelihood, its
    σ-dependent log-determinant and their gradients agree. ``preconditioner=None``
    so both draw the same noise (the dense preconditioner's root is a Cholesky
    factor, the operator's the symmetric root: equal in law, not pathwise)."""
    op = OPERATORS[name]
    y = _data(op)
    sigma = TRUE_SIGMA if known_sigma else None
    out = {}
    for dense in (False, True):
        kernel = na.ALMC(
            _model(op, dense=dense, sigma=sigma),
            likelihood_path="noised",
            preconditioner=None,
            step_size=0.1,
        )
        mcmc = _mcmc(kernel, 80, 5, 3)
        mcmc.run(jax.random.key(4), y=y, extra_fields=("measurement_loglik",))
        out[dense] = (mcmc.get_samples(), mcmc.get_extra_fields(), mcmc.sampler)
    assert out[False][2]._observation.A is op  # recognised, not read densely
    assert out[True][2]._observation.A.shape == (op.out_size, D)
    # float32 rounding differs (FFT or DCT against an SVD) and σ's MALA steps
    # amplify it over 85 steps to ~1e-4; a wrong log-determinant or residual moves
    # σ by its posterior sd (~1e-2) or more.
    tol = {"rtol": 1e-5, "atol": 1e-5} if known_sigma else {"rtol": 1e-3, "atol": 1e-4}
    for site in out[True][0]:
        np.testing.assert_allclose(out[False][0][site], out[True][0][site], **tol)
    np.testing.assert_allclose(
        out[False][1]["measurement_loglik"], out[True][1]["measurement_loglik"], **tol
    )
    assert int(out[False][1]["diverging"].sum()) == 0


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_auto_preconditioners_from_the_operator_equal_the_dense_ones(name):
    """``preconditioner="auto"`` from the operator: on the noised path the
    time-dependent ``(I + Aᵀ C_t⁻¹ A)⁻¹``, on the paper path ``(I + AᵀA/σ²)⁻¹``
    (instead of the dense Hessian), each equal to the dense path's matrix."""
    op = OPERATORS[name]
    y = _data(op)
    v = jax.random.normal(jax.random.key(7), (D,))
    for path in ("noised", "paper"):
        precond = {}
        for dense in (False, True):
            # The kernel's own init (what MCMC.run calls first): with σ known the
            # preconditioner is fixed for the run, and no sampling loop is compiled.
            kernel = na.ALMC(
                _model(op, dense=dense, sigma=TRUE_SIGMA), likelihood_path=path
            )
            state = kernel.init(jax.random.key(0), 20, None, (), {"y": y})
            precond[dense] = state.preconditioner
        if path == "noised":
            assert type(precond[False]).__name__ == "NoisedOperatorPreconditioner"
            for t in (jnp.inf, 1.0, 0.02):
                np.testing.assert_allclose(
                    precond[False].at(t).apply(v),
                    precond[True].at(t).matrix @ v,
                    rtol=2e-5,
                    atol=2e-5,
                )
        else:
            assert isinstance(precond[False], ops.OperatorPreconditioner)
            np.testing.assert_allclose(
                precond[False].apply(v), precond[True].matrix @ v, rtol=2e-5, atol=2e-5
            )


def test_smc_with_an_operator_equals_dense_including_the_evidence():
    """``ALMCSMC`` on the noised path with σ unknown: the same particles, weights
    and evidence with the operator as with the dense matrix (a mask: ``A Aᵀ`` is
    singular, so the warm start's log-determinant is over the range of ``A``)."""
    op = OPERATORS["mask"]
    y = _data(op)
    out = {}
    for dense in (False, True):
        kernel = na.ALMCSMC(
            _model(op, dense=dense),
            likelihood_path="noised",
            preconditioner=None,
            step_size=0.1,
        )
        mcmc = _mcmc(kernel, 60, 1, 16)
        mcmc.run(jax.random.key(2), y=y)
        out[dense] = (mcmc.get_samples(), mcmc.last_state)
    for site in ("x", "sigma"):
        np.testing.assert_allclose(
            out[False][0][site], out[True][0][site], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(
        out[False][1].log_evidence_ratio[0],
        out[True][1].log_evidence_ratio[0],
        rtol=1e-5,
        atol=1e-3,
    )


# ------------------------------------------------------------ exact posteriors
def _posterior_at_tau(A, y, sigma, tau, noised):
    """The Gaussian ``μ_τ ∝ p_τ(x) L(x)`` (paper) or ``p_τ(x) L_τ(x)`` (noised):
    ``(mean, precision)`` in float64."""
    a = np.exp(-tau)
    prior_cov = a**2 * PRIOR_COV + (1 - a**2) * np.eye(D)
    prior_prec = np.linalg.inv(prior_cov)
    if noised:
        # L_τ = N(y; e^τ A x, σ² I + (e^{2τ} − 1) A Aᵀ).
        cov_y = sigma**2 * np.eye(A.shape[0]) + np.expm1(2 * tau) * A @ A.T
        B = np.exp(tau) * A
    else:
        cov_y, B = sigma**2 * np.eye(A.shape[0]), A
    lik_prec = B.T @ np.linalg.solve(cov_y, B)
    precision = prior_prec + lik_prec
    rhs = prior_prec @ (a * PRIOR_MEAN) + B.T @ np.linalg.solve(cov_y, y)
    return np.linalg.solve(precision, rhs), precision


def _as_matrix(precond):
    basis = jnp.eye(D, dtype=jnp.float32)
    return np.asarray(jax.vmap(precond.apply)(basis), np.float64).T


@pytest.mark.parametrize(
    "name, path",
    [
        ("mask", "noised"),
        ("blur", "noised"),
        ("pool", "noised"),
        ("dct", "noised"),
        ("blur", "paper"),
        ("pool", "paper"),
    ],
)
def test_operator_model_samples_the_exact_gaussian_posterior_at_tau(name, path):
    """Known σ, ``preconditioner="auto"`` from the operator: the last draws of
    many chains have the mean of the exact ``μ_τ`` and the variances of the exact
    stationary law of the discretised chain at ``τ`` (Langevin with step ``h`` and
    the preconditioner ``M``), within ``Z`` Monte Carlo standard errors."""
    op = OPERATORS[name]
    y = _data(op, key=1)
    n = 1000
    mcmc = _mcmc(
        na.ALMC(_model(op, sigma=TRUE_SIGMA), likelihood_path=path), 300, 150, n
    )
    mcmc.run(jax.random.key(5), y=y)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"][:, -1], np.float64)
    draws = draws.reshape(n, D)
    state = mcmc.last_state
    tau = float(state.time[0])
    h = float(state.step_size[0])
    A = np.asarray(op.as_matrix(), np.float64)
    mean, precision = _posterior_at_tau(
        A, np.asarray(y).ravel(), TRUE_SIGMA, tau, path == "noised"
    )
    precond = _chain0(state.preconditioner)
    if path == "noised":
        precond = precond.at(tau)
    M = _as_matrix(precond)
    cov = ula_stationary_cov(precision, h, M)
    se_mean = np.sqrt(np.diag(cov) / n)
    z_mean = np.abs(draws.mean(0) - mean) / se_mean
    var = np.diag(cov)
    z_var = np.abs(draws.var(0) - var) / (var * np.sqrt(2 / n))
    assert z_mean.max() < Z, (z_mean.max(), np.abs(draws.mean(0) - mean).max())
    assert z_var.max() < Z, z_var.max()


# ---------------------------------------------------------------- unknown σ
def _sigma_posterior(A, y, tau, noised):
    """Mean and sd of σ's marginal under ``μ_τ`` with ``σ ~ HalfNormal(1)``, on a
    grid: ``p(σ | y) ∝ p(σ) N(y; B a m, Σ_y(σ) + B C_τ Bᵀ)``."""
    a = np.exp(-tau)
    prior_cov = a**2 * PRIOR_COV + (1 - a**2) * np.eye(D)
    B = np.exp(tau) * A if noised else A
    grid = np.linspace(0.05, 1.0, 2000)
    logp = []
    for s in grid:
        cov_y = s**2 * np.eye(A.shape[0])
        if noised:
            cov_y = cov_y + np.expm1(2 * tau) * A @ A.T
        cov = cov_y + B @ prior_cov @ B.T
        r = y - B @ (a * PRIOR_MEAN)
        _, logdet = np.linalg.slogdet(cov)
        logp.append(-0.5 * r @ np.linalg.solve(cov, r) - 0.5 * logdet - 0.5 * s**2)
    logp = np.array(logp)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    m = (w * grid).sum()
    return m, np.sqrt((w * (grid - m) ** 2).sum())


@pytest.mark.parametrize("path", ["noised", "paper"])
def test_unknown_sigma_with_an_operator_finds_its_posterior(path):
    """``σ ~ HalfNormal(1)`` with a blur operator: no divergence, the operator's
    preconditioner is re-evaluated at each chain's current σ, and σ's draws have
    the mean and spread of its exact marginal under ``μ_τ``."""
    op = OPERATORS["blur"]
    y = _data(op, key=2)
    n = 400
    # σ lags its path marginal during annealing (it enters the sampling phase
    # ~5 standard errors low on the noised path) and reaches μ_τ's marginal in a
    # few hundred steps at τ.
    mcmc = _mcmc(na.ALMC(_model(op), likelihood_path=path), 400, 400, n)
    mcmc.run(jax.random.key(6), y=y)
    assert int(mcmc.get_extra_fields()["diverging"].sum()) == 0
    sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"][:, -1])
    state = mcmc.last_state
    tau = float(state.time[0])
    A = np.asarray(op.as_matrix(), np.float64)
    mean, sd = _sigma_posterior(
        A, np.asarray(y, np.float64).ravel(), tau, path == "noised"
    )
    assert abs(sigma.mean() - mean) < Z * sd / np.sqrt(n), (sigma.mean(), mean, sd)
    assert abs(sigma.std() / sd - 1) < Z * np.sqrt(1 / (2 * n)) + 0.05, (
        sigma.std(),
        sd,
    )
    # The last step's x-move used the preconditioner at each chain's σ before
    # that step's σ-move, the second-to-last draw.
    before = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"][:, -2])
    precond = state.preconditioner
    if path == "noised":
        np.testing.assert_allclose(precond.noise_std, before, rtol=1e-5)
    else:
        np.testing.assert_allclose(precond.noise_var, before**2, rtol=1e-5)


# ------------------------------------------------------------------- the checks
def test_location_that_is_not_the_operator_raises_on_the_noised_path(caplog):
    """``loc = op(x) + 0.1 x`` applies an operator but is not ``op(x) + b``: the
    noised path raises; the paper path runs and says, in its log line, why the
    operator was not used for the preconditioner."""
    op = OPERATORS["blur"]
    y = _data(op)

    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=SHAPE))
        numpyro.sample("y", dist.Normal(op(x) + 0.1 * x, 0.3).to_event(2), obs=y)

    mcmc = _mcmc(na.ALMC(model, likelihood_path="noised"), 20, 1, 2)
    with pytest.raises(ValueError, match=r"is not op\(x\) \+ b"):
        mcmc.run(jax.random.key(0), y=y)
    mcmc = _mcmc(na.ALMC(model), 20, 1, 2)
    with caplog.at_level(logging.INFO, logger="numpyro_almc"):
        mcmc.run(jax.random.key(0), y=y)
    line = " ".join(r.getMessage() for r in caplog.records)
    assert "dense Hessian" in line and "is not op(x) + b" in line
    assert np.all(np.isfinite(mcmc.get_samples()["x"]))


def test_an_offset_is_allowed_and_an_operator_that_depends_on_a_latent_raises():
    """``op(x) + b(θ)`` is recognised (the offset may move with other sites); an
    operator built from a latent site (a gain) raises."""
    op = OPERATORS["pool"]
    y = _data(op)

    def offset_model(y=None):
        x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=SHAPE))
        shift = numpyro.sample("shift", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(op(x) + shift, 0.3).to_event(2), obs=y)

    def gain_model(y=None):
        x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=SHAPE))
        gain = numpyro.sample("gain", dist.LogNormal(0.0, 0.1))
        numpyro.sample(
            "y", dist.Normal(ops.compose(gain, op)(x), 0.3).to_event(2), obs=y
        )

    mcmc = _mcmc(na.ALMC(offset_model, likelihood_path="noised"), 40, 2, 2)
    mcmc.run(jax.random.key(0), y=y)
    assert mcmc.sampler._observation.A is op
    assert np.all(np.isfinite(mcmc.get_samples()["shift"]))
    mcmc = _mcmc(na.ALMC(gain_model, likelihood_path="noised"), 20, 1, 2)
    with pytest.raises(ValueError, match="depends on other latent sites"):
        mcmc.run(jax.random.key(0), y=y)


def test_noised_path_without_an_operator_above_the_dense_size_raises(monkeypatch):
    """Above ``DENSE_OBSERVATION_MAX_DIM`` a forward model the façade cannot see
    (``op.apply``, or any function) is not read as a dense matrix: the noised path
    raises, saying to write ``op(x)``; the same model with ``op(x)`` runs."""
    monkeypatch.setattr(model_fns, "DENSE_OBSERVATION_MAX_DIM", 16)
    op = OPERATORS["blur"]
    y = _data(op)

    def hidden(y=None):
        x = numpyro.sample("x", na.ScorePrior(SCORE, event_shape=SHAPE))
        numpyro.sample("y", dist.Normal(op.apply(x), 0.3).to_event(2), obs=y)

    mcmc = _mcmc(na.ALMC(hidden, likelihood_path="noised"), 20, 1, 2)
    with pytest.raises(ValueError, match=r"DENSE_OBSERVATION_MAX_DIM.*op\(x\)"):
        mcmc.run(jax.random.key(0), y=y)
    mcmc = _mcmc(na.ALMC(_model(op, sigma=0.3), likelihood_path="noised"), 20, 1, 2)
    mcmc.run(jax.random.key(0), y=y)
    assert mcmc.sampler._observation.A is op


def test_paper_path_above_the_dense_size_uses_the_operator_not_the_diagonal(
    monkeypatch, caplog
):
    """Above ``AUTO_DENSE_MAX_DIM`` the paper path's ``"auto"`` is the operator's
    ``(I + AᵀA/σ²)⁻¹`` when the model writes ``op(x)`` (and says so), the fixed
    Hessian diagonal otherwise."""
    monkeypatch.setattr(almc_module, "AUTO_DENSE_MAX_DIM", 16)
    op = OPERATORS["blur"]
    y = _data(op)
    with caplog.at_level(logging.INFO, logger="numpyro_almc"):
        mcmc = _mcmc(na.ALMC(_model(op)), 30, 2, 2)
        mcmc.run(jax.random.key(0), y=y)
    assert isinstance(mcmc.last_state.preconditioner, ops.OperatorPreconditioner)
    assert any("operator PeriodicConvolution" in r.getMessage() for r in caplog.records)
    hidden = _model(op, dense=True)
    mcmc = _mcmc(na.ALMC(hidden), 30, 2, 2)
    mcmc.run(jax.random.key(0), y=y)
    assert isinstance(mcmc.last_state.preconditioner, na.path.DiagonalPreconditioner)


def test_operator_model_at_image_size_runs_without_a_dense_matrix():
    """64×64 (4096 numbers: a dense A would be 4096 × 4096) with an unknown σ:
    ALMC and ALMC-SMC on the noised path, and the final stage, from the operator."""
    shape = (64, 64)
    op = ops.PeriodicConvolution(jnp.ones((3, 3)) / 9, shape)
    y = op.apply(jax.random.normal(jax.random.key(0), shape)) + 0.1 * jax.random.normal(
        jax.random.key(1), shape
    )

    def model(y=None):
        x = numpyro.sample("x", na.ScorePrior(lambda v, t: -v, event_shape=shape))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(op(x), sigma).to_event(2), obs=y)

    for kernel in (
        na.ALMC(model, likelihood_path="noised", final_stage=na.mcmc.FinalStage(4)),
        na.ALMCSMC(model, likelihood_path="noised", divergence="hutchinson"),
    ):
        mcmc = _mcmc(kernel, 30, 2, 2)
        mcmc.run(jax.random.key(2), y=y)
        assert mcmc.sampler._observation.A is op
        samples = mcmc.get_samples()
        assert samples["x"].shape == (4, *shape)
        assert np.all(np.isfinite(samples["x"])) and np.all(samples["sigma"] > 0)


@pytest.mark.parametrize("dense", [False, True])
def test_noised_likelihood_is_accurate_at_a_small_sigma(dense):
    """At t = 2.5 the noised likelihood hardly depends on σ once σ ≪ 0.1 (``C_t``
    is dominated by ``(1 − a²) A Aᵀ``), so doubling σ from 1e-4 changes the joint
    log density by the prior's and Jacobian's ``log 2`` alone. It once formed the
    full joint less ``log N(y; Ax, σ²)``, two numbers ~1e8 apart from the rest,
    whose float32 difference was off by tens of nats: σ's MALA step then wandered
    at small σ and chains stuck there to the end of the run."""
    op = OPERATORS["blur"]
    y = _data(op)
    kernel = na.ALMC(_model(op, dense=dense), likelihood_path="noised")
    state = kernel.init(jax.random.key(0), 10, None, (), {"y": y})
    loglik_fn = jax.jit(kernel._joint_fns((), {"y": y})[0])
    small, double = (
        loglik_fn({**state.z, "sigma": jnp.log(jnp.float32(s))}, 2.5)
        for s in (1e-4, 2e-4)
    )
    # HalfNormal(1): log p(σ) + log σ (the Jacobian of σ = e^z) gains log 2.
    assert abs(float(double - small) - np.log(2.0)) < 0.01, float(double - small)
