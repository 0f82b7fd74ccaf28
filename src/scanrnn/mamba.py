r"""Mamba: the selective state space model (S6) as a :class:`scanrnn.LinearCell`, and the Mamba block.

After Gu and Dao (2023), "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces" (arXiv:2312.00752), and their reference
implementation, state-spaces/mamba (``mamba_ssm/modules/mamba_simple.py``
for the block and its initialisation, ``selective_scan_ref`` in
``mamba_ssm/ops/selective_scan_interface.py`` for the scan).

A structured state space model keeps, for each of ``D`` input channels, a
diagonal state of ``N`` numbers. Mamba makes its step size :math:`\Delta`
and its input and output vectors :math:`B, C` functions of the input (the
"selection" of the paper's Section 3.2, Algorithm 2), so the recurrence is
no longer a convolution, but it stays linear in the state:

.. math::
    h_t = \exp(\Delta_t A) \odot h_{t-1} + (\Delta_t B_t)\, x_t,
    \qquad y_t = h_t C_t + D \odot x_t

for the state ``h [D, N]``: :func:`selective_ssm` is a
:class:`scanrnn.kinds.LinearCell`, and :func:`scanrnn.unroll` runs it in
any of the three modes (a scan of the step, an associative scan, or chunks).
The associative and chunked modes compute the coefficients of all steps at
once, arrays of ``[T, D, N]``, where the sequential mode keeps one step's
``[D, N]``; the reference implementation's fused kernel keeps them out of
the GPU's main memory, which XLA does not.

:func:`mamba` is the block of the paper's Figure 3 (Section 3.4), a
:class:`scanrnn.Layer` over one sequence: an input projection to two
branches, a short causal depthwise convolution and SiLU before the
selective SSM on one of them, a SiLU gate from the other, and an output
projection. Its carry (the convolution's window and the SSM's state) lets
a long sequence be fed in chunks. The residual connection and the
normalisation around the block belong to the model that stacks blocks::

    model = serial(mamba(), dense(1))
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from . import _checks
from . import execution as _execution
from .cells import RNNCarry, product
from .conv import depthwise_causal
from .execution import Execution
from .kinds import LinearCell, check_mode
from .layers import Layer, check_carry
from .unroll import check_length, check_sequence, mask_padding, unroll

__all__ = [
    "SelectiveSSMParams",
    "SelectiveSSMStep",
    "MambaParams",
    "MambaCarry",
    "inverse_softplus",
    "selective_ssm",
    "mamba",
]

Array = jax.Array


class SelectiveSSMParams(NamedTuple):
    """Params of :func:`selective_ssm` over ``D`` channels, with ``N`` states each and a step-size rank ``R``."""

    w_x: Array  # [R + 2N, D]  the input product, rows stacked (dt's low rank, B, C): the reference's x_proj
    w_dt: Array  # [D, R]      the step size's up-projection (dt_proj.weight)
    b_dt: Array  # [D]         the step size's bias (dt_proj.bias)
    a_log: Array  # [D, N]     A = -exp(a_log)
    d_skip: Array  # [D]       the skip connection D


class SelectiveSSMStep(NamedTuple):
    """The projection ``p`` of one step of :func:`selective_ssm` (``[T, ...]`` for all steps)."""

    delta: Array  # [D]  the step size, > 0
    x: Array  # [D]      the input
    b: Array  # [N]      B of the step
    c: Array  # [N]      C of the step


class MambaParams(NamedTuple):
    """Params of :func:`mamba` for a model width ``M`` and ``E = expand * M`` inner channels."""

    in_proj: Array  # [2E, M]  rows stacked (x, z)
    conv_w: Array  # [E, K]    the depthwise convolution, tap K-1 reads the newest input
    conv_b: Array  # [E]
    ssm: SelectiveSSMParams  # the selective SSM over the E channels
    out_proj: Array  # [M, E]


class MambaCarry(NamedTuple):
    """Carry of :func:`mamba`: what a sequence continues from."""

    window: Array  # [K - 1, E]  the convolution's last K - 1 inputs, oldest first
    h: Array  # [E, N]           the selective SSM's state


# --------------------------------------------------------------------------
# Initialisation (the reference's, mamba_simple.py).


def _init_dtype(param_dtype):
    """Draw in ``param_dtype``, or in float32 for a narrower one (cast afterwards)."""
    return param_dtype if jnp.finfo(param_dtype).bits >= 32 else jnp.dtype(jnp.float32)


def _uniform(key, shape, limit: float, param_dtype) -> Array:
    """``U(-limit, limit)`` in ``param_dtype``."""
    dtype = _init_dtype(param_dtype)
    return jax.random.uniform(key, shape, dtype, -limit, limit).astype(param_dtype)


def _linear_kernel(key, shape, param_dtype) -> Array:
    """PyTorch's default ``nn.Linear``/``nn.Conv1d`` weight, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for ``[out, fan_in]``."""
    return _uniform(key, shape, 1.0 / math.sqrt(shape[-1]), param_dtype)


