"""The layer contract with keys and state: carries in and out, learned initial carries,
the dropout layer, and truncated BPTT in scanrnn.train."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn
from helpers import assert_close, elman, elman_numpy, masked_loop, normal, random_carry, random_params
from scanrnn import Execution, LSTMCarry, Layer, Regularization, bidirectional, causal_conv, dense, recurrent, serial
from scanrnn.layers import RecurrentParams, dropout
from scanrnn.train import (
    Batch,
    batch_initial_carry,
    fit,
    make_tbptt_step,
    make_train_step,
    mse,
    predict_batch,
    stream_batches,
)

H, I, T = 4, 3, 6
F64 = jnp.float64
SGD = optax.sgd(1.0)  # new params = params - grads


def stacked(tree_a, tree_b):
    return jax.tree.map(lambda a, b: jnp.stack([a, b]), tree_a, tree_b)


def direction(tree, d):
    return jax.tree.map(lambda a: a[d], tree)


# --------------------------------------------------------------------------
# recurrent and bidirectional: carry in, (ys, final carry) out.


@pytest.mark.parametrize("length", [None, 4])
def test_recurrent_carry_gives_the_loops_final_carry(length):
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = random_params(cell, I)
    carry = random_carry(cell, params, seed=3)
    xs = normal((T, I), seed=1)
    n = T if length is None else length
    want_carry, want_ys = masked_loop(cell, params, xs, n, carry=carry)
    zeros_ys = masked_loop(cell, params, xs, n)[1]
    seq, last = recurrent(cell), recurrent(cell, return_sequences=False)

    @jax.jit
    def run(params, xs, carry):
        return (
            seq.apply(params, xs, length, carry=carry),
            last.apply(params, xs, length, carry=carry),
            scanrnn.unroll(cell, params, xs, carry, length=length)[0],
            seq.apply(params, xs, length),  # no carry: zeros in, ys out, exactly as before
            last.apply(params, xs, length),
            # A key on a layer without rates changes nothing.
            seq.apply(params, xs, length, key=jax.random.key(1), carry=carry),
        )

    (ys, final), (y, final_last), unrolled, zeros_seq, zeros_last, keyed = run(params, xs, carry)
    assert_close(final, want_carry)
    assert_close(final_last, want_carry)
    assert_close(final, unrolled)
    assert_close(ys, want_ys)
    assert_close(y, want_ys[n - 1])
    assert_close(zeros_seq, zeros_ys)
    assert_close(zeros_last, zeros_ys[n - 1])
    assert_close(keyed, (ys, final))
    assert_close(seq.initial_carry(params), cell.initial_carry(params))


@pytest.mark.slow
def test_bidirectional_carry_has_a_direction_axis():
    length = 4
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = stacked(random_params(cell, I, seed=1), random_params(cell, I, seed=2))
    carry = stacked(random_carry(cell, direction(params, 0), seed=3), random_carry(cell, direction(params, 1), seed=4))
    xs = normal((T, I), seed=5)
    n = T if length is None else length
    fwd_carry, fwd_ys = masked_loop(cell, direction(params, 0), xs, n, carry=direction(carry, 0))
    bwd_carry, bwd_ys = masked_loop(cell, direction(params, 1), xs, n, reverse=True, carry=direction(carry, 1))

    layer = bidirectional(cell, "sum", execution=Execution(one_scan=True))
    last = bidirectional(cell, "concat", return_sequences=False, execution=Execution(one_scan=False))

    @jax.jit
    def run(params, xs, carry):
        return (
            layer.apply(params, xs, length, carry=carry),
            last.apply(params, xs, length, carry=carry),
            scanrnn.unroll_bidirectional(cell, params, xs, carry, length=length, execution=Execution(one_scan=True))[0],
        )

    (ys, final), (y, final_last), unrolled = run(params, xs, carry)
    assert_close(final, stacked(fwd_carry, bwd_carry))
    assert_close(final, unrolled)
    assert_close(ys, fwd_ys + bwd_ys)
    assert_close(final_last, final)
    assert_close(y, jnp.concatenate([fwd_ys[n - 1], bwd_ys[0]]))
    assert jax.tree.map(jnp.shape, layer.initial_carry(params)) == LSTMCarry((2, H), (2, H))


# --------------------------------------------------------------------------
# serial: a tuple of carries.


def chain_model():
    return serial(
        recurrent(scanrnn.lstm(H, param_dtype=F64)),
        dense(H, param_dtype=F64),
        causal_conv(H, 2, param_dtype=F64),
        recurrent(scanrnn.gru(H, param_dtype=F64)),
        dense(2, param_dtype=F64),
    )


@pytest.mark.slow
def test_serial_carry_is_a_tuple_of_the_layers_carries():
    model = chain_model()
    params = random_params(model, I)
    xs = normal((T, I), seed=1)
    lstm_cell, gru_cell = scanrnn.lstm(H, param_dtype=F64), scanrnn.gru(H, param_dtype=F64)
    carry = (random_carry(lstm_cell, params[0], seed=2), (), (), random_carry(gru_cell, params[3], seed=3), ())
    assert jax.tree.structure(model.initial_carry(params)) == jax.tree.structure(carry)

    @jax.jit
    def run(params, xs, carry):
        return (
            model.apply(params, xs, 5, carry=carry),
            model.apply(params, xs, 5),
            model.apply(params, xs, 5, carry=model.initial_carry(params))[0],
        )

    (ys, final), plain, from_zeros = run(params, xs, carry)
    # By hand, layer by layer.
    c0, h = masked_loop(lstm_cell, params[0], xs, 5, carry=carry[0])
    h = dense(H).apply(params[1], h, 5)
    h = causal_conv(H, 2).apply(params[2], h, 5)
    c3, h = masked_loop(gru_cell, params[3], h, 5, carry=carry[3])
    assert_close(final, (c0, (), (), c3, ()))
    assert_close(ys, dense(2).apply(params[4], h, 5))
    assert_close(plain, from_zeros)


def test_chunks_with_the_carry_handed_over_equal_one_pass():
    model = serial(
        recurrent(scanrnn.lstm(H, param_dtype=F64)), dense(H, param_dtype=F64), recurrent(scanrnn.simple_rnn(2, param_dtype=F64))
    )
    params = random_params(model, I)
    xs = normal((3 * T, I), seed=2)
    run = jax.jit(lambda p, x, c: model.apply(p, x, carry=c))
    whole, whole_final = run(params, xs, model.initial_carry(params))
    carry, parts = model.initial_carry(params), []
    for start in range(0, 3 * T, T):
        ys, carry = run(params, xs[start : start + T], carry)
        parts.append(ys)
    assert_close(jnp.concatenate(parts), whole)
    assert_close(carry, whole_final)
    # Restarting from zeros at each chunk is not the same thing.
    restarted, _ = run(params, xs[T : 2 * T], model.initial_carry(params))
    assert not np.allclose(restarted, whole[T : 2 * T])


def test_serial_splits_the_key_and_keeps_user_layers_working():
    # A user's layer without state or randomness: it ignores the key and hands back the empty carry.
    def apply(params, xs, length=None, *, key=None, carry=None):
        return 2.0 * xs if carry is None else (2.0 * xs, carry)

    double = Layer(lambda key, input_size: (), apply, lambda params: ())
    model = serial(dropout(0.5), double, dropout(0.5))
    xs = normal((T, I), seed=1)
    params = model.init(jax.random.key(0), I)
    assert_close(model.apply(params, xs), 2.0 * xs)  # no key: deterministic
    assert model.initial_carry(params) == ((), (), ())
    assert_close(model.apply(params, xs, carry=((), (), ())), (2.0 * xs, ((), (), ())))

    with_key = serial(dropout(0.5), dropout(0.5))
    key = jax.random.key(7)
    k1, k2 = jax.random.split(key)
    want = dropout(0.5).apply((), dropout(0.5).apply((), xs, key=k1), key=k2)
    assert_close(with_key.apply(((), ()), xs, key=key), want)
    # The two-function layer is called without the key; the others get theirs.
    k1, _, k3 = jax.random.split(key, 3)
    want = dropout(0.5).apply((), 2.0 * dropout(0.5).apply((), xs, key=k1), key=k3)
    assert_close(model.apply(params, xs, key=key), want)


# --------------------------------------------------------------------------
# The learned initial carry.


def test_learned_initial_carry_starts_at_zeros_and_is_used():
    cell = elman(H)  # a user cell, whose carry is a bare array
    layer = recurrent(cell, learn_initial_carry=True)
    params = layer.init(jax.random.key(0), I)
    assert isinstance(params, RecurrentParams)
    assert_close(params.initial_carry, jnp.zeros((H,), F64))
    carry = normal((H,), seed=4)
    params = RecurrentParams(params.cell, carry)
    xs = normal((T, I), seed=1)
    assert_close(layer.apply(params, xs), elman_numpy(params.cell, xs, carry)[1])
    assert_close(layer.initial_carry(params), carry)

    bi = bidirectional(scanrnn.lstm(H), learn_initial_carry=True)
    bi_params = jax.eval_shape(lambda k: bi.init(k, I), jax.random.key(0))
    assert jax.tree.map(jnp.shape, bi_params.initial_carry) == LSTMCarry((2, H), (2, H))


@pytest.mark.slow
def test_learned_initial_carry_gradient():
    cell = scanrnn.gru(H, param_dtype=F64)
    layer = recurrent(cell, learn_initial_carry=True, execution=Execution(backward="hand"))
    params = RecurrentParams(random_params(cell, I), random_carry(cell, random_params(cell, I), seed=5))
    xs, target = normal((T, I), seed=1), normal((T, H), seed=2)
    direction_ = random_carry(cell, params.cell, seed=6)
    eps = 1e-6

    def layer_loss(p):
        return jnp.sum(jnp.square(layer.apply(p, xs, 5) - target))

    def plain_loss(cell_params, carry):  # autodiff of a plain unroll started from that carry
        _, ys = scanrnn.unroll(cell, cell_params, xs, carry, length=5, execution=Execution(backward="autodiff"))
        return jnp.sum(jnp.square(ys - target))

    @jax.jit
    def run(params):
        shifted = lambda s: RecurrentParams(params.cell, jax.tree.map(lambda c, d: c + s * d, params.initial_carry, direction_))
        # Central finite difference along one random direction of the carry.
        numeric = (layer_loss(shifted(eps)) - layer_loss(shifted(-eps))) / (2 * eps)
        return jax.grad(layer_loss)(params), jax.grad(plain_loss, argnums=(0, 1))(params.cell, params.initial_carry), numeric

    grads, (want_cell, want_carry), numeric = run(params)
    assert_close(grads.initial_carry, want_carry, rtol=1e-9)
    assert_close(grads.cell, want_cell, rtol=1e-9)
    assert float(jnp.abs(grads.initial_carry.h).max()) > 1e-3
    analytic = sum(jnp.vdot(g, d) for g, d in zip(grads.initial_carry, direction_))
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


@pytest.mark.slow
def test_learned_initial_carry_gradient_bidirectional():
    cell = scanrnn.simple_rnn(H, param_dtype=F64)
    layer = bidirectional(cell, "concat", return_sequences=False, learn_initial_carry=True)
    cell_params = stacked(random_params(cell, I, seed=1), random_params(cell, I, seed=2))
    carry = stacked(random_carry(cell, direction(cell_params, 0), seed=3), random_carry(cell, direction(cell_params, 1), seed=4))
    params = RecurrentParams(cell_params, carry)
    xs = normal((T, I), seed=5)

    def layer_loss(c):
        return jnp.sum(jnp.sin(layer.apply(RecurrentParams(cell_params, c), xs, 4)))

    def plain_loss(c):
        autodiff = Execution(backward="autodiff")
        _, fwd = scanrnn.unroll(cell, direction(cell_params, 0), xs, direction(c, 0), length=4, execution=autodiff)
        _, bwd = scanrnn.unroll(
            cell, direction(cell_params, 1), xs, direction(c, 1), length=4, reverse=True, execution=autodiff
        )
        return jnp.sum(jnp.sin(fwd[3])) + jnp.sum(jnp.sin(bwd[0]))

    got, want = jax.jit(lambda c: (jax.value_and_grad(layer_loss)(c), jax.value_and_grad(plain_loss)(c)))(carry)
    assert_close(got, want, rtol=1e-9)
    assert float(jnp.abs(got[1].h[1]).max()) > 1e-3  # the backward direction's carry gets a gradient
    assert_close(layer.initial_carry(params), carry)


# --------------------------------------------------------------------------
# The dropout layer.


def test_dropout_identity_without_key_or_rate():
    xs = normal((T, I), seed=1)
    assert_close(dropout(0.3).apply((), xs), xs)
    assert_close(dropout(0.3).apply((), xs[0]), xs[0])
    assert_close(dropout(0.0).apply((), xs, key=jax.random.key(0)), xs)
    assert_close(dropout(0.3).apply((), xs, 2, carry=()), (xs, ()))


@pytest.mark.parametrize("broadcast_time", [False, True])
def test_dropout_scaled_mask(broadcast_time):
    rate = 0.25
    xs = normal((200, 20), seed=1)
    key = jax.random.key(3)
    ys = np.asarray(dropout(rate, broadcast_time=broadcast_time).apply((), xs, key=key))
    kept = ys != 0
    # Kept elements are scaled by 1 / (1 - rate), dropped ones are zero.
    np.testing.assert_allclose(ys[kept], np.asarray(xs)[kept] / (1 - rate), rtol=1e-15)
    # The mask is the Bernoulli(1 - rate) draw of the key (per element, or per feature).
    mask = np.asarray(jax.random.bernoulli(key, 1 - rate, (20,) if broadcast_time else (200, 20)))
    np.testing.assert_array_equal(kept, np.broadcast_to(mask, (200, 20)))
    if broadcast_time:
        assert (kept == kept[0]).all()  # constant over the steps
    else:
        assert 0.7 < kept.mean() < 0.8 and not (kept == kept[0]).all()
    # Another key, another mask.
    other = np.asarray(dropout(rate, broadcast_time=broadcast_time).apply((), xs, key=jax.random.key(4))) != 0
    assert not (other == kept).all()


@pytest.mark.slow
def test_dropout_in_a_trained_model_changes_with_the_key_only():
    model = serial(recurrent(scanrnn.gru(H, param_dtype=F64)), dropout(0.5), dense(1, param_dtype=F64))
    params = random_params(model, I)
    xs = normal((T, I), seed=1)
    without_dropout = serial(recurrent(scanrnn.gru(H, param_dtype=F64)), dense(1, param_dtype=F64))

    @jax.jit
    def run(params):
        keyed = [model.apply(params, xs, key=jax.random.key(k)) for k in (1, 1, 2)]
        return keyed, model.apply(params, xs), without_dropout.apply((params[0], params[2]), xs)

    (a, again, other), evaluated, want = run(params)
    assert_close(again, a)
    assert not np.allclose(other, a)
    assert_close(evaluated, want)


# --------------------------------------------------------------------------
# Errors name the expected and the given.


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5", True])
def test_rates_outside_the_unit_interval(rate):
    with pytest.raises(ValueError, match="rate must be a float in \\[0, 1\\), got"):
        dropout(rate)
    cell = scanrnn.lstm(H)
    for name in ("dropout", "recurrent_dropout", "zoneout"):
        with pytest.raises(ValueError, match=f"{name} must be a float in \\[0, 1\\), got {rate!r}"):
            recurrent(cell, regularization=Regularization(**{name: rate}))
        with pytest.raises(ValueError, match=f"{name} must be a float in \\[0, 1\\), got {rate!r}"):
            bidirectional(cell, regularization=Regularization(**{name: rate}))
    with pytest.raises(ValueError, match="zoneout must be a float"):
        recurrent(cell, regularization=Regularization(zoneout=LSTMCarry(h=0.1, c=rate)))


def test_carry_of_the_wrong_structure():
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = random_params(cell, I)
    xs = normal((T, I), seed=1)
    h = jnp.zeros((H,), F64)
    with pytest.raises(ValueError, match=r"recurrent: carry must be .*LSTMCarry.*got .*RNNCarry"):
        recurrent(cell).apply(params, xs, carry=scanrnn.RNNCarry(h))
    with pytest.raises(ValueError, match=rf"carry must be .*\({H},\).*got .*\(3,\)"):
        recurrent(cell).apply(params, xs, carry=LSTMCarry(h, jnp.zeros((3,), F64)))
    bi_params = stacked(params, params)
    dense_params = scanrnn.DenseParams(jnp.zeros((2, I), F64), jnp.zeros((2,), F64))
    with pytest.raises(ValueError, match=rf"bidirectional: carry must be .*\(2, {H}\).*got .*\({H},\)"):
        bidirectional(cell).apply(bi_params, xs, carry=LSTMCarry(h, h))
    with pytest.raises(ValueError, match=r"dense: carry must be .*\(\).*got .*LSTMCarry"):
        dense(2).apply(dense_params, xs, carry=LSTMCarry(h, h))
    with pytest.raises(ValueError, match="serial of 2 layers expects a carry tuple of 2 entries .*got a tuple of 1"):
        serial(recurrent(cell), dense(2)).apply((params, dense_params), xs, carry=(LSTMCarry(h, h),))
    with pytest.raises(ValueError, match="learn_initial_carry=True.*RecurrentParams.*got LSTMParams"):
        recurrent(cell, learn_initial_carry=True).apply(params, xs)
    with pytest.raises(ValueError, match="learn_initial_carry=False.*got RecurrentParams"):
        recurrent(cell).apply(RecurrentParams(params, cell.initial_carry(params)), xs)
    with pytest.raises(ValueError, match="dropout has no params and expects \\(\\), got DenseParams"):
        dropout(0.1).apply(dense_params, xs)
    with pytest.raises(ValueError, match="dropout expects floating inputs, got dtype int"):
        dropout(0.1).apply((), jnp.ones((T, I), jnp.int32))


# --------------------------------------------------------------------------
# scanrnn.train: keys per example, truncated BPTT, streams.


def test_stream_batches_against_reshaping():
    tokens = np.arange(3 * 17 + 5) * 10
    B, K = 3, 4
    inputs, targets = stream_batches(tokens, B, K)
    L = (len(tokens) - 1) // B  # 18 steps per stream, 4 chunks of 4
    streams = tokens[: B * L].reshape(B, L)[:, : (L // K) * K]
    shifted = tokens[1 : B * L + 1].reshape(B, L)[:, : (L // K) * K]
    np.testing.assert_array_equal(inputs, streams.reshape(B, L // K, K).transpose(1, 0, 2))
    np.testing.assert_array_equal(targets, shifted.reshape(B, L // K, K).transpose(1, 0, 2))
    assert inputs.shape == (4, 3, 4) and inputs.dtype == tokens.dtype
    # Chunk c + 1 continues chunk c, and the targets are the next tokens.
    np.testing.assert_array_equal(inputs[1, 2], [2 * L * 10 + 40, 2 * L * 10 + 50, 2 * L * 10 + 60, 2 * L * 10 + 70])
    np.testing.assert_array_equal(targets[:, :, :-1], inputs[:, :, 1:])
    np.testing.assert_array_equal(targets[:-1, :, -1], inputs[1:, :, 0])
    with pytest.raises(ValueError, match="need at least 9 tokens"):
        stream_batches(np.arange(8), 2, 4)
    with pytest.raises(ValueError, match="tokens must be a 1-D stream, got shape \\(2, 5\\)"):
        stream_batches(np.zeros((2, 5)), 1, 2)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        stream_batches(tokens, 2, 0)


def tbptt_model():
    return serial(recurrent(scanrnn.lstm(H, param_dtype=F64), learn_initial_carry=True), dense(1, param_dtype=F64))


@pytest.mark.slow
def test_tbptt_chunks_forward_like_one_pass_and_gradients_truncated():
    """Truncated BPTT through make_tbptt_step against one pass over the whole streams."""
    B, K, C = 2, 4, 3  # streams, steps per chunk, chunks
    model = tbptt_model()
    params = random_params(model, 1, seed=1)
    series = np.sin(0.7 * np.arange(B * C * K + 1)) + 0.3 * np.random.default_rng(0).standard_normal(B * C * K + 1)
    inputs, targets = stream_batches(series, B, K)
    assert inputs.shape == (C, B, K)
    x_all = jnp.asarray(inputs.transpose(1, 0, 2).reshape(B, C * K, 1))  # the whole streams [B, C K, 1]
    y_all = jnp.asarray(targets.transpose(1, 0, 2).reshape(B, C * K, 1))
    step = make_tbptt_step(model, mse, SGD)

    def chunk_loss(p, c, x, y):  # the chunk alone, from a constant carry
        pred, _ = predict_batch(model, p, x, carry=c)
        return jnp.mean(jax.vmap(mse)(pred, y))

    @jax.jit
    def reference(p, c):
        """One pass over the whole streams up to chunk c: outputs, carry at its start, gradients."""
        start = jnp.full((B,), c * K)
        _, carry = predict_batch(model, p, x_all, start, carry=batch_initial_carry(model, p, B))
        x = jax.lax.dynamic_slice_in_dim(x_all, c * K, K, axis=1)
        y = jax.lax.dynamic_slice_in_dim(y_all, c * K, K, axis=1)
        truncated = jax.grad(chunk_loss)(p, jax.lax.stop_gradient(carry), x, y)

        def full_loss(p):  # the same chunk's loss through the whole prefix (full BPTT)
            pred = predict_batch(model, p, x_all)
            pred = jax.lax.dynamic_slice_in_dim(pred, c * K, K, axis=1)
            return jnp.mean(jax.vmap(mse)(pred, y))

        return full_loss(p), carry, truncated, jax.grad(full_loss)(p)

    carry = None  # the first chunk starts from the learned initial carry, inside the gradient
    for c in range(C):
        batch = Batch(jnp.asarray(inputs[c, ..., None]), jnp.asarray(targets[c, ..., None]))
        new_params, _, next_carry, metrics = step(params, SGD.init(params), carry, batch)
        loss, want_carry, truncated, full = reference(params, c)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-9)  # the forward outputs agree
        grads = jax.tree.map(lambda a, b: a - b, params, new_params)
        if c == 0:  # nothing before it: the truncated gradient is the full one, the learned carry's included
            assert_close(grads, full, rtol=1e-8, atol=1e-12)
            assert float(jnp.abs(grads[0].initial_carry.h).max()) > 1e-4
        else:  # earlier chunks' steps are cut off from the gradient
            assert_close(carry, want_carry, rtol=1e-9)  # the handed-over carry is the one-pass carry
            assert_close(grads, truncated, rtol=1e-8, atol=1e-12)
            assert not np.allclose(grads[0].cell.w_hh, full[0].cell.w_hh)
            assert_close(grads[0].initial_carry, jax.tree.map(jnp.zeros_like, params[0].initial_carry))
        carry = next_carry
    assert_close(carry, reference(params, C)[1], rtol=1e-9)  # after the whole streams


@pytest.mark.slow
def test_train_step_and_fit_split_the_key_per_example():
    model = serial(dropout(0.5), dense(1, param_dtype=F64))
    params = random_params(model, I)
    x = jnp.broadcast_to(normal((1, T, I), seed=1), (4, T, I))  # four identical examples
    y = normal((4, T, 1), seed=2)
    key = jax.random.key(5)

    @jax.jit
    def references(params):
        by_hand = jnp.stack([model.apply(params, x[b], key=k) for b, k in enumerate(jax.random.split(key, 4))])
        keyed = lambda p: jnp.mean(jax.vmap(mse)(predict_batch(model, p, x, key=key), y))
        return predict_batch(model, params, x, key=key), by_hand, jax.grad(keyed)(params)

    pred, by_hand, keyed_grads = references(params)
    assert not np.allclose(pred[0], pred[1])  # each example draws its own mask
    assert_close(pred, by_hand)
    step = make_train_step(model, mse, SGD)
    new_params, _, _ = step(params, SGD.init(params), Batch(x, y), key)
    assert_close(jax.tree.map(lambda a, b: a - b, params, new_params), keyed_grads, rtol=1e-9)

    # fit passes jax.random.fold_in(key, i) to step i of the run.
    trained, history = fit(model, params, SGD, mse, Batch(x, y), epochs=2, batch_size=4, key=key)
    p, rng = params, np.random.default_rng(0)  # fit's seed=0
    for i in range(2):  # one batch per epoch, shuffled as fit shuffles it
        order = rng.permutation(4)
        p, _, metrics = step(p, SGD.init(p), Batch(x[order], y[order]), jax.random.fold_in(key, i))
        np.testing.assert_allclose(history["train_loss"][i], metrics["loss"], rtol=1e-12)
    assert_close(trained, p)
    # One contract: a layer has all three functions (no two-function form is left to guess at).
    with pytest.raises(TypeError, match="initial_carry"):
        Layer(model.init, model.apply)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_tbptt_lowers_the_loss_on_a_periodic_stream():
    model = serial(recurrent(scanrnn.lstm(8)), dense(1))
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), 1)
    series = np.sin(2 * np.pi * np.arange(801) / 12).astype(np.float32)
    inputs, targets = stream_batches(series, batch_size=4, chunk_size=10)  # [20, 4, 10]
    optimizer = optax.adam(2e-2)
    step, opt_state = make_tbptt_step(model, mse, optimizer), optimizer.init(params)
    epoch_losses = []
    for _ in range(4):
        carry, losses = batch_initial_carry(model, params, 4), []
        for x, y in zip(inputs, targets):
            params, opt_state, carry, metrics = step(params, opt_state, carry, Batch(x[..., None], y[..., None]))
            losses.append(float(metrics["loss"]))
        epoch_losses.append(np.mean(losses))
    assert epoch_losses[-1] < 0.2 * epoch_losses[0], epoch_losses


# --------------------------------------------------------------------------
# Dropout, recurrent dropout and zoneout through the recurrent layers.

RATES = Regularization(dropout=0.2, recurrent_dropout=0.3, zoneout=LSTMCarry(h=0.1, c=0.4))


@pytest.mark.slow
def test_recurrent_rates_are_unrolls_with_the_layers_key():
    cell = scanrnn.lstm(H, param_dtype=F64)
    params = random_params(cell, I)
    carry = random_carry(cell, params, seed=3)
    xs = normal((T, I), seed=1)
    layer, last = recurrent(cell, regularization=RATES), recurrent(cell, return_sequences=False, regularization=RATES)
    model = serial(recurrent(cell, regularization=RATES), dense(2, param_dtype=F64))
    dense_params = random_params(dense(2, param_dtype=F64), H, seed=9)
    key = jax.random.key(1)

    @jax.jit
    def run(params, carry):
        unrolled = lambda key: scanrnn.unroll(cell, params, xs, carry, length=4, key=key, regularization=RATES)
        return (
            (layer.apply(params, xs, 4, key=key, carry=carry), unrolled(key)),
            (last.apply(params, xs, 4, carry=carry), unrolled(None)),  # evaluation: no key
            model.apply((params, dense_params), xs, 4, key=key),
            scanrnn.unroll(cell, params, xs, length=4, key=jax.random.split(key, 2)[0], regularization=RATES)[1],
        )

    keyed, evaluated, model_ys, hidden = run(params, carry)
    (ys, final), (want_carry, want_ys) = keyed
    assert_close(ys, want_ys)
    assert_close(final, want_carry)
    (y, final), (want_carry, want_ys) = evaluated
    assert_close(y, want_ys[3])
    assert_close(final, want_carry)
    assert not np.allclose(y, ys[3])
    # serial hands the recurrent layer the first of its split keys.
    assert_close(model_ys, dense(2).apply(dense_params, hidden, 4))


@pytest.mark.slow
def test_bidirectional_rates_are_unroll_bidirectional_with_the_key():
    cell = scanrnn.gru(H, param_dtype=F64)
    params = stacked(random_params(cell, I, seed=1), random_params(cell, I, seed=2))
    xs = normal((T, I), seed=5)
    rates = Regularization(dropout=0.25, recurrent_dropout=0.25, zoneout=0.2)
    layer = bidirectional(cell, "concat", regularization=rates)
    key = jax.random.key(3)

    @jax.jit
    def run(params):
        return (
            layer.apply(params, xs, 4, key=key),
            scanrnn.unroll_bidirectional(cell, params, xs, length=4, key=key, regularization=rates)[1],
        )

    keyed, want = run(params)
    assert_close(keyed, jnp.concatenate([want[0], want[1]], axis=-1))


def test_recurrent_dropout_on_a_cell_without_recurrent_weights():
    cell = scanrnn.min_gru(H, param_dtype=F64)
    layer = recurrent(cell, regularization=Regularization(recurrent_dropout=0.2))
    with pytest.raises(ValueError, match="recurrent_dropout"):
        layer.apply(random_params(cell, I), normal((T, I), seed=1), key=jax.random.key(0))
