"""experiments/sine_forecast.py --quick runs end to end (its main in this process) and writes a table whose
baselines are right."""

import json
import os

import numpy as np
import pytest

from helpers import load_script, script_config
from scanrnn import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "sine_forecast.py")


@pytest.mark.slow
def test_quick_run(tmp_path, capsys):
    out = tmp_path / "out"
    with script_config():
        code = _load_script().main(["--quick", "--epochs", "1", "--out", str(out), "--seed", "3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    for name in ("results.json", "results.md", "learning_curves.png", "forecasts_one_step.png",
                 "forecasts_ten_steps.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    assert result["settings"]["seed"] == 3 and "--quick" in result["command"]
    assert result["wall_seconds"] > 0
    rows = {(r["horizon"], r["model"]): r for r in result["rows"]}

    # Every model the quick run trains, the two naive forecasts and the iterated one-step model.
    trained = {(1, "linear"), (1, "deep RNN + dense"), (10, "linear"), (10, "WaveNet (dilations 1-8, twice)")}
    expected = trained | {(1, "naive (last value)"), (10, "naive (last value)"),
                          (10, "iterated one-step (deep RNN + dense)")}
    assert set(rows) == expected
    for key, row in rows.items():
        assert np.isfinite(row["valid_mse"]) and np.isfinite(row["test_mse"]), key
        assert (row["params"] > 0) == (key[1] != "naive (last value)")
    assert set(k.split(":", 1)[1] for k in result["histories"]) == {name for _, name in trained}
    for hist in result["histories"].values():
        assert len(hist["train_loss"]) == len(hist["valid_loss"]) == 1
    assert rows[(1, "linear")]["params"] == 51 and rows[(10, "linear")]["params"] == 510
    # Sequence outputs report the MSE over all their steps as well.
    assert np.isfinite(rows[(10, "WaveNet (dilations 1-8, twice)")]["test_mse_all_steps"])

    # The naive forecasts' MSE, computed here from the data: 640 series split 448 / 128 / 64.
    for horizon in (1, 10):
        series = data.generate_time_series(640, 50 + horizon, rng=3)[..., 0].astype(np.float64)
        for part, rows_slice in (("valid", slice(448, 576)), ("test", slice(576, 640))):
            s = series[rows_slice]
            naive = np.mean((s[:, 50:] - s[:, 49:50]) ** 2)
            np.testing.assert_allclose(rows[(horizon, "naive (last value)")][f"{part}_mse"], naive, rtol=1e-6)

    table = (out / "results.md").read_text()
    assert "| 10 | iterated one-step (deep RNN + dense) |" in table and "Géron (2019)" in table
    assert "naive (last value)" in printed.out  # the table is printed too


def _load_script():
    """The script, imported as ``python experiments/sine_forecast.py`` runs it: its folder on sys.path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(os.path.dirname(SCRIPT))
        return load_script(SCRIPT, "sine_forecast_script")


def test_merge_replaces_and_inserts_rows(tmp_path):
    script = _load_script()
    row = lambda h, m, v: {"horizon": h, "model": m, "params": 0 if m.startswith("naive") else 5, "seconds": 1.0,
                           "valid_mse": v, "test_mse": v, "keras_reported": None}
    earlier = {
        "command": "python sine_forecast.py", "wall_seconds": 10.0,
        "settings": {"n_series": 640, "split": [448, 128, 64], "epochs": 20, "batch_size": 32, "seed": 42,
                     "optimizer": "adam", "loss": "mse"},
        "environment": {"jax": "x", "cpu_count": 2},
        "rows": [row(1, "naive (last value)", 0.02), row(1, "LSTM", 0.5), row(10, "naive (last value)", 0.2),
                 row(10, "linear", 0.01)],
        "histories": {"1:LSTM": {"train_loss": [1.0], "valid_loss": [1.0]}},
    }
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    args = script.argparse.Namespace(out=str(tmp_path), epochs=None, seed=42, merge=True)
    new_rows = [row(1, "naive (last value)", 0.99), row(1, "LSTM", 0.1), row(1, "minGRU", 0.3),
                row(10, "seq-to-seq minGRU", 0.4)]
    hist = {"train_loss": [2.0], "valid_loss": [2.0]}
    merged = script.merge(args, new_rows, {(1, "minGRU"): hist, (10, "seq-to-seq minGRU"): hist}, 3.0)

    # Trained rows replace their namesakes or go after the last row of their horizon; baselines stay.
    assert [(r["horizon"], r["model"], r["valid_mse"]) for r in merged["rows"]] == [
        (1, "naive (last value)", 0.02), (1, "LSTM", 0.1), (1, "minGRU", 0.3),
        (10, "naive (last value)", 0.2), (10, "linear", 0.01), (10, "seq-to-seq minGRU", 0.4)]
    assert set(merged["histories"]) == {"1:LSTM", "1:minGRU", "10:seq-to-seq minGRU"}
    assert json.loads((tmp_path / "results.json").read_text()) == merged
    assert "| 1 | minGRU |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    # A run with other settings is refused.
    args.seed = 1
    with __import__("pytest").raises(SystemExit, match="seed"):
        script.merge(args, new_rows, {}, 1.0)
