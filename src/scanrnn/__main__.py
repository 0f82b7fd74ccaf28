"""The main job: ``scanrnn train`` (also ``python -m scanrnn train``).

Trains a stacked recurrent model on generated data (no download) and writes
``metrics.json``, ``params.npz`` and PNG plots to ``--out``:

- ``--task sine``: the second seed's study, one-step-ahead forecasts of
  ``generate_time_series`` (50 steps, 10,000 series split 7,000 / 2,000 /
  1,000), scored by MSE against the naive last-value forecast;
- ``--task binary-sum``: the first seed's sums of 7 random bits.

With no flags it trains a 2-layer GRU of 20 units on the sine task.

``--devices N`` trains data-parallel over N devices (on a CPU the command
makes N host devices itself), and a run of several processes joins with
``--coordinator``, ``--num-processes`` and ``--process-id`` (or the
``SCANRNN_*`` variables that ``scanrnn launch`` sets):
``scanrnn launch --processes 2 -- train --devices 2`` starts two processes
of one run on this host. Process 0 writes the outputs and prints; every
process takes part in the checkpoints.

Every flag is checked before anything is trained: a mistake prints one line
on stderr and exits with status 2. The run's state is checkpointed in
``OUT/checkpoints`` (through ``fit``'s ``checkpoint_dir``) at the end of the
epochs (at most one every 5 s, and the last) and every ``--checkpoint-every``
steps, and ``--resume`` continues a
run from its latest checkpoint, bit for bit. ``metrics.json`` says how the
run stands (``"status"``: ``"running"`` from the start, then
``"completed"``, ``"diverged"`` or ``"interrupted"``) and is strict JSON
(non-finite numbers as ``null``). Every output is written to a temporary
file and renamed over its destination. Exit status: 0 completed, 1 diverged
(a non-finite step, stopped by ``fit``'s divergence guard), 2 a usage
mistake, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

TASKS = ("sine", "binary-sum")
CELLS = ("simple_rnn", "lstm", "gru", "layer_norm_rnn", "layer_norm_lstm")
ACTIVATION_CELLS = ("simple_rnn", "layer_norm_rnn")  # the cells that take --activation

# Per-task defaults: the second seed's deep models, the first seed's network.
DEFAULTS = {
    "sine": dict(cell="gru", layers=2, hidden=[20], epochs=20, batch_size=32, lr=5e-3, activation="tanh"),
    "binary-sum": dict(cell="simple_rnn", layers=2, hidden=[6, 4], epochs=100, batch_size=8, lr=1e-2, activation="sigmoid"),
}

# The flags that shape a run's numbers: --resume needs them as the run started with.
SHAPING = (
    "task", "cell", "activation", "peephole", "layers", "hidden", "bidirectional", "dropout",
    "epochs", "batch_size", "lr", "schedule", "clip_norm", "seed",
)
CHECKPOINTS = "checkpoints"  # OUT/checkpoints: the run's TrainState, through orbax
FIGURES = {"sine": "forecasts.png", "binary-sum": "predictions.png"}
OUTPUTS = ("metrics.json", "params.npz", "learning_curves.png", "forecasts.png", "predictions.png")
MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed


class UsageError(Exception):
    """A mistake in the command line: one line on stderr, exit status 2.

    ``prog`` is the parser's name when argparse found it, else ``None`` (the
    train command's).
    """

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors raise :class:`UsageError` (one line, no usage block) instead of exiting."""

    def error(self, message):
        raise UsageError(message, self.prog)


def _per_task(name: str) -> str:
    """``"20 for sine, 100 for binary-sum"``: a flag's default in each task, for ``--help``."""

    def show(value):
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    return ", ".join(f"{show(defaults[name])} for {task}" for task, defaults in DEFAULTS.items())


