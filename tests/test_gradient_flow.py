"""The gradient-flow study's --quick path, its main in this process."""

import json
import pathlib

import numpy as np
import pytest

from helpers import load_script, script_config

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "gradient_flow.py"


@pytest.mark.slow
def test_quick_run_writes_its_table_plots_and_results(tmp_path, capsys):
    out = tmp_path / "gf"
    with script_config():
        code = load_gradient_flow().main(["--quick", "--models", "rnn-tanh,lstm", "--seed", "3", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert "|g_0|/|g_T-1| init" in printed.out and "not within 40" in printed.out

    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 3 and results["quick"] and results["settings"]["steps_T"] == 30
    rows = {r["model"]: r for r in results["models"]}
    assert list(rows) == ["rnn-tanh", "lstm"]
    for row in rows.values():
        init, trained = np.asarray(row["grad_norms_init"]), np.asarray(row["grad_norms_trained"])
        assert init.shape == trained.shape == (30,)
        assert np.all(np.isfinite(init)) and init[-1] > 0
        assert row["ratio_init"] == init[0] / init[-1]
        # The test MSE is recorded at step 0 and after every 20 steps.
        assert [s for s, _ in row["test_curve"]] == [0, 20, 40]
        assert row["final_test_mse"] == row["test_curve"][-1][1]
        assert row["learned"] == (row["final_test_mse"] < 0.01)
    # The spectrum of the recurrent matrix: one block for the simple RNN, four gates for the LSTM.
    assert list(rows["rnn-tanh"]["eigenvalues"]) == ["h"] and list(rows["lstm"]["eigenvalues"]) == list("ifgo")
    assert len(rows["lstm"]["eigenvalues"]["f"]["real"]) == 8
    for name in ("grad_norms.png", "spectra.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()  # the printed table, in Markdown ("|" escaped in its cells)
    assert "| model | learned? |" in table and "\\|g_0\\|/\\|g_T-1\\| init" in table and "| lstm |" in table


def load_gradient_flow():
    """The script, imported as ``python experiments/gradient_flow.py`` runs it: its folder on sys.path."""
    return load_script(SCRIPT, "gradient_flow")


def test_unknown_model_and_uneven_budget_are_rejected(capsys):
    module = load_gradient_flow()
    with pytest.raises(SystemExit):
        module.parse_args(["--quick", "--models", "transformer"])
    assert "unknown models ['transformer']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.parse_args(["--max-steps", "150", "--eval-every", "100"])
    assert "must be a multiple of --eval-every" in capsys.readouterr().err
    assert module.parse_args(["--quick"]).out == str(SCRIPT.parents[1] / "runs" / "gradient_flow-quick")
    assert module.parse_args([]).out == str(SCRIPT.parent / "results" / "gradient_flow")
