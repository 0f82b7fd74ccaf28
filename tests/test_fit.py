"""fit as a long run needs it: the TrainState, checkpoints and resume, the divergence guard, metrics and early stopping.

The references: one uninterrupted ``fit`` for every handed-over or resumed
run (bit for bit), the public train step in a Python loop over
:func:`epoch_order` for the skipped steps, and NumPy for the accuracy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn import checkpoint
from scanrnn.ctc import ctc_loss
from scanrnn.seq2seq import seq2seq
from scanrnn.train import (
    Batch,
    DivergenceError,
    TrainState,
    accuracy,
    epoch_order,
    evaluate,
    fit,
    init_state,
    make_train_step,
    mse,
    predict,
    softmax_cross_entropy,
)

# optax's Adam computes decay ** count with an int32 count (see conftest.py).
pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")

N, T, I = 14, 5, 2


def regression():
    model = sr.serial(sr.recurrent(sr.gru(4), return_sequences=False), sr.dense(1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + 6, T, I)).astype(np.float32)
    y = (x[:, -1, :1] + 0.5 * x[:, 0, 1:]).astype(np.float32)
    return model, Batch(x[:N], y[:N]), Batch(x[N:], y[N:])


OPTIMIZER = optax.adam(optax.cosine_decay_schedule(2e-2, 40))


def optimizer():
    """One optimizer object for the module: fit reuses its compiled programs for the same model, loss and optimizer."""
    return OPTIMIZER


def assert_trees_equal(a, b):
    a_leaves, a_tree = jax.tree.flatten(a)
    b_leaves, b_tree = jax.tree.flatten(b)
    assert a_tree == b_tree
    for x, y in zip(a_leaves, b_leaves):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def problem():
    model, train, valid = regression()
    params = model.init(jax.random.key(1), I)
    return model, params, train, valid


@pytest.fixture(scope="module")
def six_epochs(problem):
    """The reference: one uninterrupted run of 6 epochs with clipping and dropout keys."""
    model, params, train, valid = problem
    state = init_state(params, optimizer(), seed=5, key=jax.random.key(9), clip_norm=1.0)
    with jax.numpy_dtype_promotion("standard"):
        return fit(model, state, optimizer(), mse, train, valid, epochs=6, batch_size=4, clip_norm=1.0)


# --------------------------------------------------------------------------
# The training state.


@pytest.mark.slow
def test_two_fits_handing_the_state_over_equal_one_fit(problem, six_epochs):
    model, params, train, valid = problem
    state = init_state(params, optimizer(), seed=5, key=jax.random.key(9), clip_norm=1.0)
    state, first = fit(model, state, optimizer(), mse, train, valid, epochs=3, batch_size=4, clip_norm=1.0)
    assert isinstance(state, TrainState) and int(state.epoch) == 3 and int(state.step) == 12
    assert len(first["train_loss"]) == 3
    state, history = fit(model, state, optimizer(), mse, train, valid, epochs=6, batch_size=4, clip_norm=1.0)
    expected, expected_history = six_epochs
    assert_trees_equal(state.params, expected.params)
    assert_trees_equal(state.opt_state, expected.opt_state)
    assert history["train_loss"] == expected_history["train_loss"]
    assert history["valid_loss"] == expected_history["valid_loss"]
    assert int(state.step) == 24 and int(state.epoch) == 6 and int(state.batch) == 0
    # A state already at its last epoch comes back as it is.
    again, _ = fit(model, state, optimizer(), mse, train, valid, epochs=6, batch_size=4, clip_norm=1.0)
    assert_trees_equal(again.params, state.params)


@pytest.mark.slow
def test_params_in_params_out_and_the_order_of_every_epoch(problem):
    """A plain call returns params; the batches follow epoch_order, checked with SGD by hand."""
    model, params, train, _ = problem
    lr = 0.05
    trained, history = fit(model, params, optax.sgd(lr), mse, train, epochs=2, batch_size=5, seed=11)
    assert not isinstance(trained, TrainState) and set(history) == {"train_loss", "seconds"}
    grad = jax.jit(jax.grad(lambda p, x, y: jnp.mean(jax.vmap(lambda x, y: mse(model.apply(p, x), y))(x, y))))
    p = params
    for epoch in range(2):
        order = epoch_order(11, epoch, N)
        for start in range(0, N, 5):
            index = order[start : start + 5]
            g = grad(p, train.x[index], train.y[index])
            p = jax.tree.map(lambda a, b: a - lr * b, p, g)
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_state_must_fit_the_optimizer_and_the_data(problem):
    model, params, train, _ = problem
    state = init_state(params, optimizer())
    with pytest.raises(ValueError, match=r"opt_state does not match the optimizer \(and clip_norm\)"):
        fit(model, state, optimizer(), mse, train, epochs=1, clip_norm=1.0)
    with pytest.raises(ValueError, match=r"stopped after batch 3 of an epoch, but this data set of 14 examples has 2 batches"):
        fit(model, state._replace(batch=np.int64(3)), optimizer(), mse, train, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match=r"seed comes from the TrainState"):
        fit(model, state, optimizer(), mse, train, epochs=1, seed=4)


# --------------------------------------------------------------------------
# Checkpoints.


@pytest.mark.slow
def test_resume_from_checkpoints_equals_one_run(problem, six_epochs, tmp_path):
    model, params, train, valid = problem
    options = dict(epochs=3, batch_size=4, seed=5, key=jax.random.key(9), clip_norm=1.0, checkpoint_dir=tmp_path)
    fit(model, params, optimizer(), mse, train, valid, checkpoint_every=3, keep=2, **options)
    # Every checkpoint_every save (3, 6, 9) and the last epoch's (12) are written, the epoch ends 4 and 8
    # unless a save was in flight; the last two are kept, and the best end-of-epoch one.
    steps = set(checkpoint.checkpoint_steps(tmp_path))
    assert {9, 12} <= steps <= {4, 8, 9, 12}
    with pytest.raises(ValueError, match="already holds checkpoints .* pass resume=True"):
        fit(model, params, optimizer(), mse, train, valid, **options)
    options["epochs"] = 6
    trained, history = fit(model, params, optimizer(), mse, train, valid, resume=True, **options)
    expected, expected_history = six_epochs
    assert_trees_equal(trained, expected.params)
    assert history["valid_loss"] == expected_history["valid_loss"]
    # The latest checkpoint holds the final state.
    like = init_state(params, optimizer(), seed=5, key=jax.random.key(9), clip_norm=1.0)
    restored = checkpoint.load_state(tmp_path, like)
    assert int(restored.step) == 24
    assert_trees_equal(restored.params, expected.params)
    assert restored.history["train_loss"] == expected_history["train_loss"]
    assert jax.random.key_data(restored.key).tolist() == jax.random.key_data(jax.random.key(9)).tolist()


@pytest.mark.parametrize("mode, best", [("min", 2), ("max", 3)])
def test_checkpoints_keep_the_last_and_the_best(tmp_path, mode, best):
    params = {"w": jnp.zeros(2)}
    state = init_state(params, optax.sgd(0.1))
    checkpoints = checkpoint.RunCheckpoints(tmp_path, keep=2, monitor="valid_loss", mode=mode)
    try:
        for step, value in enumerate([0.5, 0.2, 0.9, float("nan"), 0.7], start=1):
            saved = state._replace(step=np.int64(step), params={"w": jnp.full(2, float(step))})
            assert checkpoints.save(saved, {"valid_loss": value})
        assert not checkpoints.save(saved)  # that step is saved already
    finally:
        checkpoints.close()
    assert checkpoint.checkpoint_steps(tmp_path) == sorted({best, 4, 5})
    restored = checkpoint.load_state(tmp_path, state, step=best)
    np.testing.assert_array_equal(restored.params["w"], [best, best])


@pytest.mark.slow
def test_resume_mid_epoch(problem, six_epochs, tmp_path):
    """A checkpoint in the middle of an epoch (step 10 of 24, batch 2 of 4) continues that epoch."""
    model, params, train, valid = problem
    state = init_state(params, optimizer(), seed=5, key=jax.random.key(9), clip_norm=1.0)
    # Three epochs with a checkpoint every 5 steps, then the directory's later checkpoints removed.
    fit(model, state, optimizer(), mse, train, valid, epochs=3, batch_size=4, clip_norm=1.0, checkpoint_dir=tmp_path,
        checkpoint_every=5, keep=10)
    assert 10 in checkpoint.checkpoint_steps(tmp_path)
    mid = checkpoint.load_state(tmp_path, state, step=10)
    assert (int(mid.epoch), int(mid.batch)) == (2, 2)
    trained, history = fit(model, mid, optimizer(), mse, train, valid, epochs=6, batch_size=4, clip_norm=1.0)
    assert_trees_equal(trained.params, six_epochs[0].params)
    assert history["train_loss"] == six_epochs[1]["train_loss"]


def test_checkpoint_dir_options(problem, tmp_path):
    model, params, train, _ = problem
    with pytest.raises(ValueError, match="resume and checkpoint_every need a checkpoint_dir"):
        fit(model, params, optimizer(), mse, train, epochs=1, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir must be a directory, got the file"):
        fit(model, params, optimizer(), mse, train, epochs=1, checkpoint_dir=tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        checkpoint.checkpoint_steps(tmp_path / "missing")


# --------------------------------------------------------------------------
# The divergence guard.


def nan_data(train, example=6):
    x = train.x.copy()
    x[example, 2, 0] = np.nan
    return Batch(x, train.y)


@pytest.mark.slow
def test_nan_in_the_data_stops_at_its_step(problem, tmp_path):
    model, params, train, valid = problem
    bad = nan_data(train)
    batch_number = 1 + int(np.flatnonzero(epoch_order(0, 0, N) == 6)[0]) // 4  # the batch holding example 6
    with pytest.raises(DivergenceError) as raised:
        fit(model, params, optimizer(), mse, bad, valid, epochs=3, batch_size=4, checkpoint_dir=tmp_path)
    error = raised.value
    assert isinstance(error, FloatingPointError)
    assert (error.epoch, error.step, error.batch, error.nonfinite) == (1, batch_number, batch_number, "loss")
    assert f"training diverged at epoch 1, step {batch_number} (batch {batch_number} of 4): the loss was nan" in str(error)
    assert "the latest checkpoint in" in str(error)
    # The state is the one before that step: the steps before it, done by hand with the train step.
    step = make_train_step(model, mse, optimizer())
    p, o = params, optimizer().init(params)
    order = epoch_order(0, 0, N)
    for b in range(batch_number - 1):
        index = order[4 * b : 4 * b + 4]
        p, o, _ = step(p, o, Batch(bad.x[index], bad.y[index]))
    for a, b in zip(jax.tree.leaves(error.state.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # ... and the latest checkpoint.
    assert checkpoint.checkpoint_steps(tmp_path)[-1] == batch_number - 1
    saved = checkpoint.load_state(tmp_path, init_state(params, optimizer()))
    assert_trees_equal(saved.params, error.state.params)


@pytest.mark.slow
@pytest.mark.parametrize("lr, what", [(float("nan"), "update"), (1e12, None)])
def test_a_diverging_learning_rate_stops_the_run(problem, lr, what):
    model, params, train, _ = problem
    with pytest.raises(DivergenceError, match=r"training diverged at epoch \d+, step \d+ \(batch \d+ of 4\)") as raised:
        fit(model, params, optax.sgd(lr), mse, train, epochs=50, batch_size=4)
    if what is not None:
        assert raised.value.nonfinite == what and raised.value.step == 1
        assert "a learning rate of NaN or inf?" in str(raised.value)
    for leaf in jax.tree.leaves(raised.value.state.params):
        assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.slow
def test_skipping_nonfinite_steps_equals_a_loop_of_the_guarded_step(problem):
    model, params, train, valid = problem
    bad = nan_data(train)
    trained, history = fit(model, params, optimizer(), mse, bad, valid, epochs=2, batch_size=4, on_nonfinite="skip")
    assert history["skipped_steps"] == [1, 1]
    step = make_train_step(model, mse, optimizer(), skip_nonfinite=True)
    p, o = params, optimizer().init(params)
    applied = []
    for epoch in range(2):
        order = epoch_order(0, epoch, N)
        for b in range(4):
            index = order[4 * b : 4 * b + 4]
            p, o, metrics = step(p, o, Batch(bad.x[index], bad.y[index]))
            applied.append(bool(metrics["applied"]))
    assert applied.count(False) == 2
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert all(np.isfinite(history["train_loss"]))


def test_the_train_step_reports_finiteness(problem):
    model, params, train, _ = problem
    step = make_train_step(model, mse, optax.sgd(float("nan")))
    new, _, metrics = step(params, optax.sgd(0.1).init(params), Batch(train.x[:4], train.y[:4]))
    assert bool(metrics["loss_finite"]) and bool(metrics["grads_finite"]) and not bool(metrics["update_finite"])
    assert not np.isfinite(np.asarray(new[1].w)).any()  # without skip_nonfinite the update is applied


# --------------------------------------------------------------------------
# Metrics, the best params and early stopping.


def classification():
    model = sr.serial(sr.recurrent(sr.lstm(5), return_sequences=False), sr.dense(3))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4, 2)).astype(np.float32)
    y = np.argmax(x.sum(axis=1) @ rng.normal(size=(2, 3)), axis=1).astype(np.int32)
    return model, Batch(x[:20], y[:20]), Batch(x[20:], y[20:])


@pytest.mark.slow
def test_classifiers_report_accuracy(key):
    model, train, valid = classification()
    params = model.init(key, 2)
    trained, history = fit(model, params, optimizer(), softmax_cross_entropy, train, valid, epochs=2, batch_size=5)
    logits = predict(model, trained, valid.x)
    np.testing.assert_allclose(history["valid_accuracy"][-1], np.mean(np.argmax(logits, 1) == valid.y), rtol=1e-6)
    scores = evaluate(model, softmax_cross_entropy, trained, valid, metrics={"accuracy": accuracy})
    assert scores["accuracy"] == pytest.approx(history["valid_accuracy"][-1])
    assert scores["loss"] == pytest.approx(history["valid_loss"][-1])


@pytest.mark.slow
def test_early_stopping_and_the_best_params(problem):
    """A metric that never improves after epoch 1 stops the run after 1 + patience epochs."""
    model, params, train, valid = problem
    constant = {"flat": lambda pred, target: jnp.zeros((), pred.dtype)}
    options = dict(epochs=10, batch_size=4, metrics=constant, monitor="valid_flat", patience=2)
    last, history = fit(model, params, optimizer(), mse, train, valid, **options)
    assert len(history["train_loss"]) == 3 and history["valid_flat"] == [0.0, 0.0, 0.0]
    best, _ = fit(model, params, optimizer(), mse, train, valid, restore_best=True, **options)
    after_one, _ = fit(model, params, optimizer(), mse, train, valid, epochs=1, batch_size=4)
    assert_trees_equal(best, after_one)
    after_three, _ = fit(model, params, optimizer(), mse, train, valid, epochs=3, batch_size=4)
    assert_trees_equal(last, after_three)


# --------------------------------------------------------------------------
# A batch objective: any model.


@pytest.mark.slow
def test_fit_trains_an_encoder_decoder_with_a_batch_objective(key):
    model = seq2seq(sr.serial(sr.recurrent(sr.gru(6))), sr.gru(6), src_vocab_size=5, tgt_vocab_size=5, embed_size=3)
    params = model.init(key)
    rng = np.random.default_rng(0)
    src = rng.integers(3, 5, size=(12, 4)).astype(np.int32)
    tgt = np.concatenate([src[:, ::-1], np.full((12, 1), 2, np.int32)], axis=1)  # reversed, then the end token
    data = (src, np.full(12, 4, np.int32), tgt, np.full(12, 5, np.int32))

    def objective(params, batch, key):
        return jnp.mean(jax.vmap(lambda *example: model.loss(params, *example))(*batch))

    before = evaluate(None, objective, params, data)
    trained, history = fit(None, params, optax.adam(3e-2), objective, data, data, epochs=6, batch_size=4)
    assert history["valid_loss"][-1] < 0.6 * before
    assert evaluate(None, objective, trained, data) == pytest.approx(history["valid_loss"][-1], rel=1e-6)


@pytest.mark.slow
def test_fit_trains_a_ctc_model_with_a_batch_objective(key):
    model = sr.serial(sr.bidirectional(sr.gru(5)), sr.dense(4))
    params = model.init(key, 3)
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 4, size=(10, 2)).astype(np.int32)
    x = np.eye(3, dtype=np.float32)[np.repeat(labels - 1, 3, axis=1)]  # each label for 3 frames
    data = (x, np.full(10, 6, np.int32), labels, np.full(10, 2, np.int32))

    def objective(params, batch, key):
        x, n, y, m = batch
        logits = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, x, n)
        return jnp.mean(jax.vmap(lambda l, y, t, k: ctc_loss(l, y, logit_length=t, label_length=k))(logits, y, n, m))

    before = evaluate(None, objective, params, data)
    _, history = fit(None, params, optax.adam(3e-2), objective, data, data, epochs=8, batch_size=5)
    assert history["valid_loss"][-1] < 0.5 * before


@pytest.mark.slow
def test_a_second_fit_reuses_the_compiled_programs():
    """Continuing a run with the same model, loss and optimizer compiles nothing again."""
    from scanrnn.train import _fit_programs

    # A model of its own: the module's model is also fitted by the tests that resume from checkpoints,
    # whose evaluation compiles a program of its own in the same cache (so the count hung on the order).
    model, train, valid = regression()
    params = model.init(jax.random.key(1), I)
    state, _ = fit(model, init_state(params, optimizer()), optimizer(), mse, train, valid, epochs=1, batch_size=4)
    fit(model, state, optimizer(), mse, train, valid, epochs=2, batch_size=4)
    step, evaluate_batch = _fit_programs(model, mse, optimizer(), (), "halt")
    assert step._cache_size() == 2  # the full batches of 4 and the last one of 2
    assert evaluate_batch._cache_size() == 1
