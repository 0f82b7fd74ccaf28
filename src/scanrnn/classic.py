r"""The partially recurrent networks of the second seed: Jordan, Elman and NARX.

Each factory returns a :class:`scanrnn.kinds.GatedCell` (an input
projection, the product of what is fed back, an elementwise core; ``apply``
over ONE example derived from them), so the cells run in :func:`scanrnn.unroll`,
:func:`scanrnn.recurrent`, :func:`scanrnn.serial` and :func:`scanrnn.train.fit`
unchanged. Unlike the cells of :mod:`scanrnn.cells`, each includes its linear
output layer: its ``y`` is the network's output ``[O]``, because in the
Jordan and NARX networks that output is what is fed back.

All three share one hidden layer

.. math::
    h_t = \phi(W x_t + (\text{feedback}) + b), \qquad y_t = V h_t + c

and differ in what the feedback is:

- :func:`jordan` (Jordan 1986): a state unit keeps a fixed-rate decaying sum
  of past outputs, :math:`\mu_t = \alpha \mu_{t-1} + y_{t-1}`, fed to the
  hidden layer through learned weights;
- :func:`elman` (Elman 1990): the previous hidden state is copied into context
  units by fixed links of weight 1, :math:`c_t = h_{t-1}`, and fed back
  through learned weights;
- :func:`narx` (Lin, Horne, Tino and Giles 1996): tapped delay lines of the
  last ``k`` inputs and the last ``k`` outputs.

Regularisation (:mod:`scanrnn.regularization`): recurrent dropout masks
what is fed back through a learned weight, the state unit ``memory`` of
:func:`jordan` (before ``U``), the context units of :func:`elman` and the
output delay line of :func:`narx` (before ``U_1 .. U_k``; its input delay
line holds inputs, which ``dropout`` masks). Zoneout acts on the carry (the
state unit, the context units, the delay lines); the output ``y`` is the
output layer of the step's fresh hidden layer, as without zoneout.

Weights use the ``[out, in]`` layout of :mod:`scanrnn.cells`; input and
output kernels start Glorot-uniform, feedback kernels orthogonal, biases at
zero (each replaceable by any ``init(key, shape, dtype)``). As there, every
factory takes ``compute_dtype`` (e.g. ``jnp.bfloat16``) for mixed-precision
matrix products, the output layer's included.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _checks
from . import cells as _cells
from .cells import Initializer, glorot_uniform, orthogonal, zeros
from .kinds import GatedCell

__all__ = [
    "JordanParams",
    "JordanCarry",
    "ElmanParams",
    "ElmanCarry",
    "NARXParams",
    "NARXCarry",
    "jordan",
    "elman",
    "narx",
]

Array = jax.Array


# --------------------------------------------------------------------------
# Params and carries.


class JordanParams(NamedTuple):
    """Params of :func:`jordan`."""

    w_ih: Array  # [H, I]  input to hidden
    w_mh: Array  # [H, O]  state (memory) unit to hidden
    b: Array  # [H]
    w_ho: Array  # [O, H]  hidden to output
    b_o: Array  # [O]


class JordanCarry(NamedTuple):
    """Carry of :func:`jordan`: the state unit that the next step reads."""

    memory: Array  # [O]  mu_{t+1} = alpha mu_t + y_t


class ElmanParams(NamedTuple):
    """Params of :func:`elman`."""

    w_ih: Array  # [H, I]  input to hidden
    w_hh: Array  # [H, H]  context to hidden
    b: Array  # [H]
    w_ho: Array  # [O, H]  hidden to output
    b_o: Array  # [O]


class ElmanCarry(NamedTuple):
    """Carry of :func:`elman`: the context units, a copy of the hidden state."""

    context: Array  # [H]  h_t


class NARXParams(NamedTuple):
    """Params of :func:`narx`."""

    w_ih: Array  # [H, I]     current input x_t to hidden
    w_xh: Array  # [H, k I]   past inputs x_{t-1} .. x_{t-k}, concatenated, to hidden
    w_yh: Array  # [H, k O]   past outputs y_{t-1} .. y_{t-k}, concatenated, to hidden
    b: Array  # [H]
    w_ho: Array  # [O, H]     hidden to output
    b_o: Array  # [O]


class NARXCarry(NamedTuple):
    """Carry of :func:`narx`: the two tapped delay lines, newest first."""

    inputs: Array  # [k, I]  x_{t-1}, ..., x_{t-k} (zeros before the start)
    outputs: Array  # [k, O]  y_{t-1}, ..., y_{t-k}


# --------------------------------------------------------------------------
# One assembler with the shape checks, shared by the three cells.


def _check_carry(name: str, carry, cls, expected: dict, dtype) -> None:
    if not isinstance(carry, cls):
        raise ValueError(f"{name} expects a carry of type {cls.__name__}, got {type(carry).__name__}")
    for field, shape in expected.items():
        value = getattr(carry, field)
        given = _checks.shape(value)
        if given != shape:
            raise ValueError(f"{name}: carry.{field} must have shape {shape}, got {given}")
        _checks.carry_dtype(name, field, value, dtype)


def _make_cell(
    name: str,
    params_cls,
    carry_cls,
    shapes: Callable[[int], dict],
    carry_shapes: Callable[[int], dict],
    make_params: Callable[[Array, int], NamedTuple],
    project: Callable,
    recurrent: Callable,
    core: Callable,
    matrices: tuple,
) -> GatedCell:
    """A :class:`scanrnn.kinds.GatedCell` from the unchecked maths, checking what it is given.

    ``shapes(I)`` and ``carry_shapes(I)`` give the params' and the carry's
    field shapes for input size ``I`` (read off ``params.w_ih [H, I]``).
    ``recurrent(params, carry)`` is the product of what is fed back through
    a learned weight (recurrent dropout masks it there); ``core(params,
    carry, p, r)`` is the rest of the step, output layer included, so the
    cell's ``y`` is not its carry (``emits_state=False``).
    """

    def check(params) -> int:
        _checks.cell_params(name, params, params_cls, shapes)
        return params.w_ih.shape[1]

    init = _cells.checked_init(make_params, check)

    def initial_carry(params):
        input_size = check(params)
        dtype = params.w_ih.dtype
        return carry_cls(**{f: jnp.zeros(s, dtype) for f, s in carry_shapes(input_size).items()})

    def checked_project(params, x):
        check(params)
        _checks.example(name, x, params.w_ih)
        return project(params, x)

    def checked_recurrent(params, carry):
        input_size = check(params)
        _check_carry(name, carry, carry_cls, carry_shapes(input_size), params.w_ih.dtype)
        return recurrent(params, carry)

    return GatedCell(init, initial_carry, checked_project, checked_recurrent, core, matrices, False)


def _output_layer(params, h, mm):
    """The linear output layer ``y = V h + c`` the three cells share."""
    return mm(h, params.w_ho) + params.b_o


def _products(compute_dtype) -> Callable[[Array, Array], Array]:
    """``mm(x, w) = x @ w.T``, in ``compute_dtype`` when one is given (:func:`scanrnn.cells.product`)."""
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    return lambda x, w: _cells.product(x, w, compute_dtype)


def _check_sizes(hidden_size, output_size) -> tuple[int, int]:
    return _checks.positive_int("hidden_size", hidden_size), _checks.positive_int("output_size", output_size)


def _initializers(param_dtype, *inits):
    """Each ``init(key, shape, dtype)`` as ``(key, shape) -> params of param_dtype`` (:func:`scanrnn.cells.param_init`)."""
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    return tuple(_cells.param_init(init, param_dtype) for init in inits)


# --------------------------------------------------------------------------
# The cells.


def jordan(
    hidden_size: int,
    output_size: int,
    alpha: float = 0.5,
    activation: str = "tanh",
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""A Jordan network (Jordan 1986): the outputs are fed back through a decaying state unit.

    .. math::
        \mu_t &= \alpha\, \mu_{t-1} + y_{t-1}, \qquad \mu_1 = 0 \\
        h_t &= \phi(W x_t + U \mu_t + b) \\
        y_t &= V h_t + c

    The state (memory) unit :math:`\mu` is a fixed-rate running average of
    past outputs: its self-link ``alpha`` and the output-to-state link (1)
    are fixed; only ``U`` (state to hidden) is learned. The second seed
    calls it a memory model whose memory "does not learn to remember or
    forget". With ``alpha = 0`` the network sees its last output only.

    Args:
      hidden_size: ``H``.
      output_size: ``O``, the size of ``y`` (and of the state unit).
      alpha: the state unit's fixed decay, in ``[0, 1)``.
      activation: ``phi``, ``"tanh"``, ``"sigmoid"`` or ``"relu"``.

    Params (:class:`JordanParams`): ``w_ih [H, I]``, ``w_mh [H, O]``,
    ``b [H]``, ``w_ho [O, H]``, ``b_o [O]``.
    Carry (:class:`JordanCarry`): ``memory [O]``, the state unit the next
    step reads, :math:`\mu_{t+1} = \alpha \mu_t + y_t`.

    >>> cell = jordan(8, 1, alpha=0.5)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape, carry.memory.shape
    ((1,), (1,))
    """
    H, O = _check_sizes(hidden_size, output_size)
    mm = _products(compute_dtype)
    alpha = _checks.rate("alpha", alpha)
    phi = _cells.activation_function(activation)
    kernel, recurrent, bias = _initializers(param_dtype, kernel_init, recurrent_init, bias_init)

    def shapes(I):
        return {"w_ih": (H, I), "w_mh": (H, O), "b": (H,), "w_ho": (O, H), "b_o": (O,)}

    def make_params(key, input_size):
        k = jax.random.split(key, 5)
        return JordanParams(
            w_ih=kernel(k[0], (H, input_size)),
            w_mh=recurrent(k[1], (H, O)),
            b=bias(k[2], (H,)),
            w_ho=kernel(k[3], (O, H)),
            b_o=bias(k[4], (O,)),
        )

    def project(params, x):
        return mm(x, params.w_ih) + params.b

    def feedback(params, carry):
        return mm(carry.memory, params.w_mh)

    def core(params, carry, p, r):
        y = _output_layer(params, phi(p + r), mm)
        return JordanCarry(alpha * carry.memory + y), y

    return _make_cell("jordan", JordanParams, JordanCarry, shapes, lambda I: {"memory": (O,)},
                      make_params, project, feedback, core, ("w_ih", "w_mh"))


