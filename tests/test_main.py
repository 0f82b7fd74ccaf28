"""The main job, ``scanrnn train`` (``python -m scanrnn train``): its flags, outputs, checkpoints and resume.

Tiny runs of the binary-sum task (the cheapest), in-process through
``main(argv)`` where the exit status and the messages are what is tested,
and as processes of their own where the process matters: the program's name
(subprocesses), and a run killed with SIGKILL and resumed, whose params must
equal those of the run left alone, bit for bit (processes forked from one
that imported scanrnn once).
"""

import contextlib
import json
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time

import numpy as np
import pytest

from scanrnn.__main__ import build_parser, check_flags, main, make_data

# The main job trains with optax's Adam (see conftest.py).
pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")

TINY = ["train", "--task", "binary-sum", "--hidden", "4", "--epochs", "2"]
PNG = b"\x89PNG\r\n\x1a\n"


def strict_json(path):
    """``path``'s JSON, refusing the NaN and Infinity tokens that strict JSON has not."""

    def refuse(token):
        raise ValueError(f"{path} is not strict JSON: it holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def run(argv, capsys):
    """``main(argv)`` in this process: ``(exit status, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------
# Every flag checked before anything is written: one line on stderr, status 2.

BAD_FLAGS = [
    (["--epochs", "0"], "--epochs must be a positive int, got 0"),
    (["--epochs", "-3"], "--epochs must be a positive int, got -3"),
    (["--epochs", "2.5"], "argument --epochs: invalid int value: '2.5'"),
    (["--batch-size", "0"], "--batch-size must be a positive int, got 0"),
    (["--layers", "0"], "--layers must be a positive int, got 0"),
    (["--hidden", "4", "0"], "--hidden must be positive ints, got 4 0"),
    (["--hidden", "6", "4", "2", "--layers", "2"], "--hidden needs 1 or --layers (2) numbers, got 3"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a positive int, got 0"),
    (["--seed", "-1"], "--seed must be an int in [0, 2**63 - 1], got -1"),
    (["--seed", str(2**63)], f"--seed must be an int in [0, 2**63 - 1], got {2**63}"),
    (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["--lr", "-0.01"], "--lr must be a positive finite number, got -0.01"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--clip-norm", "0"], "--clip-norm must be a positive finite number, got 0.0"),
    (["--clip-norm", "-1"], "--clip-norm must be a positive finite number, got -1.0"),
    (["--clip-norm", "nan"], "--clip-norm must be a positive finite number, got nan"),
    (["--dropout", "1"], "--dropout must be a rate in [0, 1), got 1.0"),
    (["--dropout", "-0.1"], "--dropout must be a rate in [0, 1), got -0.1"),
    (["--dropout", "nan"], "--dropout must be a rate in [0, 1), got nan"),
    (["--cell", "transformer"], "argument --cell: invalid choice: 'transformer' (choose from 'simple_rnn', 'lstm', "
                                "'gru', 'layer_norm_rnn', 'layer_norm_lstm')"),
    (["--cell", "gru", "--peephole"], "--peephole applies to --cell lstm only, got --cell gru"),
    (["--cell", "lstm", "--activation", "relu"],
     "--activation applies to --cell simple_rnn and layer_norm_rnn only, got --cell lstm"),
    (["--resume", "--overwrite"],
     "--resume continues the run in --out and --overwrite replaces it: give one of them, not both"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_and_status_2(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    code, printed, error = run(TINY + ["--out", out] + flags, capsys)
    assert code == 2
    assert error == f"scanrnn train: error: {message}\n"
    assert printed == "" and not out.exists()  # nothing written, nothing trained


def test_an_unknown_flag_is_one_line_and_status_2(capsys):
    code, _, error = run(["train", "--bogus", "3"], capsys)
    assert (code, error) == (2, "scanrnn: error: unrecognized arguments: --bogus 3\n")
    code, _, error = run([], capsys)
    assert (code, error) == (2, "scanrnn: error: the following arguments are required: command\n")


def test_out_must_be_a_writable_directory(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a directory")
    cases = [
        (file, f"--out must be a directory, got the existing file {str(file)!r}"),
        (file / "run", f"--out {str(file / 'run')!r} cannot be created: {str(file)!r} is a file"),
        ("", "--out must name a directory, got ''"),
    ]
    for out, message in cases:
        assert run(TINY + ["--out", out], capsys) == (2, "", f"scanrnn train: error: {message}\n")
    if os.geteuid() != 0:  # root writes anywhere; a read-only file system stops it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable = locked / "run"
    elif os.path.isdir("/proc"):
        unwritable = "/proc/scanrnn-test-run"
    else:
        pytest.skip("no directory this user cannot write to")
    code, _, error = run(TINY + ["--out", unwritable], capsys)
    assert code == 2 and error.count("\n") == 1
    assert error.startswith(f"scanrnn train: error: --out {str(unwritable)!r} ")
    assert "is not writable" in error or "cannot be created or written to" in error


def test_hidden_sizes_set_the_depth():
    def parsed(*flags):
        return check_flags(build_parser().parse_args(["train", "--out", "unused", *flags]))

    assert parsed("--hidden", "6", "4", "2").layers == 3
    assert parsed("--hidden", "8", "--layers", "3").hidden == [8, 8, 8]
    assert parsed().hidden == [20, 20] and parsed("--task", "binary-sum").hidden == [6, 4]
    assert parsed().activation is None and parsed("--task", "binary-sum").activation == "sigmoid"


# --------------------------------------------------------------------------
# Help and the program's name.


def test_help_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: argparse would break "binary-sum" at its hyphen
    code, printed, _ = run(["train", "--help"], capsys)
    assert code == 0
    text = " ".join(printed.split())
    assert text.startswith("usage: scanrnn train ")
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    for action in train._actions:
        if action.dest != "help":
            assert "(default: " in action.help, action.option_strings
    for default in (
        "(default: sine)", "(default: gru for sine, simple_rnn for binary-sum)",
        "(default: 20 for sine, 100 for binary-sum)", "(default: 32 for sine, 8 for binary-sum)",
        "(default: 0.005 for sine, 0.01 for binary-sum)", "(default: 20 for sine, 6 4 for binary-sum)",
        "(default: tanh for sine, sigmoid for binary-sum)", "(default: cosine)", "(default: 42)",
        "(default: runs/TASK-CELL)", "(default: no clipping)", "(default: each epoch only)",
    ):
        assert default in text, default


def installed_command():
    """The console script ``pip install`` made, or None."""
    for candidate in (os.path.join(sysconfig.get_path("scripts"), "scanrnn"), shutil.which("scanrnn")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.mark.slow
def test_each_entry_point_names_itself(tmp_path):
    """``python -m scanrnn`` says so; the installed ``scanrnn`` command says ``scanrnn``."""
    children = {"python -m scanrnn": [sys.executable, "-m", "scanrnn"]}
    if installed_command() is not None:
        children["scanrnn"] = [installed_command()]
    running = {
        prog: subprocess.Popen(command + ["train", "--epochs", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for prog, command in children.items()
    }
    try:
        for prog, child in running.items():
            printed, error = child.communicate(timeout=120)
            assert child.returncode == 2, error
            assert error == f"{prog} train: error: --epochs must be a positive int, got 0\n"
    finally:
        for child in running.values():
            child.kill()
            child.wait()
    if "scanrnn" not in children:
        pytest.skip("the scanrnn command is not installed (pip install -e .); python -m scanrnn was checked")


# --------------------------------------------------------------------------
# Runs, their outputs and the status in metrics.json.


@pytest.mark.slow
def test_a_run_over_an_old_one_with_overwrite_completes_and_resumes_to_itself(tmp_path, capsys):
    """--overwrite replaces the old run's checkpoints and outputs (nothing else); resuming the finished run
    trains nothing and writes the same params."""
    out = tmp_path / "run"
    (out / "checkpoints" / "999").mkdir(parents=True)
    (out / "metrics.json").write_text('{"status": "completed"}')
    (out / "forecasts.png").write_bytes(b"an old figure")
    (out / "notes.txt").write_text("the user's")
    flags = TINY + ["--seed", "1", "--out", out]
    code, printed, _ = run(flags + ["--checkpoint-every", "100", "--overwrite"], capsys)
    assert code == 0 and printed.count("train loss") == 2
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "completed" and metrics["resumed_from_step"] is None
    assert len(metrics["history"]["train_loss"]) == 2 and len(metrics["history"]["valid_loss"]) == 2
    assert all(math.isfinite(metrics["final"][k]) for k in ("valid_mse", "test_mse"))
    assert metrics["config"]["hidden"] == [4, 4] and metrics["config"]["checkpoint_every"] == 100
    with np.load(out / "params.npz") as params:
        assert params["[0].w_hh"].shape == (4, 4) and params["[1].w_hh"].shape == (4, 4)
    for name in ("learning_curves.png", "predictions.png"):
        assert (out / name).read_bytes()[:8] == PNG
    # binary-sum plots predicted against true sums; the old run's forecasts are gone, the user's file is not.
    assert not (out / "forecasts.png").exists() and (out / "notes.txt").read_text() == "the user's"
    # 402 examples in batches of 8: 51 steps an epoch; checkpoints at step 100 and at the end of each epoch.
    steps = sorted(int(n) for n in os.listdir(out / "checkpoints") if n.isdigit())
    assert 100 in steps and steps[-1] == 102 and 999 not in steps
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]

    finished = tmp_path / "finished"
    os.rename(out, finished)
    shutil.copytree(finished, out)
    code, printed, _ = run(flags + ["--resume"], capsys)
    assert code == 0 and "from its checkpoint of step 102" in printed and "train loss" not in printed
    assert strict_json(out / "metrics.json")["status"] == "completed"
    assert_same_params(out / "params.npz", finished / "params.npz")


def a_recorded_run(out, *flags):
    """``out`` as a run of ``TINY + flags`` leaves it: its flags in metrics.json, a checkpoint (empty here)."""
    from scanrnn.__main__ import _config

    args = check_flags(build_parser().parse_args(TINY + [*flags, "--out", str(out)]))
    (out / "checkpoints" / "51").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"status": "running", "config": _config(args)}))
    return out


def test_a_new_run_into_a_run_is_refused(tmp_path, capsys):
    out = a_recorded_run(tmp_path / "run", "--seed", "1")
    before = (out / "metrics.json").read_bytes()
    code, printed, error = run(TINY + ["--seed", "1", "--out", out], capsys)
    assert code == 2 and printed == ""
    assert error == (
        f"scanrnn train: error: --out {str(out)!r} already holds a run (metrics.json, checkpoints): pass "
        "--resume to continue it, --overwrite to replace it, or choose another --out\n"
    )
    assert (out / "metrics.json").read_bytes() == before


def test_resume_with_other_flags_is_refused(tmp_path, capsys):
    out = a_recorded_run(tmp_path / "run", "--seed", "1", "--checkpoint-every", "10")
    flags = ["train", "--task", "binary-sum", "--hidden", "4", "--epochs", "3", "--seed", "1", "--lr", "0.02"]
    code, _, error = run(flags + ["--resume", "--out", out], capsys)  # --checkpoint-every may change
    assert code == 2
    assert error == (
        f"scanrnn train: error: --resume: the run in {str(out)!r} was started with other flags: "
        "--epochs 3 (the run has 2); --lr 0.02 (the run has 0.01); give the flags it started with, "
        "or choose another --out\n"
    )
    (out / "metrics.json").unlink()
    code, _, error = run(TINY + ["--seed", "1", "--resume", "--out", out], capsys)
    assert code == 2 and "holds checkpoints but no metrics.json, which records the flags of its run" in error


@pytest.mark.slow
def test_a_nan_learning_rate_stops_at_the_first_step(tmp_path, capsys):
    """``--lr nan`` passes the flag checks and is stopped by fit's divergence guard: status 1, one line."""
    out = tmp_path / "run"
    code, _, error = run(TINY + ["--lr", "nan", "--out", out], capsys)
    assert code == 1 and error.count("\n") == 1
    assert error.startswith("scanrnn train: training diverged at epoch 1, step 1 (batch 1 of 51): the update was not finite")
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged_at"] == {"epoch": 1, "step": 1}
    assert metrics["error"] == error.removeprefix("scanrnn train: ").strip()
    assert metrics["config"]["lr"] is None  # NaN, in strict JSON
    assert metrics["history"]["train_loss"] == [] and "final" not in metrics
    assert not (out / "params.npz").exists()


@pytest.mark.slow
def test_the_sine_task_with_a_bidirectional_peephole_lstm_and_dropout(tmp_path, capsys, monkeypatch):
    import jax

    import scanrnn.train

    keys, fit = [], scanrnn.train.fit

    def spy(*args, **kwargs):  # the dropout's key reaches fit
        keys.append(kwargs["key"])
        return fit(*args, **kwargs)

    monkeypatch.setattr(scanrnn.train, "fit", spy)
    out = tmp_path / "sine"
    argv = ["train", "--cell", "lstm", "--peephole", "--hidden", "4", "--layers", "1", "--bidirectional",
            "--dropout", "0.25", "--epochs", "1", "--batch-size", "256", "--seed", "3", "--out", out]
    code, printed, _ = run(argv, capsys)
    assert code == 0 and "1 x bidirectional lstm [4], dropout 0.25" in printed
    expected = jax.random.key_data(jax.random.fold_in(jax.random.key(3), 1))
    assert len(keys) == 1 and np.array_equal(jax.random.key_data(keys[0]), expected)
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "completed" and metrics["config"]["bidirectional"] is True
    # The naive last-value forecast of the seed's study is reported beside the model.
    assert 0.01 < metrics["baseline"]["naive_last_value"]["test"] < 0.03
    assert metrics["final"]["valid_mse"] < 0.2
    with np.load(out / "params.npz") as params:
        # The two directions stacked on a leading axis; the dropout layer [1] has no params.
        assert params["[0].w_hh"].shape == (2, 16, 4) and params["[2].w"].shape == (1, 8)
    assert (out / "forecasts.png").read_bytes()[:8] == PNG and not (out / "predictions.png").exists()


# --------------------------------------------------------------------------
# A run killed in its second epoch and resumed equals the run left alone.


def assert_same_params(path, expected_path):
    with np.load(path) as got, np.load(expected_path) as expected:
        assert sorted(got.files) == sorted(expected.files)
        for name in expected.files:
            assert got[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


# One process imports scanrnn (and JAX) once and forks a run of ``main(argv, prog="python -m scanrnn")`` per
# command: a fresh interpreter would spend seconds importing for each of the kill test's three runs. Nothing
# starts JAX's backend before a fork; each run starts its own. A run's stdout and stderr are its lines,
# each after its pid; the server's answers are the other lines.
FORK_SERVER = """
import json
import os
import signal
import sys
import traceback

from scanrnn.__main__ import main


class Lines:
    def __init__(self, prefix):
        self.prefix, self.pending = prefix, ""

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\\n")
        if lines:  # whole lines in one write, which a pipe keeps whole beside the other runs' writes
            os.write(1, "".join(self.prefix + line + "\\n" for line in lines).encode())
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


for command in sys.stdin:
    kind, _, rest = command.partition(" ")
    if kind == "start":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(300)
                sys.stdout = sys.stderr = Lines(f"{os.getpid()} ")
                code = main(json.loads(rest), prog="python -m scanrnn")
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.write("\\n" if sys.stdout.pending else "")
                os._exit(code)
        os.write(1, f"started {pid}\\n".encode())  # one write, which the pipe keeps whole (print makes two)
    else:  # "poll PID" or "wait PID": "exit PID RETURNCODE" (-N: killed by signal N) or "running PID"
        pid = int(rest)
        ended, status = os.waitpid(pid, 0 if kind == "wait" else os.WNOHANG)
        code = -os.WTERMSIG(status) if ended and os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        os.write(1, (f"exit {pid} {code}\\n" if ended else f"running {pid}\\n").encode())
"""


class Runs:
    """The fork server (FORK_SERVER) in a subprocess; its output read line by line on a thread, each run's apart."""

    def __init__(self, cwd):
        # The test run's JAX_COMPILATION_CACHE_DIR, and XLA's lighter pipeline, as the runs in this process have it.
        env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
        self.replies, self.lines, self._lock = queue.Queue(), {}, threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.server.stdout:
            first, _, rest = line.partition(" ")
            if first.isdigit():
                self.of(int(first)).put(rest)
                continue
            if first == "started":  # a new run: its pid's lines start here (a pid may have been used before)
                with self._lock:
                    self.lines[int(rest)] = queue.Queue()
            self.replies.put(line.strip())

    def of(self, pid) -> queue.Queue:
        """The lines of run ``pid``."""
        with self._lock:
            return self.lines.setdefault(pid, queue.Queue())

    def ask(self, command, timeout=240) -> str:
        self.server.stdin.write(command + "\n")
        self.server.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.replies.get(timeout=0.5)
            except queue.Empty:
                if self.server.poll() is not None:
                    pytest.fail(f"the fork server ended with {self.server.returncode} (its stderr is above)")
        pytest.fail(f"the fork server did not answer {command!r} in {timeout} s")

    def close(self):
        self.server.stdin.close()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stdout.close()


class Forked:
    """A forked run as a process: ``poll``, ``send_signal``, ``wait``. Its return code once the server has reaped it."""

    def __init__(self, runs, pid):
        self.runs, self.pid, self.returncode = runs, pid, None

    def poll(self, wait=False, timeout=240):
        if self.returncode is None:
            reply = self.runs.ask(f"{'wait' if wait else 'poll'} {self.pid}", timeout)
            if reply.startswith("exit "):
                self.returncode = int(reply.split()[2])
            else:
                assert reply == f"running {self.pid}", reply
        return self.returncode

    def wait(self, timeout=240):
        return self.poll(wait=True, timeout=timeout)

    def send_signal(self, sig):
        if self.returncode is None:  # not reaped: its pid is still its own
            os.kill(self.pid, sig)


class Child:
    """``python -m scanrnn train ARGV`` as a process forked by ``runs``, its output read line by line."""

    def __init__(self, runs, argv):
        reply = runs.ask("start " + json.dumps([str(a) for a in argv]))
        assert reply.startswith("started "), reply
        self.process = Forked(runs, int(reply.split()[1]))
        self.output, self._lines = [], runs.of(self.process.pid)

    def _drain(self):
        while not self._lines.empty():
            self.output.append(self._lines.get())

    def wait_for(self, prefix, deadline):
        """Read until a line starts with ``prefix``; fail at the end of the output or at ``deadline``."""
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:  # its last lines came before the server's answer
                    self._drain()
                    pytest.fail(f"the run ended before a line {prefix!r}:\n{''.join(self.output)}")
                continue
            self.output.append(line)
            if line.startswith(prefix):
                return line
        pytest.fail(f"no line {prefix!r} in time; output so far:\n{''.join(self.output)}")

    def finish(self, timeout):
        """Wait for the process and the rest of its output; its exit status."""
        code = self.process.wait(timeout=timeout)
        self._drain()  # the run's lines all came before the server's answer
        return code



@pytest.mark.slow
def test_a_run_killed_in_its_second_epoch_resumes_to_the_same_params(tmp_path):
    """SIGKILL at a seeded random moment after the second epoch's first checkpoint, then --resume.

    402 examples in batches of 2 make epochs of 201 steps; checkpointing every
    40 steps, the killed run saves in epoch 2 at steps 240, 280, ... 400 and
    at 402, its end. The kill comes within 0.25 s of the first of them
    appearing, well before the epoch ends (160 more steps and 4 saves of
    about 0.2 s each). The reference checkpoints at the end of each epoch
    only: how often a run is saved changes none of its numbers. It starts
    first; the run to be killed starts once the reference has ended its first
    epoch, when the programs both run are in the test run's compilation cache
    (JAX_COMPILATION_CACHE_DIR, see conftest.py), so they are compiled once.
    Each run is a process of its own, forked from one that imported scanrnn
    once (FORK_SERVER), and runs ``main`` as ``python -m scanrnn`` does.
    """
    flags = ["train", "--task", "binary-sum", "--hidden", "4", "--epochs", "2", "--batch-size", "2"]
    steps_per_epoch = -(-len(make_data("binary-sum", 42)[0][0].x) // 2)
    assert steps_per_epoch == 201
    delay = random.Random(2024).uniform(0.0, 0.25)
    reference = killed = resumed = None
    runs = Runs(tmp_path)
    try:
        # The run left alone (checkpointed at the end of each epoch only), then beside it the run to be killed.
        reference = Child(runs, flags + ["--out", tmp_path / "reference"])
        deadline = time.monotonic() + 240
        reference.wait_for("epoch 1/2 ", deadline)
        killed = Child(runs, flags + ["--checkpoint-every", "40", "--out", tmp_path / "killed"])
        killed.wait_for("epoch 1/2 ", deadline)
        checkpoints = tmp_path / "killed" / "checkpoints"
        while True:  # the second epoch's first checkpoint, complete (orbax renames it into place)
            second = [s for s in map(int, filter(str.isdigit, os.listdir(checkpoints))) if s > steps_per_epoch]
            if second:
                break
            assert killed.process.poll() is None and time.monotonic() < deadline, "".join(killed.output)
            time.sleep(0.005)
        time.sleep(delay)
        killed.process.send_signal(signal.SIGKILL)
        assert killed.finish(timeout=60) == -signal.SIGKILL
        # It was killed within its second epoch: the first ended, the second did not.
        printed = "".join(killed.output)
        assert "epoch 1/2 " in printed and "epoch 2/2 " not in printed, printed
        metrics = strict_json(tmp_path / "killed" / "metrics.json")
        assert metrics["status"] == "running" and not (tmp_path / "killed" / "params.npz").exists()

        resumed = Child(runs, flags + ["--checkpoint-every", "40", "--resume", "--out", tmp_path / "killed"])
        assert resumed.finish(timeout=240) == 0, "".join(resumed.output)
        assert reference.finish(timeout=240) == 0, "".join(reference.output)
    finally:
        for child in (reference, killed, resumed):
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGKILL)
        runs.close()

    metrics = strict_json(tmp_path / "killed" / "metrics.json")
    start = metrics["resumed_from_step"]
    assert steps_per_epoch < start < 2 * steps_per_epoch, (start, second)  # a checkpoint within epoch 2
    assert f"from its checkpoint of step {start}" in "".join(resumed.output)
    assert metrics["status"] == "completed"
    assert_same_params(tmp_path / "killed" / "params.npz", tmp_path / "reference" / "params.npz")
    expected = strict_json(tmp_path / "reference" / "metrics.json")
    for name in ("train_loss", "valid_loss"):
        assert metrics["history"][name] == expected["history"][name], name
    assert metrics["final"] == expected["final"]
