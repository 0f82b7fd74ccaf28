r"""cuDNN's LSTM behind scanrnn's LSTM layers: ``Execution(cudnn=True)``.

:mod:`jax.experimental.rnn` (in jaxlib) binds cuDNN's LSTM: batch-first
inputs, right-padded sequences with their lengths, float32, all weights in
one opaque vector, and a GPU lowering only (its ``lstm_ref`` is a pure-JAX
reference that reads the same vector). A scan of the step costs a loop
iteration per time step on a GPU; cuDNN runs the whole sequence in its own
kernels (the MLCommons AlgoPerf DeepSpeech workload moved to it and came out
on par with PyTorch's, where its scan took about 1.8 times as long).

This module puts it behind :func:`scanrnn.unroll`, :func:`scanrnn.recurrent`
and :func:`scanrnn.bidirectional` for cells of :func:`scanrnn.lstm` without
peepholes, when :class:`scanrnn.Execution` says ``cudnn=True``:

- :func:`pack` lays scanrnn's :class:`scanrnn.LSTMParams` (``w_ih [4H, I]``,
  ``w_hh [4H, H]``, ``b [4H]``, gates ``i, f, g, o``: cuDNN's own order) out
  as cuDNN's weight vector, inside the compiled function, so gradients flow
  back to scanrnn's params; cuDNN's two biases are ``b`` and zeros.
  :func:`unpack` is its inverse.
- :func:`lstm_sequence` runs ONE sequence, as every scanrnn function does.
  Under :func:`jax.vmap` over examples (how scanrnn batches) it becomes one
  cuDNN call over the whole batch, through a
  :func:`jax.custom_batching.custom_vmap` rule; alone (one sequence, or
  differentiated before it is batched) it is a call over a batch of one.
- :func:`check` refuses, before anything is traced, what cuDNN cannot do:
  another cell (peepholes, layer normalisation, GRU, ...), params other
  than float32 or a ``compute_dtype`` (bfloat16), recurrent dropout,
  zoneout, the hand-written backward pass or rematerialisation (cuDNN keeps
  its own workspace), and a backend without CUDA.

One ``jax.vmap`` over examples is batched into one call; a second ``vmap``
around it (per-example gradients, ``jax.vmap(jax.grad(...))``) meets cuDNN's
primitive, which has no batching rule, and raises there.

It is opt-in: no GPU measurement has set it as a default yet.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from .cells import LSTMCarry, LSTMParams

__all__ = [
    "pack",
    "unpack",
    "KERNELS",
    "lstm_sequence",
    "check_params",
    "check",
]

Array = jax.Array


def pack(layers: Sequence[LSTMParams], bidirectional: bool = False) -> Array:
    """cuDNN's flat LSTM weight vector of ``layers``, one :class:`scanrnn.LSTMParams` per layer.

    For a bidirectional stack each layer's fields carry a leading direction
    axis of 2 (forward, backward), as :func:`scanrnn.bidirectional` stacks
    them. The layout is cuDNN's (and :mod:`jax.experimental.rnn`'s): for
    every layer and direction in turn, ``W_ih [4H, I_l]`` then
    ``W_hh [4H, H]``; after them, for every layer and direction, ``b_ih``
    then ``b_hh [4H]``. scanrnn's one bias goes into ``b_ih``, and ``b_hh``
    is zeros.
    """
    directions = []
    for params in layers:
        if bidirectional:
            directions += [jax.tree.map(lambda a: a[0], params), jax.tree.map(lambda a: a[1], params)]
        else:
            directions.append(params)
    weights = [w for p in directions for w in (p.w_ih.reshape(-1), p.w_hh.reshape(-1))]
    biases = [b for p in directions for b in (p.b, jnp.zeros_like(p.b))]
    return jnp.concatenate(weights + biases)


def unpack(weights: Array, input_size: int, hidden_size: int, num_layers: int = 1,
           bidirectional: bool = False) -> list:
    """The :class:`scanrnn.LSTMParams` of each layer of cuDNN's weight vector (the inverse of :func:`pack`).

    cuDNN's two biases add up to scanrnn's one. A bidirectional layer's
    fields have a leading direction axis of 2.
    """
    H, D = hidden_size, 2 if bidirectional else 1
    shapes = []
    for layer in range(num_layers):
        width = input_size if layer == 0 else D * H
        shapes += [((4 * H, width), (4 * H, H))] * D
    total = sum(math.prod(ih) + math.prod(hh) + 8 * H for ih, hh in shapes)
    if weights.shape != (total,):
        raise ValueError(f"cuDNN's weight vector for these sizes has {total} numbers, got shape {weights.shape}")
    offset, mats = 0, []
    for ih, hh in shapes:
        w_ih = weights[offset:offset + math.prod(ih)].reshape(ih)
        offset += math.prod(ih)
        w_hh = weights[offset:offset + math.prod(hh)].reshape(hh)
        offset += math.prod(hh)
        mats.append((w_ih, w_hh))
    biases = []
    for _ in shapes:
        b_ih, b_hh = weights[offset:offset + 4 * H], weights[offset + 4 * H:offset + 8 * H]
        offset += 8 * H
        biases.append(b_ih + b_hh)
    params = [LSTMParams(w_ih, w_hh, b) for (w_ih, w_hh), b in zip(mats, biases)]
    layers = [params[i * D:(i + 1) * D] for i in range(num_layers)]
    if bidirectional:
        return [jax.tree.map(lambda f, r: jnp.stack([f, r]), *pair) for pair in layers]
    return [pair[0] for pair in layers]


# --------------------------------------------------------------------------
# The batched call: cuDNN's kernel, or the pure-JAX reference on the same vector.


def _cudnn_kernel(x, h0, c0, weights, lengths, input_size, hidden_size, bidirectional):
    from jax.experimental import rnn

    return rnn.lstm(x, h0, c0, weights, lengths, input_size=input_size, hidden_size=hidden_size, num_layers=1,
                    dropout=0.0, bidirectional=bidirectional)


def _reference_kernel(x, h0, c0, weights, lengths, input_size, hidden_size, bidirectional):
    """:func:`jax.experimental.rnn.lstm_ref` on the unpacked vector: the same numbers on any backend."""
    from jax.experimental import rnn

    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, bidirectional)
    return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size, 1, 0.0, bidirectional)


KERNELS = {"cudnn": _cudnn_kernel, "reference": _reference_kernel}
"""``"cudnn"``: :func:`jax.experimental.rnn.lstm` (CUDA only). ``"reference"``:
:func:`jax.experimental.rnn.lstm_ref` on the same packed weights, which runs
everywhere; the tests run the whole path through it on a CPU."""


def _batched(kernel: Callable, bidirectional: bool, params, xs, h0, c0, lengths):
    """A batch ``xs [B, T, I]`` through ``kernel``: ``(ys [B, D, T, H], h [B, D, H], c [B, D, H])``.

    ``params`` are one direction's :class:`scanrnn.LSTMParams`, or both
    stacked; ``h0``, ``c0`` are ``[B, D, H]`` (``D`` directions); outputs past
    each length are zeros.
    """
    H = params.w_hh.shape[-1]
    I = xs.shape[-1]
    D = 2 if bidirectional else 1
    weights = pack([params], bidirectional)
    to_cudnn = lambda s: jnp.swapaxes(s, 0, 1)  # noqa: E731  [B, D, H] <-> [D, B, H]
    # cuDNN takes lengths of at least 1: an empty sequence runs one step,
    # whose output is masked and whose carry is replaced by the initial one.
    at_least_one = jnp.maximum(lengths, 1).astype(jnp.int32)
    ys, h, c = kernel(xs, to_cudnn(h0), to_cudnn(c0), weights, at_least_one, I, H, bidirectional)
    valid = jnp.arange(xs.shape[1], dtype=lengths.dtype)[None, :] < lengths[:, None]  # [B, T]
    ys = jnp.where(valid[:, :, None], ys, jnp.zeros_like(ys))
    ys = jnp.moveaxis(ys.reshape(ys.shape[:2] + (D, H)), 2, 1)  # [B, T, D*H] -> [B, D, T, H]
    empty = (lengths == 0)[:, None, None]
    return ys, jnp.where(empty, h0, to_cudnn(h)), jnp.where(empty, c0, to_cudnn(c))


def _is_vmapped(x) -> bool:
    """Whether ``x`` is being batched by :func:`jax.vmap` (the newest transformation applied to it)."""
    return type(x).__name__ == "BatchTracer"


_PER_SEQUENCE = {}


def _per_sequence(kernel_name: str, bidirectional: bool):
    """ONE sequence through the kernel, as a :func:`jax.custom_batching.custom_vmap` whose rule batches the call."""
    key = (kernel_name, bidirectional)
    if key in _PER_SEQUENCE:
        return _PER_SEQUENCE[key]
    kernel = KERNELS[kernel_name]

    def single(params, xs, h0, c0, length):
        out = _batched(kernel, bidirectional, params, xs[None], h0[None], c0[None], length[None])
        return jax.tree.map(lambda a: a[0], out)

    one = jax.custom_batching.custom_vmap(single)

    @one.def_vmap
    def rule(axis_size, in_batched, params, xs, h0, c0, length):
        params_batched, *batched = in_batched
        if any(jax.tree.leaves(params_batched)):
            raise ValueError(
                "Execution(cudnn=True) runs one cuDNN call over a batch that shares its params; got params "
                "with a batch axis (jax.vmap over params). Use the scan (cudnn=False) for that"
            )
        grow = lambda a, b: a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)  # noqa: E731
        xs, h0, c0, length = map(grow, (xs, h0, c0, length), batched)
        out = _batched(kernel, bidirectional, params, xs, h0, c0, length)
        return out, (True, True, True)

    _PER_SEQUENCE[key] = (single, one)
    return single, one


def lstm_sequence(params: LSTMParams, xs: Array, carry: LSTMCarry, length=None, *, bidirectional: bool = False,
                  reverse: bool = False, kernel: str = "cudnn"):
    """One sequence ``xs [T, I]`` of an LSTM layer through cuDNN; ``(final_carry, ys)`` as :func:`scanrnn.unroll` gives them.

    Args:
      params: :class:`scanrnn.LSTMParams`; for ``bidirectional`` each field
        stacked on a leading direction axis of 2, as the bidirectional layer
        holds them.
      xs: ``[T, I]``, float32, zeros past ``length``.
      carry: the initial :class:`scanrnn.LSTMCarry` (``[2, H]`` leaves for
        ``bidirectional``).
      length: ``None`` or an integer scalar in ``[0, T]``.
      reverse: for one direction, read the valid part backwards (outputs in
        the original order), as ``unroll(..., reverse=True)``.
      kernel: ``"cudnn"`` or ``"reference"`` (:data:`KERNELS`).

    Returns:
      ``(LSTMCarry, ys)``: ``ys [T, H]``, or ``[2, T, H]`` with the
      backward direction in the original time order, and the carry after
      the last valid step, as :func:`scanrnn.unroll` and
      :func:`scanrnn.unroll_bidirectional` return them.
    """
    from .unroll import flip_valid

    num_steps = xs.shape[0]
    n = jnp.asarray(num_steps if length is None else length, jnp.int32)
    if reverse:
        xs = flip_valid(xs, n)
    h0, c0 = carry.h, carry.c
    if not bidirectional:
        h0, c0 = h0[None], c0[None]
    single, one = _per_sequence(kernel, bidirectional)
    run = one if any(map(_is_vmapped, (xs, h0, c0, n))) else single
    ys, h, c = run(params, xs, h0, c0, n)
    if not bidirectional:
        ys, h, c = ys[0], h[0], c[0]
    if reverse:
        ys = flip_valid(ys, n)
    return LSTMCarry(h, c), ys


def _backend() -> str:
    return jax.default_backend()


def check_params(params) -> None:
    """cuDNN's LSTM takes :class:`scanrnn.LSTMParams` of float32 (a ValueError otherwise)."""
    if not isinstance(params, LSTMParams):
        raise ValueError(f"Execution(cudnn=True) expects params of type LSTMParams, got {type(params).__name__}")
    dtypes = sorted({str(jnp.result_type(leaf)) for leaf in params})
    if dtypes != ["float32"]:
        raise ValueError(f"Execution(cudnn=True) needs float32 params (cuDNN's LSTM here), got {', '.join(dtypes)}")