def inverse_softplus(y: Array) -> Array:
    r"""The ``x`` with ``softplus(x) = y`` for ``y > 0``: :math:`y + \log(1 - e^{-y})`, by ``expm1``."""
    return y + jnp.log(-jnp.expm1(-y))


# --------------------------------------------------------------------------
# The selective SSM.


def _check_ssm_params(name: str, params, state_size: int, dt_rank) -> None:
    """Params of the type and the shapes of :class:`SelectiveSSMParams`, ``D`` read off ``w_x [R + 2N, D]``."""
    if not isinstance(params, SelectiveSSMParams):
        raise ValueError(f"{name} expects params of type SelectiveSSMParams, got {type(params).__name__}")
    w_x = _checks.shape(params.w_x)
    if len(w_x) != 2:
        raise ValueError(f"{name}: params.w_x must have rank 2 ([R + 2N, D]), got shape {w_x}")
    D, N = w_x[1], state_size
    R = math.ceil(D / 16) if dt_rank is None else dt_rank
    expected = {"w_x": (R + 2 * N, D), "w_dt": (D, R), "b_dt": (D,), "a_log": (D, N), "d_skip": (D,)}
    for field, shape in expected.items():
        given = _checks.shape(getattr(params, field))
        if given != shape:
            raise ValueError(f"{name}: params.{field} must have shape {shape} (D={D}, N={N}, R={R}), got {given}")
    dtypes = {jnp.result_type(leaf) for leaf in params}
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise ValueError(f"{name}: params must share one floating dtype, got {sorted(str(d) for d in dtypes)}")


