"""scanrnn.ctc against a NumPy forward algorithm and brute-force sums over every path.

The references: ``reference_nll`` is the forward recursion of Graves et al.
(2006) over the blank-extended labelling, in log space and float64, written
out here in NumPy; ``labelling_probs`` enumerates all ``K^T`` paths of a tiny
problem, collapses each and sums the path probabilities per labelling. The
forward recursion is itself checked against the enumeration.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from scanrnn.ctc import (
    CTCBeams,
    ctc_beam_search,
    ctc_greedy_decode,
    ctc_loss,
    edit_distance,
    label_error_rate,
)


# --------------------------------------------------------------------------
# References.


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def reference_nll(logits, labels, blank=0):
    """-log p(labels | logits) by the forward algorithm over l' = (blank, l_1, blank, ..., l_L, blank)."""
    lp = log_softmax(logits)
    extended = [blank]
    for label in labels:
        extended += [int(label), blank]
    num_steps, size = lp.shape[0], len(extended)
    alpha = np.full(size, -np.inf)
    alpha[0] = lp[0, blank]
    if size > 1:
        alpha[1] = lp[0, extended[1]]
    for t in range(1, num_steps):
        new = np.full(size, -np.inf)
        for s in range(size):
            total = alpha[s]
            if s >= 1:
                total = np.logaddexp(total, alpha[s - 1])
            if s >= 2 and extended[s] != blank and extended[s] != extended[s - 2]:
                total = np.logaddexp(total, alpha[s - 2])
            new[s] = total + lp[t, extended[s]]
        alpha = new
    final = alpha[-1] if size == 1 else np.logaddexp(alpha[-1], alpha[-2])
    return -final


def collapse(path, blank=0):
    """B: merge runs of a class, then drop blanks."""
    out, previous = [], None
    for c in path:
        if c != previous and c != blank:
            out.append(int(c))
        previous = c
    return tuple(out)


def labelling_probs(logits, blank=0):
    """{labelling: p(labelling | logits)} by summing the probabilities of all K^T paths."""
    probs = np.exp(log_softmax(logits))
    num_steps, num_classes = probs.shape
    out = {}
    for path in itertools.product(range(num_classes), repeat=num_steps):
        p = np.prod(probs[np.arange(num_steps), path])
        key = collapse(path, blank)
        out[key] = out.get(key, 0.0) + p
    return out


def random_problem(seed, num_steps, num_classes, num_labels, blank=0, repeat=False):
    rng = np.random.default_rng(seed)
    logits = 1.5 * rng.standard_normal((num_steps, num_classes))
    choices = [c for c in range(num_classes) if c != blank]
    labels = rng.choice(choices, size=num_labels)
    if repeat and num_labels >= 2:
        labels[1] = labels[0]
    return logits, labels


# --------------------------------------------------------------------------
# The references agree with each other.


def test_reference_nll_equals_the_sum_over_all_paths():
    for seed, blank in ((0, 0), (1, 2)):
        logits, _ = random_problem(seed, 4, 3, 0)
        for labelling, p in labelling_probs(logits, blank).items():
            np.testing.assert_allclose(reference_nll(logits, labelling, blank), -np.log(p), rtol=1e-12)


# --------------------------------------------------------------------------
# ctc_loss.

# Jitted so that each shape compiles once (lengths passed as ints are traced; blank is static).
# The argument checks are tested on the plain function below.
jit_loss = jax.jit(ctc_loss, static_argnames="blank")

LOSS_CASES = [
    # (id, T, K, L, blank, repeat, logit_length, label_length); most share the shapes [7, 5] and [4]
    ("plain", 7, 5, 4, 0, False, None, None),
    ("repeated", 7, 5, 4, 0, True, None, None),
    ("empty-labels", 7, 5, 0, 0, False, None, None),
    ("shorter-lengths", 7, 5, 4, 0, True, 5, 2),
    ("zero-label-length", 7, 5, 4, 0, False, 4, 0),
    ("full-lengths", 7, 5, 4, 0, False, 7, 4),
    ("blank-3", 7, 5, 4, 3, True, 6, 4),
    ("blank-last", 7, 5, 4, 4, False, 7, 3),
]


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_ctc_loss_matches_numpy_forward_algorithm(case):
    name, num_steps, num_classes, num_labels, blank, repeat, logit_length, label_length = case
    logits, labels = random_problem(len(name), num_steps, num_classes, num_labels, blank, repeat)
    if label_length is not None:
        labels[label_length:] = -7  # the padding may hold anything, even out-of-range values
    got = jit_loss(
        jnp.asarray(logits), jnp.asarray(labels), logit_length=logit_length, label_length=label_length, blank=blank
    )
    t = num_steps if logit_length is None else logit_length
    n = num_labels if label_length is None else label_length
    expected = reference_nll(logits[:t], labels[:n], blank)
    assert got.dtype == jnp.float64 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    # Padded frames do not count: changing them changes nothing.
    if logit_length is not None and logit_length < num_steps:
        changed = logits.copy()
        changed[logit_length:] += 5.0
        again = jit_loss(jnp.asarray(changed), jnp.asarray(labels), logit_length=logit_length,
                         label_length=label_length, blank=blank)
        np.testing.assert_allclose(float(again), float(got), rtol=1e-12)


