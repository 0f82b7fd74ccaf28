"""scanrnn.devices on one device, and test_data_parallel.py run in a subprocess with 4 simulated devices."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn import devices
from scanrnn.train import Batch, make_train_step, mse

HERE = Path(__file__).parent


def test_data_mesh_checks_what_it_is_given():
    mesh = devices.data_mesh(1)
    assert mesh.axis_names == ("data",) and mesh.devices.size == 1
    assert devices.data_mesh(mesh) is mesh
    assert devices.data_mesh().devices.size == jax.device_count()
    too_many = jax.device_count() + 1
    with pytest.raises(ValueError, match=f"devices={too_many} but JAX sees {jax.device_count()} device.*"
                                         f"xla_force_host_platform_device_count={too_many}"):
        devices.data_mesh(too_many)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="devices must be a positive int"):
            devices.data_mesh(bad)
    for bad in (True, 2.0, "cpu", [], [0]):
        with pytest.raises(TypeError, match="devices must be None, a positive int"):
            devices.data_mesh(bad)
    with pytest.raises(ValueError, match="lists a device twice"):
        devices.data_mesh(jax.devices() * 2)
    other = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match=r"one axis \('data',\), got axes \('batch',\)"):
        devices.data_mesh(other)


def test_pad_batch_adds_zero_weight_copies_of_the_first_example():
    batch = Batch(np.arange(10.0).reshape(5, 2, 1), np.arange(5.0)[:, None], np.array([2, 1, 0, 2, 1]))
    padded, weight = devices.pad_batch(batch, 4)
    assert padded.x.shape == (8, 2, 1) and padded.length.shape == (8,)
    np.testing.assert_array_equal(padded.x[5:], np.repeat(batch.x[:1], 3, axis=0))
    np.testing.assert_array_equal(padded.x[:5], batch.x)
    np.testing.assert_array_equal(weight, [1, 1, 1, 1, 1, 0, 0, 0])
    same, ones = devices.pad_batch(batch, 5)
    assert same is batch and ones.tolist() == [1.0] * 5


def test_shard_batch_refuses_a_batch_the_devices_do_not_divide():
    mesh = devices.data_mesh(1)
    sharded = devices.shard_batch(np.zeros((3, 2), np.float32), mesh)
    assert sharded.shape == (3, 2) and sharded.sharding == devices.batch_sharding(mesh)
    if jax.device_count() >= 2:
        with pytest.raises(ValueError, match="a batch of 3 examples cannot be cut evenly over 2 devices"):
            devices.shard_batch(np.zeros((3, 2), np.float32), devices.data_mesh(2))


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_one_device_mesh_gives_the_plain_step():
    model = sr.serial(sr.recurrent(sr.gru(4), return_sequences=False), sr.dense(1))
    params = model.init(jax.random.key(0), 2)
    rng = np.random.default_rng(1)
    batch = Batch(rng.normal(size=(3, 5, 2)).astype(np.float32), rng.normal(size=(3, 1)).astype(np.float32))
    optimizer = optax.adam(1e-2)
    plain = make_train_step(model, mse, optimizer)(params, optimizer.init(params), batch)
    meshed = make_train_step(model, mse, optimizer, devices=1)(params, optimizer.init(params), batch)
    for a, b in zip(jax.tree.leaves(plain[:2]), jax.tree.leaves(meshed[:2])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_data_parallel_on_four_simulated_devices():
    """tests/test_data_parallel.py with XLA_FLAGS giving the CPU 4 devices, in its own process (bounded)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    command = [sys.executable, "-m", "pytest", str(HERE / "test_data_parallel.py"), "-p", "no:xdist",
               "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts="]
    done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "8 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_data_parallel_benchmark_quick(tmp_path):
    """experiments/benchmarks/data_parallel.py --quick: 1 and 2 devices, each in a worker process of its own."""
    import json

    from helpers import load_script

    script = load_script(HERE.parent / "experiments" / "benchmarks" / "data_parallel.py", "benchmarks_data_parallel")
    assert script.main(["--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["devices"], r["per_device_batch"]) for r in results] == [(1, 32), (2, 16)]
    one, two = results
    assert two["all_reduce_ops"] >= 1  # the gradient's mean, inside the step
    assert two["gradient_bytes"] == 4 * two["params"] and two["loss_diff"] <= 1e-6
    assert all(r["median_ms"] > 0 for r in results)
    assert "| tiny | 2 | 16 |" in (tmp_path / "results.md").read_text()
