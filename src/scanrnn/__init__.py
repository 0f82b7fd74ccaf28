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
- layers and models (:mod:`scanrnn.layers`): ``Layer(init, apply,
  initial_carry)`` made by :func:`recurrent`, :func:`bidirectional`,
  :func:`dense`, :func:`dropout`, :func:`serial`, and :func:`causal_conv`
  (:mod:`scanrnn.conv`); ``apply(params, xs, length=None, *, key=None,
  carry=None)``, training with a key, stateful with a carry.
- regularisation (:mod:`scanrnn.regularization`): the masks of dropout,
  recurrent dropout and zoneout that :func:`unroll` draws from a key.
- training (:mod:`scanrnn.train`), data (:mod:`scanrnn.data`), plots
  (:mod:`scanrnn.plot`), PyTorch interop (:mod:`scanrnn.interop`), the first
  seed's hand-written BPTT (:mod:`scanrnn.bptt`), gradient diagnostics
  (:mod:`scanrnn.diagnostics`), connectionist temporal classification
  (:mod:`scanrnn.ctc`), encoder-decoders with attention and beam search
  (:mod:`scanrnn.seq2seq`), character-level text (:mod:`scanrnn.text`) and
  the dates of the translation study (:mod:`scanrnn.dates`).
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
from .layers import DenseParams, Layer, RecurrentParams, bidirectional, dense, dropout, last_valid, recurrent, serial
from .unroll import flip_valid, unroll, unroll_batch, unroll_bidirectional
from .conv import ConvParams, causal_conv
from .classic import elman, jordan, narx
from .minimal import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from . import (  # noqa: E402
    bptt,
    checkpoint,
    classic,
    conv,
    ctc,
    data,
    dates,
    diagnostics,
    interop,
    minimal,
    plot,
    regularization,
    seq2seq,
    text,
    train,
)

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
    "RecurrentParams",
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
    "dates",
    "diagnostics",
    "dropout",
    "elman",
    "interop",
    "jordan",
    "minimal",
    "narx",
    "min_gru",
    "min_lstm",
    "plot",
    "regularization",
    "seq2seq",
    "text",
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