def build_parser(prog: str = "scanrnn") -> argparse.ArgumentParser:
    """The command line; ``prog`` is how the program names itself in usage, help and errors."""
    parser = _Parser(prog=prog, description="scanrnn's main job: train a recurrent model on a generated task.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser(
        "train", help="train a model on a generated task and write its metrics, params and plots",
        description="Train a stacked recurrent model on a generated task; checkpoint it, and write its "
        "metrics, params and plots to --out.",
    )
    model = train.add_argument_group("the task and the model")
    model.add_argument("--task", choices=TASKS, default="sine", help="the generated task (default: sine)")
    model.add_argument("--cell", choices=CELLS, help=f"the recurrent cell (default: {_per_task('cell')})")
    model.add_argument(
        "--activation", choices=("tanh", "sigmoid", "relu"),
        help=f"of simple_rnn and layer_norm_rnn only (default: {_per_task('activation')})",
    )
    model.add_argument("--peephole", action="store_true", help="LSTM peephole connections, lstm only (default: off)")
    model.add_argument(
        "--layers", type=int, metavar="N",
        help="recurrent layers (default: the number of --hidden sizes when there are several, else 2)",
    )
    model.add_argument(
        "--hidden", type=int, nargs="+", metavar="H",
        help=f"units per layer: one number for all, or one per layer (default: {_per_task('hidden')})",
    )
    model.add_argument(
        "--bidirectional", action="store_true",
        help="bidirectional recurrent layers, the directions' outputs concatenated (default: off)",
    )
    model.add_argument(
        "--dropout", type=float, default=0.0, metavar="RATE",
        help="dropout in [0, 1) after each recurrent layer, between them and before the output (default: 0)",
    )
    training = train.add_argument_group("training")
    training.add_argument("--epochs", type=int, metavar="N", help=f"epochs of the run (default: {_per_task('epochs')})")
    training.add_argument("--batch-size", type=int, metavar="B", help=f"examples per step (default: {_per_task('batch_size')})")
    training.add_argument(
        "--lr", type=float, help=f"Adam's (peak) learning rate, > 0 (default: {_per_task('lr')})",
    )
    training.add_argument(
        "--schedule", choices=("cosine", "constant"), default="cosine",
        help="learning rate: cosine decay from --lr to 5%% of it over the run, or constant (default: cosine)",
    )
    training.add_argument(
        "--clip-norm", type=float, metavar="NORM",
        help="clip the gradients to this global norm, > 0 (default: no clipping)",
    )
    training.add_argument(
        "--seed", type=int, default=42,
        help="seeds the data, the params, the data order and the dropout, in [0, 2**63 - 1] (default: 42)",
    )
    run = train.add_argument_group("outputs, checkpoints and resuming")
    run.add_argument("--out", metavar="DIR", help="output directory (default: runs/TASK-CELL)")
    run.add_argument(
        "--checkpoint-every", type=int, metavar="N",
        help="also checkpoint every N steps, not only at the end of each epoch (default: each epoch only)",
    )
    run.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its latest checkpoint, with the flags it started with "
        "(a new run when --out holds none) (default: off)",
    )
    run.add_argument(
        "--overwrite", action="store_true",
        help="replace the run in --out (its checkpoints and outputs; nothing else there) (default: off)",
    )
    spread = train.add_argument_group("devices and processes")
    spread.add_argument(
        "--devices", type=int, metavar="N",
        help="train data-parallel over N devices of each process; on a CPU, N host devices are made "
        "(default: 1)",
    )
    spread.add_argument(
        "--coordinator", metavar="HOST:PORT",
        help="process 0's address, for a run of several processes (default: $SCANRNN_COORDINATOR)",
    )
    spread.add_argument(
        "--num-processes", type=int, metavar="P",
        help="the processes of the run (default: $SCANRNN_NUM_PROCESSES, else 1)",
    )
    spread.add_argument(
        "--process-id", type=int, metavar="I", help="this process's id in [0, P) (default: $SCANRNN_PROCESS_ID)",
    )

    launch = sub.add_parser(
        "launch", help="run a command as several processes of one run on this host",
        description="Start P processes of COMMAND on this host, joined through a coordinator on 127.0.0.1 "
        "(each gets SCANRNN_COORDINATOR, SCANRNN_NUM_PROCESSES and SCANRNN_PROCESS_ID); if one fails the "
        "others are stopped. COMMAND is a scanrnn command (train ...) or any program.",
    )
    launch.add_argument("--processes", type=int, required=True, metavar="P", help="how many processes")
    launch.add_argument("--port", type=int, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    launch.add_argument("--timeout", type=float, metavar="S", help="stop every process after S seconds (default: none)")
    launch.add_argument("launched", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="what to run, after --")
    return parser


# --------------------------------------------------------------------------
# Checking the flags.


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive_int(args, name: str) -> None:
    value = getattr(args, name)
    if value is not None and value < 1:
        raise UsageError(f"{_flag(name)} must be a positive int, got {value}")


def check_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Check the flags as given, fill the unset ones from the task's defaults, and check the whole.

    Raises :class:`UsageError` with one line naming the flag, what was
    expected and what was given. ``--lr nan`` passes (a NaN compares false):
    it is left to ``fit``'s divergence guard, which stops the run at its
    first step.
    """
    if args.command == "launch":
        return _check_launch(args)
    for name in ("epochs", "batch_size", "layers", "checkpoint_every", "devices"):
        _positive_int(args, name)
    _check_processes(args)
    if args.hidden is not None and min(args.hidden) < 1:
        raise UsageError(f"--hidden must be positive ints, got {' '.join(map(str, args.hidden))}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be an int in [0, 2**63 - 1], got {args.seed}")
    if args.lr is not None and (args.lr <= 0 or args.lr == math.inf):
        raise UsageError(f"--lr must be a positive finite number, got {args.lr!r}")
    if args.clip_norm is not None and not (args.clip_norm > 0 and math.isfinite(args.clip_norm)):
        raise UsageError(f"--clip-norm must be a positive finite number, got {args.clip_norm!r}")
    if not 0 <= args.dropout < 1:  # NaN fails too
        raise UsageError(f"--dropout must be a rate in [0, 1), got {args.dropout!r}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: give one of them, not both")

    cell = args.cell or DEFAULTS[args.task]["cell"]
    if args.activation is not None and cell not in ACTIVATION_CELLS:
        raise UsageError(f"--activation applies to --cell {' and '.join(ACTIVATION_CELLS)} only, got --cell {cell}")
    if args.peephole and cell != "lstm":
        raise UsageError(f"--peephole applies to --cell lstm only, got --cell {cell}")
    if args.layers is None and args.hidden is not None and len(args.hidden) > 1:
        args.layers = len(args.hidden)  # one size per layer names the depth
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if cell not in ACTIVATION_CELLS:
        args.activation = None  # the cell has none
    if len(args.hidden) == 1:
        args.hidden = args.hidden * args.layers
    if len(args.hidden) != args.layers:
        raise UsageError(f"--hidden needs 1 or --layers ({args.layers}) numbers, got {len(args.hidden)}")
    if args.out is None:
        args.out = os.path.join("runs", f"{args.task}-{args.cell}")
    _check_out(args.out)
    return args


def _check_launch(args: argparse.Namespace) -> argparse.Namespace:
    if args.processes < 1:
        raise UsageError(f"--processes must be a positive int, got {args.processes}")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be in [1, 65535], got {args.port}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout!r}")
    command = args.launched[1:] if args.launched[:1] == ["--"] else args.launched
    if not command:
        raise UsageError("launch needs a command after --, such as: launch --processes 2 -- train --devices 2")
    if command[0] in ("train", "launch"):
        if command[0] == "launch":
            raise UsageError("launch cannot launch itself")
        command = [sys.executable, "-m", "scanrnn", *command]
    args.launched = command
    return args


def _check_processes(args: argparse.Namespace) -> None:
    """Fill --coordinator, --num-processes and --process-id from the environment; check them together."""
    from scanrnn.devices import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

    for name, variable in (("num_processes", ENV_NUM_PROCESSES), ("process_id", ENV_PROCESS_ID)):
        if getattr(args, name) is None and os.environ.get(variable):
            try:
                setattr(args, name, int(os.environ[variable]))
            except ValueError:
                raise UsageError(f"${variable} must be an int, got {os.environ[variable]!r}") from None
    if args.coordinator is None:
        args.coordinator = os.environ.get(ENV_COORDINATOR) or None
    _positive_int(args, "num_processes")
    if args.num_processes is None or args.num_processes == 1:
        args.num_processes = 1
        return
    if args.coordinator is None or args.process_id is None:
        raise UsageError(
            f"--num-processes {args.num_processes} needs --coordinator HOST:PORT and --process-id (or "
            f"${ENV_COORDINATOR} and ${ENV_PROCESS_ID}; scanrnn launch sets them)"
        )
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
    if not 0 <= args.process_id < args.num_processes:
        raise UsageError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")


def _check_out(out: str) -> None:
    """``out`` is, or can be made, a directory (not a file, nor under one)."""
    if not out:
        raise UsageError("--out must name a directory, got ''")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out must be a directory, got the existing file {out!r}")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out!r} cannot be created: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out!r} is not writable: no write permission on {parent!r}")


def _show(value) -> str:
    """A config value as a command line gives it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "unset" if value is None else str(value)


def _config(args: argparse.Namespace) -> dict:
    """The run's flags as ``metrics.json`` records them (strict JSON: a NaN is ``null``)."""
    from scanrnn._run_checkpoints import _json_safe

    # How the run is spread over devices and processes changes no number beyond rounding: not part of its config.
    left_out = ("command", "resume", "overwrite", "devices", "coordinator", "num_processes", "process_id")
    return _json_safe({k: v for k, v in vars(args).items() if k not in left_out})


def check_run_dir(args: argparse.Namespace) -> None:
    """Refuse to mix a new run with the one already in ``--out``, or to resume with other flags."""
    out = args.out
    found = [name for name in OUTPUTS + (CHECKPOINTS,) if os.path.exists(os.path.join(out, name))]
    if not found or args.overwrite:
        return
    if not args.resume:
        raise UsageError(
            f"--out {out!r} already holds a run ({', '.join(found)}): pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    metrics_path = os.path.join(out, "metrics.json")
    if not os.path.exists(metrics_path):
        raise UsageError(
            f"--resume: {out!r} holds {', '.join(found)} but no metrics.json, which records the flags of its "
            "run; pass --overwrite to replace it, or choose another --out"
        )
    try:
        with open(metrics_path) as f:
            stored = json.load(f)["config"]
        if not isinstance(stored, dict):
            raise TypeError(f"its config is {type(stored).__name__}, not an object")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--resume: cannot read the run's flags from {metrics_path!r}: {error}") from None
    given = _config(args)
    missing = object()
    differ = [
        f"{_flag(name)} {_show(getattr(args, name))} (the run has {_show(stored[name]) if name in stored else 'not recorded'})"
        for name in SHAPING
        if stored.get(name, missing) != given[name]
    ]
    if differ:
        raise UsageError(
            f"--resume: the run in {out!r} was started with other flags: {'; '.join(differ)}; give the flags "
            "it started with, or choose another --out"
        )


def _prepare_out(args: argparse.Namespace) -> None:
    """Create ``--out`` and check that a file can be written there; with ``--overwrite``, clear the old run."""
    try:
        os.makedirs(args.out, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):  # a probe, removed when closed
            pass
    except OSError as error:
        raise UsageError(f"--out {args.out!r} cannot be created or written to: {error.strerror or error}") from None
    if args.overwrite:
        shutil.rmtree(os.path.join(args.out, CHECKPOINTS), ignore_errors=True)
        for name in OUTPUTS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(args.out, name))


# --------------------------------------------------------------------------
# The model, the data and the outputs.


def make_cell(name: str, hidden: int, activation: str, peephole: bool):
    import scanrnn

    if name in ACTIVATION_CELLS:
        return getattr(scanrnn, name)(hidden, activation)
    if name == "lstm":
        return scanrnn.lstm(hidden, peephole=peephole)
    return getattr(scanrnn, name)(hidden)


def make_model(args):
    """Stacked recurrent layers, the last one many-to-one, then a dense output of 1.

    With ``--bidirectional`` each recurrent layer reads both ways (outputs
    concatenated); with ``--dropout`` a dropout layer follows each recurrent one.
    """
    import scanrnn

    layer = scanrnn.bidirectional if args.bidirectional else scanrnn.recurrent
    layers = []
    for i, h in enumerate(args.hidden):
        cell = make_cell(args.cell, h, args.activation, args.peephole)
        layers.append(layer(cell, return_sequences=i < args.layers - 1))
        if args.dropout:
            layers.append(scanrnn.dropout(args.dropout))
    return scanrnn.serial(*layers, scanrnn.dense(1))


def describe(args) -> str:
    """``"2 x gru [20, 20]"``, with the options that change the model."""
    kind = f"bidirectional {args.cell}" if args.bidirectional else args.cell
    return f"{args.layers} x {kind} {args.hidden}" + (f", dropout {args.dropout:g}" if args.dropout else "")


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


def write_json(path: str, record: dict) -> None:
    """Strict JSON (every non-finite number as ``null``), written to a temporary file and renamed over ``path``."""
    from scanrnn._run_checkpoints import _json_safe
    from scanrnn.checkpoint import atomic_file

    text = json.dumps(_json_safe(record), indent=2, allow_nan=False) + "\n"
    with atomic_file(path, "w") as f:
        f.write(text)


def train_command(args: argparse.Namespace, prog: str) -> int:
    """Train the checked run ``args``; returns the exit status."""
    import jax
    import optax

    import scanrnn
    from scanrnn import devices, plot
    from scanrnn.checkpoint import checkpoint_steps, save_params
    from scanrnn.train import DivergenceError, evaluate, fit, mse, predict

    primary = devices.is_primary()  # process 0 prints and writes; the others train and checkpoint with it

    def say(*what, **how):
        if primary:
            print(*what, **how)

    def write(path, record):
        if primary:
            write_json(path, record)

    spread = None
    if args.num_processes > 1 or (args.devices or 1) > 1:
        spread = devices.data_mesh(devices.process_devices(args.devices or 1))

    out = args.out
    checkpoints = os.path.join(out, CHECKPOINTS)
    metrics_path = os.path.join(out, "metrics.json")
    steps = checkpoint_steps(checkpoints) if args.resume and os.path.isdir(checkpoints) else []
    if args.resume:
        say(f"resuming the run in {out} from its checkpoint of step {steps[-1]}" if steps
            else f"no checkpoint to resume in {out}: starting the run", flush=True)

    (train, valid, test), baseline = make_data(args.task, args.seed)
    model = make_model(args)
    params = model.init(jax.random.key(args.seed), 1)
    key = jax.random.fold_in(jax.random.key(args.seed), 1) if args.dropout else None  # the dropout's, apart from init's
    where = f"jax {jax.__version__} on {jax.default_backend()}"
    if spread is not None:
        where += f", data-parallel over {spread.devices.size} devices of {args.num_processes} process(es)"
    say(
        f"scanrnn {scanrnn.__version__}: task {args.task}, {describe(args)}, "
        f"{count_params(params)} params, {len(train.x)} / {len(valid.x)} / {len(test.x)} examples, {where}",
        flush=True,
    )
    record = {
        "status": "running",
        "config": _config(args),
        "params": count_params(params),
        "resumed_from_step": steps[-1] if steps else None,
        "baseline": baseline,
        "scanrnn": scanrnn.__version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": 1 if spread is None else int(spread.devices.size),
        "processes": args.num_processes,
    }
    write(metrics_path, record)

    start = time.perf_counter()
    num_steps = args.epochs * -(-len(train.x) // args.batch_size)
    lr = optax.cosine_decay_schedule(args.lr, num_steps, alpha=0.05) if args.schedule == "cosine" else args.lr
    try:
        params, history = fit(
            model, params, optax.adam(lr), mse, train, valid,
            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, clip_norm=args.clip_norm, key=key,
            checkpoint_dir=checkpoints, checkpoint_every=args.checkpoint_every, resume=args.resume,
            verbose=primary, devices=spread,
        )
    except DivergenceError as error:
        record.update(
            status="diverged", error=str(error), diverged_at={"epoch": error.epoch, "step": error.step},
            history=error.state.history, train_seconds=time.perf_counter() - start,
        )
        write(metrics_path, record)
        say(f"{prog} train: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        record.update(status="interrupted", train_seconds=time.perf_counter() - start)
        write(metrics_path, record)
        say(f"{prog} train: interrupted; pass --resume to continue from the latest checkpoint in {checkpoints}",
            file=sys.stderr, flush=True)
        return 130
    seconds = time.perf_counter() - start
    if not primary:
        return 0  # process 0 evaluates and writes the outputs
    params = jax.device_get(params)  # on the host: what follows runs in this process alone
    final = {"valid_mse": evaluate(model, mse, params, valid), "test_mse": evaluate(model, mse, params, test)}
    print(f"valid MSE {final['valid_mse']:.6f}  test MSE {final['test_mse']:.6f}  ({seconds:.1f}s)")
    for name, scores in baseline.items():
        print(f"baseline {name}: valid MSE {scores['valid']:.6f}  test MSE {scores['test']:.6f}")

    # The params and the plots first: "completed" in metrics.json means every output is written.
    save_params(os.path.join(out, "params.npz"), params)
    title = f"{args.task}: {describe(args)}"
    plot.plot_learning_curves(history, os.path.join(out, "learning_curves.png"), title=title)
    figure = FIGURES[args.task]
    pred = predict(model, params, valid.x)
    if args.task == "sine":
        plot.plot_forecasts(valid.x[:6], valid.y[:6], pred[:6], os.path.join(out, figure), title=title)
    else:
        plot.plot_predictions(
            valid.y, pred, os.path.join(out, figure), title=title, xlabel="true sum of the bits",
            ylabel="predicted sum", jitter=0.1,
        )
        print("first validation sequences, their sums and the predictions:")
        for x, y, p in zip(valid.x[:5], valid.y[:5], pred[:5]):
            print(f"  {x[:, 0].astype(int)} sum {int(y[0])}  predicted {p[0]:.3f}")
    record.update(status="completed", history=history, final=final, train_seconds=seconds)
    write_json(metrics_path, record)
    print(f"wrote metrics.json, params.npz, learning_curves.png, {figure} to {out} (checkpoints in {checkpoints})")
    return 0


def main(argv=None, prog: str = "scanrnn") -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``prog`` is how the program names itself: ``scanrnn`` (the installed
    command) or ``python -m scanrnn``.
    """
    command = "train"  # for a message before the command is known
    try:
        args = build_parser(prog).parse_args(argv)
        command = args.command
        args = check_flags(args)
        if args.command == "launch":
            from scanrnn.devices import launch

            return launch(args.launched, args.processes, port=args.port, timeout=args.timeout)
        _spread(args)
        check_run_dir(args)
        if args.num_processes == 1 or args.process_id == 0:
            _prepare_out(args)
        if args.num_processes > 1:  # the others wait for process 0 to have prepared --out
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("scanrnn train: --out prepared")
    except UsageError as error:
        print(f"{error.prog or prog + ' ' + command}: error: {error}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    return train_command(args, prog)


def _spread(args: argparse.Namespace) -> None:
    """Make ``--devices`` host devices (before JAX starts), and join the run of several processes."""
    if (args.devices or 1) > 1:
        # Read when JAX first starts a backend (so it does nothing if one was started already), and only by
        # the CPU's: on a machine with GPUs it adds host devices no one uses.
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    if args.num_processes > 1:
        from scanrnn import devices

        devices.initialize(args.coordinator, args.num_processes, args.process_id)


if __name__ == "__main__":
    sys.exit(main(prog="python -m scanrnn"))
