"""Griffin's RG-LRU cell and Hawk's recurrent block (scanrnn.griffin).

The references are NumPy float64 loops of the paper's equations (De et al.
2024, section 2.4 and Figure 2c), written from the param arrays: ``a =
sigmoid(Lambda) ** (c r)`` as a power and ``sqrt(1 - a**2)`` as written,
not the library's log-space forms. Every mode is checked against them and
against the others, values and gradients, with lengths and reversed.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import assert_close, normal, random_params
from scanrnn.griffin import (
    HawkCarry, HawkParams, RGLRUParams, hawk, log_a_bounds, rg_lru, rg_lru_coefficients,
)
from scanrnn.train import Batch, fit, mse

D, T, CHUNK = 3, 12, 5  # the chunk size does not divide T
MODES = ("sequential", "associative", "chunked")
F64 = jnp.float64
LENGTHS = np.array([0, 5, T])
TOL = {jnp.float64: dict(rtol=1e-10, atol=1e-10), jnp.float32: dict(rtol=1e-5, atol=1e-5)}


def cell_of(mode, dtype=F64, **options):
    return rg_lru(mode=mode, chunk_size=CHUNK, param_dtype=dtype, **options)


# --------------------------------------------------------------------------
# NumPy float64 loops of the published equations.


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _gelu(v):  # the tanh approximation, jax.nn.gelu's default
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def numpy_rg_lru(params, xs, h, c=8.0):
    """Equations (1)-(4): r, i = sigmoid(W_a x + b_a), sigmoid(W_x x + b_x); a = sigmoid(Lambda)^(c r);
    h = a h + sqrt(1 - a^2) (i x)."""
    w, b, lam = (np.asarray(p, np.float64) for p in params)
    width = lam.shape[0]
    w_a, w_x, b_a, b_x = w[:width], w[width:], b[:width], b[width:]
    base = _sigmoid(lam)
    h = np.asarray(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        r, i = _sigmoid(w_a @ x + b_a), _sigmoid(w_x @ x + b_x)
        a = base ** (c * r)
        h = a * h + np.sqrt(1.0 - a**2) * (i * x)
        ys.append(h)
    return h, np.stack(ys) if ys else np.zeros((0, width))


def numpy_unroll(params, xs, h, length=None, reverse=False):
    """What ``unroll`` should give: the loop over the valid part (reversed if asked), zeros past it."""
    xs = np.asarray(xs, np.float64)
    n = len(xs) if length is None else int(length)
    valid = xs[:n][::-1] if reverse else xs[:n]
    final, ys = numpy_rg_lru(params, valid, h)
    ys = ys[::-1] if reverse else ys
    return final, np.concatenate([ys, np.zeros((len(xs) - n, ys.shape[1]))])


def numpy_hawk(params, xs, window, h, length=None):
    """Figure 2(c): GeLU branch times (Conv1D then RG-LRU) branch, then the output map; the carry after ``length``."""
    P = HawkParams(*(np.asarray(p, np.float64) for p in params[:4]),
                   RGLRUParams(*(np.asarray(p, np.float64) for p in params.rg_lru)),
                   *(np.asarray(p, np.float64) for p in params[5:]))
    xs = np.asarray(xs, np.float64)
    n = len(xs) if length is None else int(length)
    width, taps = P.conv_w.shape
    z = xs[:n] @ P.w_in.T + P.b_in
    gate, branch = _gelu(z[:, :width]), z[:, width:]
    past = np.concatenate([np.asarray(window, np.float64), branch])  # [K - 1 + n, W], oldest first
    conv = np.array([P.conv_b + sum(P.conv_w[:, j] * past[t + j] for j in range(taps)) for t in range(n)])
    h, hs = numpy_rg_lru(P.rg_lru, conv.reshape(n, width), h)
    ys = (hs * gate) @ P.w_out.T + P.b_out
    ys = np.concatenate([ys.reshape(n, P.w_out.shape[0]), np.zeros((len(xs) - n, P.w_out.shape[0]))])
    return ys, HawkCarry(past[n : n + taps - 1], h)


def random_carry(width, seed, dtype=F64):
    return scanrnn.RNNCarry(normal((width,), seed=seed, dtype=dtype))


# --------------------------------------------------------------------------
# The RG-LRU: every mode against the NumPy loop and against each other.


def test_apply_is_the_published_step():
    cell = cell_of("sequential")
    params = random_params(cell, D, seed=1, scale=1.0)
    carry, x = random_carry(D, 2), normal((D,), seed=3)
    new, y, (a, b) = jax.jit(lambda p, c, x: (*cell.apply(p, c, x), cell.coefficients(p, cell.project(p, x))))(
        params, carry, x)
    np.testing.assert_allclose(y, numpy_rg_lru(params, x[None], carry.h)[0], rtol=1e-13)
    np.testing.assert_array_equal(new.h, y)
    assert type(new) is scanrnn.RNNCarry and y.dtype == F64
    # The log-space coefficients equal the power form, and b = sqrt(1 - a^2) i x.
    z = np.asarray(params.w_ih) @ np.asarray(x) + np.asarray(params.b)
    a_ref = _sigmoid(np.asarray(params.lam)) ** (8.0 * _sigmoid(z[:D]))
    np.testing.assert_allclose(a, a_ref, rtol=1e-13)
    np.testing.assert_allclose(b, np.sqrt(1 - a_ref**2) * _sigmoid(z[D:]) * np.asarray(x), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_every_mode_matches_numpy_and_the_others(dtype):
    """Over a vmapped batch with lengths 0, partial and T, reversed, random params and carries: the outputs and
    final carries of the three modes equal the NumPy loop of the published equations, and the associative and
    chunked modes give the sequential mode's value and gradient (with respect to the params, the carries and
    the inputs) of a loss of the outputs and the final carry. (Forwards, with and without a length, every mode
    runs again inside the Hawk block against its NumPy loop.)"""
    cells = [cell_of(mode, dtype) for mode in MODES]
    params = random_params(cells[0], D, seed=4, scale=1.0)
    B = len(LENGTHS)
    xs = normal((B, T, D), seed=5, dtype=dtype)
    carries = scanrnn.RNNCarry(normal((B, D), seed=6, dtype=dtype))
    target = normal((B, T, D), seed=7, dtype=dtype)

    def loss(cell):
        def f(params, carries, xs, lengths):
            final, ys = scanrnn.unroll_batch(cell, params, xs, carries, length=lengths, reverse=True)
            return jnp.sum((ys - target) ** 2) + jnp.sum(jnp.sin(final.h)), (final, ys)

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)

    results = jax.jit(lambda *args: [loss(cell)(*args) for cell in cells])(params, carries, xs, jnp.asarray(LENGTHS))
    for (_, (final, ys)), grads in results:
        assert ys.dtype == dtype and type(final) is scanrnn.RNNCarry
        for b in range(B):
            want_final, want_ys = numpy_unroll(params, xs[b], carries.h[b], LENGTHS[b], reverse=True)
            assert_close(ys[b], want_ys, **TOL[dtype])
            assert_close(final.h[b], want_final, **TOL[dtype])
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(grads))
        assert np.abs(np.asarray(grads[0].lam)).max() > 0  # the gradient reaches Lambda
        # Length 0 keeps the carry and reads no input; exact zeros past each length.
        np.testing.assert_array_equal(np.asarray(final.h[0]), np.asarray(carries.h[0]))
        np.testing.assert_array_equal(np.asarray(grads[2][0]), 0.0)
        np.testing.assert_array_equal(np.asarray(ys[1, LENGTHS[1]:]), 0.0)
    for other in results[1:]:
        assert_close(other, results[0], **TOL[dtype])


@pytest.mark.slow
def test_check_grads():
    """Finite differences in float64, with a length and reversed, through the chunked mode (whose gradients the
    other modes equal), and through a tiny Hawk block from a random carry."""
    cell = rg_lru(mode="chunked", chunk_size=2, param_dtype=F64)
    params = random_params(cell, 2, seed=11, scale=1.0)
    carry, xs = random_carry(2, 12), normal((5, 2), seed=13)
    block = hawk(2, conv_width=2, param_dtype=F64)
    block_params = random_params(block, 2, seed=14, scale=0.7)
    block_carry = HawkCarry(normal((1, 2), seed=15), normal((2,), seed=16))

    def f(params, carry, xs, block_params, block_carry):
        return (scanrnn.unroll(cell, params, xs, carry, length=4, reverse=True),
                block.apply(block_params, xs, 4, carry=block_carry))

    check_grads(jax.jit(f), (params, carry, xs, block_params, block_carry), order=1, modes=("fwd", "rev"),
                atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------
# The parameterisation's invariants.


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.bfloat16], ids=["f64", "f32", "bf16"])
def test_a_lies_strictly_between_zero_and_one(dtype):
    """0 < a < 1 and a finite b for any params and inputs: Lambda and gate pre-activations from -1e4 to 1e4,
    where sigmoid(Lambda) rounds to 0 or 1 and the gates saturate."""
    extremes = jnp.asarray([-1e4, -300.0, -40.0, -3.0, 0.0, 3.0, 40.0, 300.0, 1e4], jnp.float32)
    lam, z = jnp.meshgrid(extremes, extremes, indexing="ij")
    lam, z = lam.reshape(-1).astype(dtype), z.reshape(-1).astype(dtype)
    gates = jnp.concatenate([z, -z])
    a, b = jax.jit(rg_lru_coefficients, static_argnums=3)(lam, gates, jnp.ones_like(lam), 8.0)
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(a64 > 0) and np.all(a64 < 1), a64
    assert np.all(np.isfinite(b64)) and np.all(b64 >= 0) and np.all(b64 <= 1)
    # And through the cell, with random params of large scale.
    if dtype != jnp.bfloat16:
        cell = cell_of("sequential", dtype)
        params = random_params(cell, D, seed=14, scale=30.0)
        xs = normal((50, D), seed=15, dtype=dtype) * 30
        a, b = jax.jit(jax.vmap(lambda x: cell.coefficients(params, cell.project(params, x))))(xs)
        assert np.all(np.asarray(a) > 0) and np.all(np.asarray(a) < 1) and np.all(np.isfinite(np.asarray(b)))


@pytest.mark.slow
def test_gradients_stay_finite_as_a_tends_to_one():
    """Lambda from 10 to 1e4 (a -> 1, and a = 1 to rounding), float64 and float32: every gradient finite. The
    textbook sqrt(1 - a**2) of a rounded a = 1 has an infinite derivative, which would reach the loss's gradient
    as NaN."""
    dtypes = (F64, jnp.float32)
    cells = [cell_of("sequential", dtype) for dtype in dtypes]
    params = [random_params(cell, 4, seed=16, scale=0.5)._replace(lam=jnp.asarray([10.0, 20.0, 40.0, 1e4], dtype))
              for cell, dtype in zip(cells, dtypes)]
    xs = [normal((6, 4), seed=17, dtype=dtype) for dtype in dtypes]

    def loss(cell):
        return jax.grad(lambda params, xs: jnp.sum(scanrnn.unroll(cell, params, xs)[1] ** 2), argnums=(0, 1))

    grads = jax.jit(lambda params, xs: [loss(cell)(p, x) for cell, p, x in zip(cells, params, xs)])(params, xs)
    for g in grads:
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(g))
        assert np.abs(np.asarray(g[0].w_ih)).max() > 0
    # The failure this guards against.
    a = jnp.exp(-8.0 * 0.5 * jax.nn.softplus(-params[0].lam))
    naive = jax.jit(jax.grad(lambda a: jnp.sum(jnp.sqrt(1 - a**2))))(a)
    assert not np.all(np.isfinite(np.asarray(naive)))


def test_log_a_bounds():
    for dtype in (jnp.float64, jnp.float32, jnp.bfloat16):
        low, high = log_a_bounds(dtype)
        assert 0 < float(jnp.exp(jnp.asarray(low, dtype))) and float(jnp.exp(jnp.asarray(high, dtype))) < 1
        assert float(-jnp.expm1(jnp.asarray(2 * high, dtype))) > 0


@pytest.mark.slow
@pytest.mark.parametrize("min_rad,max_rad", [(0.9, 0.999), (0.1, 0.95)])
def test_lambda_init_puts_sigmoid_lambda_squared_uniformly_on_the_ring(min_rad, max_rad):
    """recurrentgemma's rnn_param_init: sigmoid(Lambda)**2 uniform in [min_rad**2, max_rad**2]. On the wide
    ring, sigmoid(Lambda) uniform instead would be 0.2 away in Kolmogorov-Smirnov distance."""
    keys = jax.random.split(jax.random.key(1), 125)
    lams = {}
    for dtype in (F64, jnp.float32):
        cell = rg_lru(min_rad=min_rad, max_rad=max_rad, param_dtype=dtype)
        lams[dtype] = jax.jit(jax.vmap(lambda k: cell.init(k, 8).lam))(keys).reshape(-1)  # 1000 draws
    assert lams[jnp.float32].dtype == jnp.float32
    base = np.asarray(jax.nn.sigmoid(lams[F64]))
    assert np.all(base >= min_rad - 1e-12) and np.all(base <= max_rad + 1e-12)
    u = np.sort((base**2 - min_rad**2) / (max_rad**2 - min_rad**2))
    assert np.abs(u - (np.arange(u.size) + 0.5) / u.size).max() < 0.05  # the Kolmogorov-Smirnov distance to U(0, 1)
    base32 = np.asarray(jax.nn.sigmoid(lams[jnp.float32]), np.float64)  # the same range, to rounding
    assert np.all(base32 >= min_rad - 1e-6) and np.all(base32 <= max_rad + 1e-6)


def test_default_init():
    cell = rg_lru()
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), 64)
    assert type(params) is RGLRUParams and all(leaf.dtype == jnp.float32 for leaf in params)
    assert params.w_ih.shape == (128, 64) and params.b.shape == (128,) and params.lam.shape == (64,)
    std = float(np.std(np.asarray(params.w_ih)))
    assert abs(std * math.sqrt(64) - 1) < 0.05  # LeCun normal: variance 1 / fan_in
    assert np.abs(np.asarray(params.w_ih)).max() > 2.5 / math.sqrt(64)  # untruncated
    np.testing.assert_array_equal(np.asarray(params.b), 0.0)
    carry = cell.initial_carry(params)
    assert type(carry) is scanrnn.RNNCarry and carry.h.shape == (64,) and carry.h.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(carry.h), 0.0)
    narrow = jax.eval_shape(lambda k: rg_lru(param_dtype=jnp.bfloat16).init(k, 4), jax.random.key(0))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in narrow)
    assert (cell.mode, cell.log_coefficients, cell.output) == ("sequential", None, None)


# --------------------------------------------------------------------------
# In the library's transformations and layers.


@pytest.mark.slow
def test_jit_vmap_bidirectional_and_serial():
    """unroll_batch (vmap) under jit, bidirectional and serial(recurrent, dense): against the NumPy loop."""
    cell = cell_of("chunked")
    params = random_params(cell, D, seed=18, scale=1.0)
    xs = normal((2, T, D), seed=19)
    lengths = jnp.array([T, 7])
    layer = scanrnn.bidirectional(cell)
    bi_params = random_params(layer, D, seed=20, scale=1.0)
    model = scanrnn.serial(scanrnn.recurrent(cell), scanrnn.dense(1, param_dtype=F64))
    model_params = random_params(model, D, seed=21, scale=1.0)

    @jax.jit
    def run(params, bi_params, model_params, xs, lengths):
        return (scanrnn.unroll_batch(cell, params, xs, length=lengths),
                layer.apply(bi_params, xs[1], length=lengths[1]),
                jax.vmap(model.apply, in_axes=(None, 0, 0))(model_params, xs, lengths))

    (final, ys), bi, out = run(params, bi_params, model_params, xs, lengths)
    for b in range(2):
        want_final, want_ys = numpy_unroll(params, xs[b], np.zeros(D), lengths[b])
        assert_close((final.h[b], ys[b]), (want_final, want_ys), rtol=1e-10, atol=1e-12)
    # The backward direction reads the valid part reversed.
    forward, backward = (jax.tree.map(lambda a: a[d], bi_params) for d in (0, 1))
    assert bi.shape == (T, 2 * D)
    assert_close(bi[:, :D], numpy_unroll(forward, xs[1], np.zeros(D), 7)[1], rtol=1e-10, atol=1e-12)
    assert_close(bi[:, D:], numpy_unroll(backward, xs[1], np.zeros(D), 7, reverse=True)[1], rtol=1e-10, atol=1e-12)
    hs = numpy_unroll(model_params[0], xs[0], np.zeros(D))[1]
    w, bias = (np.asarray(a) for a in model_params[1])
    assert out.shape == (2, T, 1)
    assert_close(out[0], hs @ w.T + bias, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(out[1, 7:]), 0.0)


def _regression(input_size, seed=0):
    """A running mean of the first input feature, per step."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 8, input_size)).astype(np.float32)
    y = np.cumsum(x[:, :, :1], axis=1) / np.arange(1, 9)[None, :, None]
    return Batch(x, y.astype(np.float32))


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
@pytest.mark.parametrize("which", ["rg_lru", "hawk"])
def test_fit_lowers_the_loss(which):
    layer = scanrnn.recurrent(rg_lru(mode="associative")) if which == "rg_lru" else hawk(8)
    model = scanrnn.serial(layer, scanrnn.dense(1))
    params = random_params(model, 2, seed=4, scale=0.5)  # the default init has its own tests
    _, history = fit(model, params, optax.adam(2e-2), mse, _regression(2), epochs=8, batch_size=8,
                     key=jax.random.key(5))
    losses = history["train_loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_bfloat16_products_stay_close_to_float32():
    """compute_dtype=bfloat16: the gate product in bfloat16, the recurrence and the carry in float32."""
    full, mixed = rg_lru(mode="associative"), rg_lru(mode="associative", compute_dtype=jnp.bfloat16)
    params = random_params(full, 8, seed=20, scale=0.5)
    xs = normal((T, 8), seed=21, dtype=jnp.float32)
    run = jax.jit(lambda p, x: [scanrnn.unroll(cell, p, x) for cell in (full, mixed)])
    (want_final, want), (got_final, got) = run(params, xs)
    assert got.dtype == jnp.float32 and got_final.h.dtype == jnp.float32
    assert_close(got, want, rtol=0, atol=3e-2)
    assert not np.array_equal(np.asarray(got), np.asarray(want))  # the products did run in bfloat16
    jaxpr = str(jax.make_jaxpr(lambda p, x: scanrnn.unroll(mixed, p, x))(params, xs))
    assert "bf16" in jaxpr
    # The block too.
    block, block16 = hawk(4), hawk(4, compute_dtype=jnp.bfloat16)
    bp = random_params(block, 8, seed=22, scale=0.5)
    got, want = jax.jit(lambda p, x: (block16.apply(p, x), block.apply(p, x)))(bp, xs)
    assert_close(got, want, rtol=0, atol=5e-2)


# --------------------------------------------------------------------------
# Bad input.


def test_rg_lru_bad_options():
    with pytest.raises(ValueError, match=re.escape("rg_lru: mode must be one of ['sequential', 'associative', 'chunked'], got 'fast'")):
        rg_lru(mode="fast")
    with pytest.raises(ValueError, match=re.escape("chunk_size must be a positive int, got 0")):
        rg_lru(chunk_size=0)
    for c in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="c must be a positive"):
            rg_lru(c=c)
    for low, high in ((0.0, 0.5), (0.9, 0.8), (0.5, 1.0)):
        with pytest.raises(ValueError, match=re.escape(f"rg_lru: need 0 < min_rad <= max_rad < 1, got min_rad={low} and max_rad={high}")):
            rg_lru(min_rad=low, max_rad=high)
    with pytest.raises(TypeError, match="param_dtype must be a floating dtype"):
        rg_lru(param_dtype=jnp.int32)
    with pytest.raises(TypeError, match="compute_dtype must be None or a floating dtype"):
        rg_lru(compute_dtype=jnp.complex64)
    with pytest.raises(ValueError, match=re.escape("input_size must be a positive int, got 0")):
        rg_lru().init(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        rg_lru().init(0, 3)


def test_rg_lru_bad_params_inputs_and_carries():
    cell = rg_lru()
    params = random_params(cell, D)
    carry, x = cell.initial_carry(params), normal((D,), dtype=jnp.float32)
    with pytest.raises(ValueError, match="rg_lru expects params of type RGLRUParams, got tuple"):
        cell.apply(tuple(params), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"rg_lru: params.lam must have shape ({D},), got ({D + 1},)")):
        cell.apply(params._replace(lam=jnp.zeros(D + 1, jnp.float32)), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"rg_lru: params.w_ih must have shape ({2 * D}, {D}), got ({D}, {D})")):
        cell.apply(params._replace(w_ih=params.w_ih[:D]), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"rg_lru: x must have shape ({D},)")):
        cell.apply(params, carry, jnp.ones(D + 1, jnp.float32))
    with pytest.raises(ValueError, match=re.escape("rg_lru: x must have the params' dtype float32, got float64")):
        cell.apply(params, carry, jnp.ones(D, jnp.float64))
    with pytest.raises(ValueError, match=re.escape("xs must have shape [T, input_size]")):
        scanrnn.unroll(cell, params, jnp.ones((T, 2, D), jnp.float32))
    with pytest.raises(ValueError, match=re.escape(f"rg_lru: x must have shape ({D},)")):
        scanrnn.unroll(cell, params, jnp.ones((T, D + 1), jnp.float32))
    with pytest.raises(TypeError, match="xs must hold real numbers .* got dtype complex64"):
        scanrnn.unroll(cell, params, jnp.ones((T, D), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape(f"carry must have the shapes of cell.initial_carry(params), [({D},)]; got [({D + 1},)]")):
        scanrnn.unroll(cell, params, jnp.ones((T, D), jnp.float32), scanrnn.RNNCarry(jnp.zeros(D + 1, jnp.float32)))
    with pytest.raises(ValueError, match=re.escape("carry must have the dtypes of cell.initial_carry(params), ['float32']; got ['float64']")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros(D, jnp.float64)), x)
    with pytest.raises(ValueError, match=r"carry must have the structure of cell.initial_carry\(params\), .*RNNCarry.*; got .*LSTMCarry"):
        cell.apply(params, scanrnn.LSTMCarry(carry.h, carry.h), x)
    with pytest.raises(ValueError, match=re.escape(f"rg_lru: the projection of one step must be the pair (W x + b, x) of shapes (({2 * D},), ({D},)) (from project), got (({2 * D},),)")):
        cell.step(params, carry, (jnp.zeros(2 * D, jnp.float32),))
    with pytest.raises(ValueError, match="recurrent_dropout > 0 needs recurrent weights"):
        scanrnn.unroll(cell, params, jnp.ones((T, D), jnp.float32), regularization=scanrnn.Regularization(recurrent_dropout=0.5))


