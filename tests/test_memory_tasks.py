"""The long-memory tasks (scanrnn.data.memory) against per-example loops over their definitions,
and experiments/long_memory.py: its pieces and its --quick run, in this process."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_script, script_config
from scanrnn.data.memory import MemoryTask, copy_memoryless_loss, copy_task, selective_copy

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "long_memory.py"


def tokens_of(x):
    """The token ids of one-hot inputs, after checking that they are one-hot."""
    assert set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x.sum(axis=-1), 1.0)
    return x.argmax(axis=-1)


# --------------------------------------------------------------------------
# The copy task.


@pytest.mark.parametrize("delay, num_symbols, copy_length", [(30, 8, 10), (1, 3, 2), (5, 1, 4)])
def test_copy_task_is_the_papers_layout(delay, num_symbols, copy_length):
    n = 300
    task = copy_task(n, delay, num_symbols=num_symbols, copy_length=copy_length, rng=1)
    steps = delay + 2 * copy_length
    assert isinstance(task, MemoryTask)
    assert task.x.shape == (n, steps, num_symbols + 2) and task.x.dtype == np.float32
    assert task.y.shape == (n, steps) and task.y.dtype == np.int32
    assert task.scored.shape == (n, steps) and task.scored.dtype == bool
    tokens = tokens_of(task.x)
    blank, delimiter = num_symbols, num_symbols + 1
    for i in range(n):  # the definition, written out for one example
        symbols = [int(s) for s in tokens[i, :copy_length]]
        assert all(0 <= s < num_symbols for s in symbols)
        expected_input = symbols + [blank] * (delay - 1) + [delimiter] + [blank] * copy_length
        expected_target = [blank] * (delay + copy_length) + symbols
        assert tokens[i].tolist() == expected_input
        assert task.y[i].tolist() == expected_target
        assert task.scored[i].tolist() == [False] * (delay + copy_length) + [True] * copy_length
    # Every symbol is drawn, and only symbols are to be recalled.
    assert set(np.unique(tokens[:, :copy_length])) == set(range(num_symbols))
    assert set(np.unique(task.y[task.scored])) == set(range(num_symbols))


def test_copy_task_defaults_are_arjovsky_et_al():
    """10 symbols out of 8, T + 20 steps, 10 input categories and 9 output classes (a_0..a_9)."""
    task = copy_task(4, 100, rng=0)
    assert task.x.shape == (4, 120, 10)
    assert task.y.max() <= 8 and task.scored.sum(axis=1).tolist() == [10] * 4
    assert tokens_of(task.x)[:, 109].tolist() == [9] * 4  # the delimiter a_9 after T - 1 blanks


def test_memoryless_loss_is_the_all_step_cross_entropy_of_blanks_and_uniform_guesses():
    delay, num_symbols, copy_length = 37, 5, 3
    task = copy_task(50, delay, num_symbols=num_symbols, copy_length=copy_length, rng=2)
    # The memoryless predictor: the blank with certainty before the delimiter's answers, uniform after.
    probs = np.zeros(task.y.shape + (num_symbols + 1,))
    probs[~task.scored, num_symbols] = 1.0
    probs[task.scored, :num_symbols] = 1.0 / num_symbols
    picked = np.take_along_axis(probs, task.y[..., None], axis=-1)[..., 0]
    cross_entropy = -np.log(picked).mean()
    assert cross_entropy == pytest.approx(copy_memoryless_loss(delay, num_symbols=num_symbols, copy_length=copy_length))
    assert copy_memoryless_loss(100) == pytest.approx(10 * math.log(8) / 120)


# --------------------------------------------------------------------------
# Selective copying.


@pytest.mark.parametrize("length, num_symbols, num_tokens", [(40, 8, 16), (12, 4, 3), (8, 2, 4)])
def test_selective_copy_outputs_the_data_tokens_in_order(length, num_symbols, num_tokens):
    n = 300
    task = selective_copy(n, length, num_symbols=num_symbols, num_tokens=num_tokens, rng=4)
    assert task.x.shape == (n, length, num_symbols + 2) and task.x.dtype == np.float32
    assert task.y.shape == (n, length) and task.y.dtype == np.int32 and task.scored.dtype == bool
    tokens = tokens_of(task.x)
    blank, marker, free = num_symbols, num_symbols + 1, length - num_tokens
    for i in range(n):
        data = [(t, int(tok)) for t, tok in enumerate(tokens[i]) if tok < num_symbols]
        assert len(data) == num_tokens and all(t < free for t, _ in data)
        assert all(tok == blank for t, tok in enumerate(tokens[i, :free]) if t not in dict(data))
        assert tokens[i, free:].tolist() == [marker] * num_tokens
        assert task.y[i].tolist() == [blank] * free + [tok for _, tok in data]
        assert task.scored[i].tolist() == [False] * free + [True] * num_tokens


def test_selective_copy_positions_are_uniform_and_vary():
    n, length, num_tokens = 6000, 12, 3
    task = selective_copy(n, length, num_symbols=4, num_tokens=num_tokens, rng=5)
    is_data = tokens_of(task.x)[:, : length - num_tokens] < 4
    # Each of the 9 free steps holds a symbol with probability 3/9.
    np.testing.assert_allclose(is_data.mean(axis=0), num_tokens / (length - num_tokens), atol=0.025)
    # All C(9, 3) = 84 layouts occur: the spacing is not fixed, unlike the copy task's.
    assert len({tuple(row) for row in is_data}) == math.comb(length - num_tokens, num_tokens)
    # The symbols are uniform too.
    counts = np.bincount(task.y[task.scored], minlength=4) / task.scored.sum()
    np.testing.assert_allclose(counts, 0.25, atol=0.02)


def test_selective_copy_at_its_shortest_has_no_noise():
    task = selective_copy(5, 8, num_symbols=3, num_tokens=4, rng=0)
    tokens = tokens_of(task.x)
    assert (tokens[:, :4] < 3).all()
    np.testing.assert_array_equal(task.y[:, 4:], tokens[:, :4])


# --------------------------------------------------------------------------
# Both: seeds and bad arguments.


@pytest.mark.parametrize("make", [lambda rng: copy_task(3, 6, rng=rng), lambda rng: selective_copy(3, 40, rng=rng)])
def test_seed_and_generator_give_the_same_draws(make):
    a, b, c = make(7), make(np.random.default_rng(7)), make(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: copy_task(0, 5, rng=0), "n must be a positive int, got 0"),
        (lambda: copy_task(2, 0, rng=0), "delay must be a positive int, got 0"),
        (lambda: copy_task(2, 5, num_symbols=0, rng=0), "num_symbols must be a positive int, got 0"),
        (lambda: copy_task(2, 5, copy_length=2.0, rng=0), "copy_length must be a positive int, got 2.0"),
        (lambda: copy_task(2, True, rng=0), "delay must be a positive int, got True"),
        (lambda: copy_task(2, 5, rng="seed"), "rng must be a numpy.random.Generator or an int seed, got 'seed'"),
        (lambda: copy_memoryless_loss(-3), "delay must be a positive int, got -3"),
        (lambda: selective_copy(2, 31, rng=0), "length must be an int of at least 32, got 31"),
        (lambda: selective_copy(2, 10, num_tokens=0, rng=0), "num_tokens must be a positive int, got 0"),
        (lambda: selective_copy(2, 10, num_tokens=2, num_symbols=-1, rng=0), "num_symbols must be a positive int, got -1"),
        (lambda: selective_copy(-1, 40, rng=0), "n must be a positive int, got -1"),
    ],
)
def test_bad_arguments_raise_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------
# The study.


def load_study():
    """The script, imported as ``python experiments/long_memory.py`` runs it: its folder on sys.path."""
    return load_script(SCRIPT, "long_memory")


@pytest.mark.slow
def test_loss_and_metrics_count_only_the_scored_steps():
    study = load_study()
    # Two sequences of 3 steps, 3 classes: the scored steps are the last two of the first, the last of the second.
    y = jnp.asarray([[2, 0, 1], [2, 2, 0]])
    scored = jnp.asarray([[False, True, True], [False, False, True]])
    predicted = jnp.asarray([[0, 0, 2], [1, 1, 0]])  # right at 2 of the 3 scored steps, wrong where unscored
    logits = 5.0 * jax.nn.one_hot(predicted, 3)
    correct, ce_sum, count = study.batch_sums("copy", logits, y, scored)
    assert (float(correct), float(count)) == (2.0, 3.0)
    log_p = jax.nn.log_softmax(logits)
    expected_ce = -(log_p[0, 1, 0] + log_p[0, 2, 1] + log_p[1, 2, 0])
    assert float(ce_sum) == pytest.approx(float(expected_ce))
    assert float(study.batch_loss("selective", logits, y, scored)) == pytest.approx(float(expected_ce) / 3)
    # The adding problem: the squared error of the last step's output.
    outputs = jnp.asarray([[[0.0], [9.0], [1.5]], [[7.0], [7.0], [0.25]]])
    target = jnp.asarray([[1.0], [0.75]])
    assert float(study.batch_loss("adding", outputs, target, None)) == pytest.approx((0.25 + 0.25) / 2)
    assert [float(v) for v in study.batch_sums("adding", outputs, target, None)] == [0.5, 0.0, 2.0]
    assert study.solved("copy", 0.99) and not study.solved("copy", 0.98)
    assert study.solved("adding", 0.009) and not study.solved("adding", 0.01)


@pytest.mark.slow
def test_parameter_counts():
    study = load_study()
    # The LSTM's by hand: 4H(I + H) + 4H (one bias per gate), then the readout; the width is the nearest match.
    width = study.match_width("lstm", 3000, 10, 9)
    counts = {w: study.param_count("lstm", w, 10, 9) for w in (width - 1, width, width + 1)}
    assert counts[width] == 4 * width * (10 + width) + 4 * width + 9 * width + 9
    assert abs(counts[width] - 3000) == min(abs(c - 3000) for c in counts.values())
    params = study.build("lstm", width, 9).init(jax.random.key(0), 10)
    assert study.count_params(params) == counts[width]
    # A complex parameter counts twice.
    assert study.count_params((jnp.zeros(3, jnp.complex64), jnp.zeros((2, 2)))) == 10
    # The pointwise layer between layers keeps the carry contract of a stateless layer.
    layer = study.pointwise(jnp.tanh)
    ys, carry = layer.apply(layer.init(jax.random.key(0), 3), jnp.ones((2, 3)), carry=())
    assert carry == () and float(ys[0, 0]) == pytest.approx(math.tanh(1.0))


@pytest.mark.slow
def test_every_model_is_matched_in_parameter_count_on_every_task():
    study = load_study()
    args = study.parse_args([])  # the default study: every model, every task, 10,000 params
    assert args.models == list(study.MODELS) and args.tasks == list(study.TASKS) and args.params == 10_000
    widths = study.match_widths(args.tasks, args.models, args)
    for task in args.tasks:
        shape = study.task_shape(task, args)
        for name in args.models:
            width = widths[task][name]
            assert width == study.match_width(name, args.params, *shape), (task, name)
            count = study.param_count(name, width, *shape)
            assert abs(count - args.params) <= 0.1 * args.params, (task, name, width, count)
    # The copy tasks share their inputs and outputs, so their widths; the adding problem's 2 inputs need others.
    assert widths["copy"] == widths["selective"]
    assert (widths["copy"]["min_gru"], widths["adding"]["min_gru"]) == (322, 1428)
    # The count read off the core is that of the whole model's params, for each way of wrapping a core.
    for name in ("gru", "lru", "mamba"):
        params = study.build(name, 6, 3).init(jax.random.key(0), 5)
        assert study.count_params(params) == study.param_count(name, 6, 5, 3), name


def test_timing_only_rows_are_labelled_and_left_out_of_the_claim():
    study = load_study()
    row = dict(task="copy", model="lru", width=47, params=9973, batch=32, steps=700, ms_per_step=15.0,
               train_seconds=10.5, compile_seconds=8.0, timing_only=False, metric=0.995, solved=True,
               steps_to_solve=700)
    rows = [row, {**row, "model": "lstm", "solved": False, "steps_to_solve": None, "metric": 0.12},
            *[{**row, "model": m, "length": 4000, "batch": 8, "steps": 3, "timing_only": True, "metric": None,
               "solved": False, "steps_to_solve": None} for m in ("lru", "lstm")]]
    rows[0]["length"] = rows[1]["length"] = 100
    lines, header = study.result_table(rows)
    assert len(study.ALIGN) == len(header) and header[3:6] == ["width", "params", "batch"]
    assert lines[0][3:8] == [47, "9,973", 32, "accuracy 0.9950", "700"]
    assert lines[2][3:9] == [47, "9,973", 8, "timing only", "-", 3]
    claim = study.claim(rows)
    assert any("T = 100: the LRU solved at step 700" in line for line in claim)
    assert not any("T = 4,000" in line for line in claim)
    settings = dict(lengths=[100, 4000], seconds=[15.0, None], batch=[32, 8], timing_steps=3)
    assert study.budget_text(settings) == (
        "15 s of training at T = 100 (batches of 32); timing only at T = 4,000 (batches of 8): 3 steps, too few "
        "to learn anything, so those rows give the time per step and no test metric")
    assert study.width_text({"copy": 44, "selective": 44, "adding": 48}, ["copy", "selective", "adding"]) == (
        "44 on copy and selective, 48 on adding")


def test_command_line_is_checked(capsys):
    study = load_study()
    for argv, message in [
        (["--models", "transformer"], "unknown models ['transformer']"),
        (["--tasks", "copy,sorting"], "unknown tasks ['sorting']"),
        (["--lengths", "100,200", "--seconds", "1,2,3"], "--seconds needs one value per length (2), got 3"),
        (["--lengths", "100,200", "--seconds", "1", "--batch", "8,4,2"], "--batch needs one value per length (2)"),
        (["--lengths", "20", "--seconds", "1", "--batch", "4"], "every length must be at least 32"),
        (["--lengths", "20", "--seconds", "1", "--batch", "4", "--tasks", "copy"], "every length must be at least 21"),
        (["--seconds", "5,0,timing"], "budget of --seconds must be positive (or 'timing'), got [5.0, 0.0, None]"),
        (["--seconds", "5,soon,5"], "--seconds numbers or 'timing'"),
        (["--batch", "32,0,8"], "every --batch must be at least 1, got [32, 0, 8]"),
    ]:
        with pytest.raises(SystemExit):
            study.parse_args(argv)
        assert message in capsys.readouterr().err
    args = study.parse_args(["--lengths", "50,60", "--seconds", "3", "--batch", "4", "--tasks", "copy"])
    assert args.seconds == [3.0, 3.0] and args.batch == [4, 4] and args.models == list(study.MODELS)
    default = study.parse_args([])
    assert default.out == str(SCRIPT.parent / "results" / "long_memory")
    # The default budget: training at T = 100 and 1,000, smaller batches at the longer lengths, timing at 4,000.
    assert default.stages == [study.Stage(100, 32, 15.0), study.Stage(1000, 16, 7.0), study.Stage(4000, 8, None)]
    quick = study.parse_args(["--quick"])
    assert quick.out == str(SCRIPT.parents[1] / "runs" / "long_memory-quick") and quick.models == ["lstm", "lru"]
    assert quick.stages == [study.Stage(24, 8, 0.5), study.Stage(32, 4, None)]


@pytest.mark.slow
def test_quick_run_writes_its_table_plots_and_results(tmp_path, capsys):
    out = tmp_path / "lm"
    models = "lstm,min_gru"
    with script_config():
        code = load_study().main(["--quick", "--models", models, "--seed", "3", "--seconds", "0.3,timing",
                                  "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert "solved" in printed.out and "timing only" in printed.out and "ms/step" in printed.out
    assert "widths for copy, selective (6 inputs, 5 outputs)" in printed.out
    assert "widths for adding (2 inputs, 1 outputs)" in printed.out

    results = json.loads((out / "results.json").read_text())
    assert results["quick"] and "--quick" in results["command"] and results["settings"]["seed"] == 3
    settings = results["settings"]
    assert (settings["lengths"], settings["seconds"], settings["batch"]) == ([24, 32], [0.3, None], [8, 4])
    rows = results["rows"]
    assert [(r["task"], r["length"], r["model"]) for r in rows] == [
        (t, length, m) for t in ("copy", "selective", "adding") for length in (24, 32) for m in models.split(",")]
    for r in rows:
        # Each model's width is searched for its task's inputs and outputs, and recorded per task.
        assert r["width"] == results["models"][r["model"]]["widths"][r["task"]]
        assert r["params"] == results["models"][r["model"]]["params"][r["task"]]
        assert abs(r["params"] - settings["params"]) <= 0.1 * settings["params"], r
        steps = [s for s, _ in r["curve"]]
        assert steps[0] == 0 and steps[-1] == r["steps"] and steps == sorted(steps)
        assert len(r["train_loss"]) == r["steps"] and r["batch"] == (8 if r["length"] == 24 else 4)
        if r["timing_only"]:  # T = 32: a few steps for the time per step, no test metric
            assert r["length"] == 32 and r["steps"] == 3 and r["metric"] is None and not r["solved"]
            assert r["budget_seconds"] is None and r["ms_per_step"] > 0
            continue
        assert r["length"] == 24 and r["steps"] >= 1 and r["budget_seconds"] == 0.3
        assert r["solved"] == (r["steps_to_solve"] is not None)
        if r["task"] == "adding":
            assert 0 <= r["metric"] < 10 and r["cross_entropy"] is None
        else:
            assert 0 <= r["metric"] <= 1 and r["cross_entropy"] > 0
    widths = results["models"]["min_gru"]["widths"]
    assert widths["copy"] == widths["selective"] != widths["adding"]
    # The copy tasks share one compiled program per model and length: selective copying reuses copy's.
    assert all(r["compile_seconds"] > 0 for r in rows if r["task"] != "selective")
    assert all(r["compile_seconds"] == 0 for r in rows if r["task"] == "selective")
    assert results["baselines"] == {"copy": 0.25, "selective": 0.25, "adding": pytest.approx(1 / 6)}
    assert results["plots"] == ["copy.png", "selective.png", "adding.png"]
    for name in results["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| task | T | model | width | params | batch |" in table and "| adding | 24 | min_gru |" in table
    assert f"| adding | 24 | min_gru | {widths['adding']} |" in table
    assert "| copy | 32 | lstm |" in table and "| timing only | - | 3 |" in table
    assert ("Budget per (task, length, model): 0.3 s of training at T = 24 (batches of 8); timing only at T = 32 "
            "(batches of 4): 3 steps") in table
