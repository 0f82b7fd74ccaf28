"""One command for the GPU: scanrnn's execution choices, cuDNN, flax.linen and torch.nn on LSTM and GRU layers.

What is measured. The many-to-one model of ``run.py`` (the last hidden state
of one recurrent layer, ``dense(1)``, the mean squared error against a
target ``[B, 1]``), float32 data ``[B, T, I]`` with ``I = H`` (run.py's
cases do not cover these shapes; every input here is as wide as the
layer), for LSTM and GRU layers at B = 16, 64, 256, T = 100, 1,000 and
H = 128, 512, 1,024. Two steps each: *train*, the loss and its gradients
with respect to all params (``jax.jit(jax.value_and_grad(loss))``; torch:
forward and ``loss.backward()``), and *infer*, the forward pass. The
implementations (the columns of the tables):

- ``default``: scanrnn with ``Execution()``;
- one execution choice changed at a time from it: ``hoist``
  (``Execution(hoist=True)``: the input projection of all steps as one
  product before the scan), ``hand`` (``backward="hand"``, the hand-written
  backward pass), ``unroll 4`` and ``unroll 16`` (the scan's unroll factor),
  ``bf16`` (the cell built with ``compute_dtype=jnp.bfloat16``: bfloat16
  products, float32 params and sums);
- ``ACCEL``: ``scanrnn.execution.ACCELERATOR`` (its ``one_scan`` has no
  second direction to merge in these one-direction layers);
- ``cuDNN``: ``Execution(cudnn=True)``, LSTM only (:mod:`scanrnn.cudnn`);
- ``flax``: ``nn.RNN`` of ``OptimizedLSTMCell`` / ``GRUCell``, and
  ``torch``: ``torch.nn.LSTM`` / ``GRU`` (cuDNN on a GPU), on the same
  weights (``run_flax.py``, ``run_torch.py``);
- the linear recurrences ``min_gru(H)``, ``lru(H)`` (H complex states),
  ``rg_lru()`` and ``selective_ssm(16)`` (width H) in ``mode="sequential"``,
  ``"associative"`` and ``"chunked"`` (chunk size 64), in the same
  many-to-one model, with params from their own ``init``.

Not every implementation runs at every shape (compiling costs seconds per
step on a GPU). The plan, in the order it runs: every implementation at
B=64, T=1,000, H=512 (LSTM, GRU); the linear recurrences there; every
implementation at B=16, T=1,000, H=128, at B=256, T=1,000, H=1,024 and at
B=64, T=100, H=512; then ``default``, ``ACCEL``, ``cuDNN`` and ``torch`` at
the other 14 shapes of the grid (T = 1,000 first). A unit (one shape and
cell) is not started when the time so far plus the longest unit of its kind
and length so far would pass ``--budget-s`` (default 420 s); it is listed as
skipped, so a run ends within about 8 minutes whatever the compiler does.

Time budget (estimated; not yet measured on a GPU). A JAX row costs two
compilations (train, infer), guessed at 1.5-3 s together on a GPU host
(2-3 s for the tiny LSTM rows on the 2-core CPU; a linear recurrence's
associative and chunked modes about twice that), a torch row 1-2 s, and
its calls (a first call, a warm-up, a calibrating call and the repeats,
each at least 0.02 s), from a fixed 15-30 µs per scan step (three per step
in training) and 60-150 TFLOP/s in the products. That makes about 15 s of
start-up, 35-70 s for the center's two units, 35-65 s for the linear
recurrences, 115-225 s for the other choice shapes and 170-320 s for the 28
grid units: 6 to 11.5 minutes for the whole plan. The budget stops at 7, so
on the slow side of the guess the last grid units (T = 100) are left out.

How. Every implementation of a (shape, cell) is built, called once (its
loss and gradients checked, below) and then timed with
``common.time_round_robin``: one warm-up call each, then ``--repeats``
(default 5; ``--long-repeats``, default 3, at T = 1,000) measurements, each
repeat measuring every implementation once, interleaved, every call ending
in ``block_until_ready`` (torch: ``torch.cuda.synchronize()``); a
measurement repeats short calls until it lasts 0.02 s. Reported: the
median time per step, with the interquartile range and the samples in the
JSON, and the achieved TFLOP/s from the matmul count: for the LSTM and GRU
``run_cases.step_flops`` (a training step is ``24 B T H (I + H)`` for the
LSTM, 18 for the GRU; inference a third); for a linear recurrence the same
rule, ``2 B T`` times the number of entries of the matrices each step
applies (``min_gru``, ``rg_lru``: ``w_ih``; ``lru``: ``b`` and ``c``;
``selective_ssm``: ``w_x`` and ``w_dt``) for inference and three times that
for training (the scan's elementwise work is not counted). XLA's memory
analysis of each compiled step (and torch's CUDA peak) is in the JSON.

Checks. Before timing, each implementation's loss and the gradients of the
recurrent kernel and of the head are compared with scanrnn's ``default``
(a linear recurrence's modes with its sequential mode), as ``run.py``
compares them (``run_checks.check``). Tolerances (relative; gradients
max-norm relative): float32 products, 1e-4 and 1e-3 (``run_checks``); on a
GPU at JAX's default precision, where JAX's float32 products and cuDNN's
are TensorFloat-32, 2e-3 and 2e-2; a bfloat16 row, 1e-2 and 5e-2. The last
two are 10 to 30 times the largest errors measured on a CPU with
float16 products (TF32's 10-bit mantissa) and bfloat16 products against
float32 at B = 2-4, T = 100-1,000, H = 128-1,024 (loss 9e-5 and 7e-4,
gradients 7e-4 and 5e-3). A failed check is printed, recorded, and makes
the script exit with status 1 after writing. ``--precision highest`` runs
every float32 product in full float32 (JAX's
``jax_default_matmul_precision``; torch's TF32 switches off) and checks at
the float32 tolerance.

Usage (from the repository root)::

    python experiments/benchmarks/gpu.py                # on one H100 or H200: under 8 minutes
    python experiments/benchmarks/gpu.py --tiny         # B=2, T=8, H=8, 1 repeat: every path once (< 1 min on 2 cores)
    python experiments/benchmarks/gpu.py --precision highest --budget-s 900

Writes ``results.json`` and ``results.md`` to ``--out`` (default
``experiments/results/benchmarks-gpu/``; ``runs/benchmarks-gpu-tiny/`` with
``--tiny``), rewritten after every unit, marked partial until the run ends.
``--tiny`` runs on whatever backend is there, every row compiled with
less optimisation (``--xla_backend_optimization_level=0``: it checks that
each path runs, its times mean nothing). Its linear recurrences run in two
modes each, the sequential one (the reference of the checks) and one of the
other two, ``associative`` for ``min_gru`` and ``rg_lru``, ``chunked`` for
``lru`` and ``selective_ssm`` (``TINY_LINEAR_ROWS``; tests/test_linear_cells.py,
test_state_space.py, test_griffin.py and test_mamba.py check every mode of
each cell against the others). Without a GPU its cuDNN rows run
through ``scanrnn.cudnn``'s ``"reference"`` kernel (the same packed path,
``jax.experimental.rnn.lstm_ref``), marked "reference kernel (no GPU)".
torch or flax missing (or torch without CUDA on a GPU run) is skipped with
the reason; without torch the scanrnn rows take their params from
scanrnn's ``init``. JAX starts its backend before torch is imported, so
that its cuDNN is the one loaded, and takes at most 60% of the GPU's memory
(``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless set), leaving the rest to torch.

Reading the summary. "Fastest per choice" takes each choice over the shapes
where both sides ran: for each (op, cell) how many shapes each side won, and
the median (and range) over shapes of ``default's time / the row's time``
(above 1: the row is faster than ``default``); for the unroll factor, which
of 1, 4 and 16 won where. The per-(op, cell) tables give each
implementation's median ms and, in brackets, its TFLOP/s, and the fastest
float32 scanrnn row (an execution choice, cuDNN or ``default``) with its
speed-up over ``default``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from common import (
    RESULTS, RUNS, command_line, describe, load_average, machine_info, markdown_table, table, time_round_robin,
    write_results,
)
from run_cases import Case, Impl, jax_fns, make_data, step_flops
from run_checks import GRAD_RTOL, LOSS_RTOL, check
from run_scanrnn import scanrnn_layer, variant_execution, variant_name

# --------------------------------------------------------------------------
# What runs: the implementations, the shapes, the plan.


class Row(NamedTuple):
    """One implementation of an LSTM or GRU layer: a column of the tables."""

    key: str  # the column's label
    kind: str  # "scanrnn", "flax" or "torch"
    options: object = None  # scanrnn: a dict of Execution fields, or "ACCELERATOR"
    compute_dtype: Optional[str] = None  # scanrnn: the cell's compute_dtype ("bfloat16")
    cells: tuple = ("lstm", "gru")


ROWS = (
    Row("default", "scanrnn", {}),
    Row("hoist", "scanrnn", {"hoist": True}),
    Row("hand", "scanrnn", {"backward": "hand"}),
    Row("unroll 4", "scanrnn", {"unroll": 4}),
    Row("unroll 16", "scanrnn", {"unroll": 16}),
    Row("bf16", "scanrnn", {}, "bfloat16"),
    Row("ACCEL", "scanrnn", "ACCELERATOR"),
    Row("cuDNN", "scanrnn", {"cudnn": True}, cells=("lstm",)),
    Row("flax", "flax"),
    Row("torch", "torch"),
)
ROW = {row.key: row for row in ROWS}
CORE = ("default", "ACCEL", "cuDNN", "torch")  # the rows at every shape of the grid


class LinearEntry(NamedTuple):
    """A linear-recurrence cell: its factory ``(H, mode) -> cell`` and the matrices each step applies."""

    make: object
    matrices: tuple  # fields of its params counted in the FLOPs


def _linear_entries() -> dict:
    import scanrnn as sr

    return {
        "min_gru": LinearEntry(lambda H, mode: sr.min_gru(H, mode=mode), ("w_ih",)),
        "lru": LinearEntry(lambda H, mode: sr.lru(H, mode=mode), ("b", "c")),  # H complex states
        "rg_lru": LinearEntry(lambda H, mode: sr.rg_lru(mode=mode), ("w_ih",)),  # width H (the input's)
        "selective_ssm": LinearEntry(lambda H, mode: sr.selective_ssm(16, mode=mode), ("w_x", "w_dt")),  # width H
    }


LINEAR_CELLS = ("min_gru", "lru", "rg_lru", "selective_ssm")
MODES = ("sequential", "associative", "chunked")

BATCHES, LENGTHS, HIDDENS = (16, 64, 256), (1000, 100), (128, 512, 1024)
CENTER = (64, 1000, 512)
CHOICE_SHAPES = (CENTER, (16, 1000, 128), (256, 1000, 1024), (64, 100, 512))
TINY = (2, 8, 8)
# --tiny's linear rows: every cell sequential, and each of the other modes for two of the cells.
TINY_LINEAR_ROWS = (("min_gru", "sequential"), ("min_gru", "associative"), ("lru", "sequential"), ("lru", "chunked"),
                    ("rg_lru", "sequential"), ("rg_lru", "associative"),
                    ("selective_ssm", "sequential"), ("selective_ssm", "chunked"))
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
MIN_TIME = 0.02  # seconds one measurement lasts at least (0 with --tiny)
PRIOR_S = {"choices": 40.0, "grid": 15.0, "linear": 60.0}  # a unit's guessed seconds before one of its kind ran


class Unit(NamedTuple):
    """What runs together and is timed interleaved: one shape, one cell (or the linear recurrences), some rows."""

    group: str  # "choices", "grid" or "linear"
    case: Case
    cell: str  # "lstm", "gru" or "linear"
    rows: tuple  # Row keys, or (linear cell, mode) pairs


def shape_case(shape) -> Case:
    B, T, H = shape
    return Case(f"B{B}-T{T}-H{H}", B, T, H, H)


def plan(tiny: bool = False) -> list:
    """The units in the order they run (see the module docstring)."""
    linear_rows = tuple((cell, mode) for cell in LINEAR_CELLS for mode in MODES)
    choice_rows = {cell: tuple(r.key for r in ROWS if cell in r.cells) for cell in ("lstm", "gru")}
    core_rows = {cell: tuple(k for k in CORE if cell in ROW[k].cells) for cell in ("lstm", "gru")}
    if tiny:
        case = shape_case(TINY)
        return [Unit("choices", case, "lstm", choice_rows["lstm"]), Unit("choices", case, "gru", choice_rows["gru"]),
                Unit("linear", case, "linear", TINY_LINEAR_ROWS)]
    units = [Unit("choices", shape_case(CENTER), cell, choice_rows[cell]) for cell in ("lstm", "gru")]
    units.append(Unit("linear", shape_case(CENTER), "linear", linear_rows))
    for shape in CHOICE_SHAPES[1:]:
        units += [Unit("choices", shape_case(shape), cell, choice_rows[cell]) for cell in ("lstm", "gru")]
    for T in LENGTHS:
        for H in HIDDENS:
            for B in BATCHES:
                if (B, T, H) not in CHOICE_SHAPES:
                    units += [Unit("grid", shape_case((B, T, H)), cell, core_rows[cell]) for cell in ("lstm", "gru")]
    return units


def predicted_s(unit: Unit, done: list) -> float:
    """What ``unit`` is expected to take: the longest finished unit of its group and length, else of its group."""
    same = [s for group, T, s in done if group == unit.group and T == unit.case.steps]
    same = same or [s for group, _, s in done if group == unit.group]
    return max(same) if same else PRIOR_S[unit.group]


# --------------------------------------------------------------------------
# FLOPs and tolerances.


def matmul_flops(case: Case, matrix_entries: int, train: bool = True) -> float:
    """``2 B T`` times the entries of the matrices one step applies (inference); three times that for training."""
    forward = 2 * case.batch * case.steps * matrix_entries
    return float(3 * forward if train else forward)


class Tolerance(NamedTuple):
    loss: float  # relative error of the loss
    grad: float  # max-norm relative error of the compared gradients
    why: str


FLOAT32 = Tolerance(LOSS_RTOL, GRAD_RTOL, "float32 products (run.py's tolerance)")
TF32 = Tolerance(2e-3, 2e-2, "TensorFloat-32 products (JAX's and cuDNN's default float32 on a GPU)")
BFLOAT16 = Tolerance(1e-2, 5e-2, "bfloat16 products")


def tolerance(bfloat16: bool, tf32: bool) -> Tolerance:
    """A row's tolerance against ``default``: bfloat16's, else TF32's where float32 products are TF32, else float32."""
    return BFLOAT16 if bfloat16 else TF32 if tf32 else FLOAT32


