"""Connectionist temporal classification (Graves, Fernandez, Gomez and Schmidhuber, 2006).

A network reads a sequence of ``T`` frames and emits at every frame a
distribution over ``K`` classes: the labels and one extra *blank*. A path
``pi`` (one class per frame) maps to a labelling by ``B``, which collapses
runs of the same class and then drops the blanks::

    B(a a - b - - b) = a b b        (- is the blank)

The probability of a labelling ``l`` is the sum over its paths,
``p(l | x) = sum_{pi : B(pi) = l} prod_t y_t[pi_t]`` with ``y_t`` the softmax
of the frame's logits, and the CTC loss is ``-log p(l | x)``. It is computed
by the forward algorithm over the extended labelling ``l'`` (``l`` with a
blank before, between and after its labels, length ``2L + 1``)::

    alpha_1(0) = y_1[blank],  alpha_1(1) = y_1[l'_1]
    alpha_t(s) = (alpha_{t-1}(s) + alpha_{t-1}(s-1) [+ alpha_{t-1}(s-2)]) y_t[l'_s]
    p(l | x)   = alpha_T(2L) + alpha_T(2L - 1)

where the skip from ``s - 2`` is allowed when ``l'_s`` is a label different
from ``l'_{s-2}`` (a blank must separate two equal consecutive labels).
A labelling of length ``L`` with ``R`` repeated consecutive labels
therefore needs ``T >= L + R`` frames; with fewer, ``p(l | x) = 0``.

Everything here is for ONE example, as the rest of the library;
``jax.vmap`` adds the batch::

    losses = jax.vmap(ctc_loss)(logits, labels, logit_length=t, label_length=n)

Decoding: :func:`ctc_greedy_decode` (best path: the most probable class of
each frame, collapsed; jit-compatible) and :func:`ctc_beam_search` (prefix
beam search, Graves 2012 ch. 7 and Hannun et al. 2014; NumPy, not jitted).
:func:`edit_distance` and :func:`label_error_rate` score the decodings.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks

__all__ = [
    "ctc_loss",
    "ctc_greedy_decode",
    "CTCBeams",
    "ctc_beam_search",
    "edit_distance",
    "label_error_rate",
]

Array = jax.Array


# One compiled program per shape, also when ctc_loss is called outside jit (optax's
# forward algorithm is some fifty operations, each compiled on its own when run eagerly).
_optax_ctc_loss = jax.jit(optax.ctc_loss, static_argnames="blank_id")


def _check_blank(blank, num_classes: int) -> int:
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)):
        raise ValueError(f"blank must be a Python int, got {blank!r}")
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank must lie in [0, {num_classes}) (the number of classes K), got {blank}")
    return int(blank)


def _check_logits(name: str, logits) -> Array:
    logits = jnp.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(
            f"{name}: logits must have shape [T, K] with T >= 1 and K >= 2 (one example; vmap adds "
            f"the batch), got shape {logits.shape}"
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"{name}: logits must be floating point, got dtype {logits.dtype}")
    return logits


def _check_count(name: str, what: str, value, upper: int) -> Optional[Array]:
    """An integer scalar in ``[0, upper]`` (checked when concrete, clamped when traced), or None."""
    return _checks.length(name, value, upper, what=what)


def _paddings(size: int, length, dtype) -> Array:
    """``[1, size]`` of 0.0 on the first ``length`` positions and 1.0 after (optax's padding convention)."""
    if length is None:
        return jnp.zeros((1, size), dtype)
    padded = jnp.arange(size, dtype=length.dtype) >= length
    return padded.astype(dtype)[None, :]


def ctc_loss(logits, labels, *, logit_length=None, label_length=None, blank: int = 0) -> Array:
    r"""The CTC loss ``-log p(labels | logits)`` of ONE example.

    ``p`` sums, over every frame-by-frame path that collapses to ``labels``
    (repeats merged, blanks dropped), the product of the frames'
    softmax probabilities (see the module docstring for the forward
    recursion). The work is done by :func:`optax.ctc_loss`, which takes
    batched logits ``[B, T, K]`` and paddings (1.0 on padded positions):
    this function builds the paddings from the lengths and adds and removes
    a batch axis of size 1. A batch is ``jax.vmap(ctc_loss)``.

    Args:
      logits: ``[T, K]`` unnormalised log-probabilities (a softmax over
        ``K`` is taken per frame); ``T >= 1``, ``K >= 2``, floating point.
      labels: ``[L]`` integer labels in ``[0, K)``, none equal to ``blank``
        (within ``label_length``; the padding past it may hold anything).
        ``L`` may be 0.
      logit_length: the number of valid frames, an integer scalar in
        ``[0, T]``; ``None`` means all ``T``.
      label_length: the number of valid labels, in ``[0, L]``; ``None``
        means all ``L``.
      blank: the index of the blank class, a Python int in ``[0, K)``.

    Returns:
      The negative log-likelihood, a scalar of the dtype of ``logits``.

    Feasibility: a labelling of length ``L`` with ``R`` equal consecutive
    pairs needs ``logit_length >= L + R``. When it is infeasible,
    ``p(labels) = 0`` exactly, but optax works with ``log(0)`` replaced by
    ``log_epsilon = -1e5``: the loss is then finite, not ``inf``: about
    ``1e5`` plus a few nats, whatever the number of missing frames, and its
    gradient is finite.

    Concrete labels and lengths are checked for range (labels within
    ``label_length`` in ``[0, K)`` and not the blank), else a ValueError.
    Traced ones (under ``jit`` or ``vmap``) are checked for dtype and rank;
    traced lengths are clamped to their range, and a traced labelling with
    a valid label outside ``[0, K)`` or equal to the blank, which no path
    emits, is scored as an infeasible one (``p(labels) = 0``: the loss of
    about ``1e5`` above, with a zero gradient), never NaN or a finite
    wrong value.

    >>> logits = jnp.zeros((4, 3))                   # uniform over 3 classes, 4 frames
    >>> round(float(ctc_loss(logits, jnp.array([1, 2]))), 4)   # 15 of the 81 paths give "1 2": -log(15/81)
    1.6864
    """
    logits = _check_logits("ctc_loss", logits)
    num_steps, num_classes = logits.shape
    blank = _check_blank(blank, num_classes)
    labels = jnp.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"ctc_loss: labels must have shape [L] (one example; vmap adds the batch), got shape {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"ctc_loss: labels must be integers, got dtype {labels.dtype}")
    num_labels = labels.shape[0]
    logit_length = _check_count("logit_length", "the number of frames T", logit_length, num_steps)
    label_length = _check_count("label_length", "the number of labels L", label_length, num_labels)
    if _checks.is_concrete(labels) and _checks.is_concrete(label_length):
        valid = np.asarray(labels)[: num_labels if label_length is None else int(label_length)]
        if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
            raise ValueError(
                f"ctc_loss: labels must lie in [0, {num_classes}) (the number of classes K), "
                f"got values in [{valid.min()}, {valid.max()}]"
            )
        if np.any(valid == blank):
            raise ValueError(f"ctc_loss: labels must not contain the blank ({blank}), got {valid.tolist()}")
    else:
        # Traced: a valid label no path emits makes the labelling infeasible;
        # with every frame padded optax scores it as such (p = 0, finite loss).
        n = jnp.asarray(num_labels) if label_length is None else label_length
        counted = jnp.arange(num_labels, dtype=n.dtype) < n
        impossible = jnp.any(counted & ((labels < 0) | (labels >= num_classes) | (labels == blank)))
        labels = jnp.clip(labels, 0, num_classes - 1).astype(labels.dtype)
        frames = jnp.asarray(num_steps) if logit_length is None else logit_length
        logit_length = jnp.where(impossible, jnp.zeros_like(frames), frames)

    dtype = logits.dtype
    logit_paddings = _paddings(num_steps, logit_length, dtype)
    label_paddings = _paddings(num_labels, label_length, dtype)
    # optax mixes float32 constants with the logits' dtype: its own promotion rules apply inside.
    with jax.numpy_dtype_promotion("standard"):
        loss = _optax_ctc_loss(logits[None], logit_paddings, labels[None], label_paddings, blank_id=blank)
    return loss[0].astype(dtype)


# --------------------------------------------------------------------------
# Decoding.


def ctc_greedy_decode(logits, *, logit_length=None, blank: int = 0) -> tuple[Array, Array]:
    """Best-path decoding of ONE example: the argmax of each frame, repeats collapsed, blanks dropped.

    This is the labelling of the single most probable path, which need not
    be the most probable labelling (see :func:`ctc_beam_search`). It is
    jit-compatible: the output has a fixed size.

    Args:
      logits: ``[T, K]`` (logits or probabilities: only the argmax counts).
      logit_length: valid frames, an integer scalar in ``[0, T]``; frames
        past it are ignored. ``None`` means all.
      blank: the blank's index in ``[0, K)``.

    Returns:
      ``(labels, length)``: ``labels [T]`` int32, the decoded labels first
      and ``-1`` after them; ``length`` the number of decoded labels.

    >>> ids = jnp.array([0, 1, 1, 0, 1, 2, 2])           # argmax per frame, blank = 0
    >>> labels, n = ctc_greedy_decode(jax.nn.one_hot(ids, 3))
    >>> labels.tolist(), int(n)
    ([1, 1, 2, -1, -1, -1, -1], 3)
    """
    logits = _check_logits("ctc_greedy_decode", logits)
    num_steps, num_classes = logits.shape
    blank = _check_blank(blank, num_classes)
    logit_length = _check_count("logit_length", "the number of frames T", logit_length, num_steps)
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [T]
    if logit_length is not None:
        valid = jnp.arange(num_steps, dtype=logit_length.dtype) < logit_length
        best = jnp.where(valid, best, jnp.full_like(best, blank))
    previous = jnp.concatenate([jnp.full((1,), -1, jnp.int32), best[:-1]])
    keep = (best != blank) & (best != previous)  # the first frame of each run of a label
    # Kept frames go to positions 0, 1, ...; dropped ones to the overflow slot T, then cut off.
    position = jnp.where(keep, jnp.cumsum(keep) - 1, num_steps)
    labels = jnp.full((num_steps + 1,), -1, jnp.int32).at[position].set(best)[:num_steps]
    return labels, jnp.sum(keep).astype(jnp.int32)


class CTCBeams(NamedTuple):
    """The result of :func:`ctc_beam_search`, best first."""

    labels: list  # beam_width (or fewer) int arrays [L_i], the labellings
    log_probs: np.ndarray  # [len(labels)] float64, log p(labelling | logits) summed over the beam's paths


def ctc_beam_search(logits, *, beam_width: int = 8, logit_length=None, blank: int = 0) -> CTCBeams:
    r"""Prefix beam search for ONE example (Graves 2012, ch. 7; Hannun et al. 2014), in NumPy.

    Keeps the ``beam_width`` most probable labelling prefixes. For each
    prefix ``l`` it tracks, after frame ``t``, the probabilities of the paths
    collapsing to ``l`` that end in a blank, ``p_b(l)``, and in a label,
    ``p_nb(l)``; frame ``t + 1`` with probabilities ``y`` extends them::

        p_b(l)      += (p_b(l) + p_nb(l)) y[blank]          stay, via a blank
        p_nb(l)     += p_nb(l) y[l_last]                     repeat the last label (collapsed)
        p_nb(l + c) += (p_b(l) + p_nb(l)) y[c]   for c != l_last
        p_nb(l + c) += p_b(l) y[c]               for c == l_last (a blank separated them)

    Extensions of different prefixes that give the same labelling are
    merged (summed). After the last valid frame each labelling scores
    ``p_b + p_nb``. With a beam as wide as the number of labellings of at
    most ``T`` labels the search is exact: every labelling's probability is
    the full sum over its paths. It runs on the host in log space (not
    jitted, not differentiable): call it per example after the network.

    Args:
      logits: ``[T, K]`` unnormalised log-probabilities (softmax per frame).
      beam_width: the number of prefixes kept, a positive int.
      logit_length: valid frames in ``[0, T]``; ``None`` means all.
      blank: the blank's index in ``[0, K)``.

    Returns:
      :class:`CTCBeams`: the labellings (int arrays) and their log
      probabilities, best first; ``labels[0]`` is the decoding.
    """
    logits = np.asarray(_check_logits("ctc_beam_search", logits), np.float64)
    num_steps, num_classes = logits.shape
    blank = _check_blank(blank, num_classes)
    beam_width = _checks.positive_int("beam_width", beam_width)
    logit_length = _check_count("logit_length", "the number of frames T", logit_length, num_steps)
    steps = num_steps if logit_length is None else int(logit_length)
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)  # log softmax
    labels = np.array([c for c in range(num_classes) if c != blank])

    # prefix (tuple) -> [log p_b, log p_nb]
    beams = {(): np.array([0.0, -np.inf])}
    for t in range(steps):
        lp = log_probs[t]
        extended: dict = {}

        def add(prefix, which, value):
            entry = extended.setdefault(prefix, np.array([-np.inf, -np.inf]))
            entry[which] = np.logaddexp(entry[which], value)

        for prefix, (p_b, p_nb) in beams.items():
            total = np.logaddexp(p_b, p_nb)
            add(prefix, 0, total + lp[blank])
            last = prefix[-1] if prefix else None
            for c in labels:
                if c == last:
                    add(prefix, 1, p_nb + lp[c])
                    add(prefix + (int(c),), 1, p_b + lp[c])
                else:
                    add(prefix + (int(c),), 1, total + lp[c])
        scored = sorted(extended.items(), key=lambda item: -np.logaddexp(*item[1]))
        beams = dict(scored[:beam_width])

    ranked = sorted(((np.logaddexp(*v), k) for k, v in beams.items()), key=lambda item: -item[0])
    return CTCBeams(
        [np.array(k, np.int64) for _, k in ranked], np.array([score for score, _ in ranked], np.float64)
    )


