"""A 1-D convolution over ONE sequence, as a :class:`scanrnn.layers.Layer`.

:func:`causal_conv` has the layer contract of :mod:`scanrnn.layers`:
``init(key, input_size) -> params`` and ``apply(params, xs, length=None, *,
key=None, carry=None) -> ys`` for one sequence ``xs [T, I]`` (stateless: its
carry is ``()``, and it ignores ``key``), so it composes with the recurrent layers
in :func:`scanrnn.serial` (the second seed's ``Conv1D`` in front of a GRU,
and the WaveNet-style stack of dilated causal convolutions of van den Oord
et al. 2016)::

    model = serial(causal_conv(20, 4, stride=2, padding="valid"),
                   recurrent(gru(20)), recurrent(gru(20)), dense(10))
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers

from . import _checks
from . import cells as _cells
from .layers import Layer, _no_carry, stateless_output
from .unroll import check_length, check_sequence, mask_padding, valid_steps

__all__ = [
    "PADDINGS",
    "ConvParams",
    "conv_output_size",
    "causal_conv",
    "depthwise_causal",
]

Array = jax.Array

PADDINGS = ("causal", "valid")

# Glorot-uniform for a [F, I, K] kernel with Keras' fans: I K in, F K out.
conv_glorot_uniform = initializers.glorot_uniform(in_axis=1, out_axis=0)


class ConvParams(NamedTuple):
    """Params of :func:`causal_conv`, in PyTorch's ``Conv1d`` layout."""

    w: Array  # [F, I, K]  tap K-1 reads the newest input of the window
    b: Array  # [F]


def _positive_int(name: str, value) -> int:
    return _checks.positive_int(name, value)