def checked(reference: Impl, impl: Impl, tol: Tolerance) -> dict:
    """``run_checks.check``'s errors of ``impl`` against ``reference``, judged at ``tol``."""
    c = check(reference, impl)
    return {**c, "ok": bool(c["loss_rel_err"] <= tol.loss and c["grad_rel_err"] <= tol.grad),
            "tolerance": {"loss": tol.loss, "grad": tol.grad, "why": tol.why}}


# --------------------------------------------------------------------------
# Building the implementations.


class Env(NamedTuple):
    """What the run found: the peers, the cuDNN kernel, the precision."""

    torch_weights: bool  # torch is installed: every row's weights come from its seeded module
    torch_device: Optional[str]  # where the torch row runs; None: no torch row
    torch_reason: str  # why the torch row is left out ("" when it runs)
    flax_reason: str  # why flax is left out ("" when it runs)
    cudnn_note: str  # "" on a GPU; "reference kernel (no GPU)" with --tiny elsewhere; else why it cannot run
    tf32: bool  # float32 products are TensorFloat-32 (a GPU at the default precision)
    seed: int


def many_to_one_impl(name: str, model, params, x, y, compared) -> Impl:
    """An implementation of ``jax.vmap`` over the batch of ``model`` (one sequence to ``[1]``), MSE against ``y``.

    ``compared(grads)`` picks the gradients checked against the reference's.
    """
    import jax
    import jax.numpy as jnp

    def forward(params, x):
        return jax.vmap(model.apply, in_axes=(None, 0))(params, x)  # [B, 1]

    def loss_fn(params, x, y):
        return jnp.mean(jnp.square(forward(params, x) - y))

    train, infer, loss, grads, memory = jax_fns(loss_fn, forward, params, x, y)
    return Impl(name, train, infer, loss, {k: np.asarray(v) for k, v in compared(grads).items()}, memory)


