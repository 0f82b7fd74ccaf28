"""Keras 3 interop: a ``keras.Sequential`` of recurrent layers as a scanrnn model, and back.

:func:`from_keras` converts a Keras 3 ``Sequential`` (or one layer) into an
ordinary scanrnn ``(model, params)`` pair: ``model`` is a
:func:`scanrnn.serial` of one scanrnn layer per Keras layer, over ONE
sequence ``[T, I]`` like every scanrnn model (``jax.vmap(model.apply,
in_axes=(None, 0))`` runs a batch ``[B, T, I]``), and ``params`` a tuple
with one entry per layer, in the layout of the scanrnn layers, exactly as
their ``init`` makes them. :func:`to_keras` goes the other way: a scanrnn
model of such layers becomes a ``keras.Sequential`` computing the same
outputs on batches ``[B, T, I]``.

Keras is imported only when one of these functions is called; importing
this module (or :mod:`scanrnn`) does not import it. Keras 3 picks its
backend when it is first imported, from ``KERAS_BACKEND``, and its default
is TensorFlow: if Keras is not imported yet, these functions set
``KERAS_BACKEND`` to ``"jax"`` unless it is set already
(``os.environ.setdefault``), then import it. A Keras already imported keeps
its backend: :func:`from_keras` reads models of any backend (the weights
come through ``get_weights()`` as NumPy arrays, the options through
``get_config()``), and :func:`to_keras` builds its model in that backend.

What converts
-------------

Keras kernels are ``[in, out]``, scanrnn's weights ``[out, in]`` (PyTorch's
layout), so every kernel is transposed. For a layer of ``H`` units:

==========================================  =============================================
Keras                                       scanrnn
==========================================  =============================================
``SimpleRNN`` (``tanh``, ``relu``,          ``recurrent(simple_rnn(H, activation))``,
``sigmoid``)                                ``RNNParams(kernel.T, recurrent_kernel.T, bias)``
``LSTM``                                    ``recurrent(lstm(H))``, ``LSTMParams(kernel.T,
                                            recurrent_kernel.T, bias)``: Keras' gates
                                            (i, f, c, o) are scanrnn's (i, f, g, o)
``GRU(reset_after=True)``                   ``recurrent(gru(H))``: Keras' gate blocks
                                            (z, r, h) reordered to (r, z, n);
                                            ``bias[0]`` is ``b_ih``, ``bias[1]`` ``b_hh``
``GRU(reset_after=False)``                  ``recurrent(gru(H, reset_after=False))``:
                                            blocks reordered, ``bias`` is ``b_ih``,
                                            ``b_hh`` is zero
``RNN`` of one ``SimpleRNNCell``,           as the layer of that cell
``LSTMCell`` or ``GRUCell``
``Bidirectional`` of the above,             ``bidirectional(cell, merge)``, params of
``merge_mode`` ``concat``, ``sum``,         ``forward_layer`` and ``backward_layer``
``ave``, ``mul``                            stacked on a leading axis of 2; ``ave`` is
                                            ``merge="mean"``
``Dense``, ``TimeDistributed(Dense)``       ``dense(units)``, ``DenseParams(kernel.T, bias)``
(linear activation)
``Embedding``                               ``embedding(input_dim, output_dim)``,
                                            ``EmbeddingParams(embeddings)``
``Dropout``, ``SpatialDropout1D``           ``dropout(rate)``,
                                            ``dropout(rate, broadcast_time=True)``
``InputLayer``, ``Masking``                 nothing (see Masking below)
==========================================  =============================================

``return_sequences`` is kept (``False``: the output at the last valid step;
for a bidirectional layer, merged with the backward direction's output at
step 0, as Keras gives it). ``use_bias=False`` gives zero biases. ``unroll``,
``use_cudnn``, initialisers, regularisers, constraints, ``seed`` and the
dropout rates of the recurrent layers do not change what a trained layer
computes at inference and are ignored: the converted model matches the
Keras model in **inference mode** (``training=False``, ``predict``). A
nested ``Sequential`` is converted layer by layer in place.

Refused, with a ValueError that names the layer and the option:
``return_state=True``, ``stateful=True``, ``go_backwards=True`` outside
``Bidirectional``, a ``Bidirectional`` whose two layers differ in kind,
units or activations (or whose ``merge_mode`` is ``None``), an LSTM or GRU
with ``activation`` other than ``tanh`` or ``recurrent_activation`` other
than ``sigmoid``, a ``SimpleRNN`` activation other than ``tanh``, ``relu``
or ``sigmoid``, a ``Dense`` activation other than ``linear``, a ``Dense`` or
``Embedding`` with LoRA or quantisation, a layer not yet built (no weights),
and every other layer (``Conv1D``, ``Activation``, ``StackedRNNCells``, a
functional or subclassed model, ...).

Params come in the weights' dtype: float32, or float64 for float64 Keras
weights when ``jax_enable_x64`` is on (otherwise float32, with a warning);
float16 and bfloat16 are kept.

Masking
-------

Keras marks padded steps with a mask, made by ``Masking(mask_value)`` (a
step whose features all equal ``mask_value``) or ``Embedding(mask_zero=True)``
(token 0); a masked step keeps the state. scanrnn marks them with
``length``, the number of valid steps at the start of the sequence. So
``Masking`` converts to nothing and ``Embedding(mask_zero=True)`` to a plain
:func:`scanrnn.embedding`: **pass** ``length`` **yourself**, e.g.
``jax.vmap(model.apply, in_axes=(None, 0, 0))(params, xs, lengths)``.

For right-padded batches (the mask of example ``b`` is its first ``n_b``
steps) the converted model with ``length=n_b`` gives Keras' outputs at every
valid step ``t < n_b``, and a ``return_sequences=False`` layer gives the
output at step ``n_b - 1`` as Keras does. Past the length they differ:

- scanrnn: every layer (recurrent, bidirectional, dense, embedding) gives
  zeros at steps ``t >= n_b``;
- Keras: a plain recurrent layer (``zero_output_for_mask=False``, its
  default) repeats its output of step ``n_b - 1``; inside ``Bidirectional``
  (which sets ``zero_output_for_mask`` to ``return_sequences``) both
  directions give zeros, as scanrnn; ``Dense``/``TimeDistributed`` apply to
  whatever they are given there (after a plain recurrent layer, the
  repeated output, so ``W h_{n-1} + b``); ``Embedding`` gives the row of
  token 0.

A mask with holes (a 0 token, or a step of ``mask_value``, before the end
of the valid part) has no scanrnn counterpart: scanrnn reads every step
before ``length``.

to_keras
--------

:func:`to_keras` writes the same table backwards; scanrnn's ``dropout``
(any layer without params that is the identity at inference) becomes
``Dropout(0.0)``, since its rate is not in the params. The Keras model has
no mask: for padded batches put ``keras.layers.Masking`` first, with the
differences above.

JAX's promotion settings
------------------------

Keras' JAX backend relies on JAX's default rank promotion (its
initialisers and bias additions broadcast ``[H]`` against ``[B, H]``) and,
for float64 LSTM and GRU layers, on implicit dtype promotion: with
``jax_numpy_rank_promotion="raise"`` building a Keras model fails, and with
``jax_numpy_dtype_promotion="strict"`` a float64 LSTM fails. :func:`to_keras`
runs Keras inside ``jax.numpy_rank_promotion("allow")`` and
``jax.numpy_dtype_promotion("standard")``; under stricter settings wrap your
own Keras calls the same way. Keras' JAX backend also maps 64-bit result
types to 32 bits (``keras.backend.result_type``), so a float64 Keras model
on that backend computes its ``tanh`` in float32 (and its float64
``SimpleRNN`` fails in the scan): it agrees with float64 scanrnn to float32
precision only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from . import cells as _cells
from .layers import (
    DenseParams, EmbeddingParams, Layer, RecurrentParams, bidirectional, dense, dropout, embedding, recurrent, serial,
)

__all__ = ["from_keras", "to_keras"]

ACCEPTED = "a keras.Sequential or a single Keras layer"
CONVERTS = (
    "SimpleRNN, LSTM, GRU, RNN of one of their cells, Bidirectional of those, Dense, TimeDistributed(Dense), "
    "Embedding, Dropout, SpatialDropout1D, Masking and InputLayer"
)
SIMPLE_ACTIVATIONS = ("tanh", "relu", "sigmoid")
KERAS_MERGES = {"concat": "concat", "sum": "sum", "ave": "mean", "mul": "mul"}  # Keras' merge_mode -> scanrnn's
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
PROBE_STEPS = 5


def _import_keras(caller: str):
    """Keras 3, imported with ``KERAS_BACKEND`` defaulting to ``"jax"`` when it is not imported yet."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as error:
        raise ImportError(f"{caller} needs Keras 3 (pip install keras); importing it failed: {error}") from error
    version = str(getattr(keras, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
        raise ImportError(f"{caller} needs Keras 3, got keras {version}")
    return keras


@contextlib.contextmanager
def _keras_numerics():
    """JAX's default rank and dtype promotion, which Keras' JAX backend relies on (module docstring)."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


# --------------------------------------------------------------------------
# Keras -> scanrnn.


def _param_dtype(dtype, where: str):
    """The JAX dtype for Keras weights of NumPy dtype ``dtype`` (float64 only with x64 enabled)."""
    table = {"float16": jnp.float16, "bfloat16": jnp.bfloat16, "float32": jnp.float32, "float64": jnp.float64}
    name = np.dtype(dtype).name
    if name not in table:
        raise ValueError(f"from_keras: {where} has weights of dtype {name}; it converts floating weights")
    if name == "float64" and not jax.config.jax_enable_x64:
        warnings.warn(
            f"from_keras: {where} is float64 but jax_enable_x64 is off; its params will be float32", stacklevel=4
        )
        return jnp.float32
    return table[name]


def _describe_layer(layer, index: int) -> str:
    return f"layer {index} ({layer.name!r}, {type(layer).__name__})"


def _flatten_keras(keras, obj) -> list:
    """The layers of a Sequential, nested ones flattened in place, or ``[obj]`` for one layer."""
    if isinstance(obj, keras.Sequential):
        layers = []
        for layer in obj.layers:
            layers.extend(_flatten_keras(keras, layer) if isinstance(layer, keras.Sequential) else [layer])
        return layers
    if isinstance(obj, keras.Model):
        raise ValueError(
            f"from_keras accepts {ACCEPTED}, got a {type(obj).__name__} model (a functional or subclassed model: "
            "rebuild it as a keras.Sequential)"
        )
    if isinstance(obj, keras.layers.Layer):
        return [obj]
    raise ValueError(f"from_keras accepts {ACCEPTED}, got {type(obj).__name__}")


def _weights(layer, where: str) -> dict:
    """A built layer's weights by name (``kernel``, ``recurrent_kernel``, ``bias``, ``embeddings``)."""
    if not layer.built or not layer.weights:
        raise ValueError(
            f"from_keras: {where} is not built and has no weights yet; build the model first (give the "
            "Sequential a keras.Input, or call it on a batch)"
        )
    names = [w.name for w in layer.weights]
    if len(set(names)) != len(names):
        raise ValueError(f"from_keras: {where} has weights of repeated names {names}")
    return dict(zip(names, layer.get_weights()))


class _RNNSpec(NamedTuple):
    """What a Keras recurrent layer computes, read off its config."""

    kind: str  # "simple_rnn", "lstm" or "gru"
    units: int
    activation: Optional[str]  # simple_rnn's; None for the LSTM and GRU (tanh, checked)
    reset_after: Optional[bool]  # the GRU's; None otherwise
    use_bias: bool
    return_sequences: bool
    go_backwards: bool


def _rnn_spec(keras, layer, where: str) -> _RNNSpec:
    """The options of a SimpleRNN, LSTM, GRU or RNN layer; a ValueError for those scanrnn cannot express."""
    L = keras.layers
    if type(layer) not in (L.SimpleRNN, L.LSTM, L.GRU, L.RNN):
        raise ValueError(f"from_keras: {where} is not supported; it converts {CONVERTS}")
    config = layer.get_config()
    for option in ("return_state", "stateful"):
        if config.get(option):
            raise ValueError(f"from_keras: {where}: {option}=True is not supported (scanrnn models return outputs "
                             "only and start every sequence from zeros)")
    cell = layer.cell
    kinds = {L.SimpleRNNCell: "simple_rnn", L.LSTMCell: "lstm", L.GRUCell: "gru"}
    if type(cell) not in kinds:
        raise ValueError(
            f"from_keras: {where} runs a cell of type {type(cell).__name__}; it converts SimpleRNNCell, LSTMCell "
            "and GRUCell"
        )
    kind = kinds[type(cell)]
    cell_config = cell.get_config()
    activation = cell_config.get("activation")
    if kind == "simple_rnn":
        if activation not in SIMPLE_ACTIVATIONS:
            raise ValueError(
                f"from_keras: {where}: activation={activation!r} is not supported; a SimpleRNN converts with "
                f"{', '.join(SIMPLE_ACTIVATIONS)}"
            )
    else:
        recurrent_activation = cell_config.get("recurrent_activation")
        if activation != "tanh":
            raise ValueError(
                f"from_keras: {where}: activation={activation!r} is not supported; an LSTM or GRU converts with "
                "activation='tanh'"
            )
        if recurrent_activation != "sigmoid":
            raise ValueError(
                f"from_keras: {where}: recurrent_activation={recurrent_activation!r} is not supported; an LSTM or "
                "GRU converts with recurrent_activation='sigmoid'"
            )
    return _RNNSpec(
        kind=kind,
        units=int(cell_config["units"]),
        activation=activation if kind == "simple_rnn" else None,
        reset_after=bool(cell_config["reset_after"]) if kind == "gru" else None,
        use_bias=bool(cell_config.get("use_bias", True)),
        return_sequences=bool(config.get("return_sequences", False)),
        go_backwards=bool(config.get("go_backwards", False)),
    )


def _swap_reset_update(a, hidden: int):
    """Swap the first two gate blocks along axis 0: Keras' GRU order (z, r, h) <-> scanrnn's (r, z, n)."""
    return np.concatenate([a[hidden : 2 * hidden], a[:hidden], a[2 * hidden :]], axis=0)


def _cell_params(spec: _RNNSpec, weights: dict, where: str):
    """One Keras recurrent layer's weights as the params of the scanrnn cell, in the weights' dtype."""
    kernel, recurrent_kernel = weights.get("kernel"), weights.get("recurrent_kernel")
    if kernel is None or recurrent_kernel is None:
        raise ValueError(f"from_keras: {where} has weights {sorted(weights)}; expected kernel and recurrent_kernel")
    dtype = _param_dtype(kernel.dtype, where)
    H, G = spec.units, GATES[spec.kind]
    if kernel.ndim != 2 or kernel.shape[1] != G * H or recurrent_kernel.shape != (H, G * H):
        raise ValueError(
            f"from_keras: {where} has kernel {kernel.shape} and recurrent_kernel {recurrent_kernel.shape}; "
            f"expected [I, {G * H}] and [{H}, {G * H}]"
        )
    bias = weights.get("bias") if spec.use_bias else None
    as_jax = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    zeros = jnp.zeros((G * H,), dtype)
    if spec.kind != "gru":
        b = zeros if bias is None else as_jax(bias)
        cls = _cells.LSTMParams if spec.kind == "lstm" else _cells.RNNParams
        return cls(as_jax(kernel.T), as_jax(recurrent_kernel.T), b), dtype
    w_ih = as_jax(_swap_reset_update(kernel.T, H))
    w_hh = as_jax(_swap_reset_update(recurrent_kernel.T, H))
    if bias is None:
        b_ih = b_hh = zeros
    elif spec.reset_after:
        b_ih, b_hh = (as_jax(_swap_reset_update(b, H)) for b in bias)  # bias [2, 3H]: input, recurrent
    else:
        b_ih, b_hh = as_jax(_swap_reset_update(bias, H)), zeros
    return _cells.GRUParams(w_ih, w_hh, b_ih, b_hh), dtype


def _make_cell(kind: str, hidden: int, option, dtype):
    """A scanrnn cell; ``option`` is simple_rnn's activation or the GRU's ``reset_after``."""
    if kind == "simple_rnn":
        return _cells.simple_rnn(hidden, option, param_dtype=dtype)
    if kind == "lstm":
        return _cells.lstm(hidden, param_dtype=dtype)
    return _cells.gru(hidden, reset_after=option, param_dtype=dtype)


def _spec_option(spec: _RNNSpec):
    return spec.activation if spec.kind == "simple_rnn" else spec.reset_after


def _from_recurrent(keras, layer, where: str, execution):
    spec = _rnn_spec(keras, layer, where)
    if spec.go_backwards:
        raise ValueError(
            f"from_keras: {where}: go_backwards=True is not supported outside Bidirectional (Keras returns the "
            "reversed sequence's outputs in reversed order)"
        )
    params, dtype = _cell_params(spec, _weights(layer, where), where)
    cell = _make_cell(spec.kind, spec.units, _spec_option(spec), dtype)
    return recurrent(cell, spec.return_sequences, execution=execution), params


def _from_bidirectional(keras, layer, where: str, execution):
    merge_mode = layer.merge_mode
    if merge_mode not in KERAS_MERGES:
        raise ValueError(
            f"from_keras: {where}: merge_mode={merge_mode!r} is not supported (it returns the two directions as a "
            "list); it converts concat, sum, ave and mul"
        )
    forward, backward = layer.forward_layer, layer.backward_layer
    f = _rnn_spec(keras, forward, f"{where}, its forward layer {forward.name!r}")
    b = _rnn_spec(keras, backward, f"{where}, its backward layer {backward.name!r}")
    if f.go_backwards or not b.go_backwards:
        raise ValueError(
            f"from_keras: {where}: the forward layer must have go_backwards=False and the backward layer "
            f"go_backwards=True, got {f.go_backwards} and {b.go_backwards}"
        )
    same = ("kind", "units", "activation", "reset_after", "return_sequences")
    if [getattr(f, s) for s in same] != [getattr(b, s) for s in same]:
        raise ValueError(
            f"from_keras: {where}: the forward and backward layers must be one kind of cell with the same units "
            f"and activations (scanrnn's bidirectional runs one cell both ways), got "
            f"{dict((s, getattr(f, s)) for s in same)} and {dict((s, getattr(b, s)) for s in same)}"
        )
    forward_params, dtype = _cell_params(f, _weights(forward, f"{where}, its forward layer"), where)
    backward_params, backward_dtype = _cell_params(b, _weights(backward, f"{where}, its backward layer"), where)
    if backward_dtype != dtype:
        raise ValueError(
            f"from_keras: {where}: the forward and backward layers must have one dtype, got "
            f"{jnp.dtype(dtype).name} and {jnp.dtype(backward_dtype).name}"
        )
    params = jax.tree.map(lambda a, c: jnp.stack([a, c]), forward_params, backward_params)
    cell = _make_cell(f.kind, f.units, _spec_option(f), dtype)
    return bidirectional(cell, KERAS_MERGES[merge_mode], f.return_sequences, execution=execution), params


def _no_lora_or_quantisation(layer, where: str) -> None:
    if getattr(layer, "lora_enabled", False):
        raise ValueError(f"from_keras: {where} has LoRA enabled, which is not supported (merge it first)")
    if getattr(layer, "quantization_mode", None):
        raise ValueError(f"from_keras: {where} is quantised ({layer.quantization_mode}), which is not supported")


def _from_dense(layer, where: str):
    activation = layer.get_config().get("activation")
    if activation != "linear":
        raise ValueError(
            f"from_keras: {where}: activation={activation!r} is not supported; a Dense layer converts with the "
            "linear activation (scanrnn.dense is affine; apply the activation to the outputs)"
        )
    _no_lora_or_quantisation(layer, where)
    weights = _weights(layer, where)
    kernel = weights.get("kernel")
    if kernel is None or kernel.ndim != 2:
        raise ValueError(f"from_keras: {where} has weights {sorted(weights)}; expected a kernel [I, units]")
    dtype = _param_dtype(kernel.dtype, where)
    features = kernel.shape[1]
    bias = weights.get("bias")
    b = jnp.zeros((features,), dtype) if bias is None else jnp.asarray(bias, dtype)
    return dense(features, param_dtype=dtype), DenseParams(jnp.asarray(kernel.T, dtype), b)


def _from_embedding(layer, where: str):
    _no_lora_or_quantisation(layer, where)
    weights = _weights(layer, where)
    table = weights.get("embeddings")
    if table is None or table.ndim != 2:
        raise ValueError(f"from_keras: {where} has weights {sorted(weights)}; expected embeddings [V, F]")
    dtype = _param_dtype(table.dtype, where)
    return embedding(table.shape[0], table.shape[1], param_dtype=dtype), EmbeddingParams(jnp.asarray(table, dtype))


def _from_keras_layer(keras, layer, where: str, execution):
    """One Keras layer as ``(scanrnn layer, params)``, or ``None`` for a layer that converts to nothing."""
    L = keras.layers
    kind = type(layer)
    if kind in (L.InputLayer, L.Masking):
        return None
    if kind in (L.Dropout, L.SpatialDropout1D):
        return dropout(float(layer.get_config()["rate"]), broadcast_time=kind is L.SpatialDropout1D), ()
    if kind is L.Dense:
        return _from_dense(layer, where)
    if kind is L.TimeDistributed:
        inner = layer.layer
        if type(inner) is not L.Dense:
            raise ValueError(
                f"from_keras: {where} wraps a {type(inner).__name__}; it converts TimeDistributed(Dense) only"
            )
        return _from_dense(inner, f"{where}, its Dense {inner.name!r}")
    if kind is L.Embedding:
        return _from_embedding(layer, where)
    if kind in (L.SimpleRNN, L.LSTM, L.GRU, L.RNN):
        return _from_recurrent(keras, layer, where, execution)
    if kind is L.Bidirectional:
        return _from_bidirectional(keras, layer, where, execution)
    raise ValueError(f"from_keras: {where} is not supported; it converts {CONVERTS}")


def from_keras(model_or_layer, *, execution=None) -> tuple[Layer, tuple]:
    """Convert a Keras 3 ``Sequential`` (or one layer) to an ordinary scanrnn ``(model, params)``.

    Accepts ``SimpleRNN``, ``LSTM``, ``GRU`` (both ``reset_after`` forms),
    ``RNN`` of one of their cells, ``Bidirectional`` of those (``merge_mode``
    ``concat``, ``sum``, ``ave``, ``mul``), ``Dense`` and
    ``TimeDistributed(Dense)`` with the linear activation, ``Embedding``,
    ``Dropout``, ``SpatialDropout1D``, ``Masking`` and ``InputLayer``, with
    ``return_sequences`` either way; the module docstring has the table of
    weights, what is refused, and how ``Masking`` and
    ``Embedding(mask_zero=True)`` become the ``length`` argument you pass.
    The model must be built (have its weights). It may come from any Keras
    backend; if Keras is not imported yet, ``KERAS_BACKEND`` defaults to
    ``"jax"``. ``execution`` (a :class:`scanrnn.Execution`) is given to
    every recurrent layer.

    Returns:
      ``model``: ``serial(...)`` with one scanrnn layer per Keras layer
      (``Masking`` and ``InputLayer`` give none), a :class:`scanrnn.Layer`
      over ONE sequence ``[T, I]`` (``[T]`` tokens when it begins with an
      embedding): ``model.apply(params, xs, length=None)``. Batches:
      ``jax.vmap(model.apply, in_axes=(None, 0))``.

      ``params``: a tuple with one entry per scanrnn layer, as that layer's
      ``init`` makes them (a bidirectional layer's stacked on a leading axis
      of 2, forward first; a dropout's ``()``), in the weights' dtype.

    The outputs equal the Keras model's in inference mode (``predict``,
    ``model(x, training=False)``) at every step of unpadded batches, and at
    every valid step of right-padded ones given ``length``.

    Raises:
      ValueError: a layer or option scanrnn cannot express (the message
          names the layer and the option), or a layer that is not built.

    Example::

        import os; os.environ.setdefault("KERAS_BACKEND", "jax")
        import keras, jax, numpy as np
        from scanrnn.interop import from_keras

        net = keras.Sequential([keras.Input((None, 3)), keras.layers.Masking(0.0),
                                keras.layers.Bidirectional(keras.layers.LSTM(8)), keras.layers.Dense(1)])
        model, params = from_keras(net)
        xs = np.zeros((2, 6, 3), np.float32); xs[0], xs[1, :4] = 1.0, 1.0   # lengths 6 and 4
        ys = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, xs, np.array([6, 4]))  # == net.predict(xs)
    """
    keras = _import_keras("from_keras")
    converted = []
    for index, layer in enumerate(_flatten_keras(keras, model_or_layer)):
        one = _from_keras_layer(keras, layer, _describe_layer(layer, index), execution)
        if one is not None:
            converted.append(one)
    if not converted:
        raise ValueError(
            "from_keras: nothing to convert: the model has only layers that convert to nothing "
            "(InputLayer, Masking)"
        )
    return serial(*(layer for layer, _ in converted)), tuple(params for _, params in converted)


# --------------------------------------------------------------------------
# scanrnn -> Keras.


class _Match(NamedTuple):
    """What one scanrnn layer turned out to be on the probe: the Keras layer to build, and its params."""

    kind: str  # "simple_rnn", "lstm", "gru", "dense", "embedding" or "dropout"
    params: object
    option: object = None  # simple_rnn's activation or the GRU's reset_after
    merge: Optional[str] = None  # bidirectional: scanrnn's merge; None for one direction
    return_sequences: bool = True


_RNN_KINDS = {_cells.RNNParams: "simple_rnn", _cells.LSTMParams: "lstm", _cells.GRUParams: "gru"}
_OPTIONS = {"simple_rnn": SIMPLE_ACTIVATIONS, "lstm": (None,), "gru": (True, False)}
_WHAT = "recurrent and bidirectional simple_rnn, lstm (no peepholes) and gru layers, dense, embedding and dropout"


def _flatten_scanrnn(model: Layer, params) -> list:
    """``[(layer, params)]``: the layers of a serial model in order (nested ones flattened), or the one layer."""
    if not model.parts:
        return [(model, params)]
    if type(params) not in (tuple, list) or len(params) != len(model.parts):
        is_sequence = type(params) in (tuple, list)
        given = f"a {type(params).__name__} of {len(params)}" if is_sequence else type(params).__name__
        raise ValueError(
            f"to_keras: a serial model of {len(model.parts)} layers takes a tuple of {len(model.parts)} params, "
            f"got {given}"
        )
    layers = []
    for part, p in zip(model.parts, params):
        layers.extend(_flatten_scanrnn(part, p))
    return layers


def _one_dtype(layers) -> np.dtype:
    """The one floating dtype of every param; a ValueError otherwise."""
    dtypes = {jnp.result_type(leaf) for _, p in layers for leaf in jax.tree.leaves(p)}
    if len(dtypes) > 1:
        raise ValueError(f"to_keras: every param must have one dtype, got {sorted(d.name for d in dtypes)}")
    dtype = dtypes.pop() if dtypes else jnp.dtype(jnp.float32)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"to_keras: params must be float32 or float64, got {dtype}")
    return dtype


def _gap(got, want) -> float:
    """The largest difference relative to the largest output (at least 1); infinity for another shape or a NaN."""
    try:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    except (TypeError, ValueError):
        return float("inf")
    if got.shape != want.shape:
        return float("inf")
    gap = float(np.max(np.abs(got - want), initial=0.0)) / max(1.0, float(np.max(np.abs(want), initial=0.0)))
    return gap if np.isfinite(gap) else float("inf")


def _refuse_params(index: int, p) -> None:
    name = type(p).__name__
    hint = ""
    if type(p) is RecurrentParams:
        hint = " (a layer with learn_initial_carry=True: Keras' layers start every sequence from zeros)"
    elif name.startswith("PeepholeLSTM"):
        hint = " (Keras' LSTM has no peepholes)"
    elif name.startswith("LayerNorm"):
        hint = " (Keras' recurrent layers have no layer normalisation)"
    raise ValueError(f"to_keras converts {_WHAT}; layer {index} has params of type {name}{hint}")


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


_NUMPY_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "sigmoid": _sigmoid}
_NUMPY_MERGES = {
    "concat": lambda a, b: np.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


def _reference_outputs(kind: str, option, p, xs, reverse: bool):
    """One direction of a built-in cell over ``xs [T, I]`` in NumPy float64: the outputs ``[T, H]`` in time order.

    The candidates' maths, written out as :mod:`scanrnn.cells` states it,
    so that trying them costs no compilation; the Keras model built from
    the match is checked against ``model.apply`` at the end.
    """
    p = {name: np.asarray(value, np.float64) for name, value in p._asdict().items()}
    hidden = p["w_hh"].shape[-1]
    h, c = np.zeros(hidden), np.zeros(hidden)
    ys = np.zeros((xs.shape[0], hidden))
    for t in (range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])):
        x = xs[t]
        if kind == "simple_rnn":
            h = _NUMPY_ACTIVATIONS[option](p["w_ih"] @ x + p["w_hh"] @ h + p["b"])
        elif kind == "lstm":
            i, f, g, o = np.split(p["w_ih"] @ x + p["w_hh"] @ h + p["b"], 4)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:
            x_r, x_z, x_n = np.split(p["w_ih"] @ x + p["b_ih"], 3)
            if option:  # reset_after: the reset gate multiplies the recurrent product
                h_r, h_z, h_n = np.split(p["w_hh"] @ h + p["b_hh"], 3)
                n = np.tanh(x_n + _sigmoid(x_r + h_r) * h_n)
            else:  # Cho et al.: it multiplies h before the product
                h_r, h_z = np.split(p["w_hh"][: 2 * hidden] @ h + p["b_hh"][: 2 * hidden], 2)
                n = np.tanh(x_n + p["w_hh"][2 * hidden :] @ (_sigmoid(x_r + h_r) * h) + p["b_hh"][2 * hidden :])
            z = _sigmoid(x_z + h_z)
            h = (1.0 - z) * n + z * h
        ys[t] = h
    return ys


