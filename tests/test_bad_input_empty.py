"""Sequences of 0 steps where a last step is needed: a ValueError, not an IndexError from ``ys[-1]``.

A many-to-one layer takes the output at the last valid step, ``last_valid``
takes ``ys[length - 1]`` and the seq2seq bridge reads the first and the last
memory steps: each needs at least one step, and says so before anything
runs (the layers run a tripwire cell).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import tripwire_cell, tripwire_params

I, H = 2, 3
EMPTY = jnp.zeros((0, I), jnp.float32)
TRIPWIRE = tripwire_cell(H)
ONE, TWO = tripwire_params(I, H), tripwire_params(I, H, directions=2)
MODEL = sr.seq2seq.seq2seq(sr.serial(sr.recurrent(sr.gru(H))), sr.gru(H), src_vocab_size=4, tgt_vocab_size=4,
                           embed_size=I)
MODEL_PARAMS = jax.tree.map(  # zeros in the shapes of init: nothing compiled
    lambda l: jnp.asarray(np.zeros(l.shape), l.dtype), jax.eval_shape(MODEL.init, jax.random.key(0))
)


def _layer_message(name):
    return f"{name}(return_sequences=False) needs at least one step to take the last output of, got xs of shape (0, {I})"


LAST_VALID = "last_valid needs at least one step to take the last of, got ys of 0 steps"

CASES = [
    ("recurrent", lambda: sr.recurrent(TRIPWIRE, return_sequences=False).apply(ONE, EMPTY), _layer_message("recurrent")),
    ("recurrent-length", lambda: sr.recurrent(TRIPWIRE, return_sequences=False).apply(ONE, EMPTY, 0),
     _layer_message("recurrent")),
    ("bidirectional", lambda: sr.bidirectional(TRIPWIRE, return_sequences=False).apply(TWO, EMPTY),
     _layer_message("bidirectional")),
    ("serial", lambda: sr.serial(sr.recurrent(TRIPWIRE, return_sequences=False)).apply((ONE,), EMPTY),
     _layer_message("recurrent")),
    ("last_valid", lambda: sr.last_valid(EMPTY), LAST_VALID),
    ("last_valid-length", lambda: sr.last_valid(EMPTY, 0), LAST_VALID),
    ("last_valid-pytree", lambda: sr.last_valid((EMPTY, EMPTY[:, 0])), LAST_VALID),
    ("seq2seq-bridge", lambda: MODEL.encode(MODEL_PARAMS, jnp.zeros(0, jnp.int32)),
     "seq2seq(bridge=True) needs at least one source step (the bridge reads the first and the last valid memory "
     "steps), got src of shape (0,)"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in CASES])
def test_zero_steps_where_a_last_step_is_needed(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
