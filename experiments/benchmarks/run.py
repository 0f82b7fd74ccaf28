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

    python experiments/benchmarks/run.py                     # full run, writes BENCHMARKS.md
    python experiments/benchmarks/run.py --quick             # tiny shapes, ~1 minute
    python experiments/benchmarks/run.py --cases small --cells lstm gru --repeats 20
    python experiments/benchmarks/run.py --cases tiny --scanrnn-variants unroll_steps=4 auto

``--out PATH`` is the Markdown file (default ``BENCHMARKS.md`` at the
repository root; ``runs/benchmarks-quick/BENCHMARKS.md`` with ``--quick``);
the raw numbers go to ``results.json`` (``experiments/results/benchmarks/``
for the default full run, beside ``--out`` otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import json
import math
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CELLS = ("lstm", "gru", "rnn")
# Training-step FLOPs per (B T H (I + H)) of one layer and direction: forward
# 2 G B T H (I + H) for G gate blocks (LSTM 4, GRU 3, RNN 1), backward twice that.
FLOP_FACTOR = {"lstm": 24, "gru": 18, "rnn": 6}
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3


class Case(NamedTuple):
    """One benchmark shape."""

    name: str
    batch: int  # B
    steps: int  # T
    inputs: int  # I
    hidden: int  # H
    layers: int = 1
    bidirectional: bool = False
    cells: tuple = CELLS  # the cells this case is run with


CASES = {
    c.name: c
    for c in [
        Case("tiny", 32, 50, 1, 20),
        Case("small", 64, 100, 32, 128),
        Case("medium", 128, 200, 64, 256),
        Case("long", 16, 2000, 32, 128),
        Case("medium-bidir", 128, 200, 64, 256, bidirectional=True, cells=("lstm", "gru")),
        Case("medium-2layer", 128, 200, 64, 256, layers=2, cells=("lstm",)),
        # The same structures on the tiny shape (the --quick run).
        Case("tiny-bidir", 32, 50, 1, 20, bidirectional=True, cells=("gru",)),
        Case("tiny-2layer", 32, 50, 1, 20, layers=2, cells=("lstm",)),
    ]
}
FULL_CASES = ("tiny", "small", "medium", "long", "medium-bidir", "medium-2layer")
QUICK_CASES = ("tiny", "tiny-bidir", "tiny-2layer")


def step_flops(case: Case, cell: str, train: bool = True) -> float:
    """Matmul FLOPs of one step over the batch: ``k B T H (I_l + H)`` summed over layers and directions."""
    directions = 2 if case.bidirectional else 1
    total = 0
    size = case.inputs
    for _ in range(case.layers):
        total += FLOP_FACTOR[cell] * case.batch * case.steps * case.hidden * (size + case.hidden) * directions
        size = case.hidden * directions
    return float(total if train else total / 3)


# --------------------------------------------------------------------------
# Machine, versions and load.


def machine_info(torch_device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "gpu": None}
    for module in ("jax", "jaxlib", "torch", "flax", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    import jax

    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if gpus:
        info["gpu"] = getattr(gpus[0], "device_kind", str(gpus[0]))
    if torch_device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name()
    info["torch_device"] = torch_device
    info["scanrnn_source"] = scanrnn_source()
    return info


def scanrnn_source() -> str:
    """Where scanrnn was imported from: its directory, commit, and whether it has uncommitted changes."""
    import scanrnn

    src = Path(scanrnn.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"from {src} (not a git checkout)"
    return f"from {src} at commit {commit}" + (" with uncommitted changes" if dirty else "")


def load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------
# The three implementations of one model.


class Impl(NamedTuple):
    """One implementation of a case: callables that run a step to completion."""

    name: str
    train: Callable[[], None]  # loss and all gradients, finished
    infer: Callable[[], None]  # forward pass, finished
    loss: float  # the loss of the first training step
    grads: dict  # name -> np.ndarray, the gradients compared across implementations
    memory: dict  # {"train": bytes or None, "infer": ..., "kind": str}


def make_data(case: Case, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.steps, case.inputs), dtype=np.float32)
    y = rng.standard_normal((case.batch, 1), dtype=np.float32)
    return x, y


def torch_model(case: Case, cell: str, seed: int, device: str):
    """The torch model (recurrent module and linear head), seeded, on ``device``."""
    import torch

    torch.manual_seed(seed)
    kinds = {"lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {}), "rnn": (torch.nn.RNN, {"nonlinearity": "tanh"})}
    cls, kw = kinds[cell]
    rnn = cls(case.inputs, case.hidden, num_layers=case.layers, batch_first=True,
              bidirectional=case.bidirectional, **kw)
    head = torch.nn.Linear(case.hidden * (2 if case.bidirectional else 1), 1)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            _, state = self.rnn(x)
            h_n = state[0] if isinstance(state, tuple) else state  # [L*D, B, H]
            last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if case.bidirectional else h_n[-1]
            return self.head(last)

    return Model().to(device)


def torch_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def torch_step_fns(model, x, y, device: str):
    """``(train, infer)`` closures for a torch model on tensors ``x``, ``y``."""
    import torch

    sync = torch_sync(device)
    mse = torch.nn.functional.mse_loss

    def train():
        model.zero_grad(set_to_none=True)
        loss = mse(model(x), y)
        loss.backward()
        sync()
        return loss

    def infer():
        with torch.inference_mode():
            out = model(x)
        sync()
        return out

    return train, infer


def torch_impls(case: Case, cell: str, seed: int, device: str, data, threads: list) -> list:
    """The torch implementation, one row per CPU thread count in ``threads`` (the first is "torch").

    Each call sets ``torch.set_num_threads`` to its row's count first (it is
    a process-wide setting). On a GPU the memory is measured here; on a CPU
    :func:`start_torch_cpu_memory` measures it for the first row.
    """
    import torch

    model = torch_model(case, cell, seed, device)
    x, y = (torch.from_numpy(a).to(device) for a in data)
    train, infer = torch_step_fns(model, x, y, device)
    torch.set_num_threads(threads[0])
    loss = float(train().detach().cpu())
    grads = {
        "w_hh": model.rnn.weight_hh_l0.grad.detach().cpu().numpy().copy(),
        "head": model.head.weight.grad.detach().cpu().numpy().copy(),
    }
    memory = torch_cuda_memory(train, infer) if device.startswith("cuda") else {}

    def with_threads(fn, n):
        def call():
            torch.set_num_threads(n)
            return fn()

        return call

    impls = []
    for k, n in enumerate(threads):
        name = "torch" if k == 0 else f"torch[threads={n}]"
        mem = memory if k == 0 else {"kind": memory.get("kind"), "train": None, "infer": None}
        impls.append(Impl(name, with_threads(train, n), with_threads(infer, n), loss, grads, mem))
    return impls


def torch_cuda_memory(train, infer) -> dict:
    import torch

    out = {"kind": "torch.cuda.max_memory_allocated growth over one call"}
    for name, fn in (("infer", infer), ("train", train)):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        out[name] = int(torch.cuda.max_memory_allocated() - before)
    return out


def _status_bytes(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS (Linux: ``clear_refs`` value 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def torch_cpu_memory_worker(spec: dict) -> dict:
    """In a fresh process: peak RSS growth of one inference call, then of one training step.

    Before each call the peak RSS is reset to the current RSS, so the growth is
    the call's own: ``VmHWM`` after minus ``VmRSS`` before. Where the peak
    cannot be reset, ``ru_maxrss`` after minus RSS before is an upper bound
    when the call did not raise the process's earlier peak (``*_exact`` false).
    """
    import torch

    torch.set_num_threads(spec["threads"])
    case = CASES[spec["case"]]
    model = torch_model(case, spec["cell"], spec["seed"], "cpu")
    x, y = (torch.from_numpy(a) for a in make_data(case, spec["seed"]))
    train, infer = torch_step_fns(model, x, y, "cpu")
    gc.collect()
    out = {"kind": "peak RSS growth of a fresh process over one call"}
    for name, fn in (("infer", infer), ("train", train)):
        reset = _reset_peak_rss()
        baseline = _status_bytes("VmRSS")
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        fn()
        peak = _status_bytes("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out[name] = max(peak - baseline, 0)
        out[f"{name}_exact"] = reset or peak > peak_before
    return out


def start_torch_cpu_memory(case: Case, cell: str, seed: int, threads: int) -> subprocess.Popen:
    """Start :func:`torch_cpu_memory_worker` in a fresh process; :func:`finish_torch_cpu_memory` reads it."""
    spec = json.dumps({"case": case.name, "cell": cell, "seed": seed, "threads": threads})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-memory-worker", spec]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_torch_cpu_memory(process: subprocess.Popen) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=600)
        return json.loads(stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError) as error:
        process.kill()
        return {"kind": "peak RSS growth of a fresh process over one call", "train": None, "infer": None,
                "error": f"{type(error).__name__}: {error}"}


def jax_memory(jitted, *args) -> dict:
    """XLA's memory analysis of the compiled ``jitted(*args)``: temp, argument and output bytes."""
    try:
        stats = jitted.lower(*args).compile().memory_analysis()
    except Exception as error:  # noqa: BLE001 (some backends do not implement it)
        return {"error": f"{type(error).__name__}: {error}"}
    if stats is None:
        return {"error": "memory_analysis() returned None"}
    temp = int(stats.temp_size_in_bytes)
    args_ = int(stats.argument_size_in_bytes)
    outs = int(stats.output_size_in_bytes)
    return {"temp": temp, "argument": args_, "output": outs, "total": temp + args_ + outs}


def jax_fns(loss_fn, forward, params, x, y):
    """Jitted train and infer callables, the first loss and grads, and XLA's memory analysis."""
    import jax

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    forward = jax.jit(forward)

    def train():
        return jax.block_until_ready(value_and_grad(params, x, y))

    def infer():
        return jax.block_until_ready(forward(params, x))

    loss, grads = train()
    train_mem = jax_memory(value_and_grad, params, x, y)
    infer_mem = jax_memory(forward, params, x)
    memory = {
        "kind": "XLA memory_analysis temp + argument + output",
        "train": train_mem.get("total"),
        "infer": infer_mem.get("total"),
        "train_detail": train_mem,
        "infer_detail": infer_mem,
    }
    return train, infer, float(loss), grads, memory


def scanrnn_layer(cell, case: Case, return_sequences: bool, options: dict):
    """One scanrnn layer of ``case`` with extra ``options``, through the public API.

    The options go to ``recurrent`` / ``bidirectional`` when their
    signatures accept them. An option that only :func:`scanrnn.unroll` (or
    :func:`scanrnn.unroll_bidirectional`) accepts so far is passed to it by a
    small layer around it (``unroll_steps`` becomes ``unroll``). Returns
    ``(layer, via)``, ``via`` the function the options went to; raises
    ``ValueError`` when none accepts them.
    """
    import jax.numpy as jnp
    import scanrnn as sr

    layer_fn = sr.bidirectional if case.bidirectional else sr.recurrent
    if set(options) <= set(inspect.signature(layer_fn).parameters):
        return layer_fn(cell, return_sequences=return_sequences, **options), layer_fn.__name__
    unroll_fn = sr.unroll_bidirectional if case.bidirectional else sr.unroll
    kwargs = {("unroll" if k == "unroll_steps" else k): v for k, v in options.items()}
    missing = sorted(set(kwargs) - set(inspect.signature(unroll_fn).parameters))
    if missing:
        raise ValueError(f"neither {layer_fn.__name__} nor {unroll_fn.__name__} accepts {missing}")

    def apply(params, xs, length=None):
        _, ys = unroll_fn(cell, params, xs, length=length, **kwargs)
        if not case.bidirectional:
            return ys if return_sequences else sr.last_valid(ys, length)
        forward, backward = ys[0], ys[1]  # [T, H] each, time order
        if not return_sequences:
            forward, backward = sr.last_valid(forward, length), backward[0]
        return jnp.concatenate([forward, backward], axis=-1)

    init = sr.bidirectional(cell).init if case.bidirectional else cell.init
    return sr.Layer(init, apply), unroll_fn.__name__


def scanrnn_model(case: Case, cell: str, options: dict):
    """``serial`` of one recurrent (or bidirectional) layer per layer of ``case`` and ``dense(1)``; and ``via``."""
    import scanrnn as sr

    make_cell = {"lstm": sr.lstm, "gru": sr.gru, "rnn": sr.simple_rnn}[cell]
    layers = [scanrnn_layer(make_cell(case.hidden), case, k < case.layers - 1, options) for k in range(case.layers)]
    return sr.serial(*(layer for layer, _ in layers), sr.dense(1)), layers[0][1]


def scanrnn_impl(case: Case, cell: str, seed: int, data, options: dict, name: str = "scanrnn") -> Impl:
    import jax
    import jax.numpy as jnp
    import scanrnn as sr
    from scanrnn.interop import from_torch

    tmodel = torch_model(case, cell, seed, "cpu")
    _, rnn_params = from_torch(tmodel.rnn)
    head = sr.DenseParams(
        jnp.asarray(tmodel.head.weight.detach().numpy()), jnp.asarray(tmodel.head.bias.detach().numpy())
    )
    params = (*rnn_params, head)
    model, via = scanrnn_model(case, cell, options)
    if options and via not in ("recurrent", "bidirectional"):
        name += f" via {via}"

    def forward(params, x):
        return jax.vmap(model.apply, in_axes=(None, 0))(params, x)  # [B, 1]

    def loss_fn(params, x, y):
        return jnp.mean(jnp.square(forward(params, x) - y))

    x, y = (jnp.asarray(a) for a in data)
    train, infer, loss, grads, memory = jax_fns(loss_fn, forward, params, x, y)
    w_hh = grads[0].w_hh[0] if case.bidirectional else grads[0].w_hh  # forward direction of layer 0
    compared = {"w_hh": np.asarray(w_hh), "head": np.asarray(grads[-1].w)}
    return Impl(name, train, infer, loss, compared, memory)


FLAX_GATES = {"lstm": "ifgo", "gru": "rzn", "rnn": None}


def flax_model(case: Case, cell: str):
    """A ``flax.linen`` module of the case: ``nn.RNN`` per layer (``nn.Bidirectional``) and ``nn.Dense(1)``."""
    import flax.linen as nn
    import jax.numpy as jnp

    cell_cls = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}[cell]
    H = case.hidden

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):  # [B, T, I]
            for k in range(case.layers):
                forward = nn.RNN(cell_cls(H, name=f"layer{k}_fwd"))
                if case.bidirectional:
                    # The backward RNN keeps time order: out[:, 0, H:] is its state after the whole sequence.
                    x = nn.Bidirectional(forward, nn.RNN(cell_cls(H, name=f"layer{k}_bwd")))(x)
                else:
                    x = forward(x)
            last = jnp.concatenate([x[:, -1, :H], x[:, 0, H:]], axis=-1) if case.bidirectional else x[:, -1]
            return nn.Dense(1, name="head")(last)

    return Model()


def flax_params_from_torch(tmodel, case: Case, cell: str) -> dict:
    """Map the torch model's weights onto the flax model's params, exactly.

    flax kernels are ``[in, out]``, one per gate (torch stacks gates on the
    rows of ``[G*H, in]``). Biases:

    - LSTM (``OptimizedLSTMCell``): only the recurrent denses ``h{i,f,g,o}``
      have a bias; it is ``b_ih + b_hh`` of that gate.
    - GRU (``GRUCell``): the input denses ``i{r,z,n}`` carry a bias and of
      the recurrent ones only ``hn``. torch's ``r`` and ``z`` pre-activations
      ``W x + b_i + U h + b_h`` need only the sum, so ``ir``/``iz`` get
      ``b_i + b_h``; ``in`` gets ``b_in`` and ``hn`` gets ``b_hn``, which
      stays inside ``r * (U_n h + b_hn)`` in both. The mapping is exact.
    - simple RNN (``SimpleCell``): the input dense ``i`` has the bias
      ``b_ih + b_hh``; the recurrent ``h`` has none.
    """
    H = case.hidden

    def t(a):
        return a.detach().cpu().numpy()

    params = {}
    rnn = tmodel.rnn
    for k in range(case.layers):
        for suffix, direction in [("", "fwd"), ("_reverse", "bwd")][: 2 if case.bidirectional else 1]:
            w_ih = t(getattr(rnn, f"weight_ih_l{k}{suffix}"))
            w_hh = t(getattr(rnn, f"weight_hh_l{k}{suffix}"))
            b_ih = t(getattr(rnn, f"bias_ih_l{k}{suffix}"))
            b_hh = t(getattr(rnn, f"bias_hh_l{k}{suffix}"))
            gates = FLAX_GATES[cell]
            p = {}
            if cell == "rnn":
                p["i"] = {"kernel": w_ih.T, "bias": b_ih + b_hh}
                p["h"] = {"kernel": w_hh.T}
            else:
                for g, gate in enumerate(gates):
                    rows = slice(g * H, (g + 1) * H)
                    if cell == "lstm":
                        p[f"i{gate}"] = {"kernel": w_ih[rows].T}
                        p[f"h{gate}"] = {"kernel": w_hh[rows].T, "bias": b_ih[rows] + b_hh[rows]}
                    elif gate == "n":
                        p["in"] = {"kernel": w_ih[rows].T, "bias": b_ih[rows]}
                        p["hn"] = {"kernel": w_hh[rows].T, "bias": b_hh[rows]}
                    else:
                        p[f"i{gate}"] = {"kernel": w_ih[rows].T, "bias": b_ih[rows] + b_hh[rows]}
                        p[f"h{gate}"] = {"kernel": w_hh[rows].T}
            params[f"layer{k}_{direction}"] = p
    params["head"] = {"kernel": t(tmodel.head.weight).T, "bias": t(tmodel.head.bias)}
    return params


def flax_impl(case: Case, cell: str, seed: int, data) -> Impl:
    import jax
    import jax.numpy as jnp

    tmodel = torch_model(case, cell, seed, "cpu")
    model = flax_model(case, cell)
    x, y = (jnp.asarray(a) for a in data)
    mapped = jax.tree.map(jnp.asarray, flax_params_from_torch(tmodel, case, cell))
    expected = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    shapes = jax.tree.map(lambda a: tuple(a.shape), expected)
    if jax.tree.map(lambda a: tuple(a.shape), mapped) != shapes:
        raise ValueError(f"flax params mapping does not match flax's init: {shapes}")

    def forward(params, x):
        return model.apply({"params": params}, x)

    def loss_fn(params, x, y):
        return jnp.mean(jnp.square(forward(params, x) - y))

    train, infer, loss, grads, memory = jax_fns(loss_fn, forward, mapped, x, y)
    layer0 = grads["layer0_fwd"]
    if cell == "rnn":
        w_hh = layer0["h"]["kernel"].T
    else:
        w_hh = jnp.concatenate([layer0[f"h{g}"]["kernel"] for g in FLAX_GATES[cell]], axis=-1).T
    compared = {"w_hh": np.asarray(w_hh), "head": np.asarray(grads["head"]["kernel"]).T}
    return Impl("flax", train, infer, loss, compared, memory)


# --------------------------------------------------------------------------
# scanrnn variants.


def parse_variant(text: str) -> dict:
    """``"unroll_steps=4,remat=sqrt"`` -> ``{"unroll_steps": 4, "remat": "sqrt"}``."""
    options = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise ValueError(f"a scanrnn variant is key=value[,key=value...], got {text!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        if re.fullmatch(r"-?\d+", value):
            options[key] = int(value)
        elif value in ("True", "False", "None"):
            options[key] = {"True": True, "False": False, "None": None}[value]
        else:
            options[key] = value
    return options


def _literal_values(annotation) -> list:
    """The strings of a ``Literal[...]`` annotation (given as a type or as a string), else ``[]``."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    if "Literal" not in text:
        return []
    return re.findall(r"['\"]([^'\"]+)['\"]", text)


def option_values(fn, option: str) -> list:
    """The values ``fn``'s keyword ``option`` takes: a ``Literal`` annotation, else a tuple constant
    ``{OPTION}S`` of the module defining ``fn`` (scanrnn's ``REMATS``), else ``[]``."""
    parameter = inspect.signature(fn).parameters[option]
    values = _literal_values(parameter.annotation)
    if not values:
        constant = getattr(inspect.getmodule(fn), option.upper() + "S", None)
        if isinstance(constant, tuple) and all(isinstance(v, str) for v in constant):
            values = list(constant)
    return values


def auto_variants() -> list:
    """Variants worth timing with the installed scanrnn.

    ``unroll_steps=4``, and every non-default value of the ``remat``,
    ``backward`` and ``impl`` options that ``scanrnn.recurrent`` or (so far
    only) ``scanrnn.unroll`` accepts.
    """
    import scanrnn as sr

    variants = [{"unroll_steps": 4}]
    for option in ("remat", "backward", "impl"):
        for fn in (sr.recurrent, sr.unroll):
            if option in inspect.signature(fn).parameters:
                default = inspect.signature(fn).parameters[option].default
                variants += [{option: v} for v in option_values(fn, option) if v != default]
                break
    return variants


def variant_name(options: dict) -> str:
    return "scanrnn[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]"


# --------------------------------------------------------------------------
# Timing.


def summarize(samples: list) -> dict:
    a = np.asarray(samples) * 1e3
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "min_ms": float(a.min()),
            "n": int(a.size), "samples_ms": [float(v) for v in a]}


def time_round_robin(fns: dict, repeats: int, warmup: int, min_time: float) -> dict:
    """Median-ready samples of seconds per call of each ``fns[name]()``, interleaved.

    Each function is first called ``warmup`` times; then a calibration call
    sets how many calls one measurement makes (enough to last ``min_time``
    seconds, so short steps are not lost in timer noise). Each repeat then
    measures every function once, starting from a different one each time.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    number = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        number[name] = max(1, min(1000, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9))))
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = fns[name], number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: {**summarize(s), "calls_per_sample": number[name]} for name, s in samples.items()}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


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

    reference = impls[0]
    checks = {}
    for impl in impls[1:]:
        loss_err = abs(impl.loss - reference.loss) / max(abs(impl.loss), 1e-30)
        grad_err = max(rel_err(reference.grads[k], impl.grads[k]) for k in reference.grads)
        checks[impl.name] = {
            "loss": impl.loss, "loss_rel_err": loss_err, "grad_rel_err": grad_err,
            "ok": bool(loss_err <= LOSS_RTOL and grad_err <= GRAD_RTOL),
        }

    fns = {}
    for impl in impls:
        fns[(impl.name, "train")] = impl.train
        fns[(impl.name, "infer")] = impl.infer
    t0 = time.perf_counter()
    timed = time_round_robin(fns, args.repeats, args.warmup, args.min_time)
    timing_s = time.perf_counter() - t0
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
# Reporting.


def mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def case_label(case: dict) -> str:
    return f"{case['name']} (B={case['batch']}, T={case['steps']}, I={case['inputs']}, H={case['hidden']})"


def table_lines(result: dict) -> list:
    header = ["impl", "train ms", "IQR", "min", "÷ scanrnn", "GFLOP/s", "infer ms", "IQR", "min", "÷ scanrnn",
              "GFLOP/s", "train MiB", "infer MiB"]
    lines = []
    for row in result["rows"]:
        tr, inf, mem = row["train"], row["infer"], row["memory"]
        mark = ""
        if mem.get("train_exact") is False or mem.get("infer_exact") is False:
            mark = " (≤)"
        lines.append([
            row["impl"], f"{tr['median_ms']:.3f}", f"{tr['iqr_ms']:.3f}", f"{tr['min_ms']:.3f}", f"{tr['ratio']:.2f}",
            f"{tr['gflops']:.2f}", f"{inf['median_ms']:.3f}", f"{inf['iqr_ms']:.3f}", f"{inf['min_ms']:.3f}",
            f"{inf['ratio']:.2f}", f"{inf['gflops']:.2f}", mib(mem.get("train")) + mark, mib(mem.get("infer")),
        ])
    return [header, *lines]


def text_table(rows: list) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def markdown_table(rows: list) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def summary_rows(results: list) -> list:
    peers = []
    for res in results:
        for row in res["rows"][1:]:
            if row["impl"] not in peers:
                peers.append(row["impl"])
    header = ["case", "cell", "scanrnn train ms", *[f"{p} ÷ scanrnn train" for p in peers],
              "scanrnn infer ms", *[f"{p} ÷ scanrnn infer" for p in peers], "checks"]
    rows = [header]
    for res in results:
        by = {row["impl"]: row for row in res["rows"]}
        base = res["rows"][0]

        def ratio(p, kind):
            return f"{by[p][kind]['ratio']:.2f}" if p in by else "-"

        checks = "ok" if all(c["ok"] for c in res["checks"].values()) else "FAILED: " + ", ".join(
            n for n, c in res["checks"].items() if not c["ok"])
        rows.append([res["case"]["name"], res["cell"], f"{base['train']['median_ms']:.3f}",
                     *[ratio(p, "train") for p in peers], f"{base['infer']['median_ms']:.3f}",
                     *[ratio(p, "infer") for p in peers], checks])
    return rows


def check_rows(results: list) -> list:
    rows = [["case", "cell", "impl", "loss", "loss rel. err vs scanrnn", "grad rel. err (w_hh, head)", "ok"]]
    for res in results:
        rows.append([res["case"]["name"], res["cell"], "scanrnn", f"{res['rows'][0]['loss']:.6g}", "-", "-", "-"])
        for name, c in res["checks"].items():
            rows.append([res["case"]["name"], res["cell"], name, f"{c['loss']:.6g}", f"{c['loss_rel_err']:.1e}",
                         f"{c['grad_rel_err']:.1e}", "yes" if c["ok"] else "NO"])
    return rows


MEMORY_NOTE = (
    "Memory (MiB): for scanrnn and flax, XLA's `memory_analysis()` of the compiled step, temp + argument + "
    "output bytes (exact for the executable). For torch on CPU, the peak RSS growth of a fresh process over "
    "one call (the peak RSS, reset before the call, minus the RSS before it; includes allocator slack; `(≤)` "
    "marks an upper bound, where the peak could not be reset and the earlier peak was not exceeded); on a GPU, `torch.cuda.max_memory_allocated` "
    "during the call minus the memory allocated before it. The two measures are not the same thing."
)


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Benchmarks", ""]
    if report["label"]:
        lines += [f"**{report['label']}**", ""]
    lines += [
        "scanrnn against `torch.nn` and `flax.linen` recurrent layers on the same float32 data and weights: "
        "a many-to-one model (the last hidden state of the last layer, a dense layer to 1 output, MSE against a "
        "target). *train* is the loss and its gradients w.r.t. all params (`jax.jit(jax.value_and_grad(loss))`; "
        "torch forward + `loss.backward()`), *infer* the forward pass alone. Times are per step, the median of "
        f"{report['settings']['repeats']} measurements taken round-robin over the implementations after "
        f"{report['settings']['warmup']} warm-up calls each, with their interquartile range (IQR) and minimum. "
        "`÷ scanrnn` is the time of the row divided by scanrnn's: above 1 means scanrnn is faster. GFLOP/s counts "
        "`24 B T H (I+H)` FLOPs for an LSTM training step (GRU 18, simple RNN 6), a third of that for inference, "
        "twice for two directions, summed over layers.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
        + f"; JAX backend `{m['jax_backend']}`, torch device `{m['torch_device']}`",
        f"- Versions: python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}, torch {m['torch']}, "
        f"flax {m['flax']}, numpy {m['numpy']}; scanrnn {m['scanrnn_source']}",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; wall time {report['wall_time_s']:.0f} s; load average (1, 5, 15 min) "
        f"{report['load_before']} before, {report['load_after']} after",
        f"- torch CPU threads: {report['settings']['torch_threads'][0]} for the `torch` rows"
        + "".join(f", {n} for `torch[threads={n}]`" for n in report["settings"]["torch_threads"][1:])
        + f"; seed {report['settings']['seed']}",
        "",
        "## Summary",
        "",
        markdown_table(summary_rows(report["results"])),
        "",
        "## Per case",
        "",
        MEMORY_NOTE,
        "",
    ]
    for res in report["results"]:
        lines += [f"### {case_label(res['case'])}, {res['cell']}, {res['case']['layers']} layer(s)"
                  + (", bidirectional" if res["case"]["bidirectional"] else ""), "",
                  f"Step FLOPs: train {res['flops_train'] / 1e9:.3f} G, infer {res['flops_infer'] / 1e9:.3f} G.", ""]
        lines += [markdown_table(table_lines(res)), ""]
        for note in res["skipped_variants"]:
            lines += [f"- skipped {note}", ""]
    lines += ["## Correctness checks", "",
              f"Losses must agree within {LOSS_RTOL:g} relative, gradients of the first layer's (forward) "
              f"recurrent kernel and of the head within {GRAD_RTOL:g} (max-norm relative); torch weights are "
              "copied to scanrnn with `scanrnn.interop.from_torch` and to flax by an exact mapping of gates and "
              "biases (`flax_params_from_torch` in `experiments/benchmarks/run.py`).", "",
              markdown_table(check_rows(report["results"])), ""]
    return "\n".join(lines)


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
                   help="extra scanrnn configurations timed beside the default, e.g. unroll_steps=4 remat=sqrt; "
                        "'auto' adds unroll_steps=4 and every remat/impl value the installed scanrnn accepts")
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
    if args.out is None:
        args.out = ROOT / ("runs/benchmarks-quick/BENCHMARKS.md" if args.quick else "BENCHMARKS.md")
        json_path = args.out.parent / "results.json" if args.quick else ROOT / "experiments/results/benchmarks/results.json"
    else:
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

    machine = machine_info(args.device)
    print(f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} ({machine['jax_backend']}), "
          f"torch {machine['torch']} ({args.device}), flax {machine['flax']}; load average {load_before}")
    pairs = [(CASES[name], cell) for name in args.cases for cell in args.cells if cell in CASES[name].cells]
    if not pairs:
        raise SystemExit("no (case, cell) pair selected: bidirectional cases run LSTM and GRU, 2-layer ones LSTM")
    command = "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__, Path.cwd()), *(sys.argv[1:] if argv is None else argv)])
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_markdown(report))
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
        return report

    for case, cell in pairs:
        res = run_case(case, cell, args, variants)
        results.append(res)
        print(f"\n{case_label(res['case'])}, {cell}, {case.layers} layer(s)"
              + (", bidirectional" if case.bidirectional else "")
              + f"  [build, compile and check {res['build_and_check_s']:.0f} s, timing {res['timing_s']:.0f} s]")
        print(text_table(table_lines(res)))
        for impl, c in res["checks"].items():
            status = "ok" if c["ok"] else "FAILED"
            print(f"  check {impl}: loss rel. err {c['loss_rel_err']:.1e}, grad rel. err "
                  f"{c['grad_rel_err']:.1e}: {status}")
        for note in res["skipped_variants"]:
            print(f"  skipped {note}")
        if len(results) < len(pairs):
            write(done=False)

    report = write(done=True)
    print("\nSummary (÷ scanrnn: above 1 means scanrnn is faster)")
    print(text_table(summary_rows(results)))
    print(f"\nwrote {args.out} and {json_path} ({report['wall_time_s']:.0f} s)")
    failed = [f"{r['case']['name']}/{r['cell']}/{n}" for r in results for n, c in r["checks"].items() if not c["ok"]]
    if failed:
        print(f"correctness checks FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
