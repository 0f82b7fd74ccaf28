"""experiments/benchmarks/backward.py, the hand-written backward pass against autodiff, on a tiny grid."""

import json
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "backward.py"


def load_backward():
    """The script, imported as ``python experiments/benchmarks/backward.py`` runs it: its folder on sys.path."""
    return load_script(SCRIPT, "benchmarks_backward")


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_grid_writes_both_passes_and_which_was_faster(tmp_path):
    module = load_backward()
    module.main(["--quick", "--cells", "lstm", "--batch", "2", "--hidden", "8", "--repeats", "2",
                 "--out", str(tmp_path)])
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["settings"] == {"T": 5, "I": 3, "repeats": 2, "seed": 0, "quick": True}
    assert out["command"].endswith("backward.py --quick --cells lstm --batch 2 --hidden 8 --repeats 2 --out "
                                   + str(tmp_path))
    assert [(r["cell"], r["B"], r["H"]) for r in out["rows"]] == [("lstm", 2, 8)]
    for row in out["rows"]:
        assert row["hand_ms"] > 0 and row["autodiff_ms"] > 0
        assert row["autodiff_over_hand"] == pytest.approx(row["autodiff_ms"] / row["hand_ms"])
        assert row["faster"] == ("hand" if row["hand_ms"] < row["autodiff_ms"] else "autodiff")
    text = (tmp_path / "results.md").read_text()
    assert "| lstm | 2 | 8 |" in text and "| faster |" in text
    assert "`scanrnn.Execution().backward`, is `'autodiff'` on every backend" in text


def test_default_output_is_under_experiments_results():
    module = load_backward()
    assert module.parse_args([]).out == str(ROOT / "experiments" / "results" / "benchmarks-backward")
    assert module.parse_args(["--quick"]).out == str(ROOT / "runs" / "benchmarks-backward-quick")
