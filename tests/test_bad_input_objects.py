"""Wrong kinds of object: a cell where a layer is expected, or a layer where a cell is.

A :class:`scanrnn.Cell` and a :class:`scanrnn.Layer` are both NamedTuples of
functions with an ``init`` and an ``apply``; given in place of each other they
used to fail deep inside ``lax.scan`` or ``jax.eval_shape``. Now ``serial`` and
``seq2seq`` refuse anything that is not a ``Layer`` (naming its position, and
saying to wrap a cell in ``recurrent(...)``), and the functions that run a
cell refuse a ``Layer``, with ``InputTypeError`` when they are called.
"""

import re

import jax.numpy as jnp
import pytest

import scanrnn as sr
from helpers import normal, tripwire_cell, tripwire_params
from scanrnn import seq2seq as s2s

T, I, H = 4, 2, 3
XS = normal((T, I), seed=0, dtype=jnp.float32)
TRIPWIRE = tripwire_cell(H)
LAYER = sr.recurrent(TRIPWIRE)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)

NOT_A_LAYER = "must be a Layer (recurrent, bidirectional, dense, ...; wrap a cell in recurrent(...)), got {}"
LAYERS = [
    ("serial-cell", lambda: sr.serial(sr.lstm(H)), "serial: layer 0 must be a Layer, got a Cell; wrap a cell in recurrent(...)"),
    ("serial-second-cell", lambda: sr.serial(sr.dense(2), TRIPWIRE, sr.dense(1)),
     "serial: layer 1 must be a Layer, got a Cell; wrap a cell in recurrent(...)"),
    ("serial-str", lambda: sr.serial(sr.dense(2), "lstm"), "serial: layer 1 " + NOT_A_LAYER.format("str")),
    ("serial-tuple", lambda: sr.serial((LAYER.init, LAYER.apply)), "serial: layer 0 " + NOT_A_LAYER.format("tuple")),
    ("serial-function", lambda: sr.serial(LAYER.apply), "serial: layer 0 " + NOT_A_LAYER.format("function")),
    ("seq2seq-encoder", lambda: s2s.seq2seq(TRIPWIRE, TRIPWIRE, src_vocab_size=3, tgt_vocab_size=3),
     "seq2seq: encoder must be a Layer, got a Cell; wrap a cell in recurrent(...)"),
]

A_LAYER = ("must be a Cell such as scanrnn.lstm(8) (apply(params, carry, x) for one step), got a Layer "
           "(apply(params, xs) for a whole sequence); pass the cell the layer was built from")
NOT_A_CELL = "must be a Cell such as scanrnn.lstm(8) (with init, initial_carry and apply), got {}"
CELLS = [
    ("recurrent", lambda c: sr.recurrent(c), "recurrent: cell"),
    ("bidirectional", lambda c: sr.bidirectional(c), "bidirectional: cell"),
    ("unroll", lambda c: sr.unroll(c, ONE, XS), "cell"),
    ("unroll_batch", lambda c: sr.unroll_batch(c, ONE, XS[None]), "cell"),
    ("unroll_bidirectional", lambda c: sr.unroll_bidirectional(c, TWO, XS), "cell"),
    ("seq2seq", lambda c: s2s.seq2seq(LAYER, c, src_vocab_size=3, tgt_vocab_size=3), "seq2seq: cell"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in LAYERS])
def test_layer_expected(call, message):
    with pytest.raises(sr._checks.InputTypeError, match=re.escape(message)):
        call()


@pytest.mark.parametrize("call, name", [pytest.param(c, n, id=i) for i, c, n in CELLS])
@pytest.mark.parametrize("given, message", [
    (LAYER, A_LAYER), (sr.dense(2), A_LAYER), ("lstm", NOT_A_CELL.format("str")), (None, NOT_A_CELL.format("NoneType")),
], ids=["recurrent-layer", "dense-layer", "str", "None"])
def test_cell_expected(call, name, given, message):
    with pytest.raises(sr._checks.InputTypeError, match=re.escape(f"{name} {message}")):
        call(given)
