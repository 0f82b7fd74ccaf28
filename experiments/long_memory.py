"""Long memory: the copy task, selective copying and the adding problem at growing lengths.

Three tasks that a model without long memory cannot solve, each at lengths
``T`` of 100, 1,000 and 4,000 steps (``--lengths``; the last only timed, as
said below):

- the copy task (Arjovsky, Shah and Bengio 2016, Sec. 4.1;
  :func:`scanrnn.data.memory.copy_task`): 10 symbols out of 8, blanks, a
  delimiter, and the 10 symbols to be output in order at the last 10 steps,
  each ``T - 10`` steps after it was read (the paper's ``T`` is our ``T -
  20``). Without memory a model gets 1/8 of them right (cross-entropy
  ``log 8`` per recalled symbol, or ``10 log 8 / T`` averaged over all
  steps, the paper's baseline). A fixed delay solves it, so a linear
  time-invariant recurrence can (Gu and Dao 2023, Fig. 2); Arjovsky et al.
  report the LSTM at the baseline for their delays of 200 and more (our
  ``T >= 220``);
- selective copying (Gu and Dao 2023, Sec. 4.1.1;
  :func:`scanrnn.data.memory.selective_copy`): 16 symbols at random
  positions among noise, to be output in order at the last 16 steps. The
  spacing varies, so no fixed delay solves it. Without memory: 1/8;
- the adding problem (:func:`scanrnn.data.adding_problem`): the sum of the
  two marked values among ``T`` random ones. Predicting 1 scores MSE 1/6.

The copy tasks are trained with the cross-entropy over the recalled symbols
only (the paper's loss averages over all steps, where the blanks are
trivially right) and scored by the accuracy over them; the adding problem
by the squared error of the output at the last step. A run is *solved* at
accuracy 0.99 (MSE below 0.01).

Models, each with about ``--params`` trainable numbers (10,000; a complex
parameter counts twice) on every task: the width that comes nearest is
searched for each task's input and output widths, since a model's count
depends on them (the copy tasks' 10 and 9, the adding problem's 2 and 1: the
minGRU, whose cell has no recurrent matrix, is 322 wide on the copy tasks
and 1,428 on the adding problem). The models: the LSTM, the GRU and minGRU
(Feng et al. 2024) as ``serial(recurrent(cell), dense(C))``; the LRU (Orvieto et al. 2023) and S5 (Smith et al. 2023) as
``serial(dense(W), gelu, recurrent(cell), gelu, dense(C))``, since a linear
recurrence needs a nonlinearity before it for the adding problem's products
and one after it, as the papers' blocks have; the Hawk block (Griffin's
recurrent block with the RG-LRU; De et al. 2024) and the Mamba block (Gu and
Dao 2023) as ``serial(dense(W), block, dense(C))``. The first dense layer
embeds the one-hot inputs. The LRU starts from the ring initialisation of
its long-range experiments, ``|lambda|`` in ``[0.9, 0.999]``, with phases in
``[0, 2 pi]`` (the settings of its sCIFAR runs as reproductions configure
them; PathX, at 16k steps, starts nearer the circle, ``[0.999, 0.9999]``,
with phases up to ``pi / 10``); every linear recurrence
runs in its sequential mode, on a CPU much the fastest (the associative and
chunked modes of the LRU and minGRU took 3 to 8 times longer per step at
``T = 1,000``).

Training: Adam (``--lr``), gradient clipping at global norm 1, batches of
``--batch`` fresh sequences every step (one size per length; the same
stream for every model of a task and length), until the run is solved or its
budget of seconds (``--seconds``, one per length) is spent; the model's
initialisation and compilation are not counted (the table's "setup s"). Each
batch is new and the step measures the model on it before training on it,
so the mean over each window of ``--eval-every`` steps is a held-out test
metric: the curves plot it, and the table gives the last window's. The two
copy tasks share their compiled programs. A length whose budget is
``timing`` is only timed: each run takes 3 steps, and its row gives the
time per step and no test metric ("timing only" in the table).

The budget (15 s at T = 100 with batches of 32, 7 s at T = 1,000 with
batches of 16, timing only at T = 4,000 with batches of 8) is set from the
last full run (``experiments/results/long_memory/``: 626 s, with budgets of
12, 5 and 3 s and batches of 32, at load average about 3, so its times are
on the high side for an idle machine). In that run every model stayed at
chance at T = 1,000 and 4,000, with 5 to 35 and 1 to 6 steps: those rows
measured speed only. So the budget now goes where learning showed:

- T = 100, 15 s (was 12): the LRU solved the copy task at step 675 (11 s);
  when the 12 s ran out S5 was at accuracy 0.85 on it and Hawk at 0.24,
  selective copying was still climbing for the GRU (0.31), S5 and Hawk,
  and on the adding problem only the GRU had left the plateau at MSE 1/6
  (after about 750 steps). Whether 3 s more are enough for any of them is
  for the run to show. The minGRU's steps on the adding problem cost more
  now that its width is matched there (about 240 ms at width 1,428,
  measured under load average 5, against 36 ms at width 322).
- T = 1,000, 7 s (was 5) with batches of 16 (was 32): a step's time grows
  with B * T (the LSTM's: 131 to 134 ms at B = 16 against 245 to 360 ms at
  B = 32, measured one after the other under load average 5), so a run gets
  about 2.8 times the steps of the last run: some 80 to 95 for the LSTM,
  GRU and LRU, 20 for Mamba. That is still a seventh of the steps in which
  the LRU solved the copy task at T = 100: a row at chance there says that
  the budget is small, not that the model cannot learn; ``--seconds`` buys
  more.
- T = 4,000: timing only, 3 steps with batches of 8, too few to learn
  anything; the table's ms/step says what a training budget there would buy.

The estimate for the default run, at the last run's times: setup 188 s (60 s
for the copy tasks' seven programs at T = 100, which include each model's
first initialisation, 29 s for the adding problem's, and 24 to 26 s for each
other length and loss); the width searches, plots and files 12 s (8 s in
the last run, with one search); 21 runs of 15 s at T = 100 and 21 of 7 s at
T = 1,000, 462 s, plus the step that crosses each budget, at most 10 s in
all (one step per run at the last run's B = 32 times); and the timing runs
at most 87 s (3 steps per run at the last run's B = 32 times: 8.5 s per
step of all seven models on the copy task, 8.9 s on selective copying, 6.8
s on the adding problem without the minGRU, plus 4.7 s for the minGRU's
step at width 1,428 and B = 8, measured under load average 5; B = 8 is
cheaper still, Mamba's step about 1.5 s against 4.1 s). In all at most
759 s, under 13 minutes. The budget is in seconds, not steps, so a model
whose steps are cheaper trains for more of them.

Outputs in ``--out`` (``experiments/results/long_memory/``, or
``runs/long_memory-quick/`` with ``--quick``): ``results.json`` (the
command, settings, machine, and every run with its curve and losses),
``results.md`` (the table) and a plot per task, ``<task>.png``, of the
held-out metric against training steps, one panel per trained length.

    python experiments/long_memory.py             # the study, under 13 minutes on 2 idle cores
    python experiments/long_memory.py --quick     # T = 24, timing at 32; LSTM and LRU of 1,000 params: a minute
    python experiments/long_memory.py --tasks copy --lengths 1000 --seconds 120 --batch 16 --models lstm,lru
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import lru_cache, partial
from typing import Callable, NamedTuple, Optional

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import scanrnn as sr  # noqa: E402
from scanrnn import data  # noqa: E402
from scanrnn.data.memory import copy_memoryless_loss, copy_task, selective_copy  # noqa: E402
from benchmarks.common import (  # noqa: E402
    command_line, default_out, describe, load_average, machine_info, markdown_table, table, write_results,
)

TASKS = ("copy", "selective", "adding")
SOLVED_ACCURACY = 0.99  # the copy tasks are solved at this test accuracy over the recalled symbols
SOLVED_MSE = 0.01  # the adding problem is solved below this test MSE
ADDING_BASELINE = 1 / 6  # the MSE of always predicting 1
LRU_INIT = dict(r_min=0.9, r_max=0.999, max_phase=2 * math.pi)  # Orvieto et al. 2023's ring init for long tasks


# --------------------------------------------------------------------------
# The models.


class Model(NamedTuple):
    """A model of the study: ``core(W)`` makes its recurrent part, which :func:`build` wraps as ``shape`` says.

    ``"cell"``: ``serial(recurrent(cell), dense(C))``; ``"linear"``: ``serial(dense(W), gelu, recurrent(cell),
    gelu, dense(C))``; ``"block"``: ``serial(dense(W), block, dense(C))``. Every core maps width W to width W.
    """

    description: str
    shape: str  # "cell", "linear" or "block"
    core: Callable  # (W, **options) -> the cell, or the block; options (mode=) override the defaults set here


def pointwise(fn) -> sr.Layer:
    """A stateless layer applying ``fn`` to every element (an activation between layers)."""

    def apply(params, xs, length=None, *, key=None, carry=None):
        ys = fn(xs)
        return ys if carry is None else (ys, ())

    return sr.Layer(lambda key, input_size: (), apply, lambda params: ())


def _s5(width, **options):
    return sr.s5(2 * max(1, width // 2), **{"mode": "sequential", **options})  # P even: W/2 conjugate pairs


def _mamba(width, **options):
    return sr.mamba(**{"mode": "sequential", **options})  # its width is that of its input


MODELS = {
    "lstm": Model("LSTM", "cell", sr.lstm),
    "gru": Model("GRU (reset after)", "cell", sr.gru),
    "min_gru": Model("minGRU", "cell", partial(sr.min_gru, mode="sequential")),
    "lru": Model("LRU, |lambda| in [0.9, 0.999], phase in [0, 2 pi]", "linear",
                 partial(sr.lru, mode="sequential", **LRU_INIT)),
    "s5": Model("S5, P = W (W/2 complex states), one HiPPO-N block", "linear", _s5),
    "hawk": Model("Hawk block (RG-LRU of width W)", "block", partial(sr.hawk, mode="sequential")),
    "mamba": Model("Mamba block, N = 16, expand 2", "block", _mamba),
}


def build(name, width, outputs, **options) -> sr.Layer:
    """The model ``name`` of width ``width`` with ``outputs`` outputs per step."""
    shape, core = MODELS[name].shape, MODELS[name].core
    part = core(width, **options)
    if shape == "cell":
        return sr.serial(sr.recurrent(part), sr.dense(outputs))
    if shape == "linear":
        return sr.serial(sr.dense(width), pointwise(jax.nn.gelu), sr.recurrent(part), pointwise(jax.nn.gelu),
                         sr.dense(outputs))
    return sr.serial(sr.dense(width), part, sr.dense(outputs))


FULL = dict(lengths="100,1000,4000", seconds="15,7,timing", batch="32,16,8", params=10_000, lr=2e-3, eval_every=25,
            num_symbols=8, copy_length=10, num_tokens=16)
QUICK_MODELS = "lstm,lru"  # the pair of the published claim
QUICK = dict(lengths="24,32", seconds="0.5,timing", batch="8,4", params=1_000, lr=2e-3, eval_every=5,
             num_symbols=4, copy_length=4, num_tokens=4)
TIMING = "timing"  # in --seconds: the length is only timed, TIMING_STEPS steps per run
TIMING_STEPS = 3


class Stage(NamedTuple):
    """One length of the study, with the batch size and the budget of every run at it."""

    length: int  # T, the steps of each sequence
    batch: int  # sequences per training step
    seconds: Optional[float]  # the training budget; None: timing only, TIMING_STEPS steps


def count_params(params) -> int:
    """Trainable real numbers: a complex leaf counts twice."""
    return sum(int(np.prod(l.shape)) * (2 if jnp.issubdtype(l.dtype, jnp.complexfloating) else 1)
               for l in jax.tree.leaves(params))


@lru_cache(maxsize=None)  # the width search asks for the same counts again
def param_count(name, width, inputs, outputs) -> int:
    """The parameter count of :func:`build`'s model, from the core's init alone (no tracing of ``apply``)."""
    shape, core = MODELS[name].shape, MODELS[name].core
    core_input = inputs if shape == "cell" else width
    counted = count_params(jax.eval_shape(lambda key: core(width).init(key, core_input), jax.random.key(0)))
    embedding = 0 if shape == "cell" else (inputs + 1) * width
    return embedding + counted + (width + 1) * outputs


def match_width(name, target, inputs, outputs) -> int:
    """The width whose parameter count is nearest ``target`` (the count grows with the width)."""
    low, high = 1, 2
    while param_count(name, high, inputs, outputs) < target and high < 1 << 14:
        low, high = high, high * 2
    while high - low > 1:  # count(low) < target <= count(high), or the bounds
        middle = (low + high) // 2
        if param_count(name, middle, inputs, outputs) < target:
            low = middle
        else:
            high = middle
    return min((low, high), key=lambda w: abs(param_count(name, w, inputs, outputs) - target))


def match_widths(tasks, models, args) -> dict:
    """``{task: {model: width}}``: each model's width nearest ``args.params`` for each task's inputs and outputs.

    The search runs once per distinct ``(inputs, outputs)`` (the copy tasks share theirs).
    """
    found = {}
    for shape in dict.fromkeys(task_shape(task, args) for task in tasks):
        found[shape] = {m: match_width(m, args.params, *shape) for m in models}
    return {task: found[task_shape(task, args)] for task in tasks}


# --------------------------------------------------------------------------
# Tasks: batches, losses, metrics.


def task_shape(task, args) -> tuple:
    """``(inputs, outputs)``: the one-hot width and the logits (or the one output) per step."""
    return (2, 1) if task == "adding" else (args.num_symbols + 2, args.num_symbols + 1)


def batch(task, n, length, args, rng):
    """``(x, y, scored)`` of ``n`` sequences of ``length`` steps (``scored`` unused by the adding problem)."""
    if task == "copy":
        return tuple(copy_task(n, length - 2 * args.copy_length, num_symbols=args.num_symbols,
                               copy_length=args.copy_length, rng=rng))
    if task == "selective":
        return tuple(selective_copy(n, length, num_symbols=args.num_symbols, num_tokens=args.num_tokens, rng=rng))
    x, y = data.adding_problem(n, length, rng=rng)
    return x, y, np.ones((n, length), bool)


def batch_loss(task, outputs, y, scored):
    """The training loss: cross-entropy over the scored steps, or the MSE at the last step."""
    if task == "adding":
        return jnp.mean(jnp.square(outputs[:, -1, :] - y))
    weights = scored.astype(outputs.dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs, y)
    return jnp.sum(ce * weights) / jnp.sum(weights)


def batch_sums(task, outputs, y, scored):
    """Sums over a batch, added up over a window of batches: ``(metric, cross-entropy or 0, count)``."""
    if task == "adding":
        dtype = outputs.dtype
        return jnp.sum(jnp.square(outputs[:, -1, :] - y)), jnp.zeros((), dtype), jnp.asarray(y.size, dtype)
    weights = scored.astype(outputs.dtype)
    correct = (jnp.argmax(outputs, axis=-1) == y).astype(outputs.dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs, y)
    return jnp.sum(correct * weights), jnp.sum(ce * weights), jnp.sum(weights)


def solved(task, metric) -> bool:
    return metric < SOLVED_MSE if task == "adding" else metric >= SOLVED_ACCURACY


def baseline(task, args) -> float:
    """The test metric of the best model without memory."""
    return ADDING_BASELINE if task == "adding" else 1 / args.num_symbols


# --------------------------------------------------------------------------
# One run: a model on a task at a length, within a budget of seconds.


class Program(NamedTuple):
    """A model's initial state and its compiled train step at one length, for one loss."""

    params: object
    opt_state: object
    step: object  # (params, opt_state, x, y, scored) -> (params, opt_state, loss, sums before the update)
    compile_seconds: float  # the initialisation and the compilation


