r"""Backpropagation through time written out by hand, as reverse :func:`jax.lax.scan`\ s: a teaching reference.

The library's models get their gradients from :func:`jax.grad` through the
forward scan, or from the backward pass of a :class:`scanrnn.GatedCell`
(``scanrnn._gated_backward``, ``Execution(backward="hand")``). This module
computes the same gradients by hand, following the first seed's derivation
line by line, so that the algorithm can be read (and checked against
:func:`jax.grad`, which the tests do to 1e-6 in float64).

The first seed's network
------------------------

Layers :math:`l = 1, \dots, L` of simple recurrent units read the sequence
:math:`x^1, \dots, x^N`, with :math:`h_0^n = x^n` and :math:`h_l^0 = 0`:

.. math::
    z_l^n = W_l h_{l-1}^n + W_{hh,l} h_l^{n-1} + b_l, \qquad h_l^n = \phi(z_l^n),

and a linear many-to-one output reads the top layer at the last step,
:math:`p = W_{out} h_L^N + b_{out}`, with the squared error
:math:`C = \frac{1}{F} \sum_k (p_k - y_k)^2` (for one output, ``F = 1``, the
seed's :math:`(p - y)^2`; it is :func:`scanrnn.train.mse` of one example).

The backward pass carries two error signals: :math:`{}_S\delta_l^n` in
*space* (from layer :math:`l` down to layer :math:`l - 1` at step
:math:`n`) and :math:`{}_T\delta_l^n` in *time* (from step :math:`n` back
to step :math:`n - 1` in layer :math:`l`). The output layer starts them:

.. math::
    u_{out} = \nabla_p C = \tfrac{2}{F}(p - y), \qquad
    \nabla W_{out} = u_{out} \otimes h_L^N, \qquad \nabla b_{out} = u_{out},

    {}_S\delta_{L+1}^N = W_{out}^T u_{out}, \qquad {}_S\delta_{L+1}^n = 0 \;(n < N),
    \qquad {}_T\delta_l^{N+1} = 0.

Then, for each layer going down and each step going back:

.. math::
    \delta_l^n &= {}_S\delta_{l+1}^n + {}_T\delta_l^{n+1}
        &\text{(total error signal)} \\
    u_l^n &= \delta_l^n \odot \phi'(z_l^n)
        &\text{(update factor)} \\
    \nabla W_l \mathrel{+}= u_l^n \otimes h_{l-1}^n, \quad
    \nabla W_{hh,l} &\mathrel{+}= u_l^n \otimes h_l^{n-1}, \quad
    \nabla b_l \mathrel{+}= u_l^n \\
    {}_S\delta_l^n &= W_l^T u_l^n, \qquad {}_T\delta_l^n = W_{hh,l}^T u_l^n.

:math:`\phi'` is read off the activation itself, as the seed does:
:math:`\sigma' = h(1 - h)`, :math:`\tanh' = 1 - h^2`, :math:`\mathrm{relu}' = [h > 0]`.
One layer's reverse scan over the steps is :func:`simple_rnn_layer_bptt`;
:func:`simple_rnn_bptt` runs it layer after layer for the whole model,
with the layers outermost and the steps innermost, as in the seed's loops.

Where the seed's own code differs from its equations: its
``RecurrentSigmoidLayer.forward`` leaves the bias out of :math:`z` (the
``+ self.b`` is commented out) while ``backward``/``update`` still change
``b``, so the hidden biases it trains never act; its initial hidden state
:math:`h_l^0` is a uniform random draw made once, not zeros; and its output
layer is linear (no activation), so the output's update factor is the cost's
derivative alone. This module builds what the equations mean: the bias is in
the forward pass (the library cell's ``b``) and its gradient is the sum of
the update factors, the initial state is zeros (or a given carry), and the
output is linear.

Gated cells
-----------

:func:`lstm_layer_bptt` and :func:`gru_layer_bptt` do the same for one layer
of the library's :func:`scanrnn.lstm` (with or without peepholes) and
:func:`scanrnn.gru` (both forms) over one sequence: given the upstream
cotangents :math:`\partial L / \partial y_t` of every output and of the final
carry, a reverse scan over the gate equations returns the gradients with
respect to the params, the initial carry and the inputs. The equations are
in each function's docstring.

Every function here is pure and takes ONE sequence; ``jax.jit`` and
``jax.vmap`` apply as to the rest of the library. Lengths (padding masks)
and reversed reading are not supported.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from . import cells as _cells
from .layers import DenseParams
from .unroll import _check_carry, check_sequence

__all__ = [
    "DERIVATIVES",
    "BPTTGrads",
    "simple_rnn_layer_bptt",
    "simple_rnn_bptt",
    "lstm_layer_bptt",
    "gru_layer_bptt",
]

Array = jax.Array

# phi'(z) written in terms of h = phi(z), as the seed's ``h * (1 - h)``.
DERIVATIVES = {
    "sigmoid": lambda h: h * (1.0 - h),
    "tanh": lambda h: 1.0 - h * h,
    "relu": lambda h: (h > 0).astype(h.dtype),
}


class BPTTGrads(NamedTuple):
    """Gradients of a scalar loss through one recurrent layer over one sequence."""

    params: Any  # like the layer's params
    carry: Any  # like the initial carry: dL / d carry_0
    xs: Array  # [T, I]: dL / dx_t, the space signal passed to the layer below


# --------------------------------------------------------------------------
# Checks, shared by the three cells.


def _activation(activation: str):
    if activation not in DERIVATIVES:
        raise ValueError(f"activation must be one of {sorted(DERIVATIVES)}, got {activation!r}")
    return _cells.ACTIVATIONS[activation], DERIVATIVES[activation]


def _library_cell(name: str, params, classes, make):
    """The library cell matching ``params``; its ``initial_carry`` checks their shapes."""
    if not isinstance(params, classes):
        expected = " or ".join(c.__name__ for c in classes)
        raise ValueError(f"{name} expects params of type {expected}, got {type(params).__name__}")
    w_hh = jnp.shape(params.w_hh)
    if len(w_hh) != 2:
        raise ValueError(f"{name}: params.w_hh must have rank 2, got shape {w_hh}")
    cell = make(w_hh[1])
    cell.initial_carry(params)  # raises a ValueError naming any wrong shape
    return cell


def _check_inputs(name: str, cell, params, xs, dys, carry, dcarry):
    """Validate one layer's inputs and fill in zero carries; returns ``(xs, carry, dcarry)``."""
    xs = check_sequence(xs)
    if xs.shape[0] < 1:
        raise ValueError(f"{name}: xs must have at least one step, got shape {xs.shape}")
    jax.eval_shape(cell.project, params, xs[0])  # the input size and dtype of the params
    zero = cell.initial_carry(params)
    hidden = zero[0].shape[0]
    expected = (xs.shape[0], hidden)
    if jnp.shape(dys) != expected:
        raise ValueError(f"{name}: dys must have shape {expected} (one cotangent per output), got {jnp.shape(dys)}")
    if jnp.result_type(dys) != params.w_hh.dtype:
        raise ValueError(f"{name}: dys must have the params' dtype {params.w_hh.dtype}, got {jnp.result_type(dys)}")
    if carry is None:
        carry = zero
    else:
        _check_carry(cell, params, carry)
    if dcarry is None:
        dcarry = jax.tree.map(jnp.zeros_like, zero)
    else:
        _check_carry(cell, params, dcarry)
    return xs, carry, dcarry


