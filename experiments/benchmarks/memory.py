"""Peak memory of an LSTM training step against sequence length, for each ``remat`` option.

The step is the loss and gradients w.r.t. all params of a many-to-one model,
``jax.jit(jax.value_and_grad(loss))`` of::

    model = serial(recurrent(lstm(H), return_sequences=False, execution=Execution(remat=...)), dense(1))
    loss  = mean over the batch of (model(x) - y) ** 2        # x [B, T, I], y [B, 1]

with ``B=16, H=128, I=32`` by default and ``T`` in ``1000, 10000, 100000``.
Each configuration runs in a fresh process, which reports

- ``rss``: its peak resident set size (``ru_maxrss``) minus the peak after
  its imports, i.e. what building the data and params, compiling and running
  the step added (data ``x`` is ``4 B T I`` bytes of it);
- ``xla temp`` and ``xla args+out``: XLA's ``memory_analysis()`` of the
  compiled step (the temporary buffers, where the scan's saved residuals
  live, and the arguments and outputs);
- ``ms/step``: the median over ``--repeats`` calls after the first.

A plain ``lax.scan`` saves about ``T B (several) H`` floats for the backward
pass (for the LSTM the gate activations, ``c`` and ``tanh(c)``), so
``remat="none"`` grows linearly in ``T``; the other values of
``scanrnn.Execution.remat`` (``"step"``: save only the carries and recompute
each step; ``"sqrt"``: checkpoint every ``sqrt(T)`` steps, Chen et al. 2016)
trade recomputation for memory. The other fields of the ``Execution`` keep
their defaults.

The process compiles the step before running it; when XLA's estimate
(temp + args + out) exceeds ``--run-budget-gib`` (default 40% of the
memory available at start) it reports the estimate and does not run. The
parent kills a process whose RSS passes ``--limit-gib`` (default: 75% of the
memory available at start) and reports it as over the limit; a process that
dies (out of memory, killed) or times out is reported, not crashed on.

Usage (from the repository root)::

    python experiments/benchmarks/memory.py                      # T = 1e3, 1e4, 1e5
    python experiments/benchmarks/memory.py --limit-gib 4
    python experiments/benchmarks/memory.py --quick              # T = 100, 1000; a few seconds each

Writes ``results.json``, ``results.md`` and ``memory.png`` to ``--out``
(default ``experiments/results/benchmarks-memory/``; with ``--quick``
``runs/benchmarks-memory-quick/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import command_line, default_out, load_average, markdown_table, scanrnn_source, table, write_results

REMATS = ("none", "step", "sqrt")
GIB = 2**30
MIB = 2**20


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def available_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo (physical memory when unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# Where the remat option goes (recorded in results.json as "via" and "remat_via").
REMAT_VIA = "recurrent(execution=Execution(remat=...))"


def many_to_one_lstm(hidden: int, remat: str):
    """``serial(recurrent(lstm(H), return_sequences=False, execution=Execution(remat=...)), dense(1))``."""
    import scanrnn as sr

    layer = sr.recurrent(sr.lstm(hidden), return_sequences=False, execution=sr.Execution(remat=remat))
    return sr.serial(layer, sr.dense(1))


# --------------------------------------------------------------------------
# The worker: one configuration in a fresh process.


def worker(spec: dict) -> dict:
    """Build, compile and (budget permitting) run one configuration; return its measurements."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    baseline = _maxrss_bytes()
    out = {**spec, "baseline_rss": baseline}
    B, T, I, H = spec["batch"], spec["steps"], spec["inputs"], spec["hidden"]
    out["via"] = REMAT_VIA
    model = many_to_one_lstm(H, spec["remat"])
    params = model.init(jax.random.key(spec["seed"]), I)
    rng = np.random.default_rng(spec["seed"])
    x = jnp.asarray(rng.standard_normal((B, T, I), dtype=np.float32))
    y = jnp.asarray(rng.standard_normal((B, 1), dtype=np.float32))

    def loss(params, x, y):
        pred = jax.vmap(model.apply, in_axes=(None, 0))(params, x)
        return jnp.mean(jnp.square(pred - y))

    t0 = time.perf_counter()
    step = jax.jit(jax.value_and_grad(loss)).lower(params, x, y).compile()
    out["compile_s"] = time.perf_counter() - t0
    stats = step.memory_analysis()
    if stats is not None:
        out["xla_temp"] = int(stats.temp_size_in_bytes)
        out["xla_args_out"] = int(stats.argument_size_in_bytes + stats.output_size_in_bytes)
        estimate = out["xla_temp"] + out["xla_args_out"]
        if estimate > spec["run_budget"]:
            out["rss"] = _maxrss_bytes() - baseline
            return {**out, "status": f"not run: XLA needs {estimate / GIB:.2f} GiB > budget "
                                     f"{spec['run_budget'] / GIB:.2f} GiB"}
    times = []
    for _ in range(1 + spec["repeats"]):
        t0 = time.perf_counter()
        value, _ = jax.block_until_ready(step(params, x, y))
        times.append(time.perf_counter() - t0)
    out["loss"] = float(value)
    out["first_call_ms"] = times[0] * 1e3
    out["ms_per_step"] = float(np.median(times[1:]) * 1e3) if times[1:] else times[0] * 1e3
    out["rss"] = _maxrss_bytes() - baseline
    return {**out, "status": "ok"}


# --------------------------------------------------------------------------
# The parent: one subprocess per configuration, watched.


