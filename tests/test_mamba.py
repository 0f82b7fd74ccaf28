"""Mamba's selective SSM and block: NumPy float64 loops of the published equations (Gu and Dao 2023;
state-spaces/mamba's ``selective_scan_ref`` and ``mamba_simple.py``) against every mode, the modes
against each other (values and gradients), finite differences, the parameterisation's invariants,
the published initialisation, the layers and ``fit``, mixed precision and bad input."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import normal, random_params
from scanrnn.mamba import (
    MambaCarry, MambaParams, SelectiveSSMParams, SelectiveSSMStep, inverse_softplus, mamba, selective_ssm,
)
from scanrnn.train import Batch, fit, mse

F64, F32 = jnp.float64, jnp.float32
D, N, T = 3, 4, 8  # the cell: D channels, N states each
CHUNK = 3  # does not divide T
MODES = ("sequential", "associative", "chunked")
LENGTHS = np.array([0, 5, T])  # empty, partial, full
TOL = {F64: dict(rtol=1e-10, atol=1e-10), F32: dict(rtol=1e-5, atol=1e-5)}


def ssm(mode, dtype=F64, **options):
    return selective_ssm(N, mode=mode, chunk_size=CHUNK, param_dtype=dtype, **options)


def close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tol)


# --------------------------------------------------------------------------
# NumPy float64 loops of the published equations, from the param arrays.


def softplus(v):
    return np.logaddexp(0.0, v)


def silu(v):
    return v / (1.0 + np.exp(-v))


def numpy_ssm(params, xs, h):
    """S6 (Algorithm 2; selective_scan_ref with delta_softplus): h = exp(dt A) h + dt B x, y = h C + D x."""
    w_x, w_dt, b_dt, a_log, d_skip = (np.asarray(p, np.float64) for p in params)
    R, n = w_dt.shape[1], a_log.shape[1]
    A = -np.exp(a_log)
    h = np.array(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        proj = w_x @ x
        r, B, C = proj[:R], proj[R : R + n], proj[R + n :]
        dt = softplus(w_dt @ r + b_dt)
        h = np.exp(dt[:, None] * A) * h + (dt * x)[:, None] * B[None, :]
        ys.append(h @ C + d_skip * x)
    return h, np.stack(ys) if ys else np.zeros((0, len(d_skip)))


def numpy_unroll(params, xs, h, length=None, reverse=False):
    """What ``unroll`` should give: the loop over the valid part (reversed), zeros past it."""
    xs = np.asarray(xs, np.float64)
    n = len(xs) if length is None else int(length)
    valid = xs[:n][::-1] if reverse else xs[:n]
    final, ys = numpy_ssm(params, valid, h)
    ys = ys[::-1] if reverse else ys
    return final, np.concatenate([ys, np.zeros((len(xs) - n, ys.shape[1]))])


def numpy_block(params, xs, window, h, length=None):
    """The Mamba block (mamba_simple.py's step, one token at a time) over the first ``length`` steps."""
    w_in, conv_w, conv_b, ssm_params, w_out = params
    w_in, conv_w, conv_b, w_out = (np.asarray(p, np.float64) for p in (w_in, conv_w, conv_b, w_out))
    xs = np.asarray(xs, np.float64)
    window = np.array(window, np.float64)  # [K - 1, E], oldest first
    h = np.array(h, np.float64)
    E, K = conv_w.shape
    n = len(xs) if length is None else int(length)
    out = np.zeros((len(xs), w_out.shape[0]))
    for t in range(n):
        uz = w_in @ xs[t]
        u, z = uz[:E], uz[E:]
        taps = np.concatenate([window, u[None, :]])  # [K, E], the newest last
        v = silu(conv_b + np.sum(conv_w.T * taps, axis=0))
        window = taps[1:]
        h, s = numpy_ssm(ssm_params, v[None, :], h)
        out[t] = w_out @ (s[0] * silu(z))
    return out, window, h


def test_numpy_block_matches_the_convolution_form():
    """The step-by-step reference agrees with a whole-sequence causal convolution (np.convolve per channel)."""
    rng = np.random.default_rng(0)
    E, K, steps = 3, 4, 7
    w, b, u = rng.standard_normal((E, K)), rng.standard_normal(E), rng.standard_normal((steps, E))
    conv = np.stack([np.convolve(u[:, e], w[e, ::-1])[:steps] for e in range(E)], axis=1) + b[None, :]
    window = np.zeros((K - 1, E))
    for t in range(steps):
        taps = np.concatenate([window, u[t][None]])
        np.testing.assert_allclose(b + np.sum(w.T * taps, axis=0), conv[t], rtol=1e-12)
        window = taps[1:]


# --------------------------------------------------------------------------
# The selective SSM: every mode against the NumPy loop and against each other.


def ssm_problem(dtype, seed=0):
    params = random_params(ssm("sequential", dtype), D, seed=seed, scale=0.7)
    B = len(LENGTHS)
    xs = normal((B, T, D), seed=seed + 1, dtype=dtype)
    carries = scanrnn.RNNCarry(normal((B, D, N), seed=seed + 2, dtype=dtype))
    target = normal((B, T, D), seed=seed + 3, dtype=dtype)
    return params, xs, carries, target


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_modes_match_numpy_and_each_other(dtype):
    """Over a vmapped batch with lengths 0, partial and T, random initial carries, reversed: every mode
    equals the NumPy loop of the published equations, and the three modes give the same loss and the
    same gradients (params, carries, inputs) of a loss of the outputs and the final carry. (The forward
    direction of every mode is held against NumPy by the block's test.)"""
    params, xs, carries, target = ssm_problem(dtype)
    cells = [ssm(mode, dtype) for mode in MODES]

    def loss(cell):
        def f(params, carries, xs, lengths):
            final, ys = scanrnn.unroll_batch(cell, params, xs, carries, length=lengths, reverse=True)
            return jnp.sum((ys - target) ** 2) + jnp.sum(jnp.sin(final.h)), (final, ys)

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)

    run = jax.jit(lambda *args: [loss(cell)(*args) for cell in cells])
    results = run(params, carries, xs, jnp.asarray(LENGTHS))
    (want_value, _), want_grads = results[0]
    for mode, ((value, (final, ys)), grads) in zip(MODES, results):
        assert ys.dtype == dtype and final.h.dtype == dtype and type(final) is scanrnn.RNNCarry
        assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
        for b, n in enumerate(LENGTHS):
            want_final, want_ys = numpy_unroll(params, xs[b], carries.h[b], n, reverse=True)
            close(ys[b], want_ys, **TOL[dtype])
            close(final.h[b], want_final, **TOL[dtype])
            np.testing.assert_array_equal(np.asarray(ys[b, n:]), 0.0)  # exact zeros past the length
        np.testing.assert_array_equal(np.asarray(final.h[0]), np.asarray(carries.h[0]))  # length 0 keeps it
        np.testing.assert_array_equal(np.asarray(grads[2][0]), 0.0)  # and its inputs get no gradient
        close(value, want_value, **TOL[dtype])
        close(grads, want_grads, **TOL[dtype])


