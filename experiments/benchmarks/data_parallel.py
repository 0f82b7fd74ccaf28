"""Data parallelism's overheads: one training step on 1, 2 and 4 devices, the same batch.

Each device count runs in a process of its own (``XLA_FLAGS=
--xla_force_host_platform_device_count=N`` must be set before JAX starts),
times ``make_train_step(model, mse, sgd, devices=N)`` on one batch handed
from the host each call, as ``fit`` does, and reports the loss it computed
(checked against one device's), the per-device batch, the gradient bytes
every all-reduce of a step carries (the params' bytes) and the all-reduce
operations in the compiled step. The model is an LSTM layer read at its
last step and a dense output, on run_cases.py's shapes.

On a CPU the simulated devices share the same cores, so this measures the
cost of sharding, the collectives and the host hand-over, not a speed-up:
a step on N simulated devices does the same arithmetic on the same cores.

    python experiments/benchmarks/data_parallel.py            # small and medium, 1 2 4 devices
    python experiments/benchmarks/data_parallel.py --quick    # tiny, 1 2 devices
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from common import (
    command_line, default_out, describe, load_average, machine_info, markdown_table, table, time_round_robin,
    write_results,
)
from run_cases import CASES, step_flops


def worker(args) -> dict:
    """One device count, in this process (XLA_FLAGS set by the parent): the step's figures as a dict."""
    import jax
    import numpy as np
    import optax

    import scanrnn as sr
    from scanrnn.train import Batch, make_train_step, mse

    case = CASES[args.case]
    model = sr.serial(sr.recurrent(sr.lstm(case.hidden), return_sequences=False), sr.dense(1))
    params = model.init(jax.random.key(0), case.inputs)
    rng = np.random.default_rng(1)
    batch = Batch(rng.standard_normal((case.batch, case.steps, case.inputs), dtype=np.float32),
                  rng.standard_normal((case.batch, 1), dtype=np.float32))
    optimizer = optax.sgd(1e-2)
    opt_state = optimizer.init(params)
    step = make_train_step(model, mse, optimizer, devices=args.worker)
    mesh = sr.devices.data_mesh(args.worker)
    placed = sr.train._parallel_batch(model, batch, mesh)
    on_mesh = sr.devices.replicate((params, opt_state), mesh)
    text = step.jitted.lower(*on_mesh, placed, None).compile().as_text()
    _, _, metrics = step(params, opt_state, batch)
    times = time_round_robin({"step": lambda: step(params, opt_state, batch)}, repeats=args.repeats, warmup=1,
                             min_time=0.2)["step"]
    return {
        "devices": args.worker, "loss": float(metrics["loss"]), "per_device_batch": case.batch // args.worker,
        "params": int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
        "gradient_bytes": int(sum(leaf.nbytes for leaf in jax.tree.leaves(params))),
        "all_reduce_ops": text.count(" all-reduce("), **times,
    }


def run_worker(devices: int, args) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = [sys.executable, __file__, "--worker", str(devices), "--case", args.case, "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"the worker for {devices} devices failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny case on 1 and 2 devices, 2 repeats")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None,
                        help="run_cases.py's shapes (default: small medium; tiny with --quick)")
    parser.add_argument("--devices", nargs="+", type=int, default=None, help="device counts (default: 1 2 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; 2 with --quick)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a child: this many devices
    parser.add_argument("--case", default="tiny", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    cases = args.cases or (["tiny"] if args.quick else ["small", "medium"])
    counts = args.devices or ([1, 2] if args.quick else [1, 2, 4])
    out = args.out or default_out("benchmarks-data-parallel", args.quick)
    started = time.perf_counter()
    info = machine_info()
    rows, results = [], []
    for name in cases:
        args.case = name
        case = CASES[name]
        one = None
        for devices in counts:
            r = run_worker(devices, args)
            one = one or r
            r.update(case=name, loss_diff=abs(r["loss"] - one["loss"]), gflop=step_flops(case, "lstm") / 1e9)
            if r["loss_diff"] > 1e-6 * max(1.0, abs(one["loss"])):
                raise SystemExit(f"{name} on {devices} devices: loss {r['loss']} against {one['loss']} on one")
            results.append(r)
            rows.append([name, devices, r["per_device_batch"], f"{r['median_ms']:,.1f}",
                         f"{r['median_ms'] / one['median_ms']:.2f}", f"{r['gradient_bytes'] / 1e6:.2f}",
                         r["all_reduce_ops"], f"{r['gflop']:.2f}", f"{r['loss_diff']:.1e}"])
            print(table(rows[-1:], HEADER), flush=True)
    print(table(rows, HEADER))
    data = {"date": datetime.date.today().isoformat(), "command": command_line(__file__, argv), "machine": info,
            "load_average_at_end": load_average(), "results": results, "seconds": time.perf_counter() - started}
    md = (f"# A training step on 1, 2 and 4 devices\n\n`{data['command']}` on {describe(info)}, {data['date']}; "
          f"one LSTM layer (last step) and a dense output, SGD, float32, medians of {args.repeats}. Simulated CPU "
          "devices share the same cores: the ratio is the overhead of sharding, all-reduce and hand-over, "
          "not a speed-up.\n\n" + markdown_table(rows, HEADER))
    paths = write_results(out, data, md)
    print("wrote " + " and ".join(str(p) for p in paths) + f" ({data['seconds']:.0f} s)")
    return 0


HEADER = ["case", "devices", "B / device", "ms (median)", "/ 1 device", "MB all-reduced", "all-reduce ops",
          "GFLOP / step", "loss diff"]


if __name__ == "__main__":
    sys.exit(main())