def loss_kind(task) -> str:
    """The copy tasks share a loss, inputs and outputs, so one compiled program serves both."""
    return "adding" if task == "adding" else "classes"


def make_program(task, name, width, args, example) -> Program:
    """Initialise the model and compile its train step for batches shaped like ``example``.

    The step also returns the batch's metric sums (:func:`batch_sums`) under
    the params it starts from, before it trains on the batch.
    """
    start = time.perf_counter()
    inputs, outputs = task_shape(task, args)
    model = build(name, width, outputs)
    params = model.init(jax.random.fold_in(jax.random.key(args.seed), list(MODELS).index(name)), inputs)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    opt_state = optimizer.init(params)
    predict = jax.vmap(model.apply, in_axes=(None, 0))

    def train_step(params, opt_state, x, y, scored):
        def objective(params):
            outputs = predict(params, x)
            return batch_loss(task, outputs, y, scored), batch_sums(task, outputs, y, scored)

        (loss, sums), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, jnp.stack(sums)

    step = jax.jit(train_step).lower(params, opt_state, *example).compile()
    return Program(params, opt_state, step, time.perf_counter() - start)


def run(task, stage, name, width, args, program, compile_seconds):
    """Train ``program``'s model on fresh batches of ``stage`` until solved or its budget is spent; returns the row.

    Every batch is new, and the step measures it before training on it, so
    the metric over a window of ``eval_every`` steps is a held-out test
    metric: the curve holds one per window (and the first batch's at step 0).
    A timing-only stage (``stage.seconds`` None) runs ``TIMING_STEPS`` steps
    and reports no test metric: its row is there for the time per step.
    """
    length, timing_only = stage.length, stage.seconds is None
    rng = np.random.default_rng([args.seed, TASKS.index(task), length])  # the same stream for every model
    params, opt_state, step = program.params, program.opt_state, program.step
    curve, losses, window, last = [], [], np.zeros(3), None
    steps, step_seconds, solved_at = 0, 0.0, None
    start = time.perf_counter()
    while (steps < TIMING_STEPS) if timing_only else (time.perf_counter() - start < stage.seconds):
        x = batch(task, stage.batch, length, args, rng)
        t0 = time.perf_counter()
        params, opt_state, loss, sums = step(params, opt_state, *x)
        sums = np.asarray(sums, np.float64)  # waits for the step
        step_seconds += time.perf_counter() - t0
        if steps == 0:
            curve.append((0, float(sums[0] / sums[2])))
        steps += 1
        losses.append(float(loss))
        window += sums
        if steps % args.eval_every == 0 or not math.isfinite(losses[-1]):
            curve.append((steps, float(window[0] / window[2])))
            last, window = window, np.zeros(3)
            if not timing_only and solved(task, curve[-1][1]):
                solved_at = steps
            if solved_at or not math.isfinite(losses[-1]):
                break
    if window[2]:  # the budget ended within a window
        curve.append((steps, float(window[0] / window[2])))
        last = window
        if not timing_only and solved(task, curve[-1][1]):
            solved_at = steps
    train_seconds = time.perf_counter() - start
    return {
        "task": task, "length": length, "model": name, "description": MODELS[name].description, "width": width,
        "params": count_params(params), "batch": stage.batch, "timing_only": timing_only,
        "metric": None if timing_only else curve[-1][1],
        "cross_entropy": None if timing_only or task == "adding" else float(last[1] / last[2]),
        "metric_sequences": stage.batch * (steps - (curve[-2][0] if len(curve) > 1 else 0) or 1),
        "solved": solved_at is not None, "steps_to_solve": solved_at, "steps": steps,
        "ms_per_step": 1e3 * step_seconds / steps, "compile_seconds": compile_seconds,
        "train_seconds": train_seconds, "seconds": compile_seconds + train_seconds,
        "budget_seconds": stage.seconds, "curve": curve, "train_loss": losses,
    }


