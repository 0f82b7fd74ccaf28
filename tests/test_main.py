"""The main job, ``python -m scanrnn train``, on a few epochs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scanrnn.__main__ import main

# The main job trains with optax's Adam (see conftest.py).
pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")


def test_main_job_binary_sum_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "binary-sum", "--epochs", "3", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train loss") == 3 and "valid MSE" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["train_loss"]) == 3
    assert np.isfinite(metrics["final"]["valid_mse"]) and np.isfinite(metrics["final"]["test_mse"])
    assert metrics["config"]["hidden"] == [6, 4]
    with np.load(out / "params.npz") as params:
        assert params["[0].w_hh"].shape == (6, 6) and params["[1].w_hh"].shape == (4, 4)
    for name in ("learning_curves.png", "forecasts.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_job_sine_with_other_cell(tmp_path):
    out = tmp_path / "sine"
    argv = ["train", "--cell", "lstm", "--peephole", "--hidden", "4", "--layers", "1", "--epochs", "1",
            "--batch-size", "256", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The naive last-value forecast of the seed's study is reported beside the model.
    assert 0.01 < metrics["baseline"]["naive_last_value"]["test"] < 0.03
    assert metrics["final"]["valid_mse"] < 0.2


def test_main_job_rejects_bad_flags(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--cell", "transformer"])
    with pytest.raises(SystemExit, match="--peephole applies to --cell lstm only"):
        main(["train", "--cell", "gru", "--peephole", "--out", str(tmp_path)])


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "scanrnn", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--task" in result.stdout


def test_hidden_sizes_set_the_depth():
    from scanrnn.__main__ import build_parser, resolve

    def parsed(*flags):
        return resolve(build_parser().parse_args(["train", *flags]))

    assert parsed("--hidden", "6", "4", "2").layers == 3
    assert parsed("--hidden", "8", "--layers", "3").hidden == [8, 8, 8]
    assert parsed().hidden == [20, 20] and parsed("--task", "binary-sum").hidden == [6, 4]
    with pytest.raises(SystemExit, match=r"--hidden needs 1 or --layers \(2\) numbers, got 3"):
        parsed("--layers", "2", "--hidden", "6", "4", "2")