def shared_params(case: Case, cell: str, env: Env):
    """The params of every scanrnn row of ``(case, cell)``: the torch module's (``from_torch``), else ``init``'s."""
    import jax
    import jax.numpy as jnp
    import scanrnn as sr

    if env.torch_weights:
        from run_torch import torch_model
        from scanrnn.interop import from_torch

        tmodel = torch_model(case, cell, env.seed, "cpu")
        _, rnn_params = from_torch(tmodel.rnn)
        head = sr.DenseParams(jnp.asarray(tmodel.head.weight.detach().numpy()),
                              jnp.asarray(tmodel.head.bias.detach().numpy()))
        return (*rnn_params, head)
    model = sr.serial(scanrnn_layer(getattr(sr, cell)(case.hidden), case, False, None), sr.dense(1))
    return model.init(jax.random.key(env.seed), case.inputs)


def row_execution(row: Row, case: Case):
    """The ``scanrnn.Execution`` of a scanrnn row (a ValueError, from ``run_scanrnn.variant_execution``, skips it)."""
    import scanrnn as sr

    if row.options == "ACCELERATOR":  # one_scan merges two directions; these layers have one
        return sr.execution.ACCELERATOR._replace(one_scan=False)
    return variant_execution(row.options, case)


def row_name(row: Row) -> str:
    if row.kind != "scanrnn":
        return row.kind
    if row.options == "ACCELERATOR":
        return "scanrnn[ACCELERATOR]"
    if row.compute_dtype:
        return f"scanrnn[{row.compute_dtype}]"
    return variant_name(row.options) if row.options else "scanrnn"


