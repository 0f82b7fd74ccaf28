"""The benchmark harness (experiments/benchmarks/run.py and its run_*.py parts), common.py and memory.py."""

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from helpers import load_script, script_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "experiments" / "benchmarks"
SCRIPT = BENCHMARKS / "run.py"


def benchmark_modules(*names):
    """Modules of experiments/benchmarks/ imported as its scripts import them: with their folder on sys.path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        return [importlib.import_module(name) for name in names]


common, run_cases, run_scanrnn, run_torch, run_flax = benchmark_modules(
    "common", "run_cases", "run_scanrnn", "run_torch", "run_flax")


@pytest.mark.slow
def test_quick_run_checks_and_reports(tmp_path, capsys, monkeypatch):
    """A bidirectional GRU (the hardest weight mapping) through every implementation; a variant nothing takes.

    The script's main runs in this process (its torch memory worker in its
    own). torch runs on one thread: with one per core, its threads wait for
    each other on a loaded machine (the test run's other worker), and its
    calls took seconds instead of milliseconds.
    """
    pytest.importorskip("torch")
    peers = ["torch"] + (["flax"] if importlib.util.find_spec("flax") else [])
    out = tmp_path / "BENCH.md"
    argv = ["--quick", "--cases", "tiny-bidir", "--cells", "gru", "--repeats", "2", "--peers", *peers,
            "--scanrnn-variants", "no_such_option=1", "--torch-threads", "1", "--out", str(out)]
    monkeypatch.chdir(ROOT)  # the command it records is relative to the working directory
    with script_config():
        code = load_script(SCRIPT, "benchmarks_run").main(argv)
    result = capsys.readouterr()
    assert code == 0, result.out[-2000:] + result.err[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (res,) = report["results"]
    assert [r["impl"] for r in res["rows"]] == ["scanrnn", *peers]
    for name in peers:
        check = res["checks"][name]
        assert check["ok"] and check["loss_rel_err"] <= 1e-4 and check["grad_rel_err"] <= 1e-3
    for row in res["rows"]:
        assert row["train"]["n"] == 2 and row["train"]["median_ms"] > 0 and row["infer"]["median_ms"] > 0
    memory = {r["impl"]: r["memory"] for r in res["rows"]}
    assert memory["scanrnn"]["train"] > memory["scanrnn"]["infer"] > 0  # XLA: the backward pass keeps residuals
    assert memory["torch"]["train"] is not None
    if "flax" in peers:
        assert memory["flax"]["train"] > 0
    text = out.read_text()
    assert "Machine:" in text and "| scanrnn |" in text and "bidirectional" in text
    assert report["command"].startswith("python experiments/benchmarks/run.py --quick")
    assert "torch ÷ scanrnn train" in result.out
    assert res["skipped_variants"] and "no_such_option" in res["skipped_variants"][0]
    assert report["settings"]["torch_threads"] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [False, True])
def test_variant_layer_equals_the_default_layer(bidirectional):
    """A variant's Execution reaches the layer, which computes what the default layer computes."""
    import scanrnn as sr

    case = run_cases.Case("t", 1, 5, 2, 3, bidirectional=bidirectional)
    cell = sr.gru(3)
    options = {"unroll_steps": 2, "hoist": True, **({"one_scan": True} if bidirectional else {})}
    execution = run_scanrnn.variant_execution(options, case)
    assert execution == sr.Execution(unroll=2, hoist=True, one_scan=bidirectional)
    layer = run_scanrnn.scanrnn_layer(cell, case, False, execution)
    reference = run_scanrnn.scanrnn_layer(cell, case, False, None)
    params = reference.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (5, 2), jnp.float32)
    got, expected = (jax.jit(f.apply)(params, xs, 4) for f in (layer, reference))
    assert got.shape == expected.shape == ((6,) if bidirectional else (3,))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_variants_that_execution_refuses_are_errors():
    """What run_case reports as a skipped variant: a ValueError saying why."""
    one_direction = run_cases.CASES["tiny"]
    with pytest.raises(ValueError, match="has no field no_such_option"):
        run_scanrnn.variant_execution({"no_such_option": 1})
    with pytest.raises(ValueError, match="remat must be one of"):
        run_scanrnn.variant_execution({"remat": "everything"})
    with pytest.raises(ValueError, match="the same scanrnn.Execution field twice"):
        run_scanrnn.variant_execution({"unroll_steps": 2, "unroll": 4})
    with pytest.raises(ValueError, match="one_scan only changes a bidirectional layer"):
        run_scanrnn.variant_execution({"one_scan": True}, one_direction)
    assert run_scanrnn.variant_execution({"one_scan": True}, run_cases.CASES["tiny-bidir"]).one_scan
    assert run_scanrnn.variant_name({"unroll_steps": 4, "backward": "hand"}) == "scanrnn[unroll_steps=4,backward=hand]"


def test_auto_variants_are_every_other_execution_value():
    assert run_scanrnn.auto_variants() == [{"unroll_steps": 4}, {"remat": "step"}, {"remat": "sqrt"},
                                            {"backward": "hand"}, {"hoist": True}, {"one_scan": True}]


