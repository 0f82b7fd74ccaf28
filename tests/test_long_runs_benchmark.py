"""experiments/benchmarks/long_runs.py, the measurement behind fit's checkpoint_interval, on a tiny run."""

import json
import pathlib

import pytest

from helpers import load_script

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "benchmarks" / "long_runs.py"


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_quick_run_times_every_variant(tmp_path):
    module = load_script(SCRIPT, "benchmarks_long_runs")
    assert module.main(["--quick", "--tasks", "binary-sum", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]["binary-sum"]
    assert set(results["step_seconds"]) == {"plain step", "fit's guarded step"}
    assert set(results["epoch_seconds"]) == {"no checkpoints", "every epoch (interval 0)", "default interval (5 s)"}
    assert all(t > 0 for part in results.values() for t in part.values())
    assert "| binary-sum | fit's guarded step |" in (tmp_path / "results.md").read_text()