def scanrnn_row(row: Row, case: Case, cell: str, params, x, y) -> Impl:
    import jax.numpy as jnp
    import scanrnn as sr

    options = {"compute_dtype": getattr(jnp, row.compute_dtype)} if row.compute_dtype else {}
    layer = scanrnn_layer(getattr(sr, cell)(case.hidden, **options), case, False, row_execution(row, case))
    model = sr.serial(layer, sr.dense(1))
    return many_to_one_impl(row_name(row), model, params, x, y, lambda g: {"w_hh": g[0].w_hh, "head": g[-1].w})


def linear_row(name: str, mode: str, case: Case, params, x, y) -> Impl:
    import scanrnn as sr

    entry = _linear_entries()[name]
    model = sr.serial(scanrnn_layer(entry.make(case.hidden, mode), case, False, None), sr.dense(1))
    first = entry.matrices[0]
    return many_to_one_impl(f"{name} {mode}", model, params, x, y,
                            lambda g: {first: getattr(g[0], first), "head": g[-1].w})


def linear_params(name: str, case: Case, seed: int):
    """``(init, entries)``: a linear cell's model ``init()`` (its modes share the params), and the number of
    entries of the matrices one step applies."""
    import jax
    import scanrnn as sr

    entry = _linear_entries()[name]
    cell = entry.make(case.hidden, "sequential")
    shapes = jax.eval_shape(lambda key: cell.init(key, case.inputs), jax.random.key(seed))
    entries = sum(getattr(shapes, field).size for field in entry.matrices)
    model = sr.serial(scanrnn_layer(cell, case, False, None), sr.dense(1))
    return (lambda: model.init(jax.random.key(seed), case.inputs)), int(entries)


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def build_rows(unit: Unit, data, env: Env):
    """``(impls, notes, skipped, flops)``: the built rows, notes by name, ``[(name, reason)]``, FLOPs by name."""
    import jax.numpy as jnp

    x, y = (jnp.asarray(a) for a in data)
    impls, notes, skipped, flops = [], {}, [], {}
    if unit.cell == "linear":
        for name in dict.fromkeys(cell for cell, _ in unit.rows):
            try:
                init, entries = linear_params(name, unit.case, env.seed)
                params = init()
            except Exception as error:  # noqa: BLE001 (one cell failing must not lose the others)
                skipped += [(f"{name} {mode}", f"failed: {_why(error)}") for cell, mode in unit.rows if cell == name]
                continue
            for cell, mode in unit.rows:
                if cell != name:
                    continue
                flops[f"{name} {mode}"] = (matmul_flops(unit.case, entries), matmul_flops(unit.case, entries, False))
                try:
                    impls.append(linear_row(name, mode, unit.case, params, x, y))
                except Exception as error:  # noqa: BLE001
                    skipped.append((f"{name} {mode}", f"failed: {_why(error)}"))
        return impls, notes, skipped, flops

    totals = (step_flops(unit.case, unit.cell), step_flops(unit.case, unit.cell, train=False))
    params = shared_params(unit.case, unit.cell, env)
    for key in unit.rows:
        row = ROW[key]
        name = row_name(row)
        flops[name] = totals
        reason = {"torch": env.torch_reason, "flax": env.flax_reason}.get(row.kind, "")
        if key == "cuDNN" and env.cudnn_note and not env.cudnn_note.startswith("reference"):
            reason = env.cudnn_note
        if reason:
            skipped.append((name, reason))
            continue
        try:
            if row.kind == "scanrnn":
                impls.append(scanrnn_row(row, unit.case, unit.cell, params, x, y))
            elif row.kind == "flax":
                from run_flax import flax_impl

                impls.append(flax_impl(unit.case, unit.cell, env.seed, data))
            else:
                import torch
                from run_torch import torch_impls

                impls += torch_impls(unit.case, unit.cell, env.seed, env.torch_device, data, [torch.get_num_threads()])
        except ValueError as error:  # what an Execution or cuDNN refuses
            skipped.append((name, f"refused: {_why(error)}"))
        except Exception as error:  # noqa: BLE001 (out of memory, a missing kernel: the others still run)
            skipped.append((name, f"failed: {_why(error)}"))
        if key == "cuDNN" and env.cudnn_note:
            notes[name] = env.cudnn_note
    return impls, notes, skipped, flops


# --------------------------------------------------------------------------
# Running a unit.