# --------------------------------------------------------------------------
# The Hawk block.

W, K, D_MODEL = 4, 3, 3


def block_setup(mode, seed=0, dtype=F64):
    block = hawk(W, conv_width=K, mode=mode, chunk_size=CHUNK, param_dtype=dtype)
    params = random_params(block, D_MODEL, seed=seed, scale=0.7)
    carry = HawkCarry(normal((K - 1, W), seed=seed + 1, dtype=dtype), normal((W,), seed=seed + 2, dtype=dtype))
    return block, params, carry


@pytest.mark.slow
def test_hawk_matches_numpy_in_every_mode():
    """Outputs and final carry against the NumPy loop of the block's equations, in every mode: from a random
    carry with lengths 0, partial and T (vmapped), and from zeros without a length."""
    xs = normal((T, D_MODEL), seed=30)
    blocks = [block_setup(mode, seed=31) for mode in MODES]
    _, params, carry = blocks[0]

    @jax.jit
    def run(params, xs, carry, lengths):
        return [(jax.vmap(lambda n: block.apply(params, xs, n, carry=carry))(lengths), block.apply(params, xs))
                for block, _, _ in blocks]

    zeros = HawkCarry(np.zeros((K - 1, W)), np.zeros(W))
    for (ys, final), from_zeros in run(params, xs, carry, jnp.asarray(LENGTHS)):
        assert type(final) is HawkCarry
        for b, n in enumerate(LENGTHS):
            want_ys, want_carry = numpy_hawk(params, xs, carry.window, carry.h, n)
            assert_close(ys[b], want_ys, rtol=1e-10, atol=1e-12)
            assert_close(jax.tree.map(lambda a: a[b], final), want_carry, rtol=1e-10, atol=1e-12)
        assert_close(from_zeros, numpy_hawk(params, xs, *zeros)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_hawk_two_chunks_equal_one_call():
    """Feeding [0, 7) then [7, T) (the second with a length) equals one call over [0, T) with that length;
    what lies past the length (NaN here) changes neither the outputs, the carry nor the gradients."""
    block, params, carry = block_setup("sequential", seed=40)
    xs = normal((T, D_MODEL), seed=41)
    n = 10  # valid steps in all
    padded = xs.at[n:].set(jnp.nan)

    def whole(params, xs):
        return block.apply(params, xs, n, carry=carry)

    def chunks(params, xs):
        first, mid = block.apply(params, xs[:7], carry=carry)
        second, last = block.apply(params, xs[7:], n - 7, carry=mid)
        return jnp.concatenate([first, second]), last

    def loss(run, params, xs):
        ys, final = run(params, xs)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2) + jnp.sum(final.window**2)

    @jax.jit
    def run(params, xs, padded):
        values = [whole(params, xs), whole(params, padded), chunks(params, padded)]
        grads = [jax.grad(lambda p, x: loss(whole, p, x), argnums=(0, 1))(params, xs),
                 jax.grad(lambda p, x: loss(chunks, p, x), argnums=(0, 1))(params, padded)]
        return values, grads

    (want, *others), grads = run(params, xs, padded)
    for got in others:
        assert_close(got, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(want[0][n:]), 0.0)
    assert_close(want, numpy_hawk(params, xs, carry.window, carry.h, n), rtol=1e-10, atol=1e-12)
    assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(grads[1][1][n:]), 0.0)  # no gradient into the padding


