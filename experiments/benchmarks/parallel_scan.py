"""Parallel-scan cells against the sequential LSTM: minGRU and minLSTM in both modes.

For each sequence length ``T`` and each of five cells (``scanrnn.lstm``, and
``min_gru`` / ``min_lstm`` of Feng et al. 2024 with ``mode="associative"``, a
log-space associative scan over time, and ``mode="sequential"``, a scan of
``step``) the same many-to-one model is built::

    model = serial(recurrent(cell, return_sequences=False), dense(1))
    loss  = mean over the batch of (model(x) - y) ** 2

and two jitted functions of a batch ``[B, T, I]`` are timed:

- train: ``jax.value_and_grad(loss)`` with respect to all params;
- infer: the forward pass, ``jax.vmap(model.apply)``.

Each is called once to compile (not timed), then ``--repeats`` times,
round-robin over the cells within each repeat so that a drift in machine
load hits them alike; each call ends with ``block_until_ready``. Reported:
the median time per call (ms) and ``ratio = LSTM time / cell time`` (above
1: faster than the LSTM). Before timing, the parallel and sequential modes
of each minimal cell must give the same loss (1e-4 relative).

Usage (from the repository root)::

    python experiments/benchmarks/parallel_scan.py            # T = 512, 4096, 16384
    python experiments/benchmarks/parallel_scan.py --quick    # T = 64, 256, 3 repeats

``--out PATH`` is the Markdown table (default
``experiments/results/benchmarks-parallel-scan/results.md``; with
``--quick`` ``runs/benchmarks-parallel-scan-quick/results.md``); the raw
numbers, command and settings go to a JSON file of the same name beside it
(``results.json``). Both are rewritten after every length.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import scanrnn

from common import command_line, default_out, markdown_table, scanrnn_source, table, write_json, write_text

CELLS = {
    "lstm": lambda H: scanrnn.lstm(H),
    "min_gru parallel": lambda H: scanrnn.min_gru(H, mode="associative"),
    "min_gru sequential": lambda H: scanrnn.min_gru(H, mode="sequential"),
    "min_lstm parallel": lambda H: scanrnn.min_lstm(H, mode="associative"),
    "min_lstm sequential": lambda H: scanrnn.min_lstm(H, mode="sequential"),
}
TASKS = ("train", "infer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="T = 64 and 256, 3 repeats")
    parser.add_argument("--steps", type=int, nargs="+", help="sequence lengths T (default 512 4096 16384)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, help="timed calls per function (default 10; 3 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="a note on the conditions, printed under the table")
    parser.add_argument("--out", help="the Markdown file to write")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = [64, 256] if args.quick else [512, 4096, 16384]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    if args.out is None:
        args.out = str(default_out("benchmarks-parallel-scan", args.quick) / "results.md")
    if args.repeats < 1 or min(args.steps) < 1:
        parser.error("--repeats and --steps must be positive")
    return args


def build(cell, key, input_size):
    """The many-to-one model, its params, and the jitted train and infer functions."""
    model = scanrnn.serial(scanrnn.recurrent(cell, return_sequences=False), scanrnn.dense(1))
    params = model.init(key, input_size)

    def predict(params, x):
        return jax.vmap(model.apply, in_axes=(None, 0))(params, x)  # [B, 1]

    def loss(params, x, y):
        return jnp.mean((predict(params, x) - y) ** 2)

    return params, {"train": jax.jit(jax.value_and_grad(loss)), "infer": jax.jit(predict)}


def bench_length(T, args, log):
    """Median seconds per call of every (cell, task) at ``T`` steps."""
    rng = np.random.default_rng(args.seed)
    x = jnp.asarray(rng.standard_normal((args.batch, T, args.inputs)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((args.batch, 1)), jnp.float32)
    key = jax.random.key(args.seed)
    built = {name: build(make(args.hidden), key, args.inputs) for name, make in CELLS.items()}

    def call(name, task):
        params, fns = built[name]
        out = fns[task](params, x, y) if task == "train" else fns[task](params, x)
        return jax.block_until_ready(out)

    compile_s, losses = {}, {}
    for name in CELLS:
        for task in TASKS:
            start = time.perf_counter()
            out = call(name, task)
            compile_s[name, task] = time.perf_counter() - start
            if task == "train":
                losses[name] = float(out[0])
    for base in ("min_gru", "min_lstm"):
        a, b = losses[f"{base} parallel"], losses[f"{base} sequential"]
        if not abs(a - b) <= 1e-4 * max(abs(a), abs(b)):
            raise SystemExit(f"T={T}: {base} parallel loss {a} != sequential loss {b}")

    samples = {(name, task): [] for name in CELLS for task in TASKS}
    for _ in range(args.repeats):
        for task in TASKS:
            for name in CELLS:
                start = time.perf_counter()
                call(name, task)
                samples[name, task].append(time.perf_counter() - start)
    rows = []
    for task in TASKS:
        lstm = statistics.median(samples["lstm", task])
        for name in CELLS:
            median = statistics.median(samples[name, task])
            rows.append(
                {
                    "T": T,
                    "task": task,
                    "cell": name,
                    "median_ms": 1e3 * median,
                    "min_ms": 1e3 * min(samples[name, task]),
                    "ratio": lstm / median,
                    "compile_s": compile_s[name, task],
                }
            )
    log(f"T={T}: done")
    return rows


HEADER = ["T", "task", "cell", "median ms", "min ms", "LSTM / cell"]
ALIGN = "rllrrr"


def table_rows(rows):
    """The cells of the results table, one row per (T, task, cell)."""
    return [[str(r["T"]), r["task"], r["cell"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['ratio']:.2f}"]
            for r in rows]


def write(args, rows, version, command, wall, complete):
    """The Markdown table and the JSON record of the rows so far."""
    settings = (
        f"B={args.batch}, I={args.inputs}, H={args.hidden}, float32, seed {args.seed}; median of "
        f"{args.repeats} timed calls after one compiling call; jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({os.cpu_count()} CPU cores, {platform.machine()}); scanrnn {version}"
    )
    lines = [
        "# Parallel-scan cells against the sequential LSTM",
        "",
        "Many-to-one MSE models `serial(recurrent(cell, return_sequences=False), dense(1))`; "
        "train = jitted `value_and_grad` of the loss, infer = jitted forward pass. "
        "`LSTM / cell` above 1 means faster than `scanrnn.lstm`. minGRU and minLSTM after "
        "Feng et al. (2024), *Were RNNs All We Needed?* (arXiv:2410.01201); `parallel` is the "
        "log-space associative scan, `sequential` a `lax.scan` of the same recurrence.",
        "",
        markdown_table(table_rows(rows), HEADER, align=ALIGN),
        "",
        f"{settings}.",
        "",
    ]
    if args.label:
        lines += [args.label, ""]
    if not complete:
        done = sorted({r["T"] for r in rows})
        lines += [f"Incomplete: the run stopped after T = {done} of {args.steps}.", ""]
    lines.append(f"Command: `{command}` (wall time {wall:.0f} s, {datetime.date.today().isoformat()}).")
    write_text(args.out, "\n".join(lines) + "\n")
    json_path = Path(args.out).with_suffix(".json")
    write_json(json_path, {
        "command": command,
        "settings": vars(args),
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(),
        "source": version,
        "complete": complete,
        "wall_s": wall,
        "rows": rows,
    })
    return settings, json_path


def main(argv=None):
    args = parse_args(argv)
    version = scanrnn_source()  # before the run: what was imported
    command = command_line(__file__, argv)
    start = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    for T in args.steps:
        rows.extend(bench_length(T, args, log))
        # Written after every length, so an interrupted run keeps what it measured.
        complete = T == args.steps[-1]
        settings, json_path = write(args, rows, version, command, time.perf_counter() - start, complete)
    wall = time.perf_counter() - start
    print(table(table_rows(rows), HEADER, align=ALIGN))
    print(settings)
    if args.label:
        print(args.label)
    print(f"wrote {args.out} and {json_path} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