def run_unit(unit: Unit, data, env: Env, repeats: int, min_time: float) -> dict:
    """Build, check and time every row of ``unit``: its record for results.json."""
    start = time.perf_counter()
    impls, notes, skipped, flops = build_rows(unit, data, env)
    build_s = time.perf_counter() - start
    checks = {}
    if impls:
        if unit.cell == "linear":  # each cell's modes against its sequential mode
            first = {}
            for impl in impls:
                cell = impl.name.split()[0]
                if cell in first:
                    checks[impl.name] = checked(first[cell], impl, tolerance(False, env.tf32))
                else:
                    first[cell] = impl
        else:
            reference = impls[0] if impls[0].name == "scanrnn" else None
            for impl in impls[1:] if reference else []:
                checks[impl.name] = checked(reference, impl, tolerance("bfloat16" in impl.name, env.tf32))

    record = {"group": unit.group, "case": unit.case._asdict(), "cell": unit.cell, "rows": [],
              "skipped": [{"impl": n, "reason": r} for n, r in skipped], "checks": checks, "build_s": build_s}
    fns = {}
    for impl in impls:
        fns[(impl.name, "train")] = impl.train
        fns[(impl.name, "infer")] = impl.infer
    try:
        t0 = time.perf_counter()
        timed = time_round_robin(fns, repeats, 1, min_time) if fns else {}
        record["timing_s"] = time.perf_counter() - t0
    except Exception as error:  # noqa: BLE001 (a call that fails while timed loses this unit only)
        record["error"] = f"timing failed: {_why(error)}"
        timed = {}
    base = impls[0].name if impls and unit.cell != "linear" else None
    for impl in impls if timed else []:
        row = {"impl": impl.name, "note": notes.get(impl.name, ""), "loss": impl.loss, "memory": impl.memory}
        for k, kind in enumerate(("train", "infer")):
            stats = timed[(impl.name, kind)]
            seconds = stats["median_ms"] * 1e-3
            row[kind] = {**stats, "flops": flops[impl.name][k], "tflops": flops[impl.name][k] / seconds / 1e12}
            if base == "scanrnn":
                row[kind]["speedup"] = timed[(base, kind)]["median_ms"] / stats["median_ms"]
        record["rows"].append(row)
    del impls, fns
    gc.collect()
    record["unit_s"] = time.perf_counter() - start
    return record


# --------------------------------------------------------------------------
# Tables and the summary.

KINDS = {"train": "training step", "infer": "inference"}


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _by_shape(units: list, cell: str) -> dict:
    """``{(B, T, H): {impl name: row}}`` of the units of ``cell``."""
    out = {}
    for u in units:
        if u["cell"] == cell:
            c = u["case"]
            out.setdefault((c["batch"], c["steps"], c["hidden"]), {}).update({r["impl"]: r for r in u["rows"]})
    return out


