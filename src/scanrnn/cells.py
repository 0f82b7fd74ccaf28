"""The built-in gated cells: simple (Elman), LSTM, GRU and the layer-normalised ones.

Each factory (``lstm(hidden_size)``) returns a
:class:`scanrnn.kinds.GatedCell`: an input projection ``project(params, x)``,
one recurrent product ``recurrent(params, carry)`` (``W_hh h``; the Cho GRU's
reset gate acts before its products, so its ``recurrent`` hands the core
``h`` and the core makes them) and an elementwise ``core``, from which
``apply(params, carry, x) -> (carry, y)``, one step of ONE example, is
derived. :mod:`scanrnn.kinds` states the contract.

Weights follow the convention ``W x`` (shape ``[out, in]``) of the first seed
and of PyTorch; gates are stacked along the first axis in PyTorch's order.
Every factory takes ``compute_dtype`` (default ``None``): with
``compute_dtype=jnp.bfloat16`` the cell's matrix products cast their
operands to bfloat16 and accumulate in the params' float32
(:func:`product`), while params, carries and the elementwise maths stay
float32: mixed precision for accelerators with fast bfloat16 products.

Default initialisers follow Keras: Glorot-uniform input kernels, orthogonal
recurrent kernels, zero biases (and the LSTM forget-gate bias set to
``forget_bias``). Each can be replaced by any ``init(key, shape, dtype)``
function, such as those in :mod:`jax.nn.initializers`. ``param_dtype`` is a
floating dtype; one narrower than float32 (``jnp.bfloat16``) is initialised
in float32 and cast (:func:`param_init`), since LAPACK, behind the
orthogonal initialiser, has no bfloat16.

Every factory checks its options when it is called (sizes positive ints,
``peephole`` and ``reset_after`` booleans, ``forget_bias`` finite,
``epsilon`` positive and finite), and every function of a cell checks what
it is given (a PRNG key; params of the cell's type and shapes; ``x`` of
shape ``[input_size]``, real, of the params' dtype when floating; a carry
of the cell's type, shapes and the params' dtype) before any arithmetic.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.nn import initializers

from . import _checks
from .kinds import GatedCell

__all__ = [
    "RNNParams",
    "LSTMParams",
    "PeepholeLSTMParams",
    "ProjectedLSTMParams",
    "ProjectedPeepholeLSTMParams",
    "GRUParams",
    "LayerNormRNNParams",
    "LayerNormLSTMParams",
    "RNNCarry",
    "LSTMCarry",
    "ACTIVATIONS",
    "activation_function",
    "param_init",
    "product",
    "gate_projection",
    "checked_init",
    "simple_rnn",
    "lstm",
    "gru",
    "layer_norm_rnn",
    "layer_norm_lstm",
]

Array = jax.Array
Initializer = Callable[[Array, tuple, Any], Array]


# --------------------------------------------------------------------------
# Params and carries.


class RNNParams(NamedTuple):
    """Params of :func:`simple_rnn`."""

    w_ih: Array  # [H, I]   input kernel W
    w_hh: Array  # [H, H]   recurrent kernel W_hh
    b: Array  # [H]


class LSTMParams(NamedTuple):
    """Params of :func:`lstm` without peepholes; gates stacked (i, f, g, o)."""

    w_ih: Array  # [4H, I]
    w_hh: Array  # [4H, H]
    b: Array  # [4H]


class PeepholeLSTMParams(NamedTuple):
    """Params of ``lstm(..., peephole=True)``; gates stacked (i, f, g, o)."""

    w_ih: Array  # [4H, I]
    w_hh: Array  # [4H, H]
    b: Array  # [4H]
    w_ci: Array  # [H]  input gate sees c[t-1]
    w_cf: Array  # [H]  forget gate sees c[t-1]
    w_co: Array  # [H]  output gate sees c[t]


class ProjectedLSTMParams(NamedTuple):
    """Params of ``lstm(..., proj_size=P)``; gates stacked (i, f, g, o)."""

    w_ih: Array  # [4H, I]
    w_hh: Array  # [4H, P]  reads the projected state
    b: Array  # [4H]
    w_hr: Array  # [P, H]  the projection, h = W_hr (o * tanh(c))


class ProjectedPeepholeLSTMParams(NamedTuple):
    """Params of ``lstm(..., peephole=True, proj_size=P)``; gates stacked (i, f, g, o)."""

    w_ih: Array  # [4H, I]
    w_hh: Array  # [4H, P]
    b: Array  # [4H]
    w_ci: Array  # [H]
    w_cf: Array  # [H]
    w_co: Array  # [H]
    w_hr: Array  # [P, H]


class GRUParams(NamedTuple):
    """Params of :func:`gru`; gates stacked (r, z, n) as in PyTorch."""

    w_ih: Array  # [3H, I]
    w_hh: Array  # [3H, H]
    b_ih: Array  # [3H]  input bias
    b_hh: Array  # [3H]  recurrent bias


class LayerNormRNNParams(NamedTuple):
    """Params of :func:`layer_norm_rnn`."""

    w_ih: Array  # [H, I]
    w_hh: Array  # [H, H]
    b: Array  # [H]
    ln_scale: Array  # [H]  layer-norm gain
    ln_offset: Array  # [H]  layer-norm offset


class LayerNormLSTMParams(NamedTuple):
    """Params of :func:`layer_norm_lstm`; gates stacked (i, f, g, o)."""

    w_ih: Array  # [4H, I]
    w_hh: Array  # [4H, H]
    b: Array  # [4H]  the one bias (absorbs the offsets of both gate norms)
    ln_x_scale: Array  # [4H]  gain of LN(W_ih x)
    ln_h_scale: Array  # [4H]  gain of LN(W_hh h)
    ln_c_scale: Array  # [H]   gain of LN(c)
    ln_c_offset: Array  # [H]  offset of LN(c)


class RNNCarry(NamedTuple):
    """Carry of the simple, GRU and layer-normalised simple cells."""

    h: Array  # [H]


class LSTMCarry(NamedTuple):
    """Carry of the LSTM cells."""

    h: Array  # [H]  hidden state (the output); [P] with a projection
    c: Array  # [H]  cell state (the constant error carousel)


# --------------------------------------------------------------------------
# Shared helpers.

ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}

# Keras' defaults, in the [out, in] layout used here.
glorot_uniform = initializers.glorot_uniform(in_axis=-1, out_axis=-2)
orthogonal = initializers.orthogonal()
zeros = initializers.zeros
ones = initializers.ones


def activation_function(name: str) -> Callable:
    """The activation function called ``name``, one of :data:`ACTIVATIONS`; a ValueError otherwise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]