def test_ctc_loss_float32_and_eager():
    logits, labels = random_problem(3, 7, 5, 4)
    got = jit_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32), logit_length=6, label_length=3)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), reference_nll(logits[:6], labels[:3]), rtol=1e-5)
    # Outside jit the lengths are concrete; labels past label_length are not checked.
    labels[3] = 99
    got = ctc_loss(logits, labels, logit_length=6, label_length=3)
    np.testing.assert_allclose(float(got), reference_nll(logits[:6], labels[:3]), rtol=1e-10)


def test_infeasible_labelling_gives_a_large_finite_loss():
    # [1, 1, 2, 2] needs 6 frames (a blank between equal labels).
    logits, _ = random_problem(4, 7, 5, 0)
    labels = jnp.asarray([1, 1, 2, 2])
    assert reference_nll(logits[:5], [1, 1, 2, 2]) == np.inf
    feasible = jit_loss(jnp.asarray(logits), labels, logit_length=6, label_length=4)
    np.testing.assert_allclose(float(feasible), reference_nll(logits[:6], [1, 1, 2, 2]), rtol=1e-10)
    loss = jit_loss(jnp.asarray(logits), labels, logit_length=5, label_length=4)
    assert 1e4 < float(loss) < 2e5  # log(0) is optax's log_epsilon = -1e5: finite, not inf
    grad = jax.grad(jit_loss)(jnp.asarray(logits), labels, logit_length=5, label_length=4)
    assert np.all(np.isfinite(np.asarray(grad)))
    # Zero frames make any non-empty labelling infeasible; the empty one then has p = 1.
    assert 1e4 < float(jit_loss(jnp.asarray(logits), labels, logit_length=0, label_length=4)) < 2e5
    assert float(jit_loss(jnp.asarray(logits), labels, logit_length=0, label_length=0)) == 0.0


def test_ctc_loss_gradients_match_finite_differences():
    logits, labels = random_problem(5, 7, 5, 4, repeat=True)
    labels = jnp.asarray(labels)
    for logit_length, label_length in ((7, 4), (5, 2)):
        check_grads(
            lambda x: jit_loss(x, labels, logit_length=logit_length, label_length=label_length),
            (jnp.asarray(logits),), order=1, modes=["rev"],
        )


BAD_LOSS_ARGS = [
    ("logits-rank", dict(logits=np.zeros((2, 3, 4))), "logits must have shape [T, K]"),
    ("logits-int", dict(logits=np.zeros((3, 4), np.int32)), "logits must be floating point, got dtype int32"),
    ("labels-rank", dict(labels=np.zeros((1, 2), np.int32) + 1), "labels must have shape [L]"),
    ("labels-float", dict(labels=np.array([1.0, 2.0])), "labels must be integers, got dtype float64"),
    ("label-range", dict(labels=np.array([1, 4])), "labels must lie in [0, 4)"),
    ("label-blank", dict(labels=np.array([1, 0])), "must not contain the blank (0)"),
    ("blank-range", dict(blank=4), "blank must lie in [0, 4)"),
    ("blank-type", dict(blank=1.0), "blank must be a Python int"),
    ("logit-length", dict(logit_length=6), "logit_length must lie in [0, 5]"),
    ("logit-length-float", dict(logit_length=2.0), "logit_length must be an integer scalar"),
    ("label-length", dict(label_length=3), "label_length must lie in [0, 2]"),
    ("label-length-rank", dict(label_length=np.array([1])), "label_length must be a scalar"),
]


@pytest.mark.parametrize("case", BAD_LOSS_ARGS, ids=[c[0] for c in BAD_LOSS_ARGS])
def test_ctc_loss_rejects_bad_arguments(case):
    _, overrides, message = case
    args = dict(logits=np.zeros((5, 4)), labels=np.array([1, 2]))
    args.update(overrides)
    logits, labels = args.pop("logits"), args.pop("labels")
    with pytest.raises(ValueError) as error:
        ctc_loss(logits, labels, **args)
    assert message in str(error.value)


# --------------------------------------------------------------------------
# Greedy decoding.

jit_greedy = jax.jit(ctc_greedy_decode, static_argnames="blank")


def test_greedy_decode_hand_made():
    # argmax per frame: blank a a blank a b b c (blank 0, a = 1, b = 2, c = 3)
    ids = np.array([0, 1, 1, 0, 1, 2, 2, 3])
    logits = 3.0 * np.eye(4)[ids] + 0.1
    labels, length = jit_greedy(logits)
    assert labels.dtype == jnp.int32 and labels.shape == (8,)
    assert labels.tolist() == [1, 1, 2, 3, -1, -1, -1, -1] and int(length) == 4
    labels, length = jit_greedy(logits, logit_length=6)  # frames 6, 7 ignored
    assert labels.tolist() == [1, 1, 2, -1, -1, -1, -1, -1] and int(length) == 3
    labels, length = jit_greedy(logits, logit_length=0)
    assert labels.tolist() == [-1] * 8 and int(length) == 0
    # With blank = 2 the b frames are blanks and the 0 frames a label.
    labels, length = jit_greedy(logits, blank=2)
    assert labels.tolist() == [0, 1, 0, 1, 3, -1, -1, -1] and int(length) == 5


