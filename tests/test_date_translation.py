"""experiments/date_translation.py --quick, its main in this process; and the date generator of scanrnn.data.dates."""

import datetime
import json
import math
import pathlib

import numpy as np
import pytest

from helpers import load_script, script_config
from scanrnn.data import dates

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "date_translation.py"


def test_formats_round_trip_to_the_calendar():
    """Every format, read back by hand, gives the date it was written from (NumPy generator, 200 dates)."""
    rng = np.random.default_rng(0)
    calendar = dates.all_dates()
    assert len(calendar) == (dates.LAST - dates.FIRST).days + 1 and len(dates.FORMATS) >= 10
    months = {m[:3].lower(): i + 1 for i, m in enumerate(dates.MONTHS)}
    for index in rng.integers(0, len(calendar), 200):
        date = calendar[index]
        for fmt in dates.FORMAT_NAMES:
            for case in dates.CASES:
                text = dates.format_date(date, fmt, case, padded_day=bool(index % 2))
                assert len(text) <= dates.MAX_SOURCE_LENGTH
                words = text.lower().replace(",", " ").replace("/", " ").replace(".", " ").replace("-", " ").split()
                numbers = [w.rstrip("stndrh") for w in words if w[0].isdigit()]
                names = [months[w[:3]] for w in words if w[:3] in months]
                if fmt == "yyyymmdd":
                    y, m, d = int(text[:4]), int(text[4:6]), int(text[6:])
                elif fmt == "dd.mm.yy":
                    d, m, y = int(numbers[0]), int(numbers[1]), dates.parse_two_digit_year(int(numbers[2]))
                elif fmt == "mm/dd/yyyy":
                    m, d, y = (int(n) for n in numbers)
                elif fmt in ("yyyy/mm/dd",):
                    y, m, d = (int(n) for n in numbers)
                elif names:
                    m, (d, y) = names[-1], sorted(int(n) for n in numbers)
                else:
                    d, m, y = (int(n) for n in numbers)
                assert datetime.date(y, m, d) == date, (fmt, text)
                if "Weekday" in fmt or "Wkd" in fmt:
                    assert dates.DAYS[date.weekday()][:3].lower() in text.lower()


def test_split_holds_dates_out_and_encoding_round_trips():
    train, test = dates.split_dates(np.random.default_rng(1), 0.1)
    assert not set(train) & set(test) and len(train) + len(test) == len(dates.all_dates())
    examples = dates.make_examples(test, 50, np.random.default_rng(2))
    assert set(examples.iso) <= {d.isoformat() for d in test}
    for i in range(50):
        n = examples.src_length[i]
        text = "".join(dates.SOURCE_CHARS[c - 1] for c in examples.src[i, :n])
        assert text == examples.text[i] and np.all(examples.src[i, n:] == 0)
        assert dates.decode_target(examples.tgt[i]) == examples.iso[i] and examples.tgt[i, -1] == dates.END
    with pytest.raises(ValueError, match="fmt must be one of"):
        dates.format_date(datetime.date(2026, 11, 22), "%d/%m")
    with pytest.raises(ValueError, match="held_out must lie in"):
        dates.split_dates(np.random.default_rng(0), 1.5)


@pytest.mark.slow
def test_date_translation_quick(tmp_path, capsys):
    script = load_script(SCRIPT, "date_translation_script")
    with script_config():
        code = script.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "greedy exact" in printed.out and "additive" in printed.out

    out = json.loads((tmp_path / "results.json").read_text())
    for key in ("command", "seed", "settings", "models", "curves", "wall_seconds", "process_cpu_seconds"):
        assert key in out
    assert out["settings"]["quick"] is True
    assert set(out["models"]) == {"no attention", "additive", "multiplicative (general)"}
    for name, model in out["models"].items():
        for key in ("greedy_accuracy", "beam_accuracy"):
            assert 0.0 <= model[key] <= 1.0
        assert model["params"] > 0 and sum(f["examples"] for f in model["per_format"].values()) == out["settings"]["test"]
        curve = out["curves"][name]
        assert curve["step"][-1] == out["settings"]["steps"]
        assert all(math.isfinite(v) and v > 0 for v in curve["train_loss"])
        assert curve["train_loss"][-1] < curve["train_loss"][0]  # training moved the params
    assert "| model (held out) |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