def _projection(w_ih: Array, b: Array, xs: Array) -> Array:
    """``W x_t + b`` for every step at once: ``[T, G]``."""
    return xs @ w_ih.T + b[None, :]


def _previous(first: Array, values: Array) -> Array:
    """``values`` shifted one step later in time, ``first`` at step 0: the ``[T, H]`` of ``h^{n-1}``."""
    return jnp.concatenate([first[None, :], values[:-1]], axis=0)


def _add(total, step):
    return jax.tree.map(jnp.add, total, step)


# --------------------------------------------------------------------------
# The simple recurrent cell and the seed's many-to-one model.


def _rnn_forward(params: _cells.RNNParams, xs: Array, h0: Array, phi) -> Array:
    """The outputs ``h^n = phi(W x^n + W_hh h^{n-1} + b)`` of every step, ``[T, H]``."""

    def step(h, p):
        h = phi(p + params.w_hh @ h)
        return h, h

    _, hs = lax.scan(step, h0, _projection(params.w_ih, params.b, xs))
    return hs


def _rnn_backward(params: _cells.RNNParams, xs, h0, hs, space_above, time_last, dphi) -> BPTTGrads:
    """The seed's per-layer backward loop as one reverse scan over the steps.

    ``space_above [T, H]`` is the space signal from the layer above at every
    step and ``time_last [H]`` the time signal into the last step.
    """

    def step(carry, inputs):
        time_signal, grads = carry  # time_signal: T-delta from step n+1
        space_signal, x, h, h_before = inputs  # S-delta from layer l+1, h_{l-1}^n, h_l^n, h_l^{n-1}
        delta = space_signal + time_signal  # total error signal
        update = delta * dphi(h)  # update factor
        grads = _add(grads, _cells.RNNParams(jnp.outer(update, x), jnp.outer(update, h_before), update))
        space_below = params.w_ih.T @ update  # S-delta passed to layer l-1 at step n
        time_before = params.w_hh.T @ update  # T-delta passed to step n-1
        return (time_before, grads), space_below

    zeros = jax.tree.map(jnp.zeros_like, params)
    inputs = (space_above, xs, hs, _previous(h0, hs))
    (dh0, grads), dxs = lax.scan(step, (time_last, zeros), inputs, reverse=True)
    return BPTTGrads(grads, _cells.RNNCarry(dh0), dxs)


