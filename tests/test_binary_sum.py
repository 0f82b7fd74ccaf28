"""experiments/binary_sum.py --quick, its main in this process: it runs, writes its outputs, and BPTT equals jax.grad."""

import json
import math
import pathlib

import pytest

from helpers import load_script, script_config

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "binary_sum.py"
RUNS = ["sgd/bptt", "sgd/jax.grad", "adam/bptt", "adam/jax.grad", "sgd/bptt, seed's init"]


@pytest.mark.slow
def test_binary_sum_quick(tmp_path, capsys):
    script = load_script(SCRIPT, "binary_sum_script")
    with script_config(x64=True):  # the script computes in float64
        code = script.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "first 15 validation sequences" in printed.out and "valid MSE" in printed.out

    out = json.loads((tmp_path / "results.json").read_text())
    for key in ("command", "seed", "settings", "runs", "seeds", "bptt_vs_jax_grad", "validation_examples",
                "wall_seconds"):
        assert key in out
    assert out["settings"]["epochs"] == 3 and out["settings"]["quick"] is True
    assert sorted(out["runs"]) == sorted(RUNS)
    for run in out["runs"].values():
        assert len(run["train_curve"]) == len(run["valid_curve"]) == 3
        numbers = [run["train_mse"], run["valid_mse"], *run["train_curve"], *run["valid_curve"]]
        assert all(math.isfinite(v) and v >= 0 for v in numbers)
    assert len(out["seeds"]["valid_mse"]) == len(out["seeds"]["seeds"]) == 2
    assert all(math.isfinite(v) for v in out["seeds"]["valid_mse"])

    # The hand-written BPTT and jax.grad train to the same numbers (float64, 3 epochs of 402 updates).
    for kind in ("sgd", "adam"):
        diffs = out["bptt_vs_jax_grad"][kind]
        assert set(diffs) == {"max_abs_param_diff", "max_abs_train_curve_diff", "max_abs_valid_curve_diff"}
        assert all(0 <= d < 1e-6 for d in diffs.values())
    # Training moved the params: the curves are not constant.
    assert out["runs"]["sgd/bptt"]["valid_curve"][-1] != out["runs"]["sgd/bptt"]["valid_curve"][0]

    examples = out["validation_examples"]
    assert len(examples) == 15
    assert all(len(e["sequence"]) == 8 and e["sequence"][-1] == sum(e["sequence"][:-1]) for e in examples)
    for name in ("learning_curves.png", "weights.png", "weights_adam.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()  # the printed tables, in Markdown
    assert "| run | train MSE | valid MSE | best valid MSE | seconds |" in table
    assert "| sgd/bptt, 2 seeds (mean / max) |" in table and "| adam |" in table