def _match(index: int, p, x, want, tolerance: float) -> _Match:
    """Which Keras layer computes what a scanrnn layer of params ``p`` did on ``x``: the candidate matching ``want``."""
    if type(p) is tuple and not p:  # no params: dropout, the identity at inference
        if _gap(want, x) == 0.0:
            return _Match("dropout", p)
        raise ValueError(f"to_keras: layer {index} has no params and is not the identity on a probe sequence")
    if type(p) in _RNN_KINDS:
        return _match_recurrent(index, _RNN_KINDS[type(p)], p, x, want, tolerance)
    if type(p) is DenseParams:
        match = _Match("dense", p)
        got = np.asarray(x, np.float64) @ np.asarray(p.w, np.float64).T + np.asarray(p.b, np.float64)
    elif type(p) is EmbeddingParams:
        match = _Match("embedding", p)
        got = np.asarray(p.table, np.float64)[np.asarray(x)]
    else:
        _refuse_params(index, p)
    gap = _gap(got, want)
    if gap > tolerance:
        raise ValueError(
            f"to_keras: layer {index} has params of type {type(p).__name__} but does not compute scanrnn's "
            f"{match.kind} on a probe sequence (largest relative difference {gap:.2e})"
        )
    return match


def _match_recurrent(index: int, kind: str, p, x, want, tolerance: float) -> _Match:
    """A recurrent or bidirectional layer: its activation or GRU form, its merge, and return_sequences."""
    directions = 2 if jnp.ndim(p.w_ih) == 3 else 1
    hidden = int(jnp.shape(p.w_hh)[-1])
    want_shape = jnp.shape(want) if isinstance(want, (jax.Array, np.ndarray)) else None
    if want_shape is None or len(want_shape) not in (1, 2) or jnp.ndim(x) != 2:
        raise ValueError(
            f"to_keras: layer {index} does not map a sequence [T, I] to a sequence [T, F] or a vector [F] on a "
            "probe sequence; it converts the built-in cells' layers"
        )
    return_sequences = len(want_shape) == 2
    xs = np.asarray(x, np.float64)
    merges = [None] if directions == 1 else ["concat"] if want_shape[-1] == 2 * hidden else ["sum", "mean", "mul"]
    gaps = [float("inf")]
    for option in _OPTIONS[kind]:
        if directions == 1:
            ys = _reference_outputs(kind, option, p, xs, reverse=False)
            both = (ys if return_sequences else ys[-1], None)
        else:
            one = [jax.tree.map(lambda a, d=d: a[d], p) for d in (0, 1)]
            forward = _reference_outputs(kind, option, one[0], xs, reverse=False)
            backward = _reference_outputs(kind, option, one[1], xs, reverse=True)
            both = (forward, backward) if return_sequences else (forward[-1], backward[0])
        for merge in merges:
            got = both[0] if merge is None else _NUMPY_MERGES[merge](*both)
            gaps.append(_gap(got, want))
            if gaps[-1] <= tolerance:
                return _Match(kind, p, option, merge, return_sequences)
    forms = {"simple_rnn": "simple_rnn with tanh, relu or sigmoid", "lstm": "lstm without peepholes",
             "gru": "gru (either reset_after)"}[kind]
    layer_kind = "bidirectional (merge concat, sum, mean or mul)" if directions == 2 else "recurrent"
    raise ValueError(
        f"to_keras: layer {index} has params of type {type(p).__name__} but does not match a {layer_kind} layer of "
        f"{forms} on a probe sequence (largest relative difference {min(gaps):.2e}); it converts the built-in "
        "cells' layers, without a regularization that acts at inference, not a user-written cell"
    )


