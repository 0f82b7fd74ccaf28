"""scanrnn: recurrent neural networks as pure JAX functions, unrolled with ``lax.scan``.

The whole API:

- cells (:mod:`scanrnn.cells`): ``Cell(init, initial_carry, apply)`` made by
  :func:`simple_rnn`, :func:`lstm`, :func:`gru`, :func:`layer_norm_rnn`,
  :func:`layer_norm_lstm`; ``apply(params, carry, x) -> (carry, y)`` is one
  step of ONE example. The parallel-scan cells :func:`min_gru` and
  :func:`min_lstm` (:mod:`scanrnn.minimal`) and the classic Jordan, Elman
  and NARX networks (:mod:`scanrnn.classic`) keep the same contract.
- unrolling (:mod:`scanrnn.unroll`): :func:`unroll` over one sequence,
  :func:`unroll_batch` over a batch, :func:`unroll_bidirectional`.
- layers and models (:mod:`scanrnn.layers`): ``Layer(init, apply)`` made by
  :func:`recurrent`, :func:`bidirectional`, :func:`dense`, :func:`serial`,
  and :func:`causal_conv` (:mod:`scanrnn.conv`).
- training (:mod:`scanrnn.train`), data (:mod:`scanrnn.data`), plots
  (:mod:`scanrnn.plot`), PyTorch interop (:mod:`scanrnn.interop`), the first
  seed's hand-written BPTT (:mod:`scanrnn.bptt`), gradient diagnostics
  (:mod:`scanrnn.diagnostics`) and connectionist temporal classification
  (:mod:`scanrnn.ctc`).
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
from .conv import ConvParams, causal_conv
from .classic import elman, jordan, narx
from .minimal import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from . import bptt, checkpoint, classic, conv, ctc, data, diagnostics, interop, minimal, plot, train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "ConvParams",
    "DenseParams",
    "MinGRUParams",
    "MinLSTMParams",
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
    "bptt",
    "causal_conv",
    "checkpoint",
    "classic",
    "conv",
    "ctc",
    "data",
    "diagnostics",
    "elman",
    "interop",
    "jordan",
    "minimal",
    "narx",
    "min_gru",
    "min_lstm",
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