def test_apply_is_the_published_step():
    """One ``apply`` (= ``step`` of ``project``) is one step of the NumPy loop, from a random state."""
    cell = ssm("sequential")
    params = random_params(cell, D, seed=4, scale=0.7)
    h = normal((D, N), seed=5)
    x = normal((D,), seed=6)
    carry, y = cell.apply(params, scanrnn.RNNCarry(h), x)
    carry2, y2 = cell.step(params, scanrnn.RNNCarry(h), cell.project(params, x))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    want_h, want_y = numpy_ssm(params, x[None], h)
    close(carry.h, want_h, rtol=1e-13, atol=1e-13)
    close(y, want_y[0], rtol=1e-13, atol=1e-13)
    p = cell.project(params, x)
    assert type(p) is SelectiveSSMStep and [leaf.shape for leaf in p] == [(D,), (D,), (N,), (N,)]


def test_zero_steps_in_every_mode():
    for mode in MODES:
        cell = ssm(mode)
        params = random_params(cell, D)
        carry = scanrnn.RNNCarry(normal((D, N), seed=1))
        final, ys = scanrnn.unroll(cell, params, jnp.zeros((0, D), F64), carry)
        assert ys.shape == (0, D)
        np.testing.assert_array_equal(np.asarray(final.h), np.asarray(carry.h))


@pytest.mark.slow
def test_check_grads():
    """Finite differences in float64 (params, carry, inputs), with a length, reversed, in the chunked mode
    (an associative scan inside each chunk and a scan across them; the modes' gradients agree to 1e-10)."""
    cell = selective_ssm(2, mode="chunked", chunk_size=3, param_dtype=F64)
    params = random_params(cell, 2, seed=7, scale=0.7)
    carry = scanrnn.RNNCarry(normal((2, 2), seed=8))
    xs = normal((5, 2), seed=9)

    def f(params, carry, xs):
        return scanrnn.unroll(cell, params, xs, carry, length=4, reverse=True)

    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------
