"""Long-memory tasks: the copy task and selective copying, as one-hot sequences.

Both tasks write ``num_symbols`` data symbols and two special tokens with one
vocabulary of ``V = num_symbols + 2`` input tokens:

- ``0 .. num_symbols - 1``: the data symbols;
- ``num_symbols``: the blank (the copy task's filler, selective copying's noise);
- ``num_symbols + 1``: the delimiter, or marker, that asks for the answer.

A generator returns a :class:`MemoryTask`: one-hot float32 inputs ``x [n, T,
V]`` (scanrnn has no embedding layer), integer targets ``y [n, T]`` with
``num_symbols + 1`` classes (the symbols and the blank) at every step, and
``scored [n, T]``, true where a target is a symbol to be recalled, the
positions a model needs memory for. The adding problem, the third classic
long-memory task, is :func:`scanrnn.data.adding_problem`.

Every generator takes ``rng``, a :class:`numpy.random.Generator` or an int
seed, as the rest of :mod:`scanrnn.data` does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _checks
from . import RNG, _rng

__all__ = [
    "MemoryTask",
    "copy_task",
    "copy_memoryless_loss",
    "selective_copy",
]


class MemoryTask(NamedTuple):
    """A batch of a long-memory task (the vocabulary is in the module docstring)."""

    x: np.ndarray  # [n, T, num_symbols + 2] float32, one-hot input tokens
    y: np.ndarray  # [n, T] int32 target classes in [0, num_symbols]
    scored: np.ndarray  # [n, T] bool, true at the steps whose target is a recalled symbol


def _at_least(name: str, value, minimum: int) -> int:
    value = _checks.positive_int(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


def _one_hot(tokens: np.ndarray, size: int) -> np.ndarray:
    return (tokens[..., None] == np.arange(size)).astype(np.float32)


def copy_task(n: int, delay: int, *, num_symbols: int = 8, copy_length: int = 10, rng: RNG) -> MemoryTask:
    """The copy task of Arjovsky, Shah and Bengio (2016, Sec. 4.1).

    Each input sequence has ``T = delay + 2 * copy_length`` steps:
    ``copy_length`` symbols drawn uniformly and independently from the
    ``num_symbols`` data symbols, ``delay - 1`` blanks, the delimiter, and
    ``copy_length`` blanks. The target is the blank for the first ``delay +
    copy_length`` steps, then the ``copy_length`` symbols in their order, so
    each symbol is recalled exactly ``delay + copy_length`` steps after it was
    read. With the paper's ``T = delay`` (its Figure 1 uses 100 to 500),
    ``num_symbols = 8`` and ``copy_length = 10``, tokens ``0..7`` are its
    ``a_0..a_7``, the blank its ``a_8`` and the delimiter its ``a_9``.

    The paper's loss is the cross-entropy averaged over all ``T`` steps; a
    model without memory does best by predicting the blank before the
    delimiter and a uniform guess after it, for a loss of
    :func:`copy_memoryless_loss` ``= copy_length * log(num_symbols) / T``
    (``log(num_symbols)`` per scored step).

    Args:
      n: the number of sequences.
      delay: the paper's ``T``, at least 1 (the delimiter is its last step).
      num_symbols: the number of data symbols, at least 1.
      copy_length: the number of symbols to copy, at least 1.
      rng: a :class:`numpy.random.Generator` or an int seed.

    Returns:
      A :class:`MemoryTask` with ``x [n, T, num_symbols + 2]``, ``y [n, T]``
      and ``scored [n, T]`` (true on the last ``copy_length`` steps).

    >>> task = copy_task(2, 3, num_symbols=4, copy_length=2, rng=0)
    >>> task.x.shape, task.y.shape
    ((2, 7, 6), (2, 7))
    >>> tokens = task.x.argmax(-1)                       # 2 symbols, 2 blanks (4), delimiter (5), 2 blanks
    >>> bool((tokens[:, 2:] == [4, 4, 5, 4, 4]).all()), bool((task.y[:, 5:] == tokens[:, :2]).all())
    (True, True)
    """
    n = _checks.positive_int("n", n)
    delay = _checks.positive_int("delay", delay)
    num_symbols = _checks.positive_int("num_symbols", num_symbols)
    copy_length = _checks.positive_int("copy_length", copy_length)
    g = _rng(rng)
    blank, delimiter = num_symbols, num_symbols + 1
    steps = delay + 2 * copy_length
    symbols = g.integers(0, num_symbols, size=(n, copy_length))
    tokens = np.full((n, steps), blank, dtype=np.int32)
    tokens[:, :copy_length] = symbols
    tokens[:, copy_length + delay - 1] = delimiter
    y = np.full((n, steps), blank, dtype=np.int32)
    y[:, steps - copy_length :] = symbols
    scored = np.zeros((n, steps), dtype=bool)
    scored[:, steps - copy_length :] = True
    return MemoryTask(_one_hot(tokens, num_symbols + 2), y, scored)


def copy_memoryless_loss(delay: int, *, num_symbols: int = 8, copy_length: int = 10) -> float:
    """The cross-entropy over all steps of the best model without memory on :func:`copy_task`.

    ``copy_length * log(num_symbols) / (delay + 2 * copy_length)``: the blank
    is predicted with certainty where it is the target, and the recalled
    symbols are guessed uniformly (Arjovsky, Shah and Bengio 2016, Sec. 4.1).

    >>> round(copy_memoryless_loss(100), 4)              # 10 log(8) / 120
    0.1733
    """
    delay = _checks.positive_int("delay", delay)
    num_symbols = _checks.positive_int("num_symbols", num_symbols)
    copy_length = _checks.positive_int("copy_length", copy_length)
    return copy_length * math.log(num_symbols) / (delay + 2 * copy_length)


def selective_copy(n: int, length: int, *, num_symbols: int = 8, num_tokens: int = 16, rng: RNG) -> MemoryTask:
    """Selective copying (Gu and Dao 2023, Sec. 4.1.1 and App. E.1).

    Each input sequence has ``length`` steps. Its first ``length -
    num_tokens`` steps hold ``num_tokens`` data symbols, drawn uniformly and
    independently, at distinct positions drawn uniformly (kept in their order
    of position), and the blank ("noise") everywhere else; its last
    ``num_tokens`` steps are the marker. The target at the ``k``-th marker is
    the ``k``-th data symbol, and the blank elsewhere. The spacing varies from
    one sequence to the next, so a time-invariant filter (a fixed delay) can
    not solve it: the model must select the symbols by their content. This
    is the layout of the copying generator of the S4 repository
    (``state-spaces/s4``, ``variable=True``) that the paper uses, with the
    marker the last token and the noise its own token. The paper's setting is
    ``length = 4096`` and ``num_tokens = 16`` with 16 tokens in all.

    Args:
      n: the number of sequences.
      length: the sequence length ``T``, at least ``2 * num_tokens``.
      num_symbols: the number of data symbols, at least 1.
      num_tokens: the number of symbols to copy, at least 1.
      rng: a :class:`numpy.random.Generator` or an int seed.

    Returns:
      A :class:`MemoryTask` with ``x [n, length, num_symbols + 2]``, ``y [n,
      length]`` and ``scored [n, length]`` (true on the last ``num_tokens``
      steps). A model without memory scores ``log(num_symbols)`` of
      cross-entropy per scored step.

    >>> task = selective_copy(3, 12, num_symbols=4, num_tokens=3, rng=0)
    >>> tokens = task.x.argmax(-1)
    >>> [row[row < 4].tolist() == target.tolist() for row, target in zip(tokens[:, :9], task.y[:, 9:])]
    [True, True, True]
    """
    n = _checks.positive_int("n", n)
    num_tokens = _checks.positive_int("num_tokens", num_tokens)
    length = _at_least("length", length, 2 * num_tokens)
    num_symbols = _checks.positive_int("num_symbols", num_symbols)
    g = _rng(rng)
    blank, marker = num_symbols, num_symbols + 1
    free = length - num_tokens  # the steps the symbols are spread over
    symbols = g.integers(0, num_symbols, size=(n, num_tokens))
    # Distinct positions, uniform over the num_tokens-subsets of [0, free): the first
    # num_tokens of a uniform random permutation of each row, sorted.
    positions = np.sort(np.argsort(g.random((n, free)), axis=1)[:, :num_tokens], axis=1)
    rows = np.arange(n)[:, None]
    tokens = np.full((n, length), blank, dtype=np.int32)
    tokens[rows, positions] = symbols
    tokens[:, free:] = marker
    y = np.full((n, length), blank, dtype=np.int32)
    y[:, free:] = symbols
    scored = np.zeros((n, length), dtype=bool)
    scored[:, free:] = True
    return MemoryTask(_one_hot(tokens, num_symbols + 2), y, scored)