def elman(
    hidden_size: int,
    output_size: int,
    activation: str = "tanh",
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""An Elman network (Elman 1990): the hidden state is copied into context units.

    .. math::
        c_t &= h_{t-1}, \qquad c_1 = 0 \\
        h_t &= \phi(W x_t + U c_t + b) \\
        y_t &= V h_t + c_o

    The copy from hidden to context units is a fixed link of weight 1; the
    context-to-hidden weights ``U`` are learned. The recurrence is that of
    :func:`scanrnn.simple_rnn`; this cell adds the network's output layer.

    Args:
      hidden_size: ``H`` (the number of hidden and of context units).
      output_size: ``O``, the size of ``y``.
      activation: ``phi``, ``"tanh"``, ``"sigmoid"`` or ``"relu"``.

    Params (:class:`ElmanParams`): ``w_ih [H, I]``, ``w_hh [H, H]``,
    ``b [H]``, ``w_ho [O, H]``, ``b_o [O]``.
    Carry (:class:`ElmanCarry`): ``context [H]``.
    """
    H, O = _check_sizes(hidden_size, output_size)
    mm = _products(compute_dtype)
    phi = _cells.activation_function(activation)
    kernel, recurrent, bias = _initializers(param_dtype, kernel_init, recurrent_init, bias_init)

    def shapes(I):
        return {"w_ih": (H, I), "w_hh": (H, H), "b": (H,), "w_ho": (O, H), "b_o": (O,)}

    def make_params(key, input_size):
        k = jax.random.split(key, 5)
        return ElmanParams(
            w_ih=kernel(k[0], (H, input_size)),
            w_hh=recurrent(k[1], (H, H)),
            b=bias(k[2], (H,)),
            w_ho=kernel(k[3], (O, H)),
            b_o=bias(k[4], (O,)),
        )

    def project(params, x):
        return mm(x, params.w_ih) + params.b

    def feedback(params, carry):
        return mm(carry.context, params.w_hh)

    def core(params, carry, p, r):
        h = phi(p + r)
        return ElmanCarry(h), _output_layer(params, h, mm)

    return _make_cell("elman", ElmanParams, ElmanCarry, shapes, lambda I: {"context": (H,)},
                      make_params, project, feedback, core, ("w_ih", "w_hh"))


def narx(
    hidden_size: int,
    output_size: int,
    k: int = 2,
    activation: str = "tanh",
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""A NARX network (Lin, Horne, Tino and Giles 1996): delay lines of inputs and outputs.

    .. math::
        h_t &= \phi\Big(W_0 x_t + \sum_{j=1}^{k} W_j x_{t-j} + \sum_{j=1}^{k} U_j y_{t-j} + b\Big) \\
        y_t &= V h_t + c

    with :math:`x_u = 0` and :math:`y_u = 0` before the first step: the
    output depends on the current input, the last ``k`` inputs and the last
    ``k`` outputs (input and output memory orders both ``k``), a nonlinear
    autoregressive model with exogenous inputs.

    Args:
      hidden_size: ``H``.
      output_size: ``O``, the size of ``y``.
      k: the number of delayed inputs and of delayed outputs, at least 1.
      activation: ``phi``, ``"tanh"``, ``"sigmoid"`` or ``"relu"``.

    Params (:class:`NARXParams`): ``w_ih [H, I]`` (``W_0``), ``w_xh [H, k I]``
    (``W_1 .. W_k`` side by side), ``w_yh [H, k O]`` (``U_1 .. U_k``),
    ``b [H]``, ``w_ho [O, H]``, ``b_o [O]``.
    Carry (:class:`NARXCarry`): ``inputs [k, I]`` and ``outputs [k, O]``,
    newest first. ``project(params, x)`` is the pair ``(W_0 x + b, x)``.
    """
    H, O = _check_sizes(hidden_size, output_size)
    mm = _products(compute_dtype)
    k = _checks.positive_int("k", k)
    phi = _cells.activation_function(activation)
    kernel, recurrent, bias = _initializers(param_dtype, kernel_init, recurrent_init, bias_init)

    def shapes(I):
        return {"w_ih": (H, I), "w_xh": (H, k * I), "w_yh": (H, k * O), "b": (H,), "w_ho": (O, H), "b_o": (O,)}

    def make_params(key, input_size):
        keys = jax.random.split(key, 6)
        return NARXParams(
            w_ih=kernel(keys[0], (H, input_size)),
            w_xh=kernel(keys[1], (H, k * input_size)),
            w_yh=recurrent(keys[2], (H, k * O)),
            b=bias(keys[3], (H,)),
            w_ho=kernel(keys[4], (O, H)),
            b_o=bias(keys[5], (O,)),
        )

    def project(params, x):
        return mm(x, params.w_ih) + params.b, x

    def feedback(params, carry):
        return mm(carry.outputs.reshape(-1), params.w_yh)  # the fed-back outputs; the inputs are not recurrent

    def core(params, carry, p, r):
        current, x = p
        h = phi(current + mm(carry.inputs.reshape(-1), params.w_xh) + r)
        y = _output_layer(params, h, mm)
        # Shift both delay lines by one step, the newest value first.
        inputs = jnp.concatenate([x[None], carry.inputs[:-1]])
        outputs = jnp.concatenate([y[None], carry.outputs[:-1]])
        return NARXCarry(inputs, outputs), y

    return _make_cell("narx", NARXParams, NARXCarry, shapes, lambda I: {"inputs": (k, I), "outputs": (k, O)},
                      make_params, project, feedback, core, ("w_ih", "w_yh"))
