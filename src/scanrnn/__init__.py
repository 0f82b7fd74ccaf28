"""scanrnn: recurrent neural networks as pure JAX functions, unrolled with ``lax.scan``.

The whole API:

- cells, in three kinds (:mod:`scanrnn.kinds`), each a NamedTuple of pure
  functions of ONE example with ``apply(params, carry, x) -> (carry, y)``:
  the generic ``Cell(init, initial_carry, apply)``; the ``GatedCell`` (input
  projection, recurrent product, elementwise core) made by
  :func:`simple_rnn`, :func:`lstm`, :func:`gru`, :func:`layer_norm_rnn`,
  :func:`layer_norm_lstm` (:mod:`scanrnn.cells`) and :func:`jordan`,
  :func:`elman`, :func:`narx` (:mod:`scanrnn.classic`); the ``LinearCell``
  (``h = a * h + b``, run as a scan, an associative scan or a chunked scan)
  made by :func:`min_gru`, :func:`min_lstm` (:mod:`scanrnn.linear_cells`),
  the state-space models :func:`lru`, :func:`s5`
  (:mod:`scanrnn.state_space`), :func:`rg_lru` (:mod:`scanrnn.griffin`) and
  :func:`selective_ssm` (:mod:`scanrnn.mamba`).
- unrolling (:mod:`scanrnn.unroll`): :func:`unroll` over one sequence,
  :func:`unroll_batch` over a batch; how the scan runs is one
  :class:`Execution` (:mod:`scanrnn.execution`), the rates of dropout,
  recurrent dropout and zoneout one :class:`Regularization`
  (:mod:`scanrnn.regularization`).
- layers and models (:mod:`scanrnn.layers`): ``Layer(init, apply,
  initial_carry)`` made by :func:`recurrent`, :func:`bidirectional` (with
  :func:`unroll_bidirectional`), :func:`dense`, :func:`dropout`,
  :func:`serial`, :func:`causal_conv` (:mod:`scanrnn.conv`), and the
  blocks :func:`hawk` (Griffin's recurrent block) and :func:`mamba`;
  ``apply(params, xs, length=None, *, key=None, carry=None)``, training with
  a key, stateful with a carry.
- training (:mod:`scanrnn.train`), on several devices (:mod:`scanrnn.devices`),
  checkpoints (:mod:`scanrnn.checkpoint`),
  data (:mod:`scanrnn.data`, with :mod:`scanrnn.data.text` and
  :mod:`scanrnn.data.dates`), plots (:mod:`scanrnn.plot`), PyTorch interop
  (:mod:`scanrnn.interop`), the first seed's hand-written BPTT as a teaching
  reference (:mod:`scanrnn.teaching_bptt`), gradient diagnostics
  (:mod:`scanrnn.diagnostics`), connectionist temporal classification
  (:mod:`scanrnn.ctc`), encoder-decoders with attention and beam search
  (:mod:`scanrnn.seq2seq`), a character-level language model's evaluation
  and sampling (:mod:`scanrnn.language_model`), the linear recurrences'
  associative scans (:mod:`scanrnn.linear_scans`).
"""

from .kinds import Cell, GatedCell, LinearCell
from .execution import Execution
from .regularization import Regularization
from .cells import (
    GRUParams,
    LayerNormLSTMParams,
    LayerNormRNNParams,
    LSTMCarry,
    LSTMParams,
    PeepholeLSTMParams,
    ProjectedLSTMParams,
    ProjectedPeepholeLSTMParams,
    RNNCarry,
    RNNParams,
    gru,
    layer_norm_lstm,
    layer_norm_rnn,
    lstm,
    simple_rnn,
)
from .layers import (
    DenseParams, EmbeddingParams, Layer, RecurrentParams, bidirectional, check_tokens, dense, dropout, embedding,
    last_valid, recurrent, serial, unroll_bidirectional,
)
from .unroll import flip_valid, unroll, unroll_batch
from .conv import ConvParams, causal_conv
from .classic import elman, jordan, narx
from .linear_cells import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from .state_space import LRUParams, S5Params, lru, s5
from .griffin import HawkCarry, HawkParams, RGLRUParams, hawk, rg_lru
from .mamba import MambaCarry, MambaParams, SelectiveSSMParams, SelectiveSSMStep, mamba, selective_ssm
from . import (  # noqa: E402
    teaching_bptt,
    checkpoint,
    classic,
    conv,
    ctc,
    cudnn,
    data,
    devices,
    diagnostics,
    execution,
    griffin,
    interop,
    kinds,
    linear_scans,
    linear_cells,
    plot,
    regularization,
    seq2seq,
    language_model,
    state_space,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "ConvParams",
    "Execution",
    "Regularization",
    "GatedCell",
    "LinearCell",
    "DenseParams",
    "MinGRUParams",
    "MinLSTMParams",
    "HawkCarry",
    "LRUParams",
    "S5Params",
    "HawkParams",
    "MambaCarry",
    "MambaParams",
    "RGLRUParams",
    "SelectiveSSMParams",
    "SelectiveSSMStep",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "LayerNormLSTMParams",
    "LayerNormRNNParams",
    "PeepholeLSTMParams",
    "ProjectedLSTMParams",
    "ProjectedPeepholeLSTMParams",
    "RecurrentParams",
    "RNNCarry",
    "RNNParams",
    "bidirectional",
    "teaching_bptt",
    "causal_conv",
    "checkpoint",
    "classic",
    "conv",
    "ctc",
    "cudnn",
    "data",
    "diagnostics",
    "dropout",
    "elman",
    "execution",
    "interop",
    "jordan",
    "kinds",
    "linear_scans",
    "linear_cells",
    "narx",
    "min_gru",
    "min_lstm",
    "griffin",
    "lru",
    "s5",
    "state_space",
    "hawk",
    "mamba",
    "rg_lru",
    "selective_ssm",
    "plot",
    "regularization",
    "seq2seq",
    "language_model",
    "train",
    "dense",
    "embedding",
    "EmbeddingParams",
    "check_tokens",
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
