"""Interop: ``torch.nn.RNN``, ``LSTM`` or ``GRU`` and Keras 3 models as scanrnn models, and back.

:func:`from_keras` and :func:`to_keras` (Keras 3's ``SimpleRNN``, ``LSTM``,
``GRU``, ``Bidirectional``, ``Dense``, ``TimeDistributed``, ``Embedding`` and
``Sequential``) are documented in their own docstrings; the rest of this
docstring is PyTorch's.

:func:`from_torch` converts a PyTorch recurrent module into a ``(model,
params)`` pair of ordinary scanrnn objects: ``model`` is a
:func:`scanrnn.serial` of one :func:`scanrnn.recurrent` (or
:func:`scanrnn.bidirectional`) layer per torch layer, over ONE sequence
``[T, I]`` like every scanrnn model, and ``params`` a tuple with one entry
per layer in the layout of the scanrnn cells. :func:`torch_forward` is a
thin adapter on top of that model for code written against the module's own
``forward``: batches in torch's layouts, ``h_0``/``h_n`` stacked over layers
and directions.

:func:`to_torch` goes the other way: a scanrnn model of such layers becomes
the ``torch.nn`` module that computes the same outputs.

PyTorch (and Keras) is imported only when one of these functions is called;
importing this module does not import it.

Layouts of :func:`torch_forward`
--------------------------------

``forward(params, x, hx=None, length=None)`` takes and returns arrays in the
module's layout (``L`` layers, ``D`` = 2 if bidirectional else 1, hidden
size ``H``):

- ``x``: ``[B, T, I]`` if ``batch_first`` else ``[T, B, I]``, or one
  unbatched sequence ``[T, I]``;
- ``length``: optional integer array ``[B]`` (a scalar when unbatched) of
  valid lengths, the lengths one would give ``pack_padded_sequence``; any
  order is fine (as with ``enforce_sorted=False``), and ``0`` is allowed;
- ``hx``: optional initial state ``h_0 [L*D, B, H]`` (``[L*D, H]``
  unbatched), for the LSTM a pair ``(h_0, c_0)``; row ``l*D + d`` is layer
  ``l``, direction ``d`` (0 forward, 1 reverse); zeros when ``None``;
- returns ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM:
  ``output`` ``[B, T, D*H]`` / ``[T, B, D*H]`` / ``[T, D*H]`` (the two
  directions concatenated, forward first), zeros past each length as
  ``pad_packed_sequence`` gives them; ``h_n`` (and ``c_n``) like ``h_0``,
  the state after each example's last valid step (for the reverse
  direction: after reading the whole valid part backwards).

Each example runs through ``model.apply(params, x, length, carry=...)``
(:func:`jax.vmap` adds the batch).

Params
------

``params[l]`` is the cell's params (:class:`scanrnn.RNNParams`,
:class:`scanrnn.LSTMParams`, :class:`scanrnn.GRUParams`) for a
unidirectional layer, and the same NamedTuple with every leaf stacked on a
leading axis of size 2 (forward, reverse) for a bidirectional one. The
mapping from torch's parameters of layer ``k`` (suffix ``_reverse`` for the
reverse direction):

========================  ==========================================
torch                     scanrnn
========================  ==========================================
``weight_ih_l{k}``        ``w_ih`` ``[G*H, I_k]`` (unchanged)
``weight_hh_l{k}``        ``w_hh`` ``[G*H, H]`` (unchanged)
``bias_ih_l{k}``          RNN, LSTM: ``b = bias_ih + bias_hh``;
``bias_hh_l{k}``          GRU: ``b_ih``, ``b_hh`` (kept apart)
``weight_hr_l{k}``        ``w_hr`` ``[P, H]`` (LSTM with ``proj_size=P``)
========================  ==========================================

with the gates in torch's order (LSTM ``i, f, g, o``, GRU ``r, z, n``);
``bias=False`` gives zero biases. An LSTM with ``proj_size=P`` becomes
``lstm(H, proj_size=P)`` (:class:`scanrnn.ProjectedLSTMParams`, ``w_hh
[4H, P]``); its outputs and ``h_0``/``h_n`` have ``P`` features, ``c_0``/
``c_n`` keep ``H``. Arrays have the module's dtype (float32,
or float64 for a ``.double()`` module, which needs ``jax_enable_x64``).

Dropout between layers is active in torch only in training mode and is not
applied here: the converted model matches the module in **eval mode**.
"""