# Invariants and the published initialisation.


@pytest.mark.slow
def test_decay_lies_in_zero_one():
    """``a = exp(Delta A)`` is in (0, 1) and ``Delta > 0`` for random params and inputs; with extreme
    params, where exp underflows, still in [0, 1] and the states finite."""
    cell = ssm("sequential")
    coefficients = jax.jit(jax.vmap(lambda p, x: cell.coefficients(p, cell.project(p, x)), in_axes=(None, 0)))
    for seed, scale in enumerate((0.3, 1.0, 1.5)):
        params = random_params(cell, D, seed=seed, scale=scale)
        xs = normal((64, D), seed=10 + seed) * 3.0
        a, _ = coefficients(params, xs)
        assert np.all(np.asarray(a) > 0) and np.all(np.asarray(a) < 1), (seed, scale)
        delta = jax.vmap(cell.project, in_axes=(None, 0))(params, xs).delta
        assert np.all(np.asarray(delta) > 0)
    params = random_params(cell, D, seed=3, scale=8.0)
    xs = normal((64, D), seed=13) * 10.0
    a, _ = coefficients(params, xs)
    assert np.all(np.asarray(a) >= 0) and np.all(np.asarray(a) <= 1)
    assert (np.asarray(a) == 0).any()  # the extreme case is reached
    _, ys = scanrnn.unroll(cell, params, xs)
    assert np.all(np.isfinite(np.asarray(ys)))


@pytest.mark.slow
def test_initial_step_size_in_range():
    """At zero input Delta = softplus(b_dt) = the drawn dt, in [dt_min, dt_max], spread log-uniformly
    (the defaults and a narrow range; float64 and float32); floored at dt_init_floor."""
    width = 64
    ranges = [(0.001, 0.1, F64), (0.001, 0.1, F32), (0.01, 0.02, F64)]
    cells = [selective_ssm(N, dt_min=lo, dt_max=hi, param_dtype=dtype) for lo, hi, dtype in ranges]
    cells.append(selective_ssm(N, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4, param_dtype=F64))

    @jax.jit
    def deltas(key):
        out = []
        for cell in cells:
            params = cell.init(key, width)
            out.append((params.b_dt, cell.project(params, jnp.zeros(width, params.b_dt.dtype)).delta))
        return out

    results = deltas(jax.random.key(1))
    for (dt_min, dt_max, dtype), (b_dt, delta) in zip(ranges, results):
        tol = 1e-12 if dtype == F64 else 1e-6
        delta = np.asarray(delta, np.float64)
        assert np.all(delta >= dt_min * (1 - tol)) and np.all(delta <= dt_max * (1 + tol))
        logs = (np.log(delta) - math.log(dt_min)) / (math.log(dt_max) - math.log(dt_min))  # U(0, 1)
        assert logs.min() < 0.2 and logs.max() > 0.8 and 0.3 < logs.mean() < 0.7
        np.testing.assert_allclose(softplus(np.asarray(b_dt, np.float64)), delta, rtol=10 * tol)
    np.testing.assert_allclose(np.asarray(results[-1][1]), 1e-4, rtol=1e-10)


def test_inverse_softplus():
    y = jnp.array([1e-4, 1e-3, 0.1, 1.0, 20.0], F64)
    np.testing.assert_allclose(jax.nn.softplus(inverse_softplus(y)), y, rtol=1e-12)


