"""experiments/benchmarks/pieces.py, the bidirectional and stacked layers against their pieces, on tiny shapes."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "pieces.py"


@pytest.fixture(scope="module")
def pieces():
    """The script, imported as ``python experiments/benchmarks/pieces.py`` runs it: its folder on sys.path."""
    return load_script(SCRIPT, "benchmarks_pieces")


def test_the_check_between_programs_is_live(pieces):
    """The quick run below checks ``one scan`` against ``two scans``; outputs off by more than 1e-4 stop it."""
    outputs = (jnp.asarray(0.5), {"w": jnp.arange(1.0, 7.0).reshape(2, 3)})
    pieces.check_same("same", outputs, jax.tree.map(lambda a: a * (1 + 1e-6), outputs))
    for off in ((outputs[0] * 1.001, outputs[1]), (outputs[0], {"w": outputs[1]["w"].at[1, 2].add(0.01)})):
        with pytest.raises(SystemExit, match="off: the two programs disagree"):
            pieces.check_same("off", outputs, off)


@pytest.mark.slow
@pytest.mark.usefixtures("standard_dtype_promotion")
def test_quick_run_writes_every_row(pieces, tmp_path):
    pieces.main(["--quick", "--bidir-cells", "lstm", "--repeats", "2", "--min-time", "0", "--out", str(tmp_path)])
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["settings"] == {"B": 4, "T": 6, "I": 3, "H": 8, "backward": "autodiff", "repeats": 2, "seed": 0,
                               "quick": True}
    got = [(r["structure"], r["cell"], r["step"], r["program"]) for r in out["rows"]]
    assert got == [
        (s, c, step, p)
        for s, c, programs in (("bidirectional", "lstm", ["one scan", "two scans", "apart: forward + backward"]),
                               ("2-layer", "lstm", ["stacked", "apart: layer 1 + layer 2"]))
        for step in ("train", "infer") for p in programs
    ]
    for r in out["rows"]:
        assert r["median_ms"] > 0
        if r["program"].startswith("apart"):
            assert r["median_ms"] == pytest.approx(sum(r["pieces_ms"].values()))
        if r["program"] in ("one scan", "stacked"):
            assert r["over_combined"] == 1.0
    assert "| bidirectional | lstm | train | two scans |" in (tmp_path / "results.md").read_text()


def test_default_output_is_under_experiments_results(pieces):
    medium = ROOT / "experiments" / "results" / "benchmarks-pieces" / "B128-T200-I64-H256"
    assert pieces.parse_args([]).out == str(medium)
    assert pieces.parse_args(["--quick"]).out == str(ROOT / "runs" / "benchmarks-pieces-quick")
