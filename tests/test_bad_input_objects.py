"""Wrong kinds of object: a cell where a layer is expected, or a layer where a cell is.

A :class:`scanrnn.Cell` and a :class:`scanrnn.Layer` are both NamedTuples of
functions with an ``init`` and an ``apply``; given in place of each other they
used to fail deep inside ``lax.scan`` or ``jax.eval_shape``. Now ``serial`` and
``seq2seq`` refuse anything that is not a ``Layer`` (naming its position, and
saying to wrap a cell in ``recurrent(...)``), and the functions that run a
cell refuse a ``Layer``, with ``InputTypeError`` when they are called.

The options bundles are refused the same way: ``execution=`` takes only a
:class:`scanrnn.Execution` (or ``None``) and ``regularization=`` only a
:class:`scanrnn.Regularization` (or ``None``); a dict of the fields, a plain
tuple, a bare value or the other bundle raises ``InputTypeError`` before
anything is traced (the tripwire cell).
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
    ("serial-cell", lambda: sr.serial(sr.lstm(H)), "serial: layer 0 must be a Layer, got a GatedCell; wrap a cell in recurrent(...)"),
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


BUNDLE_CALLS = [
    ("unroll", lambda **kw: sr.unroll(TRIPWIRE, ONE, XS, **kw)),
    ("unroll_batch", lambda **kw: sr.unroll_batch(TRIPWIRE, ONE, XS[None], **kw)),
    ("unroll_bidirectional", lambda **kw: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, **kw)),
    ("recurrent", lambda **kw: sr.recurrent(TRIPWIRE, **kw)),
    ("bidirectional", lambda **kw: sr.bidirectional(TRIPWIRE, **kw)),
]
EXECUTION = "execution must be a scanrnn.Execution (e.g. Execution(remat='sqrt')) or None, got {}"
REGULARIZATION = "regularization must be a scanrnn.Regularization (e.g. Regularization(dropout=0.1)) or None, got {}"
BUNDLES = [
    ("execution", {"remat": "sqrt"}, EXECUTION.format("dict")),
    ("execution", (1, "none", "autodiff", False, False), EXECUTION.format("tuple")),
    ("execution", "sqrt", EXECUTION.format("str")),
    ("execution", sr.Regularization(), EXECUTION.format("Regularization")),
    ("regularization", {"dropout": 0.1}, REGULARIZATION.format("dict")),
    ("regularization", (0.1, 0.0, 0.0), REGULARIZATION.format("tuple")),
    ("regularization", 0.1, REGULARIZATION.format("float")),
    ("regularization", sr.Execution(), REGULARIZATION.format("Execution")),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=i) for i, c in BUNDLE_CALLS])
@pytest.mark.parametrize("keyword, given, message", BUNDLES,
                         ids=[f"{k}-{type(g).__name__}" for k, g, _ in BUNDLES])
def test_bundle_expected(call, keyword, given, message):
    with pytest.raises(sr._checks.InputTypeError, match=re.escape(message)):
        call(**{keyword: given})


@pytest.mark.parametrize("call, runs", [pytest.param(c, i.startswith("unroll"), id=i) for i, c in BUNDLE_CALLS])
def test_bundles_of_none_are_the_defaults(call, runs):
    """``None`` is the default bundle: a layer is built; unroll passes its checks and traces the tripwire's step."""
    if not runs:
        call(execution=None, regularization=None)
        return
    with pytest.raises(AssertionError, match="a step was traced"):
        call(execution=None, regularization=None)
