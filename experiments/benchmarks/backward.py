"""The hand-written backward pass against autodiff through the scan, over a grid of shapes.

This is the measurement behind the default ``Execution.backward="autodiff"``
(``scanrnn.Execution``, the same on every backend) and the advice to pass
``backward="hand"`` for small batches: for each cell (LSTM, GRU), batch size
``B`` and hidden size ``H`` the many-to-one model::

    model = serial(recurrent(cell, return_sequences=False, execution=Execution(backward=...)), dense(1))
    loss  = mean over the batch of (model(x) - y) ** 2

is built twice, with ``Execution(backward="hand")`` and
``Execution(backward="autodiff")``, and the
jitted ``jax.value_and_grad(loss)`` of a batch ``[B, T, I]`` is timed: one
call to compile, one more untimed, then ``--repeats`` calls of each,
alternating, each ending with ``block_until_ready``. Both must give the same
loss and gradients (1e-4 relative) before they are timed. Reported: the
median times, ``autodiff / hand`` (above 1: the hand-written pass is
faster) and which of the two was the faster; the default, ``Execution()``'s
``backward``, is ``"autodiff"`` whatever they say.

Usage (from the repository root)::

    python experiments/benchmarks/backward.py           # B 16, 64, 128 x H 32, 64, 128, 256, T=100, I=32
    python experiments/benchmarks/backward.py --quick   # a tiny grid, 3 repeats: a check that it runs

Results go to ``--out`` (default ``experiments/results/benchmarks-backward``;
``runs/benchmarks-backward-quick`` with ``--quick``): ``results.md`` and
``results.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import jax
import jax.numpy as jnp

import scanrnn
from common import (command_line, default_out, describe, load_average, machine_info, markdown_table, table,
                    write_results)

CELLS = {"lstm": scanrnn.lstm, "gru": scanrnn.gru}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="B 2, 4 x H 8, 64, T=5, I=3, 3 repeats")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 16 64 128)")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 32 64 128 256)")
    p.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=sorted(CELLS))
    p.add_argument("--steps", type=int, help="T (default 100)")
    p.add_argument("--inputs", type=int, default=None, help="I (default 32)")
    p.add_argument("--repeats", type=int, help="timed calls of each (default 11)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="the results folder")
    args = p.parse_args(argv)
    quick = args.quick
    args.batch = args.batch or ([2, 4] if quick else [16, 64, 128])
    args.hidden = args.hidden or ([8, 64] if quick else [32, 64, 128, 256])
    args.steps = args.steps or (5 if quick else 100)
    args.inputs = args.inputs or (3 if quick else 32)
    args.repeats = args.repeats or (3 if quick else 11)
    args.out = args.out or str(default_out("benchmarks-backward", quick))
    return args


def train_step(cell_name, hidden, backward, data, seed):
    """The jitted loss-and-gradients function and its params for one configuration."""
    model = scanrnn.serial(
        scanrnn.recurrent(CELLS[cell_name](hidden), return_sequences=False,
                          execution=scanrnn.Execution(backward=backward)),
        scanrnn.dense(1),
    )
    x, y = data
    params = model.init(jax.random.key(seed), x.shape[-1])

    def loss(p, x, y):
        return jnp.mean(jnp.square(jax.vmap(model.apply, in_axes=(None, 0))(p, x) - y))

    return jax.jit(jax.value_and_grad(loss)), params


def measure(cell_name, batch, hidden, args):
    kx, ky = jax.random.split(jax.random.key(args.seed + 1))
    data = (jax.random.normal(kx, (batch, args.steps, args.inputs), jnp.float32),
            jax.random.normal(ky, (batch, 1), jnp.float32))
    fns = {b: train_step(cell_name, hidden, b, data, args.seed) for b in ("hand", "autodiff")}
    outputs = {b: jax.block_until_ready(f(p, *data)) for b, (f, p) in fns.items()}
    for a, b in zip(jax.tree.leaves(outputs["hand"]), jax.tree.leaves(outputs["autodiff"])):
        scale = float(jnp.max(jnp.abs(b))) + 1e-30
        if float(jnp.max(jnp.abs(a - b))) > 1e-4 * scale:
            raise SystemExit(f"{cell_name} B={batch} H={hidden}: the two backward passes disagree")
    for f, p in fns.values():
        jax.block_until_ready(f(p, *data))
    times = {b: [] for b in fns}
    for _ in range(args.repeats):
        for b, (f, p) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(f(p, *data))
            times[b].append(time.perf_counter() - start)
    hand, autodiff = (1e3 * statistics.median(times[b]) for b in ("hand", "autodiff"))
    return {"cell": cell_name, "B": batch, "H": hidden, "hand_ms": hand, "autodiff_ms": autodiff,
            "autodiff_over_hand": autodiff / hand, "faster": "hand" if hand < autodiff else "autodiff"}


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    machine = f"{describe(machine_info())}, load average {load_average()}"
    print(f"T={args.steps}, I={args.inputs}, median of {args.repeats}; {machine}", flush=True)
    rows = []
    for cell_name, batch, hidden in itertools.product(args.cells, args.batch, args.hidden):
        row = measure(cell_name, batch, hidden, args)
        rows.append(row)
        print(f"{cell_name:5s} B={batch:<4d} H={hidden:<4d} hand {row['hand_ms']:9.2f} ms  autodiff "
              f"{row['autodiff_ms']:9.2f} ms  autodiff/hand {row['autodiff_over_hand']:.2f}", flush=True)
    header = ["cell", "B", "H", "hand ms", "autodiff ms", "autodiff / hand", "faster"]
    cells = [[r["cell"], r["B"], r["H"], f"{r['hand_ms']:.2f}", f"{r['autodiff_ms']:.2f}",
              f"{r['autodiff_over_hand']:.2f}", r["faster"]] for r in rows]
    print()
    print(table(cells, header))
    command = command_line(__file__, argv)
    settings = {"T": args.steps, "I": args.inputs, "repeats": args.repeats, "seed": args.seed, "quick": args.quick}
    markdown = ("# The hand-written backward pass against autodiff\n\n"
                f"`{command}`: training step (loss and gradients) of a many-to-one model, T={args.steps}, "
                f"I={args.inputs}, median of {args.repeats} calls; {machine}. `autodiff / hand` above 1 means "
                "the hand-written pass is faster. The default, `scanrnn.Execution().backward`, is "
                f"`{scanrnn.Execution().backward!r}` on every backend.\n\n" + markdown_table(cells, header) + "\n")
    write_results(args.out, {"command": command, "machine": machine, "settings": settings, "rows": rows,
                             "wall_seconds": time.perf_counter() - wall}, markdown)
    print(f"\nwrote {args.out}/results.md and results.json ({time.perf_counter() - wall:.0f} s)")


if __name__ == "__main__":
    main()