def simple_rnn_layer_bptt(
    params: _cells.RNNParams, xs, dys, carry=None, dcarry=None, *, activation: str = "tanh"
):
    r"""One layer of :func:`scanrnn.simple_rnn` over one sequence, its backward pass by hand.

    Forward (the library cell): :math:`h_t = \phi(W x_t + W_{hh} h_{t-1} + b)`,
    :math:`y_t = h_t`. Backward, for :math:`t = T, \dots, 1` (module
    docstring): :math:`\delta_t = \bar y_t + {}_T\delta_{t+1}` with
    :math:`{}_T\delta_{T+1} = \bar h_T` (the final carry's cotangent),
    :math:`u_t = \delta_t \odot \phi'(z_t)`,
    :math:`\bar W \mathrel{+}= u_t \otimes x_t`,
    :math:`\bar W_{hh} \mathrel{+}= u_t \otimes h_{t-1}`, :math:`\bar b \mathrel{+}= u_t`,
    :math:`\bar x_t = W^T u_t`, :math:`{}_T\delta_t = W_{hh}^T u_t`, and
    :math:`\bar h_0 = {}_T\delta_1`.

    Args:
      params: :class:`scanrnn.RNNParams` ``w_ih [H, I]``, ``w_hh [H, H]``, ``b [H]``.
      xs: ``[T, I]``, one sequence (``T >= 1``), of the params' dtype.
      dys: ``[T, H]``, the cotangent of every output ``y_t``.
      carry: the initial :class:`scanrnn.RNNCarry`; zeros when ``None``.
      dcarry: the cotangent of the final carry; zeros when ``None``.
      activation: the cell's ``"tanh"``, ``"sigmoid"`` or ``"relu"``.

    Returns:
      ``((final_carry, ys), grads)``: the forward pass as :func:`scanrnn.unroll`
      returns it, and :class:`BPTTGrads` ``(params, carry, xs)``. They equal
      ``jax.vjp`` of ``unroll`` applied to ``(dcarry, dys)``.

    >>> from scanrnn import simple_rnn
    >>> params = simple_rnn(3).init(jax.random.key(0), 2)
    >>> (carry, ys), grads = simple_rnn_layer_bptt(params, jnp.ones((4, 2)), jnp.ones((4, 3)))
    >>> grads.params.w_hh.shape, grads.xs.shape
    ((3, 3), (4, 2))
    """
    phi, dphi = _activation(activation)
    name = "simple_rnn_layer_bptt"
    cell = _library_cell(name, params, (_cells.RNNParams,), lambda h: _cells.simple_rnn(h, activation))
    xs, carry, dcarry = _check_inputs(name, cell, params, xs, dys, carry, dcarry)
    hs = _rnn_forward(params, xs, carry.h, phi)
    grads = _rnn_backward(params, xs, carry.h, hs, dys, dcarry.h, dphi)
    return (_cells.RNNCarry(hs[-1]), hs), grads


