"""Benchmark harness: scanrnn against ``torch.nn`` and ``flax.linen`` recurrent layers.

For every case (batch ``B``, steps ``T``, inputs ``I``, hidden ``H``; one or
two layers, one or two directions) and every cell (LSTM, GRU, simple tanh
RNN) the harness builds the same many-to-one model three times::

    h = last hidden state of the last recurrent layer   # [B, H], or [B, 2H] bidirectional
    pred = dense(h)                                      # [B, 1]
    loss = mean((pred - target) ** 2)                    # MSE against a target [B, 1]

- scanrnn: ``jax.vmap`` over the batch of ``serial(recurrent(cell,
  return_sequences=False), dense(1))`` (``bidirectional(...)`` for two
  directions, one ``recurrent`` per layer), params from
  ``scanrnn.interop.from_torch`` of the torch module;
- torch: ``torch.nn.LSTM/GRU/RNN(batch_first=True)`` and ``torch.nn.Linear``;
  for two directions the head reads ``h_n`` of both;
- flax: ``flax.linen.RNN`` of ``OptimizedLSTMCell``, ``GRUCell`` or
  ``SimpleCell`` (``nn.Bidirectional`` for two directions) and
  ``nn.Dense(1)``, with the torch weights mapped onto flax's layout
  (:func:`flax_params_from_torch`).

All three read the same float32 data and the same weights. Before timing, the
losses must agree within 1e-4 relative and the gradients of the first
layer's recurrent kernel and of the head within 1e-3 (max-norm relative); a
failed check is printed, recorded and makes the script exit with status 1.

Timed, in one process, after warm-up (the first calls compile), the median
of ``--repeats`` measurements, interleaved round-robin over implementations
within each repeat (so a drift in machine load hits all of them alike):

- train: loss and gradients w.r.t. all params. JAX: ``jax.jit(
  jax.value_and_grad(loss))`` and ``block_until_ready``. torch: zeroed
  grads, forward, ``loss.backward()`` (and ``torch.cuda.synchronize()`` on a
  GPU);
- infer: the forward pass alone (``jax.jit``; ``torch.inference_mode``).

Reported: median, interquartile range and minimum per step (ms), the ratio
``time / time of scanrnn`` (above 1: scanrnn is faster), achieved GFLOP/s
from the standard matmul count (a training step of an LSTM layer is
``24 B T H (I + H)`` FLOPs, GRU ``18``, simple RNN ``6``; inference one
third; twice for two directions; summed over layers), and peak memory:

- JAX (scanrnn, flax): XLA's ``memory_analysis()`` of the compiled step,
  temp + argument + output bytes (what the executable needs, exactly);
- torch on CPU: peak RSS growth of a fresh process over one call
  (``ru_maxrss`` after minus RSS before; an estimate including allocator
  slack); torch on a GPU: ``torch.cuda.max_memory_allocated`` during a call
  minus the memory allocated before.

The two kinds of memory number are not the same measure; compare them with
that in mind.

Usage (from the repository root)::

    python experiments/benchmarks/run.py                     # full run, writes experiments/results/benchmarks/
    python experiments/benchmarks/run.py --quick             # tiny shapes, ~1 minute
    python experiments/benchmarks/run.py --cases small --cells lstm gru --repeats 20
    python experiments/benchmarks/run.py --cases tiny --scanrnn-variants unroll_steps=4 auto
    python experiments/benchmarks/run.py --quick --scanrnn-variants backward=hand hoist=True,backward=hand

Each ``--scanrnn-variants`` argument is one more scanrnn row, ``KEY=VALUE``
pairs joined by commas, each key a field of :class:`scanrnn.Execution`
(``unroll_steps`` is its ``unroll``) and the other fields at their defaults;
it is labelled as typed, ``scanrnn[backward=hand]``. A key ``Execution``
does not have, a value it refuses, or ``one_scan`` on a one-direction case
skips the variant with a message.

``--out PATH`` is the Markdown report (default
``experiments/results/benchmarks/results.md``;
``runs/benchmarks-quick/results.md`` with ``--quick``); the raw numbers go
to ``results.json`` beside it. Both are rewritten after every (case, cell),
marked partial until the run ends.

The parts live beside this file: ``run_cases.py`` (the cases, their data and
FLOPs, what an implementation is), ``run_torch.py``, ``run_scanrnn.py`` (with
the variants) and ``run_flax.py`` (the three implementations),
``run_checks.py`` (the correctness checks), ``run_report.py`` (the tables and
the Markdown report) and ``common.py`` (the timing loop, machine facts and
the results writer that every script shares).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path

from common import command_line, default_out, load_average, machine_info, time_round_robin, write_json, write_text
from run_cases import CASES, CELLS, FULL_CASES, QUICK_CASES, Case, make_data, step_flops
from run_checks import check_all, failures
from run_flax import flax_impl
from run_report import print_case, print_summary, render_markdown
from run_scanrnn import auto_variants, parse_variant, scanrnn_impl, variant_name
from run_torch import finish_torch_cpu_memory, start_torch_cpu_memory, torch_cpu_memory_worker, torch_impls


def run_case(case: Case, cell: str, args, variants: list) -> dict:
    """Build, check and time every implementation of one (case, cell)."""
    t0 = time.perf_counter()
    data = make_data(case, args.seed)
    # The torch memory of a CPU run is measured in a fresh process, which runs while JAX compiles.
    use_torch = "torch" in args.peers
    measuring = None
    if use_torch and args.device == "cpu":
        measuring = start_torch_cpu_memory(case, cell, args.seed, args.torch_threads[0])
    impls = [scanrnn_impl(case, cell, args.seed, data, {})]
    skipped = []
    for options in variants:
        try:
            impls.append(scanrnn_impl(case, cell, args.seed, data, options, name=variant_name(options)))
        except ValueError as error:
            skipped.append(f"{variant_name(options)}: {error}")
    if "flax" in args.peers:
        impls.append(flax_impl(case, cell, args.seed, data))
    if use_torch:
        rows = torch_impls(case, cell, args.seed, args.device, data, args.torch_threads)
        if measuring is not None:
            rows[0] = rows[0]._replace(memory=finish_torch_cpu_memory(measuring))
        at = len(impls) - ("flax" in args.peers)
        impls[at:at] = rows
    build_s = time.perf_counter() - t0
    checks = check_all(impls)

    fns = {}
    for impl in impls:
        fns[(impl.name, "train")] = impl.train
        fns[(impl.name, "infer")] = impl.infer
    t0 = time.perf_counter()
    timed = time_round_robin(fns, args.repeats, args.warmup, args.min_time)
    timing_s = time.perf_counter() - t0
    reference = impls[0]
    rows = []
    for impl in impls:
        row = {"impl": impl.name, "memory": impl.memory, "loss": impl.loss}
        for kind in ("train", "infer"):
            stats = timed[(impl.name, kind)]
            flops = step_flops(case, cell, train=(kind == "train"))
            row[kind] = {**stats, "gflops": flops / (stats["median_ms"] * 1e-3) / 1e9,
                         "ratio": stats["median_ms"] / timed[(reference.name, kind)]["median_ms"]}
        rows.append(row)
    del impls, fns
    gc.collect()
    return {"case": case._asdict(), "cell": cell, "rows": rows, "checks": checks, "skipped_variants": skipped,
            "flops_train": step_flops(case, cell), "flops_infer": step_flops(case, cell, train=False),
            "build_and_check_s": build_s, "timing_s": timing_s}


# --------------------------------------------------------------------------
# Main.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, 3 repeats: a check that everything runs")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), help=f"default: {' '.join(FULL_CASES)}")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    p.add_argument("--peers", nargs="*", choices=("torch", "flax"), default=["torch", "flax"])
    p.add_argument("--repeats", type=int, help="timed measurements per implementation (default 10; 3 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 2; 1 with --quick)")
    p.add_argument("--min-time", type=float,
                   help="seconds one measurement lasts at least, by repeating short calls (default 0.05; 0.005 quick)")
    p.add_argument("--scanrnn-variants", nargs="*", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="extra scanrnn configurations timed beside the default, each key a field of "
                        "scanrnn.Execution (unroll_steps means unroll), e.g. unroll_steps=4 remat=sqrt "
                        "backward=hand hoist=True one_scan=True; 'auto' adds unroll_steps=4 and every other value "
                        "of remat, backward, hoist and one_scan")
    p.add_argument("--torch-threads", type=int, nargs="+", metavar="N",
                   help="torch CPU threads (default: os.cpu_count()); more values add rows torch[threads=N]")
    p.add_argument("--device", default="auto", help="torch device: cpu, cuda or auto (cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="the Markdown report (results.json goes beside it)")
    p.add_argument("--label", default="", help="a line printed at the top of the report, e.g. 'measured under load'")
    p.add_argument("--torch-memory-worker", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.torch_memory_worker:
        print(json.dumps(torch_cpu_memory_worker(json.loads(args.torch_memory_worker))))
        return 0
    start = time.time()
    load_before = load_average()
    args.cases = args.cases or list(QUICK_CASES if args.quick else FULL_CASES)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.min_time = args.min_time if args.min_time is not None else (0.005 if args.quick else 0.05)
    args.out = args.out or default_out("benchmarks", args.quick) / "results.md"
    json_path = args.out.parent / "results.json"

    peers = []
    for peer in args.peers:
        try:
            __import__(peer)
            peers.append(peer)
        except ImportError:
            print(f"note: {peer} is not installed; it is left out (pip install -e \".[bench]\")")
    args.peers = peers
    if "torch" not in peers:
        raise SystemExit("torch is needed: the weights of every implementation come from a torch module "
                         "(pip install torch==2.13.0)")
    import torch

    args.torch_threads = args.torch_threads or [os.cpu_count()]
    torch.set_num_threads(args.torch_threads[0])
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda"):
        torch.backends.cudnn.enabled = True
    variants = []
    for text in args.scanrnn_variants:
        variants += auto_variants() if text == "auto" else [parse_variant(text)]

    machine = machine_info(("torch", "flax"))
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    machine["torch_device"] = args.device
    print(f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} ({machine['jax_backend']}), "
          f"torch {machine['torch']} ({args.device}), flax {machine['flax']}; load average {load_before}")
    pairs = [(CASES[name], cell) for name in args.cases for cell in args.cells if cell in CASES[name].cells]
    if not pairs:
        raise SystemExit("no (case, cell) pair selected: bidirectional cases run LSTM and GRU, 2-layer ones LSTM")
    command = command_line(__file__, argv)
    results = []

    def write(done: bool) -> dict:
        """Write the report so far (after every pair, so a long run that is stopped leaves its numbers)."""
        report = {
            "label": args.label if done else f"PARTIAL ({len(results)} of {len(pairs)} case/cell pairs done). "
                                            + args.label,
            "machine": machine,
            "command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "settings": {"cases": args.cases, "cells": args.cells, "peers": args.peers, "repeats": args.repeats,
                         "warmup": args.warmup, "min_time": args.min_time, "seed": args.seed, "device": args.device,
                         "variants": variants, "torch_threads": args.torch_threads},
            "load_before": load_before,
            "load_after": load_average(),
            "wall_time_s": time.time() - start,
            "results": results,
        }
        write_text(args.out, render_markdown(report))
        write_json(json_path, report)
        return report

    for case, cell in pairs:
        results.append(run_case(case, cell, args, variants))
        print_case(results[-1])
        if len(results) < len(pairs):
            write(done=False)

    report = write(done=True)
    print_summary(results)
    print(f"\nwrote {args.out} and {json_path} ({report['wall_time_s']:.0f} s)")
    failed = failures(results)
    if failed:
        print(f"correctness checks FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