def check(cell, regularization, execution, *, backend=None) -> None:
    """Raise a ValueError unless cuDNN can run ``cell`` under these options (``execution.cudnn`` is set).

    ``backend`` defaults to :func:`jax.default_backend`.
    """
    if getattr(cell, "cudnn", None) != "lstm":
        raise ValueError(
            "Execution(cudnn=True) runs cuDNN's LSTM: cells of scanrnn.lstm without peepholes and without a "
            f"compute_dtype; got a {type(cell).__name__} that is not one (a peephole, layer-normalised or "
            "mixed-precision LSTM, a GRU or another cell runs by the scan: cudnn=False)"
        )
    if regularization is not None:
        if regularization.recurrent_dropout > 0:
            raise ValueError("Execution(cudnn=True) cannot apply recurrent dropout (cuDNN's LSTM has none); "
                             f"got recurrent_dropout={regularization.recurrent_dropout}")
        if any(rate > 0 for rate in jax.tree.leaves(regularization.zoneout)):
            raise ValueError(f"Execution(cudnn=True) cannot apply zoneout; got zoneout={regularization.zoneout!r}")
    if execution.backward != "autodiff":
        raise ValueError(f"Execution(cudnn=True) differentiates by cuDNN's own backward pass; got backward="
                         f"{execution.backward!r} (use 'autodiff')")
    if execution.remat != "none":
        raise ValueError(f"Execution(cudnn=True) keeps cuDNN's own workspace for the backward pass; got remat="
                         f"{execution.remat!r} (use 'none')")
    backend = _backend() if backend is None else backend
    if backend not in ("gpu", "cuda"):
        raise ValueError(
            f"Execution(cudnn=True) needs a CUDA GPU (cuDNN's LSTM has no lowering elsewhere); the default backend "
            f"is {backend!r}. Install JAX with CUDA (see the README) or use cudnn=False"
        )