# --------------------------------------------------------------------------
# Scoring.


def edit_distance(a: Sequence, b: Sequence) -> int:
    """The Levenshtein distance: the fewest insertions, deletions and substitutions turning ``a`` into ``b``.

    The dynamic programme ``d[i, j] = min(d[i-1, j] + 1, d[i, j-1] + 1,
    d[i-1, j-1] + [a_i != b_j])`` over prefixes, with ``d[i, 0] = i`` and
    ``d[0, j] = j``. ``a`` and ``b`` are 1-D sequences (lists, tuples or
    arrays) of comparable items.

    >>> edit_distance("kitten", "sitting")
    3
    """
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))  # d[i - 1, :]
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i  # previous holds d[i-1, j-1]
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def label_error_rate(predictions: Sequence[Sequence], targets: Sequence[Sequence]) -> float:
    """The label error rate of Graves et al. (2006): total edit distance over total target length.

    ``sum_i edit_distance(predictions[i], targets[i]) / sum_i len(targets[i])``,
    over a held-out set of labellings (each a 1-D sequence).
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"label_error_rate: as many predictions as targets expected, got {len(predictions)} and {len(targets)}"
        )
    total = sum(len(t) for t in targets)
    if total == 0:
        raise ValueError("label_error_rate: the targets hold no labels (total length 0)")
    return sum(edit_distance(p, t) for p, t in zip(predictions, targets)) / total
