"""Losses against NumPy, the train step against a hand-made update, fit against a loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn import data
from scanrnn.train import (
    Batch,
    batch_loss,
    evaluate,
    fit,
    last_step_mse,
    make_train_step,
    mse,
    predict,
    softmax_cross_entropy,
)


# Tests that use optax's Adam relax dtype promotion (see conftest.py).
standard_promotion = pytest.mark.usefixtures("standard_dtype_promotion")


def norm(tree):
    return np.sqrt(sum(np.sum(np.square(np.asarray(leaf, np.float64))) for leaf in jax.tree.leaves(tree)))


def small_model():
    return sr.serial(sr.recurrent(sr.gru(5)), sr.recurrent(sr.simple_rnn(3), return_sequences=False), sr.dense(1))


def small_batch(n=6, t=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, 2)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    length = rng.integers(1, t + 1, size=n).astype(np.int32)
    return Batch(x, y), Batch(x, y, length)


# --------------------------------------------------------------------------
# Losses.


def test_mse_against_numpy():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_allclose(mse(pred, target), np.mean((pred - target) ** 2), rtol=1e-12)
    # Only the first 4 steps count, averaged over their 4 * 3 elements.
    np.testing.assert_allclose(mse(pred, target, length=4), np.mean((pred[:4] - target[:4]) ** 2), rtol=1e-12)
    assert float(mse(pred, target, length=0)) == 0.0


def test_last_step_mse_against_numpy():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(7, 10)), rng.normal(size=(7, 10))
    np.testing.assert_allclose(last_step_mse(pred, target), np.mean((pred[-1] - target[-1]) ** 2), rtol=1e-12)
    np.testing.assert_allclose(last_step_mse(pred, target, length=3), np.mean((pred[2] - target[2]) ** 2), rtol=1e-12)


@pytest.mark.slow
def test_softmax_cross_entropy_against_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 4))
    labels = rng.integers(0, 4, size=6)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(6), labels]
    np.testing.assert_allclose(softmax_cross_entropy(logits, labels), nll.mean(), rtol=1e-12)
    np.testing.assert_allclose(softmax_cross_entropy(logits, labels, length=2), nll[:2].mean(), rtol=1e-12)
    np.testing.assert_allclose(softmax_cross_entropy(logits[0], labels[0]), nll[0], rtol=1e-12)


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\).*\(3, 1\)"):
        mse(jnp.zeros((3, 2)), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"\[T, F\]"):
        last_step_mse(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="integers"):
        softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"length must lie in \[0, 3\]"):
        mse(jnp.zeros((3, 2)), jnp.zeros((3, 2)), length=4)


@pytest.mark.slow
def test_batch_loss_is_mean_of_per_example_losses(key):
    model = small_model()
    params = model.init(key, 2)
    plain, padded = small_batch()
    one = jax.jit(lambda p, x, y, n: mse(model.apply(p, x, length=n), y))  # compiled once per form of n
    whole = jax.jit(lambda p, b: batch_loss(model, mse, p, b))
    for batch in (plain, padded):
        loop = []
        for i in range(len(batch.x)):
            n = None if batch.length is None else batch.length[i]
            loop.append(float(one(params, batch.x[i], batch.y[i], n)))
        np.testing.assert_allclose(whole(params, batch), np.mean(loop), rtol=1e-5)


# --------------------------------------------------------------------------
# The train step.


@pytest.mark.slow
@standard_promotion
def test_train_step_equals_update_by_hand(key):
    model = small_model()
    params = model.init(key, 2)
    optimizer = optax.adam(1e-2)
    step = make_train_step(model, mse, optimizer)
    _, batch = small_batch()
    state = optimizer.init(params)
    new_params, new_state, metrics = step(params, state, batch)

    loss, grads = jax.jit(jax.value_and_grad(lambda p: batch_loss(model, mse, p, batch)))(params)
    # One compiled program: eagerly, each of Adam's small ops would compile on its own.
    update = jax.jit(lambda g, s, p: optax.apply_updates(p, optimizer.update(g, s, p)[0]))
    expected = update(grads, state, params)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], norm(grads), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # A second call with the same shapes does not compile again.
    step(new_params, new_state, batch)
    assert step.jitted._cache_size() == 1


@pytest.mark.slow
def test_fit_batch_size_one_is_per_example_sgd(key):
    """The first seed's training: SGD on one example at a time, in a shuffled order."""
    model = small_model()
    params0 = model.init(key, 2)
    batch, _ = small_batch(n=5)
    lr, seed = 0.1, 7
    params, history = fit(model, params0, optax.sgd(lr), mse, batch, epochs=2, batch_size=1, seed=seed)

    rng = np.random.default_rng(seed)
    p = params0
    grad = jax.jit(jax.value_and_grad(lambda p, x, y: mse(model.apply(p, x), y)))
    for _ in range(2):
        losses = []
        for i in rng.permutation(5):
            value, g = grad(p, batch.x[i], batch.y[i])
            losses.append(float(value))
            p = jax.tree.map(lambda a, b: a - lr * b, p, g)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["train_loss"][-1], np.mean(losses), rtol=1e-5)


