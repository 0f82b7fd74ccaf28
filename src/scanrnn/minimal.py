r"""Minimal gated cells whose recurrence is linear in the carry: minGRU and minLSTM.

After Feng, Tung, Ahmed, Bengio and Hajimirsadeghi (2024), "Were RNNs All We
Needed?" (arXiv:2410.01201). Their gates read the input only, never the
previous hidden state, so every step is an affine map of the carry,

.. math::
    h_t = a_t \odot h_{t-1} + b_t, \qquad a_t \in (0, 1), \quad b_t > 0,

with ``a_t`` and ``b_t`` functions of ``x_t`` alone. Such a recurrence is an
associative scan over the pairs ``(a_t, b_t)`` (composition of affine maps,
Blelloch 1990), which needs ``O(log T)`` sequential steps instead of ``T``.

Both factories take ``mode``:

- ``"sequential"``: a plain :class:`scanrnn.Cell` (``project`` and
  ``step``); :func:`scanrnn.unroll` scans ``step``.
- ``"parallel"`` (the default): the same cell with ``parallel`` set;
  :func:`scanrnn.unroll` computes the projection of all steps and evaluates
  the whole sequence with :func:`jax.lax.associative_scan` in log space.

The two modes compute the same function (to rounding) and share ``init``,
``initial_carry``, ``apply``, ``project`` and ``step``.

Regularisation (:mod:`scanrnn.regularization`): the cells have no recurrent
weights, so ``recurrent_dropout > 0`` is a ValueError. ``dropout`` masks the
inputs before the projection. Zoneout stays in the linear recurrence, in
both modes: a kept unit has ``a_t = 1, b_t = 0`` at that step, which the
parallel mode evaluates by an associative scan in linear space
(:func:`linear_scan`; the logarithms of those exact zeros would be
infinite), and the expectation used without a key has
``a'_t = r + (1 - r) a_t``, ``b'_t = (1 - r) b_t``, which stays in log space.
The output is the state after zoneout.

The log-space scan follows the paper's ``parallel_scan_log`` (which takes it
from Heinsen 2023): with ``log a_t`` and ``log b_t`` computed from the gate
pre-activations by ``softplus`` (never by ``log`` of a rounded sigmoid), the
scan combines ``(log a, log b)`` pairs with

.. math::
    (\alpha_1, \beta_1) \circ (\alpha_2, \beta_2)
        = (\alpha_1 + \alpha_2,\; \operatorname{logaddexp}(\beta_1 + \alpha_2, \beta_2)),

giving :math:`\log A_t = \sum_{s \le t} \log a_s` and
:math:`\log S_t = \log \sum_{s \le t} (\prod_{s < r \le t} a_r)\, b_s`.
The state is then :math:`h_t = e^{\log A_t} \odot h_0 + e^{\log S_t}`, which
holds for an initial carry :math:`h_0` of any sign. With a ``length``, the
returned carry is :math:`h_{\text{length}}` (:math:`h_0` when it is 0) and the
outputs past it are zeros, as :func:`scanrnn.unroll` masks a scan.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _checks
from .cells import (
    Cell,
    Initializer,
    RNNCarry,
    _check_carry,
    _check_compute_dtype,
    _check_hidden_size,
    _check_input_size,
    _check_param_dtype,
    _check_params,
    _check_x,
    _keys,
    glorot_uniform,
    param_init,
    product,
    zeros,
)
from .regularization import zoneout_blend
from .unroll import check_length, valid_steps

Array = jax.Array

MODES = ("parallel", "sequential")


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


def _combine(earlier, later):
    """Compose two affine maps given as ``(log a, log b)``: ``later`` after ``earlier``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def linear_scan(h0: Array, a: Array, b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` by an associative scan in linear space.

    For coefficients in ``[0, 1]`` with exact zeros and ones, as zoneout
    makes them (``a = 1, b = 0`` where a unit keeps its value), which the
    log-space scan would turn into infinite logarithms.

    Args:
      h0: ``[H]``. a, b: ``[T, H]``.

    Returns:
      ``[T, H]``, the states :math:`h_1 \ldots h_T`.
    """

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    prod, acc = jax.lax.associative_scan(combine, (a, b), axis=0)
    return prod * h0[None, :] + acc


def linear_scan_log(h0: Array, log_a: Array, log_b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` from ``log a`` and ``log b``.

    Args:
      h0: ``[H]``, the state before the first step, of either sign.
      log_a: ``[T, H]``, the logs of the (positive) coefficients.
      log_b: ``[T, H]``, the logs of the (positive) offsets.

    Returns:
      ``[T, H]``, the states :math:`h_1 \ldots h_T`.
    """
    log_prod, log_sum = jax.lax.associative_scan(_combine, (log_a, log_b), axis=0)
    return jnp.exp(log_prod) * h0[None, :] + jnp.exp(log_sum)


# --------------------------------------------------------------------------
# Assembly of a cell from its gate maths.


def _make_min_cell(
    name, hidden_size, mode, params_cls, gates, make_params, step_coefficients, log_coefficients, compute_dtype
):
    """A :class:`scanrnn.Cell` for ``h_t = a_t * h_{t-1} + b_t`` with input-only gates.

    ``step_coefficients(p) -> (a, b)`` and ``log_coefficients(p) -> (log a,
    log b)`` map the projection ``p [gates*H]`` of one step (or ``[T,
    gates*H]`` of all) to the coefficients; both are elementwise. The
    projection, the cell's one matrix product, runs in ``compute_dtype``
    (:func:`scanrnn.cells.product`); the scan stays in the params' dtype.
    """
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be one of {list(MODES)}, got {mode!r}")
    _check_compute_dtype(compute_dtype)
    H = hidden_size

    def shapes(I):
        return {"w_ih": (gates * H, I), "b": (gates * H,)}

    def check(params):
        _check_params(name, params, params_cls, shapes)

    def init(key, input_size):
        _checks.prng_key("key", key)
        _check_input_size(input_size)
        params = make_params(key, input_size)
        check(params)
        return params

    def initial_carry(params):
        check(params)
        return RNNCarry(jnp.zeros((H,), params.w_ih.dtype))

    def project(params, x):
        check(params)
        _check_x(name, x, params.w_ih)
        return product(x, params.w_ih, compute_dtype) + params.b

    def check_p(ps, rank):
        expected = (gates * H,)
        shape = tuple(jnp.shape(ps))
        if len(shape) != rank or shape[rank - 1 :] != expected:
            what = f"({gates * H},)" if rank == 1 else f"[T, {gates * H}]"
            raise ValueError(f"{name}: the projection must have shape {what} (from project), got {shape}")

    def masked_step(params, carry, p, mask, keep):
        check(params)
        _check_carry(name, carry, RNNCarry, H, params.w_ih.dtype)
        check_p(p, 1)
        if mask is not None:
            raise ValueError(
                f"{name} has no recurrent weights (its gates read only the input), so "
                "recurrent_dropout does not apply to it; use dropout or zoneout"
            )
        a, b = step_coefficients(p)
        h = a * carry.h + b
        if keep is not None:
            h = zoneout_blend(keep, carry, RNNCarry(h)).h
        return RNNCarry(h), h

    def step(params, carry, p):
        return masked_step(params, carry, p, None, None)

    def apply(params, carry, x):
        check(params)
        _check_x(name, x, params.w_ih)
        _check_carry(name, carry, RNNCarry, H, params.w_ih.dtype)  # every check before any arithmetic
        return step(params, carry, project(params, x))

    def parallel(params, carry, ps, length=None, *, keep=None):
        check(params)
        _check_carry(name, carry, RNNCarry, H, params.w_ih.dtype)
        check_p(ps, 2)
        num_steps = ps.shape[0]
        length = check_length(length, num_steps)
        if num_steps == 0:
            return carry, jnp.zeros((0, H), carry.h.dtype)
        if keep is not None and not isinstance(keep, RNNCarry):
            raise ValueError(f"{name}: zoneout's keep must be an RNNCarry, got {type(keep).__name__}")
        if keep is None:
            hs = linear_scan_log(carry.h, *log_coefficients(ps))
        elif isinstance(keep.h, float):
            # Expected zoneout: a' = rate + (1 - rate) a, b' = (1 - rate) b, in log space.
            rate = keep.h
            log_a, log_b = log_coefficients(ps)
            log_keep, log_change = math.log(rate), math.log1p(-rate)
            hs = linear_scan_log(carry.h, jnp.logaddexp(log_keep, log_change + log_a), log_change + log_b)
        else:
            # Sampled zoneout: a kept unit has a = 1, b = 0 at that step.
            a, b = step_coefficients(ps)
            hs = linear_scan(carry.h, jnp.where(keep.h, jnp.ones_like(a), a), jnp.where(keep.h, jnp.zeros_like(b), b))
        if length is None:
            return RNNCarry(hs[-1]), hs
        # States past `length` are computed and discarded, as the masked scan
        # discards its steps there: no -inf offsets, whose tangents would be NaN.
        valid = valid_steps(num_steps, length)[:, None]
        ys = jnp.where(valid, hs, jnp.zeros_like(hs))
        last = jax.lax.dynamic_index_in_dim(hs, jnp.maximum(length - 1, 0), axis=0, keepdims=False)
        return RNNCarry(jnp.where(length > 0, last, carry.h)), ys

    return Cell(init, initial_carry, apply, project, step, parallel if mode == "parallel" else None, masked_step)


def _glorot_and_zeros(params_cls, rows, kernel_init, bias_init, param_dtype):
    param_dtype = _check_param_dtype(param_dtype)
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
    mode: str = "parallel",
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    r"""minGRU (Feng et al. 2024): a GRU whose gates read only the input.

    .. math::
        z_t &= \sigma(W_z x_t + b_z) \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t, \qquad y_t = h_t

    with the paper's positive activation :math:`g(v) = v + 1/2` for
    :math:`v \ge 0` and :math:`\sigma(v)` otherwise (:func:`g`). In log space
    (``mode="parallel"``) :math:`\log(1 - z_t) = -\mathrm{softplus}(k)`,
    :math:`\log z_t = -\mathrm{softplus}(-k)` for the pre-activation
    :math:`k = W_z x_t + b_z`, and :math:`\log \tilde h_t` is :func:`log_g`.

    Params (:class:`MinGRUParams`): ``w_ih [2H, I]`` (rows ``z`` then
    ``h~``), ``b [2H]``; Glorot-uniform kernel, zero bias.
    Carry (:class:`scanrnn.RNNCarry`): ``h [H]``.

    Args:
      hidden_size: ``H``.
      mode: ``"parallel"`` (an associative scan over time, through
        ``Cell.parallel``) or ``"sequential"`` (a scan of ``step``).
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the input
        projection in mixed precision, as for :func:`scanrnn.lstm`.

    >>> cell = min_gru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, params.w_ih.shape
    ((4,), (8, 3))
    """
    H = _check_hidden_size(hidden_size)

    def step_coefficients(p):
        k, v = jnp.split(p, 2, axis=-1)
        z = jax.nn.sigmoid(k)
        return 1 - z, z * g(v)

    def log_coefficients(p):
        k, v = jnp.split(p, 2, axis=-1)
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(v)

    make_params = _glorot_and_zeros(MinGRUParams, 2 * H, kernel_init, bias_init, param_dtype)
    return _make_min_cell("min_gru", H, mode, MinGRUParams, 2, make_params, step_coefficients, log_coefficients,
                          compute_dtype)


def min_lstm(
    hidden_size: int,
    *,
    mode: str = "parallel",
    kernel_init: Initializer = glorot_uniform,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    r"""minLSTM (Feng et al. 2024): an LSTM with input-only, normalised gates and no output gate.

    .. math::
        f_t &= \sigma(W_f x_t + b_f), \qquad i_t = \sigma(W_i x_t + b_i) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \qquad i'_t = \frac{i_t}{f_t + i_t} \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t, \qquad y_t = h_t

    The normalisation makes :math:`f'_t + i'_t = 1`, so the state does not
    grow with time. In log space (``mode="parallel"``), with
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
      mode: ``"parallel"`` or ``"sequential"``, as in :func:`min_gru`.
      compute_dtype: as for :func:`min_gru`.

    >>> cell = min_lstm(4, mode="sequential")
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, params.w_ih.shape
    ((4,), (12, 3))
    """
    H = _check_hidden_size(hidden_size)

    def step_coefficients(p):
        kf, ki, v = jnp.split(p, 3, axis=-1)
        f, i = jax.nn.sigmoid(kf), jax.nn.sigmoid(ki)
        return f / (f + i), i / (f + i) * g(v)

    def log_coefficients(p):
        kf, ki, v = jnp.split(p, 3, axis=-1)
        d = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(v)

    make_params = _glorot_and_zeros(MinLSTMParams, 3 * H, kernel_init, bias_init, param_dtype)
    return _make_min_cell("min_lstm", H, mode, MinLSTMParams, 3, make_params, step_coefficients, log_coefficients,
                          compute_dtype)
