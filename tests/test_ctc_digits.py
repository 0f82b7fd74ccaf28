"""experiments/ctc_digits.py --quick, its main in this process: it trains, decodes and writes its outputs."""

import json
import math
import pathlib

import pytest

from helpers import load_script, script_config

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "ctc_digits.py"


@pytest.mark.slow
def test_ctc_digits_quick(tmp_path, capsys):
    script = load_script(SCRIPT, "ctc_digits_script")
    with script_config():
        code = script.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "label error rate" in printed.out and "greedy (best path)" in printed.out

    out = json.loads((tmp_path / "results.json").read_text())
    for key in ("command", "seed", "settings", "test_loss", "decoders", "greedy_label_error_rate",
                "beam_label_error_rate", "curve", "plotted_example", "wall_seconds", "process_cpu_seconds"):
        assert key in out
    settings = out["settings"]
    assert settings["quick"] is True and settings["blank"] == 0 and settings["num_classes"] == 11
    steps = settings["steps"]
    assert out["curve"]["step"][-1] == steps
    curve_values = [v for k in ("train_loss", "test_loss", "test_greedy_ler") for v in out["curve"][k]]
    assert all(math.isfinite(v) and v >= 0 for v in curve_values)
    # Training moved the params: the training loss is not constant.
    assert out["curve"]["train_loss"][0] != out["curve"]["train_loss"][-1]
    assert len(out["decoders"]) == 2
    for decoder in out["decoders"].values():
        assert math.isfinite(decoder["label_error_rate"]) and decoder["label_error_rate"] >= 0
        assert 0 <= decoder["sequence_error_rate"] <= 1
    assert math.isfinite(out["test_loss"]) and out["test_loss"] > 0
    example = out["plotted_example"]
    assert len(example["segments"]) == len(example["digits"])
    assert all(0 <= a < b and 0 <= d <= 9 for a, b, d in example["segments"])
    for name in ("frame_probabilities.png", "learning_curve.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    greedy = out["decoders"]["greedy (best path)"]
    assert out["test_labels"] * greedy["label_error_rate"] == pytest.approx(greedy["edit_distance"])
    table = (tmp_path / "results.md").read_text()  # the printed table, in Markdown
    assert f"| greedy (best path) | {100 * greedy['label_error_rate']:.2f}% | {greedy['edit_distance']} / " \
           f"{out['test_labels']} |" in table