@pytest.mark.slow
@standard_promotion
def test_fit_is_reproducible_and_records_history(key):
    model = small_model()
    params = model.init(key, 2)
    train, valid = small_batch(n=10, seed=1)[1], small_batch(n=4, seed=2)[1]
    runs = [fit(model, params, optax.adam(1e-2), mse, train, valid, epochs=3, batch_size=4, seed=3) for _ in range(2)]
    (p1, h1), (p2, h2) = runs
    assert len(h1["train_loss"]) == len(h1["valid_loss"]) == len(h1["seconds"]) == 3
    assert h1["train_loss"] == h2["train_loss"] and h1["valid_loss"] == h2["valid_loss"]
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(h1["valid_loss"][-1], evaluate(model, mse, p1, valid), rtol=1e-6)


@pytest.mark.slow
def test_fit_clips_gradients_by_global_norm(key):
    model = small_model()
    params = model.init(key, 2)
    batch, _ = small_batch(n=4)
    batch = Batch(batch.x, batch.y * 100.0)  # large errors, large gradients
    clipped, _ = fit(model, params, optax.sgd(1.0), mse, batch, epochs=1, batch_size=4, clip_norm=0.5)
    step = norm(jax.tree.map(lambda a, b: a - b, clipped, params))
    np.testing.assert_allclose(step, 0.5, rtol=1e-4)


def test_fit_rejects_bad_batches(key):
    model = small_model()
    params = model.init(key, 2)
    with pytest.raises(ValueError, match=r"batch.x must have shape \[B, T, I\]"):
        fit(model, params, optax.sgd(0.1), mse, Batch(np.zeros((4, 2)), np.zeros((4, 1))), epochs=1)
    with pytest.raises(ValueError, match=r"leading batch axis of 4"):
        fit(model, params, optax.sgd(0.1), mse, Batch(np.zeros((4, 3, 2)), np.zeros((3, 1))), epochs=1)


@pytest.mark.slow
def test_predict_matches_apply(key):
    model = small_model()
    params = model.init(key, 2)
    _, batch = small_batch(n=5)
    out = predict(model, params, batch.x, batch.length, batch_size=2)
    for i in range(5):
        np.testing.assert_allclose(out[i], model.apply(params, batch.x[i], length=int(batch.length[i])), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@standard_promotion
def test_training_learns_the_binary_sum(key):
    """The first seed's task (sequences of 8, hidden layers 6 and 4): validation MSE below 0.01."""
    x, y = data.many_to_one(data.make_sum(600, 8, rng=0))
    (xt, yt), (xv, yv) = data.split(x, y, sizes=(402, 198))
    model = sr.serial(
        sr.recurrent(sr.simple_rnn(6, "tanh")),
        sr.recurrent(sr.simple_rnn(4, "tanh"), return_sequences=False),
        sr.dense(1),
    )
    params = model.init(key, 1)
    epochs, batch_size = 60, 16
    schedule = optax.cosine_decay_schedule(0.02, epochs * -(-402 // batch_size), alpha=0.05)
    before = evaluate(model, mse, params, Batch(xv, yv))
    params, history = fit(
        model, params, optax.adam(schedule), mse, Batch(xt, yt), Batch(xv, yv), epochs=epochs, batch_size=batch_size
    )
    assert before > 1.0
    assert history["valid_loss"][-1] < 0.01
    pred = predict(model, params, xv[:15])
    assert np.all(np.abs(pred - yv[:15]) < 0.5)  # every sum rounds to the right integer