def test_default_init(key):
    """Shapes (R = ceil(D / 16) by default) at several widths, and the published values at one."""
    cell = selective_ssm(N)
    for width, rank in ((3, 1), (16, 1), (17, 2), (64, 4)):
        shapes = jax.eval_shape(lambda k: cell.init(k, width), key)
        assert type(shapes) is SelectiveSSMParams
        assert [p.shape for p in shapes] == [(rank + 2 * N, width), (width, rank), (width,), (width, N), (width,)]
        assert all(p.dtype == F32 for p in shapes)
    assert [p.shape for p in jax.eval_shape(lambda k: selective_ssm(N, dt_rank=5).init(k, 8), key)][:2] == [(5 + 2 * N, 8), (8, 5)]
    assert all(p.dtype == jnp.bfloat16 for p in jax.eval_shape(lambda k: selective_ssm(N, param_dtype=jnp.bfloat16).init(k, 8), key))
    width, rank = 64, 4
    params = jax.jit(lambda k: cell.init(k, width))(key)
    np.testing.assert_allclose(np.asarray(params.a_log), np.log(np.arange(1, N + 1))[None, :].repeat(width, 0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(params.d_skip), 1.0)
    for w, limit in ((params.w_x, width**-0.5), (params.w_dt, rank**-0.5)):
        w = np.abs(np.asarray(w))
        assert w.max() <= limit and w.max() > 0.5 * limit
    carry = cell.initial_carry(params)
    assert type(carry) is scanrnn.RNNCarry and carry.h.shape == (width, N) and carry.h.dtype == F32
    np.testing.assert_array_equal(np.asarray(carry.h), 0.0)


def test_no_log_form():
    """b = (Delta x) B takes both signs, so the cell gives no log-space coefficients."""
    assert ssm("associative").log_coefficients is None


# --------------------------------------------------------------------------
# In layers and under the transformations.


@pytest.mark.slow
def test_jit_vmap_and_bidirectional():
    """unroll_batch under jit equals a loop of unroll; bidirectional equals a forward and a reversed unroll."""
    cell = ssm("chunked")
    params = random_params(cell, D, seed=20, scale=0.7)
    xs = normal((3, T, D), seed=21)
    lengths = jnp.array([T, 4, 0])
    _, ys = jax.jit(lambda p, x, n: scanrnn.unroll_batch(cell, p, x, length=n))(params, xs, lengths)
    for b in range(3):
        close(ys[b], numpy_unroll(params, xs[b], np.zeros((D, N)), int(lengths[b]))[1], rtol=1e-10, atol=1e-10)
    layer = scanrnn.bidirectional(cell)
    both = random_params(layer, D, seed=22, scale=0.7)  # two directions stacked
    got = jax.jit(lambda p, x: layer.apply(p, x, length=7))(both, xs[0])
    assert got.shape == (T, 2 * D)
    forward, backward = (jax.tree.map(lambda a, d=d: a[d], both) for d in (0, 1))
    close(got[:, :D], numpy_unroll(forward, xs[0], np.zeros((D, N)), 7)[1], rtol=1e-10, atol=1e-10)
    close(got[:, D:], numpy_unroll(backward, xs[0], np.zeros((D, N)), 7, reverse=True)[1], rtol=1e-10, atol=1e-10)


def regression_data(width, steps=8, count=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, steps, width)).astype(np.float32)
    y = np.cumsum(x[:, :, :1], axis=1).astype(np.float32) * 0.3  # a running sum: needs the state
    return Batch(x[:16], y[:16]), Batch(x[16:], y[16:])


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
@pytest.mark.parametrize("which", ["cell", "block"])
def test_fit_lowers_the_loss(which):
    """serial(recurrent(selective_ssm), dense(1)) and serial(mamba(), dense(1)): a short fit lowers the loss."""
    if which == "cell":
        model = scanrnn.serial(scanrnn.recurrent(selective_ssm(4, mode="chunked", chunk_size=3)), scanrnn.dense(1))
        width = 2
    else:
        model = scanrnn.serial(mamba(state_size=2, expand=1), scanrnn.dense(1))
        width = 2
    train, valid = regression_data(width)
    params = model.init(jax.random.key(0), width)
    _, history = fit(model, params, optax.adam(2e-2), mse, train, valid, epochs=4, batch_size=8, seed=0)
    losses = history["valid_loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.95 * losses[0], losses


# --------------------------------------------------------------------------
# Mixed precision.


@pytest.mark.slow
def test_bfloat16_products_stay_close_to_float32():
    cell32 = ssm("sequential", F32)
    cell16 = ssm("sequential", F32, compute_dtype=jnp.bfloat16)
    params = random_params(cell32, D, seed=30, scale=0.7)
    xs = normal((T, D), seed=31, dtype=F32)
    run = jax.jit(lambda p, x: [scanrnn.unroll(c, p, x) for c in (cell32, cell16)])
    (f32, y32), (f16, y16) = run(params, xs)
    assert y16.dtype == F32 and f16.h.dtype == F32
    scale = float(np.abs(np.asarray(y32)).max())
    close(y16, y32, rtol=0, atol=3e-2 * scale)
    assert not np.array_equal(np.asarray(y16), np.asarray(y32))  # the products did run in bfloat16
    block32, block16 = mamba(state_size=N), mamba(state_size=N, compute_dtype=jnp.bfloat16)
    bparams = random_params(block32, 4, seed=33)
    bxs = normal((T, 4), seed=32, dtype=F32)
    z32, z16 = jax.jit(lambda p, x: [b.apply(p, x) for b in (block32, block16)])(bparams, bxs)
    assert z16.dtype == F32
    close(z16, z32, rtol=0, atol=3e-2 * float(np.abs(np.asarray(z32)).max()))


# --------------------------------------------------------------------------
# The block.

M, K = 3, 4  # model width and convolution taps; E = 2 M


def block_problem(mode, seed=40):
    block = mamba(state_size=N, conv_width=K, mode=mode, chunk_size=CHUNK, param_dtype=F64)
    params = random_params(block, M, seed=seed, scale=0.6)  # random, not the initial params
    carry = MambaCarry(normal((K - 1, 2 * M), seed=seed + 1), normal((2 * M, N), seed=seed + 2))
    xs = normal((T, M), seed=seed + 3)
    return block, params, carry, xs


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_block_matches_numpy_and_chunks(mode):
    """The block equals the NumPy loop of the published block (from a random carry, with and without a
    length); two chunks fed one after the other equal one call; padding past the length affects nothing."""
    block, params, carry, xs = block_problem(mode)
    padded = xs.at[6:].set(jnp.nan)
    remat = mamba(state_size=N, conv_width=K, mode=mode, chunk_size=CHUNK, param_dtype=F64,
                  execution=scanrnn.Execution(remat="sqrt", unroll=2))

    @jax.jit
    def run(params, carry, xs, padded, key):
        whole = block.apply(params, xs, carry=carry)
        # Chunks of 0, 1 (shorter than the window), 4 and 3 steps.
        empty = block.apply(params, xs[:0], carry=carry)
        one = block.apply(params, xs[:1], carry=empty[1])
        first = block.apply(params, xs[1:5], carry=one[1])
        second = block.apply(params, xs[5:], carry=first[1])
        masked = block.apply(params, padded, length=6, carry=carry, key=key)  # no dropout: the key is ignored
        fresh = block.apply(params, xs, length=jnp.asarray(6))
        return whole, (empty, one, first, second), masked, fresh, remat.apply(params, xs, carry=carry)

    whole, chunks, masked, fresh, rematerialised = run(params, carry, xs, padded, jax.random.key(0))
    assert type(whole[1]) is MambaCarry
    close(rematerialised, whole, rtol=1e-12, atol=1e-12)
    want_ys, want_window, want_h = numpy_block(params, xs, carry.window, carry.h)
    close(whole[0], want_ys, rtol=1e-10, atol=1e-10)
    close(whole[1], (want_window, want_h), rtol=1e-10, atol=1e-10)
    close(chunks[0][1], carry, rtol=0, atol=0)
    close(jnp.concatenate([ys for ys, _ in chunks]), whole[0], rtol=1e-10, atol=1e-10)
    close(chunks[-1][1], whole[1], rtol=1e-10, atol=1e-10)
    want_ys, want_window, want_h = numpy_block(params, xs, carry.window, carry.h, length=6)
    close(masked[0], want_ys, rtol=1e-10, atol=1e-10)
    close(masked[1], (want_window, want_h), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(masked[0][6:]), 0.0)
    zeros = (np.zeros((K - 1, 2 * M)), np.zeros((2 * M, N)))
    close(fresh, numpy_block(params, xs, *zeros, length=6)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_block_padding_gets_no_gradient():
    block, params, carry, xs = block_problem("chunked", seed=50)

    def loss(params, xs):
        ys, final = block.apply(params, xs, length=6, carry=carry)
        return jnp.sum(ys**2) + jnp.sum(final.h) + jnp.sum(final.window)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs.at[6:].set(jnp.inf))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(np.asarray(grads[1][6:]), 0.0)
    assert np.abs(np.asarray(grads[1][:6])).min() > 0


@pytest.mark.slow
def test_block_check_grads():
    """Finite differences in float64 through a tiny block (params, carry, inputs), with a length."""
    block = mamba(state_size=2, conv_width=3, mode="sequential", param_dtype=F64)
    params = random_params(block, 2, seed=60, scale=0.6)
    carry = MambaCarry(normal((2, 4), seed=61), normal((4, 2), seed=62))
    xs = normal((4, 2), seed=63)

    def f(params, carry, xs):
        return block.apply(params, xs, length=3, carry=carry)

    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_block_init():
    block = mamba(state_size=N, conv_width=K)
    params = jax.jit(lambda k: block.init(k, 32))(jax.random.key(0))
    E = 64
    assert type(params) is MambaParams
    assert (params.in_proj.shape, params.conv_w.shape, params.conv_b.shape, params.out_proj.shape) == (
        (2 * E, 32), (E, K), (E,), (32, E))
    assert params.ssm.w_dt.shape == (E, 2) and params.ssm.w_x.shape == (2 + 2 * N, E)  # R = ceil(32 / 16)
    for w, limit in ((params.in_proj, 32**-0.5), (params.out_proj, E**-0.5), (params.conv_w, K**-0.5),
                     (params.conv_b, K**-0.5)):
        w = np.abs(np.asarray(w))
        assert w.max() <= limit and w.max() > 0.5 * limit
    carry = block.initial_carry(params)
    assert carry.window.shape == (K - 1, E) and carry.h.shape == (E, N)
    assert all(np.all(np.asarray(c) == 0) and c.dtype == F32 for c in carry)
    assert jax.eval_shape(lambda k: mamba(dt_rank=3).init(k, 4), jax.random.key(0)).ssm.w_dt.shape == (8, 3)
    narrow = mamba(conv_width=1)
    assert jax.eval_shape(lambda k: narrow.initial_carry(narrow.init(k, 2)), jax.random.key(0)).window.shape == (0, 4)


# --------------------------------------------------------------------------
# Bad input.


def test_bad_factory_arguments():
    for factory in (selective_ssm, lambda **kw: mamba(**kw)):
        with pytest.raises(ValueError, match=re.escape("mode must be one of ['sequential', 'associative', 'chunked'], got 'fast'")):
            factory(mode="fast")
        for size in (0, 2.5, True):
            with pytest.raises(ValueError, match=re.escape(f"state_size must be a positive int, got {size!r}")):
                factory(state_size=size)
        with pytest.raises(ValueError, match=re.escape("dt_rank must be a positive int, got 0")):
            factory(dt_rank=0)
        with pytest.raises(ValueError, match=re.escape("chunk_size must be a positive int, got 0")):
            factory(chunk_size=0)
        with pytest.raises(TypeError, match="compute_dtype must be None or a floating dtype"):
            factory(compute_dtype=jnp.int32)
    with pytest.raises(ValueError, match=re.escape("dt_min must be at most dt_max, got dt_min=0.1 and dt_max=0.01")):
        selective_ssm(dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match=re.escape("dt_min must be a positive finite number, got 0")):
        selective_ssm(dt_min=0)
    with pytest.raises(ValueError, match=re.escape("dt_init_floor must be a non-negative finite number, got -1")):
        selective_ssm(dt_init_floor=-1)
    with pytest.raises(ValueError, match=re.escape("conv_width must be a positive int, got 0")):
        mamba(conv_width=0)
    with pytest.raises(ValueError, match=re.escape("expand must be a positive int, got 1.5")):
        mamba(expand=1.5)
    with pytest.raises(ValueError, match=re.escape("input_size must be a positive int, got 0")):
        selective_ssm().init(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        mamba().init(0, 4)
    with pytest.raises(TypeError, match="execution must be a scanrnn.Execution"):
        mamba(execution={"remat": "sqrt"})


def test_bad_cell_params_inputs_and_carries():
    cell = ssm("sequential", F32)
    params = random_params(cell, D)
    carry = cell.initial_carry(params)
    x = normal((D,), dtype=F32)
    with pytest.raises(ValueError, match="selective_ssm expects params of type SelectiveSSMParams, got tuple"):
        cell.apply(tuple(params), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"selective_ssm: params.a_log must have shape ({D}, {N}) (D={D}, N={N}, R=1), got ({D}, {N + 1})")):
        cell.apply(params._replace(a_log=jnp.zeros((D, N + 1), F32)), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"selective_ssm: params.w_x must have shape ({1 + 2 * N}, {D})")):
        cell.apply(params._replace(w_x=params.w_x[1:]), carry, x)
    with pytest.raises(ValueError, match=re.escape("selective_ssm: params must share one floating dtype")):
        cell.apply(params._replace(d_skip=params.d_skip.astype(F64)), carry, x)
    with pytest.raises(ValueError, match=re.escape("selective_ssm: params must share one floating dtype, got ['int32']")):
        cell.apply(SelectiveSSMParams(*(p.astype(jnp.int32) for p in params)), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"selective_ssm: x must have shape ({D},)")):
        cell.apply(params, carry, jnp.ones((D + 1,), F32))
    with pytest.raises(ValueError, match=re.escape("selective_ssm: x must have the params' dtype float32, got float64")):
        cell.apply(params, carry, jnp.ones((D,), F64))
    with pytest.raises(ValueError, match=re.escape(f"carry must have the shapes of cell.initial_carry(params), [({D}, {N})]; got [({D},)]")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros((D,), F32)), x)
    with pytest.raises(ValueError, match=re.escape("carry must have the dtypes of cell.initial_carry(params), ['float32']; got ['complex64']")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros((D, N), jnp.complex64)), x)
    with pytest.raises(ValueError, match=r"carry must have the structure of cell.initial_carry\(params\)"):
        cell.apply(params, scanrnn.LSTMCarry(carry.h, carry.h), x)
    with pytest.raises(ValueError, match=re.escape("xs must hold real numbers (floating or integer), got dtype complex64")):
        scanrnn.unroll(cell, params, jnp.ones((T, D), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape("selective_ssm: the projection of one step must be a SelectiveSSMStep of shapes")):
        cell.step(params, carry, jnp.zeros((2 * D + 2 * N,), F32))
    p = cell.project(params, x)
    with pytest.raises(ValueError, match=re.escape(f"got (({D},), ({D},), ({N},), ({N - 1},))")):
        cell.step(params, carry, p._replace(c=p.c[1:]))


def test_bad_block_params_inputs_and_carries():
    block = mamba(state_size=N, conv_width=K)
    params = random_params(block, M)
    carry = block.initial_carry(params)
    xs = normal((T, M), dtype=F32)
    with pytest.raises(ValueError, match="mamba expects params of type MambaParams, got tuple"):
        block.apply(tuple(params), xs)
    with pytest.raises(ValueError, match=re.escape(f"mamba: params.conv_w must have shape ({2 * M}, {K}) (M={M}, E={2 * M}, K={K}), got ({2 * M}, {K + 1})")):
        block.apply(params._replace(conv_w=jnp.zeros((2 * M, K + 1), F32)), xs)
    with pytest.raises(ValueError, match=re.escape("mamba: params must share one floating dtype, got ['float32', 'float64']")):
        block.apply(params._replace(conv_b=params.conv_b.astype(F64)), xs)
    with pytest.raises(ValueError, match=re.escape("mamba: params.ssm: params.b_dt must have shape")):
        block.apply(params._replace(ssm=params.ssm._replace(b_dt=params.ssm.b_dt[1:])), xs)
    with pytest.raises(ValueError, match=re.escape(f"mamba: xs must have shape [T, {M}] (input_size from params), got ({T}, {M + 1})")):
        block.apply(params, jnp.ones((T, M + 1), F32))
    with pytest.raises(ValueError, match=re.escape("mamba: xs must have the params' dtype float32, got float64")):
        block.apply(params, jnp.ones((T, M), F64))
    with pytest.raises(ValueError, match=re.escape("xs must hold real numbers")):
        block.apply(params, jnp.ones((T, M), jnp.complex64))
    with pytest.raises(ValueError, match=re.escape("xs must have shape [T, input_size]")):
        block.apply(params, jnp.ones((M,), F32))
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}]")):
        block.apply(params, xs, length=T + 1)
    with pytest.raises(ValueError, match=re.escape(f"mamba: carry must be PyTreeDef(CustomNode(namedtuple[MambaCarry], [*, *])) with shapes [({K - 1}, {2 * M}), ({2 * M}, {N})] (the layer's initial_carry), got")):
        block.apply(params, xs, carry=carry._replace(window=jnp.zeros((K, 2 * M), F32)))
    with pytest.raises(ValueError, match=re.escape("mamba: carry must have the dtypes ['float32', 'float32']")):
        block.apply(params, xs, carry=carry._replace(h=carry.h.astype(F64)))
    with pytest.raises(ValueError, match="mamba: carry must be"):
        block.apply(params, xs, carry=scanrnn.RNNCarry(carry.h))
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        block.apply(params, xs, key=1)