def simple_rnn_bptt(params, xs, target, activation: Union[str, Sequence[str]] = "sigmoid"):
    r"""Loss and gradients of the first seed's many-to-one network, by hand.

    The model is ``serial(recurrent(simple_rnn(H_1, act)), ...,
    recurrent(simple_rnn(H_L, act), return_sequences=False), dense(F))``
    and its params are exactly that model's: a tuple of ``L``
    :class:`scanrnn.RNNParams` followed by one :class:`scanrnn.DenseParams`.
    The loss of one example is the squared error
    :math:`C = \frac{1}{F}\sum_k (p_k - y_k)^2`, i.e.
    ``scanrnn.train.mse(model.apply(params, xs), target)`` (the seed's
    :math:`(p - y)^2` for ``F = 1``). The backward pass is the seed's, in the
    module docstring: the output layer sends the space signal
    :math:`W_{out}^T u_{out}` into the top layer at the last step, and each
    layer's reverse scan (:func:`simple_rnn_layer_bptt`'s) passes its space
    signal :math:`W_l^T u_l^n` down to the layer below.

    Args:
      params: ``(RNNParams, ..., RNNParams, DenseParams)``; layer ``l`` has
        ``w_ih [H_l, H_{l-1}]`` (``H_0 = I``), the dense layer ``w [F, H_L]``.
      xs: ``[T, I]``, one sequence (``T >= 1``), of the params' dtype.
      target: ``[F]``.
      activation: the recurrent layers' activation (``"sigmoid"``, the
        seed's, ``"tanh"`` or ``"relu"``), one name or one per layer.

    Returns:
      ``(loss, grads)`` with ``grads`` a tuple of the same structure as
      ``params``: a drop-in for ``jax.value_and_grad`` of the same loss.

    >>> from scanrnn import serial, recurrent, simple_rnn, dense
    >>> model = serial(recurrent(simple_rnn(6, "sigmoid")),
    ...                recurrent(simple_rnn(4, "sigmoid"), return_sequences=False), dense(1))
    >>> params = model.init(jax.random.key(0), 1)
    >>> loss, grads = simple_rnn_bptt(params, jnp.ones((7, 1)), jnp.array([3.0]))
    >>> jax.tree.structure(grads) == jax.tree.structure(params)
    True
    """
    if type(params) not in (tuple, list) or len(params) < 2:
        raise ValueError(
            "simple_rnn_bptt expects params (RNNParams, ..., RNNParams, DenseParams) of serial, "
            f"got {type(params).__name__}"
        )
    *layers, out = params
    num_layers = len(layers)
    if not isinstance(out, DenseParams):
        raise ValueError(f"simple_rnn_bptt: the last params must be DenseParams, got {type(out).__name__}")
    activations = (activation,) * num_layers if isinstance(activation, str) else tuple(activation)
    if len(activations) != num_layers:
        raise ValueError(
            f"simple_rnn_bptt: activation must be one name or {num_layers} names (one per layer), "
            f"got {len(activations)}"
        )
    xs = check_sequence(xs)
    if xs.shape[0] < 1:
        raise ValueError(f"simple_rnn_bptt: xs must have at least one step, got shape {xs.shape}")
    for l, p in enumerate(layers):
        if not isinstance(p, _cells.RNNParams):
            raise ValueError(f"simple_rnn_bptt: params[{l}] must be RNNParams, got {type(p).__name__}")
    hidden = layers[-1].w_hh.shape[0]
    if out.w.ndim != 2 or out.w.shape[1] != hidden or out.b.shape != out.w.shape[:1]:
        raise ValueError(
            f"simple_rnn_bptt: the dense params must have w [F, {hidden}] and b [F], "
            f"got w {out.w.shape} and b {out.b.shape}"
        )
    target = jnp.asarray(target)
    if target.shape != out.b.shape:
        raise ValueError(f"simple_rnn_bptt: target must have shape {out.b.shape}, got {target.shape}")

    # Forward: the activations of every layer at every step, h_0 = x.
    derivatives, activity = [], [xs]
    for l, (p, name) in enumerate(zip(layers, activations)):
        phi, dphi = _activation(name)
        make = lambda h, name=name: _cells.simple_rnn(h, name)  # noqa: E731
        cell = _library_cell(f"simple_rnn_bptt: params[{l}]", p, (_cells.RNNParams,), make)
        jax.eval_shape(cell.project, p, activity[-1][0])  # input size and dtype match the layer below
        activity.append(_rnn_forward(p, activity[-1], jnp.zeros(p.b.shape, p.b.dtype), phi))
        derivatives.append(dphi)
    top = activity[-1][-1]  # h_L^N
    pred = out.w @ top + out.b
    err = pred - target
    loss = jnp.mean(err * err)

    # Output layer: no time. Its update factor is dC/dp (linear output).
    update = (2.0 / err.shape[0]) * err
    grads_out = DenseParams(jnp.outer(update, top), update)
    space = jnp.zeros_like(activity[-1]).at[-1].set(out.w.T @ update)  # S-delta into layer L

    # Each layer going down, each step going back (in its reverse scan).
    grads = []
    for l in reversed(range(num_layers)):
        p = layers[l]
        h0 = jnp.zeros(p.b.shape, p.b.dtype)
        g = _rnn_backward(p, activity[l], h0, activity[l + 1], space, jnp.zeros_like(h0), derivatives[l])
        grads.append(g.params)
        space = g.xs  # S-delta into layer l-1
    return loss, type(params)(grads[::-1] + [grads_out])