def _rnn_weights(match: _Match, p) -> dict:
    """One direction's params as Keras' weights by name, in the params' dtype."""
    w_ih, w_hh = np.asarray(p.w_ih), np.asarray(p.w_hh)
    if match.kind != "gru":
        return {"kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": np.asarray(p.b)}
    hidden = w_hh.shape[-1]
    kernel, recurrent_kernel = _swap_reset_update(w_ih, hidden).T, _swap_reset_update(w_hh, hidden).T
    b_ih, b_hh = np.asarray(p.b_ih), np.asarray(p.b_hh)
    if match.option:  # reset_after: bias [2, 3H], input then recurrent
        bias = np.stack([_swap_reset_update(b_ih, hidden), _swap_reset_update(b_hh, hidden)])
    else:  # one bias: the recurrent bias of every gate only shifts the input bias
        bias = _swap_reset_update(b_ih + b_hh, hidden)
    return {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}


# Keras' default initialisers of the weights to_keras overwrites. Its layers are built with zeros instead
# (the orthogonal and Glorot initialisers compile a JAX program per weight shape, most of to_keras' time),
# and given these back once built, so that get_config() and clone_model() see Keras' defaults.
_DEFAULT_INITIALISERS = {
    "kernel_initializer": "glorot_uniform",
    "recurrent_initializer": "orthogonal",
    "embeddings_initializer": "uniform",
}


