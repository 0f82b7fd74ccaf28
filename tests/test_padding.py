"""Padding past ``length`` never reaches a gradient: NaN and inf padding give exactly the zero-padding gradients.

Many data pipelines pad missing steps with NaN. The steps past a sequence's
length still run (their results are discarded), so the inputs there must be
masked before any arithmetic, or the backward pass computes ``0 * NaN``.
Each case below differentiates a loss of the outputs and the final carry
with respect to the params and the inputs, once with zeros in the padding
and once with NaN, inf and -inf there, and asserts the same bits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from helpers import FACTORY_CASES, elman, hand_or_autodiff, make_cell, random_params
from scanrnn.train import Batch, batch_loss, last_step_mse, mse, softmax_cross_entropy

T, I, H, LENGTH = 7, 3, 4, 4
FILLS = [np.nan, np.inf, -np.inf]


def padded(fill, shape=(T, I), length=LENGTH, seed=0, dtype=np.float32):
    """Random inputs whose steps from ``length`` on hold ``fill``."""
    xs = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    xs[length:] = fill
    return jnp.asarray(xs)


def weights_like(tree, seed=1):
    """Fixed random weights for a scalar of ``tree``: every output gets its own cotangent."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(jnp.shape(a)), jnp.result_type(a)), tree)


def scalar(tree, weights):
    return sum(jnp.sum(a * w) for a, w in zip(jax.tree.leaves(tree), jax.tree.leaves(weights)))


def assert_same_gradients(fn, params, xs_of_fill):
    """``fn(params, xs) -> pytree``; its weighted sum's gradients agree bit for bit across fills."""
    out_weights = weights_like(jax.eval_shape(fn, params, xs_of_fill(0.0)))
    grad = jax.jit(jax.grad(lambda p, x: scalar(fn(p, x), out_weights), argnums=(0, 1)))
    expected = grad(params, xs_of_fill(0.0))
    for leaf in jax.tree.leaves(expected):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(expected[0]))
    for fill in FILLS:
        given = grad(params, xs_of_fill(fill))
        for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(given)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e), err_msg=f"padding {fill}")
    # The inputs' gradient is zero on the padding.
    np.testing.assert_array_equal(np.asarray(expected[1])[LENGTH:], 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [c[1:] for c in FACTORY_CASES], ids=[c[0] for c in FACTORY_CASES])
def test_every_built_in_cell(name, options):
    """Every factory (the activations do not change where the padding goes)."""
    cell = make_cell(name, options, H)
    params = random_params(cell, I)
    execution = sr.Execution(backward=hand_or_autodiff(cell), hoist=False)

    def fn(p, xs):
        return sr.unroll(cell, p, xs, length=LENGTH, reverse=True, execution=execution)

    assert_same_gradients(fn, params, padded)


LSTM_PATHS = [(sr.Execution(backward=backward, hoist=hoist), reverse)
              for backward, reverse in [("hand", False), ("autodiff", True)] for hoist in (False, True)]


@pytest.mark.parametrize("execution, reverse", LSTM_PATHS,
                         ids=[f"{e.backward}-{'reverse' if r else 'forward'}-{'hoisted' if e.hoist else 'in_loop'}"
                              for e, r in LSTM_PATHS])
def test_lstm_every_path(execution, reverse):
    cell = sr.lstm(H)
    params = random_params(cell, I)

    def fn(p, xs):
        return sr.unroll(cell, p, xs, length=LENGTH, reverse=reverse, execution=execution)

    assert_same_gradients(fn, params, padded)


@pytest.mark.parametrize("execution", [sr.Execution(remat="step", backward="hand"),
                                       sr.Execution(remat="sqrt", backward="hand")], ids=["step", "sqrt"])
@pytest.mark.slow
def test_remat(execution):
    cell = sr.gru(H)
    params = random_params(cell, I)

    def fn(p, xs):
        return sr.unroll(cell, p, xs, length=LENGTH, execution=execution)

    assert_same_gradients(fn, params, padded)


