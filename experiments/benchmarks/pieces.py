"""The bidirectional layer and stacked layers, timed against running their pieces separately.

scanrnn runs the two directions of a bidirectional layer in one
``lax.scan``, ``jax.vmap`` over the stacked direction axis, or as two scans
(``scanrnn.Execution``'s ``one_scan``), and a stack of layers as one jitted
program. This script measures what each costs or saves against its pieces, on one shape
(default the harness's medium case: B=128, T=200, I=64, H=256), for a
training step (the jitted loss and gradients of a many-to-one MSE loss,
``block_until_ready``) and for inference (the jitted forward pass).

Bidirectional (LSTM and GRU; params stacked on a direction axis of 2):

- ``one scan``: ``serial(bidirectional(cell, return_sequences=False,
  execution=Execution(one_scan=True)), dense(1))``, both directions in one
  ``lax.scan`` through ``jax.vmap`` over the direction axis (what cuDNN does,
  and ``scanrnn.execution.ACCELERATOR``'s choice);
- ``two scans``: the same with ``one_scan=False``, a forward scan and then a
  reverse one (the default, ``Execution()``, on every backend); checked to
  give the same loss and gradients before timing;
- ``apart``: the forward direction alone plus the backward direction alone
  (``unroll`` and ``unroll(..., reverse=True)``, each with its own
  ``dense(1)`` on ``H`` features), two programs, the sum of their median
  times.

Stacked (a two-layer LSTM):

- ``stacked``: ``serial(recurrent(cell), recurrent(cell, return_sequences=False), dense(1))``;
- ``apart``: layer 1 alone (``return_sequences=True``, a mean squared error
  against a target on every step, so its backward pass gets a cotangent on
  every step as in the stack) plus layer 2 alone on a ``[B, T, H]`` input
  (with the gradient w.r.t. that input too, as the stack needs), two
  programs, the sum of their median times.

Every ``unroll`` takes ``Execution(backward=--backward)`` (default
``"autodiff"``, the default of ``Execution``) and the other fields at their
defaults.

Timed in one process, interleaved, after warm-up, median of ``--repeats``
(``time_round_robin`` of ``common.py``). ``÷ combined`` is a row's median over
the combined program's (``one scan`` / ``stacked``): above 1, the combined
program is the faster.

Usage (from the repository root)::

    python experiments/benchmarks/pieces.py            # medium: B=128, T=200, I=64, H=256
    python experiments/benchmarks/pieces.py --quick    # B=4, T=6, I=3, H=8, 3 repeats: a check that it runs

Results go to ``--out`` (default ``experiments/results/benchmarks-pieces/``
and the shape, such as ``B128-T200-I64-H256``; ``runs/benchmarks-pieces-quick``
with ``--quick``): ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import scanrnn
from common import (command_line, default_out, describe, load_average, machine_info, markdown_table, rel_err, table,
                    time_round_robin, write_results)

CELLS = {"lstm": scanrnn.lstm, "gru": scanrnn.gru}
CHECK_RTOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="B=4, T=6, I=3, H=8, 3 repeats")
    p.add_argument("--batch", type=int, help="B (default 128)")
    p.add_argument("--steps", type=int, help="T (default 200)")
    p.add_argument("--inputs", type=int, help="I (default 64)")
    p.add_argument("--hidden", type=int, help="H (default 256)")
    p.add_argument("--bidir-cells", nargs="*", choices=sorted(CELLS), default=["lstm", "gru"])
    p.add_argument("--stacked-cells", nargs="*", choices=sorted(CELLS), default=["lstm"])
    p.add_argument("--backward", default="autodiff", choices=["hand", "autodiff"],
                   help="Execution.backward of every unroll (default autodiff, Execution's default)")
    p.add_argument("--repeats", type=int, help="timed measurements of each program (default 10)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds one measurement lasts at least")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="the results folder")
    args = p.parse_args(argv)
    quick = args.quick
    args.batch = args.batch or (4 if quick else 128)
    args.steps = args.steps or (6 if quick else 200)
    args.inputs = args.inputs or (3 if quick else 64)
    args.hidden = args.hidden or (8 if quick else 256)
    args.repeats = args.repeats or (3 if quick else 10)
    shape = f"B{args.batch}-T{args.steps}-I{args.inputs}-H{args.hidden}"
    args.out = args.out or str(default_out("benchmarks-pieces", True) if quick
                               else default_out("benchmarks-pieces", False) / shape)
    return args


def batched(apply):
    """``apply(params, x)`` of one example, over a batch: ``[B, ...]``."""
    return jax.vmap(apply, in_axes=(None, 0))


def mse(apply):
    """The mean squared error of ``apply`` over a batch against a target of its output's shape."""
    return lambda params, x, y: jnp.mean(jnp.square(batched(apply)(params, x) - y))