def selective_ssm(
    state_size: int = 16,
    *,
    dt_rank=None,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    mode: str = "sequential",
    chunk_size: int = 128,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> LinearCell:
    r"""The selective state space model (S6) of Mamba (Gu and Dao 2023) over ``D`` channels.

    For the input ``x_t [D]`` of one step, one product with ``W_x`` gives the
    step size's low-rank part and the step's ``B`` and ``C`` (the paper's
    :math:`s_\Delta, s_B, s_C` of Algorithm 2, with :math:`s_\Delta` of rank
    ``R`` as in the reference's ``x_proj`` and ``dt_proj``):

    .. math::
        (r_t, B_t, C_t) &= W_x x_t, \qquad r_t \in \mathbb{R}^R,\; B_t, C_t \in \mathbb{R}^N \\
        \Delta_t &= \mathrm{softplus}(W_\Delta r_t + b_\Delta) \in \mathbb{R}^D_{>0} \\
        A &= -\exp(A_{\log}) \in \mathbb{R}^{D \times N}_{<0} \\
        h_t &= \exp(\Delta_t A) \odot h_{t-1} + (\Delta_t \odot x_t)\, B_t^\top \\
        y_t &= h_t C_t + D_{\mathrm{skip}} \odot x_t

    for the state ``h [D, N]`` (real, ``h_0 = 0``; :math:`\Delta_t` is
    broadcast along ``N`` and :math:`B_t` along ``D``). ``A`` is discretised
    by the zero-order hold, :math:`\bar A = \exp(\Delta A)` (the paper's
    eq. 4); ``B`` by the first-order :math:`\bar B = \Delta B` that the
    reference's ``selective_scan_ref`` uses in place of the zero-order
    hold's. As a :class:`scanrnn.kinds.LinearCell`, ``h_t = a_t h_{t-1} +
    b_t`` with ``a_t = exp(Delta_t A)``, which lies in ``(0, 1)`` for any
    params and inputs (``Delta_t > 0`` and ``A < 0``; in floating point in
    ``[0, 1]``), and ``b_t = (Delta_t x_t) B_t^T``, of either sign (so the
    associative mode runs in linear space: there is no log form).
    ``project`` computes ``Delta_t``, ``B_t`` and ``C_t``
    (:class:`SelectiveSSMStep`), ``coefficients`` the ``[D, N]`` pair of
    one step and ``output`` the readout :math:`y_t`.

    Initialisation (the reference's ``mamba_simple.py``): ``A_log[d, n] =
    log(n + 1)``, the S4D-real initialisation :math:`A = -(1, 2, \ldots, N)`
    for every channel; :math:`b_\Delta` the inverse softplus of a step size
    ``dt`` drawn log-uniformly in ``[dt_min, dt_max]`` per channel and
    floored at ``dt_init_floor``, so that :math:`\Delta = \mathrm{dt}` at
    zero input; :math:`W_\Delta \sim U(-R^{-1/2}, R^{-1/2})`;
    :math:`D_{\mathrm{skip}} = 1`; ``W_x`` as PyTorch's default
    ``nn.Linear``, :math:`U(-D^{-1/2}, D^{-1/2})`.

    Params (:class:`SelectiveSSMParams`): ``w_x [R + 2N, D]`` (rows ``r``,
    ``B``, ``C``), ``w_dt [D, R]``, ``b_dt [D]``, ``a_log [D, N]``,
    ``d_skip [D]``. Carry (:class:`scanrnn.RNNCarry`): ``h [D, N]``. The
    output ``y_t`` has the input's width ``D``.

    Args:
      state_size: ``N``, the states per channel (the reference's ``d_state``).
      dt_rank: ``R``, the rank of the step size's projection; ``None`` is
        ``ceil(D / 16)`` for ``D = input_size``, the reference's ``"auto"``
        (in the reference's block ``D`` is the model width: :func:`mamba`
        passes that).
      dt_min, dt_max: the range of the initial step sizes (``0 < dt_min <=
        dt_max``).
      dt_init_floor: the least initial step size (``>= 0``).
      mode: ``"sequential"``, ``"associative"`` or ``"chunked"``
        (:class:`scanrnn.LinearCell`).
      chunk_size: the chunk length of ``mode="chunked"``.
      param_dtype: the params' dtype, and the recurrence's.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the two input
        products (``W_x x`` and ``W_Delta r``) in mixed precision
        (:func:`scanrnn.cells.product`); the recurrence and its readout stay
        in the params' dtype.

    >>> cell = selective_ssm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> carry.h.shape, y.shape, params.w_x.shape
    ((3, 4), (3,), (9, 3))
    """
    name = "selective_ssm"
    N = _checks.positive_int("state_size", state_size)
    if dt_rank is not None:
        dt_rank = _checks.positive_int("dt_rank", dt_rank)
    dt_min = _checks.positive_number("dt_min", dt_min)
    dt_max = _checks.positive_number("dt_max", dt_max)
    if dt_min > dt_max:
        raise ValueError(f"dt_min must be at most dt_max, got dt_min={dt_min!r} and dt_max={dt_max!r}")
    dt_init_floor = _checks.non_negative_number("dt_init_floor", dt_init_floor)
    chunk_size = check_mode(mode, chunk_size, f"{name}:")
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    compute_dtype = _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)

    def check(params):
        _check_ssm_params(name, params, N, dt_rank)

    def init(key, input_size):
        _checks.prng_key("key", key)
        D = _checks.positive_int("input_size", input_size)
        R = math.ceil(D / 16) if dt_rank is None else dt_rank
        k_x, k_dt, k_step = jax.random.split(key, 3)
        dtype = _init_dtype(param_dtype)
        # dt log-uniform in [dt_min, dt_max], floored; the bias is its inverse softplus.
        u = jax.random.uniform(k_step, (D,), dtype)
        dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), dt_init_floor)
        a_log = jnp.log(jnp.arange(1, N + 1, dtype=dtype))  # S4D-real: A = -(1, ..., N)
        params = SelectiveSSMParams(
            w_x=_linear_kernel(k_x, (R + 2 * N, D), param_dtype),
            w_dt=_uniform(k_dt, (D, R), R**-0.5, param_dtype),
            b_dt=inverse_softplus(dt).astype(param_dtype),
            a_log=jnp.broadcast_to(a_log[None, :], (D, N)).astype(param_dtype),
            d_skip=jnp.ones((D,), param_dtype),
        )
        check(params)
        return params

    def initial_carry(params):
        check(params)
        return RNNCarry(jnp.zeros(params.a_log.shape, params.a_log.dtype))

    def project(params, x):
        check(params)
        _checks.example(name, x, params.w_x)
        R = params.w_dt.shape[1]
        x = jnp.asarray(x).astype(params.w_x.dtype)
        r, b, c = jnp.split(product(x, params.w_x, compute_dtype), [R, R + N])
        delta = jax.nn.softplus(product(r, params.w_dt, compute_dtype) + params.b_dt)
        return SelectiveSSMStep(delta, x, b, c)

    def check_p(params, p):
        D = params.d_skip.shape[0]
        expected = SelectiveSSMStep((D,), (D,), (N,), (N,))
        if not isinstance(p, SelectiveSSMStep) or tuple(map(_checks.shape, p)) != expected:
            given = tuple(map(_checks.shape, p)) if isinstance(p, tuple) else _checks.describe(p)
            raise ValueError(
                f"{name}: the projection of one step must be a SelectiveSSMStep of shapes {tuple(expected)} "
                f"(from project), got {given}"
            )

    def coefficients(params, p):
        check_p(params, p)
        A = -jnp.exp(params.a_log)  # [D, N], the same at every step
        a = jnp.exp(p.delta[:, None] * A)
        b = (p.delta * p.x)[:, None] * p.b[None, :]
        return a, b

    def output(params, h, p):
        check_p(params, p)
        return h @ p.c + params.d_skip * p.x

    return LinearCell(init, initial_carry, project, coefficients, output=output, mode=mode, chunk_size=chunk_size)


