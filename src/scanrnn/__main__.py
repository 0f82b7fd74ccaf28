"""The main job: ``python -m scanrnn train``.

Trains a stacked recurrent model on generated data (no download) and writes
``metrics.json``, ``params.npz`` and PNG plots to ``--out``:

- ``--task sine``: the second seed's study, one-step-ahead forecasts of
  ``generate_time_series`` (50 steps, 10,000 series split 7,000 / 2,000 /
  1,000), scored by MSE against the naive last-value forecast;
- ``--task binary-sum``: the first seed's sums of 7 random bits.

With no flags it trains a 2-layer GRU of 20 units on the sine task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

TASKS = ("sine", "binary-sum")
CELLS = ("simple_rnn", "lstm", "gru", "layer_norm_rnn", "layer_norm_lstm")

# Per-task defaults: the second seed's deep models, the first seed's network.
DEFAULTS = {
    "sine": dict(cell="gru", layers=2, hidden=[20], epochs=20, batch_size=32, lr=5e-3, activation="tanh"),
    "binary-sum": dict(cell="simple_rnn", layers=2, hidden=[6, 4], epochs=100, batch_size=8, lr=1e-2, activation="sigmoid"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scanrnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model on a generated task and write its metrics and plots")
    train.add_argument("--task", choices=TASKS, default="sine")
    train.add_argument("--cell", choices=CELLS, help="recurrent cell (default: gru for sine, simple_rnn for binary-sum)")
    train.add_argument("--activation", choices=("tanh", "sigmoid", "relu"), help="of simple_rnn / layer_norm_rnn")
    train.add_argument("--peephole", action="store_true", help="LSTM peephole connections (lstm only)")
    train.add_argument("--layers", type=int, help="number of recurrent layers (default 2)")
    train.add_argument("--hidden", type=int, nargs="+", help="units per layer: one number for all, or one per layer")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="Adam's (peak) learning rate")
    train.add_argument(
        "--schedule", choices=("cosine", "constant"), default="cosine",
        help="learning rate: cosine decay from --lr to 5%% of it over the run (default), or constant",
    )
    train.add_argument("--clip-norm", type=float, default=None, help="clip gradients to this global norm")
    train.add_argument("--seed", type=int, default=42, help="seeds the data, the params and the shuffling")
    train.add_argument("--out", default=None, help="output directory (default runs/TASK-CELL)")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the task's defaults and check them."""
    if args.layers is None and args.hidden is not None and len(args.hidden) > 1:
        args.layers = len(args.hidden)  # one size per layer names the depth
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.layers < 1:
        raise SystemExit(f"--layers must be at least 1, got {args.layers}")
    if len(args.hidden) == 1:
        args.hidden = args.hidden * args.layers
    if len(args.hidden) != args.layers:
        raise SystemExit(f"--hidden needs 1 or --layers ({args.layers}) numbers, got {len(args.hidden)}")
    if args.peephole and args.cell != "lstm":
        raise SystemExit("--peephole applies to --cell lstm only")
    if args.out is None:
        args.out = os.path.join("runs", f"{args.task}-{args.cell}")
    return args


def make_cell(name: str, hidden: int, activation: str, peephole: bool):
    import scanrnn

    if name in ("simple_rnn", "layer_norm_rnn"):
        return getattr(scanrnn, name)(hidden, activation)
    if name == "lstm":
        return scanrnn.lstm(hidden, peephole=peephole)
    return getattr(scanrnn, name)(hidden)


def make_model(args):
    """Stacked recurrent layers, the last one many-to-one, then a dense output of 1."""
    import scanrnn

    layers = [
        scanrnn.recurrent(make_cell(args.cell, h, args.activation, args.peephole), return_sequences=i < args.layers - 1)
        for i, h in enumerate(args.hidden)
    ]
    return scanrnn.serial(*layers, scanrnn.dense(1))