def _restore_default_initialisers(keras, layer) -> None:
    for name, default in _DEFAULT_INITIALISERS.items():
        if name in vars(layer):  # a recurrent layer's are properties of its cell
            setattr(layer, name, keras.initializers.get(default))
    for inner in ("cell", "forward_layer", "backward_layer"):
        if isinstance(getattr(layer, inner, None), keras.layers.Layer):
            _restore_default_initialisers(keras, getattr(layer, inner))


def _keras_layer(keras, match: _Match, dtype_name: str):
    L = keras.layers
    p = match.params
    if match.kind == "dropout":
        return L.Dropout(0.0)
    if match.kind == "dense":
        return L.Dense(int(np.shape(p.w)[0]), kernel_initializer="zeros", dtype=dtype_name)
    if match.kind == "embedding":
        return L.Embedding(*(int(n) for n in np.shape(p.table)), embeddings_initializer="zeros", dtype=dtype_name)
    hidden = int(np.shape(p.w_hh)[-1])
    options = dict(return_sequences=match.return_sequences, kernel_initializer="zeros",
                   recurrent_initializer="zeros", dtype=dtype_name)
    if match.kind == "simple_rnn":
        layer = L.SimpleRNN(hidden, activation=match.option, **options)
    elif match.kind == "lstm":
        layer = L.LSTM(hidden, **options)
    else:
        layer = L.GRU(hidden, reset_after=match.option, **options)
    if match.merge is None:
        return layer
    keras_merge = {scanrnn: name for name, scanrnn in KERAS_MERGES.items()}[match.merge]
    return L.Bidirectional(layer, merge_mode=keras_merge, dtype=dtype_name)