def param_init(init: Initializer, param_dtype) -> Callable[[Array, tuple], Array]:
    """``init`` as ``(key, shape) -> params of param_dtype``.

    A dtype narrower than float32 (``jnp.bfloat16``, ``jnp.float16``) is
    initialised in float32 and cast: LAPACK, behind the orthogonal
    initialiser's QR decomposition, has no such dtype. float32 and float64
    are initialised in their own dtype, as ``init`` would be called directly.
    """
    if jnp.finfo(param_dtype).bits >= 32:
        return lambda key, shape: init(key, shape, param_dtype)
    return lambda key, shape: jnp.asarray(init(key, shape, jnp.float32)).astype(param_dtype)

















def _layer_norm(z: Array, scale: Array, offset: Optional[Array], epsilon: float) -> Array:
    """Normalise a vector to zero mean and unit variance, then scale (and offset) it."""
    mean = jnp.mean(z)
    centred = z - mean
    var = jnp.mean(centred * centred)
    out = centred * jax.lax.rsqrt(var + epsilon) * scale
    return out if offset is None else out + offset





def product(x: Array, w: Array, compute_dtype=None) -> Array:
    """``x @ w.T``, the matrix product of a cell; with ``compute_dtype``, mixed precision.

    ``compute_dtype`` (e.g. ``jnp.bfloat16``) is the dtype both operands are
    cast to; the products accumulate in, and return, ``w``'s dtype (the
    params' float32), so the carry and everything elementwise stay float32.
    """
    if compute_dtype is None:
        return x @ w.T
    return jnp.matmul(x.astype(compute_dtype), w.T.astype(compute_dtype), preferred_element_type=w.dtype)


