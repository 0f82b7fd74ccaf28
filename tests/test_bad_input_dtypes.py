"""Bad dtypes: complex inputs and carries of another dtype than the params' raise, naming both dtypes.

Complex numbers may live inside a cell, but what crosses its boundary (the
inputs of a cell, an unroll or a layer) is real. A carry must have the dtype
``initial_carry`` gives it (the params'): a float64 carry for float32 params
would otherwise make ``lax.scan`` fail with an opaque type error, or run the
whole sequence in float64 without a word.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import normal, random_params, tripwire_cell, tripwire_params

T, I, H = 4, 2, 3
F32, F64, C64 = jnp.float32, jnp.float64, jnp.complex64
XS = normal((T, I), seed=0, dtype=F32)
COMPLEX = XS.astype(C64)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)

# (name, factory, the carry's first field)
CELLS = [
    ("simple_rnn", lambda: sr.simple_rnn(H), "h"),
    ("lstm", lambda: sr.lstm(H), "h"),
    ("gru", lambda: sr.gru(H), "h"),
    ("layer_norm_rnn", lambda: sr.layer_norm_rnn(H), "h"),
    ("layer_norm_lstm", lambda: sr.layer_norm_lstm(H), "h"),
    ("min_gru", lambda: sr.min_gru(H), "h"),
    ("min_lstm", lambda: sr.min_lstm(H), "h"),
    ("jordan", lambda: sr.jordan(H, 2), "memory"),
    ("elman", lambda: sr.elman(H, 2), "context"),
    ("narx", lambda: sr.narx(H, 2), "inputs"),
]
CELL_IDS = [c[0] for c in CELLS]


def _carry(cell, params, dtype):
    """A carry in the shapes of ``initial_carry``, of ``dtype`` (zeros from NumPy: nothing computed)."""
    shapes = jax.eval_shape(cell.initial_carry, params)
    return jax.tree.map(lambda l: jnp.asarray(np.zeros(l.shape), dtype), shapes)


# --------------------------------------------------------------------------
# Complex inputs.


@pytest.mark.parametrize("name, factory, _", CELLS, ids=CELL_IDS)
def test_cell_refuses_complex_x(name, factory, _):
    cell = factory()
    params = random_params(cell, I)
    message = re.escape(f"{name}: x must hold real numbers (floating or integer), got dtype complex64")
    with pytest.raises(sr._checks.InputTypeError, match=message):
        cell.apply(params, _carry(cell, params, F32), COMPLEX[0])


DENSE = sr.dense(2)
DENSE_PARAMS = sr.DenseParams(jnp.ones((2, I), F32), jnp.ones(2, F32))
CONV_PARAMS = sr.ConvParams(jnp.ones((2, I, 2), F32), jnp.ones(2, F32))

SEQUENCE_CALLS = [
    ("unroll", lambda xs: sr.unroll(TRIPWIRE, ONE, xs), "xs"),
    ("unroll_batch", lambda xs: sr.unroll_batch(TRIPWIRE, ONE, xs[None]), "xs"),
    ("unroll_bidirectional", lambda xs: sr.unroll_bidirectional(TRIPWIRE, TWO, xs), "xs"),
    ("recurrent", lambda xs: sr.recurrent(TRIPWIRE).apply(ONE, xs), "xs"),
    ("bidirectional", lambda xs: sr.bidirectional(TRIPWIRE).apply(TWO, xs), "xs"),
    ("serial", lambda xs: sr.serial(sr.recurrent(TRIPWIRE)).apply((ONE,), xs), "xs"),
    ("dense-sequence", lambda xs: DENSE.apply(DENSE_PARAMS, xs), "xs"),
    ("dense-vector", lambda xs: DENSE.apply(DENSE_PARAMS, xs[0]), "dense: x"),
    ("causal_conv", lambda xs: sr.causal_conv(2, 2).apply(CONV_PARAMS, xs), "xs"),
    ("dropout", lambda xs: sr.dropout(0.5).apply((), xs, key=jax.random.key(0)), "dropout: xs"),
    ("dropout-eval", lambda xs: sr.dropout(0.5).apply((), xs), "dropout: xs"),
]


@pytest.mark.parametrize("_, call, name", SEQUENCE_CALLS, ids=[c[0] for c in SEQUENCE_CALLS])
def test_complex_inputs_refused(_, call, name):
    message = re.escape(f"{name} must hold real numbers (floating or integer), got dtype complex64")
    with pytest.raises(sr._checks.InputTypeError, match=message):
        call(COMPLEX)


# --------------------------------------------------------------------------
# Carries of another dtype.


@pytest.mark.parametrize("name, factory, field", CELLS, ids=CELL_IDS)
def test_cell_refuses_a_carry_of_another_dtype(name, factory, field):
    cell = factory()
    params = random_params(cell, I)
    message = re.escape(
        f"{name}: carry.{field} must have the params' dtype float32 (as initial_carry gives it), got float64"
    )
    if isinstance(cell, sr.LinearCell):  # the kind checks the carry against initial_carry
        message = re.escape("carry must have the dtypes of cell.initial_carry(params), ['float32']; got ['float64']")
    with pytest.raises(ValueError, match=message):
        cell.apply(params, _carry(cell, params, F64), XS[0])


LSTM = sr.lstm(H)
LSTM_PARAMS = random_params(LSTM, I)
LSTM_TWO = jax.tree.map(lambda a: jnp.stack([a, a]), LSTM_PARAMS)
LSTM_F64 = _carry(LSTM, LSTM_PARAMS, F64)
LSTM_F64_TWO = jax.tree.map(lambda a: jnp.stack([a, a]), LSTM_F64)
UNROLL = "carry must have the dtypes of cell.initial_carry(params), ['float32', 'float32']; got ['float64', 'float64']"

CARRY_CALLS = [
    ("unroll", lambda: sr.unroll(LSTM, LSTM_PARAMS, XS, LSTM_F64), UNROLL),
    ("unroll-user-cell", lambda: sr.unroll(TRIPWIRE, ONE, XS, jnp.zeros(H, F64)),
     "carry must have the dtypes of cell.initial_carry(params), ['float32']; got ['float64']"),
    ("unroll_batch", lambda: sr.unroll_batch(LSTM, LSTM_PARAMS, XS[None], jax.tree.map(lambda c: c[None], LSTM_F64)),
     UNROLL),
    ("unroll_bidirectional", lambda: sr.unroll_bidirectional(LSTM, LSTM_TWO, XS, LSTM_F64_TWO), UNROLL),
    ("recurrent", lambda: sr.recurrent(LSTM).apply(LSTM_PARAMS, XS, carry=LSTM_F64),
     "recurrent: carry must have the dtypes ['float32', 'float32'] (the layer's initial_carry), "
     "got ['float64', 'float64']"),
    ("recurrent-learned", lambda: sr.recurrent(LSTM, learn_initial_carry=True).apply(
        sr.RecurrentParams(LSTM_PARAMS, LSTM_F64), XS), UNROLL),
    ("bidirectional", lambda: sr.bidirectional(LSTM).apply(LSTM_TWO, XS, carry=LSTM_F64_TWO),
     "bidirectional: carry must have the dtypes ['float32', 'float32'] (the layer's initial_carry), "
     "got ['float64', 'float64']"),
    ("serial", lambda: sr.serial(sr.recurrent(LSTM)).apply((LSTM_PARAMS,), XS, carry=(LSTM_F64,)),
     "recurrent: carry must have the dtypes ['float32', 'float32']"),
]


@pytest.mark.parametrize("_, call, message", CARRY_CALLS, ids=[c[0] for c in CARRY_CALLS])
def test_carry_of_another_dtype_refused(_, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
