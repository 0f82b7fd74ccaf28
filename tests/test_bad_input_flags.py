"""Booleans that must be booleans: a truthy string or an int raises, when the function is called.

``reverse="no"`` used to reverse (a non-empty string is true); every bool
option of the model side now takes only ``True`` or ``False``, checked by
``scanrnn._checks.flag`` before anything is built or traced (the recurrent
ones run a tripwire cell). The flags of a :class:`scanrnn.Execution`
(``hoist``, ``one_scan``) are checked the same way wherever the bundle is
given, and name themselves ``execution.hoist`` and ``execution.one_scan``;
they no longer take ``None`` (there is no backend's default any more).
"""

import re

import jax
import pytest

import scanrnn as sr
from helpers import normal, tripwire_cell, tripwire_params

T, I, H = 4, 2, 3
XS = normal((T, I), seed=0, dtype=jax.numpy.float32)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)
ENCODER = sr.serial(sr.recurrent(sr.gru(H)))

# (id, function of the flag's value, the flag's name, whether None is allowed)
FLAGS = [
    ("unroll-reverse", lambda v: sr.unroll(TRIPWIRE, ONE, XS, reverse=v), "reverse", False),
    ("unroll_batch-reverse", lambda v: sr.unroll_batch(TRIPWIRE, ONE, XS[None], reverse=v), "reverse", False),
    ("unroll-hoist", lambda v: sr.unroll(TRIPWIRE, ONE, XS, execution=sr.Execution(hoist=v)), "execution.hoist",
     False),
    ("unroll_bidirectional-one_scan",
     lambda v: sr.unroll_bidirectional(TRIPWIRE, TWO, XS, execution=sr.Execution(one_scan=v)),
     "execution.one_scan", False),
    ("recurrent-return_sequences", lambda v: sr.recurrent(TRIPWIRE, return_sequences=v), "return_sequences", False),
    ("recurrent-learn_initial_carry", lambda v: sr.recurrent(TRIPWIRE, learn_initial_carry=v),
     "learn_initial_carry", False),
    ("recurrent-hoist", lambda v: sr.recurrent(TRIPWIRE, execution=sr.Execution(hoist=v)), "execution.hoist", False),
    ("bidirectional-return_sequences", lambda v: sr.bidirectional(TRIPWIRE, return_sequences=v),
     "return_sequences", False),
    ("bidirectional-learn_initial_carry", lambda v: sr.bidirectional(TRIPWIRE, learn_initial_carry=v),
     "learn_initial_carry", False),
    ("bidirectional-one_scan", lambda v: sr.bidirectional(TRIPWIRE, execution=sr.Execution(one_scan=v)),
     "execution.one_scan", False),
    ("lstm-peephole", lambda v: sr.lstm(H, peephole=v), "peephole", False),
    ("gru-reset_after", lambda v: sr.gru(H, reset_after=v), "reset_after", False),
    ("dropout-broadcast_time", lambda v: sr.dropout(0.5, broadcast_time=v), "broadcast_time", False),
    ("seq2seq-bridge", lambda v: sr.seq2seq.seq2seq(ENCODER, sr.gru(H), src_vocab_size=4, tgt_vocab_size=4,
                                                    bridge=v), "bridge", False),
]


# Each flag with a string, an int, and None where None is not allowed.
CASES = [
    pytest.param(call, name, allow_none, value, id=f"{case}-{type(value).__name__}")
    for case, call, name, allow_none in FLAGS
    for value in ("no", 1, None)
    if not (value is None and allow_none)
]


@pytest.mark.parametrize("call, name, allow_none, value", CASES)
def test_flag_must_be_a_bool(call, name, allow_none, value):
    allowed = "None, True or False" if allow_none else "True or False"
    with pytest.raises(sr._checks.InputTypeError, match=re.escape(f"{name} must be {allowed}, got {value!r}")):
        call(value)
