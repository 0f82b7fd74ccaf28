"""run.py's cases (shapes and cells), their data and FLOP counts, and what an implementation of a case is."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

CELLS = ("lstm", "gru", "rnn")
# Training-step FLOPs per (B T H (I + H)) of one layer and direction: forward
# 2 G B T H (I + H) for G gate blocks (LSTM 4, GRU 3, RNN 1), backward twice that.
FLOP_FACTOR = {"lstm": 24, "gru": 18, "rnn": 6}


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


def make_data(case: Case, seed: int):
    """The float32 inputs ``[B, T, I]`` and targets ``[B, 1]`` every implementation reads."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.steps, case.inputs), dtype=np.float32)
    y = rng.standard_normal((case.batch, 1), dtype=np.float32)
    return x, y


class Impl(NamedTuple):
    """One implementation of a case: callables that run a step to completion."""

    name: str
    train: Callable[[], None]  # loss and all gradients, finished
    infer: Callable[[], None]  # forward pass, finished
    loss: float  # the loss of the first training step
    grads: dict  # name -> np.ndarray, the gradients compared across implementations
    memory: dict  # {"train": bytes or None, "infer": ..., "kind": str}


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
    """A JAX implementation's parts: jitted train and infer callables, the first loss and grads, XLA's memory."""
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