from __future__ import annotations

import warnings
import jax
import jax.numpy as jnp

from . import _checks
from . import cells as _cells
from .kinds import Cell
from .layers import Layer, bidirectional, recurrent, serial
from .unroll import check_length, check_lengths

from ._keras import from_keras, to_keras  # noqa: E402  (Keras itself is imported only when they are called)

__all__ = ["from_keras", "from_torch", "to_keras", "to_torch", "torch_forward"]

ACCEPTED = "torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU"


def _jax_dtype(torch_dtype):
    """The JAX dtype for a torch floating dtype (float64 only with x64 enabled)."""
    import torch

    table = {
        torch.float16: jnp.float16,
        torch.bfloat16: jnp.bfloat16,
        torch.float32: jnp.float32,
        torch.float64: jnp.float64,
    }
    if torch_dtype not in table:
        raise ValueError(f"from_torch: unsupported parameter dtype {torch_dtype}")
    dtype = table[torch_dtype]
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        warnings.warn(
            "from_torch: the module is float64 but jax_enable_x64 is off; params will be float32",
            stacklevel=3,
        )
        dtype = jnp.float32
    return dtype


def _to_jax(tensor, dtype):
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through float32 (exact)
        t = t.float()
    return jnp.asarray(t.numpy(), dtype=dtype)


def _make_cell(mode: str, hidden_size: int, dtype, proj_size: int = 0) -> Cell:
    if mode == "LSTM":
        return _cells.lstm(hidden_size, proj_size=proj_size or None, param_dtype=dtype)
    if mode == "GRU":
        return _cells.gru(hidden_size, reset_after=True, param_dtype=dtype)
    activation = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[mode]
    return _cells.simple_rnn(hidden_size, activation, param_dtype=dtype)


def _layer_params(module, mode: str, layer: int, suffix: str, dtype, has_bias: bool, proj_size: int = 0):
    """One direction of one torch layer as scanrnn cell params."""
    w_ih = _to_jax(getattr(module, f"weight_ih_l{layer}{suffix}"), dtype)
    w_hh = _to_jax(getattr(module, f"weight_hh_l{layer}{suffix}"), dtype)
    if has_bias:
        b_ih = _to_jax(getattr(module, f"bias_ih_l{layer}{suffix}"), dtype)
        b_hh = _to_jax(getattr(module, f"bias_hh_l{layer}{suffix}"), dtype)
    else:
        b_ih = b_hh = jnp.zeros((w_ih.shape[0],), dtype)
    if mode == "GRU":
        return _cells.GRUParams(w_ih, w_hh, b_ih, b_hh)
    if proj_size:
        w_hr = _to_jax(getattr(module, f"weight_hr_l{layer}{suffix}"), dtype)
        return _cells.ProjectedLSTMParams(w_ih, w_hh, b_ih + b_hh, w_hr)
    cls = _cells.LSTMParams if mode == "LSTM" else _cells.RNNParams
    return cls(w_ih, w_hh, b_ih + b_hh)


def _config(module):
    """``(mode, num_layers, hidden_size, directions, batch_first, bias, dtype, proj_size)`` of an accepted module."""
    import torch

    nn = torch.nn
    if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
        raise ValueError(f"from_torch accepts {ACCEPTED}, got {type(module).__name__}")
    mode = module.mode
    proj_size = int(getattr(module, "proj_size", 0)) if mode == "LSTM" else 0
    dtype = _jax_dtype(module.weight_ih_l0.dtype)
    D = 2 if module.bidirectional else 1
    return (mode, int(module.num_layers), int(module.hidden_size), D, bool(module.batch_first), bool(module.bias),
            dtype, proj_size)


