"""Bad PRNG keys: an int seed, a float array, ``None`` where a key is needed, or a batch of keys.

Every ``init(key, ...)`` of a cell, layer or model, every ``apply(..., key=)``,
``unroll(key=)`` and ``sample_masks`` check the key with
``scanrnn._checks.prng_key`` before using it. ``key=None`` stays valid where
it means evaluation; typed keys (``jax.random.key``) and legacy raw keys
(``jax.random.PRNGKey``) both work.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import normal, random_params, tripwire_cell, tripwire_params
from scanrnn import seq2seq as s2s

T, I, H = 4, 2, 3
F32 = jnp.float32
XS = normal((T, I), seed=0, dtype=F32)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)

INITS = [
    ("simple_rnn", lambda k: sr.simple_rnn(H).init(k, I)),
    ("lstm", lambda k: sr.lstm(H).init(k, I)),
    ("gru", lambda k: sr.gru(H).init(k, I)),
    ("layer_norm_rnn", lambda k: sr.layer_norm_rnn(H).init(k, I)),
    ("layer_norm_lstm", lambda k: sr.layer_norm_lstm(H).init(k, I)),
    ("min_gru", lambda k: sr.min_gru(H).init(k, I)),
    ("min_lstm", lambda k: sr.min_lstm(H).init(k, I)),
    ("jordan", lambda k: sr.jordan(H, 1).init(k, I)),
    ("elman", lambda k: sr.elman(H, 1).init(k, I)),
    ("narx", lambda k: sr.narx(H, 1).init(k, I)),
    ("recurrent", lambda k: sr.recurrent(sr.gru(H)).init(k, I)),
    ("recurrent-learned", lambda k: sr.recurrent(TRIPWIRE, learn_initial_carry=True).init(k, I)),
    ("bidirectional", lambda k: sr.bidirectional(TRIPWIRE).init(k, I)),
    ("dense", lambda k: sr.dense(2).init(k, I)),
    ("dropout", lambda k: sr.dropout(0.5).init(k, I)),
    ("causal_conv", lambda k: sr.causal_conv(2, 2).init(k, I)),
    ("serial", lambda k: sr.serial(sr.recurrent(TRIPWIRE)).init(k, I)),
    ("seq2seq", lambda k: s2s.seq2seq(sr.serial(sr.recurrent(TRIPWIRE)), TRIPWIRE, src_vocab_size=3,
                                      tgt_vocab_size=3).init(k)),
    ("additive_attention", lambda k: s2s.additive_attention(2).init(k, H, H)),
    ("dot_attention", lambda k: s2s.dot_attention().init(k, H, H)),
    ("general_attention", lambda k: s2s.general_attention().init(k, H, H)),
]

DENSE_PARAMS = sr.DenseParams(jnp.ones((2, I), F32), jnp.ones(2, F32))
CONV_PARAMS = sr.ConvParams(jnp.ones((2, I, 2), F32), jnp.ones(2, F32))
DROPOUT = sr.Regularization(dropout=0.5)
APPLIES = [
    ("unroll", lambda k: sr.unroll(TRIPWIRE, ONE, XS, regularization=DROPOUT, key=k)),
    ("unroll_batch", lambda k: sr.unroll_batch(TRIPWIRE, ONE, XS[None], regularization=DROPOUT, key=k)),
    ("unroll_bidirectional", lambda k: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, regularization=DROPOUT, key=k)),
    ("recurrent", lambda k: sr.recurrent(TRIPWIRE, regularization=DROPOUT).apply(ONE, XS, key=k)),
    ("recurrent-no-rates", lambda k: sr.recurrent(TRIPWIRE).apply(ONE, XS, key=k)),
    ("bidirectional", lambda k: sr.bidirectional(TRIPWIRE, regularization=DROPOUT).apply(TWO, XS, key=k)),
    ("dense", lambda k: sr.dense(2).apply(DENSE_PARAMS, XS, key=k)),
    ("dropout", lambda k: sr.dropout(0.5).apply((), XS, key=k)),
    ("causal_conv", lambda k: sr.causal_conv(2, 2).apply(CONV_PARAMS, XS, key=k)),
    ("serial", lambda k: sr.serial(sr.recurrent(TRIPWIRE)).apply((ONE,), XS, key=k)),
]
BATCH = jax.random.split(jax.random.key(0), 2)
BAD_KEYS = [
    (0, "key must be a PRNG key such as jax.random.key(0), got 0"),
    (jnp.zeros(2, F32), "key must be a PRNG key such as jax.random.key(0), got an array of dtype float32 and shape (2,)"),
    (BATCH, "key must be one PRNG key of shape (), got a key array of shape (2,)"),
]
KEY_IDS = ["int", "float-array", "batch-of-keys"]


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in INITS])
@pytest.mark.parametrize("key, message", BAD_KEYS + [(None, "key must be a PRNG key such as jax.random.key(0), got None")],
                         ids=KEY_IDS + ["None"])
def test_init_refuses_a_bad_key(call, key, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(key)


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in APPLIES])
@pytest.mark.parametrize("key, message", BAD_KEYS, ids=KEY_IDS)
def test_apply_refuses_a_bad_key(call, key, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(key)


@pytest.mark.parametrize("key, message", BAD_KEYS + [(None, "key must be a PRNG key such as jax.random.key(0), got None")],
                         ids=KEY_IDS + ["None"])
def test_sample_masks_needs_a_key(key, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sr.regularization.sample_masks(key, XS, jnp.zeros(H, F32), dropout=0.5)


def test_typed_and_raw_keys_both_work():
    layer = sr.dense(2)
    typed, raw = layer.init(jax.random.key(0), I), layer.init(jax.random.PRNGKey(0), I)
    for a, b in zip(typed, raw):
        np.testing.assert_array_equal(a, b)
    xs = normal((T, I), seed=1, dtype=F32)
    layer = sr.dropout(0.5)
    np.testing.assert_array_equal(layer.apply((), xs, key=jax.random.key(1)), layer.apply((), xs, key=jax.random.PRNGKey(1)))
    params = random_params(sr.dense(2), I)
    np.testing.assert_array_equal(sr.dense(2).apply(params, xs, key=None), sr.dense(2).apply(params, xs))