def test_greedy_decode_is_the_collapsed_best_path_under_jit_and_vmap():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, 9, 3))
    lengths = np.array([9, 0, 4, 7, 1, 9])
    labels, counts = jax.jit(jax.vmap(lambda x, t: ctc_greedy_decode(x, logit_length=t, blank=1)))(
        jnp.asarray(logits), jnp.asarray(lengths)
    )
    for b in range(6):
        expected = collapse(np.argmax(logits[b, : lengths[b]], axis=-1), blank=1)
        assert int(counts[b]) == len(expected)
        assert labels[b].tolist() == list(expected) + [-1] * (9 - len(expected))


# --------------------------------------------------------------------------
# Beam search.


@pytest.mark.parametrize("seed,num_steps,num_classes,blank,logit_length", [
    (8, 4, 3, 0, None), (9, 5, 3, 1, None), (10, 5, 3, 2, 4), (11, 3, 4, 0, None),
])
def test_wide_beam_search_is_exact(seed, num_steps, num_classes, blank, logit_length):
    logits, _ = random_problem(seed, num_steps, num_classes, 0)
    t = num_steps if logit_length is None else logit_length
    exact = labelling_probs(logits[:t], blank)  # every labelling of at most t labels
    beams = ctc_beam_search(logits, beam_width=len(exact), logit_length=logit_length, blank=blank)
    assert isinstance(beams, CTCBeams)
    assert sorted(tuple(l.tolist()) for l in beams.labels) == sorted(exact)
    for labelling, log_prob in zip(beams.labels, beams.log_probs):
        np.testing.assert_allclose(log_prob, np.log(exact[tuple(labelling.tolist())]), rtol=1e-10)
    best = max(exact, key=exact.get)
    assert tuple(beams.labels[0].tolist()) == best
    assert np.all(np.diff(beams.log_probs) <= 0)
    # A beam of 8 already finds the most probable labelling on these problems.
    assert tuple(ctc_beam_search(logits, logit_length=logit_length, blank=blank).labels[0].tolist()) == best


def test_beam_search_beats_the_best_path_where_they_differ():
    # Two frames, each blank 0.6 / a 0.4: the best path (blank, blank) gives "" with p = 0.36,
    # but "a" has p = 0.4 * 0.4 + 2 * 0.6 * 0.4 = 0.64 over three paths.
    logits = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    labels, length = jit_greedy(logits)
    assert int(length) == 0
    wide = ctc_beam_search(logits, beam_width=2)
    assert wide.labels[0].tolist() == [1] and wide.labels[1].tolist() == []
    np.testing.assert_allclose(np.exp(wide.log_probs), [0.64, 0.36], rtol=1e-12)
    # A beam of one keeps only "" after the first frame (0.6 > 0.4): the best path's answer.
    narrow = ctc_beam_search(logits, beam_width=1)
    assert narrow.labels[0].tolist() == [] and len(narrow.labels) == 1
    np.testing.assert_allclose(np.exp(narrow.log_probs[0]), 0.36, rtol=1e-12)


def test_beam_search_rejects_bad_arguments():
    with pytest.raises(ValueError, match="beam_width must be a positive int, got 0"):
        ctc_beam_search(np.zeros((3, 3)), beam_width=0)
    with pytest.raises(ValueError, match=r"blank must lie in \[0, 3\)"):
        ctc_beam_search(np.zeros((3, 3)), blank=3)
    with pytest.raises(ValueError, match=r"logit_length must lie in \[0, 3\]"):
        ctc_beam_search(np.zeros((3, 3)), logit_length=4)
    with pytest.raises(ValueError, match=r"logits must have shape \[T, K\]"):
        ctc_greedy_decode(np.zeros((3,)))


# --------------------------------------------------------------------------
# Edit distance and label error rate.


def recursive_edit_distance(a, b):
    """The textbook recursion, memoised: the reference for the row-by-row programme."""

    @functools.lru_cache(maxsize=None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2, 3]) == 3 and edit_distance([1, 2], []) == 2 and edit_distance([], []) == 0
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance(np.array([1, 2, 3, 4]), (2, 3, 4, 1)) == 2
    rng = np.random.default_rng(12)
    for _ in range(40):
        a = tuple(rng.integers(0, 3, size=rng.integers(0, 7)).tolist())
        b = tuple(rng.integers(0, 3, size=rng.integers(0, 7)).tolist())
        assert edit_distance(a, b) == recursive_edit_distance(a, b) == edit_distance(b, a)


def test_label_error_rate():
    # distances 1 (one substitution) and 2 (two insertions) over 3 + 4 target labels
    assert label_error_rate([[1, 2, 4], [5, 5]], [[1, 2, 3], [5, 6, 7, 5]]) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="as many predictions as targets"):
        label_error_rate([[1]], [[1], [2]])
    with pytest.raises(ValueError, match="total length 0"):
        label_error_rate([[1]], [[]])
