"""The embedding layer against a NumPy one-hot product, in serial models, under fit, and its checks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr

V, F = 7, 3


def table_of(layer, seed=0):
    return layer.init(jax.random.key(seed), V)


def test_lookup_equals_the_one_hot_product_and_masks_past_length():
    layer = sr.embedding(V, F, param_dtype=jnp.float64)
    params = table_of(layer)
    assert isinstance(params, sr.EmbeddingParams) and params.table.shape == (V, F)
    tokens = np.array([0, 6, 3, 3, 1], np.int32)
    one_hot = np.eye(V)[tokens]
    np.testing.assert_allclose(layer.apply(params, tokens), one_hot @ np.asarray(params.table), rtol=0, atol=0)
    masked = layer.apply(params, tokens, length=2)
    np.testing.assert_allclose(masked[:2], one_hot[:2] @ np.asarray(params.table))
    assert not np.asarray(masked[2:]).any()
    np.testing.assert_allclose(layer.apply(params, jnp.int32(4)), np.asarray(params.table)[4])
    ys, carry = layer.apply(params, tokens, carry=())
    assert carry == () and ys.shape == (5, F)


def test_gradient_adds_the_cotangent_into_each_row_read():
    layer = sr.embedding(V, F, param_dtype=jnp.float64)
    params = table_of(layer)
    tokens = np.array([2, 5, 2, 0, 2], np.int32)
    weights = np.random.default_rng(0).normal(size=(5, F))
    grad = jax.grad(lambda p: jnp.sum(layer.apply(p, tokens, length=4) * weights))(params).table
    expected = np.zeros((V, F))
    np.add.at(expected, tokens[:4], weights[:4])  # the step past length does not count
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_in_serial_before_a_recurrent_layer_batched_with_lengths():
    model = sr.serial(sr.embedding(V, F), sr.recurrent(sr.gru(4)), sr.dense(V))
    params = model.init(jax.random.key(1), V)
    assert model.tokens == V and params[0].table.shape == (V, F) and params[1].w_ih.shape[1] == F
    tokens = np.array([[1, 2, 3, 4], [6, 5, 0, 0]], np.int32)
    lengths = np.array([4, 2], np.int32)
    got = jax.jit(jax.vmap(model.apply, in_axes=(None, 0, 0)))(params, tokens, lengths)
    gru, out = sr.recurrent(sr.gru(4)), sr.dense(V)
    for b in range(2):
        xs = np.asarray(params[0].table)[tokens[b]]
        want = out.apply(params[2], gru.apply(params[1], xs, length=lengths[b]), length=lengths[b])
        np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")  # optax's adam mixes Python floats and int32 counts
def test_fit_trains_a_token_model():
    """Predict the previous token: an embedding, an LSTM and a dense layer learn it under fit."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(64, 6)).astype(np.int32)
    y = np.concatenate([np.zeros((64, 1), np.int32), x[:, :-1]], axis=1)
    model = sr.serial(sr.embedding(V, 8), sr.recurrent(sr.lstm(16)), sr.dense(V))
    params = model.init(jax.random.key(0), V)
    data = sr.train.Batch(x, y)
    before = sr.train.evaluate(model, sr.train.softmax_cross_entropy, params, data)
    trained, _ = sr.train.fit(model, params, optax.adam(3e-2), sr.train.softmax_cross_entropy, data,
                              epochs=15, batch_size=16, seed=0)
    after = sr.train.evaluate(model, sr.train.softmax_cross_entropy, trained, data)
    assert after < 0.5 * before, (before, after)
    # The batches are checked on the host, where the compiled step could only clamp.
    bad = sr.train.Batch(np.where(x == 3, V, x).astype(np.int32), y)
    with pytest.raises(ValueError, match=re.escape("tokens must lie in [0, 7), got 7")):
        sr.train.fit(model, params, optax.adam(3e-2), sr.train.softmax_cross_entropy, bad, epochs=1)
    with pytest.raises(ValueError, match=re.escape("tokens must lie in [0, 7), got 7")):
        sr.train.evaluate(model, sr.train.softmax_cross_entropy, params, bad)


def test_bad_input_is_refused_before_tracing():
    layer = sr.embedding(V, F)
    params = table_of(layer)
    with pytest.raises(TypeError, match="embedding: tokens must be integer tokens, got dtype float32"):
        layer.apply(params, jnp.ones((3,), jnp.float32))
    with pytest.raises(ValueError, match=re.escape("[0, 7)")):
        layer.apply(params, np.array([1, 7, 2], np.int32))
    with pytest.raises(ValueError, match=re.escape("[0, 7)")):
        layer.apply(params, np.array([1, -1], np.int32))
    layer.apply(params, np.array([1, 2, 9], np.int32), length=2)  # past length: not read
    with pytest.raises(ValueError, match="the input size of a token sequence is the vocabulary size 7, got input_size=3"):
        layer.init(jax.random.key(0), 3)
    with pytest.raises(TypeError, match="embedding expects params of type EmbeddingParams, got DenseParams"):
        layer.apply(sr.DenseParams(params.table, params.table[0]), np.array([1], np.int32))
    with pytest.raises(ValueError, match=re.escape("params.table must have shape (7, 3), got (6, 3)")):
        layer.apply(sr.EmbeddingParams(params.table[:6]), np.array([1], np.int32))
    with pytest.raises(ValueError, match=re.escape("must have shape [T]")):
        layer.apply(params, np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        sr.embedding(0, F)
    # Traced tokens cannot be read: an out-of-range one is clamped to the last row, not a NaN.
    clamped = jax.jit(layer.apply)(params, np.array([9], np.int32))
    np.testing.assert_array_equal(clamped[0], params.table[V - 1])


def test_check_tokens_on_the_host():
    tokens = np.array([[1, 2, 9], [0, 6, 6]], np.int32)
    sr.check_tokens(tokens, V, lengths=np.array([2, 3], np.int32))  # the 9 lies past its length
    with pytest.raises(ValueError, match=re.escape("tokens must lie in [0, 7), got 9 at example 0, step 2 (1 out of range)")):
        sr.check_tokens(tokens, V)
    with pytest.raises(TypeError, match="tokens must be integers, got dtype float64"):
        sr.check_tokens(tokens.astype(np.float64), V)
    with pytest.raises(ValueError, match=re.escape("tokens must have shape [B, T], got (3,)")):
        sr.check_tokens(tokens[0], V)
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [0, 3]")):
        sr.check_tokens(tokens, V, lengths=np.array([4, 0], np.int32))