def _model(mode: str, num_layers: int, hidden_size: int, directions: int, dtype, execution=None,
           proj_size: int = 0) -> Layer:
    cell = _make_cell(mode, hidden_size, dtype, proj_size)
    layer = recurrent(cell, execution=execution) if directions == 1 else bidirectional(cell, execution=execution)
    return serial(*([layer] * num_layers))


def from_torch(module, *, execution=None) -> tuple[Layer, tuple]:
    """Convert a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` to an ordinary scanrnn ``(model, params)``.

    Any ``num_layers`` and ``bidirectional``; ``bias=False`` gives zero
    biases; the RNN's ``nonlinearity`` (``"tanh"`` or ``"relu"``) selects
    :func:`scanrnn.simple_rnn`'s activation; an LSTM's ``proj_size`` gives
    ``lstm(hidden_size, proj_size=...)``. Dropout is ignored: the model matches the module in
    eval mode. ``batch_first`` concerns only :func:`torch_forward`.
    ``execution`` (a :class:`scanrnn.Execution`) is given to every layer:
    ``Execution(cudnn=True)`` runs an LSTM's layers through cuDNN on a GPU,
    as PyTorch does (:mod:`scanrnn.cudnn`).

    Returns:
      ``model``: ``serial(recurrent(cell), ...)`` (``bidirectional(cell)``
      for a bidirectional module, whose outputs are the two directions
      concatenated, forward first), one layer per torch layer: a
      :class:`scanrnn.Layer` over ONE sequence, ``model.apply(params, xs [T,
      I], length=None, *, carry=None)``, as every scanrnn model.

      ``params``: a tuple with one entry per layer: the cell's params, or
      for a bidirectional layer the same NamedTuple with each leaf stacked on
      a leading axis of 2 (forward, reverse).

    Example::

        import torch, jax, jax.numpy as jnp
        from scanrnn.interop import from_torch, torch_forward

        module = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
        model, params = from_torch(module)
        x = jnp.ones((3, 7, 5))                                # [B, T, I]
        ys = model.apply(params, x[1], length=4)               # one sequence: [7, 12]
        out, (h_n, c_n) = torch_forward(module)(params, x, length=jnp.array([7, 4, 2]))
        out.shape, h_n.shape                                   # (3, 7, 12), (4, 3, 6); out[1] == ys
    """
    mode, num_layers, H, D, _, has_bias, dtype, P = _config(module)
    params = []
    for k in range(num_layers):
        directions = [_layer_params(module, mode, k, s, dtype, has_bias, P) for s in ["", "_reverse"][:D]]
        if D == 1:
            params.append(directions[0])
        else:
            params.append(jax.tree.map(lambda f, r: jnp.stack([f, r]), *directions))
    return _model(mode, num_layers, H, D, dtype, execution, P), tuple(params)


