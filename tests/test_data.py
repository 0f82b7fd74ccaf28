"""The seeds' data generators, the split helper and params checkpoints."""

import jax
import numpy as np
import pytest

import scanrnn as sr
from scanrnn import data
from scanrnn.checkpoint import load_params, save_params


def test_make_sum_rows_are_bits_then_their_sum():
    rows = data.make_sum(600, 8, rng=0)
    assert rows.shape == (600, 8)
    assert set(np.unique(rows[:, :-1])) == {0, 1}
    np.testing.assert_array_equal(rows[:, -1], rows[:, :-1].sum(axis=1))
    # Fair bits, as the seed's np.random.randint(0, 2): the sum is Binomial(7, 1/2).
    assert abs(rows[:, :-1].mean() - 0.5) < 0.03
    assert abs(rows[:, -1].var() - 7 / 4) < 0.3


def test_make_simpler_repeats_the_last_bit():
    rows = data.make_simpler(50, 5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(rows[:, -1], rows[:, -2])


def test_generators_are_reproducible_from_seed_or_generator():
    np.testing.assert_array_equal(data.make_sum(10, 5, rng=3), data.make_sum(10, 5, rng=np.random.default_rng(3)))
    np.testing.assert_array_equal(data.generate_time_series(4, 9, rng=5), data.generate_time_series(4, 9, rng=5))
    assert not np.array_equal(data.make_sum(10, 5, rng=3), data.make_sum(10, 5, rng=4))


def _seed_generate_time_series(batch_size, n_steps):
    """The second seed's generator, verbatim in its maths, on NumPy's global state."""
    freq1, freq2, offsets1, offsets2 = np.random.rand(4, batch_size, 1)
    time = np.linspace(0, 1, n_steps)
    series = 0.5 * np.sin((time - offsets1) * (freq1 * 10 + 10))
    series += 0.2 * np.sin((time - offsets2) * (freq2 * 20 + 20))
    series += 0.1 * (np.random.rand(batch_size, n_steps) - 0.5)
    return series[..., np.newaxis].astype(np.float32)


def test_generate_time_series_matches_the_seed_in_distribution():
    ours = data.generate_time_series(4000, 51, rng=42)
    assert ours.shape == (4000, 51, 1) and ours.dtype == np.float32
    state = np.random.get_state()
    try:
        np.random.seed(42)
        theirs = _seed_generate_time_series(4000, 51)
    finally:
        np.random.set_state(state)
    # Same bounds, and per-step mean and variance within sampling error.
    assert np.abs(ours).max() <= 0.75 and np.abs(theirs).max() <= 0.75
    assert np.abs(ours.mean(axis=0) - theirs.mean(axis=0)).max() < 0.04
    assert np.abs(ours.var(axis=0) - theirs.var(axis=0)).max() < 0.02
    # The one-step naive forecast error the seed's study starts from.
    naive = lambda s: np.mean((s[:, -2] - s[:, -1]) ** 2)
    assert abs(naive(ours) - naive(theirs)) < 0.003


def test_many_to_one_splits_inputs_and_target():
    rows = np.array([[1, 0, 1, 2], [0, 0, 1, 1]])
    x, y = data.many_to_one(rows)
    assert x.shape == (2, 3, 1) and y.shape == (2, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :, 0], rows[:, :-1])
    np.testing.assert_array_equal(y[:, 0], rows[:, -1])


def test_split_counts_fractions_and_shuffle():
    a, b = np.arange(10), np.arange(10) * 10
    train, valid, test = data.split(a, b, sizes=(7, 2, 1))
    np.testing.assert_array_equal(train[0], np.arange(7))
    np.testing.assert_array_equal(valid[1], [70, 80])
    np.testing.assert_array_equal(test[0], [9])
    first, second = data.split(a, sizes=(0.67, 0.33))
    assert len(first) + len(second) == 10 and len(second) == 3
    s1 = data.split(a, b, sizes=(5, 5), rng=0)
    s2 = data.split(a, b, sizes=(5, 5), rng=0)
    np.testing.assert_array_equal(s1[0][0], s2[0][0])
    np.testing.assert_array_equal(s1[0][0] * 10, s1[0][1])  # rows stay paired
    np.testing.assert_array_equal(np.sort(np.concatenate([s1[0][0], s1[1][0]])), a)
    assert not np.array_equal(s1[0][0], np.arange(5))


def test_data_bad_input():
    with pytest.raises(ValueError, match="rng must be"):
        data.make_sum(10, 5, rng=None)
    with pytest.raises(ValueError, match="n_discr_points must be at least 2"):
        data.make_sum(10, 1, rng=0)
    with pytest.raises(ValueError, match="summing to at most 10"):
        data.split(np.arange(10), sizes=(8, 3))
    with pytest.raises(ValueError, match="same first dimension"):
        data.split(np.arange(10), np.arange(9), sizes=(5, 5))
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        data.many_to_one(np.arange(5))


@pytest.mark.slow
def test_params_round_trip(tmp_path, key):
    model = sr.serial(sr.bidirectional(sr.lstm(3)), sr.dense(2))
    params = model.init(key, 2)
    path = tmp_path / "params.npz"
    save_params(path, params)
    other = model.init(jax.random.key(1), 2)
    loaded = load_params(path, other)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected"):
        load_params(path, sr.serial(sr.recurrent(sr.gru(3)), sr.dense(2)).init(key, 2))