# --------------------------------------------------------------------------
# Tables, plots, command line.

METRIC = {"copy": "accuracy", "selective": "accuracy", "adding": "MSE"}
ALIGN = "lrlrrrrlrrrr"  # the table's columns


def result_table(rows) -> tuple:
    header = ["task", "T", "model", "width", "params", "batch", "test metric", "solved at step", "steps", "ms/step",
              "train s", "setup s"]
    lines = []
    for r in rows:
        if r["timing_only"]:
            metric, outcome = "timing only", "-"
        else:
            metric = f"{METRIC[r['task']]} {r['metric']:.4f}"
            outcome = str(r["steps_to_solve"]) if r["solved"] else "not solved"
        lines.append([
            r["task"], r["length"], r["model"], r["width"], f"{r['params']:,}", r["batch"], metric, outcome,
            r["steps"], f"{r['ms_per_step']:.1f}", f"{r['train_seconds']:.1f}",
            f"{r['compile_seconds']:.1f}" if r["compile_seconds"] else "shared",
        ])
    return lines, header


def plot_task(task, rows, lengths, path, base):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(lengths), 3.6), layout="constrained")
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    for ax, length in zip(axes, lengths):
        for r in rows:
            if r["task"] == task and r["length"] == length:
                steps, values = zip(*r["curve"])
                ax.plot(steps, values, ".-", label=r["model"])
        ax.axhline(base, color="k", ls="--", lw=0.8, label="no memory")
        ax.axhline(SOLVED_MSE if task == "adding" else SOLVED_ACCURACY, color="k", ls=":", lw=0.8, label="solved")
        if task == "adding":
            ax.set_yscale("log")
        ax.set_title(f"{task}, T = {length:,}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{METRIC[task]} on fresh batches")
        ax.grid(True, alpha=0.4)
    axes[-1].legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=100)