def cell_table(units: list, cell: str, op: str) -> tuple:
    """``(rows, header)``: per shape, every row's median ms (TFLOP/s), and the fastest float32 scanrnn row."""
    keys = [r for r in ROWS if cell in r.cells]
    shapes = _by_shape(units, cell)
    notes = {r.key: {by[row_name(r)]["note"] for by in shapes.values() if by.get(row_name(r), {}).get("note")}
             for r in keys}  # e.g. cuDNN's "reference kernel (no GPU)"
    labels = [r.key + "".join(f" [{note}]" for note in sorted(notes[r.key])) for r in keys]
    header = ["B", "T", "H", *labels, "fastest float32 scanrnn (× default)"]
    rows = []
    for (B, T, H), by in sorted(shapes.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        line = [B, f"{T:,}", f"{H:,}"]
        for r in keys:
            got = by.get(row_name(r))
            line.append("-" if got is None else f"{_ms(got[op]['median_ms'])} ({got[op]['tflops']:.2g})")
        ours = [got for name, got in by.items() if name.startswith("scanrnn") and "bfloat16" not in name]
        best = min(ours, key=lambda got: got[op]["median_ms"]) if ours else None
        if best is None or "scanrnn" not in by:
            line.append("-")
        else:
            line.append(f"{key_of(best['impl'])} ×{by['scanrnn'][op]['median_ms'] / best[op]['median_ms']:.3g}")
        rows.append(line)
    return rows, header


def key_of(name: str) -> str:
    """The column label of an implementation's name."""
    for r in ROWS:
        if row_name(r) == name:
            return r.key
    return name


def linear_table(units: list, op: str) -> tuple:
    header = ["cell", "B", "T", "H", *MODES, "fastest"]
    rows = []
    for u in units:
        if u["cell"] != "linear":
            continue
        c = u["case"]
        by = {r["impl"]: r for r in u["rows"]}
        for cell in LINEAR_CELLS:
            got = {mode: by.get(f"{cell} {mode}") for mode in MODES}
            ran = {m: r for m, r in got.items() if r is not None}
            best = min(ran, key=lambda m: ran[m][op]["median_ms"]) if ran else "-"
            rows.append([cell, c["batch"], f"{c['steps']:,}", f"{c['hidden']:,}",
                         *["-" if r is None else f"{_ms(r[op]['median_ms'])} ({r[op]['tflops']:.2g})"
                           for r in got.values()], best])
    return rows, header


class Choice(NamedTuple):
    """One line of "fastest per choice": a base column against alternatives."""

    label: str
    base: str  # the base's column
    base_name: str  # what the base is, in this choice
    alternatives: tuple  # columns
    ops: tuple = ("train", "infer")


CHOICES = (
    Choice("projection placement", "default", "hoist=False", ("hoist",)),
    Choice("backward pass", "default", "autodiff", ("hand",), ("train",)),
    Choice("unroll factor", "default", "unroll 1", ("unroll 4", "unroll 16")),
    Choice("compute dtype", "default", "float32", ("bf16",)),
    Choice("ACCELERATOR", "default", "Execution()", ("ACCEL",)),
    Choice("cuDNN", "default", "scan", ("cuDNN",)),
    Choice("cuDNN against torch", "torch", "torch", ("cuDNN",)),
    Choice("torch", "default", "scanrnn", ("torch",)),
    Choice("flax", "default", "scanrnn", ("flax",)),
)
ALTERNATIVE_NAMES = {"hoist": "hoist=True", "hand": "hand", "unroll 4": "unroll 4", "unroll 16": "unroll 16",
                     "bf16": "bfloat16", "ACCEL": "ACCELERATOR", "cuDNN": "cuDNN", "torch": "torch", "flax": "flax"}


def choice_summary(units: list) -> tuple:
    """``(rows, header)`` of "fastest per choice": wins per side over shapes, and base/alternative time ratios."""
    header = ["choice", "op", "cell", "shapes", "fastest at (shapes)", "base ÷ alternative: median (range)"]
    rows = []
    for choice in CHOICES:
        keys = [choice.base, *choice.alternatives]
        names = {k: row_name(ROW[k]) for k in keys}
        label = {choice.base: choice.base_name, **{k: ALTERNATIVE_NAMES[k] for k in choice.alternatives}}
        for op in choice.ops:
            for cell in ("lstm", "gru"):
                if any(cell not in ROW[k].cells for k in keys):
                    continue
                shapes = [by for by in _by_shape(units, cell).values() if all(names[k] in by for k in keys)]
                if not shapes:
                    continue
                wins = dict.fromkeys(keys, 0)
                ratios = {k: [] for k in choice.alternatives}
                for by in shapes:
                    times = {k: by[names[k]][op]["median_ms"] for k in keys}
                    wins[min(times, key=times.get)] += 1
                    for k in choice.alternatives:
                        ratios[k].append(times[choice.base] / times[k])
                fastest = ", ".join(f"{label[k]} {n}" for k, n in wins.items())
                spread = "; ".join(f"{label[k]}: {statistics.median(v):.3g} ({min(v):.3g}–{max(v):.3g})"
                                   for k, v in ratios.items())
                rows.append([choice.label, op, cell, len(shapes), fastest, spread])
    return rows, header


def linear_summary(units: list) -> list:
    """One line per linear cell: the fastest mode per op and shape."""
    lines = []
    for u in units:
        if u["cell"] != "linear":
            continue
        c = u["case"]
        by = {r["impl"]: r for r in u["rows"]}
        for op in ("train", "infer"):
            parts = []
            for cell in LINEAR_CELLS:
                ran = {m: by[f"{cell} {m}"][op]["median_ms"] for m in MODES if f"{cell} {m}" in by}
                if ran:
                    best = min(ran, key=ran.get)
                    seq = ran.get("sequential")
                    faster = seq and best != "sequential"
                    parts.append(f"{cell} {best}" + (f" (×{seq / ran[best]:.3g} over sequential)" if faster else ""))
            if parts:
                lines.append(f"{KINDS[op]}, B={c['batch']}, T={c['steps']:,}, H={c['hidden']:,}: "
                             + "; ".join(parts) + ".")
    return lines


def check_summary(units: list) -> tuple:
    """``(rows, header)``: per implementation, the largest errors against its reference over all shapes."""
    header = ["impl", "shapes", "largest loss rel. err", "largest grad rel. err", "tolerance (loss, grad)", "ok"]
    worst = {}
    for u in units:
        for name, c in u["checks"].items():
            w = worst.setdefault(name, {"n": 0, "loss": 0.0, "grad": 0.0, "ok": True, "tol": c["tolerance"]})
            w["n"] += 1
            w["loss"] = max(w["loss"], c["loss_rel_err"])
            w["grad"] = max(w["grad"], c["grad_rel_err"])
            w["ok"] &= c["ok"]
    rows = [[name, w["n"], f"{w['loss']:.1e}", f"{w['grad']:.1e}", f"{w['tol']['loss']:g}, {w['tol']['grad']:g}",
             "yes" if w["ok"] else "NO"] for name, w in worst.items()]
    return rows, header


def failures(units: list) -> list:
    return [f"{u['case']['name']}/{u['cell']}/{name}" for u in units for name, c in u["checks"].items() if not c["ok"]]


def unit_table(record: dict) -> tuple:
    header = ["impl", "train ms", "IQR", "× default", "TFLOP/s", "infer ms", "IQR", "× default", "TFLOP/s", "check"]
    rows = []
    for r in record["rows"]:
        c = record["checks"].get(r["impl"])
        status = "ref." if c is None else ("ok" if c["ok"] else "FAILED")
        line = [r["impl"] + (f" [{r['note']}]" if r["note"] else "")]
        for kind in ("train", "infer"):
            s = r[kind]
            line += [f"{s['median_ms']:.3f}", f"{s['iqr_ms']:.3f}",
                     f"{s['speedup']:.2f}" if "speedup" in s else "-", f"{s['tflops']:.3g}"]
        rows.append(line + [status])
    return rows, header


def print_unit(record: dict, elapsed: float) -> None:
    c = record["case"]
    print(f"\n[{elapsed:.0f} s] {record['cell']} B={c['batch']}, T={c['steps']:,}, H={c['hidden']:,} "
          f"({record['group']}: build and check {record['build_s']:.0f} s, timing {record.get('timing_s', 0):.0f} s)",
          flush=True)
    if record["rows"]:
        print(table(*unit_table(record)))
    for name, chk in record["checks"].items():
        if not chk["ok"]:
            print(f"  check {name} FAILED: loss rel. err {chk['loss_rel_err']:.1e}, grad rel. err "
                  f"{chk['grad_rel_err']:.1e} (tolerance {chk['tolerance']['loss']:g}, {chk['tolerance']['grad']:g})")
    for s in record["skipped"]:
        print(f"  skipped {s['impl']}: {s['reason']}")
    if "error" in record:
        print(f"  {record['error']}")


def markdown(report: dict) -> str:
    s, m, units = report["settings"], report["machine"], report["units"]
    lines = ["# scanrnn on a GPU: execution choices, cuDNN, flax.linen and torch.nn", ""]
    if not report["complete"]:
        lines += [f"**PARTIAL: {len(units)} of {len(report['plan'])} units done.**", ""]
    if s["tiny"]:
        lines += ["**--tiny: a check that every path runs, compiled with less optimisation; the times mean nothing.**",
                  ""]
    lines += [
        "The many-to-one model of `run.py` (the last hidden state of one layer, `dense(1)`, MSE against a target), "
        "float32 inputs `[B, T, I]` with I = H. *training step*: loss and gradients w.r.t. all params "
        "(`jax.jit(jax.value_and_grad(loss))`, torch forward + `loss.backward()`); *inference*: the forward pass. "
        f"Each cell of a table is the median ms per step over {s['repeats']} interleaved measurements "
        f"({s['long_repeats']} at T = 1,000) after a warm-up call, with the achieved TFLOP/s in brackets: "
        "`24 B T H (I+H)` FLOPs for an LSTM training step, 18 for a GRU, a third for inference "
        "(`run_cases.step_flops`); for a linear recurrence `2 B T` times the entries of the matrices one step "
        "applies, three times that for training. `× default`: scanrnn `Execution()`'s time over the row's "
        "(above 1: the row is faster). The module docstring of `experiments/benchmarks/gpu.py` says what each "
        "column is and how the shapes were chosen.",
        "",
        f"- Machine: {describe(m)}; torch device `{s['torch_device']}`",
        f"- Versions: python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}, torch {m.get('torch')}, "
        f"flax {m.get('flax')}, numpy {m['numpy']}; scanrnn {m['scanrnn_source']}",
        f"- Precision: {s['precision_note']}",
        f"- Command: `{report['command']}`; {report['date']}; wall time {report['wall_time_s']:.0f} s "
        f"(budget {s['budget_s']:.0f} s); load average {report['load_average']['start']} at the start, "
        f"{report['load_average'].get('end')} at the end",
    ]
    for peer in ("torch", "flax"):
        if s[f"{peer}_reason"]:
            lines.append(f"- {peer} left out: {s[f'{peer}_reason']}")
    if s["cudnn_note"]:
        lines.append(f"- cuDNN rows: {s['cudnn_note']}")
    lines += ["", "## Fastest per choice", "",
              "Over the shapes where both sides ran: how many each side won, and the median (min–max) over those "
              "shapes of the base's time divided by the alternative's (above 1: the alternative is faster). The "
              "base is `default` (scanrnn `Execution()`, float32), except for the row of cuDNN against torch.", "",
              markdown_table(*choice_summary(units)), ""]
    lines += linear_summary(units) + [""]
    for cell in ("lstm", "gru"):
        for op in ("train", "infer"):
            rows, header = cell_table(units, cell, op)
            if rows:
                lines += [f"## {cell.upper()}, {KINDS[op]}: ms (TFLOP/s)", "", markdown_table(rows, header), ""]
    for op in ("train", "infer"):
        rows, header = linear_table(units, op)
        if rows:
            lines += [f"## Linear recurrences, {KINDS[op]}: ms (TFLOP/s)", "", markdown_table(rows, header), ""]
    lines += ["## Correctness checks", "",
              "Each row's loss and the gradients of the recurrent kernel (`w_hh`; a linear cell's first matrix) and "
              "of the head against scanrnn `default`'s (a linear cell's modes against its sequential mode), "
              "relative errors as `run.py` computes them (`run_checks.check`), at the tolerance of the row's "
              "products: " + "; ".join(f"{t.why}: {t.loss:g}, {t.grad:g}" for t in (FLOAT32, TF32, BFLOAT16)) + ".",
              "", markdown_table(*check_summary(units)), ""]
    failed = failures(units)
    lines += ([f"**Failed checks:** {', '.join(failed)}.", ""] if failed else ["Every check passed.", ""])
    skipped = [f"{u['case']['name']}/{u['cell']}/{x['impl']}: {x['reason']}" for u in units for x in u["skipped"]]
    skipped += [f"{u['case']['name']}/{u['cell']}: {u['error']}" for u in units if "error" in u]
    skipped += [f"{x['unit']}: {x['reason']}" for x in report["skipped_units"]]
    if skipped:
        lines += ["## Not run", ""] + [f"- {x}" for x in skipped] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The command line.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="B=2, T=8, H=8, 1 repeat: every implementation once, on whatever backend is there")
    p.add_argument("--out", type=Path, help="the folder of results.json and results.md")
    p.add_argument("--repeats", type=int, help="measurements per implementation at T = 100 (default 5; 1 with --tiny)")
    p.add_argument("--long-repeats", type=int, help="measurements at T = 1,000 (default 3; 1 with --tiny)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="start no unit that would end past this many seconds from the start (default 420)")
    p.add_argument("--precision", choices=("default", "highest"), default="default",
                   help="float32 products: JAX's default (TF32 on a recent GPU) or full float32 everywhere")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.tiny else 5)
    args.long_repeats = args.long_repeats or (1 if args.tiny else 3)
    args.out = args.out or (RUNS / "benchmarks-gpu-tiny" if args.tiny else RESULTS / "benchmarks-gpu")
    if min(args.repeats, args.long_repeats) < 1 or args.budget_s <= 0:
        p.error("repeats and the budget must be positive")
    return args


