"""Bad input to training and evaluation: fit, init_state, evaluate, predict, the train steps and the losses.

Every case is refused on the host, before anything is compiled, with a
message naming what was expected and what was given.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn._checks import InputTypeError
from scanrnn.train import (
    Batch,
    accuracy,
    batch_initial_carry,
    epoch_order,
    evaluate,
    fit,
    init_state,
    make_tbptt_step,
    make_train_step,
    mse,
    predict,
    softmax_cross_entropy,
)

N, T, I, K = 6, 4, 2, 3


@pytest.fixture(scope="module")
def regression():
    model = sr.serial(sr.recurrent(sr.gru(3), return_sequences=False), sr.dense(1))
    params = model.init(jax.random.key(0), I)
    x = np.random.default_rng(0).normal(size=(N, T, I)).astype(np.float32)
    return model, params, Batch(x, np.zeros((N, 1), np.float32))


@pytest.fixture(scope="module")
def classifier():
    model = sr.serial(sr.recurrent(sr.gru(3), return_sequences=False), sr.dense(K))
    params = model.init(jax.random.key(0), I)
    x = np.random.default_rng(0).normal(size=(N, T, I)).astype(np.float32)
    return model, params, Batch(x, np.arange(N, dtype=np.int32) % K)


@pytest.fixture(scope="module")
def tagger():
    """One label per step, with lengths."""
    model = sr.serial(sr.recurrent(sr.gru(3)), sr.dense(K))
    params = model.init(jax.random.key(0), I)
    x = np.random.default_rng(0).normal(size=(N, T, I)).astype(np.float32)
    return model, params, Batch(x, np.zeros((N, T), np.int32), np.full(N, T, np.int32))


def fit_with(problem, **options):
    model, params, data = problem
    options = {"epochs": 1, **options}
    loss = options.pop("loss", mse)
    return fit(model, params, optax.sgd(0.1), loss, options.pop("train", data), options.pop("valid", None), **options)


# --------------------------------------------------------------------------
# fit's options.


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive int, got 0"),
        ({"epochs": -1}, ValueError, "epochs must be a positive int, got -1"),
        ({"epochs": 2.5}, InputTypeError, "epochs must be a positive int, got 2.5"),
        ({"epochs": True}, InputTypeError, "epochs must be a positive int, got True"),
        ({"epochs": "3"}, InputTypeError, "epochs must be a positive int, got '3'"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ({"batch_size": 2.0}, InputTypeError, "batch_size must be a positive int, got 2.0"),
        ({"batch_size": None}, InputTypeError, "batch_size must be a positive int, got None"),
        ({"clip_norm": -1.0}, ValueError, "clip_norm must be a positive finite number, got -1.0"),
        ({"clip_norm": 0}, ValueError, "clip_norm must be a positive finite number, got 0"),
        ({"clip_norm": float("nan")}, ValueError, "clip_norm must be a positive finite number, got nan"),
        ({"clip_norm": float("inf")}, ValueError, "clip_norm must be a positive finite number, got inf"),
        ({"clip_norm": "1"}, InputTypeError, "clip_norm must be a positive number, got '1'"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int, got -1"),
        ({"seed": 1.5}, InputTypeError, "seed must be a non-negative int, got 1.5"),
        ({"key": 0}, InputTypeError, "key must be a PRNG key such as jax.random.key(0), got 0"),
        ({"key": np.zeros(2, np.float32)}, InputTypeError, "key must be a PRNG key such as jax.random.key(0), got an array of dtype float32 and shape (2,)"),
        ({"verbose": "yes"}, InputTypeError, "verbose must be True or False, got 'yes'"),
        ({"resume": 1}, InputTypeError, "resume must be True or False, got 1"),
        ({"restore_best": "no"}, InputTypeError, "restore_best must be True or False, got 'no'"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite must be one of ('raise', 'skip'), got 'ignore'"),
        ({"monitor_mode": "lowest"}, ValueError, "monitor_mode must be one of ('auto', 'min', 'max'), got 'lowest'"),
        ({"patience": 0}, ValueError, "patience must be a positive int, got 0"),
        ({"patience": 2}, ValueError, "patience, restore_best and monitor need a validation set (valid)"),
        ({"restore_best": True}, ValueError, "patience, restore_best and monitor need a validation set (valid)"),
        ({"keep": 0}, ValueError, "keep must be a positive int, got 0"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be a positive int, got 0"),
        ({"checkpoint_interval": -1.0}, ValueError, "checkpoint_interval must be a non-negative finite number, got -1.0"),
        ({"checkpoint_interval": "5"}, InputTypeError, "checkpoint_interval must be a non-negative number, got '5'"),
        ({"checkpoint_every": 5}, ValueError, "resume and checkpoint_every need a checkpoint_dir"),
        ({"resume": True}, ValueError, "resume and checkpoint_every need a checkpoint_dir"),
        ({"metrics": [mse]}, InputTypeError, "metrics must be a dict of name -> function"),
        ({"metrics": {"loss": mse}}, ValueError, "metrics must not be named 'loss'"),
    ],
)
def test_fit_options(regression, options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        fit_with(regression, **options)


def test_fit_monitor_must_be_a_validation_entry(regression):
    data = regression[2]
    with pytest.raises(ValueError, match=re.escape("monitor must be one of ['valid_loss', 'valid_mae']")):
        fit_with(regression, valid=data, metrics={"mae": lambda p, t: jnp.mean(jnp.abs(p - t))}, monitor="valid_acc")


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"model": sr.gru(3)}, InputTypeError, "model must be a scanrnn Layer or None (a batch objective as loss), got GatedCell"),
        ({"optimizer": optax.sgd}, InputTypeError, "optimizer must be an optax GradientTransformation, got function"),
        ({"loss": "mse"}, InputTypeError, "loss must be a function, got str"),
    ],
)
def test_fit_arguments_of_the_wrong_kind(regression, arguments, error, message):
    model, params, data = regression
    call = {"model": model, "optimizer": optax.sgd(0.1), "loss": mse, **arguments}
    with pytest.raises(error, match=re.escape(message)):
        fit(call["model"], params, call["optimizer"], call["loss"], data, epochs=1)


# --------------------------------------------------------------------------
# fit's data.


@pytest.mark.slow
def test_fit_data(regression, classifier, tagger):
    model, params, data = regression
    empty = Batch(data.x[:0], data.y[:0])
    with pytest.raises(ValueError, match=re.escape("train is empty (0 examples); fit and evaluate need at least one")):
        fit_with(regression, train=empty)
    with pytest.raises(ValueError, match=re.escape("valid is empty (0 examples)")):
        fit_with(regression, valid=empty)
    with pytest.raises(InputTypeError, match=re.escape("train must be a scanrnn.train.Batch(x, y, length), got tuple")):
        fit_with(regression, train=(data.x, data.y))
    with pytest.raises(InputTypeError, match=re.escape("batch.x must hold real numbers (floating or integer), got dtype complex64")):
        fit_with(regression, train=Batch(data.x.astype(np.complex64), data.y))
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [-5, 60]")):
        fit_with(regression, train=Batch(data.x, data.y, np.array([60, -5, 2, 2, 2, 2], np.int32)))
    # Class labels must lie in [0, K) for the cross-entropy (and the accuracy of valid).
    bad = Batch(classifier[2].x, np.array([0, 1, 2, 3, 0, 1], np.int32))
    with pytest.raises(ValueError, match=re.escape("softmax_cross_entropy: class labels must lie in [0, 3) (K = 3 logits), got values in [0, 3]")):
        fit_with(classifier, loss=softmax_cross_entropy, train=bad)
    negative = Batch(classifier[2].x, np.array([0, 1, -1, 2, 0, 1], np.int32))
    with pytest.raises(ValueError, match=re.escape("class labels must lie in [0, 3) (K = 3 logits), got values in [-1, 2]")):
        fit_with(classifier, loss=softmax_cross_entropy, valid=negative)
    floats = Batch(classifier[2].x, classifier[2].y.astype(np.float32))
    with pytest.raises(ValueError, match=re.escape("softmax_cross_entropy: labels must be integers, got dtype float32")):
        fit_with(classifier, loss=softmax_cross_entropy, train=floats)
    # Per-step labels count only up to each example's length: a pad of -1 after it is fine, before it is not.
    x, y, n = tagger[2]
    padded = y.copy()
    padded[:, 3:] = -1
    with pytest.raises(ValueError, match=re.escape("got values in [-1, 0]")):
        fit_with(tagger, loss=softmax_cross_entropy, train=Batch(x, padded, n))
    fit_with(tagger, loss=softmax_cross_entropy, train=Batch(x, padded, np.full(N, 3, np.int32)))


def test_init_state(regression):
    params = regression[1]
    with pytest.raises(ValueError, match=re.escape("seed must be a non-negative int, got -1")):
        init_state(params, optax.sgd(0.1), seed=-1)
    with pytest.raises(InputTypeError, match=re.escape("key must be a PRNG key such as jax.random.key(0), got 3")):
        init_state(params, optax.sgd(0.1), key=3)
    with pytest.raises(InputTypeError, match=re.escape("optimizer must be an optax GradientTransformation, got float")):
        init_state(params, 0.1)
    with pytest.raises(ValueError, match=re.escape("clip_norm must be a positive finite number, got 0.0")):
        init_state(params, optax.sgd(0.1), clip_norm=0.0)
    with pytest.raises(ValueError, match=re.escape("seed must be a non-negative int, got -2")):
        epoch_order(-2, 0, 5)


# --------------------------------------------------------------------------
# evaluate and predict.


def test_evaluate(regression, classifier):
    model, params, data = regression
    with pytest.raises(ValueError, match=re.escape("batch_size must be a positive int, got 0")):
        evaluate(model, mse, params, data, batch_size=0)
    with pytest.raises(InputTypeError, match=re.escape("batch_size must be a positive int, got 2.0")):
        evaluate(model, mse, params, data, batch_size=2.0)
    with pytest.raises(ValueError, match=re.escape("data is empty (0 examples)")):
        evaluate(model, mse, params, Batch(data.x[:0], data.y[:0]))
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [-5, 60]")):
        evaluate(model, mse, params, Batch(data.x, data.y, np.array([60, -5, 2, 2, 2, 2], np.int32)))
    model, params, data = classifier
    with pytest.raises(ValueError, match=re.escape("accuracy: class labels must lie in [0, 3) (K = 3 logits), got values in [0, 7]")):
        evaluate(model, mse, params, Batch(data.x, np.array([0, 7, 1, 1, 1, 1], np.int32)), metrics={"accuracy": accuracy})


def test_predict(regression):
    model, params, data = regression
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [-5, 60]")):
        predict(model, params, data.x[:3], np.array([60, -5, 20], np.int32))
    with pytest.raises(ValueError, match=re.escape("length must be an integer array, got dtype float32")):
        predict(model, params, data.x[:2], np.array([2.0, 3.0], np.float32))
    with pytest.raises(ValueError, match=re.escape("x is empty (0 examples)")):
        predict(model, params, data.x[:0])
    with pytest.raises(ValueError, match=re.escape("x must have shape [N, T, I], got shape (4, 2)")):
        predict(model, params, data.x[0])
    with pytest.raises(ValueError, match=re.escape("batch_size must be a positive int, got 0")):
        predict(model, params, data.x, batch_size=0)


# --------------------------------------------------------------------------
# The train steps.


def test_train_step_checks_each_batch(regression, classifier):
    model, params, data = regression
    step = make_train_step(model, mse, optax.sgd(0.1))
    opt_state = optax.sgd(0.1).init(params)
    with pytest.raises(ValueError, match=re.escape("the batch is empty (0 examples): a step on it would only advance the optimizer's count")):
        step(params, opt_state, Batch(data.x[:0], data.y[:0]))
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [-5, 60]")):
        step(params, opt_state, Batch(data.x[:3], data.y[:3], np.array([60, -5, 2], np.int32)))
    with pytest.raises(InputTypeError, match=re.escape("key must be a PRNG key such as jax.random.key(0), got 7")):
        step(params, opt_state, Batch(data.x, data.y), 7)
    with pytest.raises(InputTypeError, match=re.escape("make_train_step: model must be a scanrnn Layer")):
        make_train_step(sr.gru(3), mse, optax.sgd(0.1))
    with pytest.raises(InputTypeError, match=re.escape("skip_nonfinite must be True or False, got 'yes'")):
        make_train_step(model, mse, optax.sgd(0.1), skip_nonfinite="yes")
    model, params, data = classifier
    step = make_train_step(model, softmax_cross_entropy, optax.sgd(0.1))
    with pytest.raises(ValueError, match=re.escape("class labels must lie in [0, 3) (K = 3 logits), got values in [0, 5]")):
        step(params, optax.sgd(0.1).init(params), Batch(data.x[:2], np.array([0, 5], np.int32)))


def test_tbptt_step_checks_each_batch(regression):
    model = sr.serial(sr.recurrent(sr.gru(3)), sr.dense(1))
    params = model.init(jax.random.key(0), I)
    step = make_tbptt_step(model, mse, optax.sgd(0.1))
    x = regression[2].x[:3]
    carry = batch_initial_carry(model, params, 3)
    with pytest.raises(ValueError, match=re.escape("length must lie in [0, 4], got values in [-5, 60]")):
        step(params, optax.sgd(0.1).init(params), carry, Batch(x, np.zeros((3, T, 1), np.float32), np.array([60, -5, 2], np.int32)))
    with pytest.raises(ValueError, match=re.escape("batch_size must be a positive int, got 0")):
        batch_initial_carry(model, params, 0)


# --------------------------------------------------------------------------
# The losses.


def test_losses_of_one_example():
    with pytest.raises(ValueError, match=re.escape("mse: pred must have at least one element (one step), got shape (0, 2)")):
        mse(jnp.zeros((0, 2)), jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match=re.escape("softmax_cross_entropy: class labels must lie in [0, 3) (K = 3 logits), got values in [3, 3]")):
        softmax_cross_entropy(jnp.zeros(3), jnp.asarray(3))
    with pytest.raises(ValueError, match=re.escape("softmax_cross_entropy: class labels must lie in [0, 3) (K = 3 logits), got values in [-1, 0]")):
        softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, -1]))
    with pytest.raises(ValueError, match=re.escape("accuracy: needs at least one class and one step")):
        accuracy(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))
    with pytest.raises(ValueError, match=re.escape("last_step_mse: pred must have at least one element (one step), got shape (0, 2)")):
        sr.train.last_step_mse(jnp.zeros((0, 2)), jnp.zeros((0, 2)))


def test_traced_labels_out_of_range_give_nan_not_another_class():
    """Under a user's jit the labels cannot be checked: one outside [0, K) makes the loss NaN (never a wrapped index)."""
    loss = jax.jit(softmax_cross_entropy)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, K)), jnp.float32)
    assert np.isfinite(float(loss(logits, jnp.array([0, 1, 2]))))
    for bad in ([0, -1, 2], [0, 1, K]):
        assert np.isnan(float(loss(logits, jnp.array(bad))))
    # Past the length they are padding, and ignored.
    masked = jax.jit(lambda z, y: softmax_cross_entropy(z, y, 2))
    np.testing.assert_array_equal(masked(logits, jnp.array([0, 1, -1])), masked(logits, jnp.array([0, 1, 2])))
