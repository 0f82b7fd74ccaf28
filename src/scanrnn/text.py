"""Character-level language modelling: a corpus, a vocabulary, a baseline, evaluation and sampling.

The corpus is one that every machine with Python has: the source files of
Python's own standard library. They are split into training and validation
text by FILE, so the validation text is unseen code, not other lines of the
files the model trained on::

    corpus = stdlib_corpus(max_chars=200_000, valid_fraction=0.1, seed=0)
    vocab = build_vocabulary(corpus.train, min_count=10)
    train_ids, valid_ids = encode(vocab, corpus.train), encode(vocab, corpus.valid)
    unigram_bits(train_ids, valid_ids, vocab.size)        # the baseline, bits per character

A character model reads one-hot characters ``[T, V]`` and gives next-character
logits ``[T, V]``, for instance ``serial(recurrent(lstm(H)), dense(V))``.
:func:`stream_bits_per_char` scores it on a long stream statefully, the
carry handed from one chunk to the next, and :func:`sample` generates text
with a jit-compiled :func:`jax.lax.scan` that feeds each sampled character
back through the model's stateful call ``model.apply(params, x, carry=c)``.

Bits per character of a model ``p`` on characters ``c_1 .. c_N`` are
``-(1/N) sum_t log2 p(c_t | c_<t)``; a model that ignores the context can do
no better than the entropy of the character frequencies (the unigram
baseline).
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import sysconfig
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .layers import Layer
from .train import batch_initial_carry, stream_batches

Array = jax.Array

UNKNOWN = "\ufffd"  # how decode writes the unknown symbol (id 0)
TEST_FOLDERS = ("test", "tests", "idle_test")


# --------------------------------------------------------------------------
# The corpus.


class Corpus(NamedTuple):
    """Training and validation text from disjoint sets of files."""

    train: str
    valid: str
    train_files: tuple  # paths (relative to the root, POSIX form) read into train, in order
    valid_files: tuple  # the same for valid; no path is in both


def stdlib_root() -> pathlib.Path:
    """The folder of Python's standard library, ``sysconfig.get_paths()["stdlib"]``."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root=None, *, exclude_tests: bool = True) -> list:
    """The ``*.py`` files under ``root`` (default :func:`stdlib_root`), sorted, as relative POSIX paths.

    Files under ``site-packages`` (or ``dist-packages``) and ``__pycache__``
    are left out, and with ``exclude_tests`` those under folders named
    ``test``, ``tests`` or ``idle_test`` (Python's own test suite, which is
    mostly data and would dominate the text).
    """
    root = stdlib_root() if root is None else pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be a folder, got {str(root)!r}")
    skip = {"site-packages", "dist-packages", "__pycache__"} | (set(TEST_FOLDERS) if exclude_tests else set())
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in skip]  # prune: never walk into them
        relative = pathlib.Path(folder).relative_to(root)
        paths.extend((relative / f).as_posix() for f in files if f.endswith(".py"))
    return sorted(paths)


