"""Bad numbers and option strings: a ValueError naming the argument, the range and the value.

``epsilon=-1`` gave NaN through the layer norm's ``rsqrt``; it is now refused
when the cell is built, like a non-finite ``forget_bias``, a scan ``unroll``
that is not a positive int, a rate outside ``[0, 1)`` and an unknown option
string (also an unhashable one, which used to raise a bare TypeError). A
value of the wrong type raises ``InputTypeError`` (a ValueError too). The
scan's options come in a :class:`scanrnn.Execution` and the rates in a
:class:`scanrnn.Regularization`; a bad field is refused wherever the bundle
is given (the layer when it is built, ``unroll`` when it is called).
"""

import math
import re

import jax
import pytest

import scanrnn as sr
from helpers import normal, tripwire_cell, tripwire_params

T, I, H = 4, 2, 3
XS = normal((T, I), seed=0, dtype=jax.numpy.float32)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)
TYPE, VALUE = sr._checks.InputTypeError, ValueError


def _cases(calls, values):
    """One case per call and value: ``(call, value, error, message)``, with the message of each value."""
    return [
        pytest.param(call, value, error, message.format(name=name, value=repr(value)), id=f"{case}-{value!r}")
        for case, call, name in calls
        for value, error, message in values
    ]


# --------------------------------------------------------------------------
# epsilon and forget_bias.

EPSILONS = [
    ("layer_norm_rnn", lambda v: sr.layer_norm_rnn(H, epsilon=v), "epsilon"),
    ("layer_norm_lstm", lambda v: sr.layer_norm_lstm(H, epsilon=v), "epsilon"),
]
POSITIVE = "{name} must be a positive finite number, got {value}"


