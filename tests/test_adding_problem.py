"""The adding problem generator, against a per-example loop over its definition."""

import numpy as np
import pytest

from scanrnn import data


def test_two_markers_one_in_each_half_and_the_target_is_their_sum():
    n, steps = 500, 21  # odd: the first half is steps 0..9, the second 10..20
    x, y = data.adding_problem(n, steps, rng=3)
    assert x.shape == (n, steps, 2) and y.shape == (n, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    half = steps // 2
    for i in range(n):  # the definition, one example at a time
        marked = np.flatnonzero(markers[i])
        assert len(marked) == 2
        assert marked[0] < half <= marked[1]
        assert y[i, 0] == np.float32(values[i, marked[0]] + values[i, marked[1]])
    # Both halves are covered: every step of each half is marked by some example.
    first = markers[:, :half].argmax(axis=1)
    second = half + markers[:, half:].argmax(axis=1)
    assert set(first) == set(range(half)) and set(second) == set(range(half, steps))
    assert 0.0 <= values.min() and values.max() < 1.0


def test_predicting_one_is_the_one_sixth_baseline():
    _, y = data.adding_problem(20000, 10, rng=0)
    assert abs(y.mean() - 1.0) < 0.01
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.005


def test_seed_and_generator_give_the_same_draws():
    a = data.adding_problem(4, 8, rng=7)
    b = data.adding_problem(4, 8, rng=np.random.default_rng(7))
    c = data.adding_problem(4, 8, rng=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_shortest_sequence_marks_both_steps():
    x, y = data.adding_problem(5, 2, rng=0)
    np.testing.assert_array_equal(x[..., 1], np.ones((5, 2)))
    np.testing.assert_array_equal(y[:, 0], x[..., 0].sum(axis=1))


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 10), "n must be an int of at least 1, got 0"),
        ((3, 1), "n_steps must be an int of at least 2, got 1"),
        ((3, 10.0), "n_steps must be an int"),
        ((True, 10), "n must be an int"),
    ],
)
def test_bad_arguments_raise(args, match):
    with pytest.raises(ValueError, match=match):
        data.adding_problem(*args, rng=0)


def test_rng_is_required_and_checked():
    with pytest.raises(TypeError):
        data.adding_problem(3, 10)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator or an int seed"):
        data.adding_problem(3, 10, rng=0.5)