def split_files(paths: Sequence[str], valid_fraction: float, seed: int) -> tuple:
    """Split files into training and validation files, deterministically given ``seed``.

    The paths are sorted, then shuffled with ``numpy.random.default_rng(seed)``;
    the first ``ceil(valid_fraction * n)`` of that order are validation files
    and the rest training files (each list keeps the shuffled order, which is
    the order their text is read in).

    Returns:
      ``(train_paths, valid_paths)``, two lists with no path in common.
    """
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) or not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be a float in (0, 1), got {valid_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    paths = sorted(set(paths))
    if len(paths) < 2:
        raise ValueError(f"need at least 2 distinct files to split, got {len(paths)}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_valid = min(len(paths) - 1, math.ceil(valid_fraction * len(paths)))
    shuffled = [paths[i] for i in order]
    return shuffled[n_valid:], shuffled[:n_valid]


def read_files(root, paths: Sequence[str], max_chars: Optional[int] = None) -> tuple:
    """Concatenate the text of ``paths`` (relative to ``root``) in order, up to ``max_chars`` characters.

    Files are read as UTF-8 (undecodable bytes become U+FFFD); the last file
    read may be cut to fit the cap.

    Returns:
      ``(text, used)``: the text and the tuple of paths it came from.
    """
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    root = pathlib.Path(root)
    parts, used, size = [], [], 0
    for path in paths:
        if max_chars is not None and size >= max_chars:
            break
        text = (root / path).read_text(encoding="utf-8", errors="replace")
        if max_chars is not None:
            text = text[: max_chars - size]
        parts.append(text)
        used.append(path)
        size += len(text)
    return "".join(parts), tuple(used)


def stdlib_corpus(
    max_chars: Optional[int] = 1_000_000,
    valid_fraction: float = 0.1,
    seed: int = 0,
    *,
    root=None,
    exclude_tests: bool = True,
) -> Corpus:
    """Python's standard library as a text corpus, split into train and validation by file.

    The files of :func:`stdlib_files` are split by :func:`split_files`; the
    training text is the training files' text in their shuffled order, cut
    at ``max_chars - round(valid_fraction * max_chars)`` characters, and the
    validation text the validation files' text cut at
    ``round(valid_fraction * max_chars)`` (no cut when ``max_chars`` is
    ``None``). The same arguments on the same Python give the same corpus.
    """
    root = stdlib_root() if root is None else pathlib.Path(root)
    train_paths, valid_paths = split_files(stdlib_files(root, exclude_tests=exclude_tests), valid_fraction, seed)
    if max_chars is None:
        train_cap = valid_cap = None
    else:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 2:
            raise ValueError(f"max_chars must be an int of at least 2 or None, got {max_chars!r}")
        valid_cap = min(max_chars - 1, max(1, round(valid_fraction * max_chars)))
        train_cap = max_chars - valid_cap
    train, train_used = read_files(root, train_paths, train_cap)
    valid, valid_used = read_files(root, valid_paths, valid_cap)
    return Corpus(train, valid, train_used, valid_used)


# --------------------------------------------------------------------------
# The vocabulary.


class Vocabulary(NamedTuple):
    """Characters and their ids: ``symbols[i]`` is the character of id ``i``; id 0 is "unknown".

    Every character not in ``symbols[1:]`` (rare in the training text, or not
    ASCII) is encoded as 0, which decodes to ``UNKNOWN`` (U+FFFD).
    """

    symbols: str  # [V] symbols[0] == UNKNOWN, then the known ASCII characters in code-point order

    @property
    def size(self) -> int:
        """The number of ids ``V``, the unknown symbol included."""
        return len(self.symbols)


def build_vocabulary(text: str, min_count: int = 1) -> Vocabulary:
    """The ASCII characters of ``text`` seen at least ``min_count`` times, after the unknown symbol.

    >>> vocab = build_vocabulary("abracadabra", min_count=2)
    >>> vocab.symbols[1:], vocab.size
    ('abr', 4)
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    counts = np.bincount(_code_points(text), minlength=128)[:128]
    known = "".join(chr(c) for c in range(128) if counts[c] >= min_count)
    return Vocabulary(UNKNOWN + known)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _check_vocabulary(vocab) -> None:
    if not isinstance(vocab, Vocabulary):
        raise ValueError(f"expected a scanrnn.text.Vocabulary, got {type(vocab).__name__}")
    if not vocab.symbols or vocab.symbols[0] != UNKNOWN or len(set(vocab.symbols)) != len(vocab.symbols):
        raise ValueError(f"vocab.symbols must start with {UNKNOWN!r} and not repeat a symbol, got {vocab.symbols!r}")
    if any(ord(c) >= 128 for c in vocab.symbols[1:]):
        raise ValueError("vocab.symbols[1:] must be ASCII characters")


def encode(vocab: Vocabulary, text: str) -> np.ndarray:
    """The ids ``[len(text)]`` (int32) of the characters of ``text``; unknown characters are 0."""
    _check_vocabulary(vocab)
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    table = np.zeros(128, np.int32)
    for i, c in enumerate(vocab.symbols[1:], start=1):
        table[ord(c)] = i
    points = _code_points(text)
    return np.where(points < 128, table[np.minimum(points, 127)], 0).astype(np.int32)


def decode(vocab: Vocabulary, ids) -> str:
    """The text of the ids ``[N]``; id 0 is written as ``UNKNOWN``."""
    _check_vocabulary(vocab)
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab.size):
        raise ValueError(f"ids must lie in [0, {vocab.size}), got values from {ids.min()} to {ids.max()}")
    return "".join(vocab.symbols[i] for i in ids.tolist())


# --------------------------------------------------------------------------
# The unigram baseline.


def _check_ids(name: str, ids, vocab_size) -> np.ndarray:
    """``ids`` as a NumPy array; a ValueError unless it is a non-empty 1-D integer array in ``[0, vocab_size)``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D integer array, got shape {ids.shape}, dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values from {ids.min()} to {ids.max()}")
    return ids


def unigram_bits(train_ids, eval_ids, vocab_size: int) -> float:
    """Bits per character of the add-one smoothed character frequencies of ``train_ids`` on ``eval_ids``.

    ``p(c) = (n_c + 1) / (N + V)`` with ``n_c`` the count of id ``c`` among
    the ``N`` training ids, and the result is the cross-entropy
    ``-(1/M) sum_t log2 p(e_t)`` over the ``M`` evaluation ids (the entropy
    of the frequencies when both are the same text, up to the smoothing).
    """
    train_ids, eval_ids = _check_ids("train_ids", train_ids, vocab_size), _check_ids("eval_ids", eval_ids, vocab_size)
    probs = (np.bincount(train_ids, minlength=vocab_size) + 1.0) / (train_ids.size + vocab_size)
    return float(-np.mean(np.log2(probs[eval_ids])))


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
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
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