def _assign(layer, values: dict) -> None:
    """Set a built Keras layer's weights by name."""
    names = [w.name for w in layer.weights]
    if sorted(names) != sorted(values):
        raise ValueError(f"to_keras: the Keras layer {layer.name!r} has weights {names}, expected {sorted(values)}")
    layer.set_weights([values[name] for name in names])


def _set_keras_weights(layer, match: _Match) -> None:
    p = match.params
    if match.kind == "dropout":
        return
    if match.kind == "dense":
        _assign(layer, {"kernel": np.asarray(p.w).T, "bias": np.asarray(p.b)})
    elif match.kind == "embedding":
        _assign(layer, {"embeddings": np.asarray(p.table)})
    elif match.merge is None:
        _assign(layer, _rnn_weights(match, p))
    else:
        _assign(layer.forward_layer, _rnn_weights(match, jax.tree.map(lambda a: a[0], p)))
        _assign(layer.backward_layer, _rnn_weights(match, jax.tree.map(lambda a: a[1], p)))


def _probe(layers, dtype):
    """A random sequence for the model's first layer: ``[5]`` tokens for an embedding, else ``[5, I]``."""
    rng = np.random.default_rng(0)
    first = next((p for _, p in layers if not (type(p) is tuple and not p)), None)
    if type(first) is EmbeddingParams:
        vocab = int(jnp.shape(first.table)[0])
        return rng.integers(0, vocab, size=PROBE_STEPS).astype(np.int32), None
    if type(first) is DenseParams:
        size = int(jnp.shape(first.w)[-1])
    elif type(first) in _RNN_KINDS:
        size = int(jnp.shape(first.w_ih)[-1])
    elif first is None:
        raise ValueError("to_keras: the model has no layer with params to read its input size from")
    else:
        _refuse_params(next(k for k, (_, p) in enumerate(layers) if p is first), first)
    return rng.normal(size=(PROBE_STEPS, size)).astype(np.dtype(dtype.name)), size