def gate_projection(x: Array, w: Array, b: Array, gates: int, compute_dtype=None) -> Array:
    """``product(x, w) + b`` for a cell with ``gates`` gate blocks stacked in ``w``'s rows.

    With one input feature it is made gate by gate and concatenated, which
    gives the same numbers. There XLA's CPU compiler turns the product into
    an outer product fused with the step's gate maths, and the GRU, which
    slices both it and the recurrent product per gate, ran its steps at
    less than half speed; the slices of the concatenation fold away. The
    LSTM adds the two products before it slices, and does not use this
    (gate by gate its training step was the slower). The figures are in
    BENCHMARKS.md ("One input feature").
    """
    if w.shape[-1] != 1:
        return product(x, w, compute_dtype) + b
    blocks = zip(jnp.split(w, gates), jnp.split(b, gates))
    return jnp.concatenate([product(x, w_g, compute_dtype) + b_g for w_g, b_g in blocks], axis=-1)


def checked_init(make_params: Callable, check: Callable) -> Callable:
    """A cell's ``init(key, input_size)``: the key and size checked, ``make_params(key, input_size)``, its result checked."""

    def init(key, input_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", input_size)
        params = make_params(key, input_size)
        check(params)
        return params

    return init


def _make_cell(
    name: str,
    hidden_size: int,
    params_cls,
    carry_cls,
    shapes: Callable[[int], dict],
    make_params: Callable[[Array, int], NamedTuple],
    project: Callable,
    core: Callable,
    recurrent: Optional[Callable] = None,
    matrices: tuple = ("w_ih", "w_hh"),
    compute_dtype=None,
    cudnn: Optional[str] = None,
    carry_sizes: Optional[dict] = None,
) -> GatedCell:
    """Assemble a built-in :class:`scanrnn.kinds.GatedCell` with its shape checks.

    ``project(params, x)``, ``recurrent(params, carry)`` and ``core(params,
    carry, p, r)`` are the unchecked maths; ``recurrent`` defaults to the
    one product ``W_hh h`` of ``carry.h``. ``project`` checks the params
    and ``x`` before it runs, ``recurrent`` the params and the carry, so
    ``apply`` checks everything it is given at trace time. ``core`` is left
    unchecked: the hand-written backward pass calls it with the ``matrices``
    set to ``None``. ``carry_sizes`` gives each carry field's size when
    they differ (default: ``hidden_size`` for every field).

    The products are written with the example's vector first, ``h @ W.T``:
    under :func:`jax.vmap` the batch then stays the leading, row-major axis
    of the product's result, which on a CPU saves XLA a transpose per step
    and per stacked ``[T, B, G]`` array (``experiments/benchmarks``).
    """
    if recurrent is None:

        def recurrent(params, carry):
            return product(carry.h, params.w_hh, compute_dtype)

    def check(params):
        _checks.cell_params(name, params, params_cls, shapes)

    init = checked_init(make_params, check)

    sizes = carry_sizes or {field: hidden_size for field in carry_cls._fields}

    def initial_carry(params):
        check(params)
        return carry_cls(*(jnp.zeros((sizes[field],), params.w_hh.dtype) for field in carry_cls._fields))

    def checked_project(params, x):
        check(params)
        _checks.example(name, x, params.w_ih)
        return project(params, x)

    def checked_recurrent(params, carry):
        check(params)
        _checks.cell_carry(name, carry, carry_cls, sizes, params.w_hh.dtype)
        return recurrent(params, carry)

    return GatedCell(init, initial_carry, checked_project, checked_recurrent, core, matrices, cudnn=cudnn)


def _keys(key, n):
    return jax.random.split(key, n)


# --------------------------------------------------------------------------
# The cells.


def simple_rnn(
    hidden_size: int,
    activation: str = "tanh",
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""The simple (Elman) recurrent cell.

    .. math::
        h_t = \phi(W x_t + W_{hh} h_{t-1} + b), \qquad y_t = h_t

    with :math:`\phi` one of ``tanh``, ``sigmoid`` (the first seed's layers)
    or ``relu``; Keras' ``SimpleRNN`` and ``torch.nn.RNN`` (whose two biases
    sum to ``b``).

    Params (:class:`RNNParams`): ``w_ih [H, I]``, ``w_hh [H, H]``, ``b [H]``.
    Carry (:class:`RNNCarry`): ``h [H]``.

    >>> cell = simple_rnn(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> y.shape
    (4,)
    """
    H = _checks.positive_int("hidden_size", hidden_size)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    phi = activation_function(activation)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, recurrent, bias = (param_init(f, param_dtype) for f in (kernel_init, recurrent_init, bias_init))

    def shapes(I):
        return {"w_ih": (H, I), "w_hh": (H, H), "b": (H,)}

    def make_params(key, input_size):
        k1, k2, k3 = _keys(key, 3)
        return RNNParams(w_ih=kernel(k1, (H, input_size)), w_hh=recurrent(k2, (H, H)), b=bias(k3, (H,)))

    def project(params, x):
        return product(x, params.w_ih, compute_dtype) + params.b

    def core(params, carry, p, r):
        h = phi(p + r)
        return RNNCarry(h), h

    return _make_cell("simple_rnn", H, RNNParams, RNNCarry, shapes, make_params, project, core, compute_dtype=compute_dtype)


def lstm(
    hidden_size: int,
    peephole: bool = False,
    forget_bias: float = 1.0,
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    peephole_init: Initializer = zeros,
    proj_size: Optional[int] = None,
    projection_init: Initializer = glorot_uniform,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""Long short-term memory, in PyTorch's gate order (i, f, g, o), optionally with a projection.

    .. math::
        i_t &= \sigma(W_i x_t + U_i h_{t-1} + b_i \;[+\; p_i \odot c_{t-1}]) \\
        f_t &= \sigma(W_f x_t + U_f h_{t-1} + b_f \;[+\; p_f \odot c_{t-1}]) \\
        g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        o_t &= \sigma(W_o x_t + U_o h_{t-1} + b_o \;[+\; p_o \odot c_t]) \\
        h_t &= o_t \odot \tanh(c_t) \;\;[\,h_t = W_{hr} (o_t \odot \tanh(c_t))\,], \qquad y_t = h_t

    With ``proj_size=P`` (the LSTMP of Sak et al. 2014, "Long Short-Term
    Memory Based Recurrent Neural Network Architectures for Large Vocabulary
    Speech Recognition"; ``torch.nn.LSTM(proj_size=P)``) the hidden state is
    projected to ``P < H`` features by ``W_hr [P, H]``: the output, the
    carry's ``h`` and what the recurrent kernel ``U [4H, P]`` reads are all
    of size ``P``, while the cell state keeps ``H``. This cuts the recurrent
    product from ``4H x H`` to ``4H x P``.

    The bracketed peephole terms (Gers and Schmidhuber 2000; the second
    seed's "peephole connection") are present with ``peephole=True``: the
    input and forget gates see the previous cell state, the output gate the
    new one, through diagonal weights. ``b_f`` starts at ``forget_bias``
    (Keras' ``unit_forget_bias``; Jozefowicz et al. 2015).

    Params: :class:`LSTMParams` ``w_ih [4H, I]``, ``w_hh [4H, H]``, ``b [4H]``;
    with peepholes :class:`PeepholeLSTMParams` adds ``w_ci, w_cf, w_co [H]``.
    With a projection, :class:`ProjectedLSTMParams` (or
    :class:`ProjectedPeepholeLSTMParams`) has ``w_hh [4H, P]`` and adds
    ``w_hr [P, H]``, initialised by ``projection_init`` (Glorot-uniform).
    Carry (:class:`LSTMCarry`): ``h [H]`` (``[P]`` with a projection), ``c [H]``.

    >>> cell = lstm(4, peephole=True)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> carry.c.shape
    (4,)
    """
    H = _checks.positive_int("hidden_size", hidden_size)
    peephole = _checks.flag("peephole", peephole)
    forget_bias = _checks.finite_real("forget_bias", forget_bias)
    projected = proj_size is not None
    if projected:
        P = _checks.positive_int("proj_size", proj_size)
        if P >= H:
            raise ValueError(
                f"proj_size must be smaller than hidden_size={H} (as in torch.nn.LSTM), got proj_size={P}; "
                "use proj_size=None for no projection"
            )
    else:
        P = H
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, recurrent, bias, peep, projection = (
        param_init(f, param_dtype) for f in (kernel_init, recurrent_init, bias_init, peephole_init, projection_init)
    )
    cls = {
        (False, False): LSTMParams,
        (True, False): PeepholeLSTMParams,
        (False, True): ProjectedLSTMParams,
        (True, True): ProjectedPeepholeLSTMParams,
    }[peephole, projected]

    def shapes(I):
        s = {"w_ih": (4 * H, I), "w_hh": (4 * H, P), "b": (4 * H,)}
        if peephole:
            s.update(w_ci=(H,), w_cf=(H,), w_co=(H,))
        if projected:
            s.update(w_hr=(P, H))
        return s

    def make_params(key, input_size):
        k1, k2, k3, k4, k5 = _keys(key, 5)
        fields = {
            "w_ih": kernel(k1, (4 * H, input_size)),
            "w_hh": recurrent(k2, (4 * H, P)),
            "b": bias(k3, (4 * H,)).at[H : 2 * H].set(forget_bias),
        }
        if peephole:
            fields.update(zip(("w_ci", "w_cf", "w_co"), (peep(k, (H,)) for k in _keys(k4, 3))))
        if projected:
            fields["w_hr"] = projection(k5, (P, H))
        return cls(**fields)

    def project(params, x):
        return product(x, params.w_ih, compute_dtype) + params.b

    def core(params, carry, p, r):
        i, f, g, o = jnp.split(p + r, 4)
        if peephole:
            i = i + params.w_ci * carry.c
            f = f + params.w_cf * carry.c
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        if peephole:
            o = o + params.w_co * c
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        if projected:  # a product the core makes: its gradient is summed step by step, like a small param's
            h = product(h, params.w_hr, compute_dtype)
        return LSTMCarry(h, c), h

    # cuDNN computes this cell exactly without peepholes or a projection, and in float32 products.
    same_as_cudnn = "lstm" if not peephole and not projected and compute_dtype is None else None
    return _make_cell("lstm", H, cls, LSTMCarry, shapes, make_params, project, core, compute_dtype=compute_dtype,
                      cudnn=same_as_cudnn, carry_sizes={"h": P, "c": H})


def gru(
    hidden_size: int,
    reset_after: bool = True,
    *,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""Gated recurrent unit, gates stacked (r, z, n) as in PyTorch.

    .. math::
        r_t &= \sigma(W_r x_t + b_{ir} + U_r h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_z x_t + b_{iz} + U_z h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_n x_t + b_{in} + r_t \odot (U_n h_{t-1} + b_{hn}))
            &\text{(reset_after=True)} \\
        n_t &= \tanh(W_n x_t + b_{in} + U_n (r_t \odot h_{t-1}) + b_{hn})
            &\text{(reset_after=False)} \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad y_t = h_t

    ``reset_after=True`` is the form of PyTorch, cuDNN and Keras' default:
    the reset gate multiplies the recurrent product, so the recurrent matmul
    of all three gates is one product. ``reset_after=False`` is Cho et al.
    (2014), where the reset gate multiplies ``h`` before it; there ``b_hn``
    only shifts ``b_in`` (both are kept so the two forms share one layout).

    Params (:class:`GRUParams`): ``w_ih [3H, I]``, ``w_hh [3H, H]``,
    ``b_ih [3H]``, ``b_hh [3H]``. Carry (:class:`RNNCarry`): ``h [H]``.

    >>> cell = gru(4, reset_after=False)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> cell.apply(params, cell.initial_carry(params), jnp.ones(3))[1].shape
    (4,)
    """
    H = _checks.positive_int("hidden_size", hidden_size)
    reset_after = _checks.flag("reset_after", reset_after)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, recurrent, bias = (param_init(f, param_dtype) for f in (kernel_init, recurrent_init, bias_init))

    def shapes(I):
        return {"w_ih": (3 * H, I), "w_hh": (3 * H, H), "b_ih": (3 * H,), "b_hh": (3 * H,)}

    def make_params(key, input_size):
        k1, k2, k3, k4 = _keys(key, 4)
        return GRUParams(
            w_ih=kernel(k1, (3 * H, input_size)),
            w_hh=recurrent(k2, (3 * H, H)),
            b_ih=bias(k3, (3 * H,)),
            b_hh=bias(k4, (3 * H,)),
        )

    def project(params, x):
        return gate_projection(x, params.w_ih, params.b_ih, 3, compute_dtype)

    def core(params, carry, p, rec):
        # reset_after only: the whole recurrent product is rec = w_hh @ h.
        x_r, x_z, x_n = jnp.split(p, 3)
        h_r, h_z, h_n = jnp.split(rec + params.b_hh, 3)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * carry.h
        return RNNCarry(h), h

    def cho_recurrent(params, carry):
        return carry.h  # the reset gate acts before the products, which the core makes

    def cho_core(params, carry, p, h_in):
        # Two products, r * h entering the second; h_in is carry.h, times the
        # recurrent dropout mask if there is one; z * h_prev stays unmasked.
        x_r, x_z, x_n = jnp.split(p, 3)
        h_r, h_z = jnp.split(product(h_in, params.w_hh[: 2 * H], compute_dtype) + params.b_hh[: 2 * H], 2)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + product(r * h_in, params.w_hh[2 * H :], compute_dtype) + params.b_hh[2 * H :])
        h = (1.0 - z) * n + z * carry.h
        return RNNCarry(h), h

    if reset_after:
        return _make_cell("gru", H, GRUParams, RNNCarry, shapes, make_params, project, core, compute_dtype=compute_dtype)
    return _make_cell(
        "gru", H, GRUParams, RNNCarry, shapes, make_params, project,
        cho_core, cho_recurrent, ("w_ih",), compute_dtype,
    )


def layer_norm_rnn(
    hidden_size: int,
    activation: str = "tanh",
    *,
    epsilon: float = 1e-3,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    scale_init: Initializer = ones,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""The second seed's ``LNSimpleRNNCell``: layer norm before the activation.

    .. math::
        z_t &= W x_t + W_{hh} h_{t-1} + b \\
        h_t &= \phi\!\left(\gamma \odot \frac{z_t - \mu(z_t)}{\sqrt{\sigma^2(z_t) + \epsilon}}
               + \beta\right), \qquad y_t = h_t

    where :math:`\mu, \sigma^2` are the mean and variance over the ``H``
    units of one example (Ba et al. 2016), and ``epsilon`` defaults to Keras'
    ``LayerNormalization`` (1e-3). The bias ``b`` is cancelled by the
    centring; it is kept to match the seed's Keras cell.

    Params (:class:`LayerNormRNNParams`): ``w_ih [H, I]``, ``w_hh [H, H]``,
    ``b [H]``, ``ln_scale [H]`` (gamma), ``ln_offset [H]`` (beta).
    Carry (:class:`RNNCarry`): ``h [H]``.
    """
    H = _checks.positive_int("hidden_size", hidden_size)
    epsilon = _checks.positive_number("epsilon", epsilon)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    phi = activation_function(activation)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, recurrent, bias, scale = (
        param_init(f, param_dtype) for f in (kernel_init, recurrent_init, bias_init, scale_init)
    )

    def shapes(I):
        return {"w_ih": (H, I), "w_hh": (H, H), "b": (H,), "ln_scale": (H,), "ln_offset": (H,)}

    def make_params(key, input_size):
        k1, k2, k3, k4, k5 = _keys(key, 5)
        return LayerNormRNNParams(
            w_ih=kernel(k1, (H, input_size)),
            w_hh=recurrent(k2, (H, H)),
            b=bias(k3, (H,)),
            ln_scale=scale(k4, (H,)),
            ln_offset=bias(k5, (H,)),
        )

    def project(params, x):
        return product(x, params.w_ih, compute_dtype) + params.b

    def core(params, carry, p, r):
        h = phi(_layer_norm(p + r, params.ln_scale, params.ln_offset, epsilon))
        return RNNCarry(h), h

    return _make_cell("layer_norm_rnn", H, LayerNormRNNParams, RNNCarry, shapes, make_params, project, core, compute_dtype=compute_dtype)


def layer_norm_lstm(
    hidden_size: int,
    forget_bias: float = 1.0,
    *,
    epsilon: float = 1e-5,
    kernel_init: Initializer = glorot_uniform,
    recurrent_init: Initializer = orthogonal,
    bias_init: Initializer = zeros,
    scale_init: Initializer = ones,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> GatedCell:
    r"""Layer-normalised LSTM after Ba, Kiros and Hinton (2016), gates (i, f, g, o).

    .. math::
        (i_t, f_t, g_t, o_t) &= \mathrm{LN}(W x_t; \alpha_x) + \mathrm{LN}(W_{hh} h_{t-1}; \alpha_h) + b \\
        c_t &= \sigma(f_t) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
        h_t &= \sigma(o_t) \odot \tanh(\mathrm{LN}(c_t; \alpha_c, \beta_c)), \qquad y_t = h_t

    with :math:`\mathrm{LN}(z; \alpha, \beta) = \alpha \odot (z - \mu(z)) /
    \sqrt{\sigma^2(z) + \epsilon} + \beta` over all the units of its
    argument (the ``4H`` stacked gate pre-activations, or the ``H`` cell
    units). The paper's offsets of the two gate norms are folded into the
    one bias ``b``, which is the same function with fewer parameters; the
    forget-gate part of ``b`` starts at ``forget_bias``. The input norm does
    not depend on the carry and is hoisted out of the scan with the input
    product.

    Params (:class:`LayerNormLSTMParams`): ``w_ih [4H, I]``, ``w_hh [4H, H]``,
    ``b [4H]``, ``ln_x_scale [4H]``, ``ln_h_scale [4H]``, ``ln_c_scale [H]``,
    ``ln_c_offset [H]``. Carry (:class:`LSTMCarry`): ``h [H]``, ``c [H]``.
    """
    H = _checks.positive_int("hidden_size", hidden_size)
    forget_bias = _checks.finite_real("forget_bias", forget_bias)
    epsilon = _checks.positive_number("epsilon", epsilon)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, recurrent, bias, scale = (
        param_init(f, param_dtype) for f in (kernel_init, recurrent_init, bias_init, scale_init)
    )

    def shapes(I):
        return {
            "w_ih": (4 * H, I),
            "w_hh": (4 * H, H),
            "b": (4 * H,),
            "ln_x_scale": (4 * H,),
            "ln_h_scale": (4 * H,),
            "ln_c_scale": (H,),
            "ln_c_offset": (H,),
        }

    def make_params(key, input_size):
        k1, k2, k3, k4, k5, k6, k7 = _keys(key, 7)
        return LayerNormLSTMParams(
            w_ih=kernel(k1, (4 * H, input_size)),
            w_hh=recurrent(k2, (4 * H, H)),
            b=bias(k3, (4 * H,)).at[H : 2 * H].set(forget_bias),
            ln_x_scale=scale(k4, (4 * H,)),
            ln_h_scale=scale(k5, (4 * H,)),
            ln_c_scale=scale(k6, (H,)),
            ln_c_offset=bias(k7, (H,)),
        )

    def project(params, x):
        return _layer_norm(product(x, params.w_ih, compute_dtype), params.ln_x_scale, params.b, epsilon)

    def core(params, carry, p, r):
        gates = p + _layer_norm(r, params.ln_h_scale, None, epsilon)
        i, f, g, o = jnp.split(gates, 4)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        c_norm = _layer_norm(c, params.ln_c_scale, params.ln_c_offset, epsilon)
        h = jax.nn.sigmoid(o) * jnp.tanh(c_norm)
        return LSTMCarry(h, c), h

    return _make_cell("layer_norm_lstm", H, LayerNormLSTMParams, LSTMCarry, shapes, make_params, project, core, compute_dtype=compute_dtype)