def torch_forward(module, *, execution=None):
    """The module's ``forward`` on the params of :func:`from_torch`: ``(params, x, hx=None, length=None)``.

    A thin adapter over the model :func:`from_torch` returns, for code that
    speaks torch's layouts (see the module docstring): it moves the batch
    and the stacked states into and out of that model's one-sequence
    calls. It returns ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the
    LSTM; ``length`` plays the part of ``pack_padded_sequence``.
    ``execution`` is :func:`from_torch`'s.
    """
    mode, num_layers, H, D, batch_first, _, dtype, P = _config(module)
    model = _model(mode, num_layers, H, D, dtype, execution, P)
    is_lstm = mode == "LSTM"
    carry_cls = _cells.LSTMCarry if is_lstm else _cells.RNNCarry

    def check_params(params):
        if not isinstance(params, (tuple, list)) or len(params) != num_layers:
            given = (
                f"a {type(params).__name__} of {len(params)}"
                if isinstance(params, (tuple, list))
                else type(params).__name__
            )
            raise ValueError(f"model of {num_layers} layers expects a tuple of {num_layers} params, got {given}")
        w_ih = getattr(params[0], "w_ih", None)
        if w_ih is None or jnp.ndim(w_ih) != (2 if D == 1 else 3):
            raise ValueError(
                "params[0] must be cell params with w_ih of shape "
                f"{'[G*H, I]' if D == 1 else '[2, G*H, I]'}, got {type(params[0]).__name__} "
                f"with w_ih shape {jnp.shape(w_ih) if w_ih is not None else None}"
            )
        return int(jnp.shape(w_ih)[-1]), jnp.result_type(w_ih)

    def layout(batched):
        if not batched:
            return "[T, I]"
        return "[B, T, I]" if batch_first else "[T, B, I]"

    def run_one(params, x, n, h0):
        """One example: x [T, I], n scalar or None, h0 None or a carry with leaves [L*D, H]."""
        if h0 is None:
            carry = model.initial_carry(params)
        else:  # rows k*D .. (k+1)*D - 1 are layer k's
            carry = tuple(
                jax.tree.map(lambda a: a[k] if D == 1 else a[k * D : (k + 1) * D], h0) for k in range(num_layers)
            )
        ys, finals = model.apply(params, x, n, carry=carry)
        finals = [jax.tree.map(lambda a: a[None], f) if D == 1 else f for f in finals]
        return ys, jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *finals)

    def forward(params, x, hx=None, length=None):
        in_size, dtype = check_params(params)
        x = jnp.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x must have shape {layout(True)} or unbatched [T, I] with I={in_size}, got shape {x.shape}"
            )
        batched = x.ndim == 3
        if x.shape[-1] != in_size:
            raise ValueError(
                f"x must have shape {layout(batched)} with I={in_size} (the input size of params), "
                f"got shape {x.shape}"
            )
        x = x.astype(dtype)
        if batched and not batch_first:
            x = jnp.swapaxes(x, 0, 1)  # [B, T, I]
        if not batched:
            x = x[None]
        B, T = x.shape[0], x.shape[1]

        if length is not None:
            if batched:
                length = check_lengths(length, B, T)
            else:
                length = check_length(length, T)[None]

        h0 = None
        if hx is not None:
            lead = (num_layers * D, B) if batched else (num_layers * D,)
            if is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError(f"hx of an LSTM must be a pair (h_0, c_0), got {type(hx).__name__}")
                parts = [jnp.asarray(a) for a in hx]
                names = ["h_0", "c_0"]
            else:
                if isinstance(hx, (tuple, list)):
                    raise ValueError(f"hx of an {mode.split('_')[0]} must be one array h_0, got a {type(hx).__name__}")
                parts = [jnp.asarray(hx)]
                names = ["h_0"]
            for name, a in zip(names, parts):
                size, letter = (P, "P") if P and name == "h_0" else (H, "H")
                state_shape = lead + (size,)
                if a.shape != state_shape:
                    raise ValueError(
                        f"{name} must have shape {list(state_shape)} "
                        f"({f'[L*D, B, {letter}]' if batched else f'[L*D, {letter}]'}), got shape {a.shape}"
                    )
            parts = [a.astype(dtype) for a in parts]
            parts = [jnp.swapaxes(a, 0, 1) if batched else a[None] for a in parts]  # [B, L*D, H]
            h0 = carry_cls(*parts)

        output, final = jax.vmap(
            run_one, in_axes=(None, 0, None if length is None else 0, None if h0 is None else 0)
        )(params, x, length, h0)
        # output [B, T, D*H]; final leaves [B, L*D, H]
        if batched:
            if not batch_first:
                output = jnp.swapaxes(output, 0, 1)
            final = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), final)
        else:
            output = output[0]
            final = jax.tree.map(lambda a: a[0], final)
        if is_lstm:
            return output, (final.h, final.c)
        return output, final.h

    return forward


_TORCH_KINDS = {
    _cells.RNNParams: "RNN",
    _cells.LSTMParams: "LSTM",
    _cells.ProjectedLSTMParams: "LSTM with proj_size",
    _cells.GRUParams: "GRU",
}


