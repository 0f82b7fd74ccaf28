"""minGRU and minLSTM: the sequential mode against NumPy loops of the paper's
equations, the parallel (log-space associative scan) mode against the
sequential one, their gradients, and bad input."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import scanrnn
from helpers import count_primitive, normal, random_params
from scanrnn.linear_scans import evaluate
from scanrnn.linear_cells import MinGRUParams, MinLSTMParams, g, log_g, min_gru, min_lstm

H, I, T = 4, 3, 5  # a short T: the compile time of the associative scan grows with log T
CELLS = [("min_gru", min_gru, 2), ("min_lstm", min_lstm, 3)]
CELL_IDS = [c[0] for c in CELLS]
TOL = {jnp.float64: dict(rtol=1e-12, atol=1e-12), jnp.float32: dict(rtol=1e-5, atol=1e-5)}
# Lengths of the batch rows: empty, partial, full.
LENGTHS = np.array([0, 2, T])


# --------------------------------------------------------------------------
# NumPy loops of the paper's equations (Feng et al. 2024), in linear space.


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _g(v):
    return np.where(v >= 0, v + 0.5, _sigmoid(v))


def numpy_min_gru(params, xs, h):
    w, b = (np.asarray(a, np.float64) for a in params)
    h = np.asarray(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        pre = w @ x + b
        z = _sigmoid(pre[:H])
        h_tilde = _g(pre[H:])
        h = (1.0 - z) * h + z * h_tilde
        ys.append(h)
    return h, np.stack(ys)


def numpy_min_lstm(params, xs, h):
    w, b = (np.asarray(a, np.float64) for a in params)
    h = np.asarray(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        pre = w @ x + b
        f, i = _sigmoid(pre[:H]), _sigmoid(pre[H : 2 * H])
        h_tilde = _g(pre[2 * H :])
        h = f / (f + i) * h + i / (f + i) * h_tilde
        ys.append(h)
    return h, np.stack(ys)


NUMPY = {"min_gru": numpy_min_gru, "min_lstm": numpy_min_lstm}


def signed_carry(seed, dtype):
    """An initial carry with entries of both signs (the log-space form must not need h0 > 0)."""
    h = normal((H,), seed=seed, dtype=dtype)
    h = h.at[0].set(-abs(h[0]) - 0.5).at[1].set(abs(h[1]) + 0.5)
    return scanrnn.RNNCarry(h)


def both_modes(factory, dtype):
    return factory(H, mode="associative", param_dtype=dtype), factory(H, mode="sequential", param_dtype=dtype)


def _close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tol)


def numpy_unroll(name, params, xs, h, length=None, reverse=False):
    """What ``unroll`` should give, from the NumPy loop over the valid part."""
    xs = np.asarray(xs, np.float64)
    n = len(xs) if length is None else int(length)
    valid = xs[:n][::-1] if reverse else xs[:n]
    final, ys = NUMPY[name](params, valid, h) if n else (np.asarray(h, np.float64), np.zeros((0, H)))
    ys = ys[::-1] if reverse else ys
    return final, np.concatenate([ys, np.zeros((len(xs) - n, H))])


# --------------------------------------------------------------------------
# Both modes against the paper's equations and against each other.


@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_apply_is_step_of_project(name, factory, gates):
    cell = factory(H, mode="sequential", param_dtype=jnp.float64)
    params = random_params(cell, I, seed=1, scale=1.0)
    carry = signed_carry(2, jnp.float64)
    x = normal((I,), seed=3)
    c1, y1 = cell.apply(params, carry, x)
    c2, y2 = cell.step(params, carry, cell.project(params, x))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(c1.h, c2.h)
    np.testing.assert_allclose(y1, NUMPY[name](params, x[None], carry.h)[1][0], rtol=1e-14)
    # The new state depends on the carry and, through project, on x.
    assert not np.allclose(y1, cell.apply(params, cell.initial_carry(params), x)[1])
    assert not np.allclose(cell.project(params, x), cell.project(params, x + 1.0))


@pytest.mark.slow
def test_g_and_log_g():
    v = jnp.array([-30.0, -2.0, -1e-3, 0.0, 1e-3, 2.0, 30.0], jnp.float64)
    np.testing.assert_allclose(g(v), _g(np.asarray(v)), rtol=1e-15)
    np.testing.assert_allclose(log_g(v), np.log(_g(np.asarray(v))), rtol=1e-14)
    assert np.all(np.asarray(g(v)) > 0)
    # Finite gradients on both branches (the unused branch of the where stays finite).
    grads = jax.vmap(jax.grad(log_g))(v)
    assert np.all(np.isfinite(np.asarray(grads)))


# (length?, reverse?, initial carry?) of the unroll_batch calls compared; float32 runs fewer.
VARIANTS = {
    jnp.float64: [(True, True, True), (True, False, True), (False, False, False)],
    jnp.float32: [(True, True, True), (False, True, True)],
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_modes_match_numpy_and_each_other(name, factory, gates, dtype):
    """Over a vmapped batch with lengths 0, partial and full, signed initial carries, both directions:
    the sequential mode equals the NumPy loop of the paper's equations, and the parallel mode
    equals the sequential one."""
    parallel, sequential = both_modes(factory, dtype)
    params = random_params(parallel, I, seed=4, scale=1.0)
    B = len(LENGTHS)
    xs = normal((B, T, I), seed=5, dtype=dtype)
    carries = scanrnn.RNNCarry(jnp.stack([signed_carry(6 + b, dtype).h for b in range(B)]))
    # The data reaches both branches of g.
    pre = np.asarray(jax.vmap(parallel.project, in_axes=(None, 0))(params, xs[0]))
    assert (pre[:, -H:] > 0).any() and (pre[:, -H:] < 0).any()
    variants = VARIANTS[dtype]

    @jax.jit
    def run(xs, carries, lengths):
        return [
            [
                scanrnn.unroll_batch(
                    cell, params, xs, carries if with_carry else None,
                    length=lengths if with_length else None, reverse=reverse,
                )
                for with_length, reverse, with_carry in variants
            ]
            for cell in (parallel, sequential)
        ]

    fast, slow = run(xs, carries, jnp.asarray(LENGTHS))
    for (with_length, reverse, with_carry), got, want in zip(variants, fast, slow):
        assert got[1].dtype == dtype and type(got[0]) is scanrnn.RNNCarry
        _close(got, want, **TOL[dtype])
        for b in range(B):
            h0 = carries.h[b] if with_carry else np.zeros(H)
            n = LENGTHS[b] if with_length else None
            final, ys = numpy_unroll(name, params, xs[b], h0, n, reverse)
            _close(want[0].h[b], final, **TOL[dtype])
            _close(want[1][b], ys, **TOL[dtype])
            if with_length:  # exact zeros past the length, the initial carry kept at length 0
                np.testing.assert_array_equal(np.asarray(got[1][b, LENGTHS[b] :]), 0.0)
        if with_length and with_carry:
            np.testing.assert_array_equal(np.asarray(got[0].h[0]), np.asarray(carries.h[0]))


@pytest.mark.slow
def test_parallel_is_stable_on_long_sequences():
    """float32, 300 steps, saturated gates (where the log of a rounded sigmoid would be -inf):
    both cells stay finite and equal the float64 NumPy loop."""
    cells = [factory(H, param_dtype=jnp.float32) for _, factory, _ in CELLS]
    params = [random_params(cell, I, seed=7, scale=3.0) for cell in cells]
    xs = normal((300, I), seed=8, dtype=jnp.float32)
    carry = signed_carry(9, jnp.float32)
    run = jax.jit(lambda params, c, xs: [scanrnn.unroll(cell, p, xs, c) for cell, p in zip(cells, params)])
    for (name, _, _), p, (final, ys) in zip(CELLS, params, run(params, carry, xs)):
        assert np.all(np.isfinite(np.asarray(ys)))
        expected_final, expected_ys = NUMPY[name](p, xs, carry.h)
        _close(ys, expected_ys, rtol=1e-5, atol=1e-5)
        _close(final.h, expected_final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_parallel_mode_has_no_time_loop(name, factory, gates):
    parallel, sequential = both_modes(factory, jnp.float64)
    params = random_params(parallel, I)
    xs = normal((T, I))
    for cell, expected in ((parallel, (0, 0)), (sequential, (1, 0))):
        jaxpr = jax.make_jaxpr(lambda p, x: scanrnn.unroll(cell, p, x, length=3))(params, xs)
        assert count_primitive(jaxpr, "scan") == expected
    assert (parallel.mode, sequential.mode) == ("associative", "sequential")


def test_parallel_on_zero_steps():
    cell = min_gru(H, param_dtype=jnp.float64)
    params = random_params(cell, I)
    carry = signed_carry(0, jnp.float64)
    final, ys = scanrnn.unroll(cell, params, jnp.zeros((0, I), jnp.float64), carry)
    assert ys.shape == (0, H)
    np.testing.assert_array_equal(final.h, carry.h)


# --------------------------------------------------------------------------
# Gradients.


@pytest.mark.slow
@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_parallel_gradients_equal_sequential(name, factory, gates):
    """d(loss)/d(params, carries, xs) of both modes, float64, reversed, lengths 0, partial and full."""
    parallel, sequential = both_modes(factory, jnp.float64)
    params = random_params(parallel, I, seed=10, scale=1.0)
    B = len(LENGTHS)
    xs = normal((B, T, I), seed=11)
    carries = scanrnn.RNNCarry(jnp.stack([signed_carry(12 + b, jnp.float64).h for b in range(B)]))
    target = normal((B, T, H), seed=13)

    def loss(cell):
        def f(params, carries, xs, lengths):
            final, ys = scanrnn.unroll_batch(cell, params, xs, carries, length=lengths, reverse=True)
            return jnp.sum((ys - target) ** 2) + jnp.sum(jnp.sin(final.h))

        return jax.grad(f, argnums=(0, 1, 2))

    grads = jax.jit(lambda *args: [loss(cell)(*args) for cell in (parallel, sequential)])
    got, want = grads(params, carries, xs, jnp.asarray(LENGTHS))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(got))
    _close(got, want, rtol=1e-8, atol=1e-8)
    # A row of length 0: no gradient through its inputs, and the carry passes through unchanged.
    np.testing.assert_array_equal(np.asarray(got[2][0]), 0.0)
    np.testing.assert_allclose(got[1].h[0], np.cos(carries.h[0]), rtol=1e-12)


@pytest.mark.slow
def test_parallel_check_grads():
    """Finite differences in float64 through the log-space scan of both cells, with a length, reversed."""
    cells = [factory(H, param_dtype=jnp.float64) for _, factory, _ in CELLS]
    params = [random_params(cell, I, seed=14 + k) for k, cell in enumerate(cells)]
    carry = signed_carry(16, jnp.float64)
    xs = normal((T, I), seed=17)

    def f(params, carry, xs):
        return [scanrnn.unroll(cell, p, xs, carry, length=3, reverse=True) for cell, p in zip(cells, params)]

    check_grads(jax.jit(f), (params, carry, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_in_serial_and_bidirectional_layers():
    """serial(recurrent(min_gru), bidirectional(min_lstm), dense), many-to-one over a padded batch:
    the parallel-mode model equals the sequential-mode model."""

    def model(mode):
        return scanrnn.serial(
            scanrnn.recurrent(min_gru(8, mode=mode, param_dtype=jnp.float64)),
            scanrnn.bidirectional(min_lstm(5, mode=mode, param_dtype=jnp.float64), return_sequences=False),
            scanrnn.dense(2, param_dtype=jnp.float64),
        )

    fast, slow = model("associative"), model("sequential")
    params = fast.init(jax.random.key(0), I)
    params = jax.tree.map(lambda a: a + 0.3 * normal(a.shape, seed=a.size), params)  # non-zero biases
    xs = normal((3, T, I), seed=17)
    lengths = jnp.array([T, 3, 1])
    padded = xs.at[1, 3:].set(100.0).at[2, 1:].set(-100.0)
    run = jax.jit(lambda p, xs, padded, n: [
        jax.vmap(fast.apply, in_axes=(None, 0, 0))(p, xs, n), jax.vmap(slow.apply, in_axes=(None, 0, 0))(p, padded, n)
    ])
    got, want = run(params, xs, padded, lengths)
    assert got.shape == (3, 2)
    # Equal, and the padding past each length changes nothing.
    _close(got, want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Initialisers.


@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_default_init(name, factory, gates, key):
    cell = factory(H)
    params = cell.init(key, I)
    assert type(params) is {"min_gru": MinGRUParams, "min_lstm": MinLSTMParams}[name]
    assert params.w_ih.shape == (gates * H, I) and params.b.shape == (gates * H,)
    assert all(leaf.dtype == jnp.float32 for leaf in params)
    limit = math.sqrt(6.0 / (I + gates * H))  # Glorot-uniform over the stacked [G*H, I] kernel
    w = np.asarray(params.w_ih)
    assert np.all(np.abs(w) <= limit) and np.abs(w).max() > 0.5 * limit
    np.testing.assert_array_equal(np.asarray(params.b), 0.0)
    carry = cell.initial_carry(params)
    assert type(carry) is scanrnn.RNNCarry and carry.h.shape == (H,) and carry.h.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(carry.h), 0.0)
    wide = factory(H, param_dtype=jnp.float64).init(key, I)
    assert all(leaf.dtype == jnp.float64 for leaf in wide)


# --------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_bad_arguments(name, factory, gates):
    with pytest.raises(ValueError, match=re.escape(f"{name}: mode must be one of ['sequential', 'associative', 'chunked'], got 'fast'")):
        factory(H, mode="fast")
    for size in (0, 2.5, True, None):
        with pytest.raises(ValueError, match=re.escape(f"hidden_size must be a positive int, got {size!r}")):
            factory(size)
    with pytest.raises(ValueError, match=re.escape("input_size must be a positive int, got 0")):
        factory(H).init(jax.random.key(0), 0)


@pytest.mark.parametrize("name,factory,gates", CELLS, ids=CELL_IDS)
def test_bad_params_inputs_and_carries(name, factory, gates):
    cell = factory(H, param_dtype=jnp.float32)
    params = random_params(cell, I)
    carry = cell.initial_carry(params)
    x = normal((I,), dtype=jnp.float32)
    other = {"min_gru": MinLSTMParams, "min_lstm": MinGRUParams}[name]
    with pytest.raises(ValueError, match=f"{name} expects params of type {type(params).__name__}, got {other.__name__}"):
        cell.apply(other(*params), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: params.b must have shape ({gates * H},), got ({H},)")):
        cell.apply(params._replace(b=params.b[:H]), carry, x)
    with pytest.raises(ValueError, match=re.escape(f"{name}: x must have shape ({I},)")):
        cell.apply(params, carry, jnp.ones((I + 1,), jnp.float32))
    with pytest.raises(ValueError, match=re.escape(f"{name}: x must have the params' dtype float32, got float64")):
        cell.apply(params, carry, jnp.ones((I,), jnp.float64))
    with pytest.raises(ValueError, match=re.escape(f"carry must have the shapes of cell.initial_carry(params), [({H},)]; got [({H + 1},)]")):
        cell.apply(params, scanrnn.RNNCarry(jnp.zeros((H + 1,), jnp.float32)), x)
    with pytest.raises(ValueError, match=r"carry must have the structure of cell.initial_carry\(params\), .*RNNCarry.*; got .*LSTMCarry"):
        cell.apply(params, scanrnn.LSTMCarry(carry.h, carry.h), x)
    ps = jnp.zeros((T, gates * H), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(f"{name}: the projection of one step must have shape ({gates * H},) (from project), got ({H},)")):
        evaluate(cell._replace(mode="associative"), params, carry, ps[:, :H], None)
    with pytest.raises(ValueError, match=re.escape(f"{name}: the projection of one step must have shape ({gates * H},) (from project), got ({T}, {gates * H})")):
        cell.step(params, carry, ps)
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}]")):
        evaluate(cell._replace(mode="chunked"), params, carry, ps, T + 1)
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {T}]")):
        scanrnn.unroll(cell, params, jnp.zeros((T, I), jnp.float32), length=-1)
