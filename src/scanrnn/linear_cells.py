r"""Cells whose recurrence is linear in the carry (:class:`scanrnn.LinearCell`): minGRU and minLSTM.

After Feng, Tung, Ahmed, Bengio and Hajimirsadeghi (2024), "Were RNNs All We
Needed?" (arXiv:2410.01201). Their gates read the input only, never the
previous hidden state, so every step is an affine map of the carry,

.. math::
    h_t = a_t \odot h_{t-1} + b_t, \qquad a_t \in (0, 1), \quad b_t > 0,

with ``a_t`` and ``b_t`` functions of ``x_t`` alone. Such a recurrence is an
associative scan over the pairs ``(a_t, b_t)`` (composition of affine maps,
Blelloch 1990), which needs ``O(log T)`` sequential steps instead of ``T``.

Both factories return a :class:`scanrnn.kinds.LinearCell` and take ``mode``
and ``chunk_size``:

- ``"sequential"`` (the default, measured the faster on a CPU; see
  BENCHMARKS.md): :func:`scanrnn.unroll` computes the projection of all
  steps, then scans ``h = a * h + b`` over them
  (:func:`scanrnn.linear_scans.evaluate`).
- ``"associative"``: the same with :func:`jax.lax.associative_scan` in log
  space.
- ``"chunked"``: chunks of ``chunk_size`` steps, the steps of all chunks
  run at once and the state handed from chunk to chunk
  (:func:`scanrnn.linear_scans.chunked_scan`), in linear space.

The three modes compute the same function (to rounding).

Regularisation (:mod:`scanrnn.regularization`): the cells have no recurrent
weights, so ``recurrent_dropout > 0`` is a ValueError. ``dropout`` masks the
inputs before the projection. Zoneout stays in the linear recurrence, in
every mode: a kept unit has ``a_t = 1, b_t = 0`` at that step, which the
associative mode evaluates by an associative scan in linear space
(:func:`scanrnn.linear_scans.linear_scan`; the logarithms of those exact zeros would be
infinite), and the expectation used without a key has
``a'_t = r + (1 - r) a_t``, ``b'_t = (1 - r) b_t``, which stays in log space.
The output is the state after zoneout.

The log-space coefficients follow the paper's ``parallel_scan_log``:
``log a_t`` and ``log b_t`` are computed from the gate pre-activations by
``softplus`` (never by ``log`` of a rounded sigmoid).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _checks
from .cells import Initializer, RNNCarry, _keys, checked_init, glorot_uniform, param_init, product, zeros
from .kinds import LinearCell, check_mode

__all__ = [
    "MinGRUParams",
    "MinLSTMParams",
    "g",
    "log_g",
    "min_gru",
    "min_lstm",
]

Array = jax.Array


class MinGRUParams(NamedTuple):
    """Params of :func:`min_gru`; rows stacked (z, h~)."""

    w_ih: Array  # [2H, I]
    b: Array  # [2H]


class MinLSTMParams(NamedTuple):
    """Params of :func:`min_lstm`; rows stacked (f, i, h~)."""

    w_ih: Array  # [3H, I]
    b: Array  # [3H]


# --------------------------------------------------------------------------
# The positive activation and the log-space pieces.


def g(x: Array) -> Array:
    """The paper's positive activation: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below.

    Continuous at 0 (both sides give 1/2) and positive everywhere, so the
    candidate state has a real logarithm.
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """``log(g(x))`` without forming ``g``: ``log(x + 1/2)`` or ``-softplus(-x)``.

    ``relu`` keeps the unused branch finite, so gradients through the
    ``where`` stay finite too.
    """
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


# --------------------------------------------------------------------------
# Assembly of a cell from its gate maths.


def _make_min_cell(
    name, hidden_size, mode, chunk_size, params_cls, gates, make_params, step_coefficients, log_coefficients,
    compute_dtype
):
    """A :class:`scanrnn.kinds.LinearCell` for ``h_t = a_t * h_{t-1} + b_t`` with input-only gates.

    ``step_coefficients(p) -> (a, b)`` and ``log_coefficients(p) -> (log a,
    log b)`` map the projection ``p [gates*H]`` of one step (or ``[T,
    gates*H]`` of all) to the coefficients; both are elementwise. The
    projection, the cell's one matrix product, runs in ``compute_dtype``
    (:func:`scanrnn.cells.product`); the recurrence stays in the params' dtype.
    """
    chunk_size = check_mode(mode, chunk_size, f"{name}:")
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    H = hidden_size

    def shapes(I):
        return {"w_ih": (gates * H, I), "b": (gates * H,)}

    def check(params):
        _checks.cell_params(name, params, params_cls, shapes)

    init = checked_init(make_params, check)

    def initial_carry(params):
        check(params)
        return RNNCarry(jnp.zeros((H,), params.w_ih.dtype))

    def project(params, x):
        check(params)
        _checks.example(name, x, params.w_ih)
        return product(x, params.w_ih, compute_dtype) + params.b

    def check_p(p):
        shape = tuple(jnp.shape(p))
        if shape != (gates * H,):
            raise ValueError(f"{name}: the projection of one step must have shape ({gates * H},) (from project), got {shape}")

    def coefficients(params, p):
        check_p(p)
        return step_coefficients(p)

    def logs(params, p):
        check_p(p)
        return log_coefficients(p)

    return LinearCell(init, initial_carry, project, coefficients, log_coefficients=logs, mode=mode,
                      chunk_size=chunk_size)


