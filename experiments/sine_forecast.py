"""The second seed's forecasting study: every model on the two-sine series, one and ten steps ahead.

The setup is the seed's (its Keras code): ``generate_time_series`` with 50
input steps, 10,000 series split 7,000 / 2,000 / 1,000 in order, seed 42,
20 epochs of Adam with minibatches of 32 and the MSE loss. Every trained
model gets the same optimiser: Adam with a cosine decay of the learning
rate from 5e-3 to 5 % of it over the run (the main job's schedule).

One step ahead (series of 51 steps; predict step 51 from the first 50): the
naive forecast (the last value), a linear model of the window, SimpleRNN(1),
the deep RNN (20, 20, 1), the deep RNN with a dense output, LSTM, GRU, the
layer-normalised RNN, minGRU and minLSTM (Feng et al. 2024), a
bidirectional model, and the Jordan, Elman and NARX networks.

Ten steps ahead (series of 60 steps; predict steps 51-60): the one-step deep
RNN used iteratively, the naive forecast, a linear model, a
sequence-to-vector RNN, sequence-to-sequence models (a forecast of the next
10 values at every step) with SimpleRNN, LSTM, GRU, layer-normalised, minGRU
and minLSTM cells, a strided causal convolution in front of a GRU, and a WaveNet-style
stack of dilated causal convolutions (van den Oord et al. 2016).

Every model's validation and test MSE is that of the forecast made after the
whole 50-step window; sequence-to-sequence models also report the MSE over
all their steps (the loss they are trained on). Models are entries of
``ONE_STEP`` and ``TEN_STEPS``; add a :class:`Spec` to add a row.

    python experiments/sine_forecast.py            # the full study, under 15 minutes on 2 CPU cores
    python experiments/sine_forecast.py --quick    # a few models on 640 series, under a minute
    python experiments/sine_forecast.py --only minGRU,minLSTM --merge   # (re)run some rows of the full study

``--merge`` adds the rows it trains to the results already in ``--out``
(replacing rows of the same name) and redraws the learning curves from the
merged histories; the forecast plots keep the models of the run that drew them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Callable, NamedTuple, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn import data, train  # noqa: E402
from scanrnn.classic import elman, jordan, narx  # noqa: E402
from scanrnn.conv import causal_conv  # noqa: E402
from benchmarks.common import command_line, default_out, markdown_table, write_results  # noqa: E402

N_IN = 50  # input steps
AHEAD = 10  # the long horizon
SOURCE = "Géron (2019), Hands-On Machine Learning, 2nd ed., ch. 15"


class Spec(NamedTuple):
    """One model of the study.

    ``times`` is ``None`` for a model whose output is the forecast itself
    (``[horizon]``), or, for a model with an output per step ``[T', horizon]``,
    the input step each output is aligned with: output ``o`` is trained to
    forecast the ``horizon`` values after input step ``times[o]``. The
    forecast that is scored is always the last output's (after step 49).
    """

    name: str
    horizon: int
    build: Callable[[], sr.Layer]
    times: Optional[np.ndarray] = None
    keras: Optional[float] = None  # the MSE the source reports for the Keras model, if any


def every_step():
    return np.arange(N_IN)


def two_layers(cell, features, *, last=False):
    """``cell(20)`` twice, then a dense layer; many-to-one when ``last``."""
    return sr.serial(
        sr.recurrent(cell(20)), sr.recurrent(cell(20), return_sequences=not last), sr.dense(features)
    )


def parallel_min_gru(hidden_size):
    """``min_gru`` run as the associative scan over time of Feng et al. (2024), as in the recorded study."""
    return sr.min_gru(hidden_size, mode="associative")


def parallel_min_lstm(hidden_size):
    """``min_lstm`` run as the associative scan over time, as in the recorded study."""
    return sr.min_lstm(hidden_size, mode="associative")


def wavenet(features):
    dilated = [causal_conv(20, 2, dilation=d, activation="relu") for d in (1, 2, 4, 8) * 2]
    return sr.serial(*dilated, causal_conv(features, 1))


ONE_STEP = [
    # A valid convolution whose kernel spans the whole window is one affine map of it.
    Spec("linear", 1, lambda: causal_conv(1, N_IN, padding="valid"), np.array([N_IN - 1]), 0.004),
    Spec("SimpleRNN(1)", 1, lambda: sr.recurrent(sr.simple_rnn(1), return_sequences=False), None, 0.014),
    Spec("deep RNN (20, 20, 1)", 1, lambda: sr.serial(
        sr.recurrent(sr.simple_rnn(20)), sr.recurrent(sr.simple_rnn(20)),
        sr.recurrent(sr.simple_rnn(1), return_sequences=False)), None, 0.003),
    Spec("deep RNN + dense", 1, lambda: two_layers(sr.simple_rnn, 1, last=True)),
    Spec("LSTM", 1, lambda: two_layers(sr.lstm, 1, last=True)),
    Spec("GRU", 1, lambda: two_layers(sr.gru, 1, last=True)),
    Spec("LN-RNN", 1, lambda: two_layers(sr.layer_norm_rnn, 1, last=True)),
    # Feng et al. (2024): gates read only the input, so each layer is a parallel scan over time.
    Spec("minGRU", 1, lambda: two_layers(parallel_min_gru, 1, last=True)),
    Spec("minLSTM", 1, lambda: two_layers(parallel_min_lstm, 1, last=True)),
    Spec("bidirectional GRU + GRU", 1, lambda: sr.serial(
        sr.bidirectional(sr.gru(20)), sr.recurrent(sr.gru(20), return_sequences=False), sr.dense(1))),
    # The three networks' outputs are fed back, so each output is trained to
    # forecast the next value (outputs at every step).
    Spec("Jordan (20, alpha 0.5)", 1, lambda: sr.recurrent(jordan(20, 1, alpha=0.5)), every_step()),
    Spec("Elman (20)", 1, lambda: sr.recurrent(elman(20, 1)), every_step()),
    Spec("NARX (20, k 5)", 1, lambda: sr.recurrent(narx(20, 1, k=5)), every_step()),
]
ONE_STEP_FOR_ITERATION = "deep RNN + dense"

TEN_STEPS = [
    Spec("linear", AHEAD, lambda: causal_conv(AHEAD, N_IN, padding="valid"), np.array([N_IN - 1]), 0.0188),
    Spec("seq-to-vector RNN", AHEAD, lambda: two_layers(sr.simple_rnn, AHEAD, last=True), None, 0.008),
    Spec("seq-to-seq SimpleRNN", AHEAD, lambda: two_layers(sr.simple_rnn, AHEAD), every_step(), 0.006),
    Spec("seq-to-seq LSTM", AHEAD, lambda: two_layers(sr.lstm, AHEAD), every_step()),
    Spec("seq-to-seq GRU", AHEAD, lambda: two_layers(sr.gru, AHEAD), every_step()),
    Spec("seq-to-seq LN-RNN", AHEAD, lambda: two_layers(sr.layer_norm_rnn, AHEAD), every_step()),
    Spec("seq-to-seq minGRU", AHEAD, lambda: two_layers(parallel_min_gru, AHEAD), every_step()),
    Spec("seq-to-seq minLSTM", AHEAD, lambda: two_layers(parallel_min_lstm, AHEAD), every_step()),
    # The seed's Conv1D(20, 4, strides=2, padding="valid"): output o reads inputs 2o .. 2o + 3.
    Spec("conv(20, 4, stride 2) + 2 GRU", AHEAD, lambda: sr.serial(
        causal_conv(20, 4, stride=2, padding="valid"), sr.recurrent(sr.gru(20)), sr.recurrent(sr.gru(20)),
        sr.dense(AHEAD)), 3 + 2 * np.arange((N_IN - 4) // 2 + 1)),
    Spec("WaveNet (dilations 1-8, twice)", AHEAD, lambda: wavenet(AHEAD), every_step()),
]
KERAS_NAIVE = {1: 0.020, AHEAD: 0.223}
KERAS_ITERATIVE = 0.029


# --------------------------------------------------------------------------
# Data.


class Split(NamedTuple):
    series: np.ndarray  # [N, L, 1]
    x: np.ndarray  # [N, 50, 1]
    truth: np.ndarray  # [N, horizon] the values after the window


def make_splits(n_series: int, horizon: int, seed: int):
    """Series of ``50 + horizon`` steps split 70 / 20 / 10 % in order (7,000 / 2,000 / 1,000)."""
    series = data.generate_time_series(n_series, N_IN + horizon, rng=seed)
    parts = data.split(series, sizes=(0.7, 0.2, 0.1))
    return [Split(s, s[:, :N_IN], s[:, N_IN:, 0]) for s in parts]


def targets(split: Split, spec: Spec) -> np.ndarray:
    """``[N, horizon]`` for a vector model; ``[N, T', horizon]`` for one with outputs at ``times``."""
    if spec.times is None:
        return split.truth
    index = spec.times[:, None] + 1 + np.arange(spec.horizon)[None, :]  # [T', horizon]
    return split.series[:, index, 0]


def forecast(spec: Spec, pred: np.ndarray) -> np.ndarray:
    return pred if spec.times is None else pred[:, -1]


def mse(a, b) -> float:
    return float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --------------------------------------------------------------------------
# Training and scoring.


def count_params(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def run_model(spec: Spec, splits, *, epochs: int, lr: float, seed: int, verbose: bool):
    """Train one model; return its params, history and the table row."""
    train_split, valid_split, test_split = splits
    model = spec.build()
    params = model.init(jax.random.key(seed), 1)
    steps = epochs * math.ceil(len(train_split.x) / 32)
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.05)
    start = time.perf_counter()
    params, history = train.fit(
        model, params, optax.adam(schedule), train.mse,
        train.Batch(train_split.x, targets(train_split, spec)),
        train.Batch(valid_split.x, targets(valid_split, spec)),
        epochs=epochs, batch_size=32, seed=seed, verbose=verbose,
    )
    seconds = time.perf_counter() - start
    row = {"params": count_params(params), "seconds": seconds}
    preds = {}
    # One compiled prediction for the validation and test sets together.
    both = np.asarray(predict_fn(model)(params, np.concatenate([valid_split.x, test_split.x])))
    for part, split, pred in (("valid", valid_split, both[: len(valid_split.x)]),
                              ("test", test_split, both[len(valid_split.x):])):
        preds[part] = forecast(spec, pred)
        row[f"{part}_mse"] = mse(preds[part], split.truth)
        if spec.times is not None and len(spec.times) > 1:
            row[f"{part}_mse_all_steps"] = mse(pred, targets(split, spec))
    return model, params, history, row, preds


def predict_fn(model):
    """``(params, x [N, T, 1], length=None) -> [N, ...]``, jit-compiled once per model and shape."""
    return jax.jit(lambda p, x, n=None: train.predict_batch(model, p, x, n))


def iterate_one_step(model, params, x: np.ndarray, horizon: int) -> np.ndarray:
    """Forecast ``horizon`` values by feeding each one-step forecast back as the next input.

    The window grows by one step each time; it lives in a buffer of the
    final size whose valid prefix is given as ``length``, so one compiled
    program serves every step (the recurrent layers ignore the steps past
    ``length``).
    """
    n, t, _ = x.shape
    window = np.zeros((n, t + horizon - 1, 1), x.dtype)
    window[:, :t] = x
    f = predict_fn(model)
    out = []
    for i in range(horizon):
        nxt = np.asarray(f(params, window, np.full(n, t + i, np.int32)))  # [N, 1]
        out.append(nxt[:, 0])
        if i + 1 < horizon:
            window[:, t + i] = nxt
    return np.stack(out, axis=1)


# --quick trains a few models: linear, the one-step model that is iterated and
# a convolution stack (--only picks others).
QUICK = ("linear", ONE_STEP_FOR_ITERATION, "WaveNet")


def selected(name: str, args) -> bool:
    names = args.only.split(",") if args.only else QUICK if args.quick else None
    return names is None or any(s.lower() in name.lower() for s in names)


def run(args) -> dict:
    t0 = time.perf_counter()
    n_series = 640 if args.quick else 10_000  # quick: 448 / 128 / 64, whole minibatches of 32
    epochs = args.epochs or (2 if args.quick else 20)
    splits = {1: make_splits(n_series, 1, args.seed), AHEAD: make_splits(n_series, AHEAD, args.seed)}
    specs = {1: ONE_STEP, AHEAD: TEN_STEPS}
    rows, histories, forecasts = [], {}, {}

    def add(horizon, name, row, preds, keras=None):
        row = {"horizon": horizon, "model": name, "keras_reported": keras, **row}
        rows.append(row)
        forecasts[(horizon, name)] = preds["test"]
        print(format_row(row), flush=True)

    print(header(), flush=True)
    trained = {}
    for horizon in (1, AHEAD):
        valid_split, test_split = splits[horizon][1], splits[horizon][2]
        # The naive forecast: the last value of the window, repeated.
        naive = {p: np.repeat(s.x[:, -1], horizon, axis=1) for p, s in (("valid", valid_split), ("test", test_split))}
        add(horizon, "naive (last value)", {
            "params": 0, "seconds": 0.0,
            "valid_mse": mse(naive["valid"], valid_split.truth), "test_mse": mse(naive["test"], test_split.truth),
        }, naive, KERAS_NAIVE[horizon])
        if horizon == AHEAD and ONE_STEP_FOR_ITERATION in trained:
            model, params = trained[ONE_STEP_FOR_ITERATION]
            start = time.perf_counter()
            both = iterate_one_step(model, params, np.concatenate([valid_split.x, test_split.x]), AHEAD)
            preds = {"valid": both[: len(valid_split.x)], "test": both[len(valid_split.x):]}
            add(horizon, f"iterated one-step ({ONE_STEP_FOR_ITERATION})", {
                "params": count_params(params), "seconds": time.perf_counter() - start,
                "valid_mse": mse(preds["valid"], valid_split.truth), "test_mse": mse(preds["test"], test_split.truth),
            }, preds, KERAS_ITERATIVE)
        for spec in specs[horizon]:
            if not selected(spec.name, args):
                continue
            model, params, history, row, preds = run_model(
                spec, splits[horizon], epochs=epochs, lr=args.lr, seed=args.seed, verbose=args.verbose
            )
            trained[spec.name if horizon == 1 else f"{spec.name} (10)"] = (model, params)
            histories[(horizon, spec.name)] = history
            add(horizon, spec.name, row, preds, spec.keras)

    wall = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    if args.merge:
        return merge(args, rows, histories, wall)
    plot_learning_curves(histories, os.path.join(args.out, "learning_curves.png"))
    for horizon, name in ((1, "forecasts_one_step.png"), (AHEAD, "forecasts_ten_steps.png")):
        plot_forecasts(splits[horizon][2], {k[1]: v for k, v in forecasts.items() if k[0] == horizon},
                       os.path.join(args.out, name), horizon)
    settings = {
        "n_series": n_series, "split": [len(s.x) for s in splits[1]], "input_steps": N_IN, "epochs": epochs,
        "batch_size": 32, "optimizer": f"adam, cosine decay of the learning rate from {args.lr} to 5% of it",
        "loss": "mse (over all outputs of a sequence-to-sequence model)", "seed": args.seed,
    }
    result = {
        "command": command_line(__file__, args.argv),
        "settings": settings,
        "wall_seconds": wall,
        "environment": {"jax": jax.__version__, "optax": optax.__version__, "python": platform.python_version(),
                        "cpu_count": os.cpu_count()},
        "keras_source": SOURCE,
        "rows": rows,
        "histories": {f"{h}:{name}": hist for (h, name), hist in histories.items()},
    }
    write_results(args.out, result, markdown(result))
    print(f"wall time {wall:.0f} s; results in {args.out}")
    return result


def merge(args, rows, histories, wall) -> dict:
    """Fold this run's trained rows into ``args.out/results.json`` and rewrite the table."""
    path = os.path.join(args.out, "results.json")
    if not os.path.exists(path):
        raise SystemExit(f"--merge needs an earlier full run's {path}")
    with open(path) as f:
        result = json.load(f)
    command = command_line(__file__, getattr(args, "argv", None))
    if result["settings"]["epochs"] != (args.epochs or 20) or result["settings"]["seed"] != args.seed:
        raise SystemExit("--merge: the epochs and seed must be those of the results it merges into")
    new = {(r["horizon"], r["model"]): r for r in rows if r["params"] > 0 and not r["model"].startswith("iterated")}
    count = len(new)
    merged = [new.pop((r["horizon"], r["model"]), r) for r in result["rows"]]
    for key, row in new.items():  # new models go after the last row of their horizon
        last = max(i for i, r in enumerate(merged) if r["horizon"] == key[0])
        merged.insert(last + 1, row)
    result["rows"] = merged
    result["histories"].update({f"{h}:{name}": hist for (h, name), hist in histories.items()})
    result.setdefault("merged_runs", []).append({"command": command, "wall_seconds": wall})
    write_results(args.out, result, markdown(result))
    plot_learning_curves(
        {(int(k.split(":", 1)[0]), k.split(":", 1)[1]): v for k, v in result["histories"].items()},
        os.path.join(args.out, "learning_curves.png"),
    )
    print(f"merged {count} trained rows into {path} ({wall:.0f} s)")
    return result


# --------------------------------------------------------------------------
# Output.

COLUMNS = [("horizon", 7), ("model", 38), ("params", 7), ("valid MSE", 10), ("test MSE", 10),
           ("valid all", 10), ("test all", 10), ("Keras rep.", 10), ("seconds", 8)]


def header() -> str:
    return "  ".join(f"{name:<{w}}" if i < 2 else f"{name:>{w}}" for i, (name, w) in enumerate(COLUMNS))


def _num(v, fmt="{:.5f}") -> str:
    return "-" if v is None else fmt.format(v)


def cells(row) -> list:
    return [str(row["horizon"]), row["model"], str(row["params"]), _num(row["valid_mse"]), _num(row["test_mse"]),
            _num(row.get("valid_mse_all_steps")), _num(row.get("test_mse_all_steps")),
            _num(row["keras_reported"], "{:g}"), f"{row['seconds']:.1f}"]


def format_row(row) -> str:
    return "  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells(row), COLUMNS)))


def markdown(result) -> str:
    s = result["settings"]
    lines = [
        "# The second seed's forecasting study",
        "",
        f"Command: `{result['command']}`. {s['n_series']:,} series of `generate_time_series` split "
        f"{' / '.join(f'{n:,}' for n in s['split'])}, seed {s['seed']}, {s['epochs']} epochs, batch {s['batch_size']}, "
        f"{s['optimizer']}, loss {s['loss']}. Wall time {result['wall_seconds']:.0f} s on "
        f"{result['environment']['cpu_count']} CPU cores (jax {result['environment']['jax']}), "
        "measured on a shared machine under load, so the seconds are inflated.",
        "",
        "Horizon 1: forecast step 51 of a 51-step series from the first 50. Horizon 10: steps 51-60 of a "
        "60-step series. *valid/test MSE* is the MSE of the forecast made after the whole window; "
        "*valid/test all* is the MSE over all the outputs of a model with an output at every step (the "
        "loss it was trained on).",
        "",
        markdown_table([cells(row) for row in result["rows"]], [name for name, _ in COLUMNS],
                       align="ll" + "r" * (len(COLUMNS) - 2)),
    ]
    for run in result.get("merged_runs", []):
        lines += ["", f"Rows added or replaced later, with the same data and settings, by `{run['command']}` "
                      f"({run['wall_seconds']:.0f} s)."]
    lines += [
        "",
        f"*Keras rep.* is the validation MSE {SOURCE} reports for the same model trained in Keras with the "
        "seed's setup (rounded as the book gives it); it is reported there, not measured here.",
        "",
        "Notes:",
        "",
        "- The series are drawn with NumPy's `default_rng(seed)` (`scanrnn.data`), not the legacy "
        "`np.random.seed(42)` of the seed's code, so the data differ from the book's: compare each model "
        "with the naive row of the same table (the book's naive forecasts score 0.020 and 0.223).",
        "- Every trained model uses the same optimiser: the seed's Adam with a peak learning rate of "
        "5e-3, decayed along a cosine to 5 % of it over the 20 epochs (the main job's schedule).",
        "- The linear model is `causal_conv(F, 50, padding=\"valid\")`: one window, one affine map of the "
        "flattened 50 inputs (Keras' `Flatten` + `Dense`).",
        "- The Jordan, Elman and NARX networks (`scanrnn.classic`) include their output layer and are "
        "trained to forecast the next value at every step; only the last forecast is scored.",
        "- The iterated one-step model is the one-step model trained on 51-step series, applied to the "
        "60-step series, whose points are 1/59 apart instead of 1/50, as in the book.",
        "- The convolution in front of the GRU is the seed's `Conv1D(20, 4, strides=2, padding=\"valid\")`: "
        "24 outputs, output o reading inputs 2o..2o+3 and trained on the 10 values after input 2o+3.",
        "",
        "Plots: `learning_curves.png` (training and validation loss per epoch of every trained model), "
        "`forecasts_one_step.png` and `forecasts_ten_steps.png` (three test series per model).",
        "",
    ]
    return "\n".join(lines)


def plot_learning_curves(histories, path):
    n = len(histories)
    if not n:
        return
    ncols = 5
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
    for ax, ((horizon, name), hist) in zip(axes.flat, histories.items()):
        epochs = np.arange(1, len(hist["train_loss"]) + 1)
        ax.semilogy(epochs, hist["train_loss"], ".-", label="train")
        ax.semilogy(epochs, hist["valid_loss"], ".-", label="valid")
        ax.set_title(f"{name} ({horizon} ahead)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel("MSE (training loss)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_forecasts(test: Split, preds: dict, path: str, horizon: int, examples: int = 3):
    n = len(preds)
    ncols = 4
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), squeeze=False)
    t_in, t_out = np.arange(N_IN), np.arange(N_IN, N_IN + horizon)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, pred) in zip(axes.flat, preds.items()):
        for e in range(examples):
            c = colours[e % len(colours)]
            ax.plot(t_in, test.x[e, :, 0], "-", color=c, lw=0.8)
            ax.plot(t_out, test.truth[e], "x", color=c, ms=4)
            ax.plot(t_out, pred[e], "o-" if horizon > 1 else "o", color=c, ms=3, mfc="none", lw=0.8)
        ax.set_title(f"{name}: test MSE {mse(pred, test.truth):.4f}", fontsize=8)
        ax.set_xlim(N_IN - 20, N_IN + horizon + 1)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"{horizon}-step-ahead forecasts of three test series (x: truth, o: forecast)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="640 series, 2 epochs, a few models")
    parser.add_argument("--out", help="output folder (default experiments/results/sine_forecast/, "
                        "or runs/sine_forecast-quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, help="default 20 (2 with --quick)")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam's peak learning rate")
    parser.add_argument("--only", help="comma-separated substrings: train only the models whose name contains one")
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    parser.add_argument("--merge", action="store_true",
                        help="add the trained rows to the results already in --out instead of replacing them")
    args = parser.parse_args(argv)
    args.argv = argv  # the command recorded in the results (None: this process's arguments)
    if args.quick:
        # Tiny models run in no time; compiling them is what takes time, so compile with less optimisation.
        jax.config.update("jax_disable_most_optimizations", True)
    if args.out is None:
        args.out = str(default_out("sine_forecast", args.quick))
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