def conv_output_size(num_steps: int, kernel_size: int, *, dilation: int = 1, stride: int = 1,
                     padding: str = "causal") -> int:
    """The number of output steps of :func:`causal_conv` for ``num_steps`` inputs.

    ``ceil(T / stride)`` with causal padding; ``floor((T - d (K - 1) - 1) /
    stride) + 1`` with ``"valid"`` (0 when the window is longer than ``T``).
    """
    if padding == "causal":
        return -(-num_steps // stride)
    span = dilation * (kernel_size - 1) + 1
    return max(0, (num_steps - span) // stride + 1)


def causal_conv(
    features: int,
    kernel_size: int,
    *,
    dilation: int = 1,
    stride: int = 1,
    padding: str = "causal",
    activation: Optional[str] = None,
    kernel_init: Optional[_cells.Initializer] = None,
    bias_init: _cells.Initializer = _cells.zeros,
    param_dtype=jnp.float32,
) -> Layer:
    r"""A 1-D convolution along time whose output at step ``t`` reads no input after ``t``.

    With ``K = kernel_size``, ``d = dilation``, ``s = stride`` and ``x_u =
    0`` for ``u < 0`` (left zero-padding of ``d (K - 1)`` steps):

    .. math::
        y_t = \phi\Big(b + \sum_{j=0}^{K-1} W_{:,:,j}\, x_{s t - d (K - 1 - j)}\Big)
        \qquad \text{(padding="causal")}

    so ``y_t`` depends on ``x_u`` for ``u <= s t`` only, and with ``s = 1``
    the output ``[T, F]`` is aligned with the input (Keras' ``Conv1D(...,
    padding="causal")``). ``padding="valid"`` adds no zeros:

    .. math::
        y_t = \phi\Big(b + \sum_{j=0}^{K-1} W_{:,:,j}\, x_{s t + d j}\Big)

    and gives ``floor((T - d (K - 1) - 1) / s) + 1`` steps, output ``t``
    being aligned with its newest input ``s t + d (K - 1)`` (and no steps
    when ``T < d (K - 1) + 1``). This is the form of the second seed's ``Conv1D(filters=20, kernel_size=4,
    strides=2, padding="valid")`` in front of a GRU: 50 inputs give 24
    outputs, output ``t`` reading inputs ``2t .. 2t + 3``, and the last one
    reads the last four inputs. (With causal padding and ``s = 2`` the last
    output would read input 48 and never see input 49, which is why the
    strided model uses ``"valid"``.) It is still causal: no output reads an
    input past the step it is aligned with.

    ``phi`` is the identity (``activation=None``) or one of ``"tanh"``,
    ``"sigmoid"``, ``"relu"``. The convolution is one
    :func:`jax.lax.conv_general_dilated` (a cross-correlation, the kernel is
    not flipped).

    Args:
      features: ``F``, the number of output channels.
      kernel_size: ``K``, the number of taps.
      dilation: ``d``, the spacing between taps.
      stride: ``s``, the step between windows.
      padding: ``"causal"`` or ``"valid"``.
      kernel_init: ``init(key, shape, dtype)`` called with the kernel's
        shape ``(F, I, K)``; Glorot-uniform with Keras' fans (``I K`` in,
        ``F K`` out) when ``None``.

    ``apply(params, xs, length=None, *, key=None, carry=None)`` takes one
    sequence ``[T, I]``; the layer has no state (a ``carry`` given must be
    ``()``, and ``(ys, ())`` is returned) and ignores ``key``. With
    ``length`` (only for ``stride=1`` and causal padding, where output ``t``
    is aligned with input ``t``), outputs past ``length`` are zeros, like
    those of :func:`scanrnn.dense` and the recurrent layers; outputs before
    it read valid inputs only. A strided or valid convolution changes the
    time axis, so a ``length`` counted in input steps would not describe its
    output, and it raises a ValueError. :func:`scanrnn.serial` reads each
    layer's feature size off a one-step sequence, which a valid convolution
    maps to zero steps: a sequence layer after it initialises as usual, but
    a many-to-one recurrent layer directly after it cannot take the last of
    zero steps; initialise such a model's layers one by one.

    Params (:class:`ConvParams`): ``w [F, I, K]``, ``b [F]``.

    >>> from scanrnn import serial, recurrent, gru
    >>> model = serial(causal_conv(8, 3, dilation=2, activation="relu"), recurrent(gru(4)))
    >>> params = model.init(jax.random.key(0), 1)
    >>> model.apply(params, jnp.ones((10, 1))).shape
    (10, 4)
    """
    features = _positive_int("features", features)
    kernel_size = _positive_int("kernel_size", kernel_size)
    dilation = _positive_int("dilation", dilation)
    stride = _positive_int("stride", stride)
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    kernel_init = conv_glorot_uniform if kernel_init is None else kernel_init
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, bias = _cells.param_init(kernel_init, param_dtype), _cells.param_init(bias_init, param_dtype)
    phi = (lambda z: z) if activation is None else _cells.activation_function(activation)
    span = dilation * (kernel_size - 1)  # the window reaches this many steps back
    left = span if padding == "causal" else 0

    def init(key, input_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", input_size)
        k1, k2 = jax.random.split(key)
        return ConvParams(kernel(k1, (features, input_size, kernel_size)), bias(k2, (features,)))

    def check_params(params):
        if not isinstance(params, ConvParams):
            raise ValueError(f"causal_conv expects params of type ConvParams, got {type(params).__name__}")
        w, b = jnp.shape(params.w), jnp.shape(params.b)
        if len(w) != 3 or w[0] != features or w[2] != kernel_size or b != (features,):
            raise ValueError(
                f"causal_conv: params must have w [{features}, I, {kernel_size}] and b [{features}], "
                f"got w {w} and b {b}"
            )

    def outputs(params, xs, length):
        check_params(params)
        xs = jnp.asarray(xs)
        if xs.ndim == 1:
            raise ValueError(
                f"causal_conv needs a sequence [T, input_size], got a vector of shape {xs.shape} "
                "(put it before any many-to-one layer)"
            )
        xs = check_sequence(xs)
        num_steps, input_size = xs.shape
        if input_size != params.w.shape[1]:
            raise ValueError(
                f"causal_conv: xs must have shape [T, {params.w.shape[1]}] (input_size from params), "
                f"got {xs.shape}"
            )
        if jnp.issubdtype(xs.dtype, jnp.floating) and xs.dtype != params.w.dtype:
            raise ValueError(f"causal_conv: xs must have the params' dtype {params.w.dtype}, got {xs.dtype}; cast one of them")
        if length is not None and (stride != 1 or padding != "causal"):
            raise ValueError(
                f"causal_conv: length needs stride=1 and padding='causal' (outputs aligned with inputs), "
                f"got stride={stride}, padding={padding!r}"
            )
        length = check_length(length, num_steps)
        if padding == "valid" and num_steps < span + 1:
            # No complete window: zero output steps. (serial.init probes every
            # layer with a one-step sequence and reads only the feature size.)
            return jnp.zeros((0, features), params.w.dtype)
        z = lax.conv_general_dilated(
            mask_padding(xs, length)[None],  # [1, T, I]; causal, so the valid outputs read no padding
            params.w,  # [F, I, K]
            window_strides=(stride,),
            padding=[(left, 0)],
            rhs_dilation=(dilation,),
            dimension_numbers=("NHC", "OIH", "NHC"),
        )[0]  # [T', F]
        ys = phi(z + params.b[None, :])
        if length is None:
            return ys
        return jnp.where(valid_steps(num_steps, length)[:, None], ys, jnp.zeros_like(ys))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        return stateless_output("causal_conv", outputs(params, xs, length), carry)

    return Layer(init, apply, _no_carry)


def depthwise_causal(w: Array, b: Array, xs: Array, window: Array, length=None):
    r"""A causal depthwise convolution along time, continuing from the previous inputs ``window``.

    Channel ``d`` of the output reads only channel ``d`` of the input:

    .. math::
        y_t = b + \sum_{j=0}^{K-1} w_{:, j} \odot x_{t - (K - 1 - j)}

    where the ``K - 1`` inputs before ``x_0`` are the rows of ``window``
    (zeros at the start of a sequence). This is the short convolution of
    the Mamba block (Gu and Dao 2023) and of Griffin's recurrent block (De
    et al. 2024); ``window`` is its state when a long sequence is fed in
    chunks.

    Args:
      w: ``[D, K]``, tap ``K - 1`` reading the newest input (PyTorch's
        depthwise ``Conv1d`` weight ``[D, 1, K]`` without its middle axis).
      b: ``[D]``.
      xs: ``[T, D]``.
      window: ``[K - 1, D]``, the inputs before ``xs``, oldest first.
      length: ``None`` or the number of valid steps (an integer scalar,
        checked by the caller). Inputs past it must already be zeros.

    Returns:
      ``(ys [T, D], window [K - 1, D])``: the outputs, and the last ``K - 1``
      inputs up to step ``length`` (up to ``T`` without one), the window
      that the next chunk continues from.
    """
    num_steps, kernel_size = xs.shape[0], w.shape[1]
    full = jnp.concatenate([window, xs], axis=0)  # [K - 1 + T, D]
    ys = b[None, :] + sum(w[None, :, j] * full[j : j + num_steps] for j in range(kernel_size))
    end = num_steps if length is None else length
    new_window = lax.dynamic_slice_in_dim(full, end, kernel_size - 1, axis=0)
    return ys, new_window
