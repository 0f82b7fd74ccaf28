"""The benchmark harness (experiments/benchmarks): its --quick path, its weight mapping and its timing loop."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from helpers import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "run.py"


bench = load_script(SCRIPT, "benchmarks_run")


@pytest.mark.slow
def test_quick_run_checks_and_reports(tmp_path):
    """A bidirectional GRU (the hardest weight mapping) through every implementation; a variant nothing takes."""
    out = tmp_path / "BENCH.md"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--cases", "tiny-bidir", "--cells", "gru", "--repeats", "2",
           "--scanrnn-variants", "no_such_option=1", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (res,) = report["results"]
    assert [r["impl"] for r in res["rows"]] == ["scanrnn", "torch", "flax"]
    for name in ("torch", "flax"):
        check = res["checks"][name]
        assert check["ok"] and check["loss_rel_err"] <= 1e-4 and check["grad_rel_err"] <= 1e-3
    for row in res["rows"]:
        assert row["train"]["n"] == 2 and row["train"]["median_ms"] > 0 and row["infer"]["median_ms"] > 0
    memory = {r["impl"]: r["memory"] for r in res["rows"]}
    assert memory["scanrnn"]["train"] > memory["scanrnn"]["infer"] > 0  # XLA: the backward pass keeps residuals
    assert memory["flax"]["train"] > 0 and memory["torch"]["train"] is not None
    text = out.read_text()
    assert "Machine:" in text and "| scanrnn |" in text and "bidirectional" in text
    assert "torch ÷ scanrnn train" in result.stdout
    assert res["skipped_variants"] and "no_such_option" in res["skipped_variants"][0]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_variant_through_unroll_equals_the_layer(bidirectional):
    """An option only unroll takes is passed through a layer around it, which must equal the layer itself."""
    import scanrnn as sr

    case = bench.Case("t", 1, 5, 2, 3, bidirectional=bidirectional)
    cell = sr.gru(3)
    # `carry` (and `reverse`) are arguments of unroll(_bidirectional) that the layers do not take.
    options = {"carry": None} if bidirectional else {"reverse": False}
    layer, via = bench.scanrnn_layer(cell, case, False, options)
    reference, _ = bench.scanrnn_layer(cell, case, False, {})
    assert via == ("unroll_bidirectional" if bidirectional else "unroll")
    params = reference.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (5, 2), jnp.float32)
    got, expected = (jax.jit(f.apply)(params, xs, 4) for f in (layer, reference))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="accepts"):
        bench.scanrnn_layer(cell, case, False, {"no_such_option": 1})


def test_step_flops_follow_the_matmul_count():
    case = bench.CASES["medium-2layer"]
    B, T, I, H = case.batch, case.steps, case.inputs, case.hidden
    assert bench.step_flops(case, "lstm") == 24 * B * T * H * (I + H) + 24 * B * T * H * (H + H)
    bi = bench.CASES["medium-bidir"]
    assert bench.step_flops(bi, "gru") == 2 * 18 * B * T * H * (I + H)
    assert bench.step_flops(bench.CASES["tiny"], "rnn", train=False) == 6 * 32 * 50 * 20 * 21 / 3


def test_round_robin_interleaves_and_counts_calls():
    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
    stats = bench.time_round_robin(fns, repeats=4, warmup=2, min_time=0.0)
    assert all(s["n"] == 4 and s["calls_per_sample"] == 1 for s in stats.values())
    timed = log[2 * 3 + 3:]  # after the warm-up and one calibration call each
    rounds = [timed[3 * r: 3 * r + 3] for r in range(4)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_parse_variant():
    assert bench.parse_variant("unroll_steps=4,remat=sqrt") == {"unroll_steps": 4, "remat": "sqrt"}
    with pytest.raises(ValueError, match="key=value"):
        bench.parse_variant("remat")


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_flax_mapping_matches_torch(cell):
    """flax with the mapped weights computes torch's model (the GRU is checked by the quick run)."""
    case = bench.Case("t", 3, 6, 2, 4, layers=2)
    tmodel = bench.torch_model(case, cell, seed=1, device="cpu")
    x, _ = bench.make_data(case, seed=1)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    params = jax.tree.map(jnp.asarray, bench.flax_params_from_torch(tmodel, case, cell))
    got = bench.flax_model(case, cell).apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def load_memory_script():
    return load_script(SCRIPT.parent / "memory.py", "benchmarks_memory")


memory = load_memory_script()


def memory_spec(**changes):
    spec = {"batch": 2, "steps": 300, "inputs": 3, "hidden": 8, "remat": "none", "seed": 0, "repeats": 0,
            "run_budget": 2**30}
    return {**spec, **changes}


def test_memory_worker_measures_a_step_and_remat_saves_memory():
    none = memory.worker(memory_spec())
    assert none["status"] == "ok" and none["xla_temp"] > 0 and none["xla_args_out"] > 0 and none["rss"] >= 0
    # The plain scan saves per-step residuals: the temp buffers grow with T. Over the
    # run budget, the step is compiled (and measured by XLA) but not run.
    short = memory.worker(memory_spec(steps=30, run_budget=1))
    assert short["status"].startswith("not run: XLA needs") and "ms_per_step" not in short
    assert short["xla_temp"] < none["xla_temp"]
    if memory.remat_via() is None:
        pytest.skip("scanrnn has no remat argument yet")
    sqrt = memory.worker(memory_spec(remat="sqrt"))
    assert sqrt["status"] == "ok" and sqrt["xla_temp"] < none["xla_temp"]
    assert sqrt["loss"] == pytest.approx(none["loss"], rel=1e-6)


def test_memory_failed_configuration_is_reported():
    result = memory.run_config(memory_spec(hidden=0), kill_bytes=8 * 2**30, timeout=120)
    assert result["status"].startswith("failed: exit status 1") and "hidden_size" in result["status"]
