"""Structured forward operators against dense float64 references built independently
(loops over the definitions, scipy's DCT), never from the operators' own ``apply``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from numpyro_almc.operators import (
    AbstractMatrixFreeOperator,
    AveragePool,
    ChannelMixing,
    ComposedOperator,
    ConvergenceError,
    DenseOperator,
    Mask,
    MatrixFreeOperator,
    OperatorPreconditioner,
    PeriodicConvolution,
    PooledPeriodicConvolution,
    ScaledOperator,
    SubsampledDCT,
    ZeroPaddedConvolution,
    compose,
)

FACTORS = [(1.0, 0.0), (1.0, 1.0), (0.5, 4.0), (2.0, 25.0)]
# An asymmetric PSF (3 × 2) catches flipped or off-centre kernels.
PSF = np.array([[0.05, 0.1], [0.3, 0.25], [0.2, 0.1]])
MIX = np.array([[0.6, 0.3, 0.1], [-0.2, 0.5, 0.7]])


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------- dense references
def _conv_matrix(psf, h, w, periodic):
    """Row (i, j) holds Σ_pq psf[p, q] x[i - p + ph//2, j - q + pw//2]."""
    ph, pw = psf.shape
    m = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            for p in range(ph):
                for q in range(pw):
                    si, sj = i - p + ph // 2, j - q + pw // 2
                    if periodic:
                        si, sj = si % h, sj % w
                    elif not (0 <= si < h and 0 <= sj < w):
                        continue
                    m[i * w + j, si * w + sj] += psf[p, q]
    return m


def _pool_matrix(h, w, k):
    m = np.zeros((h * w // k**2, h * w))
    for i in range(h):
        for j in range(w):
            m[(i // k) * (w // k) + j // k, i * w + j] = 1.0 / k**2
    return m


def _dct_matrix(keep):
    n = keep.size
    basis = np.eye(n).reshape((n,) + keep.shape)
    cols = np.stack(
        [scipy.fft.dctn(e, type=2, norm="ortho", axes=(0, 1)).ravel() for e in basis]
    )
    return cols.T[np.flatnonzero(keep)]


def _mask(shape, seed=1):
    m = _rng(seed).random(shape) < 0.6
    m.flat[0] = True
    return m


def _fd_numpy(x):
    # Forward differences along both axes plus half the identity (full column rank).
    return np.concatenate(
        [np.diff(x, axis=0).ravel(), np.diff(x, axis=1).ravel(), 0.5 * x.ravel()]
    )


def _fd_jax(x):
    return jnp.concatenate(
        [jnp.diff(x, axis=0).ravel(), jnp.diff(x, axis=1).ravel(), 0.5 * x.ravel()]
    )


def _build(name):
    """(operator, float64 reference matrix) for each case."""
    if name == "mask":
        m = _mask((6, 6))
        return Mask(m), np.diag(m.ravel().astype(float))
    if name == "mask_observed_only":
        m = _mask((6, 6))
        return Mask(m.astype(int), observed_only=True), np.eye(36)[m.ravel()]
    if name == "periodic_conv":
        return PeriodicConvolution(PSF, (6, 6)), _conv_matrix(PSF, 6, 6, True)
    if name == "periodic_conv_rgb":
        ref = np.kron(_conv_matrix(PSF, 4, 5, True), np.eye(3))
        return PeriodicConvolution(PSF, (4, 5, 3)), ref
    if name == "zero_padded_conv":
        return ZeroPaddedConvolution(PSF, (6, 5)), _conv_matrix(PSF, 6, 5, False)
    if name == "average_pool":
        return AveragePool((6, 6), 2), _pool_matrix(6, 6, 2)
    if name == "average_pool_rgb":
        return AveragePool((6, 3, 2), 3), np.kron(_pool_matrix(6, 3, 3), np.eye(2))
    if name == "subsampled_dct":
        keep = _mask((6, 6), seed=2)
        return SubsampledDCT(keep), _dct_matrix(keep)
    if name == "dense_wide":
        a = _rng(3).standard_normal((20, 36)) / 6
        return DenseOperator(a, in_shape=(6, 6)), a
    if name == "dense_tall":
        a = _rng(4).standard_normal((9, 5))
        return DenseOperator(a), a
    if name == "channel_mixing":
        return ChannelMixing(MIX, (3, 3, 3)), np.kron(np.eye(9), MIX)
    if name == "scaled_periodic_conv":
        op = ScaledOperator(PeriodicConvolution(PSF, (6, 6)), -1.5)
        return op, -1.5 * _conv_matrix(PSF, 6, 6, True)
    if name == "pooled_periodic_conv":
        op = compose(AveragePool((6, 6), 2), PeriodicConvolution(PSF, (6, 6)))
        assert isinstance(op, PooledPeriodicConvolution)
        return op, _pool_matrix(6, 6, 2) @ _conv_matrix(PSF, 6, 6, True)
    if name == "mask_after_periodic_conv":
        m = _mask((6, 6))
        op = compose(Mask(m), PeriodicConvolution(PSF, (6, 6)))
        assert isinstance(op, ComposedOperator)
        return op, np.diag(m.ravel().astype(float)) @ _conv_matrix(PSF, 6, 6, True)
    if name == "matrix_free":
        basis = np.eye(30).reshape(30, 6, 5)
        ref = np.stack([_fd_numpy(e) for e in basis]).T
        bound = 1.01 * np.linalg.norm(ref, 2) ** 2
        return MatrixFreeOperator(_fd_jax, (6, 5), spectral_bound=bound), ref
    raise KeyError(name)


NAMES = [
    "mask",
    "mask_observed_only",
    "periodic_conv",
    "periodic_conv_rgb",
    "zero_padded_conv",
    "average_pool",
    "average_pool_rgb",
    "subsampled_dct",
    "dense_wide",
    "dense_tall",
    "channel_mixing",
    "scaled_periodic_conv",
    "pooled_periodic_conv",
    "mask_after_periodic_conv",
    "matrix_free",
]
MATRIX_FREE = {"zero_padded_conv", "mask_after_periodic_conv", "matrix_free"}


@functools.cache
def case(name):
    return _build(name)


def _tol(name):
    # CG / Chebyshev at rtol 1e-5 in float32 against exact float64 answers.
    return 2e-3 if name in MATRIX_FREE else 2e-4


def _close(actual, expected, tol):
    actual = np.asarray(actual, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    err = np.linalg.norm(actual - expected)
    assert err <= tol * max(np.linalg.norm(expected), 1e-12), (err, tol)


def _vec(shape, seed):
    return _rng(seed).standard_normal(shape).astype(np.float32)


def _normal_fn(ref, a, b, power):
    """(a I + b MᵀM)^power by float64 eigendecomposition."""
    lam, q = np.linalg.eigh(a * np.eye(ref.shape[1]) + b * ref.T @ ref)
    return (q * lam**power) @ q.T


# --------------------------------------------------------------- per-operator
@jax.jit
def _maps(op, x, y):
    return op.apply(x), op.adjoint(y), op.as_matrix()


@pytest.mark.parametrize("name", NAMES)
def test_apply_adjoint_and_matrix(name):
    op, ref = case(name)
    x, y = _vec(op.in_shape, 10), _vec(op.out_shape, 12)
    ax, aty, matrix = _maps(op, x, y)
    assert ax.shape == op.out_shape and ax.dtype == jnp.float32
    assert aty.shape == op.in_shape and matrix.shape == ref.shape
    _close(ax, ref @ x.ravel(), 1e-5)
    _close(aty, ref.T @ y.ravel(), 1e-5)
    _close(matrix, ref, 1e-5)
    # The dot-product test <A x, y> = <x, Aᵀ y>.
    lhs, rhs = float(jnp.vdot(ax, y)), float(jnp.vdot(x, aty))
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + np.linalg.norm(x) * np.linalg.norm(y))


# Traces of `_solves`, per jit cache key (the operator's tree structure and shapes).
TRACES: dict = {}


@jax.jit
def _solves(op, v, w, a, b):
    # One compilation per operator serves every (a, b): they are traced.
    key = (jax.tree_util.tree_structure(op), v.shape, w.shape)
    TRACES[key] = TRACES.get(key, 0) + 1  # a Python side effect: runs per trace
    root = op.sqrt_solve_normal(v, a, b)
    return {
        "solve": op.solve_normal(v, a, b),
        "root": root,
        "root_twice": op.sqrt_solve_normal(root, a, b),
        "outer": op.solve_outer(w, a, b),
    }


@pytest.mark.parametrize("name", NAMES)
def test_solves_and_root(name):
    op, ref = case(name)
    v, w = _vec(op.in_shape, 13), _vec(op.out_shape, 14)
    tol = _tol(name)
    for a, b in FACTORS:
        out = _solves(op, v, w, jnp.float32(a), jnp.float32(b))
        assert out["solve"].shape == op.in_shape and out["solve"].dtype == jnp.float32
        assert out["outer"].shape == op.out_shape
        _close(out["solve"], _normal_fn(ref, a, b, -1.0) @ v.ravel(), tol)
        _close(out["root"], _normal_fn(ref, a, b, -0.5) @ v.ravel(), tol)
        # The root applied twice is the solve.
        _close(out["root_twice"], out["solve"], 2 * tol)
        gram = a * np.eye(ref.shape[0]) + b * ref @ ref.T
        _close(out["outer"], np.linalg.solve(gram, w.ravel()), tol)


@pytest.mark.parametrize("name", ["periodic_conv", "dense_wide", "matrix_free"])
def test_eager_solves_match_jitted(name):
    op, _ = case(name)
    v, w = _vec(op.in_shape, 13), _vec(op.out_shape, 14)
    out = _solves(op, v, w, jnp.float32(0.5), jnp.float32(4.0))
    _close(op.solve_normal(v, 0.5, 4.0), out["solve"], 1e-5)
    _close(op.sqrt_solve_normal(v, 0.5, 4.0), out["root"], 1e-5)
    _close(op.solve_outer(w, 0.5, 4.0), out["outer"], 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_logdets(name):
    op, ref = case(name)
    if name in MATRIX_FREE:
        with pytest.raises(NotImplementedError, match="matrix-free"):
            op.logdet_normal(1.0, 1.0)
        with pytest.raises(NotImplementedError, match="matrix-free"):
            op.logdet_outer(1.0, 1.0)
        return
    n, m = ref.shape[1], ref.shape[0]
    logdets = jax.jit(lambda o, a, b: (o.logdet_normal(a, b), o.logdet_outer(a, b)))
    for a, b in FACTORS:
        expected_n = np.linalg.slogdet(a * np.eye(n) + b * ref.T @ ref)[1]
        expected_m = np.linalg.slogdet(a * np.eye(m) + b * ref @ ref.T)[1]
        got_n, got_m = logdets(op, jnp.float32(a), jnp.float32(b))
        scale = 1e-5 * (1 + abs(n * np.log(a)) + abs(expected_n))
        assert abs(float(got_n) - expected_n) <= scale
        assert abs(float(got_m) - expected_m) <= scale


@pytest.mark.parametrize("name", NAMES)
def test_norm_sq_bound(name):
    op, ref = case(name)
    exact = np.linalg.norm(ref, 2) ** 2
    bound = float(op.norm_sq_bound())
    assert bound >= exact * (1 - 1e-5)
    if name not in MATRIX_FREE:  # exact for the structured operators
        assert bound <= exact * (1 + 1e-4)


@jax.jit
def _posterior(op, y, sigma):
    b = 1.0 / sigma**2
    eye = jnp.eye(op.in_size, dtype=y.dtype)

    def cov_column(e):
        return op.solve_normal(e.reshape(op.in_shape), 1.0, b).ravel()

    def root_column(e):
        return op.sqrt_solve_normal(e.reshape(op.in_shape), 1.0, b).ravel()

    # The preconditioner M = (I + AᵀA/σ²)^{-1} is the posterior covariance.
    precond = op.preconditioner(sigma**2)
    v = jnp.linspace(-1.0, 1.0, op.in_size, dtype=y.dtype)
    return {
        "precond": precond.apply(v),
        "precond_root": precond.apply_sqrt(v),
        "precond_root_twice": precond.apply_sqrt(precond.apply_sqrt(v)),
        "mean": op.solve_normal(op.adjoint(y) * b, 1.0, b),
        # The same mean through the data space: Aᵀ (σ² I + A Aᵀ)^{-1} y.
        "mean_outer": op.adjoint(op.solve_outer(y, sigma**2, 1.0)),
        "cov": jax.vmap(cov_column)(eye),
        "root": jax.vmap(root_column)(eye),
    }


@pytest.mark.parametrize("name", NAMES)
def test_exact_gaussian_posterior(name):
    """Prior N(0, I), y = A x + σ ε: mean (I + AᵀA/σ²)^{-1} Aᵀy/σ², cov its inverse."""
    op, ref = case(name)
    sigma = 0.3
    y = _vec(op.out_shape, 16)
    precision = np.eye(ref.shape[1]) + ref.T @ ref / sigma**2
    cov = np.linalg.inv(precision)
    mean = cov @ ref.T @ y.ravel() / sigma**2
    out = _posterior(op, y, jnp.float32(sigma))
    tol = _tol(name)
    _close(out["mean"], mean, tol)
    _close(out["mean_outer"], mean, tol)
    _close(out["cov"], cov, tol)
    # The root is symmetric, and draws mean + root ε have covariance root² = cov.
    root = np.asarray(out["root"], dtype=np.float64)
    _close(root, root.T, tol)
    _close(root @ root.T, cov, 2 * tol)
    v = np.linspace(-1.0, 1.0, op.in_size)
    _close(out["precond"], cov @ v, tol)
    _close(out["precond_root"], _normal_fn(ref, 1.0, 1 / sigma**2, -0.5) @ v, tol)
    _close(out["precond_root_twice"], out["precond"], 2 * tol)


def test_preconditioner_protocol():
    op, ref = case("zero_padded_conv")
    p = op.preconditioner(0.04)
    assert isinstance(p, OperatorPreconditioner)
    v = _vec((op.in_size,), 15)
    _close(p.apply(v), _normal_fn(ref, 1.0, 25.0, -1.0) @ v, _tol("zero_padded_conv"))
    _close(p.apply_sqrt(v), _normal_fn(ref, 1.0, 25.0, -0.5) @ v, 2e-3)
    leaves = jax.tree_util.tree_leaves(p)
    assert any(leaf is p.noise_var for leaf in leaves)  # traced, not static


def _primitive_names(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _primitive_names(inner)
    return names


FACTORISATIONS = {"eigh", "svd", "cholesky", "lu", "qr", "schur", "eig"}


@pytest.mark.parametrize("name", NAMES)
def test_changing_sigma_reuses_the_factorisation(name):
    op, _ = case(name)
    v, w = jnp.asarray(_vec(op.in_shape, 17)), jnp.asarray(_vec(op.out_shape, 18))
    key = (jax.tree_util.tree_structure(op), v.shape, w.shape)
    results = [_solves(op, v, w, jnp.float32(a), jnp.float32(b)) for a, b in FACTORS]
    assert TRACES[key] == 1  # no retrace (hence no recompile) when a, b change
    assert not np.allclose(results[1]["solve"], results[3]["solve"])  # a, b used
    # No factorisation primitive is traced per call: all of them ran at build time.
    jaxpr = jax.make_jaxpr(_solves)(op, v, w, 1.0, 2.0)
    assert not _primitive_names(jaxpr.jaxpr) & FACTORISATIONS
    if name not in MATRIX_FREE:
        logdet = jax.make_jaxpr(lambda o, a, b: o.logdet_normal(a, b))(op, 1.0, 2.0)
        assert not _primitive_names(logdet.jaxpr) & FACTORISATIONS
    # Sanity of the detector itself: a per-call eigendecomposition is caught.
    eig = jax.make_jaxpr(lambda m: jnp.linalg.eigh(m)[0])(jnp.eye(2))
    assert "eigh" in _primitive_names(eig.jaxpr)


def test_preconditioner_noise_var_is_traced():
    op, _ = case("periodic_conv")
    traces = []

    @jax.jit
    def f(p, v):
        traces.append(1)
        return p.apply(v)

    v = jnp.ones(op.in_size)
    first = f(op.preconditioner(0.5), v)
    second = f(op.preconditioner(0.1), v)
    assert len(traces) == 1 and not np.allclose(first, second)


def test_vmap_over_a_batch():
    op, ref = case("pooled_periodic_conv")
    xs = jnp.asarray(_rng(5).standard_normal((4,) + op.in_shape), jnp.float32)
    ys = jax.vmap(op.apply)(xs)
    _close(ys.reshape(4, -1), xs.reshape(4, -1) @ ref.T, 1e-5)


# ---------------------------------------------------------------- matrix-free
def test_matrix_free_non_convergence_is_flagged():
    op = MatrixFreeOperator(_fd_jax, (6, 5), max_steps=2, spectral_bound=9.0)
    v = jnp.asarray(_vec((6, 5), 18))
    with pytest.raises(ConvergenceError, match="did not converge in 2 steps"):
        op.solve_normal(v, 1.0, 10.0)
    value, info = op.solve_normal_info(v, 1.0, 10.0)
    assert not bool(info.converged) and int(info.num_steps) == 2
    assert bool(jnp.all(jnp.isfinite(value)))  # the last iterate, for inspection
    # Inside jit nothing raises: the result is all-NaN, the info says why.
    jitted = jax.jit(lambda o, v: o.solve_normal(v, 1.0, 10.0))(op, v)
    assert bool(jnp.all(jnp.isnan(jitted)))
    _, info = jax.jit(lambda o, v: o.solve_normal_info(v, 1.0, 10.0))(op, v)
    assert not bool(info.converged)
    # And the same status once it does converge.
    _, info = case("matrix_free")[0].solve_normal_info(v, 1.0, 10.0)
    assert bool(info.converged) and 2 < int(info.num_steps) < 2000


def test_chebyshev_root_non_convergence_is_flagged():
    op = MatrixFreeOperator(_fd_jax, (6, 5), spectral_bound=9.0, sqrt_max_terms=4)
    v = jnp.asarray(_vec((6, 5), 19))
    with pytest.raises(ConvergenceError, match="sqrt_max_terms"):
        op.sqrt_solve_normal(v, 1.0, 10.0)
    _, info = op.sqrt_solve_normal_info(v, 1.0, 10.0)
    assert not bool(info.converged) and int(info.num_steps) == 4
    out = jax.jit(lambda o, v: o.sqrt_solve_normal(v, 1.0, 10.0))(op, v)
    assert bool(jnp.all(jnp.isnan(out)))


def test_chebyshev_terms_grow_with_conditioning():
    op = case("matrix_free")[0]
    v = jnp.asarray(_vec((6, 5), 20))
    steps = [int(op.sqrt_solve_normal_info(v, 1.0, b)[1].num_steps) for b in (1, 100)]
    assert steps[0] < steps[1]


def test_matrix_free_root_needs_a_bound():
    op = MatrixFreeOperator(_fd_jax, (6, 5))
    with pytest.raises(NotImplementedError, match="spectral_bound"):
        op.sqrt_solve_normal(jnp.ones((6, 5)), 1.0, 1.0)
    with pytest.raises(NotImplementedError, match="spectral_bound"):
        op.preconditioner(0.1).apply_sqrt(jnp.ones(30))


def test_zero_padded_uses_few_cg_steps():
    """The periodic preconditioner makes the zero-boundary solve cheap."""
    op = ZeroPaddedConvolution(np.ones((3, 3)) / 9, (16, 16))
    v = jnp.asarray(_vec((16, 16), 21))
    _, info = op.solve_normal_info(v, 1.0, 100.0)
    plain = ComposedOperator(op, ScaledOperator(Mask(np.ones((16, 16), bool)), 1.0))
    _, plain_info = plain.solve_normal_info(v, 1.0, 100.0)
    assert bool(info.converged) and bool(plain_info.converged)
    assert int(info.num_steps) < int(plain_info.num_steps)


def test_compose_dispatch():
    conv = PeriodicConvolution(PSF, (6, 6))
    assert isinstance(compose(AveragePool((6, 6), 2), conv), PooledPeriodicConvolution)
    assert isinstance(compose(conv, AveragePool((12, 12), 2)), ComposedOperator)
    scaled = compose(conv, 3.0)
    assert isinstance(scaled, ScaledOperator)
    assert isinstance(compose(Mask(_mask((6, 6))), conv), AbstractMatrixFreeOperator)
    # The structured composition and the matrix-free one agree.
    pooled = compose(AveragePool((6, 6), 2), conv)
    generic = ComposedOperator(AveragePool((6, 6), 2), conv)
    v = jnp.asarray(_vec((6, 6), 22))
    _close(pooled.solve_normal(v, 0.5, 4.0), generic.solve_normal(v, 0.5, 4.0), 1e-3)


def test_operators_are_pytrees():
    op = case("pooled_periodic_conv")[0]
    leaves, treedef = jax.tree_util.tree_flatten(op)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.in_shape == op.in_shape and rebuilt.out_shape == op.out_shape


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Mask(np.array([[0.0, 0.5]])), ValueError, "only 0 and 1"),
        (lambda: Mask(np.array(True)), ValueError, "image's shape"),
        (lambda: Mask(np.zeros(4, bool), observed_only=True), ValueError, "no pixel"),
        (lambda: Mask(np.ones(4, bool), observed_only=1), TypeError, "True or False"),
        (lambda: PeriodicConvolution(np.ones((7, 3)), (6, 6)), ValueError, "larger"),
        (lambda: PeriodicConvolution(np.ones(3), (6, 6)), ValueError, "2-D kernel"),
        (lambda: PeriodicConvolution(np.ones((3, 3)), (6,)), ValueError, "image_shape"),
        (
            lambda: ZeroPaddedConvolution(np.full((2, 2), np.nan), (6, 6)),
            ValueError,
            "non-finite",
        ),
        (lambda: ZeroPaddedConvolution(PSF, (6, 0)), ValueError, "positive integers"),
        (lambda: ZeroPaddedConvolution(PSF, (6, 6), rtol=-1.0), ValueError, "rtol"),
        (lambda: AveragePool((6, 6), 1.5), TypeError, "integer"),
        (lambda: AveragePool((6, 6), 0), ValueError, ">= 1"),
        (lambda: AveragePool((6, 5), 2), ValueError, "multiples"),
        (lambda: SubsampledDCT(np.zeros((4, 4), bool)), ValueError, "no coefficient"),
        (lambda: SubsampledDCT(np.full((4, 4), 2)), ValueError, "only 0 and 1"),
        (lambda: DenseOperator(np.ones(3)), ValueError, "2-D matrix"),
        (lambda: DenseOperator(np.ones((4, 6)), in_shape=(2, 2)), ValueError, "sizes"),
        (lambda: DenseOperator(np.ones((2, 2)) * 1j), TypeError, "real"),
        (lambda: ChannelMixing(MIX, (4, 4, 2)), ValueError, r"\(H, W, 3\)"),
        (lambda: ScaledOperator(np.eye(2), 2.0), TypeError, "operator"),
        (lambda: ScaledOperator(Mask(np.ones(2, bool)), np.inf), ValueError, "finite"),
        (lambda: MatrixFreeOperator(3.0, (2,)), TypeError, "callable"),
        (lambda: MatrixFreeOperator(lambda x: x**2, (2,)), ValueError, "not linear"),
        (
            lambda: MatrixFreeOperator(lambda x: x, (2,), max_steps=1),
            ValueError,
            ">= 2",
        ),
        (
            lambda: MatrixFreeOperator(lambda x: x, (2,), spectral_bound=-1.0),
            ValueError,
            "spectral_bound",
        ),
        (lambda: MatrixFreeOperator(lambda x: x, (2,), dtype=int), TypeError, "float"),
        (
            lambda: compose(AveragePool((6, 6), 2), AveragePool((6, 6), 2)),
            ValueError,
            "Cannot compose",
        ),
        (lambda: compose(2.0, 3.0), TypeError, "must be an operator"),
        (lambda: compose(np.eye(2), Mask(np.ones(2, bool))), TypeError, "operator"),
    ],
)
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("name", ["mask", "periodic_conv", "dense_wide", "matrix_free"])
def test_bad_call_arguments(name):
    op, _ = case(name)
    good = jnp.ones(op.in_shape)
    with pytest.raises(ValueError, match="must have shape"):
        op.apply(jnp.ones((7, 7)))
    with pytest.raises(ValueError, match="must have shape"):
        op.adjoint(good if op.in_shape != op.out_shape else jnp.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="`a` must be finite and > 0"):
        op.solve_normal(good, 0.0, 1.0)
    with pytest.raises(ValueError, match="`b` must be finite and >= 0"):
        op.sqrt_solve_normal(good, 1.0, -1.0)
    with pytest.raises(ValueError, match="scalar"):
        op.solve_outer(jnp.ones(op.out_shape), jnp.ones(2), 1.0)
    with pytest.raises(ValueError, match="`noise_var` must be > 0"):
        op.preconditioner(0.0)
    with pytest.raises(ValueError, match="flattened"):
        op.preconditioner(1.0).apply(good.reshape(op.in_shape + (1,)))


def test_traced_factors_skip_python_checks():
    # a, b traced: no check runs (and nothing raises) inside jit.
    op, _ = case("periodic_conv")
    out = jax.jit(lambda o, v, a, b: o.solve_normal(v, a, b))(
        op, jnp.ones(op.in_shape), 1.0, 2.0
    )
    assert out.shape == op.in_shape


def test_preconditioner_keeps_float32_under_x64():
    # pitfalls.md: no float64 noise scale may promote float32 positions.
    with jax.enable_x64(True):
        op = AveragePool((4, 4), 2)
        p = op.preconditioner(np.float64(0.5))
        v = jnp.ones(16, dtype=jnp.float32)
        assert p.apply(v).dtype == jnp.float32
        assert p.apply_sqrt(v).dtype == jnp.float32


def test_subsampled_dct_acts_per_channel():
    keep = _mask((4, 3, 2), seed=6)
    op, ref = SubsampledDCT(keep), _dct_matrix(keep)
    x, y = _vec(op.in_shape, 23), _vec(op.out_shape, 24)
    _close(op.apply(x), ref @ x.ravel(), 1e-5)
    _close(op.adjoint(y), ref.T @ y.ravel(), 1e-5)
    _close(
        op.solve_normal(x, 0.5, 4.0), _normal_fn(ref, 0.5, 4.0, -1.0) @ x.ravel(), 2e-4
    )
