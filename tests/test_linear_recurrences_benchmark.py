"""experiments/benchmarks/linear_recurrences.py: the linear recurrences' modes against matched LSTM and GRU peers."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_script, script_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks" / "linear_recurrences.py"


@pytest.fixture(scope="module")
def bench():
    """The script, imported as ``python experiments/benchmarks/linear_recurrences.py`` runs it."""
    return load_script(SCRIPT, "benchmarks_linear_recurrences")


@pytest.mark.slow
def test_quick_run_checks_times_and_reports(bench, tmp_path, capsys, monkeypatch):
    """min_gru in its three modes and its two peers at one length, and the chunk-size table (in this process)."""
    argv = ["--quick", "--lengths", "32", "--cells", "min_gru", "--sweep-cell", "min_gru", "--sweep-length", "32",
            "--sweep-chunk-sizes", "8", "16", "--out", str(tmp_path)]
    monkeypatch.chdir(ROOT)  # the command it records is relative to the working directory
    with script_config():
        code = bench.main(argv)
    printed = capsys.readouterr()
    assert code == 0, printed.out[-2000:] + printed.err[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    settings = report["settings"]
    assert (settings["batch"], settings["width"], settings["repeats"], settings["lengths"]) == (2, 8, 2, [32])
    assert report["complete"] and report["command"].startswith(
        "python experiments/benchmarks/linear_recurrences.py --quick")

    (length,) = report["lengths"]
    check = length["checks"]["min_gru"]
    assert check["ok"] and set(check["losses"]) == {"sequential", "associative", "chunked"}
    assert check["max_rel_diff"] <= 1e-4
    peers = report["cells"]["min_gru"]["peers"]
    names = [(r["cell"], r["mode"]) for r in length["rows"]]
    assert names == [("min_gru", "sequential"), ("min_gru", "associative"), ("min_gru", "chunked"),
                     *sorted((f"{kind}({peers[kind]})", "-") for kind in ("gru", "lstm"))]
    by_cell = {r["cell"]: r for r in length["rows"]}
    for r in length["rows"]:
        assert r["status"] == "ok" and r["time"]["n"] == 2 and r["median_ms"] > 0
        assert r["memory_bytes"] == sum(r["xla"].values()) > 0
    for r in length["rows"][:3]:  # the ratios are the peers' medians over the cell's
        for kind in ("lstm", "gru"):
            assert r[f"vs_{kind}"] == pytest.approx(by_cell[r[f"peer_{kind}"]]["median_ms"] / r["median_ms"])
    count = report["cells"]["min_gru"]["params"]
    assert count == by_cell["min_gru"]["params"] == 2 * 8 * 8 + 2 * 8 + 8 * 8 + 8  # min_gru(8) on 8 inputs, dense(8)
    for kind in ("lstm", "gru"):  # the closest counts (checked exactly below)
        assert abs(by_cell[f"{kind}({peers[kind]})"]["params"] - count) <= 0.2 * count
    assert length["fastest"]["min_gru"] in ("sequential", "associative", "chunked")

    sweep = report["chunk_sweep"]
    assert [r["chunk_size"] for r in sweep["rows"]] == [8, 16] and sweep["check"]["ok"]
    assert sweep["best_chunk_size"] in (8, 16) and min(r["over_best"] for r in sweep["rows"]) == 1.0
    text = (tmp_path / "results.md").read_text()
    assert "| 32 | min_gru (peers " in text and "fastest mode: min_gru:" in text and "## Chunk sizes" in text
    assert "vs LSTM" in printed.out and "T = 32, the modes' losses" in printed.out


@pytest.mark.slow
def test_matched_hidden_is_the_closest_count(bench):
    H = 8
    counts = {  # the models' parameter counts: the cell, then dense(H) on its h outputs
        "lstm": lambda h: 4 * h * (H + h) + 4 * h + H * h + H,
        "gru": lambda h: 3 * h * (H + h) + 6 * h + H * h + H,
    }
    for kind, count in counts.items():
        assert bench.count_params(bench.peer_model(kind, 5, H), H) == count(5)
        for target in (200, 5000):
            h = bench.matched_hidden(kind, target, H)
            gaps = [abs(count(k) - target) for k in range(1, 100)]
            assert abs(count(h) - target) == min(gaps)


def test_complex_params_count_twice(bench):
    model = bench.scanrnn.Layer(lambda key, n: {"c": jnp.zeros((3, n), jnp.complex64), "r": jnp.zeros(2)},
                                lambda params, xs, length=None, *, key=None, carry=None: xs, lambda params: ())
    assert bench.count_params(model, 4) == 2 * 12 + 2


def test_mode_check_fails_beyond_the_tolerance(bench):
    close = bench.check_modes("c", {"sequential": {"loss": 100.0}, "chunked": {"loss": 100.0 + 5e-3}})
    assert close["ok"] and close["max_rel_diff"] == pytest.approx(5e-5, rel=1e-3)
    off = bench.check_modes("c", {"sequential": {"loss": 100.0}, "associative": {"loss": 100.1}})
    assert not off["ok"]
    assert not bench.check_modes("c", {"sequential": {"loss": 1.0}, "associative": {"loss": float("nan")}})["ok"]
    one = bench.check_modes("c", {"sequential": {"loss": 1.0}, "associative": {"status": "OOM"}})
    assert one["ok"] and one["max_rel_diff"] is None


@pytest.mark.slow
def test_over_budget_is_reported_as_oom_without_running(bench):
    """XLA's estimate over the budget: compiled and measured, not run."""
    import scanrnn

    model = bench.model_of(scanrnn.recurrent(scanrnn.min_gru(3)), 3)
    case = bench.Case("c", "min_gru", "sequential", None, model, "c", "cell")
    params = model.init(jax.random.key(0), 3)
    x = jnp.asarray(np.ones((2, 5, 3), np.float32))
    over = bench.prepare(case, params, x, budget=1)
    assert over["status"] == "OOM" and over["why"].startswith("not run: XLA needs") and "loss" not in over
    assert over["memory_bytes"] == sum(over["xla"].values()) > 1
    ran = bench.prepare(case, params, x, budget=2**30)
    assert ran["status"] == "ok" and np.isfinite(ran["loss"]) and ran["run"]()[0] == pytest.approx(ran["loss"])
    assert bench.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1 bytes"))
    assert not bench.is_oom(ValueError("bad shape"))