def _torch_layout(params):
    """``(kind, num_layers, input_size, hidden_size, directions, dtype, proj_size)`` of a stack's params.

    A ValueError, naming the layer, for anything :func:`to_torch` cannot build.
    """
    if type(params) not in (tuple, list) or not params:
        raise ValueError(
            "to_torch expects the params of a serial model, a tuple with one entry per layer, "
            f"got {type(params).__name__}"
        )
    kinds = {}
    for k, p in enumerate(params):
        if type(p) not in _TORCH_KINDS:
            hint = " (a layer with learn_initial_carry=True: torch's modules start from zeros or a given h_0)" \
                if type(p).__name__ == "RecurrentParams" else ""
            raise ValueError(
                f"to_torch converts stacks of recurrent or bidirectional simple_rnn, lstm (no peepholes; with or "
                f"without proj_size) and gru layers; layer {k} has params of type {type(p).__name__}{hint}"
            )
        kinds[k] = _TORCH_KINDS[type(p)]
    if len(set(kinds.values())) != 1:
        raise ValueError(f"to_torch: every layer must be of one kind (torch has one per module), got {kinds}")
    first = params[0]
    directions = 2 if jnp.ndim(first.w_ih) == 3 else 1
    gates = {"RNN": 1, "LSTM": 4, "LSTM with proj_size": 4, "GRU": 3}[kinds[0]]
    hidden = int(jnp.shape(first.w_hh)[-2]) // gates
    state = int(jnp.shape(first.w_hh)[-1])  # what the recurrent product reads: H, or P with a projection
    proj_size = state if kinds[0] == "LSTM with proj_size" else 0
    dtype = jnp.result_type(first.w_ih)
    for k, p in enumerate(params):
        expected_in = int(jnp.shape(first.w_ih)[-1]) if k == 0 else directions * state
        lead = (2,) if directions == 2 else ()
        shapes = {"w_ih": lead + (gates * hidden, expected_in), "w_hh": lead + (gates * hidden, state)}
        if proj_size:
            shapes["w_hr"] = lead + (proj_size, hidden)
        for field, shape in shapes.items():
            if jnp.shape(getattr(p, field)) != shape:
                raise ValueError(
                    f"to_torch: layer {k}'s {field} must have shape {shape} (every layer of one module has the "
                    f"same hidden size, proj_size and directions), got {jnp.shape(getattr(p, field))}"
                )
        for field in p._fields:
            if jnp.result_type(getattr(p, field)) != dtype:
                raise ValueError(f"to_torch: every param must have the dtype {dtype}; layer {k}'s {field} does not")
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"to_torch: params must be float32 or float64, got {dtype}")
    return kinds[0].split()[0], len(params), int(jnp.shape(first.w_ih)[-1]), hidden, directions, dtype, proj_size


def _build_torch(kind, num_layers, input_size, hidden, directions, dtype, proj_size, params, batch_first,
                 nonlinearity):
    import numpy as np
    import torch

    torch_dtype = torch.float64 if dtype == jnp.dtype(jnp.float64) else torch.float32
    options = dict(num_layers=num_layers, bidirectional=directions == 2, batch_first=batch_first, dtype=torch_dtype)
    if kind == "RNN":
        module = torch.nn.RNN(input_size, hidden, nonlinearity=nonlinearity, **options)
    elif proj_size:
        module = torch.nn.LSTM(input_size, hidden, proj_size=proj_size, **options)
    else:
        module = getattr(torch.nn, kind)(input_size, hidden, **options)
    tensor = lambda a: torch.from_numpy(np.array(a, dtype=np.float64 if torch_dtype == torch.float64 else np.float32))  # noqa: E731
    with torch.no_grad():
        for k, p in enumerate(params):
            for d, suffix in enumerate(["", "_reverse"][:directions]):
                one = jax.tree.map(lambda a: a[d], p) if directions == 2 else p
                getattr(module, f"weight_ih_l{k}{suffix}").copy_(tensor(one.w_ih))
                getattr(module, f"weight_hh_l{k}{suffix}").copy_(tensor(one.w_hh))
                if kind == "GRU":
                    b_ih, b_hh = one.b_ih, one.b_hh
                else:  # one bias in scanrnn: torch's input bias takes it, its recurrent bias is zero
                    b_ih, b_hh = one.b, jnp.zeros_like(one.b)
                getattr(module, f"bias_ih_l{k}{suffix}").copy_(tensor(b_ih))
                getattr(module, f"bias_hh_l{k}{suffix}").copy_(tensor(b_hh))
                if proj_size:
                    getattr(module, f"weight_hr_l{k}{suffix}").copy_(tensor(one.w_hr))
    return module.eval()


