"""What a long run's safety costs: fit's divergence guard and its checkpoints, on the main job's two tasks.

Two measurements, on the models and batches of ``python -m scanrnn train``
(``sine``: two GRU(20) layers and a dense output, B=32, T=50; ``binary-sum``:
simple RNNs of 6 and 4 sigmoid units, B=8, T=7):

- **the guard**: one train step as ``fit`` runs it (the loss, the gradient
  and the new params checked for finiteness inside the compiled step, the
  update selected with ``jnp.where``, a halting flag carried) against the
  plain step (``value_and_grad``, ``optimizer.update``, ``apply_updates``),
  both jit-compiled, timed interleaved on the same batches, median of
  ``--repeats`` rounds of ``--steps`` steps each;
- **the checkpoints**: ``fit``'s wall time per epoch without a checkpoint
  directory, with checkpoints at every epoch's end (``checkpoint_interval=0``)
  and with the default interval (5 s); the first epoch (compilation) left
  out, the last save's wait included, median of ``--repeats`` runs of
  ``--epochs`` epochs, interleaved.

Ratios are each row's time over the plain step's (or the run without
checkpoints). Absolute times are of this machine only.

Usage (from the repository root)::

    python experiments/benchmarks/long_runs.py
    python experiments/benchmarks/long_runs.py --quick    # a check that it runs

Results go to ``--out`` (default ``experiments/results/benchmarks-long-runs``;
``runs/benchmarks-long-runs-quick`` with ``--quick``): ``results.md`` and
``results.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scanrnn as sr
from scanrnn import data
from scanrnn.train import Batch, batch_loss, fit, mse
from scanrnn.train import _guarded_step, _objective  # the step fit compiles

from common import command_line, default_out, describe, machine_info, markdown_table, table, write_results


def task(name: str, quick: bool):
    """``(model, train, valid, batch_size)`` of the main job's task (fewer examples with ``quick``)."""
    if name == "sine":
        n = 600 if quick else 10_000
        series = data.generate_time_series(n, 51, rng=42)
        x, y = series[:, :50], series[:, 50]
        (tx, ty), (vx, vy) = data.split(x, y, sizes=(int(0.7 * n), int(0.3 * n)))
        cells, batch_size = [sr.gru(20), sr.gru(20)], 32
    else:
        x, y = data.many_to_one(data.make_sum(200 if quick else 800, 8, rng=42))
        (tx, ty), (vx, vy) = data.split(x, y, sizes=(int(0.5 * len(x)), int(0.25 * len(x))))
        cells, batch_size = [sr.simple_rnn(6, "sigmoid"), sr.simple_rnn(4, "sigmoid")], 8
    model = sr.serial(sr.recurrent(cells[0]), sr.recurrent(cells[1], return_sequences=False), sr.dense(1))
    return model, Batch(tx, ty), Batch(vx, vy), batch_size


def time_steps(model, train, batch_size, *, steps, repeats):
    """Median seconds per step of the plain and the guarded step, interleaved."""
    optimizer = optax.adam(5e-3)
    params = model.init(jax.random.key(0), 1)
    objective = _objective(model, mse)

    def plain(params, opt_state, batch, key, halted):
        value, grads = jax.value_and_grad(lambda p: batch_loss(model, mse, p, batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": value}, halted

    programs = {"plain step": jax.jit(plain), "fit's guarded step": jax.jit(_guarded_step(objective, optimizer, "halt"))}
    batches = [Batch(train.x[i : i + batch_size], train.y[i : i + batch_size]) for i in range(0, batch_size * steps, batch_size)]
    batches = [jax.device_put(b) for b in batches if len(b.x) == batch_size]
    times = {name: [] for name in programs}
    for round_ in range(repeats + 1):
        for name, program in programs.items():
            p, o, halted = params, optimizer.init(params), jnp.asarray(False)
            jax.block_until_ready(program(p, o, batches[0], None, halted))  # compiled and warm
            start = time.perf_counter()
            for batch in batches:
                p, o, _, halted = program(p, o, batch, None, halted)
            jax.block_until_ready(p)
            if round_:  # the first round warms up
                times[name].append((time.perf_counter() - start) / len(batches))
    return {name: float(np.median(t)) for name, t in times.items()}


def time_fit(model, train, valid, batch_size, *, epochs, repeats):
    """Median seconds per epoch (the first left out) of fit without and with checkpoints."""
    params = model.init(jax.random.key(0), 1)
    variants = {"no checkpoints": None, "every epoch (interval 0)": 0.0, "default interval (5 s)": 5.0}
    times = {name: [] for name in variants}
    root = tempfile.mkdtemp(prefix="scanrnn-long-runs-")
    try:
        for round_ in range(repeats + 1):
            for name, interval in variants.items():
                options = {}
                if interval is not None:
                    directory = os.path.join(root, f"{round_}-{interval}")
                    options = dict(checkpoint_dir=directory, checkpoint_interval=interval)
                start = time.perf_counter()
                _, history = fit(model, params, optax.adam(5e-3), mse, train, valid, epochs=epochs, batch_size=batch_size, **options)
                if round_:  # the first round imports orbax and warms up
                    times[name].append((time.perf_counter() - start - history["seconds"][0]) / (epochs - 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sine", "binary-sum"], choices=["sine", "binary-sum"])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round of the step comparison")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per fit run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small data, few steps and repeats")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.epochs, args.repeats = 4, 2, 1
    out = args.out or str(default_out("benchmarks-long-runs", args.quick))

    rows, results = [], {}
    for name in args.tasks:
        model, train, valid, batch_size = task(name, args.quick)
        steps = time_steps(model, train, batch_size, steps=args.steps, repeats=args.repeats)
        epochs = time_fit(model, train, valid, batch_size, epochs=args.epochs, repeats=args.repeats)
        results[name] = {"step_seconds": steps, "epoch_seconds": epochs}
        plain, bare = steps["plain step"], epochs["no checkpoints"]
        rows += [[name, what, f"{t * 1e3:.2f} ms", f"{t / plain:.2f}"] for what, t in steps.items()]
        rows += [[name, f"fit, {what}", f"{t:.3f} s / epoch", f"{t / bare:.2f}"] for what, t in epochs.items()]
        print(table(rows[-5:], ["task", "what", "median", "÷ plain"]), flush=True)

    header = ["task", "what", "median", "÷ plain (step) or without checkpoints (fit)"]
    machine = describe(machine_info())
    command = command_line(__file__, argv)
    report = f"# fit's guard and checkpoints\n\n`{command}` on {machine}, {time.strftime('%Y-%m-%d')}.\n\n"
    report += markdown_table(rows, header) + "\n"
    write_results(out, {"command": command, "machine": machine, "args": vars(args), "results": results}, report)
    print(f"wrote {out}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