def test_defaults_and_quick_settings(bench):
    args = bench.parse_args([])
    assert (args.lengths, args.batch, args.width, args.repeats, args.chunk_sizes) == ([1024, 16384, 65536], 16, 128,
                                                                                      3, [64])
    assert args.out == ROOT / "experiments" / "results" / "benchmarks-linear-recurrences"
    assert (args.sweep_cell, args.sweep_length, args.sweep_chunk_sizes) == ("lru", 16384, [32, 64, 128, 256])
    quick = bench.parse_args(["--quick"])
    assert (quick.lengths, quick.batch, quick.width, quick.repeats) == ([64, 256], 2, 8, 2)
    assert quick.out == ROOT / "runs" / "benchmarks-linear-recurrences-quick"
    assert (args.long_repeats, args.long_modes) == (1, "all")
    assert bench.parse_args(["--memory-budget-gib", "2"]).budget == 2 * 2**30
    labels = bench.mode_labels(["sequential", "chunked"], [32, 64])
    assert labels == [("sequential", "sequential", None), ("chunked C=32", "chunked", 32),
                      ("chunked C=64", "chunked", 64)]
    assert bench.labels_to_run(labels, "chunked C=64") == [("chunked C=64", "chunked", 64)]  # --long-modes fastest
    assert bench.labels_to_run(labels, None) == bench.labels_to_run(labels, "associative") == labels
    with pytest.raises(SystemExit):
        bench.parse_args(["--sweep-cell", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--lengths", "0"])


PROFILE = ROOT / "experiments" / "benchmarks" / "lru_profile.py"


@pytest.mark.slow
def test_lru_profile_quick_run_checks_the_plain_lru_and_reports_every_piece(tmp_path):
    """lru_profile.py --quick, in this process: the plain-JAX LRU equals scanrnn's, every row timed and counted."""
    profile = load_script(PROFILE, "benchmarks_lru_profile")
    assert profile.main(["--quick", "--length", "16", "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["shapes"] == {"B": 2, "T": 16, "H": 8, "N": 8}
    assert report["check_rel_diff"] <= 1e-4
    names = list(report["cases"])
    assert names[0] == "lru (scanrnn, sequential)" and names[1].startswith("lstm(")
    assert {"lru, plain JAX", "lru, no recurrence", "products only", "recurrence, lax.scan of real pairs"} <= set(names)
    for name, case in report["cases"].items():
        assert case["median_ms"] > 0 and case["flops"] > 0 and np.isfinite(case["loss"]), name
    # The three recurrence-only rows compute the same loss by different scans.
    losses = [report["cases"][n]["loss"] for n in names if n.startswith("recurrence")]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
    assert "| step | ms (median) |" in (tmp_path / "results.md").read_text()