# --------------------------------------------------------------------------
# LSTM.


def lstm_layer_bptt(params, xs, dys, carry=None, dcarry=None):
    r"""One layer of :func:`scanrnn.lstm` over one sequence, its backward pass by hand.

    Forward (the library cell, gates stacked i, f, g, o; the bracketed
    peephole terms with :class:`scanrnn.PeepholeLSTMParams`), with
    :math:`a = W x_t + U h_{t-1} + b` split into :math:`a_i, a_f, a_g, a_o`:

    .. math::
        i &= \sigma(a_i \;[+\, p_i \odot c_{t-1}]), \quad
        f = \sigma(a_f \;[+\, p_f \odot c_{t-1}]), \quad g = \tanh(a_g), \\
        c_t &= f \odot c_{t-1} + i \odot g, \quad
        o = \sigma(a_o \;[+\, p_o \odot c_t]), \quad h_t = o \odot \tanh(c_t) = y_t.

    Backward, for :math:`t = T, \dots, 1`, starting from the final carry's
    cotangents :math:`(\bar h_{T+1}, \bar c_{T+1})`:

    .. math::
        \bar h &= \bar y_t + \bar h_{t+1} \quad\text{(space plus time)}, \qquad
        \bar a_o = \bar h \odot \tanh(c_t) \odot o(1 - o), \\
        \bar c &= \bar c_{t+1} + \bar h \odot o \odot (1 - \tanh^2 c_t)
            \;[+\, \bar a_o \odot p_o], \\
        \bar a_i &= \bar c \odot g \odot i(1 - i), \quad
        \bar a_f = \bar c \odot c_{t-1} \odot f(1 - f), \quad
        \bar a_g = \bar c \odot i \odot (1 - g^2), \\
        \bar c_t &\leftarrow \bar c \odot f \;[+\, \bar a_i \odot p_i + \bar a_f \odot p_f]
            \quad\text{(passed to step } t-1\text{)}, \\
        \bar W &\mathrel{+}= \bar a \otimes x_t, \quad \bar U \mathrel{+}= \bar a \otimes h_{t-1},
            \quad \bar b \mathrel{+}= \bar a, \quad
        \bar x_t = W^T \bar a, \quad \bar h_t \leftarrow U^T \bar a,

    with :math:`\bar a = (\bar a_i, \bar a_f, \bar a_g, \bar a_o)` and, with
    peepholes, :math:`\bar p_i \mathrel{+}= \bar a_i \odot c_{t-1}`,
    :math:`\bar p_f \mathrel{+}= \bar a_f \odot c_{t-1}`,
    :math:`\bar p_o \mathrel{+}= \bar a_o \odot c_t`.

    Args:
      params: :class:`scanrnn.LSTMParams` ``w_ih [4H, I]``, ``w_hh [4H, H]``,
        ``b [4H]`` (or :class:`scanrnn.PeepholeLSTMParams`, with ``w_ci,
        w_cf, w_co [H]``).
      xs: ``[T, I]``, one sequence (``T >= 1``), of the params' dtype.
      dys: ``[T, H]``, the cotangent of every output ``y_t``.
      carry: the initial :class:`scanrnn.LSTMCarry` ``(h, c)``; zeros when ``None``.
      dcarry: the cotangent of the final carry, an ``LSTMCarry``; zeros when ``None``.

    Returns:
      ``((final_carry, ys), grads)``: the forward pass as :func:`scanrnn.unroll`
      returns it, and :class:`BPTTGrads` ``(params, carry, xs)``, equal to
      ``jax.vjp`` of ``unroll`` applied to ``(dcarry, dys)``.
    """
    name = "lstm_layer_bptt"
    peephole = isinstance(params, _cells.PeepholeLSTMParams)
    classes = (_cells.LSTMParams, _cells.PeepholeLSTMParams)
    cell = _library_cell(name, params, classes, lambda h: _cells.lstm(h, peephole=peephole))
    xs, carry, dcarry = _check_inputs(name, cell, params, xs, dys, carry, dcarry)
    sigmoid = jax.nn.sigmoid

    def forward(state, a_x):
        h_prev, c_prev = state
        a_i, a_f, a_g, a_o = jnp.split(a_x + params.w_hh @ h_prev, 4)
        if peephole:
            a_i = a_i + params.w_ci * c_prev
            a_f = a_f + params.w_cf * c_prev
        i, f, g = sigmoid(a_i), sigmoid(a_f), jnp.tanh(a_g)
        c = f * c_prev + i * g
        if peephole:
            a_o = a_o + params.w_co * c
        o = sigmoid(a_o)
        h = o * jnp.tanh(c)
        return _cells.LSTMCarry(h, c), (h, c, i, f, g, o)

    final, (hs, cs, i_s, f_s, g_s, o_s) = lax.scan(forward, carry, _projection(params.w_ih, params.b, xs))

    def backward(state, inputs):
        (dh_next, dc_next), grads = state  # time signals from step t+1
        dy, x, h_prev, c_prev, c, i, f, g, o = inputs
        dh = dy + dh_next  # total signal on h_t: space (output) plus time
        tanh_c = jnp.tanh(c)
        da_o = dh * tanh_c * o * (1.0 - o)
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        if peephole:
            dc = dc + da_o * params.w_co
        da_i = dc * g * i * (1.0 - i)
        da_f = dc * c_prev * f * (1.0 - f)
        da_g = dc * i * (1.0 - g * g)
        dc_prev = dc * f
        if peephole:
            dc_prev = dc_prev + da_i * params.w_ci + da_f * params.w_cf
        da = jnp.concatenate([da_i, da_f, da_g, da_o])  # [4H] update factors of the gates
        step_grads = [jnp.outer(da, x), jnp.outer(da, h_prev), da]
        if peephole:
            step_grads += [da_i * c_prev, da_f * c_prev, da_o * c]
        grads = _add(grads, type(params)(*step_grads))
        dh_prev = params.w_hh.T @ da  # time signal to step t-1
        return (_cells.LSTMCarry(dh_prev, dc_prev), grads), params.w_ih.T @ da  # space signal to x_t

    zeros = jax.tree.map(jnp.zeros_like, params)
    inputs = (dys, xs, _previous(carry.h, hs), _previous(carry.c, cs), cs, i_s, f_s, g_s, o_s)
    (dcarry0, grads), dxs = lax.scan(backward, (dcarry, zeros), inputs, reverse=True)
    return (final, hs), BPTTGrads(grads, dcarry0, dxs)


