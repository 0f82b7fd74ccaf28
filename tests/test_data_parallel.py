"""Data parallelism on 4 devices: the train step and fit against one device (scanrnn.devices).

These tests need 4 devices. tests/test_devices.py runs this file in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(which must be set before JAX is imported); in the ordinary run, with one
CPU device, they are skipped.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn import devices
from scanrnn.train import (
    Batch, DivergenceError, batch_initial_carry, fit, make_tbptt_step, make_train_step, mse, stream_batches,
)

COUNT = 4
pytestmark = [
    pytest.mark.skipif(jax.device_count() < COUNT, reason="needs 4 devices (tests/test_devices.py runs it with them)"),
    pytest.mark.usefixtures("standard_dtype_promotion"),  # optax's Adam: decay ** count with an int32 count
]

N, T, I = 10, 7, 3
# float32, a few steps: what one device and four agreed to (measured 1.5e-8 on params, 1e-7 on losses).
TOLERANCE = 1e-6


def model_and_data():
    model = sr.serial(sr.dropout(0.2), sr.recurrent(sr.gru(6), return_sequences=False), sr.dense(1))
    params = model.init(jax.random.key(0), I)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, T, I)).astype(np.float32)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    lengths = rng.integers(0, T + 1, size=N).astype(np.int32)
    return model, params, Batch(x, y, lengths)


def largest_difference(a, b):
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_train_step_on_four_devices_is_the_one_device_step():
    """Batches of 6, 7 and 8 (two padded), lengths, a dropout key per step: equal to 1e-6."""
    model, params, data = model_and_data()
    optimizer = optax.adam(1e-2)
    one, four = make_train_step(model, mse, optimizer), make_train_step(model, mse, optimizer, devices=COUNT)
    p1 = p4 = params
    s1 = s4 = optimizer.init(params)
    for i, size in enumerate((6, 7, 8)):
        batch = Batch(*(a[:size] for a in data))
        key = jax.random.key(i)
        p1, s1, m1 = one(p1, s1, batch, key)
        p4, s4, m4 = four(p4, s4, batch, key)
        np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=TOLERANCE, atol=0)
    assert largest_difference(p1, p4) <= TOLERANCE
    assert largest_difference(params, p4) > 1e-3  # the steps did move the params
    for leaf in jax.tree.leaves((p4, s4)):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == COUNT


def test_each_device_receives_a_quarter_of_the_batch_and_the_step_all_reduces():
    model, params, data = model_and_data()
    optimizer = optax.sgd(0.1)
    step = make_train_step(model, mse, optimizer, devices=COUNT)
    mesh = devices.data_mesh(COUNT)
    batch = Batch(*(a[:8] for a in data))
    (placed, weight) = sr.train._parallel_batch(model, batch, mesh)
    for array in (placed.x, placed.y, placed.length, weight):
        assert array.shape[0] == 8
        shards = array.addressable_shards
        assert len(shards) == COUNT and {s.data.shape[0] for s in shards} == {8 // COUNT}
    params, opt_state = devices.replicate((params, optimizer.init(params)), mesh)
    compiled = step.jitted.lower(params, opt_state, (placed, weight), jax.random.key(0)).compile()
    text = compiled.as_text()
    assert "all-reduce" in text  # the gradient's mean, inside the step
    # ... once per step, not at every time step inside the backward scans (where XLA's sharding propagation
    # put the weight gradients' sums when the step was written as one program over the whole batch).
    computations = re.split(r"\n(?=\S)", text)
    reducing = [c.split("\n")[0] for c in computations if re.search(r" all-reduce(-start)?\(", c)]
    assert reducing and all(header.startswith("ENTRY") for header in reducing), reducing
    for host_transfer in ("infeed", "outfeed", "send(", "recv(", "host_callback"):
        assert host_transfer not in text
    batch_in = compiled.input_shardings[0][2][0]  # (batch, weight): the batch's x
    assert batch_in.x.is_equivalent_to(devices.batch_sharding(mesh), 3)


def test_fit_on_four_devices_is_fit_on_one():
    """Batches of 4 over 10 examples: the last of each epoch (2) is padded; dropout and validation on."""
    model, params, data = model_and_data()
    options = dict(epochs=2, batch_size=4, key=jax.random.key(3), valid=data)
    one, history_one = fit(model, params, optax.adam(1e-2), mse, data, **options)
    four, history_four = fit(model, params, optax.adam(1e-2), mse, data, devices=COUNT, **options)
    assert largest_difference(one, four) <= TOLERANCE
    np.testing.assert_allclose(history_four["train_loss"], history_one["train_loss"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(history_four["valid_loss"], history_one["valid_loss"], rtol=0, atol=TOLERANCE)


def test_fit_checkpoints_and_resumes_replicated_state(tmp_path):
    """A run stopped after one epoch and resumed from its checkpoint ends bit for bit where one run ends."""
    model, params, data = model_and_data()
    options = dict(batch_size=4, key=jax.random.key(3), devices=COUNT)
    whole, _ = fit(model, params, optax.adam(1e-2), mse, data, epochs=2, **options)
    fit(model, params, optax.adam(1e-2), mse, data, epochs=1, checkpoint_dir=tmp_path, **options)
    resumed, history = fit(model, params, optax.adam(1e-2), mse, data, epochs=2, checkpoint_dir=tmp_path,
                           resume=True, **options)
    assert len(history["train_loss"]) == 2
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_divergence_guard_stops_a_data_parallel_run():
    model, params, data = model_and_data()
    with pytest.raises(DivergenceError, match="training diverged at epoch 1, step 1"):
        fit(model, params, optax.sgd(float("nan")), mse, data, epochs=1, batch_size=4, devices=COUNT)


def test_batch_objective_needs_batches_that_the_devices_divide():
    model, params, data = model_and_data()

    def objective(params, batch, key):
        x, y = batch
        pred = jax.vmap(model.apply, in_axes=(None, 0))(params, x)
        return jnp.mean((pred - y) ** 2)

    with pytest.raises(ValueError, match=r"multiple of the 4 devices; got batch_size=4 over 10 examples \(last batch 2\)"):
        fit(None, params, optax.sgd(0.1), objective, (data.x, data.y), epochs=1, batch_size=4, devices=COUNT)
    one, _ = fit(None, params, optax.sgd(0.1), objective, (data.x[:8], data.y[:8]), epochs=1, batch_size=4)
    four, _ = fit(None, params, optax.sgd(0.1), objective, (data.x[:8], data.y[:8]), epochs=1, batch_size=4,
                  devices=COUNT)
    assert largest_difference(one, four) <= TOLERANCE


def test_truncated_bptt_on_four_devices_keeps_the_carry_cut_over_them():
    model = sr.serial(sr.recurrent(sr.lstm(5)), sr.dense(1))
    params = model.init(jax.random.key(1), 1)
    stream = np.sin(np.linspace(0.0, 20.0, 8 * 3 * 6 + 1)).astype(np.float32)
    inputs, targets = stream_batches(stream, batch_size=8, chunk_size=6)
    optimizer = optax.adam(1e-2)
    one, four = make_tbptt_step(model, mse, optimizer), make_tbptt_step(model, mse, optimizer, devices=COUNT)
    p1 = p4 = params
    s1 = s4 = optimizer.init(params)
    c1 = c4 = batch_initial_carry(model, params, 8)
    for x, y in zip(inputs, targets):
        batch = Batch(np.asarray(x)[..., None], np.asarray(y)[..., None])
        p1, s1, c1, m1 = one(p1, s1, c1, batch)
        p4, s4, c4, m4 = four(p4, s4, c4, batch)
        np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=0, atol=TOLERANCE)
    assert largest_difference(p1, p4) <= TOLERANCE and largest_difference(c1, c4) <= TOLERANCE
    for leaf in jax.tree.leaves(c4):  # each device keeps its own 2 streams' state
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {8 // COUNT}
    with pytest.raises(ValueError, match="the 6 streams of a batch must be a multiple of the 4 devices"):
        four(p4, s4, None, Batch(np.zeros((6, 6, 1), np.float32), np.zeros((6, 6, 1), np.float32)))


def test_steps_on_host_devices_wait_for_each_other():
    """The workaround for the CPU all-reduce timeout (jaxlib 0.10.2) applies to CPU meshes of several devices."""
    assert devices.needs_blocking(devices.data_mesh(COUNT))
    assert not devices.needs_blocking(devices.data_mesh(1))
