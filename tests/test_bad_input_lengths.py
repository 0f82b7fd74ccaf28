"""Bad lengths: a ValueError naming the argument, before any step runs; traced lengths clamped to [0, T].

Every function of the model side that takes a ``length`` checks it with
``scanrnn._checks.length``: an integer scalar (a float names its dtype, also
when it is traced), in ``[0, T]`` when it is concrete. The recurrent ones
run a tripwire cell, whose step raises AssertionError if it is ever traced.
A traced length cannot be checked on the host: it is clamped to ``[0, T]``,
so ``[60, -5, 20]`` for ``T = 20`` gives exactly what ``[20, 0, 20]`` gives.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import normal, random_params, tripwire_cell, tripwire_params
from scanrnn import ctc

T, I, H = 4, 2, 3
F32 = jnp.float32
XS = normal((T, I), seed=0, dtype=F32)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)
DENSE = sr.dense(2)
DENSE_PARAMS = sr.DenseParams(jnp.ones((2, I), F32), jnp.ones(2, F32))
CONV = sr.causal_conv(2, 2)
CONV_PARAMS = sr.ConvParams(jnp.ones((2, I, 2), F32), jnp.ones(2, F32))
SEQ2SEQ = sr.seq2seq.seq2seq(sr.serial(sr.recurrent(sr.gru(H))), sr.gru(H), src_vocab_size=5, tgt_vocab_size=5, embed_size=I)
SEQ2SEQ_PARAMS = jax.tree.map(  # zeros in the shapes of init: nothing compiled
    lambda l: jnp.asarray(np.zeros(l.shape), l.dtype), jax.eval_shape(SEQ2SEQ.init, jax.random.key(0))
)
SRC = jnp.array([1, 2, 3, 4])
LOGITS = jnp.zeros((T, 3), F32)

STEPS = "the number of steps"
# (id, function of the length, argument name, what its upper bound is)
CALLS = [
    ("unroll", lambda n: sr.unroll(TRIPWIRE, ONE, XS, length=n), "length", STEPS),
    ("unroll-reverse", lambda n: sr.unroll(TRIPWIRE, ONE, XS, length=n, reverse=True), "length", STEPS),
    ("unroll_bidirectional", lambda n: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, length=n), "length", STEPS),
    ("recurrent", lambda n: sr.recurrent(TRIPWIRE).apply(ONE, XS, n), "length", STEPS),
    ("recurrent-last", lambda n: sr.recurrent(TRIPWIRE, False).apply(ONE, XS, n), "length", STEPS),
    ("bidirectional", lambda n: sr.bidirectional(TRIPWIRE).apply(TWO, XS, n), "length", STEPS),
    ("dense", lambda n: DENSE.apply(DENSE_PARAMS, XS, n), "length", STEPS),
    ("causal_conv", lambda n: CONV.apply(CONV_PARAMS, XS, n), "length", STEPS),
    ("dropout", lambda n: sr.dropout(0.5).apply((), XS, n), "length", STEPS),
    ("serial", lambda n: sr.serial(sr.recurrent(TRIPWIRE)).apply((ONE,), XS, n), "length", STEPS),
    ("flip_valid", lambda n: sr.flip_valid(XS, n), "length", STEPS),
    ("last_valid", lambda n: sr.last_valid(XS, n), "length", STEPS),
    ("seq2seq-encode", lambda n: SEQ2SEQ.encode(SEQ2SEQ_PARAMS, SRC, n), "src_length", STEPS),
    ("ctc_loss-logit_length", lambda n: ctc.ctc_loss(LOGITS, jnp.array([1, 2, 1, 2]), logit_length=n),
     "logit_length", "the number of frames T"),
    ("ctc_loss-label_length", lambda n: ctc.ctc_loss(LOGITS, jnp.array([1, 2, 1, 2]), label_length=n),
     "label_length", "the number of labels L"),
    ("ctc_greedy_decode", lambda n: ctc.ctc_greedy_decode(LOGITS, logit_length=n),
     "logit_length", "the number of frames T"),
]
IDS = [c[0] for c in CALLS]


@pytest.mark.parametrize("_, call, name, what", CALLS, ids=IDS)
@pytest.mark.parametrize(
    "length, given",
    [
        (2.5, "2.5"),
        (True, "True"),
        (jnp.array(2.0, F32), "an array of dtype float32 and shape ()"),
        ("traced", "a traced array of dtype float32 and shape ()"),
    ],
    ids=["float", "bool", "float-array", "traced-float"],
)
def test_non_integer_length_names_its_dtype(_, call, name, what, length, given):
    message = re.escape(f"{name} must be an integer scalar, got {given}")
    with pytest.raises(sr._checks.InputTypeError, match=message):
        if isinstance(length, str):  # under jax.vmap over two lengths the check sees a tracer
            jax.vmap(call)(jnp.array([1.0, 2.0], F32))
        else:
            call(length)


@pytest.mark.parametrize("_, call, name, what", CALLS, ids=IDS)
@pytest.mark.parametrize("length", [-1, T + 1])
def test_concrete_length_out_of_range(_, call, name, what, length):
    with pytest.raises(ValueError, match=re.escape(f"{name} must lie in [0, {T}] ({what}), got {length}")):
        call(np.int32(length))


@pytest.mark.parametrize("_, call, name, what", CALLS, ids=IDS)
def test_length_of_a_batch(_, call, name, what):
    message = re.escape(f"{name} must be a scalar (one sequence; vmap adds the batch), got shape (2,)")
    with pytest.raises(ValueError, match=message):
        call(jnp.array([1, 2]))


@pytest.mark.parametrize(
    "lengths, error, message",
    [
        (jnp.array([1.0, 2.0], F32), sr._checks.InputTypeError, "length must be an integer array, got dtype float32"),
        ("traced", sr._checks.InputTypeError, "length must be an integer array, got dtype float32"),
        (jnp.array([1, 2, 3]), ValueError, "length must have shape (2,) (one per example), got shape (3,)"),
        (np.array([0, 5]), ValueError, f"length must lie in [0, {T}], got values in [0, 5]"),
        (np.array([-1, 4]), ValueError, f"length must lie in [0, {T}], got values in [-1, 4]"),
    ],
    ids=["float", "traced-float", "shape", "above", "below"],
)
def test_unroll_batch_lengths(lengths, error, message):
    xs = jnp.stack([XS, XS])

    def run(n):
        return sr.unroll_batch(TRIPWIRE, ONE, xs, length=n)

    with pytest.raises(error, match=re.escape(message)):
        jax.eval_shape(run, jax.ShapeDtypeStruct((2,), F32)) if isinstance(lengths, str) else run(lengths)


# --------------------------------------------------------------------------
# Traced lengths are clamped: exactly the result of the clamped lengths, no NaN.

LONG = 20
BAD, CLAMPED = jnp.array([60, -5, 20], jnp.int32), jnp.array([20, 0, 20], jnp.int32)


def _gru():
    cell = sr.gru(H)
    return cell, random_params(cell, I)


def _run_batch(cell, params, xs, n):
    return sr.unroll_batch(cell, params, xs, length=n, reverse=True)


def _run_layer(layer, params, xs, n):
    return jax.vmap(layer.apply, in_axes=(None, 0, 0))(params, xs, n)


@pytest.mark.parametrize("case", ["unroll_batch-reverse", "bidirectional", "recurrent-last"])
def test_traced_lengths_are_clamped(case):
    cell, params = _gru()
    xs = normal((3, LONG, I), seed=1, dtype=F32)
    if case == "unroll_batch-reverse":
        run = jax.jit(lambda n: _run_batch(cell, params, xs, n))
    else:
        layer = sr.bidirectional(cell) if case == "bidirectional" else sr.recurrent(cell, return_sequences=False)
        layer_params = jax.tree.map(lambda a: jnp.stack([a, a + 0.1]), params) if case == "bidirectional" else params
        run = jax.jit(lambda n: _run_layer(layer, layer_params, xs, n))
    got, expected = run(BAD), run(CLAMPED)  # one program: the lengths are traced
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g, e)
    with pytest.raises(ValueError, match=re.escape(f"length must lie in [0, {LONG}], got values in [-5, 60]")):
        _run_batch(cell, params, xs, BAD)  # concrete, they raise


def test_flip_valid_and_last_valid_clamp_traced_lengths():
    xs = jnp.arange(4.0)
    flipped = jax.jit(jax.vmap(sr.flip_valid, in_axes=(None, 0)))(xs, jnp.array([9, -2, 2]))
    np.testing.assert_array_equal(flipped, [[3, 2, 1, 0], [0, 1, 2, 3], [1, 0, 2, 3]])
    last = jax.jit(jax.vmap(sr.last_valid, in_axes=(None, 0)))(xs, jnp.array([9, -2, 2]))
    np.testing.assert_array_equal(last, [3, 0, 1])


@pytest.mark.slow
def test_concrete_batch_lengths_captured_under_jit_are_checked_on_the_host():
    """Lengths a jitted function closes over are concrete: checked (not traced), in range or refused."""
    cell = sr.gru(3)
    params = cell.init(jax.random.key(0), 2)
    xs = jnp.ones((2, 4, 2), jnp.float32)
    good, bad = jnp.array([2, 4]), jnp.array([2, 5])
    ys = jax.jit(lambda x: sr.unroll_batch(cell, params, x, length=good)[1])(xs)
    assert bool((ys[0, 2:] == 0).all()) and bool((ys[1] != 0).any())
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [2, 5]")):
        jax.jit(lambda x: sr.unroll_batch(cell, params, x, length=bad)[1])(xs)