def _layer_outputs(layers, probe) -> list:
    """Every layer's output on the probe, each fed to the next: one compilation for the whole model."""

    def run(params, x):
        outputs = []
        for (layer, _), p in zip(layers, params):
            x = layer.apply(p, x)
            outputs.append(x)
        return outputs

    params = [p for _, p in layers]
    try:
        return jax.jit(run)(params, jnp.asarray(probe))
    except (TypeError, ValueError):
        pass
    x = jnp.asarray(probe)  # find the layer that fails, and say so
    for index, (layer, p) in enumerate(layers):
        try:
            x = layer.apply(p, x)
        except (TypeError, ValueError) as error:
            raise ValueError(f"to_keras: layer {index} fails on a probe sequence: {error}") from error
    return jax.jit(run)(params, jnp.asarray(probe))  # raises what it raised above if no layer fails alone


def to_keras(model: Layer, params):
    """A ``keras.Sequential`` computing what ``model`` computes with ``params``, on batches ``[B, T, I]``.

    The inverse of :func:`from_keras`, for a :func:`scanrnn.serial` model
    (or one layer) of :func:`scanrnn.recurrent` and
    :func:`scanrnn.bidirectional` layers of :func:`scanrnn.simple_rnn`
    (``tanh``, ``relu``, ``sigmoid``), :func:`scanrnn.lstm` without
    peepholes and :func:`scanrnn.gru` (either ``reset_after``), any merge
    and ``return_sequences``, and of :func:`scanrnn.dense`,
    :func:`scanrnn.embedding` and :func:`scanrnn.dropout` layers (a layer
    without params that is the identity at inference becomes
    ``Dropout(0.0)``). The Keras model begins with ``keras.Input((None,
    I))``, or ``keras.Input((None,), dtype="int32")`` for an embedding
    first; its layers have the params' dtype (float32 or float64).

    Weights are written as the module docstring's table says, so
    ``from_keras(to_keras(model, params))`` gives back ``params`` exactly,
    except the recurrent bias ``b_hh`` of a ``gru(reset_after=False)``
    layer, which Keras' one bias holds summed into ``b_ih`` (``b_hh``
    comes back zero; the outputs are the same), and a nested serial model
    comes back flat. A Keras model through :func:`from_keras` and back keeps
    its weights (a layer with ``use_bias=False`` comes back with zero
    biases, ``Masking`` is gone). The Keras layers have Keras' default
    initialisers (what ``get_config()`` and ``keras.models.clone_model``
    see).

    The params give each layer's kind and sizes; what they cannot say (the
    simple RNN's activation, the GRU's form, the bidirectional merge,
    ``return_sequences``) is found as :func:`scanrnn.interop.to_torch`
    finds it, by running a probe sequence of 5 random steps through the
    model, layer by layer (``model.parts``): each layer's output is
    compared with those of a handful of candidates (the activations, the
    GRU forms, the merges, computed in NumPy from the params) and passed on
    to the next layer; a layer that matches none is refused. Finally the
    Keras model is run on the probe and compared with ``model.apply``.
    Keras runs under JAX's default rank and dtype promotion, whatever the
    global settings (module docstring). If Keras is not imported yet,
    ``KERAS_BACKEND`` defaults to ``"jax"``.

    Raises:
      ValueError: params of another structure (peepholes, layer
          normalisation, ``learn_initial_carry`` (:class:`scanrnn.RecurrentParams`),
          a user-written cell's, a linear or state-space cell's), a layer that
          matches no candidate on the probe (a user-written cell with the
          built-in params, a layer with a regularization that acts at
          inference), params of mixed or non-float32/float64 dtypes, or a Keras
          model whose outputs differ from the model's.

    Example::

        import jax, scanrnn as sr
        from scanrnn.interop import to_keras

        model = sr.serial(sr.bidirectional(sr.gru(8), merge="sum"), sr.recurrent(sr.lstm(8), False), sr.dense(1))
        params = model.init(jax.random.key(0), 3)
        net = to_keras(model, params)      # net.predict(xs [B, T, 3]) == jax.vmap(model.apply, (None, 0))(params, xs)
    """
    _checks.layer("to_keras: model", model)
    layers = _flatten_scanrnn(model, params)
    dtype = _one_dtype(layers)
    tolerance = 1e-4 if dtype == jnp.dtype(jnp.float32) else 1e-8
    probe, input_size = _probe(layers, dtype)
    for index, (_, p) in enumerate(layers):
        if type(p) not in _RNN_KINDS and type(p) not in (DenseParams, EmbeddingParams, tuple):
            _refuse_params(index, p)
    outputs = _layer_outputs(layers, probe)
    matches, x = [], probe
    for index, ((_, p), want) in enumerate(zip(layers, outputs)):
        matches.append(_match(index, p, x, want, tolerance))
        x = want

    keras = _import_keras("to_keras")
    with _keras_numerics():
        if input_size is None:
            inputs = keras.Input(shape=(None,), dtype="int32")
        else:
            inputs = keras.Input(shape=(None, input_size), dtype=dtype.name)
        keras_layers = [_keras_layer(keras, match, dtype.name) for match in matches]
        net = keras.Sequential([inputs, *keras_layers])
        for keras_layer, match in zip(keras_layers, matches):
            _set_keras_weights(keras_layer, match)
            _restore_default_initialisers(keras, keras_layer)
        got = np.asarray(net.predict(probe[None], verbose=0))[0]  # compiled once: faster than calling it
    # Keras' JAX backend computes some float64 maths in float32 (module docstring): compare at float32's tolerance.
    gap = _gap(got, x)
    if gap > 1e-4:
        raise ValueError(
            f"to_keras: the Keras model built from these params does not reproduce the model (largest relative "
            f"difference {gap:.2e} on a probe sequence); it converts {_WHAT}"
        )
    return net
