r"""Griffin's recurrence: the RG-LRU cell and Hawk's recurrent block.

After De, Smith, Fernando et al. (2024), "Griffin: Mixing Gated Linear
Recurrences with Local Attention for Efficient Language Models"
(arXiv:2402.19427), whose reference implementation is
google-deepmind/recurrentgemma (``recurrentgemma/jax/layers.py``: ``RGLRU``,
``rnn_param_init``, ``Conv1D``; ``recurrentgemma/jax/modules.py``:
``RecurrentBlock``).

- :func:`rg_lru`: the Real-Gated Linear Recurrent Unit (the paper's section
  2.4), a :class:`scanrnn.LinearCell` whose state has the width ``D`` of its
  input. Its gates read the input only, so every step is an affine map of the
  state, :math:`h_t = a_t \odot h_{t-1} + b_t`, and :func:`scanrnn.unroll`
  runs it as a scan of the step, an associative scan or a chunked scan
  (``mode``).
- :func:`hawk`: the paper's recurrent block (its Figure 2c), a
  :class:`scanrnn.Layer` over one sequence: two linear branches, one through
  a GeLU, the other through a short causal convolution
  (:func:`scanrnn.conv.depthwise_causal`) and the RG-LRU, multiplied and
  mapped back to the model width. Hawk, the paper's recurrent model, puts
  this block in pre-norm residual blocks (RMSNorm, a skip connection, a
  gated MLP block) and Griffin mixes in local attention; those parts are
  not in this module.

Both keep the recurrence in the params' dtype; ``compute_dtype`` (e.g.
``jnp.bfloat16``) runs only their matrix products in mixed precision
(:func:`scanrnn.cells.product`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.nn import initializers

from . import _checks
from .cells import RNNCarry, _keys, param_init, product, zeros
from .conv import depthwise_causal
from .kinds import LinearCell, check_mode
from .layers import Layer, check_carry
from .unroll import check_length, check_sequence, mask_padding, unroll, valid_steps

__all__ = [
    "RGLRUParams",
    "HawkParams",
    "HawkCarry",
    "log_a_bounds",
    "rg_lru_coefficients",
    "rg_lru",
    "hawk",
]

Array = jax.Array

# recurrentgemma's kernel init for the gates and the block's linear maps:
# variance_scaling(1.0, "fan_in", "normal"), an untruncated normal of variance
# 1 / fan_in (the paper's "LeCun init"; jax's lecun_normal truncates it). The
# kernels here are [out, in], so the fan-in is the last axis.
lecun_normal = initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-1, out_axis=-2)
# recurrentgemma's Conv1D kernel: variance_scaling(0.01, "fan_in", "normal")
# over its [K, W] kernel, a fan-in of K taps; here the kernel is [W, K].
conv_normal = initializers.variance_scaling(0.01, "fan_in", "normal", in_axis=-1, out_axis=-2)


class RGLRUParams(NamedTuple):
    """Params of :func:`rg_lru` of width ``D``; gate rows stacked (recurrence gate ``r``, input gate ``i``)."""

    w_ih: Array  # [2D, D]  (W_a; W_x)
    b: Array  # [2D]  (b_a; b_x)
    lam: Array  # [D]  Lambda, the logit of the base a = sigmoid(Lambda)


class HawkParams(NamedTuple):
    """Params of :func:`hawk` of width ``W`` over a model width ``D_model``, kernel ``K = conv_width``."""

    w_in: Array  # [2W, D_model]  rows: the GeLU branch, then the recurrent branch
    b_in: Array  # [2W]
    conv_w: Array  # [W, K]  tap K-1 reads the newest input
    conv_b: Array  # [W]
    rg_lru: RGLRUParams  # w_ih [2W, W], b [2W], lam [W]
    w_out: Array  # [D_model, W]
    b_out: Array  # [D_model]


class HawkCarry(NamedTuple):
    """Carry of :func:`hawk`: the convolution's window and the RG-LRU's state."""

    window: Array  # [K-1, W]  the last K-1 inputs of the convolution, oldest first
    h: Array  # [W]  the RG-LRU's state


# --------------------------------------------------------------------------
# The RG-LRU's coefficients.


def log_a_bounds(dtype) -> tuple:
    """``(lowest, highest)`` value of ``log a`` in ``dtype``: ``(log(tiny) / 2, -eps)``.

    ``log a = -c r softplus(-Lambda)`` is negative in exact arithmetic but
    rounds to 0 when ``r`` or ``softplus(-Lambda)`` underflows, and to below
    ``log(tiny)`` for a very negative ``Lambda``. Kept in these bounds, ``0 <
    a < 1`` holds in floating point for any params and inputs, ``1 - a**2``
    is at least about ``2 eps``, and the derivative of ``sqrt(1 - a**2)``
    stays below about ``1 / sqrt(2 eps)`` (recurrentgemma bounds the same
    derivative at 1000 with a custom gradient instead). In exact arithmetic
    the bounds only bind for ``a`` within ``eps`` of 1 or below ``sqrt(tiny)``.
    """
    info = jnp.finfo(dtype)
    return 0.5 * math.log(float(info.tiny)), -float(info.eps)


def rg_lru_coefficients(lam: Array, gates: Array, x: Array, c: float):
    r"""``(a, b)`` of one step from its gate pre-activations, each ``[D]`` of ``lam``'s dtype.

    .. math::
        \log a_t = -c\, r_t\, \mathrm{softplus}(-\Lambda), \qquad
        a_t = e^{\log a_t}, \qquad
        b_t = \sqrt{-\mathrm{expm1}(2 \log a_t)} \odot i_t \odot x_t

    with ``r = sigmoid(gates[:D])``, ``i = sigmoid(gates[D:])``, and
    ``log a`` clipped to :func:`log_a_bounds`. ``-expm1(2 log a)`` is
    ``1 - a**2`` without the cancellation of ``1 - a**2`` near ``a = 1``.

    Args:
      lam: ``[D]``.
      gates: ``[2D]``, the pre-activations ``W x + b`` (recurrence gate first).
      x: ``[D]``, the input the state takes in.
      c: the constant ``c``.
    """
    z_a, z_x = jnp.split(gates, 2, axis=-1)
    low, high = log_a_bounds(lam.dtype)
    log_a = jnp.clip(-c * jax.nn.sigmoid(z_a) * jax.nn.softplus(-lam), low, high)
    return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2 * log_a)) * (jax.nn.sigmoid(z_x) * x)


def _ring_init(min_rad: float, max_rad: float):
    """recurrentgemma's ``rnn_param_init``: ``sigmoid(Lambda)**2`` uniform in ``[min_rad**2, max_rad**2)``."""

    def init(key, shape, dtype):
        u = jax.random.uniform(key, shape, dtype)
        log_base = 0.5 * jnp.log(min_rad**2 + (max_rad**2 - min_rad**2) * u)  # log sigmoid(Lambda)
        return log_base - jnp.log(-jnp.expm1(log_base))  # Lambda = logit(sigmoid(Lambda))

    return init