def make_data(task: str, seed: int):
    """``(train, valid, test)`` Batches, and the naive baseline's test MSE where it exists."""
    from scanrnn import data
    from scanrnn.train import Batch

    if task == "sine":
        series = data.generate_time_series(10_000, 51, rng=seed)
        x, y = series[:, :50], series[:, 50]
        parts = data.split(x, y, sizes=(7000, 2000, 1000))
        baseline = {"naive_last_value": {k: float(np.mean((px[:, -1] - py) ** 2)) for k, (px, py) in zip(("valid", "test"), parts[1:])}}
    else:
        rows = data.make_sum(800, 8, rng=seed)
        x, y = data.many_to_one(rows)
        parts = data.split(x, y, sizes=(402, 198, 200))
        baseline = {"mean_of_train": {k: float(np.mean((py - parts[0][1].mean()) ** 2)) for k, (_, py) in zip(("valid", "test"), parts[1:])}}
    return tuple(Batch(px, py) for px, py in parts), baseline


def count_params(params) -> int:
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def train_command(args: argparse.Namespace) -> dict:
    import jax
    import optax

    import scanrnn
    from scanrnn import plot
    from scanrnn.checkpoint import save_params
    from scanrnn.train import evaluate, fit, mse, predict

    args = resolve(args)
    os.makedirs(args.out, exist_ok=True)
    (train, valid, test), baseline = make_data(args.task, args.seed)
    model = make_model(args)
    params = model.init(jax.random.key(args.seed), 1)
    print(
        f"scanrnn {scanrnn.__version__}: task {args.task}, {args.layers} x {args.cell} {args.hidden}, "
        f"{count_params(params)} params, {len(train.x)} / {len(valid.x)} / {len(test.x)} examples, "
        f"jax {jax.__version__} on {jax.default_backend()}",
        flush=True,
    )
    start = time.perf_counter()
    steps = args.epochs * -(-len(train.x) // args.batch_size)
    lr = optax.cosine_decay_schedule(args.lr, steps, alpha=0.05) if args.schedule == "cosine" else args.lr
    params, history = fit(
        model, params, optax.adam(lr), mse, train, valid,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, clip_norm=args.clip_norm, verbose=True,
    )
    seconds = time.perf_counter() - start
    final = {"valid_mse": evaluate(model, mse, params, valid), "test_mse": evaluate(model, mse, params, test)}
    print(f"valid MSE {final['valid_mse']:.6f}  test MSE {final['test_mse']:.6f}  ({seconds:.1f}s)")
    for name, scores in baseline.items():
        print(f"baseline {name}: valid MSE {scores['valid']:.6f}  test MSE {scores['test']:.6f}")

    metrics = {
        "config": {k: v for k, v in vars(args).items() if k != "command"},
        "params": count_params(params),
        "history": history,
        "final": final,
        "baseline": baseline,
        "train_seconds": seconds,
        "backend": jax.default_backend(),
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    save_params(os.path.join(args.out, "params.npz"), params)
    title = f"{args.task}: {args.layers} x {args.cell} {args.hidden}"
    plot.plot_learning_curves(history, os.path.join(args.out, "learning_curves.png"), title=title)
    pred = predict(model, params, valid.x)
    if args.task == "sine":
        plot.plot_forecasts(valid.x[:6], valid.y[:6], pred[:6], os.path.join(args.out, "forecasts.png"), title=title)
    else:
        plot.plot_predictions(valid.y, pred, os.path.join(args.out, "forecasts.png"), title=title)
        print("first validation sequences, their sums and the predictions:")
        for x, y, p in zip(valid.x[:5], valid.y[:5], pred[:5]):
            print(f"  {x[:, 0].astype(int)} sum {int(y[0])}  predicted {p[0]:.3f}")
    print(f"wrote metrics.json, params.npz, learning_curves.png, forecasts.png to {args.out}")
    return metrics


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        train_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