def to_torch(model: Layer, params, *, batch_first: bool = False, check: bool = True):
    """A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (eval mode) computing what ``model`` computes with ``params``.

    The inverse of :func:`from_torch`, for a :func:`scanrnn.serial` stack of
    :func:`scanrnn.recurrent` or :func:`scanrnn.bidirectional` layers (all
    one way or all both ways, one hidden size) of one kind of cell:
    :func:`scanrnn.simple_rnn` (``tanh`` or ``relu``), :func:`scanrnn.lstm`
    without peepholes (with or without ``proj_size``, which becomes the
    module's), or :func:`scanrnn.gru` in its ``reset_after=True``
    form (torch's), each layer returning its sequence, as
    :func:`from_torch` produces them. Weights are copied unchanged (the
    module docstring's table); scanrnn's one bias of the RNN and LSTM goes to
    ``bias_ih``, with ``bias_hh`` zero. So ``from_torch(to_torch(model,
    params))`` gives back ``params`` exactly, and a module through
    ``from_torch`` and back keeps its weights and the sums of its biases.

    The params say the kind, sizes and directions; what they cannot say (the
    simple RNN's activation, the GRU's form, what else the model does) is
    checked by running both on one random sequence (``check=True``): the
    activation whose outputs match is kept, and outputs that match under
    neither raise a ValueError. ``check=False`` builds the module without
    running anything (a simple RNN then gets ``tanh``). ``batch_first`` is
    the module's.

    Raises:
      ValueError: params of another structure (a dense layer, peepholes,
          layer normalisation, ``learn_initial_carry``, layers of different
          kinds, sizes or directions), or a model whose outputs the module does
          not reproduce.
    """
    import numpy as np
    import torch

    _checks.layer("to_torch: model", model)
    kind, num_layers, input_size, hidden, directions, dtype, proj_size = _torch_layout(params)
    candidates = ["tanh", "relu"] if kind == "RNN" else [None]
    if not check:
        return _build_torch(kind, num_layers, input_size, hidden, directions, dtype, proj_size, params,
                            batch_first, candidates[0])
    probe = np.random.default_rng(0).normal(size=(5, input_size)).astype(np.dtype(dtype.name))
    want = np.asarray(model.apply(params, jnp.asarray(probe)))
    tolerance = 1e-4 if dtype == jnp.dtype(jnp.float32) else 1e-10
    gaps = {}
    for nonlinearity in candidates:
        module = _build_torch(kind, num_layers, input_size, hidden, directions, dtype, proj_size, params,
                              batch_first, nonlinearity)
        with torch.no_grad():
            x = torch.from_numpy(probe)[None] if batch_first else torch.from_numpy(probe)[:, None]
            got = module(x)[0].numpy()
        got = got[0] if batch_first else got[:, 0]
        if got.shape != want.shape:
            raise ValueError(
                f"to_torch: the model gives outputs of shape {want.shape} for a sequence of 5 steps, the torch "
                f"module {got.shape}; every layer must return its sequence"
            )
        gaps[nonlinearity] = float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
        if gaps[nonlinearity] <= tolerance:
            return module
    what = {"RNN": "simple_rnn with tanh or relu", "LSTM": "lstm without peepholes",
            "GRU": "gru(reset_after=True)"}[kind]
    raise ValueError(
        f"to_torch: the torch.nn.{kind} built from these params does not reproduce the model (largest relative "
        f"difference {min(gaps.values()):.2e} on a probe sequence); it converts {what} layers, as from_torch "
        "gives them"
    )