def program(apply, params, x, y, wrt_input=False):
    """The jitted training and inference steps of ``apply`` on ``(x, y)``, and the first step's outputs.

    The training step is the loss and its gradients w.r.t. the params, and
    w.r.t. ``x`` too with ``wrt_input``.
    """
    train = jax.jit(jax.value_and_grad(mse(apply), argnums=(0, 1) if wrt_input else 0))
    infer = jax.jit(batched(apply))
    first = jax.block_until_ready(train(params, x, y))
    jax.block_until_ready(infer(params, x))
    return {"train": lambda: jax.block_until_ready(train(params, x, y)),
            "infer": lambda: jax.block_until_ready(infer(params, x))}, first


def check_same(name, a, b):
    """``a`` and ``b`` (pytrees of arrays) agree within ``CHECK_RTOL``, or the script stops."""
    errors = [rel_err(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    if len(jax.tree.leaves(a)) != len(jax.tree.leaves(b)) or max(errors) > CHECK_RTOL:
        raise SystemExit(f"{name}: the two programs disagree (largest relative error {max(errors):.2e})")


def bidirectional_programs(cell_name, args, x, y):
    """``one scan``, ``two scans`` and the two directions apart, for one cell."""
    cell, B, H = CELLS[cell_name](args.hidden), args.batch, args.hidden
    head = scanrnn.dense(1)

    def model(one_scan):
        execution = scanrnn.Execution(backward=args.backward, one_scan=one_scan)
        layer = scanrnn.bidirectional(cell, return_sequences=False, execution=execution)
        return scanrnn.serial(layer, head)

    def one_direction(reverse):
        def apply(params, x):
            p, dense = params
            _, ys = scanrnn.unroll(cell, p, x, reverse=reverse, execution=scanrnn.Execution(backward=args.backward))
            return head.apply(dense, ys[0] if reverse else ys[-1])

        return apply

    k_model, k_forward, k_backward = jax.random.split(jax.random.key(args.seed), 3)
    params = model(True).init(k_model, args.inputs)
    one, first = program(model(True).apply, params, x, y)
    two, second = program(model(False).apply, params, x, y)
    check_same(f"bidirectional {cell_name} (B={B}, H={H})", first, second)
    pieces = {}
    for name, reverse, key in (("forward", False, k_forward), ("backward", True, k_backward)):
        piece_params = (jax.tree.map(lambda a: a[int(reverse)], params[0]), head.init(key, H))
        pieces[name], _ = program(one_direction(reverse), piece_params, x, y)
    return {"one scan": one, "two scans": two}, pieces


def stacked_programs(cell_name, args, x, y):
    """The two-layer stack and its two layers apart, for one cell."""
    cell, B, T, H = CELLS[cell_name](args.hidden), args.batch, args.steps, args.hidden
    opts = {"execution": scanrnn.Execution(backward=args.backward)}
    first_layer, last_layer = scanrnn.recurrent(cell, **opts), scanrnn.recurrent(cell, return_sequences=False, **opts)
    model = scanrnn.serial(first_layer, last_layer, scanrnn.dense(1))
    second = scanrnn.serial(last_layer, scanrnn.dense(1))  # takes the stack's params[1:]
    params = model.init(jax.random.key(args.seed), args.inputs)
    k_target, k_hidden = jax.random.split(jax.random.key(args.seed + 2))
    target = jax.random.normal(k_target, (B, T, H), jnp.float32)
    hidden = jnp.tanh(jax.random.normal(k_hidden, (B, T, H), jnp.float32))  # layer 2's input, in (-1, 1) like h
    stack, _ = program(model.apply, params, x, y)
    pieces = {
        "layer 1": program(first_layer.apply, params[0], x, target)[0],
        "layer 2": program(second.apply, params[1:], hidden, y, wrt_input=True)[0],
    }
    return {"stacked": stack}, pieces


def measure(structure, cell_name, programs, pieces, args):
    """Rows of one structure and cell: each program's train and infer medians, and the pieces' sum."""
    rows = []
    for step in ("train", "infer"):
        fns = {name: fns[step] for name, fns in {**programs, **pieces}.items()}
        timed = time_round_robin(fns, args.repeats, warmup=1, min_time=args.min_time)
        combined = timed[next(iter(programs))]["median_ms"]
        for name in programs:
            rows.append({"structure": structure, "cell": cell_name, "step": step, "program": name,
                         "median_ms": timed[name]["median_ms"], "iqr_ms": timed[name]["iqr_ms"],
                         "over_combined": timed[name]["median_ms"] / combined})
        apart = sum(timed[name]["median_ms"] for name in pieces)
        rows.append({"structure": structure, "cell": cell_name, "step": step,
                     "program": "apart: " + " + ".join(pieces), "median_ms": apart,
                     "iqr_ms": None, "over_combined": apart / combined,
                     "pieces_ms": {name: timed[name]["median_ms"] for name in pieces}})
    return rows


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    info = machine_info()
    before = load_average()
    B, T, I, H = args.batch, args.steps, args.inputs, args.hidden
    shape = f"B={B}, T={T}, I={I}, H={H}"
    print(f"{shape}, backward={args.backward!r}, median of {args.repeats}; {describe(info)}, load average {before}",
          flush=True)
    kx, ky = jax.random.split(jax.random.key(args.seed + 1))
    x = jax.random.normal(kx, (B, T, I), jnp.float32)
    y = jax.random.normal(ky, (B, 1), jnp.float32)
    rows = []
    for structure, cells, build in (("bidirectional", args.bidir_cells, bidirectional_programs),
                                    ("2-layer", args.stacked_cells, stacked_programs)):
        for cell_name in cells:
            new = measure(structure, cell_name, *build(cell_name, args, x, y), args)
            rows += new
            for r in new:
                print(f"{structure:13s} {cell_name:4s} {r['step']:5s} {r['program']:28s} "
                      f"{r['median_ms']:10.2f} ms  ÷ combined {r['over_combined']:.2f}", flush=True)
    header = ["structure", "cell", "step", "program", "median ms", "IQR ms", "÷ combined"]
    cells = [[r["structure"], r["cell"], r["step"], r["program"], f"{r['median_ms']:.2f}",
              "" if r["iqr_ms"] is None else f"{r['iqr_ms']:.2f}", f"{r['over_combined']:.2f}"] for r in rows]
    print()
    print(table(cells, header))
    after = load_average()
    command = command_line(__file__, argv)
    machine = f"{describe(info)}, load average {before} before, {after} after"
    settings = {"B": B, "T": T, "I": I, "H": H, "backward": args.backward, "repeats": args.repeats,
                "seed": args.seed, "quick": args.quick}
    markdown = ("# The bidirectional layer and stacked layers against their pieces\n\n"
                f"`{command}`: {shape}, `backward={args.backward!r}`, median of {args.repeats} interleaved "
                f"measurements; {machine}; scanrnn {info['scanrnn_source']}.\n\n"
                "`÷ combined` is the row's time over the combined program's (`one scan`, `stacked`): above 1, "
                "the combined program is faster. `apart` is the sum of the pieces' medians, each its own "
                "program.\n\n" + markdown_table(cells, header) + "\n")
    write_results(args.out, {"command": command, "machine": info, "load_average": [before, after],
                             "settings": settings, "rows": rows, "wall_seconds": time.perf_counter() - wall}, markdown)
    print(f"\nwrote {args.out}/results.md and results.json ({time.perf_counter() - wall:.0f} s)")


if __name__ == "__main__":
    main()
