"""experiments/char_rnn.py --quick, its main in this process: it trains with truncated BPTT, evaluates, samples and writes."""

import json
import math
import pathlib

import pytest

from helpers import load_script, script_config

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "char_rnn.py"


@pytest.mark.slow
def test_char_rnn_quick(tmp_path, capsys):
    script = load_script(SCRIPT, "char_rnn_script")
    with script_config():
        code = script.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "unigram baseline" in printed.out and "sample at temperature 0.5" in printed.out

    out = json.loads((tmp_path / "results.json").read_text())
    for key in ("command", "seed", "settings", "unigram_valid_bits", "valid_bits", "train_bits", "curve",
                "samples", "wall_seconds", "process_cpu_seconds"):
        assert key in out
    settings = out["settings"]
    assert settings["quick"] is True
    assert out["curve"]["step"][-1] == settings["steps"]
    # The unigram cross-entropy lies between 0 and log2(V); the untrained-ish model is near log2(V).
    assert 0 < out["unigram_valid_bits"] < math.log2(settings["vocab_size"])
    bits = out["curve"]["train_bits"] + out["curve"]["valid_bits"]
    assert all(math.isfinite(b) and 0 < b < 2 * math.log2(settings["vocab_size"]) for b in bits)
    assert out["curve"]["train_bits"][0] != out["curve"]["train_bits"][-1]  # the params moved
    assert set(out["samples"]) == {"0.5", "0.8", "1.0"}
    for sample in out["samples"].values():
        assert sample.startswith(settings["prime"]) and len(sample) == len(settings["prime"]) + settings["sample_length"]
    md = (tmp_path / "results.md").read_text()
    assert "validation bits/char" in md and "temperature 1.0" in md
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