# --------------------------------------------------------------------------
# The Mamba block.


def mamba(
    *,
    state_size: int = 16,
    conv_width: int = 4,
    expand: int = 2,
    dt_rank=None,
    mode: str = "sequential",
    chunk_size: int = 128,
    param_dtype=jnp.float32,
    compute_dtype=None,
    execution: Optional[Execution] = None,
) -> Layer:
    r"""The Mamba block (Gu and Dao 2023, Section 3.4 and Figure 3) over one sequence ``[T, M]``.

    With ``E = expand * M`` inner channels and ``K = conv_width``:

    .. math::
        (u_t, z_t) &= W_{\mathrm{in}}\, x_t, \qquad u_t, z_t \in \mathbb{R}^E \\
        v_t &= \mathrm{SiLU}\Big(c + \sum_{j=0}^{K-1} w_{:, j} \odot u_{t - (K - 1 - j)}\Big) \\
        s_t &= \mathrm{S6}(v)_t \\
        o_t &= W_{\mathrm{out}} \big(s_t \odot \mathrm{SiLU}(z_t)\big)

    where the convolution is causal and depthwise
    (:func:`scanrnn.conv.depthwise_causal`; the ``K - 1`` inputs before the
    first step are the carry's ``window``, zeros to start) and S6 is
    :func:`selective_ssm` over the ``E`` channels, unrolled by
    :func:`scanrnn.unroll` in ``mode`` from the carry's ``h``. The two
    projections have no bias, the convolution has one (the reference's
    defaults ``bias=False``, ``conv_bias=True``).

    Initialisation (the reference's ``mamba_simple.py``, whose linear and
    convolution layers keep PyTorch's defaults): ``W_in``, ``W_out``
    :math:`U(\pm 1/\sqrt{\text{fan in}})`; the convolution's ``w`` and ``c``
    :math:`U(\pm 1/\sqrt{K})` (a depthwise kernel reads ``K`` inputs); the
    SSM as :func:`selective_ssm`, with ``dt_rank`` ``ceil(M / 16)`` when
    ``None`` (the reference's ``"auto"``, from the model width).

    Params (:class:`MambaParams`): ``in_proj [2E, M]`` (rows ``u`` then
    ``z``), ``conv_w [E, K]``, ``conv_b [E]``, ``ssm``
    (:class:`SelectiveSSMParams` over ``E`` channels), ``out_proj [M, E]``.
    Carry (:class:`MambaCarry`): ``window [K - 1, E]``, ``h [E, N]``.

    ``apply(params, xs, length=None, *, key=None, carry=None)`` takes ``xs
    [T, M]`` and returns ``ys [T, M]``; with ``carry`` it returns ``(ys,
    carry)``, the carry after the last valid step, so a sequence fed in two
    chunks gives what one call gives. With ``length``, outputs past it are
    zeros and inputs past it affect nothing. The block has no dropout: a
    ``key`` is checked and ignored.

    Args:
      state_size: ``N``.
      conv_width: ``K``, the convolution's taps.
      expand: ``E / M``.
      dt_rank: ``R``; ``None`` is ``ceil(M / 16)``.
      mode, chunk_size: how the SSM runs (:class:`scanrnn.LinearCell`).
      param_dtype: the params' dtype.
      compute_dtype: ``None``, or e.g. ``jnp.bfloat16`` for the block's
        products (the two projections and the SSM's input products) in mixed
        precision; the convolution and the recurrence stay in the params' dtype.
      execution: how :func:`scanrnn.unroll` runs the SSM, a
        :class:`scanrnn.Execution` (``None``: the defaults), as for
        :func:`scanrnn.recurrent`: e.g. ``remat="sqrt"`` keeps the memory of
        the backward pass of the sequential mode to ``O(sqrt(T))`` states.

    >>> from scanrnn import serial, dense
    >>> model = serial(mamba(state_size=4), dense(1))
    >>> params = model.init(jax.random.key(0), 8)
    >>> model.apply(params, jnp.ones((10, 8))).shape
    (10, 1)
    >>> block = mamba(state_size=4)
    >>> params = block.init(jax.random.key(0), 8)
    >>> ys, carry = block.apply(params, jnp.ones((10, 8)), carry=block.initial_carry(params))
    >>> ys.shape, carry.window.shape, carry.h.shape
    ((10, 8), (3, 16), (16, 4))
    """
    name = "mamba"
    N = _checks.positive_int("state_size", state_size)
    K = _checks.positive_int("conv_width", conv_width)
    expand = _checks.positive_int("expand", expand)
    if dt_rank is not None:
        dt_rank = _checks.positive_int("dt_rank", dt_rank)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    compute_dtype = _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    chunk_size = check_mode(mode, chunk_size, f"{name}:")
    execution = _execution.check(execution)

    @functools.lru_cache(maxsize=None)
    def ssm(model_width):
        rank = math.ceil(model_width / 16) if dt_rank is None else dt_rank
        return selective_ssm(N, dt_rank=rank, mode=mode, chunk_size=chunk_size, param_dtype=param_dtype,
                             compute_dtype=compute_dtype)

    def check(params):
        if not isinstance(params, MambaParams):
            raise ValueError(f"{name} expects params of type MambaParams, got {type(params).__name__}")
        in_proj = _checks.shape(params.in_proj)
        if len(in_proj) != 2:
            raise ValueError(f"{name}: params.in_proj must have rank 2 ([2E, M]), got shape {in_proj}")
        M = in_proj[1]
        E = expand * M
        expected = {"in_proj": (2 * E, M), "conv_w": (E, K), "conv_b": (E,), "out_proj": (M, E)}
        for field, shape in expected.items():
            given = _checks.shape(getattr(params, field))
            if given != shape:
                raise ValueError(f"{name}: params.{field} must have shape {shape} (M={M}, E={E}, K={K}), got {given}")
        _check_ssm_params(f"{name}: params.ssm", params.ssm, N, math.ceil(M / 16) if dt_rank is None else dt_rank)
        if params.ssm.w_x.shape[1] != E:
            raise ValueError(f"{name}: params.ssm must be over E={E} channels, got {params.ssm.w_x.shape[1]}")
        dtypes = {jnp.result_type(leaf) for leaf in jax.tree.leaves(params)}
        if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
            raise ValueError(f"{name}: params must share one floating dtype, got {sorted(str(d) for d in dtypes)}")
        return M

    def init(key, input_size):
        _checks.prng_key("key", key)
        M = _checks.positive_int("input_size", input_size)
        E = expand * M
        k_in, k_w, k_b, k_ssm, k_out = jax.random.split(key, 5)
        params = MambaParams(
            in_proj=_linear_kernel(k_in, (2 * E, M), param_dtype),
            conv_w=_linear_kernel(k_w, (E, K), param_dtype),
            conv_b=_uniform(k_b, (E,), 1.0 / math.sqrt(K), param_dtype),
            ssm=ssm(M).init(k_ssm, E),
            out_proj=_linear_kernel(k_out, (M, E), param_dtype),
        )
        check(params)
        return params

    def initial_carry(params):
        check(params)
        E = params.conv_w.shape[0]
        dtype = params.conv_w.dtype
        return MambaCarry(jnp.zeros((K - 1, E), dtype), jnp.zeros((E, N), dtype))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)  # no dropout: checked, not used
        M = check(params)
        xs = check_sequence(xs)
        dtype = params.in_proj.dtype
        if xs.shape[1] != M:
            raise ValueError(f"{name}: xs must have shape [T, {M}] (input_size from params), got {xs.shape}")
        if jnp.issubdtype(xs.dtype, jnp.floating) and xs.dtype != dtype:
            raise ValueError(f"{name}: xs must have the params' dtype {dtype}, got {xs.dtype}; cast one of them")
        length = check_length(length, xs.shape[0])
        if carry is None:
            start = initial_carry(params)
        else:
            check_carry(name, jax.eval_shape(initial_carry, params), carry)
            start = carry
        xs = mask_padding(xs, length).astype(dtype)  # padding never enters: no bias makes it u = z = 0
        u, z = jnp.split(product(xs, params.in_proj, compute_dtype), 2, axis=-1)  # [T, E] each
        v, window = depthwise_causal(params.conv_w, params.conv_b, u, start.window, length)
        final, s = unroll(ssm(M), params.ssm, jax.nn.silu(v), RNNCarry(start.h), length=length,
                          execution=execution)  # s: zeros past length
        ys = product(s * jax.nn.silu(z), params.out_proj, compute_dtype)
        return ys if carry is None else (ys, MambaCarry(window, final.h))

    return Layer(init, apply, initial_carry)
