"""Character-level text: a corpus, a vocabulary and the unigram baseline.

The corpus is one that every machine with Python has: the source files of
Python's own standard library. They are split into training and validation
text by FILE, so the validation text is unseen code, not other lines of the
files the model trained on::

    corpus = stdlib_corpus(max_chars=200_000, valid_fraction=0.1, seed=0)
    vocab = build_vocabulary(corpus.train, min_count=10)
    train_ids, valid_ids = encode(vocab, corpus.train), encode(vocab, corpus.valid)
    unigram_bits(train_ids, valid_ids, vocab.size)        # the baseline, bits per character

A model trained on the ids is scored and sampled by
:mod:`scanrnn.language_model`.

Bits per character of a model ``p`` on characters ``c_1 .. c_N`` are
``-(1/N) sum_t log2 p(c_t | c_<t)``; a model that ignores the context can do
no better than the entropy of the character frequencies (the unigram
baseline).
"""

from __future__ import annotations

import math
import os
import pathlib
import sysconfig
from typing import NamedTuple, Optional, Sequence

import numpy as np

from .. import _checks

__all__ = [
    "UNKNOWN",
    "TEST_FOLDERS",
    "Corpus",
    "stdlib_root",
    "stdlib_files",
    "split_files",
    "read_files",
    "stdlib_corpus",
    "Vocabulary",
    "build_vocabulary",
    "encode",
    "decode",
    "unigram_bits",
]

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
    if max_chars is not None:
        _checks.positive_int("max_chars", max_chars)
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
    _checks.positive_int("min_count", min_count)
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    counts = np.bincount(_code_points(text), minlength=128)[:128]
    known = "".join(chr(c) for c in range(128) if counts[c] >= min_count)
    return Vocabulary(UNKNOWN + known)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _check_vocabulary(vocab) -> None:
    if not isinstance(vocab, Vocabulary):
        raise ValueError(f"expected a scanrnn.data.text.Vocabulary, got {type(vocab).__name__}")
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
    _checks.positive_int("vocab_size", vocab_size)
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