def claim(rows) -> list:
    """What the table says about the published claim: the LRU solves the copy task where the LSTM does not."""
    lines = []
    for r in rows:
        if r["task"] != "copy" or r["model"] != "lru" or r["timing_only"]:
            continue
        same = [q for q in rows if q["task"] == "copy" and q["length"] == r["length"] and q["model"] == "lstm"]
        if not same:
            continue

        def outcome(q):
            done = f"solved at step {q['steps_to_solve']}" if q["solved"] else f"not solved in {q['steps']} steps"
            return f"{done} (accuracy {q['metric']:.4f}, {q['train_seconds']:.1f} s of training)"

        lines.append(f"- T = {r['length']:,}: the LRU {outcome(r)}; the LSTM {outcome(same[0])}.")
    if not lines:
        return []
    return ["The published claim, that the LRU solves the copy task where the LSTM does not (Arjovsky et al. 2016 "
            "found the LSTM at the memoryless baseline; Gu and Dao 2023 note that a time-invariant recurrence solves "
            "it), on these runs:", "", *lines, ""]


def budget_text(s) -> str:
    """The settings' budgets, one clause per length."""
    trained = [f"{b:g} s of training at T = {t:,} (batches of {n})"
               for t, b, n in zip(s["lengths"], s["seconds"], s["batch"]) if b is not None]
    timed = [f"T = {t:,} (batches of {n})" for t, b, n in zip(s["lengths"], s["seconds"], s["batch"]) if b is None]
    text = ", ".join(trained) or "none"
    if timed:
        text += (f"; timing only at {', '.join(timed)}: {s['timing_steps']} steps, too few to learn anything, so "
                 "those rows give the time per step and no test metric")
    return text


