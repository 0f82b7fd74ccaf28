"""experiments/benchmarks/backward.py, the measurement behind backward="auto", on a tiny grid."""

import json
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "backward.py"


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_grid_writes_both_passes_and_what_auto_picks(tmp_path, monkeypatch):
    module = load_script(SCRIPT, "benchmarks_backward")
    monkeypatch.setattr(module, "hand_written_default", lambda: False)  # the CPU rule, on any backend

    module.main(["--quick", "--cells", "lstm", "--batch", "2", "--hidden", "8", "--repeats", "2",
                 "--out", str(tmp_path)])
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["settings"] == {"T": 5, "I": 3, "repeats": 2, "seed": 0, "quick": True}
    assert [(r["cell"], r["B"], r["H"], r["auto_picks"]) for r in out["rows"]] == [("lstm", 2, 8, "autodiff")]
    for row in out["rows"]:
        assert row["hand_ms"] > 0 and row["autodiff_ms"] > 0
        assert row["autodiff_over_hand"] == pytest.approx(row["autodiff_ms"] / row["hand_ms"])
    assert "| lstm | 2 | 8 |" in (tmp_path / "results.md").read_text()
