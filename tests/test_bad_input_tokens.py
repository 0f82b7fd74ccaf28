"""Tokens and labels out of range: a ValueError when they are concrete, defined results when traced.

seq2seq used to read a source token past the vocabulary as the last
embedding (JAX clamps an out-of-bounds gather) and a negative one from the
end, and a target token past it gave a NaN loss. Concrete tokens within their
length are now checked; traced ones (under ``jit``) and the padding past a
length are clamped to ``[0, V - 1]``. ``ctc_loss`` checked concrete labels
already (in ``[0, K)``, not the blank); a traced labelling with a label no
path emits used to give a finite, even negative, loss, and is now scored as
infeasible (``p = 0``: optax's loss of about 1e5, with a zero gradient).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from scanrnn import ctc
from scanrnn import seq2seq as s2s

I, H = 2, 3
SRC_VOCAB, TGT_VOCAB = 5, 4
MODEL = s2s.seq2seq(sr.serial(sr.recurrent(sr.gru(H))), sr.gru(H), src_vocab_size=SRC_VOCAB,
                    tgt_vocab_size=TGT_VOCAB, embed_size=I, start_token=1, end_token=2)
_rng = np.random.default_rng(0)
PARAMS = jax.tree.map(  # noise in the shapes of init: nothing compiled
    lambda l: jnp.asarray(0.5 * _rng.standard_normal(l.shape), l.dtype), jax.eval_shape(MODEL.init, jax.random.key(0))
)
SRC, TGT = jnp.array([1, 2, 3, 4]), jnp.array([3, 0, 2])
CARRY = jax.eval_shape(MODEL.encode, PARAMS, SRC)  # shapes only


def _range(name, vocab, lo, hi, valid=None):
    where = "" if valid is None else f" (its first {valid}, the valid ones)"
    return f"{name}{where} must lie in [0, {vocab}) (the vocabulary size), got values in [{lo}, {hi}]"


CASES = [
    ("encode-above", lambda: MODEL.encode(PARAMS, jnp.array([1, 5, 0])), _range("src", SRC_VOCAB, 0, 5)),
    ("encode-negative", lambda: MODEL.encode(PARAMS, jnp.array([1, -1, 0])), _range("src", SRC_VOCAB, -1, 1)),
    ("encode-within-length", lambda: MODEL.encode(PARAMS, jnp.array([1, 9, -1]), 2),
     _range("src", SRC_VOCAB, 1, 9, valid=2)),
    ("apply-src", lambda: MODEL.apply(PARAMS, jnp.array([7, 1]), None, TGT), _range("src", SRC_VOCAB, 1, 7)),
    ("apply-tgt", lambda: MODEL.apply(PARAMS, SRC, None, jnp.array([3, 4])), _range("tgt", TGT_VOCAB, 3, 4)),
    ("loss-src", lambda: MODEL.loss(PARAMS, jnp.array([1, -3]), 2, TGT, 3), _range("src", SRC_VOCAB, -3, 1, valid=2)),
    ("loss-tgt", lambda: MODEL.loss(PARAMS, SRC, 4, jnp.array([3, 4, 0]), 2), _range("tgt", TGT_VOCAB, 3, 4, valid=2)),
    ("step", lambda: MODEL.step(PARAMS, CARRY, 4), _range("seq2seq step: the token", TGT_VOCAB, 4, 4)),
    ("step-negative", lambda: MODEL.step(PARAMS, CARRY, jnp.asarray(-1)), _range("seq2seq step: the token", TGT_VOCAB, -1, -1)),
    ("ctc-above", lambda: ctc.ctc_loss(jnp.zeros((4, 3)), jnp.array([1, 3])),
     "ctc_loss: labels must lie in [0, 3) (the number of classes K), got values in [1, 3]"),
    ("ctc-negative", lambda: ctc.ctc_loss(jnp.zeros((4, 3)), jnp.array([-1, 2])),
     "ctc_loss: labels must lie in [0, 3) (the number of classes K), got values in [-1, 2]"),
    ("ctc-blank", lambda: ctc.ctc_loss(jnp.zeros((4, 3)), jnp.array([1, 0, 2]), label_length=2),
     "ctc_loss: labels must not contain the blank (0), got [1, 0]"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in CASES])
def test_concrete_tokens_out_of_range(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_padding_past_the_length_is_clamped_not_checked():
    tokens = sr._checks.token_range("src", np.array([1, 4, -1, 9]), SRC_VOCAB, jnp.asarray(2))
    np.testing.assert_array_equal(tokens, [1, 4, 0, 4])


def test_traced_tokens_are_clamped():
    """Under jit nothing can be checked: out-of-range tokens read the first or last embedding, never NaN."""
    loss = jax.jit(MODEL.loss)
    bad = loss(PARAMS, jnp.array([1, 9, -4, 3]), 4, jnp.array([3, 7, -2]), 3)
    clamped = loss(PARAMS, jnp.array([1, 4, 0, 3]), 4, jnp.array([3, 3, 0]), 3)
    assert np.isfinite(bad)
    np.testing.assert_array_equal(bad, clamped)


@pytest.mark.slow
def test_traced_ctc_labels_no_path_emits_are_infeasible():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3)), jnp.float32)
    loss = jax.jit(jax.value_and_grad(ctc.ctc_loss))
    for labels in ([1, 3], [-1, 2], [1, 0]):  # above K, negative, the blank
        value, grad = loss(logits, jnp.array(labels))
        assert 0.99e5 < value < 1.01e5  # optax's log(0) = -1e5, plus a few nats
        np.testing.assert_array_equal(grad, 0.0)
    # Valid traced labels keep their loss: test_ctc.py checks jax.vmap(ctc_loss) against its references.