def width_text(widths, tasks) -> str:
    """``44 on copy and selective, 48 on adding``: a model's widths, each with the tasks it serves."""
    by_width = {}
    for task in tasks:
        by_width.setdefault(widths[task], []).append(task)
    return ", ".join(f"{w} on {' and '.join(ts)}" for w, ts in by_width.items())


def markdown(result) -> str:
    s = result["settings"]

    def memoryless(length):
        return copy_memoryless_loss(length - 2 * s["copy_length"], num_symbols=s["num_symbols"],
                                    copy_length=s["copy_length"])

    baselines = ", ".join(f"{memoryless(t):.4f} at T = {t:,}" for t in s["lengths"] if t > 2 * s["copy_length"])
    listed = ("lengths", "seconds", "batch", "timing_steps", "tasks", "models")
    lines = [
        "# Long memory: copy, selective copy and the adding problem",
        "",
        f"`{result['command']}` (seed {s['seed']}) on {result['machine_line']}; load averages (1, 5, 15 min) "
        f"{result['load_average']['start']} at the start and {result['load_average']['end']} at the end; wall time "
        f"{result['wall_seconds']:.0f} s.",
        "",
        f"Budget per (task, length, model): {budget_text(s)}. The initialisation and compilation (\"setup\", shared "
        f"by the two copy tasks) are not counted. A run stops once solved: accuracy over the "
        f"recalled symbols >= {SOLVED_ACCURACY} (adding problem: MSE < {SOLVED_MSE}) over a window of "
        f"{s['eval_every']} fresh batches, each measured before the model trained on it; the \"test metric\" is "
        f"the last window's. Settings: " + ", ".join(f"{k}={v}" for k, v in s.items() if k not in listed) + ".",
        "",
        f"Without memory: accuracy 1/{s['num_symbols']} = {1 / s['num_symbols']:.3f} on the copy tasks "
        f"(cross-entropy log {s['num_symbols']} per recalled symbol; over all steps, the copy task's "
        f"{s['copy_length']} log {s['num_symbols']} / T: {baselines}), MSE 1/6 = {ADDING_BASELINE:.3f} on the "
        "adding problem.",
        "",
        f"Models, each with about {s['params']:,} parameters on every task (the width nearest it is searched for "
        "each task's input and output widths): "
        + "; ".join(f"`{m}` {d['description']} (width {width_text(d['widths'], s['tasks'])})"
                    for m, d in result["models"].items()) + ".",
        "",
        markdown_table(*result_table(result["rows"]), align=ALIGN),
        "",
    ]
    lines += claim(result["rows"])
    if result["plots"]:
        plots = ", ".join(f"`{name}`" for name in result["plots"])
        lines += [f"Plots: {plots} (the held-out metric against training steps, one panel per trained length).", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="T = 24 and a timing run at T = 32, models of 1,000 params, half a second each (for the tests)")
    p.add_argument("--out", help="output folder (default experiments/results/long_memory, or runs/long_memory-quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--models",
                   help=f"comma-separated subset of {','.join(MODELS)} (default all; {QUICK_MODELS} with --quick)")
    p.add_argument("--lengths", help="comma-separated sequence lengths T (default 100,1000,4000)")
    p.add_argument("--seconds", help=f"training budget in seconds for each length, comma-separated, or {TIMING!r} for "
                                     f"a timing-only run of {TIMING_STEPS} steps (default 15,7,timing)")
    p.add_argument("--batch", help="sequences per step for each length, comma-separated (default 32,16,8)")
    for key in ("params", "lr", "eval_every", "num_symbols", "copy_length", "num_tokens"):
        p.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.models = [m for m in (args.models or (QUICK_MODELS if args.quick else ",".join(MODELS))).split(",") if m]
    for kind, given, known in (("tasks", args.tasks, TASKS), ("models", args.models, MODELS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            p.error(f"unknown {kind} {unknown}; choose from {list(known)}")
    try:
        args.lengths = [int(v) for v in args.lengths.split(",")]
        args.seconds = [None if v.strip() == TIMING else float(v) for v in args.seconds.split(",")]
        args.batch = [int(v) for v in args.batch.split(",")]
    except ValueError as error:
        p.error(f"--lengths and --batch take comma-separated ints, --seconds numbers or {TIMING!r}: {error}")
    for name in ("seconds", "batch"):
        values = getattr(args, name)
        if len(values) == 1:
            setattr(args, name, values * len(args.lengths))
        elif len(values) != len(args.lengths):
            p.error(f"--{name} needs one value per length ({len(args.lengths)}), got {len(values)}")
    shortest = max(2 * args.copy_length + 1 if "copy" in args.tasks else 2,
                   2 * args.num_tokens if "selective" in args.tasks else 2)
    if min(args.lengths) < shortest:
        p.error(f"every length must be at least {shortest} for these tasks, got {min(args.lengths)}")
    if any(b is not None and b <= 0 for b in args.seconds):
        p.error(f"every budget of --seconds must be positive (or {TIMING!r}), got {args.seconds}")
    if min(args.batch) < 1:
        p.error(f"every --batch must be at least 1, got {args.batch}")
    args.stages = [Stage(*values) for values in zip(args.lengths, args.batch, args.seconds)]
    if args.out is None:
        args.out = str(default_out("long_memory", args.quick))
    return args


def main(argv=None):
    args = parse_args(argv)
    optimizations = jax.config.read("jax_disable_most_optimizations")
    if args.quick:  # a smoke test, mostly compilation: XLA's lighter pipeline compiles about twice as fast
        jax.config.update("jax_disable_most_optimizations", True)
    try:
        return study(args, argv)
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations)


def study(args, argv):
    start, load_at_start = time.perf_counter(), load_average()
    models = args.models
    widths = match_widths(args.tasks, models, args)  # {task: {model: width}}
    for shape in dict.fromkeys(task_shape(t, args) for t in args.tasks):
        tasks = [t for t in args.tasks if task_shape(t, args) == shape]
        print(f"widths for {', '.join(tasks)} ({shape[0]} inputs, {shape[1]} outputs), about {args.params:,} params:",
              flush=True)
        for m in models:
            w = widths[tasks[0]][m]
            print(f"  {m:8s} width {w:4d}: {param_count(m, w, *shape):,} params", flush=True)

    rows, programs = [], {}
    for task in args.tasks:
        for stage in args.stages:
            example = batch(task, stage.batch, stage.length, args, np.random.default_rng(0))  # shapes only
            for m in models:
                key = (m, stage.length, stage.batch, loss_kind(task))
                compile_seconds = 0.0
                if key not in programs:
                    programs[key] = make_program(task, m, widths[task][m], args, example)
                    compile_seconds = programs[key].compile_seconds
                row = run(task, stage, m, widths[task][m], args, programs[key], compile_seconds)
                rows.append(row)
                if row["timing_only"]:
                    state = "timing only"
                else:
                    state = (f"test {METRIC[task]} {row['metric']:.3f}, "
                             + (f"solved at step {row['steps_to_solve']}" if row["solved"] else "not solved"))
                print(f"{task:9s} T={stage.length:<5d} {m:8s} {state}, {row['steps']} steps of {stage.batch}, "
                      f"{row['ms_per_step']:.1f} ms/step, setup {row['compile_seconds']:.1f} s, "
                      f"{row['seconds']:.1f} s in all", flush=True)
            if not (task == "copy" and "selective" in args.tasks):  # selective copying reuses copy's programs
                for m in models:
                    programs.pop((m, stage.length, stage.batch, loss_kind(task)), None)

    print()
    print(table(*result_table(rows), align=ALIGN))
    os.makedirs(args.out, exist_ok=True)
    trained = [stage.length for stage in args.stages if stage.seconds is not None]
    plots = [f"{task}.png" for task in args.tasks] if trained else []
    for task, name in zip(args.tasks, plots):
        plot_task(task, rows, trained, os.path.join(args.out, name), baseline(task, args))
    info = machine_info(("optax",))
    settings = {k: getattr(args, k) for k in ("tasks", "lengths", "seconds", "batch", *FULL) if k in vars(args)}
    settings["timing_steps"] = TIMING_STEPS
    settings["seed"] = args.seed
    settings["models"] = models
    result = {
        "command": command_line(__file__, argv),
        "quick": args.quick,
        "jax_disable_most_optimizations": args.quick,  # quick runs compile with XLA's lighter pipeline
        "settings": settings,
        "solved_accuracy": SOLVED_ACCURACY,
        "solved_mse": SOLVED_MSE,
        "baselines": {t: baseline(t, args) for t in args.tasks},
        "models": {m: {"description": MODELS[m].description,
                       "widths": {t: widths[t][m] for t in args.tasks},
                       "params": {t: param_count(m, widths[t][m], *task_shape(t, args)) for t in args.tasks}}
                   for m in models},
        "rows": rows,
        "plots": plots,
        "wall_seconds": time.perf_counter() - start,
        "load_average": {"start": load_at_start, "end": load_average()},
        "machine": info,
        "machine_line": describe(info),
    }
    write_results(args.out, result, markdown(result))
    print(f"\nwall {result['wall_seconds']:.1f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
