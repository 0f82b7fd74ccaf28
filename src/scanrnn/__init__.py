"""scanrnn: recurrent neural networks as pure JAX functions, unrolled with ``lax.scan``.

The whole API:

- cells (:mod:`scanrnn.cells`): ``Cell(init, initial_carry, apply)`` made by
  :func:`simple_rnn`, :func:`lstm`, :func:`gru`, :func:`layer_norm_rnn`,
  :func:`layer_norm_lstm`; ``apply(params, carry, x) -> (carry, y)`` is one
  step of ONE example.
- unrolling (:mod:`scanrnn.unroll`): :func:`unroll` over one sequence,
  :func:`unroll_batch` over a batch, :func:`unroll_bidirectional`.
- layers and models (:mod:`scanrnn.layers`): ``Layer(init, apply)`` made by
  :func:`recurrent`, :func:`bidirectional`, :func:`dense`, :func:`serial`.
- training (:mod:`scanrnn.train`), data (:mod:`scanrnn.data`), plots
  (:mod:`scanrnn.plot`) and PyTorch interop (:mod:`scanrnn.interop`).
"""

from .cells import (
    Cell,
    GRUParams,
    LayerNormLSTMParams,
    LayerNormRNNParams,
    LSTMCarry,
    LSTMParams,
    PeepholeLSTMParams,
    RNNCarry,
    RNNParams,
    gru,
    layer_norm_lstm,
    layer_norm_rnn,
    lstm,
    simple_rnn,
)
from .layers import DenseParams, Layer, bidirectional, dense, last_valid, recurrent, serial
from .unroll import flip_valid, unroll, unroll_batch, unroll_bidirectional
from . import checkpoint, data, interop, plot, train  # noqa: E402  (torch and matplotlib load lazily)

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "DenseParams",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "LayerNormLSTMParams",
    "LayerNormRNNParams",
    "PeepholeLSTMParams",
    "RNNCarry",
    "RNNParams",
    "bidirectional",
    "checkpoint",
    "data",
    "interop",
    "plot",
    "train",
    "dense",
    "flip_valid",
    "gru",
    "last_valid",
    "layer_norm_lstm",
    "layer_norm_rnn",
    "lstm",
    "recurrent",
    "serial",
    "simple_rnn",
    "unroll",
    "unroll_batch",
    "unroll_bidirectional",
]