@pytest.mark.slow
@pytest.mark.parametrize("factory", [sr.min_gru, sr.min_lstm])
@pytest.mark.parametrize("mode", ["associative", "chunked", "sequential"])
def test_min_cells(factory, mode):
    cell = factory(H, mode=mode)
    params = random_params(cell, I)
    assert_same_gradients(lambda p, xs: sr.unroll(cell, p, xs, length=LENGTH, reverse=True), params, padded)


@pytest.mark.parametrize("factory", [sr.jordan, sr.elman, sr.narx])
def test_classic_cells(factory):
    cell = factory(H, 2)
    params = random_params(cell, I)
    assert_same_gradients(lambda p, xs: sr.unroll(cell, p, xs, length=LENGTH), params, padded)


def test_user_written_cell():
    cell = elman(H, jnp.float32)
    params = random_params(cell, I)
    assert_same_gradients(lambda p, xs: sr.unroll(cell, p, xs, length=LENGTH), params, padded)


@pytest.mark.slow
def test_regularised_unroll():
    cell = sr.lstm(H)
    params = random_params(cell, I)
    key = jax.random.key(3)

    def fn(p, xs):
        return sr.unroll(
            cell, p, xs, length=LENGTH, key=key, execution=sr.Execution(backward="hand"),
            regularization=sr.Regularization(dropout=0.3, recurrent_dropout=0.3, zoneout=0.2),
        )

    assert_same_gradients(fn, params, padded)


@pytest.mark.slow
@pytest.mark.parametrize("execution", [sr.Execution(one_scan=False), sr.Execution(one_scan=True)],
                         ids=["two_scans", "one_scan"])
def test_bidirectional_layer(execution):
    layer = sr.bidirectional(sr.gru(H), execution=execution)
    params = layer.init(jax.random.key(0), I)
    assert_same_gradients(lambda p, xs: layer.apply(p, xs, LENGTH), params, padded)


@pytest.mark.slow
def test_stacked_model_with_dense_and_conv():
    model = sr.serial(
        sr.causal_conv(3, 2), sr.recurrent(sr.lstm(H)), sr.dense(2), sr.recurrent(sr.simple_rnn(H), return_sequences=False)
    )
    params = model.init(jax.random.key(0), I)
    assert_same_gradients(lambda p, xs: model.apply(p, xs, LENGTH), params, padded)


@pytest.mark.slow
def test_batched_loss_with_nan_targets():
    """A batch padded with NaN in both the inputs and the sequence targets, as ``fit`` trains it."""
    model = sr.serial(sr.recurrent(sr.gru(H)), sr.dense(2))
    params = model.init(jax.random.key(0), I)
    lengths = jnp.array([LENGTH, 2, T])

    def batch(fill):
        x = np.random.default_rng(0).standard_normal((3, T, I)).astype(np.float32)
        y = np.random.default_rng(1).standard_normal((3, T, 2)).astype(np.float32)
        for b, n in enumerate(np.asarray(lengths)):
            x[b, n:] = fill
            y[b, n:] = fill
        return Batch(jnp.asarray(x), jnp.asarray(y), lengths)

    for loss in (mse, last_step_mse):
        grad = jax.jit(jax.value_and_grad(lambda p, b: batch_loss(model, loss, p, b)))
        expected = grad(params, batch(0.0))
        assert np.isfinite(float(expected[0]))
        for fill in FILLS:
            given = grad(params, batch(fill))
            for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(given)):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_cross_entropy_ignores_labels_past_the_length():
    """A label of -1 (a common pad) or of K past the length changes nothing."""
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((T, 5)), jnp.float32)
    labels = np.random.default_rng(1).integers(0, 5, T).astype(np.int32)
    grad = jax.jit(jax.value_and_grad(lambda z, y: softmax_cross_entropy(z, y, LENGTH)))
    expected = grad(logits, jnp.asarray(labels))
    for pad in (-1, 5, 1000):
        bad = labels.copy()
        bad[LENGTH:] = pad
        nan_logits = logits.at[LENGTH:].set(jnp.nan)
        given = grad(nan_logits, jnp.asarray(bad))
        np.testing.assert_array_equal(np.asarray(given[0]), np.asarray(expected[0]))
        np.testing.assert_array_equal(np.asarray(given[1]), np.asarray(expected[1]))