def _glorot_and_zeros(params_cls, rows, kernel_init, bias_init, param_dtype):
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, bias = param_init(kernel_init, param_dtype), param_init(bias_init, param_dtype)

    def make_params(key, input_size):
        k1, k2 = _keys(key, 2)
        return params_cls(w_ih=kernel(k1, (rows, input_size)), b=bias(k2, (rows,)))

    return make_params


# --------------------------------------------------------------------------
# The cells.


def min_gru(
    hidden_size: int,
    *,
    mode: str = "sequential",
    chunk_size: int = 128,
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""minGRU (Feng et al. 2024): a GRU whose gates read only the input.

    .. math::
        z_t &= \sigma(W_z x_t + b_z) \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t, \qquad y_t = h_t

    with the paper's positive activation :math:`g(v) = v + 1/2` for
    :math:`v \ge 0` and :math:`\sigma(v)` otherwise (:func:`g`). In log space
    (``mode="associative"``) :math:`\log(1 - z_t) = -\mathrm{softplus}(k)`,
    :math:`\log z_t = -\mathrm{softplus}(-k)` for the pre-activation
    :math:`k = W_z x_t + b_z`, and :math:`\log \tilde h_t` is :func:`log_g`.

    Params (:class:`MinGRUParams`): ``w_ih [2H, I]`` (rows ``z`` then
    ``h~``), ``b [2H]``; Glorot-uniform kernel, zero bias.
    Carry (:class:`scanrnn.RNNCarry`): ``h [H]``.

    Args:
      hidden_size: ``H``.
      mode: ``"sequential"`` (a scan of the step), ``"associative"`` (an
        associative scan over time) or ``"chunked"`` (chunks of
        ``chunk_size`` steps at once, see :class:`scanrnn.LinearCell`).
      chunk_size: the chunk length of ``mode="chunked"``.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the input
        projection in mixed precision, as for :func:`scanrnn.lstm`.

    >>> cell = min_gru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, params.w_ih.shape
    ((4,), (8, 3))
    """
    H = _checks.positive_int("hidden_size", hidden_size)

    def step_coefficients(p):
        k, v = jnp.split(p, 2, axis=-1)
        z = jax.nn.sigmoid(k)
        return 1 - z, z * g(v)

    def log_coefficients(p):
        k, v = jnp.split(p, 2, axis=-1)
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(v)

    make_params = _glorot_and_zeros(MinGRUParams, 2 * H, kernel_init, bias_init, param_dtype)
    return _make_min_cell("min_gru", H, mode, chunk_size, MinGRUParams, 2, make_params, step_coefficients, log_coefficients,
                          compute_dtype)


def min_lstm(
    hidden_size: int,
    *,
    mode: str = "sequential",
    chunk_size: int = 128,
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""minLSTM (Feng et al. 2024): an LSTM with input-only, normalised gates and no output gate.

    .. math::
        f_t &= \sigma(W_f x_t + b_f), \qquad i_t = \sigma(W_i x_t + b_i) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t, \qquad y_t = h_t

    The normalisation makes :math:`f'_t + i'_t = 1`, so the state does not
    grow with time. In log space (``mode="associative"``), with
    :math:`d = \mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i) = \log(i_t / f_t)`,
    :math:`\log f'_t = -\mathrm{softplus}(d)` and
    :math:`\log i'_t = -\mathrm{softplus}(-d)`; :math:`g` is as in
    :func:`min_gru`.

    Params (:class:`MinLSTMParams`): ``w_ih [3H, I]`` (rows ``f``, ``i``,
    ``h~``), ``b [3H]``; Glorot-uniform kernel, zero bias.
    Carry (:class:`scanrnn.RNNCarry`): ``h [H]`` (the state is the output,
    there is no separate cell state).

    Args:
      hidden_size: ``H``.
      mode, chunk_size: as in :func:`min_gru`.
      compute_dtype: as for :func:`min_gru`.

    >>> cell = min_lstm(4, mode="sequential")
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, params.w_ih.shape
    ((4,), (12, 3))
    """
    H = _checks.positive_int("hidden_size", hidden_size)

    def step_coefficients(p):
        kf, ki, v = jnp.split(p, 3, axis=-1)
        f, i = jax.nn.sigmoid(kf), jax.nn.sigmoid(ki)
        return f / (f + i), i / (f + i) * g(v)

    def log_coefficients(p):
        kf, ki, v = jnp.split(p, 3, axis=-1)
        d = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(v)

    make_params = _glorot_and_zeros(MinLSTMParams, 3 * H, kernel_init, bias_init, param_dtype)
    return _make_min_cell("min_lstm", H, mode, chunk_size, MinLSTMParams, 3, make_params, step_coefficients, log_coefficients,
                          compute_dtype)
