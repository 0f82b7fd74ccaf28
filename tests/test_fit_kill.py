"""A fit run SIGKILLed at random moments, saves included, and resumed each time ends bit-identical to an uninterrupted run.

Each process runs ``tests/fit_worker.py``: 4 epochs of a small GRU with
dropout and clipping, a run checkpoint every 3 steps through orbax,
``resume=True``. One process runs uninterrupted beside a chain of processes
on one checkpoint directory, each killed with SIGKILL (at a seeded random
delay, or the moment it announces a save, so that orbax is writing), the
last one left to finish. After every kill the latest checkpoint must load;
at the end the params must equal the uninterrupted run's, bit for bit. The
chain starts once the uninterrupted run has announced its first save: the
programs are then in the test run's compilation cache (conftest.py), so the
processes compile them once between them.
"""

import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import scanrnn as sr
from scanrnn import checkpoint
from scanrnn.train import init_state

WORKER = pathlib.Path(__file__).with_name("fit_worker.py")
TIMEOUT = 120  # seconds for any one process


def start(tmp_path, checkpoints, out):
    """A worker whose stderr goes to a file of its own (``process.stderr_path``), for the failure message."""
    stderr_path = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}.txt"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(checkpoints), str(out)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp_path,
        )
    process.stderr_path = stderr_path
    return process


def ended_well(process) -> bool:
    """Whether the worker exits with 0; its stderr's end in the failure message otherwise."""
    code = process.wait(timeout=TIMEOUT)
    assert code == 0, f"a worker exited with {code}:\n{process.stderr_path.read_text()[-3000:]}"
    return True


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=TIMEOUT)
    process.stdout.close()


def read_saves(process, count, deadline):
    """Read the child's lines until it has announced ``count`` saves (or ended); return them."""
    saves = []
    while len(saves) < count and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("save"):
            saves.append(int(line.split()[1]))
    return saves


def like():
    """A state of the worker's structure, to load its checkpoints into."""
    model = sr.serial(
        sr.recurrent(sr.gru(8), regularization=sr.Regularization(dropout=0.1)),
        sr.recurrent(sr.gru(4), return_sequences=False),
        sr.dense(1),
    )
    params = model.init(jax.random.key(0), 2)
    return init_state(params, optax.adam(optax.cosine_decay_schedule(1e-2, 56)), seed=1, key=jax.random.key(2), clip_norm=1.0)


@pytest.mark.slow
def test_killed_and_resumed_runs_end_bit_identical(tmp_path):
    rng = np.random.default_rng(2024)
    processes = []
    try:
        reference = start(tmp_path, tmp_path / "reference", tmp_path / "reference.npz")
        processes.append(reference)
        assert read_saves(reference, 1, time.monotonic() + TIMEOUT), "the uninterrupted run announced no save"
        # (saves to wait for, then: "now" or a delay in seconds)
        # (saves to wait for, then a delay in seconds): "during" kills land within a few tens of
        # milliseconds of a save's start, while orbax writes; up to 4 more of them are added
        # until one has been seen to interrupt a write.
        during = lambda: (1, rng.uniform(0.01, 0.06))  # noqa: E731
        kills = [during(), (2, rng.uniform(0.0, 1.0)), during()]
        interrupted, mid_save, steps_seen = 0, 0, []
        while kills:
            saves_before, delay = kills.pop(0)
            process = start(tmp_path, tmp_path / "run", tmp_path / "run.npz")
            processes.append(process)
            saves = read_saves(process, saves_before, time.monotonic() + TIMEOUT)
            time.sleep(delay)
            finished = process.poll() is not None
            stop(process)
            if finished:
                break  # the run got to its end before the kill
            interrupted += 1
            steps_seen += saves
            # A save in flight left orbax's temporary directory; the complete checkpoints load.
            mid_save += any("tmp" in p.name for p in (tmp_path / "run").iterdir())
            if not kills and not mid_save and interrupted < 8:
                kills.append(during())
            steps = checkpoint.checkpoint_steps(tmp_path / "run")  # none when the first save was cut short
            if steps:
                assert int(checkpoint.load_state(tmp_path / "run", like()).step) == steps[-1]
        final = start(tmp_path, tmp_path / "run", tmp_path / "run.npz")
        processes.append(final)
        assert ended_well(final) and ended_well(reference)
    finally:
        for process in processes:
            stop(process)
    assert interrupted >= 2, "the kills must land before the run ends"
    assert mid_save >= 1, "at least one kill must land while orbax was writing"
    with np.load(tmp_path / "reference.npz") as expected, np.load(tmp_path / "run.npz") as resumed:
        assert sorted(expected.files) == sorted(resumed.files)
        for name in expected.files:
            assert resumed[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    print(f"{interrupted} kills, {mid_save} during a save, saves announced before them: {steps_seen}")
