"""Layers and models: recurrent, bidirectional, dense, serial, last_valid."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import scanrnn
from helpers import (
    assert_close,
    assert_zero,
    count_primitive,
    counting_cell,
    counting_numpy,
    elman,
    elman_numpy,
    masked_loop,
    normal,
    random_params,
)
from scanrnn import DenseParams, bidirectional, dense, last_valid, recurrent, serial

H, I, T = 5, 3, 6
F64 = jnp.float64


def stacked_params(cell, seeds=(1, 2)):
    """Bidirectional params: two independent draws stacked on a leading axis."""
    fwd, bwd = (random_params(cell, I, seed=s) for s in seeds)
    return jax.tree.map(lambda a, b: jnp.stack([a, b]), fwd, bwd)


def direction(params, d):
    return jax.tree.map(lambda a: a[d], params)


# --------------------------------------------------------------------------
# last_valid.


def test_last_valid_literal_values():
    ys = jnp.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(last_valid(ys), [10, 11])
    np.testing.assert_array_equal(last_valid(ys, 3), [4, 5])
    np.testing.assert_array_equal(last_valid(ys, jnp.array(6)), [10, 11])
    np.testing.assert_array_equal(last_valid(ys, 1), [0, 1])
    np.testing.assert_array_equal(last_valid(ys, 0), [0, 0])
    got = jax.jit(jax.vmap(last_valid, in_axes=(None, 0)))(ys, jnp.array([0, 2, 6]))
    np.testing.assert_array_equal(got, [[0, 0], [2, 3], [10, 11]])


# --------------------------------------------------------------------------
# recurrent.


@pytest.mark.slow
def test_recurrent_return_sequences():
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = random_params(cell, I)
    xs = normal((T, I), seed=1)
    seq = recurrent(cell)
    last = recurrent(cell, return_sequences=False)
    assert seq.init is cell.init

    ys = seq.apply(params, xs, length=4)
    assert_close(ys, masked_loop(cell, params, xs, 4)[1])
    # Many-to-one: the output at the last valid step, not at step T - 1.
    y = last.apply(params, xs, length=4)
    assert y.shape == (H,)
    assert_close(y, ys[3])
    assert not np.allclose(y, masked_loop(cell, params, xs, T)[1][-1])
    assert_close(last.apply(params, xs), scanrnn.unroll(cell, params, xs)[1][-1])
    assert_zero(last.apply(params, xs, length=0))
    # Traced length: one program for all lengths, per-example under vmap.
    lengths = jnp.array([1, 4, T])
    batch = jnp.stack([xs, xs, xs])
    got = jax.jit(jax.vmap(last.apply, in_axes=(None, 0, 0)))(params, batch, lengths)
    for b, n in enumerate([1, 4, T]):
        assert_close(got[b], masked_loop(cell, params, xs, n)[1][n - 1])


# --------------------------------------------------------------------------
# bidirectional.

MERGES = {"concat": lambda a, b: np.concatenate([a, b], -1), "sum": np.add, "mean": lambda a, b: (a + b) / 2, "mul": np.multiply}


@pytest.mark.slow
@pytest.mark.parametrize("merge", sorted(MERGES))
@pytest.mark.parametrize("length", [None, 4])
def test_bidirectional_matches_two_unrolls(merge, length):
    cell = scanrnn.gru(H, param_dtype=F64)
    params = stacked_params(cell)
    xs = normal((T, I), seed=3)
    n = T if length is None else length
    # Separate params: params[0] forwards, params[1] over the valid part reversed.
    _, ys_f = masked_loop(cell, direction(params, 0), xs, n)
    _, ys_b = masked_loop(cell, direction(params, 1), xs, n, reverse=True)
    combine = MERGES[merge]

    ys = bidirectional(cell, merge).apply(params, xs, length=length)
    assert ys.shape == (T, 2 * H if merge == "concat" else H)
    assert_close(ys, combine(np.asarray(ys_f), np.asarray(ys_b)))
    assert_zero(ys[n:])

    # Many-to-one: forward output at the last valid step, backward at step 0.
    y = bidirectional(cell, merge, return_sequences=False).apply(params, xs, length=length)
    assert_close(y, combine(np.asarray(ys_f[n - 1]), np.asarray(ys_b[0])))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_bidirectional_runs_one_scan_or_two_and_init_stacks(backend, monkeypatch):
    # The defaults no longer read the backend: two scans (one_scan=False) on either.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    cell = scanrnn.simple_rnn(H)
    params = bidirectional(cell).init(jax.random.key(0), I)
    assert isinstance(params, scanrnn.RNNParams)
    for leaf, single in zip(params, cell.init(jax.random.key(0), I)):
        assert leaf.shape == (2,) + single.shape
    assert not np.allclose(params.w_ih[0], params.w_ih[1])  # independent directions
    assert not np.allclose(params.w_hh[0], params.w_hh[1])
    xs = normal((T, I), seed=1, dtype=jnp.float32)
    executions = (
        (None, 2), (scanrnn.Execution(), 2), (scanrnn.Execution(one_scan=True), 1),
        (scanrnn.Execution(one_scan=False), 2), (scanrnn.execution.ACCELERATOR, 1),
    )
    for execution, scans in executions:
        layer = bidirectional(cell, execution=execution)
        for length in (None, 3):
            jaxpr = jax.make_jaxpr(lambda p, x: layer.apply(p, x, length=length))(params, xs)
            assert count_primitive(jaxpr, "scan") == (scans, 0)
        run = partial(scanrnn.unroll_bidirectional, cell, execution=execution)
        assert count_primitive(jax.make_jaxpr(run)(params, xs), "scan") == (scans, 0)


@pytest.mark.slow
@pytest.mark.parametrize("one_scan", [True, False])
def test_bidirectional_length_zero_and_batch(one_scan):
    cell = scanrnn.lstm(H, peephole=True, param_dtype=F64)
    params = stacked_params(cell)
    xs = normal((T, I), seed=3)
    layer = bidirectional(cell, "sum", return_sequences=False, execution=scanrnn.Execution(one_scan=one_scan))
    assert_zero(layer.apply(params, xs, length=0))
    batch = jnp.stack([xs, 2.0 * xs])
    lengths = jnp.array([2, T])
    got = jax.jit(jax.vmap(layer.apply, in_axes=(None, 0, 0)))(params, batch, lengths)
    for b in range(2):
        assert_close(got[b], layer.apply(params, batch[b], length=int(lengths[b])))


# --------------------------------------------------------------------------
# dense.


def test_dense_on_sequences_and_vectors():
    layer = dense(2, param_dtype=F64)
    params = DenseParams(w=normal((2, I), seed=1), b=normal((2,), seed=2))
    xs = normal((T, I), seed=3)
    p = reference.as_numpy(params)
    per_step = np.stack([reference.dense(p, np.asarray(x)) for x in xs])
    assert_close(layer.apply(params, xs), per_step)
    ys = layer.apply(params, xs, length=4)
    assert_close(ys[:4], per_step[:4])
    assert_zero(ys[4:])
    assert_close(layer.apply(params, xs[2]), per_step[2])  # a single vector
    assert_close(jax.jit(layer.apply)(params, xs, 4), ys)


def test_dense_init_follows_keras():
    params = dense(4).init(jax.random.key(0), I)
    assert params.w.shape == (4, I) and params.b.shape == (4,) and params.w.dtype == jnp.float32
    assert np.abs(params.w).max() <= np.sqrt(6 / (I + 4))
    assert_zero(params.b)


# --------------------------------------------------------------------------
# serial: the seeds' models.


def _shapes(model, input_size, T=T):
    """Param and output shapes of ``model`` on one sequence and on a batch, compiled never."""
    params = jax.eval_shape(lambda k: model.init(k, input_size), jax.random.key(0))
    xs = jax.ShapeDtypeStruct((T, input_size), jnp.float32)
    batch = jax.ShapeDtypeStruct((8, T, input_size), jnp.float32)
    one = jax.eval_shape(model.apply, params, xs)
    many = jax.eval_shape(jax.vmap(model.apply, in_axes=(None, 0)), params, batch)
    return jax.tree.map(lambda a: a.shape, params), one.shape, many.shape


def test_seed_models_shapes():
    # First seed: many-to-one network of sigmoid simple RNNs.
    model = serial(
        recurrent(scanrnn.simple_rnn(6, "sigmoid")),
        recurrent(scanrnn.simple_rnn(4, "sigmoid"), return_sequences=False),
        dense(1),
    )
    params, one, many = _shapes(model, 1)
    assert one == (1,) and many == (8, 1)
    assert params[0].w_ih == (6, 1) and params[1].w_ih == (4, 6) and params[2].w == (1, 4)

    # Keras seeds: SimpleRNN(1); deep RNN 20, 20, 1.
    _, one, many = _shapes(serial(recurrent(scanrnn.simple_rnn(1), return_sequences=False)), 1)
    assert one == (1,) and many == (8, 1)
    deep = serial(
        recurrent(scanrnn.simple_rnn(20)),
        recurrent(scanrnn.simple_rnn(20)),
        recurrent(scanrnn.simple_rnn(1), return_sequences=False),
    )
    params, one, many = _shapes(deep, 1)
    assert one == (1,) and many == (8, 1)
    assert params[1].w_hh == (20, 20) and params[2].w_ih == (1, 20)

    # LSTM 20, 20 and a dense(1) at every step; GRU 20, 20 and dense(10).
    params, one, many = _shapes(serial(recurrent(scanrnn.lstm(20)), recurrent(scanrnn.lstm(20)), dense(1)), 1)
    assert one == (T, 1) and many == (8, T, 1)
    assert params[1].w_ih == (80, 20) and params[2].w == (1, 20)
    params, one, many = _shapes(serial(recurrent(scanrnn.gru(20)), recurrent(scanrnn.gru(20)), dense(10)), 1)
    assert one == (T, 10) and many == (8, T, 10)
    assert params[0].w_ih == (60, 1) and params[2].w == (10, 20)

    # A bidirectional layer (concat) doubles the features the next layer sees.
    params, one, _ = _shapes(serial(bidirectional(scanrnn.lstm(5)), recurrent(scanrnn.gru(4)), dense(2)), 3)
    assert params[0].w_ih == (2, 20, 3) and params[1].w_ih == (12, 10) and one == (T, 2)


def _count(model, input_size):
    params = jax.eval_shape(lambda k: model.init(k, input_size), jax.random.key(0))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def test_seed_models_have_the_keras_parameter_counts():
    """The second seed's Keras models, counted by hand: H (I + H + 1) per SimpleRNN,
    4H (I + H + 1) per LSTM, 3H (I + H + 2) per GRU (reset_after keeps two biases)."""
    rnn, lstm, gru = scanrnn.simple_rnn, scanrnn.lstm, scanrnn.gru
    assert _count(serial(recurrent(rnn(1), return_sequences=False)), 1) == 3
    deep = serial(recurrent(rnn(20)), recurrent(rnn(20)), recurrent(rnn(1), return_sequences=False))
    assert _count(deep, 1) == 440 + 820 + 22
    deep_dense = serial(recurrent(rnn(20)), recurrent(rnn(20), return_sequences=False), dense(1))
    assert _count(deep_dense, 1) == 440 + 820 + 21
    assert _count(serial(recurrent(lstm(20)), recurrent(lstm(20)), dense(1)), 1) == 1760 + 3280 + 21
    assert _count(serial(recurrent(gru(20)), recurrent(gru(20)), dense(10)), 1) == 1380 + 2520 + 210


@pytest.mark.slow
def test_many_to_one_seed_against_hand_composition():
    model = serial(
        recurrent(scanrnn.simple_rnn(6, "sigmoid", param_dtype=F64)),
        recurrent(scanrnn.simple_rnn(4, "sigmoid", param_dtype=F64), return_sequences=False),
        dense(1, param_dtype=F64),
    )
    params = random_params(model, 1)
    xs = normal((T, 1), seed=5)
    p0, p1, p2 = (reference.as_numpy(p) for p in params)

    def by_hand(xs, n):
        _, h1 = reference.sequence("simple_rnn", p0, (np.zeros(6),), xs[:n], activation="sigmoid")
        _, h2 = reference.sequence("simple_rnn", p1, (np.zeros(4),), h1, activation="sigmoid")
        return reference.dense(p2, h2[-1])

    assert_close(model.apply(params, xs), by_hand(np.asarray(xs), T))
    assert_close(model.apply(params, xs, length=3), by_hand(np.asarray(xs), 3))


@pytest.mark.slow
def test_serial_init_threads_sizes_and_length():
    model = serial(recurrent(scanrnn.simple_rnn(H)), dense(2))
    params = model.init(jax.random.key(0), I)
    assert isinstance(params, tuple) and len(params) == 2
    assert params[0].w_ih.shape == (H, I) and params[1].w.shape == (2, H)
    # Same keys split the same way: deterministic.
    again = model.init(jax.random.key(0), I)
    jax.tree.map(np.testing.assert_array_equal, params, again)
    xs = normal((T, I), seed=1, dtype=jnp.float32)
    ys = model.apply(params, xs, length=2)  # passed on to every layer
    assert ys.shape == (T, 2)
    assert_zero(ys[2:])
    assert_close(ys[:2], model.apply(params, xs[:2]), rtol=1e-6, atol=1e-6)


def test_serial_parts_are_its_layers_and_compose_to_it():
    first, second = recurrent(scanrnn.simple_rnn(H)), dense(2)
    model = serial(first, second)
    assert model.parts == (first, second)
    assert first.parts == () and second.parts == ()
    params = model.init(jax.random.key(0), I)
    xs = normal((T, I), seed=1, dtype=jnp.float32)
    by_parts = second.apply(params[1], first.apply(params[0], xs))
    np.testing.assert_array_equal(model.apply(params, xs), by_parts)


# --------------------------------------------------------------------------
# User-written cells in layers.


@pytest.mark.slow
def test_user_cell_in_layers_vmap_jit_grad():
    cell = elman(H)
    model = serial(recurrent(cell), bidirectional(cell, "sum", return_sequences=False), dense(2, param_dtype=F64))
    params = model.init(jax.random.key(0), I)
    assert params[1]["w"].shape == (2, H, H)
    batch = normal((2, T, I), seed=1)
    lengths = jnp.array([3, T])

    def by_hand(xs, n):
        p0 = params[0]
        pf, pb = direction(params[1], 0), direction(params[1], 1)
        _, h1 = elman_numpy(p0, xs[:n])
        _, hf = elman_numpy(pf, h1)
        _, hb = elman_numpy(pb, h1[::-1])
        return reference.dense(reference.as_numpy(params[2]), hf[-1] + hb[-1])

    apply = jax.jit(jax.vmap(model.apply, in_axes=(None, 0, 0)))
    got = apply(params, batch, lengths)
    for b in range(2):
        assert_close(got[b], by_hand(batch[b], int(lengths[b])))

    # Gradients flow to every param, and not at all to the padding.
    def loss(params, xs):
        return jnp.sum(apply(params, xs, lengths) ** 2)

    g_params, g_xs = jax.grad(loss, argnums=(0, 1))(params, batch)
    for leaf in jax.tree.leaves(g_params):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    assert_zero(g_xs[0, 3:])
    assert np.all(np.asarray(g_xs[0, :3]) != 0) and np.all(np.asarray(g_xs[1]) != 0)


@pytest.mark.slow
def test_user_cell_with_tuple_output_in_layers():
    cell = counting_cell(H)
    params = cell.init(jax.random.key(0), I)
    xs = normal((T, I), seed=1)
    n = 4
    _, (ys_h, ys_s) = counting_numpy(params, xs[:n])

    seq = recurrent(cell).apply(params, xs, length=n)
    assert_close(jax.tree.map(lambda y: y[:n], seq), (ys_h, ys_s))
    last = recurrent(cell, return_sequences=False).apply(params, xs, length=n)
    assert_close(last, (ys_h[-1], ys_s[-1]))
    assert_close(recurrent(cell, return_sequences=False).apply(params, xs), jax.tree.map(lambda y: y[-1], unroll_ys(cell, params, xs)))

    # Bidirectional: each leaf of y merged on its own.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, cell.init(jax.random.key(1), I))
    _, (bh, bs) = counting_numpy(direction(both, 1), xs[:n][::-1])
    _, (fh, fs) = counting_numpy(direction(both, 0), xs[:n])
    y = bidirectional(cell, "concat", return_sequences=False).apply(both, xs, length=n)
    assert_close(y, (np.concatenate([fh[-1], bh[-1]]), np.concatenate([fs[-1], bs[-1]])))
    ys = bidirectional(cell, "sum").apply(both, xs, length=n)
    assert_close(jax.tree.map(lambda y: y[:n], ys), (fh + bh[::-1], fs + bs[::-1]))

    # As the last layer of a model.
    model = serial(recurrent(elman(H)), recurrent(cell, return_sequences=False))
    mparams = model.init(jax.random.key(2), I)
    _, h1 = elman_numpy(mparams[0], xs[:n])
    _, (h2, s2) = counting_numpy(mparams[1], h1)
    assert_close(model.apply(mparams, xs, length=n), (h2[-1], s2[-1]))


def unroll_ys(cell, params, xs):
    return scanrnn.unroll(cell, params, xs)[1]
