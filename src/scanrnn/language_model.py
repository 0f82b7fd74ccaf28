"""A character-level language model: stateful evaluation in bits per character, and sampling.

A character model reads one-hot characters ``[T, V]`` and gives next-character
logits ``[T, V]``, for instance ``serial(recurrent(lstm(H)), dense(V))``, with
the ids of :mod:`scanrnn.data.text`. :func:`stream_bits_per_char` scores it on
a long stream statefully, the carry handed from one chunk to the next, and
:func:`sample` generates text with a jit-compiled :func:`jax.lax.scan` that
feeds each sampled character back through the model's stateful call
``model.apply(params, x, carry=c)``.

Bits per character of a model ``p`` on characters ``c_1 .. c_N`` are
``-(1/N) sum_t log2 p(c_t | c_<t)``; a model that ignores the context can do
no better than the entropy of the character frequencies (the unigram
baseline, :func:`scanrnn.data.text.unigram_bits`).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks
from .data.text import Vocabulary, _check_ids, _check_vocabulary, decode, encode
from .layers import Layer
from .train import batch_initial_carry, stream_batches

__all__ = [
    "stream_bits_per_char",
    "sample_ids",
    "sample",
]

Array = jax.Array


# --------------------------------------------------------------------------
# A model on one-hot characters: stateful evaluation and sampling.


def _float_dtype(params):
    leaves = [l for l in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(l), jnp.floating)]
    if not leaves:
        raise ValueError("params have no floating-point leaf to take the input dtype from")
    return jnp.result_type(leaves[0])


def _check_logits(logits, vocab_size: int, steps: int) -> None:
    if jnp.shape(logits) != (steps, vocab_size):
        raise ValueError(
            f"the model must map one-hot characters [T, {vocab_size}] to logits [T, {vocab_size}]; "
            f"for T = {steps} it gave shape {jnp.shape(logits)}"
        )


@functools.partial(jax.jit, static_argnames=("model", "vocab_size"))
def _stream_nll(model: Layer, params, inputs, targets, *, vocab_size: int):
    """Sum of ``-ln p`` over every target of ``[N, B, K]`` chunks, the carry passed from chunk to chunk."""
    dtype = _float_dtype(params)
    carry = batch_initial_carry(model, params, inputs.shape[1])
    one = lambda x, c: model.apply(params, x, carry=c)  # noqa: E731

    def chunk(carry, chunk_ids):
        x, y = chunk_ids
        logits, carry = jax.vmap(one)(jax.nn.one_hot(x, vocab_size, dtype=dtype), carry)
        _check_logits(logits[0], vocab_size, x.shape[1])
        return carry, jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    _, sums = jax.lax.scan(chunk, carry, (inputs, targets))
    return jnp.sum(sums)


def stream_bits_per_char(model: Layer, params, ids, vocab_size: int, *, batch_size: int, chunk_size: int) -> tuple:
    """Bits per character of ``model`` on one long stream of ids, evaluated statefully.

    The stream is cut by :func:`scanrnn.train.stream_batches` into
    ``batch_size`` parallel streams read ``chunk_size`` steps at a time; the
    carry at the end of a chunk is the next chunk's initial carry, so every
    prediction sees all the characters before it in its stream (the first
    chunk starts from :func:`scanrnn.train.batch_initial_carry`). Inputs are
    one-hot ``[chunk_size, vocab_size]`` in the params' dtype.

    Returns:
      ``(bits, count)``: the mean of ``-log2 p`` over the ``count`` characters
      predicted (what ``stream_batches`` keeps of the stream: the targets of
      ``num_chunks * batch_size * chunk_size`` steps).
    """
    _check_ids("ids", ids, vocab_size)
    inputs, targets = stream_batches(np.asarray(ids), batch_size, chunk_size)
    count = int(np.prod(np.shape(targets)))
    nll = _stream_nll(model, params, jnp.asarray(inputs), jnp.asarray(targets), vocab_size=vocab_size)
    return float(nll) / count / math.log(2.0), count


@functools.partial(jax.jit, static_argnames=("model", "length", "vocab_size"))
def _sample_ids(model: Layer, params, prime_ids, temperature, key, *, length: int, vocab_size: int):
    dtype = _float_dtype(params)
    one_hot = lambda ids: jax.nn.one_hot(ids, vocab_size, dtype=dtype)  # noqa: E731
    # Read the prime: its last output gives the distribution of the first new character.
    logits, carry = model.apply(params, one_hot(prime_ids), carry=model.initial_carry(params))
    _check_logits(logits, vocab_size, prime_ids.shape[0])
    temperature = jnp.asarray(temperature, logits.dtype)

    def step(state, k):
        carry, logits = state
        c = jax.random.categorical(k, logits / temperature)  # c ~ softmax(logits / temperature)
        logits, carry = model.apply(params, one_hot(c[None]), carry=carry)  # feed c back: one step
        return (carry, logits[0]), c

    _, ids = jax.lax.scan(step, (carry, logits[-1]), jax.random.split(key, length))
    return ids.astype(jnp.int32)


def sample_ids(model: Layer, params, prime_ids, length: int, *, vocab_size: int, temperature: float = 1.0, key) -> Array:
    """Generate ``length`` ids after ``prime_ids [P]`` (P >= 1) from a model on one-hot inputs.

    The model reads the prime in one stateful call, then a jit-compiled
    :func:`jax.lax.scan` draws ``c_t ~ softmax(logits_t / temperature)`` and
    feeds its one-hot back through ``model.apply(params, x [1, V],
    carry=carry)``, one step at a time. A low temperature approaches greedy
    (argmax) decoding, 1 samples the model's distribution.

    Returns:
      ``[length]`` int32 ids (without the prime). The same ``key`` gives
      the same ids.
    """
    _checks.positive_int("length", length)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a finite float > 0, got {temperature!r}")
    if not isinstance(key, jax.Array):
        raise ValueError(f"key must be a jax.random key, got {type(key).__name__}")
    prime_ids = _check_ids("prime_ids", prime_ids, vocab_size)
    return _sample_ids(model, params, jnp.asarray(prime_ids, jnp.int32), float(temperature), key,
                       length=int(length), vocab_size=int(vocab_size))


def sample(
    model: Layer,
    params,
    vocab: Vocabulary,
    prime: str,
    length: int,
    *,
    temperature: float = 1.0,
    key,
    start: Optional[str] = None,
) -> str:
    """Text from a character model: ``prime`` followed by ``length`` sampled characters.

    Args:
      model: a :class:`scanrnn.Layer` mapping one-hot characters
        ``[T, vocab.size]`` to next-character logits ``[T, vocab.size]``
        with the stateful call ``apply(params, xs, carry=carry) -> (ys,
        carry)``, e.g. ``serial(recurrent(lstm(H)), dense(vocab.size))``.
      prime: the text the model reads first (characters outside ``vocab``
        read as the unknown symbol).
      length: the number of characters to generate.
      temperature: divides the logits before sampling; must be > 0.
      key: a :func:`jax.random.key`.
      start: one character read before ``prime`` and not returned (a newline
        is a natural start for source code); needed when ``prime`` is empty.

    >>> from scanrnn import dense, lstm, recurrent, serial
    >>> from scanrnn.data.text import build_vocabulary
    >>> vocab = build_vocabulary("def f(x): return x")
    >>> model = serial(recurrent(lstm(8)), dense(vocab.size))
    >>> params = model.init(jax.random.key(0), vocab.size)
    >>> out = sample(model, params, vocab, "def ", 10, temperature=0.8, key=jax.random.key(1))
    >>> out[:4], len(out), set(out) <= set(vocab.symbols)
    ('def ', 14, True)
    """
    _check_vocabulary(vocab)
    if not isinstance(prime, str):
        raise ValueError(f"prime must be a str, got {type(prime).__name__}")
    if start is not None and (not isinstance(start, str) or len(start) != 1):
        raise ValueError(f"start must be one character or None, got {start!r}")
    if not prime and start is None:
        raise ValueError("an empty prime needs a start symbol (start='\\n', say): the model must read something first")
    ids = sample_ids(model, params, encode(vocab, (start or "") + prime), length,
                     vocab_size=vocab.size, temperature=temperature, key=key)
    return prime + decode(vocab, np.asarray(ids))