def rg_lru(
    *,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    mode: str = "sequential",
    chunk_size: int = 128,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""The Real-Gated Linear Recurrent Unit (RG-LRU) of De et al. (2024), width ``D`` = the input size.

    .. math::
        r_t &= \sigma(W_a x_t + b_a) && \text{recurrence gate} \\
        i_t &= \sigma(W_x x_t + b_x) && \text{input gate} \\
        a_t &= \sigma(\Lambda)^{c\, r_t}, \qquad
            \log a_t = -c\, r_t\, \mathrm{softplus}(-\Lambda) \\
        h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t), \qquad y_t = h_t

    (the paper's equations 1 to 4, section 2.4, with ``c = 8``). The two gate
    kernels are one fused ``[2D, D]`` product. ``a_t`` is computed from its
    logarithm, as the paper's appendix A and recurrentgemma do, and
    ``sqrt(1 - a_t**2)`` as ``sqrt(-expm1(2 log a_t))``; ``log a_t`` is kept
    in :func:`log_a_bounds`, so ``0 < a_t < 1`` in floating point and the
    gradient of the square root stays finite as ``a_t -> 1``
    (:func:`rg_lru_coefficients`). ``b_t`` has the sign of ``x_t``, so the
    cell has no log-space coefficients: every mode scans in linear space.

    Init (recurrentgemma's ``RGLRU``): ``Lambda`` as its ``rnn_param_init``,
    ``sigmoid(Lambda)**2`` uniform in ``[min_rad**2, max_rad**2]`` (uniform
    over the area of a ring, as the LRU's init of Orvieto et al. 2023), so
    ``sigmoid(Lambda)`` lies in ``[min_rad, max_rad]`` and the decay of a
    fully open recurrence gate, ``a = sigmoid(Lambda)**c``, in ``[min_rad**c,
    max_rad**c]``, ``[0.43, 0.992]`` with the defaults. (The paper's text
    says instead that ``a**c`` is uniform in ``[0.9, 0.999]``; this follows
    the code.) Gate kernels: LeCun normal as recurrentgemma draws it, an
    untruncated normal of variance ``1 / D``; zero biases. recurrentgemma
    also resets the state at document boundaries and there skips the
    ``sqrt(1 - a**2)`` factor; this cell has no resets (a sequence starts
    from its carry), and its gates are dense (recurrentgemma's are block
    diagonal, one block per head).

    Params (:class:`RGLRUParams`): ``w_ih [2D, D]`` (rows ``W_a`` then
    ``W_x``), ``b [2D]``, ``lam [D]``. Carry (:class:`scanrnn.RNNCarry`):
    ``h [D]``. The projection of one step is the pair ``(W x + b [2D], x
    [D])``.

    Args:
      c: the positive constant ``c`` (the paper's 8).
      min_rad, max_rad: the range of ``sigmoid(Lambda)`` at init, ``0 <
        min_rad <= max_rad < 1``.
      mode: ``"sequential"``, ``"associative"`` or ``"chunked"`` (see
        :class:`scanrnn.LinearCell`).
      chunk_size: the chunk length of ``mode="chunked"``.
      param_dtype: the params' (and the recurrence's) floating dtype.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the gate product
        in mixed precision.

    >>> cell = rg_lru()
    >>> params = cell.init(jax.random.key(0), 4)
    >>> carry, ys = unroll(cell, params, jnp.ones((5, 4)))
    >>> ys.shape, params.w_ih.shape, bool((jax.nn.sigmoid(params.lam) >= 0.9).all())
    ((5, 4), (8, 4), True)
    """
    c = _checks.positive_number("c", c)
    min_rad = _checks.finite_real("min_rad", min_rad)
    max_rad = _checks.finite_real("max_rad", max_rad)
    if not 0 < min_rad <= max_rad < 1:
        raise ValueError(f"rg_lru: need 0 < min_rad <= max_rad < 1, got min_rad={min_rad!r} and max_rad={max_rad!r}")
    chunk_size = check_mode(mode, chunk_size, "rg_lru:")
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    kernel, bias = param_init(lecun_normal, param_dtype), param_init(zeros, param_dtype)
    lam_init = param_init(_ring_init(min_rad, max_rad), param_dtype)

    def shapes(D):
        return {"w_ih": (2 * D, D), "b": (2 * D,), "lam": (D,)}

    def check(params):
        _checks.cell_params("rg_lru", params, RGLRUParams, shapes)

    def init(key, input_size):
        _checks.prng_key("key", key)
        D = _checks.positive_int("input_size", input_size)
        k_w, k_b, k_lam = _keys(key, 3)
        params = RGLRUParams(kernel(k_w, (2 * D, D)), bias(k_b, (2 * D,)), lam_init(k_lam, (D,)))
        check(params)
        return params

    def initial_carry(params):
        check(params)
        return RNNCarry(jnp.zeros(params.lam.shape, params.lam.dtype))

    def project(params, x):
        check(params)
        _checks.example("rg_lru", x, params.w_ih)
        return product(x, params.w_ih, compute_dtype) + params.b, x

    def coefficients(params, p):
        D = params.lam.shape[0]
        shapes_p = tuple(tuple(jnp.shape(leaf)) for leaf in p) if isinstance(p, tuple) else None
        if shapes_p != ((2 * D,), (D,)):
            given = shapes_p if shapes_p is not None else type(p).__name__
            raise ValueError(
                f"rg_lru: the projection of one step must be the pair (W x + b, x) of shapes (({2 * D},), ({D},)) "
                f"(from project), got {given}"
            )
        return rg_lru_coefficients(params.lam, *p, c)

    return LinearCell(init, initial_carry, project, coefficients, mode=mode, chunk_size=chunk_size)


# --------------------------------------------------------------------------
# The recurrent block.


def hawk(
    width: int,
    *,
    conv_width: int = 4,
    mode: str = "sequential",
    chunk_size: int = 128,
    c: float = 8.0,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> Layer:
    r"""Griffin's recurrent block (De et al. 2024, Figure 2c), the temporal mixing of Hawk and Griffin.

    For one sequence ``x [T, D_model]``, with ``W = width`` and ``K =
    conv_width``:

    .. math::
        g_t &= \mathrm{GeLU}(W_g x_t + b_g) && \text{branch 1, } [W] \\
        u_t &= W_u x_t + b_u && \text{branch 2, } [W] \\
        v_t &= b_c + \textstyle\sum_{j=0}^{K-1} w_{c,:,j} \odot u_{t-K+1+j}
            && \text{causal depthwise convolution} \\
        h_t &= \mathrm{RG\text{-}LRU}(v)_t && \text{(:func:`rg_lru` of width } W) \\
        y_t &= W_o (h_t \odot g_t) + b_o && [D_\mathrm{model}]

    where ``u_s`` for ``s < 0`` are the rows of the carry's window (zeros to
    start). ``W_g`` and ``W_u`` are one fused ``[2W, D_model]`` product; GeLU
    is :func:`jax.nn.gelu` in its tanh approximation (its default, as in
    recurrentgemma's ``RecurrentBlock``). The paper's block has no dropout:
    ``apply`` checks a ``key`` and ignores it.

    Init (recurrentgemma's ``RecurrentBlock``, ``Conv1D`` and ``RGLRU``):
    ``w_in`` and ``w_out`` untruncated normals of variance ``1 / fan_in``
    (``1 / D_model``, ``1 / W``; recurrentgemma's full models scale the
    variance of ``w_out`` by ``2 / depth``), the convolution's kernel of
    variance ``0.01 / K``, all biases zero; the RG-LRU as :func:`rg_lru`
    initialises it.

    Params (:class:`HawkParams`): ``w_in [2W, D_model]`` (the GeLU branch's
    rows first), ``b_in [2W]``, ``conv_w [W, K]`` (tap ``K - 1`` reads the
    newest input), ``conv_b [W]``, ``rg_lru`` (:class:`RGLRUParams` of width
    ``W``), ``w_out [D_model, W]``, ``b_out [D_model]``.

    Carry (:class:`HawkCarry`): ``window [K - 1, W]``, the last ``K - 1``
    inputs of the convolution (oldest first), and ``h [W]``, the RG-LRU's
    state; zeros to start. ``apply(params, xs, length=None, *, key=None,
    carry=None)`` returns ``ys [T, D_model]``, or ``(ys, carry)`` when a
    carry is given: the carry after the last valid step, so a sequence fed
    in two chunks gives what one call gives. With ``length``, outputs past
    it are zeros and inputs past it affect nothing.

    Args:
      width: ``W``, the RG-LRU's width (the paper's ``D_RNN``).
      conv_width: ``K``, the convolution's taps (the paper's 4).
      mode, chunk_size, c: those of the :func:`rg_lru` inside.
      param_dtype: the params' floating dtype.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the three
        matrix products in mixed precision.

    >>> from scanrnn import serial, dense
    >>> model = serial(hawk(8), dense(1))
    >>> params = model.init(jax.random.key(0), 3)
    >>> model.apply(params, jnp.ones((10, 3))).shape
    (10, 1)
    >>> block = hawk(8)
    >>> params = block.init(jax.random.key(0), 3)
    >>> ys, carry = block.apply(params, jnp.ones((10, 3)), carry=block.initial_carry(params))
    >>> ys.shape, carry.window.shape, carry.h.shape
    ((10, 3), (3, 8), (8,))
    """
    W = _checks.positive_int("width", width)
    K = _checks.positive_int("conv_width", conv_width)
    cell = rg_lru(c=c, mode=mode, chunk_size=chunk_size, param_dtype=param_dtype, compute_dtype=compute_dtype)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, conv_kernel = param_init(lecun_normal, param_dtype), param_init(conv_normal, param_dtype)
    bias = param_init(zeros, param_dtype)

    def shapes(D_model):
        return {
            "w_in": (2 * W, D_model), "b_in": (2 * W,), "conv_w": (W, K), "conv_b": (W,),
            "rg_lru.w_ih": (2 * W, W), "rg_lru.b": (2 * W,), "rg_lru.lam": (W,),
            "w_out": (D_model, W), "b_out": (D_model,),
        }

    def check(params):
        if not isinstance(params, HawkParams):
            raise ValueError(f"hawk expects params of type HawkParams, got {type(params).__name__}")
        if not isinstance(params.rg_lru, RGLRUParams):
            raise ValueError(f"hawk expects params.rg_lru of type RGLRUParams, got {type(params.rg_lru).__name__}")
        w_in = _checks.shape(params.w_in)
        if len(w_in) != 2:
            raise ValueError(f"hawk: params.w_in must have rank 2, got shape {w_in}")
        for field, expected in shapes(w_in[1]).items():
            value = params
            for part in field.split("."):
                value = getattr(value, part)
            if _checks.shape(value) != expected:
                raise ValueError(f"hawk: params.{field} must have shape {expected}, got {_checks.shape(value)}")

    def init(key, input_size):
        _checks.prng_key("key", key)
        D_model = _checks.positive_int("input_size", input_size)
        k_in, k_b_in, k_conv, k_conv_b, k_lru, k_out, k_b_out = _keys(key, 7)
        params = HawkParams(
            kernel(k_in, (2 * W, D_model)), bias(k_b_in, (2 * W,)),
            conv_kernel(k_conv, (W, K)), bias(k_conv_b, (W,)),
            cell.init(k_lru, W),
            kernel(k_out, (D_model, W)), bias(k_b_out, (D_model,)),
        )
        check(params)
        return params

    def initial_carry(params):
        check(params)
        dtype = params.w_in.dtype
        return HawkCarry(jnp.zeros((K - 1, W), dtype), jnp.zeros((W,), dtype))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)  # no dropout: checked, then unused
        check(params)
        xs = jnp.asarray(xs)
        if xs.ndim == 1:
            raise ValueError(
                f"hawk needs a sequence [T, input_size], got a vector of shape {xs.shape} "
                "(put it before any many-to-one layer)"
            )
        xs = check_sequence(xs)
        D_model = params.w_in.shape[1]
        if xs.shape[1] != D_model:
            raise ValueError(f"hawk: xs must have shape [T, {D_model}] (input_size from params), got {xs.shape}")
        if xs.dtype != params.w_in.dtype:
            raise ValueError(
                f"hawk: xs must have the params' dtype {params.w_in.dtype}, got {xs.dtype}; cast one of them"
            )
        length = check_length(length, xs.shape[0])
        start = initial_carry(params)
        if carry is not None:
            check_carry("hawk", start, carry)
            start = carry
        ys, final = _block(params, xs, length, start)
        return ys if carry is None else (ys, final)

    def _block(params, xs, length, start):
        xs = mask_padding(xs, length)
        z = product(xs, params.w_in, compute_dtype) + params.b_in[None, :]  # [T, 2W], both branches
        gate = jax.nn.gelu(z[:, :W])
        branch = mask_padding(z[:, W:], length)  # the padding's bias must not enter the window
        conv, window = depthwise_causal(params.conv_w, params.conv_b, branch, start.window, length)
        final, hs = unroll(cell, params.rg_lru, conv, RNNCarry(start.h), length=length)
        ys = product(hs * gate, params.w_out, compute_dtype) + params.b_out[None, :]
        if length is not None:
            ys = jnp.where(valid_steps(xs.shape[0], length)[:, None], ys, jnp.zeros_like(ys))
        return ys, HawkCarry(window, final.h)

    return Layer(init, apply, initial_carry)