@pytest.mark.slow
def test_hawk_init_and_carry():
    block = hawk(16, conv_width=4)
    params = jax.jit(block.init, static_argnums=1)(jax.random.key(0), 32)
    assert type(params) is HawkParams and type(params.rg_lru) is RGLRUParams
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == HawkParams((32, 32), (32,), (16, 4), (16,), RGLRUParams((32, 16), (32,), (16,)), (32, 16), (32,))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    assert abs(float(np.std(np.asarray(params.w_in))) * math.sqrt(32) - 1) < 0.1  # variance 1 / D_model
    assert abs(float(np.std(np.asarray(params.w_out))) * math.sqrt(16) - 1) < 0.1  # variance 1 / W
    assert abs(float(np.std(np.asarray(params.conv_w))) / math.sqrt(0.01 / 4) - 1) < 0.3  # variance 0.01 / K
    for bias in (params.b_in, params.conv_b, params.b_out, params.rg_lru.b):
        np.testing.assert_array_equal(np.asarray(bias), 0.0)
    base = np.asarray(jax.nn.sigmoid(params.rg_lru.lam))
    assert np.all(base >= 0.9 - 1e-6) and np.all(base <= 0.999 + 1e-6)
    carry = block.initial_carry(params)
    assert type(carry) is HawkCarry and carry.window.shape == (3, 16) and carry.h.shape == (16,)
    assert_close(carry, HawkCarry(np.zeros((3, 16)), np.zeros(16)))
    # One tap: an empty window.
    one = hawk(2, conv_width=1, param_dtype=F64)
    p1 = random_params(one, 2, seed=1)
    ys, final = jax.jit(lambda p, x: one.apply(p, x, carry=one.initial_carry(p)))(p1, normal((5, 2)))
    assert final.window.shape == (0, 2)
    assert_close(ys, numpy_hawk(p1, normal((5, 2)), np.zeros((0, 2)), np.zeros(2))[0], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_hawk_key_and_bad_input():
    block = hawk(W, conv_width=K)
    params = random_params(block, D_MODEL)
    xs = normal((T, D_MODEL), dtype=jnp.float32)
    # A key is checked and ignored: no dropout.
    with_key, without = jax.jit(lambda p, x, k: (block.apply(p, x, key=k), block.apply(p, x)))(params, xs, jax.random.key(1))
    np.testing.assert_array_equal(with_key, without)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        block.apply(params, xs, key=3)
    with pytest.raises(ValueError, match=re.escape("hawk: xs must have shape [T, 3] (input_size from params), got (12, 4)")):
        block.apply(params, jnp.ones((T, 4), jnp.float32))
    with pytest.raises(ValueError, match="hawk needs a sequence"):
        block.apply(params, jnp.ones((D_MODEL,), jnp.float32))
    with pytest.raises(ValueError, match=re.escape("hawk: xs must have the params' dtype float32, got float64")):
        block.apply(params, jnp.ones((T, D_MODEL), jnp.float64))
    with pytest.raises(TypeError, match="xs must hold real numbers"):
        block.apply(params, jnp.ones((T, D_MODEL), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}]")):
        block.apply(params, xs, T + 1)
    with pytest.raises(ValueError, match="hawk expects params of type HawkParams, got tuple"):
        block.apply(tuple(params), xs)
    with pytest.raises(ValueError, match=re.escape("hawk: params.conv_w must have shape (4, 3), got (4, 2)")):
        block.apply(params._replace(conv_w=params.conv_w[:, :2]), xs)
    wider = params._replace(rg_lru=random_params(rg_lru(), W + 1))
    with pytest.raises(ValueError, match=re.escape("hawk: params.rg_lru.w_ih must have shape (8, 4), got (10, 5)")):
        block.apply(wider, xs)
    bad = HawkCarry(jnp.zeros((K, W), jnp.float32), jnp.zeros((W,), jnp.float32))
    with pytest.raises(ValueError, match=re.escape("hawk: carry must be")):
        block.apply(params, xs, carry=bad)
    with pytest.raises(ValueError, match=re.escape("hawk: carry must be")):
        block.apply(params, xs, carry=scanrnn.RNNCarry(jnp.zeros((W,), jnp.float32)))
    with pytest.raises(ValueError, match=re.escape("hawk: carry must have the dtypes")):
        block.apply(params, xs, carry=HawkCarry(jnp.zeros((K - 1, W)), jnp.zeros((W,))))
    for bad_width in (0, 2.0, None):
        with pytest.raises(ValueError, match=re.escape(f"width must be a positive int, got {bad_width!r}")):
            hawk(bad_width)
    with pytest.raises(ValueError, match=re.escape("conv_width must be a positive int, got 0")):
        hawk(4, conv_width=0)
    with pytest.raises(ValueError, match=re.escape("rg_lru: mode must be one of")):
        hawk(4, mode="parallel")