@pytest.mark.parametrize("call, value, error, message", _cases(EPSILONS, [
    (-1, VALUE, POSITIVE), (0.0, VALUE, POSITIVE), (math.inf, VALUE, POSITIVE), (math.nan, VALUE, POSITIVE),
    ("1e-3", TYPE, "{name} must be a positive number, got {value}"),
    (None, TYPE, "{name} must be a positive number, got {value}"),
]))
def test_epsilon(call, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(value)


FORGET_BIASES = [
    ("lstm", lambda v: sr.lstm(H, forget_bias=v), "forget_bias"),
    ("layer_norm_lstm", lambda v: sr.layer_norm_lstm(H, forget_bias=v), "forget_bias"),
]
FINITE = "{name} must be a finite real number, got {value}"


@pytest.mark.parametrize("call, value, error, message", _cases(FORGET_BIASES, [
    (math.inf, VALUE, FINITE), (math.nan, VALUE, FINITE), ("1", TYPE, FINITE), (None, TYPE, FINITE),
]))
def test_forget_bias(call, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(value)


# --------------------------------------------------------------------------
# Positive ints: the scan's unroll and the sizes.

POSITIVE_INTS = [
    ("unroll", lambda v: sr.unroll(TRIPWIRE, ONE, XS, execution=sr.Execution(unroll=v)), "execution.unroll"),
    ("unroll_batch", lambda v: sr.unroll_batch(TRIPWIRE, ONE, XS[None], execution=sr.Execution(unroll=v)),
     "execution.unroll"),
    ("unroll_bidirectional", lambda v: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, execution=sr.Execution(unroll=v)),
     "execution.unroll"),
    ("recurrent", lambda v: sr.recurrent(TRIPWIRE, execution=sr.Execution(unroll=v)), "execution.unroll"),
    ("bidirectional", lambda v: sr.bidirectional(TRIPWIRE, execution=sr.Execution(unroll=v)), "execution.unroll"),
    ("min_gru", lambda v: sr.min_gru(v), "hidden_size"),
    ("min_lstm", lambda v: sr.min_lstm(v), "hidden_size"),
    ("jordan-output_size", lambda v: sr.jordan(H, v), "output_size"),
    ("narx-k", lambda v: sr.narx(H, 1, k=v), "k"),
    ("dense", lambda v: sr.dense(v), "features"),
    ("causal_conv-features", lambda v: sr.causal_conv(v, 2), "features"),
    ("causal_conv-kernel_size", lambda v: sr.causal_conv(2, v), "kernel_size"),
    ("causal_conv-dilation", lambda v: sr.causal_conv(2, 2, dilation=v), "dilation"),
    ("causal_conv-stride", lambda v: sr.causal_conv(2, 2, stride=v), "stride"),
    ("additive_attention", lambda v: sr.seq2seq.additive_attention(v), "attention_size"),
    ("seq2seq-embed_size", lambda v: sr.seq2seq.seq2seq(sr.serial(sr.recurrent(TRIPWIRE)), TRIPWIRE,
                                                        src_vocab_size=3, tgt_vocab_size=3, embed_size=v),
     "embed_size"),
]
INT = "{name} must be a positive int, got {value}"


@pytest.mark.parametrize("call, value, error, message", _cases(POSITIVE_INTS, [
    (0, VALUE, INT), (2.0, TYPE, INT),
]))
def test_positive_int(call, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(value)


# --------------------------------------------------------------------------
# Rates in [0, 1): the fields of a Regularization, and the rates of sample_masks.

RATES = [
    (f"{fn}-{rate}", call, rate)
    for fn, call in [
        ("unroll", lambda **kw: sr.unroll(TRIPWIRE, ONE, XS, regularization=sr.Regularization(**kw),
                                          key=jax.random.key(0))),
        ("unroll_bidirectional", lambda **kw: sr.unroll_bidirectional(TRIPWIRE, TWO, XS,
                                                                      regularization=sr.Regularization(**kw))),
        ("recurrent", lambda **kw: sr.recurrent(TRIPWIRE, regularization=sr.Regularization(**kw))),
        ("bidirectional", lambda **kw: sr.bidirectional(TRIPWIRE, regularization=sr.Regularization(**kw))),
        ("sample_masks", lambda **kw: sr.regularization.sample_masks(jax.random.key(0), XS, XS[0], **kw)),
    ]
    for rate in ("dropout", "recurrent_dropout", "zoneout")
]
RATE = "{name} must be a float in [0, 1), got {value}"


@pytest.mark.parametrize("call, value, error, message", _cases(
    [(case, (lambda call, rate: lambda v: call(**{rate: v}))(call, rate), rate) for case, call, rate in RATES],
    [(1.0, VALUE, RATE), ("0.1", TYPE, RATE)],
))
def test_rate(call, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(value)


@pytest.mark.parametrize("call, value, error, message", _cases(
    [("dropout", lambda v: sr.dropout(v), "rate"), ("jordan", lambda v: sr.jordan(H, 1, alpha=v), "alpha")],
    [(1.0, VALUE, RATE), (-0.5, VALUE, RATE), (math.nan, VALUE, RATE), (True, TYPE, RATE)],
))
def test_layer_rates(call, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(value)


# --------------------------------------------------------------------------
# Option strings keep their messages, for unknown and unhashable values alike.

OPTIONS = [
    ("mode", lambda v: sr.min_gru(H, mode=v), "min_gru: mode must be one of ['sequential', 'associative', 'chunked'], got {value}"),
    ("merge", lambda v: sr.bidirectional(TRIPWIRE, v), "merge must be one of ['concat', 'mean', 'mul', 'sum'], got {value}"),
    ("activation", lambda v: sr.simple_rnn(H, v), "activation must be one of ['relu', 'sigmoid', 'tanh'], got {value}"),
    ("activation-conv", lambda v: sr.causal_conv(2, 2, activation=v),
     "activation must be one of ['relu', 'sigmoid', 'tanh'], got {value}"),
    ("remat", lambda v: sr.unroll(TRIPWIRE, ONE, XS, execution=sr.Execution(remat=v)),
     "execution.remat must be one of ('none', 'step', 'sqrt'), got {value}"),
    ("backward", lambda v: sr.recurrent(TRIPWIRE, execution=sr.Execution(backward=v)),
     "execution.backward must be one of ('autodiff', 'hand'), got {value}"),
    ("padding", lambda v: sr.causal_conv(2, 2, padding=v), "padding must be one of ('causal', 'valid'), got {value}"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in OPTIONS])
@pytest.mark.parametrize("value", ["other", ["list"]], ids=["unknown", "unhashable"])
def test_option_strings(call, message, value):
    with pytest.raises(ValueError, match=re.escape(message.format(value=repr(value)))):
        call(value)


@pytest.mark.parametrize("call", [
    pytest.param(lambda: sr.unroll(TRIPWIRE, ONE, XS, execution=sr.Execution(backward="auto")), id="unroll"),
    pytest.param(lambda: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, execution=sr.Execution(backward="auto")),
                 id="unroll_bidirectional"),
    pytest.param(lambda: sr.recurrent(TRIPWIRE, execution=sr.Execution(backward="auto")), id="recurrent"),
    pytest.param(lambda: sr.bidirectional(TRIPWIRE, execution=sr.Execution(backward="auto")), id="bidirectional"),
])
def test_backward_auto_is_gone(call):
    """``backward="auto"`` (the backend's choice) was removed: only "autodiff" (the default) and "hand" remain."""
    assert sr.Execution().backward == "autodiff"
    with pytest.raises(ValueError, match=re.escape("execution.backward must be one of ('autodiff', 'hand'), got 'auto'")):
        call()