# --------------------------------------------------------------------------
# GRU.


def gru_layer_bptt(params, xs, dys, carry=None, dcarry=None, *, reset_after: bool = True):
    r"""One layer of :func:`scanrnn.gru` over one sequence, its backward pass by hand.

    Forward (the library cell, gates stacked r, z, n), with
    :math:`(x_r, x_z, x_n) = W x_t + b_{ih}`:

    .. math::
        (h_r, h_z, h_n) &= U h_{t-1} + b_{hh}, \quad
        r = \sigma(x_r + h_r), \quad z = \sigma(x_z + h_z), \\
        n &= \tanh(x_n + r \odot h_n) \quad\text{(reset_after=True)}, \quad
        n = \tanh(x_n + U_n (r \odot h_{t-1}) + b_{hn}) \quad\text{(False)}, \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1} = y_t.

    Backward, for :math:`t = T, \dots, 1`, starting from the final carry's
    cotangent :math:`\bar h_{T+1}`:

    .. math::
        \bar h &= \bar y_t + \bar h_{t+1}, \quad
        \bar a_n = \bar h \odot (1 - z) \odot (1 - n^2), \quad
        \bar a_z = \bar h \odot (h_{t-1} - n) \odot z(1 - z), \\
        \bar a_r &= \bar r \odot r(1 - r), \quad\text{with}\quad
        \bar r = \bar a_n \odot h_n \;\text{(True)}, \quad
        \bar r = (U_n^T \bar a_n) \odot h_{t-1} \;\text{(False)}, \\
        \bar W &\mathrel{+}= \bar a \otimes x_t, \quad \bar b_{ih} \mathrel{+}= \bar a, \quad
        \bar x_t = W^T \bar a, \qquad \bar a = (\bar a_r, \bar a_z, \bar a_n).

    The recurrent side differs between the forms. ``reset_after=True``: with
    :math:`\bar a^h = (\bar a_r, \bar a_z, r \odot \bar a_n)`,
    :math:`\bar U \mathrel{+}= \bar a^h \otimes h_{t-1}`,
    :math:`\bar b_{hh} \mathrel{+}= \bar a^h` and the time signal
    :math:`\bar h_t \leftarrow \bar h \odot z + U^T \bar a^h`. ``False``:
    :math:`\bar U_{rz} \mathrel{+}= (\bar a_r, \bar a_z) \otimes h_{t-1}`,
    :math:`\bar U_n \mathrel{+}= \bar a_n \otimes (r \odot h_{t-1})`,
    :math:`\bar b_{hh} \mathrel{+}= \bar a`, and
    :math:`\bar h_t \leftarrow \bar h \odot z + U_{rz}^T (\bar a_r, \bar a_z)
    + r \odot U_n^T \bar a_n`.

    Args:
      params: :class:`scanrnn.GRUParams` ``w_ih [3H, I]``, ``w_hh [3H, H]``,
        ``b_ih [3H]``, ``b_hh [3H]``.
      xs: ``[T, I]``, one sequence (``T >= 1``), of the params' dtype.
      dys: ``[T, H]``, the cotangent of every output ``y_t``.
      carry: the initial :class:`scanrnn.RNNCarry`; zeros when ``None``.
      dcarry: the cotangent of the final carry; zeros when ``None``.
      reset_after: the cell's form, as in :func:`scanrnn.gru`.

    Returns:
      ``((final_carry, ys), grads)``: the forward pass as :func:`scanrnn.unroll`
      returns it, and :class:`BPTTGrads` ``(params, carry, xs)``, equal to
      ``jax.vjp`` of ``unroll`` applied to ``(dcarry, dys)``.
    """
    name = "gru_layer_bptt"
    cell = _library_cell(name, params, (_cells.GRUParams,), lambda h: _cells.gru(h, reset_after=reset_after))
    xs, carry, dcarry = _check_inputs(name, cell, params, xs, dys, carry, dcarry)
    H = params.w_hh.shape[1]
    w_rz, w_n = params.w_hh[: 2 * H], params.w_hh[2 * H :]
    sigmoid = jax.nn.sigmoid

    def forward(state, a_x):
        h_prev = state.h
        x_r, x_z, x_n = jnp.split(a_x, 3)
        h_r, h_z, h_n = jnp.split(params.w_hh @ h_prev + params.b_hh, 3)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        if reset_after:
            n = jnp.tanh(x_n + r * h_n)
        else:
            n = jnp.tanh(x_n + w_n @ (r * h_prev) + params.b_hh[2 * H :])
        h = (1.0 - z) * n + z * h_prev
        return _cells.RNNCarry(h), (h, r, z, n, h_n)

    final, (hs, rs, zs, ns, hns) = lax.scan(forward, carry, _projection(params.w_ih, params.b_ih, xs))

    def backward(state, inputs):
        (dh_next,), grads = state  # time signal from step t+1
        dy, x, h_prev, r, z, n, h_n = inputs
        dh = dy + dh_next  # total signal on h_t: space (output) plus time
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        da_z = dh * (h_prev - n) * z * (1.0 - z)
        dh_prev = dh * z  # through the gated copy z * h_{t-1}
        if reset_after:
            da_r = da_n * h_n * r * (1.0 - r)
            da_h = jnp.concatenate([da_r, da_z, r * da_n])  # cotangent of U h + b_hh
            dw_hh = jnp.outer(da_h, h_prev)
            dh_prev = dh_prev + params.w_hh.T @ da_h
        else:
            d_rh = w_n.T @ da_n  # cotangent of r * h_{t-1}
            da_r = d_rh * h_prev * r * (1.0 - r)
            da_rz = jnp.concatenate([da_r, da_z])
            da_h = jnp.concatenate([da_rz, da_n])
            dw_hh = jnp.concatenate([jnp.outer(da_rz, h_prev), jnp.outer(da_n, r * h_prev)])
            dh_prev = dh_prev + w_rz.T @ da_rz + r * d_rh
        da_x = jnp.concatenate([da_r, da_z, da_n])  # cotangent of W x + b_ih
        grads = _add(grads, _cells.GRUParams(jnp.outer(da_x, x), dw_hh, da_x, da_h))
        return (_cells.RNNCarry(dh_prev), grads), params.w_ih.T @ da_x  # space signal to x_t

    zeros = jax.tree.map(jnp.zeros_like, params)
    inputs = (dys, xs, _previous(carry.h, hs), rs, zs, ns, hns)
    (dcarry0, grads), dxs = lax.scan(backward, (dcarry, zeros), inputs, reverse=True)
    return (final, hs), BPTTGrads(grads, dcarry0, dxs)