def _rss_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_config(spec: dict, kill_bytes: int, timeout: float) -> dict:
    """Run :func:`worker` in a fresh process; kill it past ``kill_bytes`` of RSS or ``timeout`` seconds."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start, peak, reason = time.time(), 0, None
    while process.poll() is None:
        peak = max(peak, _rss_of(process.pid))
        if peak > kill_bytes:
            reason = f"killed: RSS passed {kill_bytes / GIB:.1f} GiB"
        elif time.time() - start > timeout:
            reason = f"killed: timed out after {timeout:.0f} s"
        if reason:
            process.kill()
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    if reason:
        return {**spec, "status": reason, "watched_peak_rss": peak}
    if process.returncode != 0:
        why = f"signal {-process.returncode}" if process.returncode < 0 else f"exit status {process.returncode}"
        if process.returncode == -9:
            why += " (killed, likely out of memory)"
        tail = stderr.strip().splitlines()[-1:] or [""]
        return {**spec, "status": f"failed: {why}: {tail[0][:200]}", "watched_peak_rss": peak}
    try:
        return {**json.loads(stdout.strip().splitlines()[-1]), "watched_peak_rss": peak}
    except (json.JSONDecodeError, IndexError):
        return {**spec, "status": f"failed: no result ({stderr.strip()[-200:]})", "watched_peak_rss": peak}


def fmt_mib(value) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def table_rows(results: list, limit_gib) -> tuple:
    """``(rows, header)`` of the results table."""
    header = ["T", "remat", "status", "xla temp MiB", "xla args+out MiB", "rss MiB", "ms/step"]
    if limit_gib:
        header.append(f"rss < {limit_gib:g} GiB")
    rows = []
    for r in results:
        row = [f"{r['steps']:,}", r["remat"], r["status"], fmt_mib(r.get("xla_temp")), fmt_mib(r.get("xla_args_out")),
               fmt_mib(r.get("rss")), "-" if "ms_per_step" not in r else f"{r['ms_per_step']:,.1f}"]
        if limit_gib:
            row.append("-" if r.get("status") != "ok" else ("yes" if r["rss"] < limit_gib * GIB else "no"))
        rows.append(row)
    return rows, header


def plot(results: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for remat in REMATS:
        pts = [(r["steps"], r["xla_temp"]) for r in results if r["remat"] == remat and r.get("xla_temp")]
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"remat={remat} (XLA temp)")
        pts = [(r["steps"], r["rss"]) for r in results if r["remat"] == remat and r.get("status") == "ok"]
        if pts:
            ax.plot(*zip(*pts), "x--", label=f"remat={remat} (RSS growth)")
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="bytes",
           title="LSTM training step memory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T = 100, 1000 and one repeat")
    p.add_argument("--steps", type=int, nargs="+", help="sequence lengths T (default 1000 10000 100000)")
    p.add_argument("--remat", nargs="+", choices=REMATS, default=list(REMATS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--inputs", type=int, default=32)
    p.add_argument("--repeats", type=int, help="timed calls after the first (default 3; 1 with --quick)")
    p.add_argument("--limit-gib", type=float,
                   help="kill a configuration whose RSS passes this and report whether each peak stays below it")
    p.add_argument("--run-budget-gib", type=float,
                   help="compile only (report XLA's estimate) when the estimate exceeds this "
                        "(default: 40%% of the memory available at start)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    start = time.time()
    steps = args.steps or ([100, 1000] if args.quick else [1000, 10000, 100000])
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    out = args.out or default_out("benchmarks-memory", args.quick)
    available = available_bytes()
    kill_bytes = int(args.limit_gib * GIB) if args.limit_gib else int(0.75 * available)
    budget = int(args.run_budget_gib * GIB) if args.run_budget_gib else int(0.4 * available)
    via = REMAT_VIA
    where = f"remat goes to scanrnn.{via}"
    print(f"memory available {available / GIB:.1f} GiB; run budget {budget / GIB:.1f} GiB; "
          f"kill past {kill_bytes / GIB:.1f} GiB RSS; {where}")

    results = []
    for T in steps:
        for remat in args.remat:
            spec = {"batch": args.batch, "steps": T, "inputs": args.inputs, "hidden": args.hidden, "remat": remat,
                    "seed": args.seed, "repeats": repeats, "run_budget": budget}
            results.append(run_config(spec, kill_bytes, args.timeout))
            r = results[-1]
            print(f"T={T:>7,} remat={remat:<5} {r['status']:<12} xla temp {fmt_mib(r.get('xla_temp'))} MiB, "
                  f"rss {fmt_mib(r.get('rss'))} MiB, {r.get('ms_per_step', float('nan')):,.1f} ms/step")

    rows, header = table_rows(results, args.limit_gib)
    print()
    print(table(rows, header, align="rllrrrr" + "l" * bool(args.limit_gib)))
    import jax

    report = {
        "command": command_line(__file__, argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {"batch": args.batch, "hidden": args.hidden, "inputs": args.inputs, "steps": steps,
                     "remat": args.remat, "repeats": repeats, "seed": args.seed, "limit_gib": args.limit_gib,
                     "run_budget_bytes": budget, "kill_bytes": kill_bytes, "remat_via": via},
        "jax": jax.__version__,
        "scanrnn": scanrnn_source(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "wall_time_s": time.time() - start,
        "results": results,
    }
    write_results(out, report, (
        f"# LSTM training-step memory (B={args.batch}, H={args.hidden}, I={args.inputs})\n\n"
        f"`{report['command']}`, {report['date']}, jax {jax.__version__}, scanrnn {report['scanrnn']}, "
        f"{os.cpu_count()} cores, load average {report['load_average']}. rss: peak RSS of a fresh process minus "
        f"its peak after imports; xla: `memory_analysis()` of the compiled step (temp buffers; arguments and "
        f"outputs); ms/step under the load of the moment.\n\n{markdown_table(rows, header)}\n"))
    plot(results, out / "memory.png")
    print(f"\nwrote {out}/results.json, results.md, memory.png ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
