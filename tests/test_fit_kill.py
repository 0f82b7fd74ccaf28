"""A fit run SIGKILLed at random moments, saves included, and resumed each time ends bit-identical to an uninterrupted run.

Each run is a process running ``tests/fit_worker.py``: 4 epochs of a small
GRU with dropout and clipping, a run checkpoint every 3 steps through orbax,
``resume=True``. One process runs uninterrupted beside a chain of processes
on one checkpoint directory, each killed with SIGKILL (at a seeded random
delay, or the moment it announces a save, so that orbax is writing), the
last one left to finish. After every kill the latest checkpoint must load;
at the end the params must equal the uninterrupted run's, bit for bit. The
chain starts once the uninterrupted run has announced its first save: the
programs are then in the test run's compilation cache (conftest.py), so the
processes compile them once between them. The processes are forked by one
``fit_worker.py --serve``, which imports JAX once for all of them.
"""

import collections
import contextlib
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
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


class Workers:
    """``fit_worker.py --serve``: it forks the runs; its stdout is read on a thread, each run's lines apart."""

    def __init__(self, tmp_path):
        self.tmp_path, self.started = tmp_path, 0
        self.server = subprocess.Popen([sys.executable, str(WORKER), "--serve"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=tmp_path)
        self.replies, self._lock = queue.Queue(), threading.Lock()
        self._lines = collections.defaultdict(queue.Queue)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.server.stdout:
            first, _, rest = line.strip().partition(" ")
            if first.isdigit():  # "PID save STEP" or "PID done", from a run
                self.lines(int(first)).put(rest)
                continue
            if first == "started":  # a new run: its pid's lines start here (a pid may have been used before)
                with self._lock:
                    self._lines[int(rest)] = queue.Queue()
            self.replies.put(line.strip())

    def lines(self, pid) -> queue.Queue:
        with self._lock:
            return self._lines[pid]

    def ask(self, command: str, timeout=TIMEOUT) -> str:
        self.server.stdin.write(command + "\n")
        self.server.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.replies.get(timeout=0.5)
            except queue.Empty:
                if self.server.poll() is not None:
                    pytest.fail(f"fit_worker.py --serve ended with {self.server.returncode} (its stderr is above)")
        pytest.fail(f"fit_worker.py --serve did not answer {command!r} within {timeout} s")

    def start(self, checkpoints, out) -> "Run":
        """A run whose stderr goes to a file of its own (``run.stderr_path``), for the failure message."""
        self.started += 1
        stderr_path = self.tmp_path / f"stderr-{self.started}.txt"
        reply = self.ask(f"start {checkpoints} {out} {stderr_path}")
        assert reply.startswith("started "), reply
        return Run(self, int(reply.split()[1]), stderr_path)

    def close(self):
        self.server.stdin.close()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stdout.close()


class Run:
    """A forked run: its pid, lines, wait status (once reaped) and stderr file."""

    def __init__(self, workers, pid, stderr_path):
        self.workers, self.pid, self.stderr_path, self.status = workers, pid, stderr_path, None

    def poll(self, wait=False):
        """The run's wait status once it has ended, else None."""
        if self.status is None:
            reply = self.workers.ask(f"{'wait' if wait else 'poll'} {self.pid}")
            if reply.startswith("exit "):
                self.status = int(reply.split()[2])
            else:
                assert reply == f"running {self.pid}", reply
        return self.status

    def readline(self, deadline):
        """The run's next line, or None once it has ended (or at ``deadline``) with nothing more to read."""
        lines = self.workers.lines(self.pid)
        while time.monotonic() < deadline:
            try:
                return lines.get(timeout=0.5)
            except queue.Empty:
                if self.poll() is not None and lines.empty():
                    return None
        return None


def ended_well(run) -> bool:
    """Whether the run exits with 0; its stderr's end in the failure message otherwise."""
    status = run.poll(wait=True)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"a worker ended with wait status {status}:\n{run.stderr_path.read_text()[-3000:]}")
    return True


def stop(run):
    if run.poll() is None:
        os.kill(run.pid, signal.SIGKILL)
        run.poll(wait=True)


def read_saves(run, count, deadline):
    """Read the run's lines until it has announced ``count`` saves (or ended); return them."""
    saves = []
    while len(saves) < count:
        line = run.readline(deadline)
        if line is None or line == "done":
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
    workers, processes = Workers(tmp_path), []
    try:
        reference = workers.start(tmp_path / "reference", tmp_path / "reference.npz")
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
            process = workers.start(tmp_path / "run", tmp_path / "run.npz")
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
        final = workers.start(tmp_path / "run", tmp_path / "run.npz")
        processes.append(final)
        assert ended_well(final) and ended_well(reference)
    finally:
        for process in processes:
            if process.status is None:  # not reaped: alive, or ended and waiting to be reaped by the server
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        workers.close()
    assert interrupted >= 2, "the kills must land before the run ends"
    assert mid_save >= 1, "at least one kill must land while orbax was writing"
    with np.load(tmp_path / "reference.npz") as expected, np.load(tmp_path / "run.npz") as resumed:
        assert sorted(expected.files) == sorted(resumed.files)
        for name in expected.files:
            assert resumed[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    print(f"{interrupted} kills, {mid_save} during a save, saves announced before them: {steps_seen}")
