"""The LRU and S5 cells (scanrnn.state_space): NumPy loops of the published equations, the three modes
against each other (values and gradients), finite differences, the parameterisations' invariants, the
layers and training built on them, mixed precision, and bad input."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import normal, random_params
from scanrnn.state_space import LRUParams, Projection, S5Params, lru, s5

N, H, T = 4, 3, 12  # N complex states; s5(2N, blocks=2) keeps N of its 2N eigenvalues
CHUNK = 5  # does not divide T
MODES = ("sequential", "associative", "chunked")
LENGTHS = np.array([0, 5, T])
F64, F32 = jnp.float64, jnp.float32

# name -> (factory of (mode, dtype, **options), options of the NumPy loop)
CELLS = {
    "lru": (lambda mode, dtype, **kw: lru(N, mode=mode, chunk_size=CHUNK, param_dtype=dtype, **kw), {}),
    "s5": (lambda mode, dtype, **kw: s5(2 * N, blocks=2, mode=mode, chunk_size=CHUNK, param_dtype=dtype, **kw),
           dict(conj_sym=True, clip=True)),
    "s5-full-unclipped": (lambda mode, dtype, **kw: s5(N, conj_sym=False, clip_eigs=False, mode=mode, chunk_size=CHUNK,
                                                       param_dtype=dtype, **kw),
                          dict(conj_sym=False, clip=False)),
}


def make(name, mode="sequential", dtype=F64, **options):
    return CELLS[name][0](mode, dtype, **options)


def complex_carry(seed, batch=None, dtype=F64, n=N):
    """A random complex initial carry ``[n]`` (or ``[batch, n]``)."""
    shape = (n,) if batch is None else (batch, n)
    rng = np.random.default_rng(seed)
    h = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return scanrnn.RNNCarry(jnp.asarray(h, jnp.complex128 if dtype == F64 else jnp.complex64))


# --------------------------------------------------------------------------
# NumPy loops of the published equations, from the param arrays.


def _np(params):
    return {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}


def _complex_kernels(p, n):
    return p["b"][:n] + 1j * p["b"][n:], p["c"][:, :n] + 1j * p["c"][:, n:]


def numpy_lru(params, xs, h):
    """Orvieto et al. 2023, appendix A: h = lambda h + gamma (B x), y = Re(C h) + D x."""
    p = _np(params)
    n = p["nu_log"].shape[0]
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    B, C = _complex_kernels(p, n)
    ys = []
    for x in xs:
        h = lam * h + gamma * (B @ x)
        ys.append((C @ h).real + p["d"] * x)
    return h, np.stack(ys)


def numpy_s5(params, xs, h, conj_sym, clip):
    """Smith et al. 2023: zero-order hold of the diagonal system, y = (2) Re(C~ h) + D x."""
    p = _np(params)
    n = p["lambda_re"].shape[0]
    real = np.minimum(p["lambda_re"], -1e-4) if clip else p["lambda_re"]
    lam = real + 1j * p["lambda_im"]
    lam_bar = np.exp(lam * np.exp(p["log_step"]))
    B, C = _complex_kernels(p, n)
    B_bar = ((lam_bar - 1) / lam)[:, None] * B
    ys = []
    for x in xs:
        h = lam_bar * h + B_bar @ x
        ys.append((2 if conj_sym else 1) * (C @ h).real + p["d"] * x)
    return h, np.stack(ys)


def numpy_cell(name, params, xs, h):
    xs, h = np.asarray(xs, np.float64), np.asarray(h, np.complex128)
    if name == "lru":
        return numpy_lru(params, xs, h)
    return numpy_s5(params, xs, h, **CELLS[name][1])


def numpy_unroll(name, params, xs, h, length, reverse):
    """What ``unroll`` should give: the loop over the valid part, zeros past it."""
    xs = np.asarray(xs, np.float64)
    valid = xs[:length][::-1] if reverse else xs[:length]
    if length:
        final, ys = numpy_cell(name, params, valid, h)
    else:
        final, ys = np.asarray(h, np.complex128), np.zeros((0, xs.shape[1]))
    ys = ys[::-1] if reverse else ys
    return final, np.concatenate([ys, np.zeros((len(xs) - length, xs.shape[1]))])


def close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        np.testing.assert_allclose(a.astype(np.result_type(a, np.float64)), e, **tol)


def params_for(name, seed=1, dtype=F64, scale=0.5):
    """Random params of the cell (not only initial ones): decays, phases and steps of every size and sign."""
    return random_params(make(name, dtype=dtype), H, seed=seed, scale=scale)


# --------------------------------------------------------------------------
# 1. The published equations, every mode, lengths and both directions, under jit and vmap.


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CELLS))
def test_every_mode_matches_the_numpy_equations(name):
    params = params_for(name)
    xs = normal((len(LENGTHS), T, H), seed=2)
    carries = complex_carry(3, batch=len(LENGTHS))
    cells = [make(name, mode) for mode in MODES]

    @jax.jit
    def run(params, xs, carries, lengths):
        return [[scanrnn.unroll_batch(cell, params, xs, carries, length=lengths, reverse=reverse)
                 for reverse in (False, True)] for cell in cells]

    for per_mode in run(params, xs, carries, jnp.asarray(LENGTHS)):
        for reverse, (final, ys) in zip((False, True), per_mode):
            assert ys.dtype == F64 and final.h.dtype == jnp.complex128
            for b, length in enumerate(LENGTHS):
                want_h, want_ys = numpy_unroll(name, params, xs[b], carries.h[b], int(length), reverse)
                close(ys[b], want_ys, rtol=1e-11, atol=1e-12)
                close(final.h[b], want_h, rtol=1e-11, atol=1e-12)


@pytest.mark.slow
def test_apply_is_step_of_project_and_a_loop_of_apply_is_unroll():
    cell = make("lru")
    params = params_for("lru")
    carry, xs = complex_carry(4), normal((3, H), seed=5)
    p = cell.project(params, xs[0])
    assert isinstance(p, Projection) and p.bx.shape == (2 * N,) and p.x.shape == (H,)
    c1, y1 = cell.apply(params, carry, xs[0])
    c2, y2 = cell.step(params, carry, p)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(c1.h, c2.h)
    c = carry
    ys = []
    for x in xs:
        c, y = cell.apply(params, c, x)
        ys.append(y)
    final, want = scanrnn.unroll(cell, params, xs, carry)
    close(final.h, np.asarray(c.h), rtol=1e-13, atol=1e-14)
    close(want, np.stack(ys), rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------
# 2. The modes against each other: values and gradients.


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["lru", "s5"])
def test_modes_agree_in_values_and_gradients(name, dtype):
    """A loss of the outputs and the final carry, reversed, over lengths 0, partial and T: its value and its
    gradients with respect to the params and the inputs agree across the three modes."""
    params = params_for(name, seed=6, dtype=dtype)
    xs = normal((len(LENGTHS), T, H), seed=7, dtype=dtype)
    carries = complex_carry(8, batch=len(LENGTHS), dtype=dtype)
    target = normal((len(LENGTHS), T, H), seed=9, dtype=dtype)
    cells = [make(name, mode, dtype) for mode in MODES]

    def loss(cell):
        def value(params, xs, lengths):
            final, ys = scanrnn.unroll_batch(cell, params, xs, carries, length=lengths, reverse=True)
            return jnp.sum((ys - target) ** 2) + jnp.sum(jnp.sin(jnp.real(final.h))) + jnp.sum(jnp.imag(final.h) ** 2)

        return jax.value_and_grad(value, argnums=(0, 1))

    sequential, *others = jax.jit(lambda *args: [loss(cell)(*args) for cell in cells])(params, xs, jnp.asarray(LENGTHS))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(sequential))
    assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in jax.tree.leaves(sequential[1][0]))  # every param matters
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(sequential))
    tol = 1e-10 if dtype == F64 else 1e-5
    for other in others:
        close(other, sequential, rtol=tol, atol=tol * scale)
    # Length 0: the inputs get no gradient.
    np.testing.assert_array_equal(np.asarray(sequential[1][1][0]), 0.0)


# --------------------------------------------------------------------------
# 3. Finite differences.


@pytest.mark.slow
def test_check_grads():
    cells = [(make("lru", "sequential"), "lru"), (make("s5", "chunked"), "s5")]
    params = [params_for(name, seed=10 + k) for k, (_, name) in enumerate(cells)]
    xs = normal((6, H), seed=11)
    carry = complex_carry(12)

    def f(params, xs):
        return [scanrnn.unroll(cell, p, xs, carry, length=4, reverse=True)[1] for (cell, _), p in zip(cells, params)]

    check_grads(jax.jit(f), (params, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------
# 4. The parameterisations' invariants.


def _coefficients(cell, params):
    """``(a, g B x)`` of one step, for the input ``x = e_0``."""
    x = jnp.zeros((params.d.shape[0],), params.d.dtype).at[0].set(1.0)
    return cell.coefficients(params, cell.project(params, x))


@pytest.mark.slow
def test_lru_is_stable_for_any_params():
    """|lambda| = exp(-exp(nu_log)) < 1 for nu_log and theta_log over a wide range (float32 rounds it to at most 1)."""
    rng = np.random.default_rng(13)
    n = 2000
    for dtype in (F64, F32):
        params = LRUParams(
            nu_log=jnp.asarray(5 * rng.standard_normal(n), dtype),
            theta_log=jnp.asarray(5 * rng.standard_normal(n), dtype),
            gamma_log=jnp.zeros(n, dtype), b=jnp.zeros((2 * n, 1), dtype), c=jnp.zeros((1, 2 * n), dtype),
            d=jnp.zeros(1, dtype),
        )
        a, _ = _coefficients(lru(n, param_dtype=dtype), params)
        modulus = np.abs(np.asarray(a, np.complex128))
        if dtype == F64:
            assert modulus.max() < 1.0
        else:  # float32 rounds exp(-e^nu_log) to 1 once e^nu_log < 6e-8
            assert modulus.max() <= 1.0 + 1e-7
        want = np.exp(-np.exp(np.asarray(params.nu_log, np.float64)))
        np.testing.assert_allclose(modulus, want, rtol=1e-12 if dtype == F64 else 1e-5, atol=1e-300 if dtype == F64 else 1e-30)


@pytest.mark.slow
@pytest.mark.parametrize("r_min, r_max, max_phase", [(0.0, 1.0, 6.28), (0.4, 0.9, 3.0), (0.9, 0.999, np.pi / 10)])
def test_lru_initialisation(r_min, r_max, max_phase):
    n, h = 2000, 64
    cell = lru(n, r_min=r_min, r_max=r_max, max_phase=max_phase, param_dtype=F64)
    params = cell.init(jax.random.key(15), h)
    assert type(params) is LRUParams and all(leaf.dtype == F64 for leaf in params)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in params)
    modulus = np.exp(-np.exp(np.asarray(params.nu_log)))
    phase = np.exp(np.asarray(params.theta_log))
    assert modulus.min() >= r_min - 1e-12 and modulus.max() <= r_max + 1e-12
    assert phase.min() >= 0 and phase.max() <= max_phase
    # Uniform on the ring's area: |lambda|^2 uniform in [r_min^2, r_max^2].
    squared = (modulus**2 - r_min**2) / (r_max**2 - r_min**2)
    assert abs(np.mean(squared < 0.5) - 0.5) < 0.04 and abs(np.mean(squared < 0.1) - 0.1) < 0.03
    assert abs(np.mean(phase < max_phase / 2) - 0.5) < 0.04
    # gamma normalises: gamma^2 = 1 - |lambda|^2.
    np.testing.assert_allclose(np.exp(2 * np.asarray(params.gamma_log)), 1 - modulus**2, rtol=1e-9)
    # B: re and im of variance 1/(2H); C: of variance 1/N; D standard normal.
    assert abs(np.std(np.asarray(params.b)) * np.sqrt(2 * h) - 1) < 0.02
    assert abs(np.std(np.asarray(params.c)) * np.sqrt(n) - 1) < 0.02
    assert abs(np.std(np.asarray(params.d)) - 1) < 0.3
    # The coefficients are the published lambda and gamma.
    a, _ = _coefficients(cell, params)
    np.testing.assert_allclose(np.abs(np.asarray(a)), modulus, rtol=1e-12)
    carry = cell.initial_carry(params)
    assert carry.h.shape == (n,) and carry.h.dtype == jnp.complex128 and not np.any(np.asarray(carry.h))
    assert lru(3).initial_carry(lru(3).init(jax.random.key(0), 2)).h.dtype == jnp.complex64


@pytest.mark.slow
def test_lru_initialisation_at_the_edges_of_the_ring():
    """A ring up to |lambda| = 1 in float32 keeps |lambda| < 1 and gamma > 0; r_min = r_max fixes the modulus."""
    params = lru(2000, r_min=0.0, r_max=1.0).init(jax.random.key(16), 1)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in params)
    assert np.all(np.asarray(params.gamma_log) > -np.inf)
    fixed = lru(2000, r_min=0.7, r_max=0.7, param_dtype=F64).init(jax.random.key(17), 1)
    np.testing.assert_allclose(np.exp(-np.exp(np.asarray(fixed.nu_log))), 0.7, rtol=1e-14)


def hippo_n_from_formula(size):
    """HiPPO-LegS plus p p^T, p_n = sqrt(n + 1/2), written entry by entry."""
    legs = np.zeros((size, size))
    for n in range(size):
        for k in range(size):
            if n > k:
                legs[n, k] = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
            elif n == k:
                legs[n, k] = -(n + 1)
    p = np.sqrt(np.arange(size) + 0.5)
    return legs + np.outer(p, p)


def _sorted(z):
    z = np.asarray(z, np.complex128)
    return z[np.lexsort((z.real, np.round(z.imag, 9)))]


@pytest.mark.parametrize("size, blocks, conj_sym", [
    (8, 1, True),
    pytest.param(12, 3, True, marks=pytest.mark.slow),
    pytest.param(6, 2, False, marks=pytest.mark.slow),
    pytest.param(5, 1, False, marks=pytest.mark.slow),
])
@pytest.mark.slow
def test_s5_initial_eigenvalues_are_hippo_n(size, blocks, conj_sym):
    cell = s5(size, blocks=blocks, conj_sym=conj_sym, param_dtype=F64, dt_min=0.01, dt_max=0.2)
    params = cell.init(jax.random.key(18), 4)
    assert type(params) is S5Params
    lam = np.asarray(params.lambda_re) + 1j * np.asarray(params.lambda_im)
    assert lam.shape == ((size // 2) if conj_sym else size,)
    block = hippo_n_from_formula(size // blocks)
    eigenvalues = np.tile(np.linalg.eigvals(block), blocks)
    # The matrix is normal, -I/2 plus a skew-symmetric one.
    np.testing.assert_allclose(block @ block.T, block.T @ block, atol=1e-9)
    np.testing.assert_allclose(block + block.T, -np.eye(size // blocks), atol=1e-12)
    if conj_sym:  # one of each conjugate pair: with their conjugates, all the eigenvalues
        assert np.all(np.asarray(params.lambda_im) != 0)
        lam = np.concatenate([lam, lam.conj()])
    np.testing.assert_allclose(_sorted(lam), _sorted(eigenvalues), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(params.lambda_re), -0.5)
    log_step = np.asarray(params.log_step)
    assert log_step.min() >= np.log(0.01) and log_step.max() <= np.log(0.2)


@pytest.mark.slow
def test_s5_initial_kernels():
    """B~ = V* B and C~ = C V with V unitary keep the variance 1/P of B and C; the 2 Re of conj_sym restores it."""
    size, h = 128, 64
    params = s5(size, param_dtype=F64).init(jax.random.key(19), h)
    b = np.asarray(params.b)  # [2N, H]: |B~|^2 per column sums to |B|^2
    np.testing.assert_allclose(2 * np.mean(np.sum(b**2, axis=0)), 1.0, rtol=0.15)
    c = np.asarray(params.c)  # [H, 2N]: C V with C complex of variance 2/P per entry
    np.testing.assert_allclose(np.mean(np.sum(c**2, axis=1)), 1.0, rtol=0.15)
    assert abs(np.std(np.asarray(params.d)) - 1) < 0.3


@pytest.mark.slow
def test_s5_is_stable_for_any_params_with_clip_eigs():
    """|Lambda_bar| = exp(min(Re Lambda, -1e-4) Delta) < 1 for Lambda and log Delta over a wide range."""
    rng = np.random.default_rng(20)
    n = 256
    wide = S5Params(
        lambda_re=jnp.asarray(5 * rng.standard_normal(n)), lambda_im=jnp.asarray(5 * rng.standard_normal(n)),
        log_step=jnp.asarray(5 * rng.standard_normal(n)), b=jnp.ones((2 * n, 1), F64), c=jnp.ones((1, 2 * n), F64),
        d=jnp.ones(1, F64),
    )
    clipped, unclipped = (s5(n, conj_sym=False, clip_eigs=clip, param_dtype=F64) for clip in (True, False))
    a, b = _coefficients(clipped, wide)
    modulus = np.abs(np.asarray(a))
    assert modulus.max() < 1.0 and np.all(np.isfinite(np.asarray(b)))
    real = np.minimum(np.asarray(wide.lambda_re), -1e-4)
    np.testing.assert_allclose(modulus, np.exp(real * np.exp(np.asarray(wide.log_step))), rtol=1e-12, atol=1e-300)
    a, _ = _coefficients(unclipped, wide)
    assert np.abs(np.asarray(a)).max() > 1.0  # without the clip, eigenvalues in the right half-plane grow


def test_s5_conj_sym_equals_the_full_system_of_both_conjugates():
    half = s5(2 * N, blocks=2, param_dtype=F64)  # N states, y = 2 Re(C~ h) + D x
    full = s5(2 * N, blocks=2, conj_sym=False, param_dtype=F64)  # 2N states, y = Re(C~ h) + D x
    p = params_for("s5", seed=22)
    b_re, b_im, c_re, c_im = p.b[:N], p.b[N:], p.c[:, :N], p.c[:, N:]
    both = S5Params(
        lambda_re=jnp.concatenate([p.lambda_re, p.lambda_re]),
        lambda_im=jnp.concatenate([p.lambda_im, -p.lambda_im]),
        log_step=jnp.concatenate([p.log_step, p.log_step]),
        b=jnp.concatenate([b_re, b_re, b_im, -b_im]),
        c=jnp.concatenate([c_re, c_re, c_im, -c_im], axis=1),
        d=p.d,
    )
    xs = normal((T, H), seed=23)
    h0 = complex_carry(24)
    run = jax.jit(lambda: (scanrnn.unroll(half, p, xs, h0), scanrnn.unroll(full, both, xs,
                                                                         scanrnn.RNNCarry(jnp.concatenate([h0.h, h0.h.conj()])))))
    (h_half, y_half), (h_full, y_full) = run()
    close(y_half, np.asarray(y_full), rtol=1e-12, atol=1e-12)
    close(h_full.h, np.concatenate([np.asarray(h_half.h), np.asarray(h_half.h).conj()]), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# 5. Layers and training.


@pytest.mark.slow
def test_in_serial_and_bidirectional_layers():
    cell = make("s5", "chunked")
    layer = scanrnn.bidirectional(cell)
    model = scanrnn.serial(scanrnn.recurrent(make("lru")), scanrnn.dense(1, param_dtype=F64))
    params = jax.tree.map(lambda a: a + 0.1 * normal(a.shape, seed=a.size), layer.init(jax.random.key(25), H))
    model_params = model.init(jax.random.key(26), H)
    xs = normal((2, T, H), seed=27)
    lengths = jnp.array([T, 7])
    run = jax.jit(lambda p, mp, xs, n: (jax.vmap(layer.apply, in_axes=(None, 0, 0))(p, xs, n),
                                         jax.vmap(model.apply, in_axes=(None, 0, 0))(mp, xs, n)))
    ys, out = run(params, model_params, xs, lengths)
    assert ys.shape == (2, T, 2 * H) and out.shape == (2, T, 1)
    for b in range(2):
        n = int(lengths[b])
        forward = numpy_unroll("s5", jax.tree.map(lambda a: a[0], params), xs[b], np.zeros(N), n, False)[1]
        backward = numpy_unroll("s5", jax.tree.map(lambda a: a[1], params), xs[b], np.zeros(N), n, True)[1]
        close(ys[b], np.concatenate([forward, backward], axis=1), rtol=1e-11, atol=1e-12)
        cell_params, dense = model_params
        hidden = numpy_unroll("lru", cell_params, xs[b], np.zeros(N), n, False)[1]
        want = hidden @ np.asarray(dense.w).T + np.asarray(dense.b)
        close(out[b, :n], want[:n], rtol=1e-11, atol=1e-12)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_fit_lowers_the_loss():
    rng = np.random.default_rng(28)
    x = rng.normal(size=(24, 6, 2)).astype(np.float32)
    y = (x[:, -1, :1] + 0.5 * x[:, 0, 1:]).astype(np.float32)
    model = scanrnn.serial(scanrnn.recurrent(lru(8, r_min=0.5, r_max=0.95, mode="chunked", chunk_size=4),
                                             return_sequences=False), scanrnn.dense(1))
    params = model.init(jax.random.key(29), 2)
    data = scanrnn.train.Batch(x[:16], y[:16]), scanrnn.train.Batch(x[16:], y[16:])
    _, history = scanrnn.train.fit(model, params, optax.adam(2e-2), scanrnn.train.mse, *data, epochs=6, batch_size=8)
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0], history["train_loss"]


# --------------------------------------------------------------------------
# 6. Mixed precision.


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lru", "s5"])
def test_bfloat16_products_stay_close_to_float32(name):
    mixed, plain = make(name, dtype=F32, compute_dtype=jnp.bfloat16), make(name, dtype=F32)
    params = params_for(name, seed=30, dtype=F32)
    xs = normal((T, H), seed=31, dtype=F32)
    (h16, y16), (h32, y32) = jax.jit(lambda p, x: (scanrnn.unroll(mixed, p, x), scanrnn.unroll(plain, p, x)))(params, xs)
    assert y16.dtype == F32 and h16.h.dtype == jnp.complex64
    assert not np.array_equal(np.asarray(y16), np.asarray(y32))  # the products did run in bfloat16
    scale = float(np.abs(np.asarray(y32)).max())
    np.testing.assert_allclose(np.asarray(y16), np.asarray(y32), rtol=0.03, atol=0.03 * scale)


# --------------------------------------------------------------------------
# 7. Bad input.


def test_bad_factory_arguments():
    for factory, name in ((lru, "lru"), (s5, "s5")):
        with pytest.raises(ValueError, match=re.escape(f"{name}: mode must be one of ['sequential', 'associative', 'chunked'], got 'fast'")):
            factory(4, mode="fast")
        for size in (0, 2.5, True, None):
            with pytest.raises(ValueError, match=re.escape(f"state_size must be a positive int, got {size!r}")):
                factory(size)
        with pytest.raises(ValueError, match=re.escape("chunk_size must be a positive int, got 0")):
            factory(4, chunk_size=0)
        with pytest.raises(ValueError, match=re.escape(f"{name}: param_dtype must be float32 or float64 (the state is complex64 or complex128), got bfloat16")):
            factory(4, param_dtype=jnp.bfloat16)
        with pytest.raises(TypeError, match=re.escape("param_dtype must be a floating dtype such as jnp.float32 or jnp.bfloat16, got dtype complex64")):
            factory(4, param_dtype=jnp.complex64)
        with pytest.raises(TypeError, match=re.escape("compute_dtype must be None or a floating dtype")):
            factory(4, compute_dtype=jnp.int32)
        with pytest.raises(ValueError, match=re.escape("input_size must be a positive int, got 0")):
            factory(4).init(jax.random.key(0), 0)
    for r_min, r_max in ((0.5, 0.4), (1.0, 1.0), (0.0, 1.5), (0.0, 0.0)):
        with pytest.raises(ValueError, match=re.escape(f"lru: r_min and r_max must satisfy 0 <= r_min <= r_max <= 1, r_min < 1 and r_max > 0, got r_min={r_min!r}, r_max={r_max!r}")):
            lru(4, r_min=r_min, r_max=r_max)
    with pytest.raises(ValueError, match=re.escape("r_min must be a non-negative finite number, got -0.1")):
        lru(4, r_min=-0.1)
    with pytest.raises(ValueError, match=re.escape("max_phase must be a positive finite number, got 0.0")):
        lru(4, max_phase=0.0)
    with pytest.raises(ValueError, match=re.escape("s5: state_size must be a multiple of 4 (blocks=2, and an even block size for conj_sym), got 6")):
        s5(6, blocks=2)
    with pytest.raises(ValueError, match=re.escape("s5: state_size must be a multiple of 4 (blocks=4), got 6")):
        s5(6, blocks=4, conj_sym=False)
    with pytest.raises(ValueError, match=re.escape("s5: dt_min must be at most dt_max, got dt_min=0.5, dt_max=0.1")):
        s5(4, dt_min=0.5, dt_max=0.1)
    with pytest.raises(ValueError, match=re.escape("dt_min must be a positive finite number, got 0.0")):
        s5(4, dt_min=0.0)
    with pytest.raises(TypeError, match=re.escape("conj_sym must be True or False, got 'yes'")):
        s5(4, conj_sym="yes")
    with pytest.raises(TypeError, match=re.escape("clip_eigs must be True or False, got 1")):
        s5(4, clip_eigs=1)


@pytest.mark.parametrize("name", ["lru", "s5"])
def test_bad_params_inputs_and_carries(name):
    cell = make(name, dtype=F32)
    params = params_for(name, dtype=F32)
    carry = cell.initial_carry(params)
    x = normal((H,), dtype=F32)
    other = S5Params if name == "lru" else LRUParams
    with pytest.raises(TypeError, match=re.escape(f"{name} expects params of type {type(params).__name__}, got {other.__name__}")):
        cell.apply(other(*params), carry, x)
    with pytest.raises(TypeError, match=re.escape(f"{name} expects params of type {type(params).__name__}, got dict")):
        cell.initial_carry(params._asdict())
    with pytest.raises(ValueError, match=re.escape(f"{name}: params.c must have shape ({H}, {2 * N}), got ({H}, {N})")):
        cell.apply(params._replace(c=params.c[:, :N]), carry, x)
    field = params._fields[0]
    with pytest.raises(ValueError, match=re.escape(f"{name}: params.{field} must have shape ({N},), got ({N + 1},)")):
        cell.apply(params._replace(**{field: jnp.zeros(N + 1, F32)}), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: params.b must have rank 2, got shape ({2 * N},)")):
        cell.apply(params._replace(b=params.b[:, 0]), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: every param must have the dtype of params.b, float32; got params.d of dtype float64")):
        cell.apply(params._replace(d=params.d.astype(F64)), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: params must be float32 or float64, got params.b of dtype bfloat16")):
        cell.apply(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: x must have shape ({H},) (one example, input_size from params), got ({H + 1},)")):
        cell.apply(params, carry, jnp.ones((H + 1,), F32))
    with pytest.raises(ValueError, match=re.escape(f"{name}: x must have the params' dtype float32, got float64")):
        cell.apply(params, carry, jnp.ones((H,), F64))
    with pytest.raises(ValueError, match=re.escape("xs must hold real numbers (floating or integer), got dtype complex64")):
        scanrnn.unroll(cell, params, jnp.ones((T, H), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape(f"{name}: x must hold real numbers (floating or integer), got dtype complex64")):
        cell.apply(params, carry, jnp.ones((H,), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape("carry must have the dtypes of cell.initial_carry(params), ['complex64']; got ['float32']")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros((N,), F32)), x)
    with pytest.raises(ValueError, match=re.escape("carry must have the dtypes of cell.initial_carry(params), ['complex64']; got ['complex128']")):
        scanrnn.unroll(cell, params, jnp.ones((T, H), F32), scanrnn.RNNCarry(jnp.zeros((N,), jnp.complex128)))
    with pytest.raises(ValueError, match=re.escape(f"carry must have the shapes of cell.initial_carry(params), [({N},)]; got [({N + 1},)]")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros((N + 1,), jnp.complex64)), x)
    with pytest.raises(ValueError, match=r"carry must have the structure of cell.initial_carry\(params\), .*RNNCarry.*; got .*LSTMCarry"):
        cell.apply(params, scanrnn.LSTMCarry(carry.h, carry.h), x)
    with pytest.raises(TypeError, match=re.escape(f"{name}: the projection of one step must be a Projection (from project), got ndarray")):
        cell.coefficients(params, np.zeros(2 * N))
    with pytest.raises(ValueError, match=re.escape(f"{name}: the projection of one step must have bx of shape ({2 * N},) and x of shape ({H},) (from project), got ({N},) and ({H},)")):
        cell.step(params, carry, Projection(jnp.zeros(N, F32), x))
    with pytest.raises(ValueError, match=re.escape(f"{name}: the projection of one step must have bx of shape ({2 * N},) and x of shape ({H},) (from project), got ({2 * N},) and ({H + 1},)")):
        cell.step(params, carry, Projection(jnp.zeros(2 * N, F32), jnp.zeros(H + 1, F32)))
