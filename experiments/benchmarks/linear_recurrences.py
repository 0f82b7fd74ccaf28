"""Linear recurrences in their three modes against the LSTM and GRU of the same parameter count.

For each sequence length ``T`` and each linear-recurrence cell or block, in
each of its modes (``"sequential"``, ``"associative"``, ``"chunked"``; the
``mode=`` and ``chunk_size=`` options of its factory), the training step of::

    model = serial(layer, dense(H))       # layer: recurrent(cell), or a block (hawk, mamba)
    loss  = sum over the batch, the steps and the features of model(x) ** 2    # x [B, T, H]

is ``jax.jit(jax.value_and_grad(loss))`` with respect to all params, so the
input projections and the output map count as in a real model. The cells and
blocks (``--cells``), with the model width ``H`` (``--width``, default 128):

- ``min_gru``: ``scanrnn.min_gru(H)`` (Feng et al. 2024, arXiv:2410.01201);
- ``lru``: ``scanrnn.state_space.lru(N)``, ``N = H`` complex states (128 by
  default, as in the reference figure below; Orvieto et al. 2023,
  arXiv:2303.06349);
- ``s5``: ``scanrnn.state_space.s5(P)``, ``P = H`` (``P / 2`` complex states
  kept, one of each conjugate pair; Smith et al. 2023, arXiv:2208.04933);
- ``rg_lru``: ``scanrnn.griffin.rg_lru()``, width ``H``, and ``hawk``, the
  block ``scanrnn.griffin.hawk(H)`` (De et al. 2024, arXiv:2402.19427);
- ``selective_ssm``: ``scanrnn.mamba.selective_ssm(16)``, width ``H``, and
  ``mamba``, the block ``scanrnn.mamba.mamba()`` (``N = 16``, expand 2),
  width ``H`` (Gu and Dao 2023, arXiv:2312.00752).

Every cell is compared with the peers ``serial(recurrent(lstm(h)),
dense(H))`` and the same with ``gru(h)``, ``h`` chosen to make the model's
parameter count closest to the cell's model's (both counts are in the
table; peers of equal ``h`` are built once).

**Checks.** Before timing, the modes of each cell must give the same loss
on the same params and data (1e-4 relative); the check is printed and
recorded, a failure makes the script exit with status 1 after writing.

**Time.** Every step is compiled once (not timed) and called once (the
loss of the check); then, after one calibrating call,
``--repeats`` (default 3) interleaved measurements
(:func:`common.time_round_robin`: each repeat times every case once,
starting from a different one, each call ending in ``block_until_ready``)
of every case at that ``T``. Reported: the median ms per step and, for each
cell, ``vs LSTM`` = LSTM time / cell time and ``vs GRU`` likewise (above 1:
the cell is faster than its peer), and the fastest mode of each cell.

**Run time.** A step at ``T = 16,384`` takes seconds on a 2-core CPU and one
at ``T = 65,536`` four times as long, and compiling an associative or
chunked step takes tens of seconds at any ``T``, so the default run of all
seven cells takes about an hour. Lengths above 16,384 get
``--long-repeats`` (default 1) measurements, and ``--long-modes fastest``
runs each cell there only in the mode that was fastest at the length before.

**Memory.** XLA's ``memory_analysis()`` of the compiled step: temp +
argument + output bytes, what the executable needs (the scan's saved
residuals are in temp). The peak RSS is not measured: it needs a process per
case, which would compile every case twice. A case whose XLA estimate
exceeds ``--memory-budget-gib`` (default 60% of the memory available at
start) is compiled but not run and reported as ``OOM``, as is one whose run
fails for lack of memory.

**Chunk sizes.** A second, small table times the chunked mode of
``--sweep-cell`` (default ``lru``) at ``--sweep-length`` (default 16,384) for
each of ``--sweep-chunk-sizes`` (default 32 64 128 256), interleaved, so
the default chunk size can be chosen from it. The main table's chunked rows
use ``--chunk-sizes`` (default 64; several sizes give one row each).

**The goal.** A plain-JAX LRU (``N = 128`` complex states, ``H = 128``,
``B = 16``, ``T = 16,384``) measured 2.33 s per training step sequential,
3.85 s associative and 2.38 s chunked (``C = 128``), against 2.92 s for
scanrnn's ``lstm(128)``, on this 2-core CPU. The bar: the best mode of
``lru`` trains at least 2x faster than the LSTM of the same parameter count.

Usage (from the repository root)::

    python experiments/benchmarks/linear_recurrences.py            # T = 1,024, 16,384, 65,536; B = 16, H = 128
    python experiments/benchmarks/linear_recurrences.py --quick    # T = 64, 256; B = 2, H = 8; 2 repeats
    python experiments/benchmarks/linear_recurrences.py --cells lru min_gru --lengths 16384 --modes chunked

Writes ``results.json`` and ``results.md`` to ``--out`` (default
``experiments/results/benchmarks-linear-recurrences/``; with ``--quick``
``runs/benchmarks-linear-recurrences-quick/``), rewritten after every
length.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import scanrnn

from common import (
    command_line, default_out, describe, load_average, machine_info, markdown_table, table, time_round_robin,
    write_results,
)
from memory import available_bytes

MODES = ("sequential", "associative", "chunked")
PEERS = ("lstm", "gru")
TOLERANCE = 1e-4  # relative, between the losses of a cell's modes
LONG = 16384  # lengths above this get --long-repeats
MIN_TIME = 0.05  # seconds one measurement lasts at least (time_round_robin)
GIB = 2**30
MB = 1e6


class Entry(NamedTuple):
    """A cell or block under test: where its factory lives and how the layer before ``dense(H)`` is built."""

    factory: Callable  # the cell's or block's factory
    layer: Callable  # (factory, H, mode, chunk_size) -> Layer of [T, H] -> [T, H]
    what: str  # one line for the report


def _cell(make):
    """The layer ``recurrent(make(factory, H, mode=..., chunk_size=...))`` of a cell."""
    return lambda factory, H, mode, chunk_size: scanrnn.recurrent(make(factory, H, mode=mode, chunk_size=chunk_size))


def _block(make):
    """A block that is a Layer already: ``make(factory, H, mode=..., chunk_size=...)``."""
    return lambda factory, H, mode, chunk_size: make(factory, H, mode=mode, chunk_size=chunk_size)


# Each call follows its factory's signature: lru(state_size, *, mode,
# chunk_size), s5(state_size, *, ...), rg_lru(*, ...) (its width is the
# input's), selective_ssm(state_size, *, ...), the blocks hawk(width, *, ...)
# and mamba(*, state_size=16, ...) (its width is the input's).
ENTRIES = {
    "min_gru": Entry(scanrnn.min_gru, _cell(lambda f, H, **o: f(H, **o)), "recurrent(min_gru(H))"),
    "lru": Entry(scanrnn.lru, _cell(lambda f, H, **o: f(H, **o)),
                 "recurrent(lru(N)), N = H complex states"),
    "s5": Entry(scanrnn.s5, _cell(lambda f, H, **o: f(H, **o)),
                "recurrent(s5(P)), P = H (P / 2 complex states)"),
    "rg_lru": Entry(scanrnn.rg_lru, _cell(lambda f, H, **o: f(**o)), "recurrent(rg_lru()), width H"),
    "selective_ssm": Entry(scanrnn.selective_ssm, _cell(lambda f, H, **o: f(16, **o)),
                           "recurrent(selective_ssm(16)), width H"),
    "hawk": Entry(scanrnn.hawk, _block(lambda f, H, **o: f(H, **o)), "the block hawk(H)"),
    "mamba": Entry(scanrnn.mamba, _block(lambda f, H, **o: f(**o)),
                   "the block mamba() (N = 16, expand 2), width H"),
}


# --------------------------------------------------------------------------
# Models, parameter counts and the matched peers.


def model_of(layer, H: int):
    """``serial(layer, dense(H))``."""
    return scanrnn.serial(layer, scanrnn.dense(H))


def count_params(model, H: int) -> int:
    """The number of scalars in ``model.init(key, H)`` (a complex scalar counts as two), without computing them."""
    shapes = jax.eval_shape(lambda k: model.init(k, H), jax.random.key(0))
    return sum(leaf.size * (2 if jnp.issubdtype(leaf.dtype, jnp.complexfloating) else 1)
               for leaf in jax.tree.leaves(shapes))


def peer_model(kind: str, hidden: int, H: int):
    """``serial(recurrent(lstm(hidden) or gru(hidden)), dense(H))``."""
    return model_of(scanrnn.recurrent(getattr(scanrnn, kind)(hidden)), H)


def matched_hidden(kind: str, target: int, H: int) -> int:
    """The hidden size ``h`` of the ``kind`` peer whose model's parameter count is closest to ``target``.

    The count grows with ``h``, so a bisection finds the first ``h`` at or
    above the target; the closer of it and ``h - 1`` wins (the smaller on a tie).
    """
    lo, hi = 1, 2
    while count_params(peer_model(kind, hi, H), H) < target:
        lo, hi = hi, 2 * hi
    while lo < hi:
        mid = (lo + hi) // 2
        if count_params(peer_model(kind, mid, H), H) < target:
            lo = mid + 1
        else:
            hi = mid
    if lo > 1 and (target - count_params(peer_model(kind, lo - 1, H), H)
                   <= count_params(peer_model(kind, lo, H), H) - target):
        return lo - 1
    return lo


# --------------------------------------------------------------------------
# One case: build, compile, measure memory, run once.


class Case(NamedTuple):
    """One row of the table: a cell in one mode, or a peer."""

    name: str  # the row's key, unique within a length
    cell: str  # the cell's name (``lstm(58)`` for a peer)
    mode: str  # the mode, ``chunked C=32`` when several chunk sizes; ``-`` for a peer
    chunk_size: int | None
    model: object  # the Layer
    params_of: str  # the name of the case whose params this one uses (the cell's first mode, or itself)
    role: str  # "cell" or "peer"


def is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "resource_exhausted" in text or "out of memory" in text


def prepare(case: Case, params, x, budget: int) -> dict:
    """Compile the case's training step, read its memory, and (within ``budget``) run it once for its loss."""

    def loss(params, x):
        ys = jax.vmap(case.model.apply, in_axes=(None, 0))(params, x)  # [B, T, H]
        return jnp.sum(jnp.square(ys))

    out = {"status": "ok"}
    try:
        start = time.perf_counter()
        step = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
        out["compile_s"] = time.perf_counter() - start
        stats = step.memory_analysis()
        if stats is not None:
            out["xla"] = {"temp": int(stats.temp_size_in_bytes), "arguments": int(stats.argument_size_in_bytes),
                          "outputs": int(stats.output_size_in_bytes)}
            out["memory_bytes"] = sum(out["xla"].values())
            if out["memory_bytes"] > budget:
                out["status"] = "OOM"
                out["why"] = (f"not run: XLA needs {out['memory_bytes'] / GIB:.2f} GiB > budget "
                              f"{budget / GIB:.2f} GiB")
                return out
        start = time.perf_counter()
        value, _ = jax.block_until_ready(step(params, x))
        out["first_call_s"] = time.perf_counter() - start
        out["loss"] = float(value)
    except Exception as error:  # noqa: BLE001 -- one case failing must not lose the others
        out["status"] = "OOM" if is_oom(error) else "failed"
        out["why"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        return out
    out["run"] = lambda: jax.block_until_ready(step(params, x))
    return out


def check_modes(cell: str, results: dict) -> dict:
    """The losses of a cell's modes (those that ran) and their largest difference from the first, over the largest."""
    losses = {mode: r["loss"] for mode, r in results.items() if "loss" in r}
    if len(losses) < 2:
        return {"losses": losses, "max_rel_diff": None, "ok": True, "note": "fewer than two modes ran"}
    values = np.asarray(list(losses.values()), np.float64)
    diff = float(np.max(np.abs(values - values[0])) / max(float(np.max(np.abs(values))), 1e-30))
    ok = bool(np.all(np.isfinite(values)) and diff <= TOLERANCE)
    return {"losses": losses, "max_rel_diff": diff, "ok": ok}


# --------------------------------------------------------------------------
# The cases of one length.


def mode_labels(modes, chunk_sizes):
    """``(label, mode, chunk_size)`` per row of a cell: one chunked row per chunk size."""
    out = []
    for mode in modes:
        if mode != "chunked":
            out.append((mode, mode, None))
        else:
            for c in chunk_sizes:
                out.append(("chunked" if len(chunk_sizes) == 1 else f"chunked C={c}", mode, c))
    return out


def labels_to_run(labels, only=None) -> list:
    """The mode labels a cell runs in: all of ``labels``, or the one called ``only`` when it is among them."""
    kept = [label for label in labels if label[0] == only]
    return kept or list(labels)


def cell_cases(name: str, factory, H: int, labels) -> list:
    """The cases of one cell, one per mode label; the first mode's params serve them all."""
    entry = ENTRIES[name]
    first = f"{name} {labels[0][0]}"
    cases = []
    for label, mode, chunk in labels:
        layer = entry.layer(factory, H, mode, 64 if chunk is None else chunk)
        cases.append(Case(f"{name} {label}", name, label, chunk, model_of(layer, H), first, "cell"))
    return cases


def peer_cases(hidden: dict, H: int) -> list:
    """One case per distinct ``(kind, h)`` among the peers."""
    distinct = sorted({(kind, h) for peers in hidden.values() for kind, h in peers.items()})
    return [Case(f"{kind}({h})", f"{kind}({h})", "-", None, peer_model(kind, h, H), f"{kind}({h})", "peer")
            for kind, h in distinct]


def run_cases(cases: list, T: int, args, repeats: int, log) -> dict:
    """Prepare every case at ``T``, then time those that ran, interleaved; ``{case name: result}``."""
    rng = np.random.default_rng(args.seed)
    x = jnp.asarray(rng.standard_normal((args.batch, T, args.width), dtype=np.float32))
    params = {}
    results = {}
    for case in cases:
        if case.params_of not in params:
            params[case.params_of] = case.model.init(jax.random.key(args.seed), args.width)
        results[case.name] = prepare(case, params[case.params_of], x, args.budget)
        r = results[case.name]
        log(f"T={T:,} {case.name}: {r['status']}"
            + (f", compile {r['compile_s']:.1f} s, first call {r['first_call_s']:.2f} s" if "loss" in r else "")
            + (f" ({r['why']})" if "why" in r else ""))
    runnable = {name: r.pop("run") for name, r in results.items() if "run" in r}
    if runnable:
        timings = time_round_robin(runnable, repeats=repeats, warmup=0, min_time=MIN_TIME)
        for name, timing in timings.items():
            results[name]["time"] = timing
    for r in results.values():
        r.pop("run", None)
    return results


def bench_length(T: int, cells: dict, hidden: dict, counts: dict, args, log, only=None) -> dict:
    """Every cell in its mode labels and every peer at ``T``: checks, rows and the fastest mode per cell.

    ``only``: ``None``, or ``{cell: label}``, one mode label per cell (a cell
    not in it runs in every mode).
    """
    repeats = args.long_repeats if T > LONG else args.repeats
    labels = mode_labels(args.modes, args.chunk_sizes)
    modes = {name: labels_to_run(labels, (only or {}).get(name)) for name in cells}
    cases = [c for name, factory in cells.items() for c in cell_cases(name, factory, args.width, modes[name])]
    cases += peer_cases(hidden, args.width)
    start = time.perf_counter()
    results = run_cases(cases, T, args, repeats, log)

    checks = {}
    for name in cells:
        checks[name] = check_modes(name, {c.mode: results[c.name] for c in cases if c.cell == name})
        c = checks[name]
        verdict = "ok" if c["ok"] else "FAILED"
        diff = "-" if c["max_rel_diff"] is None else f"{c['max_rel_diff']:.2e}"
        log(f"T={T:,} check {name}: the modes' losses {c['losses']} differ by {diff} relative "
            f"(tolerance {TOLERANCE:g}): {verdict}")

    def median(name):
        t = results[name].get("time")
        return None if t is None else t["median_ms"]

    rows = []
    for case in cases:
        r = results[case.name]
        row = {"T": T, "cell": case.cell, "mode": case.mode, "chunk_size": case.chunk_size, "role": case.role,
               "params": counts[case.cell], **r, "median_ms": median(case.name)}
        if case.role == "cell":
            for kind in PEERS:
                peer = f"{kind}({hidden[case.cell][kind]})"
                row[f"peer_{kind}"] = peer
                ok = row["median_ms"] is not None and median(peer) is not None
                row[f"vs_{kind}"] = median(peer) / row["median_ms"] if ok else None
        rows.append(row)

    fastest = {}
    for name in cells:
        timed = [(r["median_ms"], r["mode"]) for r in rows if r["cell"] == name and r["median_ms"] is not None]
        fastest[name] = min(timed)[1] if timed else None
    return {"T": T, "repeats": repeats, "modes": {name: [l[0] for l in m] for name, m in modes.items()},
            "wall_s": time.perf_counter() - start, "checks": checks, "rows": rows, "fastest": fastest}


def chunk_sweep(name: str, factory, T: int, args, log) -> dict:
    """The chunked mode of one cell at ``T`` for each of ``args.sweep_chunk_sizes``, interleaved."""
    labels = [(f"chunked C={c}", "chunked", c) for c in args.sweep_chunk_sizes]
    cases = cell_cases(name, factory, args.width, labels)
    repeats = args.long_repeats if T > LONG else args.repeats
    start = time.perf_counter()
    results = run_cases(cases, T, args, repeats, log)
    check = check_modes(name, {c.mode: results[c.name] for c in cases})
    log(f"T={T:,} check {name} chunk sizes: differ by {check['max_rel_diff']} relative: "
        f"{'ok' if check['ok'] else 'FAILED'}")
    rows = [{"T": T, "cell": name, "chunk_size": c.chunk_size, **results[c.name],
             "median_ms": results[c.name].get("time", {}).get("median_ms")} for c in cases]
    timed = [r["median_ms"] for r in rows if r["median_ms"] is not None]
    for r in rows:
        r["over_best"] = r["median_ms"] / min(timed) if r["median_ms"] is not None else None
    best = min((r["median_ms"], r["chunk_size"]) for r in rows if r["median_ms"] is not None)[1] if timed else None
    return {"cell": name, "T": T, "repeats": repeats, "wall_s": time.perf_counter() - start, "check": check,
            "rows": rows, "best_chunk_size": best}


# --------------------------------------------------------------------------
# Tables and the report.

HEADER = ["T", "cell", "mode", "params", "step ms (median)", "vs LSTM", "vs GRU", "memory MB"]
ALIGN = "rllrrrrr"
SWEEP_HEADER = ["T", "cell", "chunk size", "step ms (median)", "IQR ms", "÷ best", "memory MB"]
SWEEP_ALIGN = "rlrrrrr"


def _ms(row) -> str:
    if row["status"] != "ok":
        return row["status"]
    return "-" if row.get("median_ms") is None else f"{row['median_ms']:,.1f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mb(row) -> str:
    return "-" if row.get("memory_bytes") is None else f"{row['memory_bytes'] / MB:,.1f}"


def table_rows(length: dict) -> list:
    rows = []
    for r in length["rows"]:
        cell = r["cell"]
        if r["role"] == "cell":
            cell += f" (peers {r['peer_lstm']}, {r['peer_gru']})"
        rows.append([f"{r['T']:,}", cell, r["mode"], f"{r['params']:,}", _ms(r), _ratio(r.get("vs_lstm")),
                     _ratio(r.get("vs_gru")), _mb(r)])
    return rows


def sweep_rows(sweep: dict) -> list:
    return [[f"{r['T']:,}", r["cell"], str(r["chunk_size"]), _ms(r),
             "-" if "time" not in r else f"{r['time']['iqr_ms']:,.1f}", _ratio(r["over_best"]), _mb(r)]
            for r in sweep["rows"]]


def fastest_line(length: dict) -> str:
    def note(cell):
        return " (the only mode run)" if len(length["modes"].get(cell, ())) == 1 else ""

    best = ", ".join(f"{cell}: {mode or 'none ran'}{note(cell)}" for cell, mode in length["fastest"].items())
    return f"T = {length['T']:,}, fastest mode: {best or 'no cells'}."


def check_line(length: dict) -> str:
    parts = []
    for cell, c in length["checks"].items():
        diff = "-" if c["max_rel_diff"] is None else f"{c['max_rel_diff']:.1e}"
        parts.append(f"{cell} {diff} {'ok' if c['ok'] else 'FAILED'}")
    return f"T = {length['T']:,}, the modes' losses, largest relative difference: {'; '.join(parts) or '-'}."


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Linear recurrences against the LSTM and GRU of the same parameter count",
        "",
        f"Training step (`jax.jit(jax.value_and_grad(loss))`, all params) of `serial(layer, dense(H))` on "
        f"`[B, T, H]` inputs, loss = sum of squares of all outputs; B = {s['batch']}, H = {s['width']}, float32. "
        f"`vs LSTM` and `vs GRU`: the peer's median time over the cell's (above 1: the cell is faster); the "
        f"peers `lstm(h)` and `gru(h)` have the hidden size that brings their model's parameter count closest to "
        f"the cell's (their counts are their rows'). Median of {s['repeats']} interleaved measurements "
        f"({s['long_repeats']} above T = {LONG:,}) after a compiling, a checking and a calibrating call. memory: XLA's "
        f"`memory_analysis()` of the compiled step, temp + arguments + outputs (RSS not measured). OOM: XLA's "
        f"estimate over the budget of {s['budget_bytes'] / GIB:.1f} GiB (not run), or the run ran out of memory."
        + (f" Above T = {LONG:,} each cell ran only in its fastest mode at the length before."
           if s["long_modes"] == "fastest" else ""),
        "",
    ]
    if report.get("label"):
        lines += [report["label"], ""]
    for length in report["lengths"]:
        lines += [markdown_table(table_rows(length), HEADER, align=ALIGN), "", fastest_line(length), "",
                  check_line(length), ""]
    sweep = report.get("chunk_sweep")
    if sweep and "rows" in sweep:
        lines += [f"## Chunk sizes: {sweep['cell']}, chunked mode, T = {sweep['T']:,}", "",
                  markdown_table(sweep_rows(sweep), SWEEP_HEADER, align=SWEEP_ALIGN), "",
                  f"Fastest chunk size: {sweep['best_chunk_size']}.", ""]
    elif sweep:
        lines += [f"Chunk-size table skipped: {sweep['skipped']}.", ""]
    failed = [f"{cell} at T = {l['T']:,}" for l in report["lengths"] for cell, c in l["checks"].items() if not c["ok"]]
    if failed:
        lines += ["**Check failed** (the modes disagree): " + ", ".join(failed) + ".", ""]
    if not report["complete"]:
        lines += [f"Partial: the run stopped after T = {[l['T'] for l in report['lengths']]} of {s['lengths']}.", ""]
    m = report["machine"]
    lines += [f"Machine: {describe(m)}; scanrnn {m['scanrnn_source']}. Load average "
              f"{report['load_average']['start']} at the start, {report['load_average'].get('end')} at the end.", "",
              f"Command: `{report['command']}` ({report['date']}, wall time {report['wall_time_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# The command line.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T = 64, 256; B = 2, H = 8; 2 repeats")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths T (default 1024 16384 65536)")
    p.add_argument("--batch", type=int, help="B (default 16; 2 with --quick)")
    p.add_argument("--width", type=int, help="the model width H (default 128; 8 with --quick)")
    p.add_argument("--repeats", type=int, help="measurements per case (default 3; 2 with --quick)")
    p.add_argument("--long-repeats", type=int, default=1, help=f"measurements per case above T = {LONG:,}")
    p.add_argument("--long-modes", choices=("all", "fastest"), default="all",
                   help=f"above T = {LONG:,}: every mode, or each cell's fastest at the length before")
    p.add_argument("--cells", nargs="+", choices=list(ENTRIES), default=list(ENTRIES))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[64], help="the main table's chunked rows")
    p.add_argument("--sweep-cell", default="lru", help="the chunk-size table's cell ('none': no table)")
    p.add_argument("--sweep-length", type=int, help="the chunk-size table's T (default 16384; 256 with --quick)")
    p.add_argument("--sweep-chunk-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--memory-budget-gib", type=float,
                   help="report a case as OOM without running it when XLA's estimate exceeds this "
                        "(default: 60%% of the memory available at start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="a note on the conditions, put at the top of the report")
    p.add_argument("--out", type=Path, help="the folder of results.json and results.md")
    args = p.parse_args(argv)
    quick = args.quick
    args.lengths = args.lengths or ([64, 256] if quick else [1024, 16384, 65536])
    args.batch = args.batch or (2 if quick else 16)
    args.width = args.width or (8 if quick else 128)
    args.repeats = args.repeats or (2 if quick else 3)
    args.sweep_length = args.sweep_length or (256 if quick else 16384)
    args.out = args.out or default_out("benchmarks-linear-recurrences", quick)
    if args.sweep_cell != "none" and args.sweep_cell not in ENTRIES:
        p.error(f"--sweep-cell must be one of {list(ENTRIES) + ['none']}, got {args.sweep_cell!r}")
    numbers = [*args.lengths, args.batch, args.width, args.repeats, args.long_repeats, *args.chunk_sizes,
               args.sweep_length, *args.sweep_chunk_sizes]
    if min(numbers) < 1:
        p.error("lengths, batch, width, repeats and chunk sizes must be positive")
    available = available_bytes()
    args.budget = int(args.memory_budget_gib * GIB) if args.memory_budget_gib else int(0.6 * available)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    machine = machine_info()  # before the run: what was imported
    cells = {name: ENTRIES[name].factory for name in args.cells}

    # Parameter counts (the same at every T) and the matched peers.
    H = args.width
    counts, hidden = {}, {}
    for name, factory in cells.items():
        layer = ENTRIES[name].layer(factory, H, args.modes[0], args.chunk_sizes[0])
        counts[name] = count_params(model_of(layer, H), H)
        hidden[name] = {kind: matched_hidden(kind, counts[name], H) for kind in PEERS}
        for kind, h in hidden[name].items():
            counts[f"{kind}({h})"] = count_params(peer_model(kind, h, H), H)
        log(f"{name}: {counts[name]:,} params; peers " + ", ".join(
            f"{kind}({h}) {counts[f'{kind}({h})']:,}" for kind, h in hidden[name].items()))

    report = {
        "command": command_line(__file__, argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "label": args.label,
        "settings": {"lengths": args.lengths, "batch": args.batch, "width": args.width, "repeats": args.repeats,
                     "long_repeats": args.long_repeats, "long_modes": args.long_modes, "long_above": LONG,
                     "cells": args.cells, "modes": args.modes, "chunk_sizes": args.chunk_sizes, "sweep_cell": args.sweep_cell,
                     "sweep_length": args.sweep_length, "sweep_chunk_sizes": args.sweep_chunk_sizes,
                     "budget_bytes": args.budget, "seed": args.seed, "quick": args.quick, "tolerance": TOLERANCE,
                     "min_time_s": MIN_TIME, "loss": "sum of squares of all outputs [B, T, H]",
                     "memory": "XLA memory_analysis(): temp + argument + output bytes (RSS not measured)"},
        "machine": machine,
        "cells": {name: {"what": ENTRIES[name].what, "params": counts[name], "peers": hidden[name]}
                  for name in cells},
        "load_average": {"start": load_average()},
        "lengths": [],
        "chunk_sweep": None,
        "complete": False,
        "wall_time_s": 0.0,
    }

    def write():
        report["wall_time_s"] = time.time() - start
        report["load_average"]["end"] = load_average()
        write_results(args.out, report, markdown(report))

    for T in args.lengths:
        only = None
        if T > LONG and args.long_modes == "fastest" and report["lengths"]:
            only = {cell: mode for cell, mode in report["lengths"][-1]["fastest"].items() if mode is not None}
        report["lengths"].append(bench_length(T, cells, hidden, counts, args, log, only))
        write()  # after every length, so an interrupted run keeps what it measured
        length = report["lengths"][-1]
        print(table(table_rows(length), HEADER, align=ALIGN))
        print(fastest_line(length))
        print(check_line(length))
        print(flush=True)

    if args.sweep_cell != "none":
        if args.sweep_cell in cells:
            sweep = chunk_sweep(args.sweep_cell, cells[args.sweep_cell], args.sweep_length, args, log)
            print(table(sweep_rows(sweep), SWEEP_HEADER, align=SWEEP_ALIGN))
            print(f"Fastest chunk size: {sweep['best_chunk_size']}.")
        else:
            sweep = {"cell": args.sweep_cell, "skipped": f"{args.sweep_cell}: not in --cells"}
            print(f"Chunk-size table skipped: {sweep['skipped']}.")
        report["chunk_sweep"] = sweep
    report["complete"] = True
    write()
    print(f"wrote {args.out}/results.json and results.md ({report['wall_time_s']:.0f} s)")
    checks = [c for l in report["lengths"] for c in l["checks"].values()]
    if report["chunk_sweep"] and "check" in report["chunk_sweep"]:
        checks.append(report["chunk_sweep"]["check"])
    if not all(c["ok"] for c in checks):
        print("CHECK FAILED: the modes of a cell gave different losses (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
