"""Every data set of the library in one place, generated or read, never downloaded.

Here: the two seeds' series (:func:`make_sum`, :func:`make_simpler`,
:func:`generate_time_series`), the adding problem and :func:`split`; in
:mod:`scanrnn.data.text`, a character corpus (Python's standard library), its
vocabulary and the unigram baseline; in :mod:`scanrnn.data.dates`, dates
written in 14 human formats for the translation study.

Every generator takes ``rng``: a :class:`numpy.random.Generator` or an int
seed (passed to :func:`numpy.random.default_rng`). Nothing reads NumPy's
global random state.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

__all__ = [
    "RNG",
    "make_sum",
    "make_simpler",
    "many_to_one",
    "generate_time_series",
    "split",
    "adding_problem",
]

RNG = Union[np.random.Generator, int]


def _rng(rng: RNG) -> np.random.Generator:
    if isinstance(rng, bool) or not isinstance(rng, (np.random.Generator, int, np.integer)):
        raise ValueError(f"rng must be a numpy.random.Generator or an int seed, got {rng!r}")
    return np.random.default_rng(rng)


def _check_counts(n_samples, n_discr_points, minimum=2):
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if int(n_discr_points) < minimum:
        raise ValueError(f"n_discr_points must be at least {minimum}, got {n_discr_points}")


def make_sum(n_samples: int = 600, n_discr_points: int = 5, *, rng: RNG) -> np.ndarray:
    """The first seed's sums of binary sequences.

    Returns an int array ``[n_samples, n_discr_points]``: each row is
    ``n_discr_points - 1`` fair random bits followed by their sum, e.g.
    ``1, 0, 1, 1, 3``.
    """
    _check_counts(n_samples, n_discr_points)
    bits = _rng(rng).integers(0, 2, size=(n_samples, n_discr_points - 1))
    return np.concatenate([bits, bits.sum(axis=1, keepdims=True)], axis=1)


def make_simpler(n_samples: int = 600, n_discr_points: int = 5, *, rng: RNG) -> np.ndarray:
    """The first seed's simpler task: random bits followed by a copy of the last bit."""
    _check_counts(n_samples, n_discr_points)
    bits = _rng(rng).integers(0, 2, size=(n_samples, n_discr_points - 1))
    return np.concatenate([bits, bits[:, -1:]], axis=1)


