"""A training run for tests/test_fit_kill.py: ``fit`` with run checkpoints, announcing each save.

``python tests/fit_worker.py CHECKPOINT_DIR OUT.npz`` trains a small GRU
regressor for 4 epochs (with dropout keys and gradient clipping), saving a
checkpoint every 3 steps and resuming from the latest one in
CHECKPOINT_DIR; it prints ``save <step>`` before each save, and at the end
exports the params to OUT.npz. Every process that runs it computes the same
programs, so a run killed and resumed must end with the same bits.

``python tests/fit_worker.py --serve`` imports all that once and forks a
process for each run (a fresh interpreter would spend seconds importing JAX
each time; nothing here starts JAX's backend before the fork, each run starts
its own). One command a line on its stdin, answered on its stdout:

- ``start CHECKPOINT_DIR OUT.npz STDERR``: fork a run (its stderr to the file
  STDERR); answers ``started PID``. The run's own lines are ``PID save
  <step>`` and ``PID done``; it exits with status 0 when it has written
  OUT.npz, 1 when it failed (the traceback in STDERR).
- ``poll PID``: ``exit PID STATUS`` (the status of ``os.waitpid``) once the
  run has ended and been reaped, else ``running PID``;
- ``wait PID``: wait for the run to end, then ``exit PID STATUS``.

It ends at the end of its stdin.
"""

import os
import signal
import sys
import traceback

import jax
import numpy as np
import optax

import scanrnn as sr
from scanrnn import _run_checkpoints
from scanrnn.checkpoint import save_params
from scanrnn.train import Batch, fit, mse

jax.config.update("jax_disable_most_optimizations", True)  # tiny programs: compile fast

RUN_TIMEOUT = 120  # seconds a forked run may last


def say(line):
    """``line`` on stdout in one write: the runs and the server share one pipe, and a pipe keeps a write whole
    (``print`` makes two writes, text and newline, where Python's output is unbuffered, as PYTHONUNBUFFERED has it)."""
    os.write(1, f"{line}\n".encode())


def announce(save, prefix):
    def announced(self, state, metrics=None, **options):
        say(f"{prefix}save {int(state.step)}")
        return save(self, state, metrics, **options)

    return announced


def main(checkpoint_dir, out, prefix=""):
    _run_checkpoints.RunCheckpoints.save = announce(_run_checkpoints.RunCheckpoints.save, prefix)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(56, 6, 2)).astype(np.float32)
    y = (x[:, -1, :1] - x[:, 0, 1:]).astype(np.float32)
    model = sr.serial(
        sr.recurrent(sr.gru(8), regularization=sr.Regularization(dropout=0.1)),
        sr.recurrent(sr.gru(4), return_sequences=False),
        sr.dense(1),
    )
    params = model.init(jax.random.key(0), 2)
    params, _ = fit(
        model, params, optax.adam(optax.cosine_decay_schedule(1e-2, 56)), mse, Batch(x[:48], y[:48]), Batch(x[48:], y[48:]),
        epochs=4, batch_size=4, seed=1, key=jax.random.key(2), clip_norm=1.0,
        checkpoint_dir=checkpoint_dir, checkpoint_every=3, keep=2, resume=True,
    )
    save_params(out, params)
    say(f"{prefix}done")


def run_forked(checkpoint_dir, out, stderr):
    """In the forked process: the run, its stderr to the file ``stderr``; never returns."""
    code = 1
    try:
        signal.alarm(RUN_TIMEOUT)
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        main(checkpoint_dir, out, prefix=f"{os.getpid()} ")
        code = 0
    except BaseException:  # noqa: BLE001 (reported through the exit status and the stderr file)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve():
    for line in sys.stdin:
        command, *args = line.split()
        if command == "start":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                run_forked(*args)
            say(f"started {pid}")
        elif command in ("poll", "wait"):
            pid = int(args[0])
            ended, status = os.waitpid(pid, os.WNOHANG if command == "poll" else 0)
            say(f"exit {pid} {status}" if ended else f"running {pid}")
        else:
            say(f"unknown command {command!r}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(*sys.argv[1:])