def setup(args) -> tuple:
    """Start JAX, then the peers; ``(Env, settings, machine)``."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")  # the rest of the GPU for torch
    if args.tiny:  # a check that every path runs, not a measurement: compile with less optimisation
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
    import jax

    import scanrnn.cudnn

    if args.precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    backend = jax.default_backend()  # starts JAX's backend (and loads its cuDNN) before torch loads its own
    on_gpu = backend in ("gpu", "cuda")

    torch_weights = importlib.util.find_spec("torch") is not None
    torch_device, torch_reason = None, ""
    if torch_weights:
        try:
            import torch
        except Exception as error:  # noqa: BLE001 (a torch that cannot load with JAX's CUDA libraries)
            torch_weights = False
            torch_reason = f"import torch failed ({_why(error)}); scanrnn's params come from its init"
    else:
        torch_reason = "torch is not installed (pip install torch==2.13.0); scanrnn's params come from its init"
    if torch_weights:
        torch.backends.cudnn.enabled = True
        if args.precision == "highest":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if torch.cuda.is_available():
            torch_device = "cuda"
        elif on_gpu:
            torch_reason = (f"torch {torch.__version__} has no CUDA here, and torch on the CPU would not be "
                            "comparable (its seeded modules still give every row its weights)")
        else:
            torch_device = "cpu"
    flax_reason = ""
    if importlib.util.find_spec("flax") is None:
        flax_reason = 'flax is not installed (pip install -e ".[bench]")'
    elif not torch_weights:
        flax_reason = "flax's weights are mapped from torch's, and torch is not available"

    cudnn_note = ""
    if not on_gpu:
        if args.tiny:
            # The same packed path through jax.experimental.rnn.lstm_ref, as tests/test_cudnn.py runs it.
            scanrnn.cudnn.KERNELS["cudnn"] = scanrnn.cudnn.KERNELS["reference"]
            scanrnn.cudnn._backend = lambda: "gpu"
            scanrnn.cudnn._PER_SEQUENCE.clear()
            cudnn_note = "reference kernel (no GPU)"
        else:
            cudnn_note = f"Execution(cudnn=True) needs a CUDA GPU; the backend is {backend!r}"
    tf32 = on_gpu and args.precision == "default"
    env = Env(torch_weights, torch_device, torch_reason, flax_reason, cudnn_note, tf32, args.seed)

    machine = machine_info(("torch", "flax"))
    if torch_device == "cuda":
        import torch

        machine["gpu"] = torch.cuda.get_device_name()
    if tf32:
        precision_note = ("JAX's default matmul precision: TensorFloat-32 products for float32 on this GPU "
                          "(cuDNN's too); torch's defaults (TF32 in cuDNN, not in its matmuls)")
    elif args.precision == "highest":
        precision_note = "full float32 products (`jax_default_matmul_precision='highest'`, torch's TF32 off)"
    else:
        precision_note = "float32 products (no TF32 on this backend)"
    settings = {"tiny": args.tiny, "repeats": args.repeats, "long_repeats": args.long_repeats,
                "min_time_s": 0.0 if args.tiny else MIN_TIME, "budget_s": args.budget_s, "precision": args.precision,
                "precision_note": precision_note, "seed": args.seed, "inputs": "I = H",
                "torch_device": torch_device or "-", "torch_reason": torch_reason, "flax_reason": flax_reason,
                "cudnn_note": cudnn_note, "jax_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
                "tolerances": {t.why: {"loss": t.loss, "grad": t.grad} for t in (FLOAT32, TF32, BFLOAT16)}}
    return env, settings, machine


def unit_label(unit: Unit) -> str:
    c = unit.case
    return f"{unit.cell} B={c.batch}, T={c.steps:,}, H={c.hidden:,} ({unit.group})"


def main(argv=None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    env, settings, machine = setup(args)
    if not args.tiny and machine["jax_backend"] not in ("gpu", "cuda"):
        print(f"note: the backend is {machine['jax_backend']!r}; this run is meant for a GPU (--tiny checks it runs)")
    units = plan(args.tiny)
    steps = sum(2 * len(u.rows) for u in units)
    print(f"{describe(machine)}; torch {machine.get('torch')} ({env.torch_device or 'left out'}), "
          f"flax {machine.get('flax')}; {len(units)} units, up to {steps} compiled steps; "
          f"budget {args.budget_s:.0f} s", flush=True)
    report = {
        "command": command_line(__file__, argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine, "settings": settings,
        "plan": [{"unit": unit_label(u), "rows": [r if isinstance(r, str) else " ".join(r) for r in u.rows]}
                 for u in units],
        "units": [], "skipped_units": [], "complete": False, "wall_time_s": 0.0,
        "load_average": {"start": load_average()},
    }

    def write():
        report["wall_time_s"] = time.perf_counter() - start
        report["load_average"]["end"] = load_average()
        write_results(args.out, report, markdown(report))

    done, data_of = [], {}
    for unit in units:
        elapsed = time.perf_counter() - start
        expected = predicted_s(unit, done)
        if elapsed + expected > args.budget_s:
            reason = f"not started: {elapsed:.0f} s + about {expected:.0f} s would pass the budget of " \
                     f"{args.budget_s:.0f} s (--budget-s)"
            report["skipped_units"].append({"unit": unit_label(unit), "reason": reason})
            print(f"[{elapsed:.0f} s] skipped {unit_label(unit)}: {reason}", flush=True)
            continue
        if unit.case.name not in data_of:
            data_of = {unit.case.name: make_data(unit.case, args.seed)}  # one shape's data at a time
        repeats = args.long_repeats if unit.case.steps >= 1000 else args.repeats
        began = time.perf_counter()
        try:
            record = run_unit(unit, data_of[unit.case.name], env, repeats, 0.0 if args.tiny else MIN_TIME)
        except Exception as error:  # noqa: BLE001 (the other units still run)
            reason = f"failed: {_why(error)}"
            report["skipped_units"].append({"unit": unit_label(unit), "reason": reason})
            print(f"[{time.perf_counter() - start:.0f} s] {unit_label(unit)} {reason}", flush=True)
            done.append((unit.group, unit.case.steps, time.perf_counter() - began))
            gc.collect()
            continue
        done.append((unit.group, unit.case.steps, record["unit_s"]))
        report["units"].append(record)
        print_unit(record, time.perf_counter() - start)
        write()
        if env.torch_device == "cuda":
            import torch

            torch.cuda.empty_cache()

    report["complete"] = True
    write()
    print("\nFastest per choice (base ÷ alternative: above 1, the alternative is faster)")
    print(table(*choice_summary(report["units"])))
    for line in linear_summary(report["units"]):
        print(line)
    print("\nChecks")
    print(table(*check_summary(report["units"])))
    print(f"\nwrote {args.out}/results.json and results.md ({report['wall_time_s']:.0f} s)")
    failed = failures(report["units"])
    if failed:
        print(f"correctness checks FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
