"""experiments/benchmarks/gpu.py: its plan, FLOP counts, tolerances and summary, and a --tiny run of every path."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import scanrnn as sr
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "gpu.py"

with pytest.MonkeyPatch.context() as _patch:  # imported as `python experiments/benchmarks/gpu.py` runs it
    _patch.syspath_prepend(str(SCRIPT.parent))
    gpu = load_script(SCRIPT, "benchmarks_gpu")
    import run_cases
    import run_checks

LSTM_ROWS = ["scanrnn", "scanrnn[hoist=True]", "scanrnn[backward=hand]", "scanrnn[unroll=4]", "scanrnn[unroll=16]",
             "scanrnn[bfloat16]", "scanrnn[ACCELERATOR]", "scanrnn[cudnn=True]", "flax", "torch"]
GRU_ROWS = [name for name in LSTM_ROWS if name != "scanrnn[cudnn=True]"]
LINEAR_ROWS = [f"{cell} {mode}" for cell in ("min_gru", "lru", "rg_lru", "selective_ssm")
               for mode in ("sequential", "associative", "chunked")]
# --tiny: each cell sequential and in one other mode, the two others each twice.
TINY_LINEAR_ROWS = ["min_gru sequential", "min_gru associative", "lru sequential", "lru chunked",
                    "rg_lru sequential", "rg_lru associative", "selective_ssm sequential", "selective_ssm chunked"]


def shapes_of(units, cell):
    return {(u.case.batch, u.case.steps, u.case.hidden) for u in units if u.cell == cell}


def test_plan_covers_the_grid_with_every_row_at_the_choice_shapes():
    units = gpu.plan()
    grid = {(B, T, H) for B in (16, 64, 256) for T in (100, 1000) for H in (128, 512, 1024)}
    assert shapes_of(units, "lstm") == shapes_of(units, "gru") == grid
    assert all(u.case.inputs == u.case.hidden for u in units)  # I = H
    names = {(u.cell, (u.case.batch, u.case.steps, u.case.hidden)): [gpu.row_name(gpu.ROW[k]) for k in u.rows]
             for u in units if u.cell != "linear"}
    for shape in [(64, 1000, 512), (16, 1000, 128), (256, 1000, 1024), (64, 100, 512)]:
        assert names[("lstm", shape)] == LSTM_ROWS and names[("gru", shape)] == GRU_ROWS
    assert names[("lstm", (16, 100, 128))] == ["scanrnn", "scanrnn[ACCELERATOR]", "scanrnn[cudnn=True]", "torch"]
    assert names[("gru", (256, 100, 1024))] == ["scanrnn", "scanrnn[ACCELERATOR]", "torch"]
    # The center first, then the linear recurrences there, in every mode.
    assert [(u.group, u.cell) for u in units[:3]] == [("choices", "lstm"), ("choices", "gru"), ("linear", "linear")]
    assert (units[2].case.batch, units[2].case.steps, units[2].case.hidden) == (64, 1000, 512)
    assert [" ".join(r) for r in units[2].rows] == LINEAR_ROWS
    assert len(units) == 2 * 18 + 1
    tiny = gpu.plan(tiny=True)
    assert [(u.cell, u.case.batch, u.case.steps, u.case.hidden) for u in tiny] == [
        ("lstm", 2, 8, 8), ("gru", 2, 8, 8), ("linear", 2, 8, 8)]
    assert [u.rows for u in tiny[:2]] == [u.rows for u in units[:2]]  # every implementation of the LSTM and GRU
    assert [" ".join(r) for r in tiny[2].rows] == TINY_LINEAR_ROWS


def test_a_unit_is_predicted_from_the_longest_of_its_kind():
    unit = gpu.plan()[0]  # choices, T = 1,000
    assert gpu.predicted_s(unit, []) == gpu.PRIOR_S["choices"]
    done = [("grid", 1000, 99.0), ("choices", 100, 12.0)]
    assert gpu.predicted_s(unit, done) == 12.0  # no unit of its length yet: its group's
    assert gpu.predicted_s(unit, done + [("choices", 1000, 30.0), ("choices", 1000, 25.0)]) == 30.0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matmul_flops_of_the_step_matrices_are_run_cases_counts(cell):
    """The rule used for the linear recurrences gives run_cases.step_flops for the LSTM and GRU."""
    case = run_cases.Case("t", 3, 7, 5, 4)
    made = getattr(sr, cell)(case.hidden)
    params = jax.eval_shape(lambda key: made.init(key, case.inputs), jax.random.key(0))
    entries = sum(getattr(params, field).size for field in made.matrices)
    for train in (True, False):
        assert gpu.matmul_flops(case, entries, train) == run_cases.step_flops(case, cell, train=train)


def test_linear_flops_count_each_cells_step_matrices():
    H, case = 8, gpu.shape_case((2, 5, 8))
    counts = {name: gpu.linear_params(name, case, seed=0)[1] for name in gpu.LINEAR_CELLS}
    rank = -(-H // 16)  # selective_ssm's dt rank, ceil(D / 16)
    assert counts == {"min_gru": 2 * H * H, "lru": 2 * H * H + H * 2 * H, "rg_lru": 2 * H * H,
                      "selective_ssm": (rank + 2 * 16) * H + H * rank}
    assert gpu.matmul_flops(case, counts["min_gru"]) == 3 * 2 * 2 * 5 * 2 * H * H


def test_tolerances():
    assert gpu.tolerance(bfloat16=False, tf32=False)[:2] == (run_checks.LOSS_RTOL, run_checks.GRAD_RTOL)
    assert gpu.tolerance(False, True) is gpu.TF32 and gpu.tolerance(True, True) is gpu.tolerance(True, False)
    assert gpu.FLOAT32.grad < gpu.TF32.grad < gpu.BFLOAT16.grad
    ref = run_cases.Impl("scanrnn", None, None, 1.0, {"w_hh": np.ones((2, 2))}, {})
    off = run_cases.Impl("x", None, None, 1.001, {"w_hh": np.full((2, 2), 1.01)}, {})
    assert not gpu.checked(ref, off, gpu.FLOAT32)["ok"]
    c = gpu.checked(ref, off, gpu.TF32)
    assert c["ok"] and c["tolerance"]["grad"] == gpu.TF32.grad
    assert c["loss_rel_err"] == pytest.approx(0.001 / 1.001) and c["grad_rel_err"] == pytest.approx(0.01 / 1.01)


def fake_unit(cell, shape, times):
    """A unit record as run_unit writes it, with train and infer times (ms) per column."""
    B, T, H = shape
    rows = [{"impl": gpu.row_name(gpu.ROW[k]), "note": "", "train": {"median_ms": t, "tflops": 1.0},
             "infer": {"median_ms": 2 * t, "tflops": 1.0}}
            for k, t in times.items()]
    return {"cell": cell, "case": {"name": "x", "batch": B, "steps": T, "hidden": H}, "rows": rows, "checks": {}}


def test_fastest_per_choice_counts_wins_and_ratios():
    units = [fake_unit("lstm", (16, 100, 128), {"default": 4.0, "hoist": 2.0, "unroll 4": 5.0, "unroll 16": 1.0}),
             fake_unit("lstm", (64, 100, 128), {"default": 3.0, "hoist": 6.0, "unroll 4": 1.5, "unroll 16": 4.0}),
             fake_unit("gru", (16, 100, 128), {"default": 1.0})]  # a GRU with nothing to compare
    rows, header = gpu.choice_summary(units)
    by = {(r[0], r[1], r[2]): r for r in rows}
    assert set(by) == {("projection placement", op, "lstm") for op in ("train", "infer")} | {
        ("unroll factor", op, "lstm") for op in ("train", "infer")}
    assert by[("projection placement", "train", "lstm")][3:] == [
        2, "hoist=False 1, hoist=True 1", "hoist=True: 1.25 (0.5–2)"]
    assert by[("unroll factor", "infer", "lstm")][3:] == [
        2, "unroll 1 0, unroll 4 1, unroll 16 1", "unroll 4: 1.4 (0.8–2); unroll 16: 2.38 (0.75–4)"]
    table_rows, _ = gpu.cell_table(units, "lstm", "train")
    assert table_rows[0][-1] == "unroll 16 ×4" and table_rows[1][-1] == "unroll 4 ×2"


@pytest.mark.slow
def test_tiny_run_exercises_every_implementation(tmp_path):
    """--tiny: every row runs (cuDNN through the reference kernel without a GPU), or is skipped with a reason.

    torch gets one thread (OMP_NUM_THREADS): with one per core its threads wait for each other on a loaded
    machine, and each of its tiny calls took a quarter of a second.
    """
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=180,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["complete"] and not report["skipped_units"]
    assert report["command"] == f"python experiments/benchmarks/gpu.py --tiny --out {tmp_path}"
    on_gpu = report["machine"]["jax_backend"] in ("gpu", "cuda")
    units = {u["cell"]: u for u in report["units"]}
    assert list(units) == ["lstm", "gru", "linear"]
    for cell, expected in (("lstm", LSTM_ROWS), ("gru", GRU_ROWS), ("linear", TINY_LINEAR_ROWS)):
        unit = units[cell]
        assert (unit["case"]["batch"], unit["case"]["steps"], unit["case"]["hidden"]) == (2, 8, 8)
        ran = [r["impl"] for r in unit["rows"]]
        skipped = {s["impl"]: s["reason"] for s in unit["skipped"]}
        assert sorted(ran + list(skipped)) == sorted(expected)
        for peer in ("torch", "flax"):
            if cell != "linear" and importlib.util.find_spec(peer) is None:
                assert "not installed" in skipped[peer]
        assert all(name in ("torch", "flax") for name in skipped), skipped  # every scanrnn path ran
        for row in unit["rows"]:
            for kind in ("train", "infer"):
                assert row[kind]["n"] == 1 and row[kind]["median_ms"] > 0 and row[kind]["tflops"] > 0
        # Every row but the reference is checked, and passed, at its stated tolerance.
        references = ["scanrnn"] if cell != "linear" else [n for n in ran if n.endswith("sequential")]
        assert sorted(unit["checks"]) == sorted(n for n in ran if n not in references)
        for name, check in unit["checks"].items():
            assert check["ok"], (name, check)
            tol = gpu.BFLOAT16 if "bfloat16" in name else gpu.TF32 if report["settings"]["precision"] == "default" \
                and on_gpu else gpu.FLOAT32
            assert (check["tolerance"]["loss"], check["tolerance"]["grad"]) == tol[:2]
            assert check["loss_rel_err"] <= tol.loss and check["grad_rel_err"] <= tol.grad
    cudnn = {r["impl"]: r for r in units["lstm"]["rows"]}["scanrnn[cudnn=True]"]
    assert cudnn["note"] == ("" if on_gpu else "reference kernel (no GPU)")
    text = (tmp_path / "results.md").read_text()
    for heading in ("## Fastest per choice", "## LSTM, training step", "## LSTM, inference", "## GRU, training step",
                    "## GRU, inference", "## Linear recurrences, training step", "## Correctness checks"):
        assert heading in text
    assert "| projection placement | train | lstm | 1 |" in text and "Every check passed." in text
    assert "I = H" in text
    assert on_gpu or "| cuDNN [reference kernel (no GPU)] |" in text.split("## LSTM, training step")[1]
    assert "Fastest per choice" in result.stdout and "wrote" in result.stdout


@pytest.mark.slow
def test_rows_that_cannot_run_are_skipped_with_their_reason():
    """Without torch (params from scanrnn's init) and without a GPU (no cuDNN), the default still runs and is timed."""
    env = gpu.Env(torch_weights=False, torch_device=None, torch_reason="torch is not installed", flax_reason="no flax",
                  cudnn_note="Execution(cudnn=True) needs a CUDA GPU; the backend is 'cpu'", tf32=False, seed=0)
    case = gpu.shape_case((2, 3, 4))
    unit = gpu.Unit("grid", case, "lstm", ("default", "cuDNN", "flax", "torch"))
    record = gpu.run_unit(unit, run_cases.make_data(case, 0), env, repeats=2, min_time=0.0)
    assert [r["impl"] for r in record["rows"]] == ["scanrnn"] and record["checks"] == {}
    assert record["rows"][0]["train"]["n"] == 2 and record["rows"][0]["train"]["flops"] == 24 * 2 * 3 * 4 * 8
    assert {s["impl"]: s["reason"] for s in record["skipped"]} == {
        "scanrnn[cudnn=True]": env.cudnn_note, "flax": "no flax", "torch": "torch is not installed"}