def test_step_flops_follow_the_matmul_count():
    case = run_cases.CASES["medium-2layer"]
    B, T, I, H = case.batch, case.steps, case.inputs, case.hidden
    assert run_cases.step_flops(case, "lstm") == 24 * B * T * H * (I + H) + 24 * B * T * H * (H + H)
    bi = run_cases.CASES["medium-bidir"]
    assert run_cases.step_flops(bi, "gru") == 2 * 18 * B * T * H * (I + H)
    assert run_cases.step_flops(run_cases.CASES["tiny"], "rnn", train=False) == 6 * 32 * 50 * 20 * 21 / 3


def test_round_robin_interleaves_and_counts_calls():
    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
    stats = common.time_round_robin(fns, repeats=4, warmup=2, min_time=0.0)
    assert all(s["n"] == 4 and s["calls_per_sample"] == 1 for s in stats.values())
    timed = log[2 * 3 + 3:]  # after the warm-up and one calibration call each
    rounds = [timed[3 * r: 3 * r + 3] for r in range(4)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_results_go_under_experiments_results_and_quick_runs_under_runs(tmp_path):
    assert common.default_out("benchmarks", quick=False) == ROOT / "experiments" / "results" / "benchmarks"
    assert common.default_out("benchmarks", quick=True) == ROOT / "runs" / "benchmarks-quick"
    paths = common.write_results(tmp_path / "new", {"a": [1, 2]}, "# title")
    assert paths == [tmp_path / "new" / "results.json", tmp_path / "new" / "results.md"]
    assert json.loads(paths[0].read_text()) == {"a": [1, 2]} and paths[1].read_text() == "# title\n"
    common.write_results(tmp_path / "new", {"a": 3})  # rewritten whole; no temporary file left behind
    assert json.loads(paths[0].read_text()) == {"a": 3} and sorted(p.name for p in paths[0].parent.iterdir()) == [
        "results.json", "results.md"]


def test_tables_align_and_escape():
    assert common.table([["a", 1.5], ["bb", 22]], ["name", "v"]).splitlines() == [
        "name    v", "----  ---", "a     1.5", "bb     22"]
    assert common.table([["a", 1]], ["x", "y"], align="rl").splitlines() == ["x  y", "-  -", "a  1"]
    assert common.markdown_table([["a|b", 1]], ["x", "y"]) == "| x | y |\n|---|---|\n| a\\|b | 1 |"
    assert common.markdown_table([["a", 1]], ["x", "y"], align="lr").splitlines()[1] == "|---|---:|"
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        common.table([["a"]], ["x"], align="lr")


def test_parse_variant():
    assert run_scanrnn.parse_variant("unroll_steps=4,remat=sqrt") == {"unroll_steps": 4, "remat": "sqrt"}
    assert run_scanrnn.parse_variant("hoist=True,backward=hand") == {"hoist": True, "backward": "hand"}
    with pytest.raises(ValueError, match="key=value"):
        run_scanrnn.parse_variant("remat")


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_flax_mapping_matches_torch(cell):
    """flax with the mapped weights computes torch's model (the GRU is checked by the quick run)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("flax")
    case = run_cases.Case("t", 3, 6, 2, 4, layers=2)
    tmodel = run_torch.torch_model(case, cell, seed=1, device="cpu")
    x, _ = run_cases.make_data(case, seed=1)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    params = jax.tree.map(jnp.asarray, run_flax.flax_params_from_torch(tmodel, case, cell))
    got = run_flax.flax_model(case, cell).apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def load_benchmark(name):
    """experiments/benchmarks/<name>.py, imported as ``python experiments/benchmarks/<name>.py`` runs it."""
    return load_script(BENCHMARKS / f"{name}.py", f"benchmarks_{name}")


memory = load_benchmark("memory")


def memory_spec(**changes):
    spec = {"batch": 2, "steps": 300, "inputs": 3, "hidden": 8, "remat": "none", "seed": 0, "repeats": 0,
            "run_budget": 2**30}
    return {**spec, **changes}


@pytest.mark.slow
def test_memory_worker_measures_a_step_and_remat_saves_memory():
    none = memory.worker(memory_spec())
    assert none["status"] == "ok" and none["xla_temp"] > 0 and none["xla_args_out"] > 0 and none["rss"] >= 0
    # The plain scan saves per-step residuals: the temp buffers grow with T. Over the
    # run budget, the step is compiled (and measured by XLA) but not run.
    short = memory.worker(memory_spec(steps=30, run_budget=1))
    assert short["status"].startswith("not run: XLA needs") and "ms_per_step" not in short
    assert short["xla_temp"] < none["xla_temp"]
    assert none["via"] == memory.REMAT_VIA == "recurrent(execution=Execution(remat=...))"
    sqrt = memory.worker(memory_spec(remat="sqrt"))
    assert sqrt["status"] == "ok" and sqrt["xla_temp"] < none["xla_temp"]
    assert sqrt["loss"] == pytest.approx(none["loss"], rel=1e-6)


@pytest.mark.slow
def test_memory_failed_configuration_is_reported():
    result = memory.run_config(memory_spec(hidden=0), kill_bytes=8 * 2**30, timeout=120)
    assert result["status"].startswith("failed: exit status 1") and "hidden_size" in result["status"]