def many_to_one(rows: np.ndarray):
    """Split rows ``[N, L]`` into inputs ``[N, L-1, 1]`` and targets ``[N, 1]`` (float32).

    The first seed's framing: the network reads all but the last value and
    predicts the last one.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2:
        raise ValueError(f"rows must have shape [N, L] with L >= 2, got {rows.shape}")
    return rows[:, :-1, None].astype(np.float32), rows[:, -1:].astype(np.float32)


def generate_time_series(batch_size: int, n_steps: int, *, rng: RNG) -> np.ndarray:
    """The second seed's series: two sines of random frequency and phase plus noise.

    .. math::
        x(t) = 0.5 \\sin((t - o_1)(10 f_1 + 10)) + 0.2 \\sin((t - o_2)(20 f_2 + 20)) + 0.1 (u_t - 0.5)

    on ``n_steps`` points of ``t`` in ``[0, 1]``, with ``f_1, f_2, o_1, o_2``
    uniform on ``[0, 1)`` per series and ``u_t`` uniform noise per point.
    Returns float32 ``[batch_size, n_steps, 1]``.
    """
    _check_counts(batch_size, n_steps, minimum=1)
    g = _rng(rng)
    freq1, freq2, offsets1, offsets2 = g.random((4, batch_size, 1))
    time = np.linspace(0, 1, n_steps)
    series = 0.5 * np.sin((time - offsets1) * (freq1 * 10 + 10))
    series += 0.2 * np.sin((time - offsets2) * (freq2 * 20 + 20))
    series += 0.1 * (g.random((batch_size, n_steps)) - 0.5)
    return series[..., np.newaxis].astype(np.float32)


def split(*arrays, sizes: Sequence[Union[int, float]], rng: RNG | None = None):
    """Split arrays along their first axis into consecutive parts.

    Args:
      arrays: arrays with the same first dimension ``N``.
      sizes: the size of each part, as counts (ints summing to at most ``N``)
        or as fractions (floats summing to at most 1, rounded down, the first
        part taking what rounding leaves over when they sum to 1).
      rng: shuffle the examples first with this generator or seed; ``None``
        keeps their order (the second seed's 7,000 / 2,000 / 1,000 split).

    Returns:
      One tuple per part, holding the part of each array (or the part itself
      when one array is given).

    >>> train, valid, test = split(np.arange(10), sizes=(0.6, 0.2, 0.2))
    >>> train, valid, test
    (array([0, 1, 2, 3, 4, 5]), array([6, 7]), array([8, 9]))
    """
    if not arrays:
        raise ValueError("split needs at least one array")
    n = len(arrays[0])
    for a in arrays:
        if len(a) != n:
            raise ValueError(f"all arrays must have the same first dimension, got {[len(a) for a in arrays]}")
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
        counts = [int(s) for s in sizes]
        if min(counts) < 0 or sum(counts) > n:
            raise ValueError(f"sizes must be non-negative counts summing to at most {n}, got {list(sizes)}")
    else:
        fractions = [float(s) for s in sizes]
        if min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
            raise ValueError(f"sizes must be non-negative fractions summing to at most 1, got {list(sizes)}")
        counts = [int(np.floor(f * n + 1e-9)) for f in fractions]
        if abs(sum(fractions) - 1) < 1e-9:
            counts[0] += n - sum(counts)
    order = np.arange(n) if rng is None else _rng(rng).permutation(n)
    parts, start = [], 0
    for c in counts:
        index = order[start : start + c]
        start += c
        taken = tuple(np.asarray(a)[index] for a in arrays)
        parts.append(taken[0] if len(arrays) == 1 else taken)
    return tuple(parts)


def adding_problem(n: int, n_steps: int = 200, *, rng: RNG):
    """The adding problem (Hochreiter and Schmidhuber 1997), as Arjovsky et al. (2016) set it.

    Each example is a sequence of ``n_steps`` pairs ``(value, marker)``:
    the values are uniform on ``[0, 1)``, and exactly two markers are 1,
    one at a uniformly drawn step of the first half ``[0, n_steps // 2)``
    and one at a uniformly drawn step of the second half
    ``[n_steps // 2, n_steps)`` (the placement of Arjovsky, Shah and Bengio
    2016, Sec. 4.2; Le, Jaitly and Hinton 2015 use the same inputs and
    target). The target is the sum of the two marked values. A model that
    ignores its input does best by always predicting 1, with mean squared
    error ``Var(U_1 + U_2) = 2/12 = 1/6 ~ 0.167``, the baseline a model must
    beat to have learned anything.

    Args:
      n: the number of examples.
      n_steps: the sequence length ``T``, at least 2.
      rng: a :class:`numpy.random.Generator` or an int seed.

    Returns:
      ``(x, y)``: float32 ``x [n, n_steps, 2]`` (value, marker) and
      ``y [n, 1]``.

    >>> x, y = adding_problem(3, 10, rng=0)
    >>> x.shape, y.shape, x[..., 1].sum(axis=1).tolist()
    ((3, 10, 2), (3, 1), [2.0, 2.0, 2.0])
    """
    for name, value, minimum in (("n", n, 1), ("n_steps", n_steps, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    g = _rng(rng)
    half = n_steps // 2
    values = g.random((n, n_steps))
    first = g.integers(0, half, size=n)
    second = g.integers(half, n_steps, size=n)
    rows = np.arange(n)
    markers = np.zeros((n, n_steps))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    return x, y


from . import dates, text  # noqa: E402  (the submodules, as scanrnn.data.dates and .text)
