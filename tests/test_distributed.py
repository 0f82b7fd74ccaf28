"""Several processes: scanrnn.devices.launch, the train command's process flags, and a run of 2 processes x 2 devices.

The processes bind only to 127.0.0.1, every wait is bounded, and every
process a test starts is stopped before it ends (its whole process group).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scanrnn import devices
from scanrnn.__main__ import main

PYTHON = sys.executable


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_launch_gives_each_process_its_id_and_the_coordinator(tmp_path):
    script = (
        "import os, pathlib; e = os.environ; "
        "pathlib.Path(e['OUT'], e['SCANRNN_PROCESS_ID']).write_text(e['SCANRNN_COORDINATOR'] + ' ' + e['SCANRNN_NUM_PROCESSES'])"
    )
    code = devices.launch([PYTHON, "-c", script], 3, port=41234, env=dict(os.environ, OUT=str(tmp_path)), timeout=60)
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]
    assert {p.read_text() for p in tmp_path.iterdir()} == {"127.0.0.1:41234 3"}


def test_launch_stops_the_others_when_one_fails(tmp_path):
    """Process 1 exits 3 at once; process 0 would sleep a minute and is stopped: 3 comes back in seconds."""
    script = (
        "import os, sys, time, pathlib\n"
        "if os.environ['SCANRNN_PROCESS_ID'] == '1': sys.exit(3)\n"
        "pathlib.Path(os.environ['OUT'], 'pid').write_text(str(os.getpid())); time.sleep(60)\n"
    )
    start = time.monotonic()
    code = devices.launch([PYTHON, "-c", script], 2, env=dict(os.environ, OUT=str(tmp_path)), timeout=60)
    assert code == 3 and time.monotonic() - start < 30
    pid = int((tmp_path / "pid").read_text()) if (tmp_path / "pid").exists() else None
    if pid is not None:  # it had started its sleep: it must be gone now
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_launch_times_out_with_124():
    start = time.monotonic()
    assert devices.launch([PYTHON, "-c", "import time; time.sleep(60)"], 2, timeout=1) == 124
    assert time.monotonic() - start < 20


def test_free_port_is_on_the_loopback_and_free():
    import socket

    port = devices.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it


def test_initialize_needs_its_three_values(monkeypatch):
    for name in (devices.ENV_COORDINATOR, devices.ENV_NUM_PROCESSES, devices.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="initialize needs the coordinator's address"):
        devices.initialize()
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
        devices.initialize("127.0.0.1:1", 2, 2)


BAD = [
    (["train", "--devices", "0"], "scanrnn train: error: --devices must be a positive int, got 0"),
    (["train", "--num-processes", "2"],
     "scanrnn train: error: --num-processes 2 needs --coordinator HOST:PORT and --process-id"),
    (["train", "--num-processes", "2", "--coordinator", "127.0.0.1:1234", "--process-id", "2"],
     "scanrnn train: error: --process-id must be in [0, 2), got 2"),
    (["train", "--num-processes", "2", "--coordinator", "localhost", "--process-id", "0"],
     "scanrnn train: error: --coordinator must be HOST:PORT, got 'localhost'"),
    (["launch", "--processes", "0", "--", "train"], "scanrnn launch: error: --processes must be a positive int, got 0"),
    (["launch", "--processes", "2"], "scanrnn launch: error: launch needs a command after --"),
    (["launch", "--processes", "2", "--", "launch"], "scanrnn launch: error: launch cannot launch itself"),
    (["launch", "--processes", "2", "--timeout", "0", "--", "train"],
     "scanrnn launch: error: --timeout must be a positive number of seconds, got 0.0"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_process_flags_are_one_line_and_status_2(argv, message, tmp_path, capsys, monkeypatch):
    for name in (devices.ENV_COORDINATOR, devices.ENV_NUM_PROCESSES, devices.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    argv = argv + (["--out", tmp_path / "run"] if argv[0] == "train" else [])
    code, printed, error = run(argv, capsys)
    assert code == 2 and error.startswith(message) and error.count("\n") == 1, error
    assert printed == "" and not (tmp_path / "run").exists()


def params_of(path):
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files if saved[name].dtype.kind == "f"}


def launched(out, *extra):
    """``scanrnn launch`` of a 2-process, 2-device binary-sum run into ``out``, in its own process group."""
    flags = ["--task", "binary-sum", "--hidden", "4", "--epochs", "1", "--batch-size", "16", "--devices", "2"]
    command = [PYTHON, "-m", "scanrnn", "launch", "--processes", "2", "--timeout", "240", "--",
               "train", *flags, "--out", str(out), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def stop(process):
    """The launcher and everything it started, gone."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()


@pytest.mark.slow
def test_two_processes_of_two_devices_train_as_one_and_resume_bit_for_bit(tmp_path):
    """2 x 2 CPU devices against one device (1e-6; 1.2e-7 measured), then a run killed after a checkpoint and
    resumed: bit for bit the uninterrupted 2-process run."""
    processes = []
    try:
        whole = launched(tmp_path / "whole")
        processes.append(whole)
        # The same run in one process on one device, at the same time (in a process of its own: this one
        # compiles with XLA's lighter pipeline, conftest.py, whose rounding differs).
        single = subprocess.Popen(
            [PYTHON, "-m", "scanrnn", "train", "--task", "binary-sum", "--hidden", "4", "--epochs", "1",
             "--batch-size", "16", "--out", str(tmp_path / "one")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        processes.append(single)
        output, _ = whole.communicate(timeout=300)
        assert whole.returncode == 0, output[-3000:]
        assert "data-parallel over 4 devices of 2 process(es)" in output
        assert output.count("epoch 1/1 ") == 1  # process 0 alone prints
        alone, _ = single.communicate(timeout=300)
        assert single.returncode == 0, alone[-3000:]
        one, two = params_of(tmp_path / "one" / "params.npz"), params_of(tmp_path / "whole" / "params.npz")
        assert one.keys() == two.keys() and len(one) == 8
        for name in one:
            np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-6, err_msg=name)

        # Killed once its checkpoint of step 10 (of 26) is complete, every process at once; then resumed.
        killed = launched(tmp_path / "killed", "--checkpoint-every", "5")
        processes.append(killed)
        checkpoints = tmp_path / "killed" / "checkpoints"
        deadline = time.monotonic() + 240
        while not (checkpoints.is_dir() and any(p.name.isdigit() and int(p.name) >= 10 for p in checkpoints.iterdir())):
            assert killed.poll() is None and time.monotonic() < deadline, "the run ended or stalled before step 10"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert not (tmp_path / "killed" / "params.npz").exists()
        resumed = launched(tmp_path / "killed", "--checkpoint-every", "5", "--resume")
        processes.append(resumed)
        output, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, output[-3000:]
        assert "resuming the run in" in output
        again = params_of(tmp_path / "killed" / "params.npz")
        for name in two:
            np.testing.assert_array_equal(again[name], two[name], err_msg=name)
    finally:
        for process in processes:
            stop(process)
