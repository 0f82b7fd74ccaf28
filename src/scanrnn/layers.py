"""Layers and models over ONE sequence, composed as in ``jax.example_libraries.stax``.

Every layer constructor returns a :class:`Layer`, a NamedTuple of pure
functions:

- ``init(key, input_size) -> params``;
- ``apply(params, xs, length=None, *, key=None, carry=None)`` for ONE
  sequence ``xs`` of shape ``[T, input_size]`` (or one vector, for layers
  after a many-to-one layer);
- ``initial_carry(params) -> carry``, the state a sequence starts from
  (``()`` for a stateless layer).

The keyword arguments of ``apply``:

- ``key=None`` is evaluation: the layer is deterministic. A PRNG ``key``
  is training: it draws the masks of :func:`dropout` and of the rates of
  :func:`recurrent` (layers without randomness ignore it; :func:`serial`
  splits it between its layers).
- ``carry=None`` starts from ``initial_carry(params)`` (zeros, or a learned
  carry) and returns ``ys``. A ``carry`` given starts from it and returns
  ``(ys, final_carry)``: the state after the last valid step, ready to be
  the next chunk's start (truncated BPTT, :func:`scanrnn.train.make_tbptt_step`).
  :func:`serial`'s carry is a tuple with one entry per layer; a stateless
  layer's entry is ``()``; :func:`bidirectional`'s carry has a leading
  direction axis of 2.

:func:`serial` composes layers into a model, which is a :class:`Layer` too;
it threads keys and feature sizes through ``init`` (the output size of each
layer is read off :func:`jax.eval_shape` of its ``apply``). ``length`` marks
the valid prefix of a padded sequence and is passed to every layer. Batches
come from :func:`jax.vmap`::

    model = serial(recurrent(lstm(20)), recurrent(lstm(20)), dense(1))
    params = model.init(jax.random.key(0), 1)
    ys = jax.vmap(model.apply, in_axes=(None, 0))(params, xs)  # xs: [B, T, 1]

and the state of a model over a long sequence cut into chunks is handed from
one call to the next::

    carry = model.initial_carry(params)
    for chunk in chunks:                       # each [K, 1]
        ys, carry = model.apply(params, chunk, carry=carry)
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from . import cells as _cells
from . import cudnn
from .kinds import Cell
from . import execution as _execution
from . import regularization as _regularization
from .execution import Execution
from .regularization import Regularization, check_rate
from .regularization import sample_masks
from .unroll import (
    _check_options, _unroll_sequence, check_length, check_regularization, check_sequence, flip_valid, mask_padding, unroll,
    valid_steps,
)

__all__ = [
    "Layer",
    "DenseParams",
    "EmbeddingParams",
    "RecurrentParams",
    "MERGES",
    "last_valid",
    "check_carry",
    "stateless_output",
    "recurrent",
    "unroll_bidirectional",
    "bidirectional",
    "dense",
    "embedding",
    "check_tokens",
    "dropout",
    "serial",
]

Array = jax.Array


class Layer(NamedTuple):
    """A layer or model: three pure functions over ONE sequence (see the module docstring).

    - ``init(key, input_size) -> params``;
    - ``apply(params, xs, length=None, *, key=None, carry=None)`` -> ``ys``,
      or ``(ys, final_carry)`` when ``carry`` is given. ``key=None`` is
      evaluation; a layer without randomness ignores a key. A layer without
      state takes ``carry=()`` and returns ``(ys, ())``;
    - ``initial_carry(params) -> carry``, the state one sequence starts
      from (``()`` for a layer without state);
    - ``tokens``: ``None``, or for a layer that reads integer tokens
      (:func:`embedding`, and a :func:`serial` model that begins with one)
      the vocabulary size ``V``: its input is ``[T]`` tokens in ``[0, V)``,
      ``init(key, V)`` sets it up, and :func:`scanrnn.train.fit` checks the
      tokens of every batch on the host;
    - ``parts``: for a :func:`serial` model, the layers it composes, in
      order (what converters such as :func:`scanrnn.interop.to_keras` walk
      layer by layer); ``()`` for any other layer.
    """

    init: Callable
    apply: Callable
    initial_carry: Callable
    tokens: Optional[int] = None  # V: apply reads integer tokens [T] in [0, V) (an embedding first); else None
    parts: tuple = ()  # serial: its layers, in order


class DenseParams(NamedTuple):
    """Params of :func:`dense`."""

    w: Array  # [F, I]
    b: Array  # [F]


class EmbeddingParams(NamedTuple):
    """Params of :func:`embedding`."""

    table: Array  # [V, F], row v the vector of token v


class RecurrentParams(NamedTuple):
    """Params of :func:`recurrent` and :func:`bidirectional` with ``learn_initial_carry=True``.

    Both fields are trained; the carry starts at zeros.
    """

    cell: Any  # the cell's params (bidirectional: stacked on a leading direction axis of 2)
    initial_carry: Any  # the cell's carry, e.g. LSTMCarry(h [H], c [H]) (bidirectional: [2, H] leaves)


MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


def last_valid(ys: Array, length=None) -> Array:
    """The output at the last valid step: ``ys[length - 1]``, or zeros when ``length == 0``.

    ``ys`` is ``[T, ...]`` (or a pytree of such arrays, as a user-written
    cell's outputs may be; each leaf is indexed); without ``length`` this is
    ``ys[-1]``. ``T`` must be at least 1 (a ValueError otherwise). A
    concrete ``length`` must be an integer in ``[0, T]``; a traced one is
    clamped to ``[0, T]`` (see :func:`scanrnn.unroll.check_length`).
    """
    num_steps = _num_steps("last_valid", ys)
    if num_steps == 0:
        raise ValueError("last_valid needs at least one step to take the last of, got ys of 0 steps")
    if length is None:
        return jax.tree.map(lambda y: y[-1], ys)
    length = check_length(length, num_steps)
    index = jnp.maximum(length - 1, 0)

    def pick(leaf):
        y = jax.lax.dynamic_index_in_dim(leaf, index, axis=0, keepdims=False)
        return jnp.where(length > 0, y, jnp.zeros_like(y))

    return jax.tree.map(pick, ys)


# --------------------------------------------------------------------------
# Checks shared by the layers.


def _num_steps(name: str, ys) -> int:
    """The length ``T`` of the leading time axis that every leaf of ``ys`` shares."""
    shapes = [tuple(jnp.shape(leaf)) for leaf in jax.tree.leaves(ys)]
    if not shapes or any(not shape for shape in shapes) or len({shape[0] for shape in shapes}) != 1:
        raise ValueError(f"{name}: ys must be [T, ...] (every leaf with the same leading time axis), got shapes {shapes}")
    return shapes[0][0]


def _check_steps(name: str, xs) -> None:
    """A many-to-one layer needs a last step: ``xs [T, I]`` with ``T >= 1``."""
    if jnp.ndim(xs) == 2 and jnp.shape(xs)[0] == 0:
        raise ValueError(
            f"{name}(return_sequences=False) needs at least one step to take the last output of, "
            f"got xs of shape {jnp.shape(xs)}"
        )


def _describe(tree) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    return f"{treedef} with shapes {[tuple(jnp.shape(l)) for l in leaves]}"


def check_carry(name: str, expected, carry) -> None:
    """Raise a ValueError unless ``carry`` has the structure, shapes and dtypes of ``expected``.

    ``expected`` is the layer's initial carry (or its :func:`jax.eval_shape`).
    """
    exp_leaves, exp_tree = jax.tree.flatten(expected)
    leaves, tree = jax.tree.flatten(carry)
    if tree != exp_tree or [tuple(jnp.shape(l)) for l in leaves] != [tuple(jnp.shape(l)) for l in exp_leaves]:
        raise ValueError(f"{name}: carry must be {_describe(expected)} (the layer's initial_carry), got {_describe(carry)}")
    expected_dtypes, given_dtypes = _checks.dtype_names(exp_leaves), _checks.dtype_names(leaves)
    if given_dtypes != expected_dtypes:
        raise ValueError(
            f"{name}: carry must have the dtypes {expected_dtypes} (the layer's initial_carry), got {given_dtypes}"
        )


def stateless_output(name: str, ys, carry):
    """What a layer without state returns: ``ys``, or ``(ys, ())`` when a carry ``()`` is given."""
    if carry is None:
        return ys
    check_carry(name, (), carry)
    return ys, ()


def _no_carry(params):
    return ()


def _split_params(name: str, params, learn_initial_carry: bool):
    """``(cell params, learned initial carry or None)``."""
    if learn_initial_carry:
        if not isinstance(params, RecurrentParams):
            raise ValueError(
                f"{name}(learn_initial_carry=True) expects params of type RecurrentParams(cell, initial_carry), "
                f"got {type(params).__name__}"
            )
        return params.cell, params.initial_carry
    if isinstance(params, RecurrentParams):
        raise ValueError(
            f"{name}(learn_initial_carry=False) expects the cell's params, got RecurrentParams "
            "(build the layer with learn_initial_carry=True)"
        )
    return params, None


# --------------------------------------------------------------------------
# Layers.


def recurrent(
    cell: Cell,
    return_sequences: bool = True,
    *,
    execution: Optional[Execution] = None,
    regularization: Optional[Regularization] = None,
    learn_initial_carry: bool = False,
) -> Layer:
    """A recurrent layer: ``cell`` unrolled over the sequence.

    Args:
      cell: a cell of any kind (:mod:`scanrnn.kinds`), built-in or
        user-written (a :class:`Layer` is refused).
      return_sequences: ``True`` gives the outputs of all steps ``[T, H]``
        (zeros past ``length``); ``False`` the output at the last valid step
        ``[H]`` (many-to-one, Keras' default), which needs ``T >= 1``.
      execution: how the scan runs, a :class:`scanrnn.Execution` passed to
        :func:`scanrnn.unroll` (``None``: the defaults).
      regularization: a :class:`scanrnn.Regularization` passed to
        :func:`scanrnn.unroll` with the ``key`` of ``apply``: a variational
        mask on the inputs, one on the hidden state where it enters a
        recurrent product, and per-step zoneout of the carry. Without a key
        (evaluation) dropout is off and zoneout uses its expectation.
      learn_initial_carry: make the carry every sequence starts from a
        param, :class:`RecurrentParams` ``(cell, initial_carry)``, zeros at
        ``init`` and trained like the weights.

    Params: the cell's params, or :class:`RecurrentParams`.

    ``apply(params, xs [T, I], length=None, *, key=None, carry=None)``
    returns ``ys`` (``[T, H]``, or ``[H]`` when ``return_sequences=False``);
    with ``carry`` (the cell's carry for one sequence) it returns ``(ys,
    final_carry)``, the final carry being :func:`scanrnn.unroll`'s (the
    one after step ``length``). ``initial_carry(params)`` is zeros, or the
    learned carry. The options are checked when the layer is built, and the
    arguments of ``apply`` (a carry of the cell's structure, shapes and
    dtypes; ``key`` ``None`` or one PRNG key) before anything runs; a
    traced ``length`` is clamped to ``[0, T]`` (:func:`scanrnn.unroll`).

    >>> from scanrnn import lstm
    >>> layer = recurrent(lstm(4))
    >>> params = layer.init(jax.random.key(0), 2)
    >>> carry = layer.initial_carry(params)
    >>> ys, carry = layer.apply(params, jnp.ones((3, 2)), carry=carry)   # steps 0..2
    >>> ys, carry = layer.apply(params, jnp.ones((3, 2)), carry=carry)   # steps 3..5
    >>> ys.shape, carry.h.shape
    ((3, 4), (4,))
    """
    # When the layer is built, not when it is first traced.
    _checks.cell("recurrent: cell", cell)
    return_sequences = _checks.flag("return_sequences", return_sequences)
    learn_initial_carry = _checks.flag("learn_initial_carry", learn_initial_carry)
    execution = _execution.check(execution)
    regularization = _regularization.check(regularization)

    def init(key, input_size):
        params = cell.init(_checks.prng_key("key", key), input_size)
        return RecurrentParams(params, jax.tree.map(jnp.zeros_like, cell.initial_carry(params)))

    def initial_carry(params):
        cell_params, learned = _split_params("recurrent", params, learn_initial_carry)
        return cell.initial_carry(cell_params) if learned is None else learned

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        if not return_sequences:
            _check_steps("recurrent", xs)
        cell_params, learned = _split_params("recurrent", params, learn_initial_carry)
        if carry is not None:
            check_carry("recurrent", jax.eval_shape(cell.initial_carry, cell_params), carry)
        start = learned if carry is None else carry
        final, ys = unroll(
            cell, cell_params, xs, start, length=length, execution=execution, regularization=regularization,
            key=None if regularization.is_off() else key,
        )  # checks xs, length and a learned carry
        ys = ys if return_sequences else last_valid(ys, length)
        return ys if carry is None else (ys, final)

    # Without a learned carry the layer's params are the cell's, and so is its init.
    return Layer(init if learn_initial_carry else cell.init, apply, initial_carry)


def unroll_bidirectional(
    cell,
    params,
    xs,
    carry=None,
    *,
    length=None,
    execution: Optional[Execution] = None,
    regularization: Optional[Regularization] = None,
    key=None,
):
    """Both directions of a bidirectional layer, in one scan or in two (``execution.one_scan``).

    The forward and backward params are stacked on a leading axis of size 2
    (``jax.vmap(cell.init)`` of two keys makes them). The backward direction
    reads each sequence's valid part reversed. With ``execution.one_scan``
    both run in a single :func:`jax.lax.scan` through :func:`jax.vmap` over
    the direction axis; without it (the default, measured the faster on a
    CPU), as a forward scan and then a reverse one. The two give the same
    numbers. With ``execution.cudnn`` (an LSTM on a CUDA GPU) both
    directions are one bidirectional cuDNN call, or two calls when input
    dropout gives each direction its own mask (:mod:`scanrnn.cudnn`).

    Args:
      params: the cell's params with a leading direction axis of size 2.
      xs: ``[T, input_size]``.
      carry: ``None`` or initial carries with a leading direction axis of size 2.
      length: optional integer scalar, the valid prefix (a traced one is
        clamped to ``[0, T]``, as in :func:`unroll`).
      execution, regularization: as for :func:`unroll`; each direction has
        its own masks.
      key: ``None`` or ONE PRNG key (of one sequence: under ``jax.vmap`` pass
        one per example); ``k_forward, k_backward = jax.random.split(key)``.

    Returns:
      ``(final_carries, ys)``, each leaf with a leading direction axis of 2
      (forward first); ``ys[1]`` is in the original time order, so ``ys[1][0]``
      is the backward direction's output after reading the whole sequence.
      It equals ``unroll`` of the forward params (with ``key=k_forward``) and
      ``unroll(..., reverse=True)`` of the backward params (with
      ``key=k_backward``).
    """
    execution, regularization = _check_options(cell, False, execution, regularization, key)
    xs = check_sequence(xs)
    length = check_length(length, xs.shape[0])
    leading = {jnp.shape(leaf)[:1] for leaf in jax.tree.leaves(params)}
    if leading != {(2,)}:
        raise ValueError(
            "bidirectional params must be stacked on a leading direction axis of size 2, "
            f"got leading axes {sorted(leading)}"
        )
    try:
        jax.eval_shape(cell.initial_carry, jax.tree.map(lambda a: a[0], params))
    except ValueError as error:
        raise ValueError(
            "bidirectional params must be the cell's params stacked on a leading direction axis "
            f"of size 2 (jax.vmap of cell.init); one direction's slice is not: {error}"
        ) from error
    if carry is None:
        carry = jax.vmap(cell.initial_carry)(params)
    else:
        _checks.carry_like(jax.eval_shape(jax.vmap(cell.initial_carry), params), carry)
    one_params, one_carry = jax.tree.map(lambda a: a[0], (params, carry))
    _, _, _, rates = check_regularization(cell, one_params, xs, one_carry, regularization, None)
    masks = (None, None, None)
    if key is not None and not regularization.is_off():
        # One key per direction; each direction's zoneout rows are in time
        # order, row t for the step that reads xs[t].
        drawn = jax.vmap(lambda k: sample_masks(k, xs, one_carry, **regularization._asdict()))(jax.random.split(key))
        masks, rates = (drawn.inputs, drawn.recurrent, drawn.zoneout), None

    def one_direction(p, x, c, m, reverse):
        return _unroll_sequence(cell, p, x, c, length, reverse, execution, (*m, rates))

    if execution.cudnn and masks[0] is None:  # both directions in one cuDNN call
        cudnn.check_params(jax.tree.map(lambda a: a[0], params))
        return cudnn.lstm_sequence(params, mask_padding(xs, length), carry, length, bidirectional=True)
    if execution.cudnn or not execution.one_scan:  # a forward scan (or cuDNN call), then a reverse one

        def direction(d):
            p, c, m = jax.tree.map(lambda a: a[d], (params, carry, masks))
            return one_direction(p, xs, c, m, reverse=d == 1)

        return jax.tree.map(lambda a, b: jnp.stack([a, b]), direction(0), direction(1))
    # One scan: the backward direction reads the valid part reversed, and its
    # zoneout rows follow its steps.
    n = jnp.asarray(xs.shape[0]) if length is None else length
    both = jnp.stack([xs, flip_valid(xs, n)])  # [2, T, I]: forward, backward order
    keep = jax.tree.map(lambda k: jnp.stack([k[0], flip_valid(k[1], n)]), masks[2])
    carries, ys = jax.vmap(partial(one_direction, reverse=False))(params, both, carry, (*masks[:2], keep))
    ys = jax.tree.map(lambda y: jnp.stack([y[0], flip_valid(y[1], n)]), ys)
    return carries, ys


def bidirectional(
    cell: Cell,
    merge: str = "concat",
    return_sequences: bool = True,
    *,
    execution: Optional[Execution] = None,
    regularization: Optional[Regularization] = None,
    learn_initial_carry: bool = False,
) -> Layer:
    """A bidirectional layer: ``cell`` run forwards and backwards.

    The two directions' params are stacked on a leading axis of size 2
    (forward first) and run by :func:`scanrnn.unroll_bidirectional`: in one
    scan through :func:`jax.vmap` over that axis, or as a forward and a
    reverse scan (``execution.one_scan``). The backward direction reads each
    sequence's valid part reversed; its outputs are put back in time order.

    Args:
      merge: how the two directions' outputs are combined: ``"concat"``
        (features ``2H``), ``"sum"``, ``"mean"`` or ``"mul"``.
      return_sequences: ``False`` merges the forward output at the last valid
        step with the backward output at step 0 (after it read the whole
        sequence), as Keras and PyTorch's ``h_n`` do; it needs ``T >= 1``.
      execution, regularization, learn_initial_carry: as for
        :func:`recurrent`; the key is split between the directions, and a
        learned carry has a leading direction axis of 2.

    The carry (``initial_carry(params)``, the ``carry`` of ``apply`` and the
    final carry it returns) is the cell's carry with a leading direction
    axis of 2: the forward direction's after step ``length - 1``, and the
    backward direction's after it read the valid part down to step 0.
    """
    _checks.cell("bidirectional: cell", cell)
    if not isinstance(merge, str) or merge not in MERGES:
        raise ValueError(f"merge must be one of {sorted(MERGES)}, got {merge!r}")
    return_sequences = _checks.flag("return_sequences", return_sequences)
    learn_initial_carry = _checks.flag("learn_initial_carry", learn_initial_carry)
    execution = _execution.check(execution)
    regularization = _regularization.check(regularization)
    combine = MERGES[merge]

    def init(key, input_size):
        key = _checks.prng_key("key", key)
        params = jax.vmap(lambda k: cell.init(k, input_size))(jax.random.split(key, 2))
        if not learn_initial_carry:
            return params
        return RecurrentParams(params, jax.tree.map(jnp.zeros_like, jax.vmap(cell.initial_carry)(params)))

    def initial_carry(params):
        cell_params, learned = _split_params("bidirectional", params, learn_initial_carry)
        return jax.vmap(cell.initial_carry)(cell_params) if learned is None else learned

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        if not return_sequences:
            _check_steps("bidirectional", xs)
        cell_params, learned = _split_params("bidirectional", params, learn_initial_carry)
        start = learned if carry is None else carry
        if start is not None:
            check_carry("bidirectional", jax.eval_shape(jax.vmap(cell.initial_carry), cell_params), start)
        final, ys = unroll_bidirectional(
            cell, cell_params, xs, start, length=length, execution=execution, regularization=regularization,
            key=None if regularization.is_off() else key,
        )  # checks xs and length
        # Index the direction axis leaf by leaf: a user cell's y may be a pytree.
        forwards = jax.tree.map(lambda y: y[0], ys)
        backwards = jax.tree.map(lambda y: y[1], ys)
        if not return_sequences:
            forwards = last_valid(forwards, length)
            backwards = jax.tree.map(lambda y: y[0], backwards)
        ys = jax.tree.map(combine, forwards, backwards)
        return ys if carry is None else (ys, final)

    return Layer(init, apply, initial_carry)


def dense(
    features: int,
    *,
    kernel_init: _cells.Initializer = _cells.glorot_uniform,
    bias_init: _cells.Initializer = _cells.zeros,
    param_dtype=jnp.float32,
    compute_dtype=None,
) -> Layer:
    """An affine layer ``y = W x + b`` on the last axis.

    Given a sequence ``[T, I]`` it is applied at every step (Keras'
    ``TimeDistributed(Dense)``), and with ``length`` the outputs past it are
    zeros like those of the recurrent layers. Given a vector ``[I]`` (after a
    many-to-one layer) it is applied once. It has no state (its carry is
    ``()``) and ignores ``key``. ``compute_dtype`` (e.g. ``jnp.bfloat16``)
    runs the product in mixed precision, as in the cells
    (:func:`scanrnn.cells.product`).

    Params (:class:`DenseParams`): ``w [F, I]``, ``b [F]``.
    """
    features = _checks.positive_int("features", features)
    _checks.floating_dtype("compute_dtype", compute_dtype, allow_none=True)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    kernel, bias = _cells.param_init(kernel_init, param_dtype), _cells.param_init(bias_init, param_dtype)

    def init(key, input_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", input_size)
        k1, k2 = jax.random.split(key)
        return DenseParams(kernel(k1, (features, input_size)), bias(k2, (features,)))

    def affine(params, x):
        _checks.example("dense", x, params.w)
        return _cells.product(x, params.w, compute_dtype) + params.b

    def outputs(params, xs, length):
        if not isinstance(params, DenseParams):
            raise ValueError(f"dense expects params of type DenseParams, got {type(params).__name__}")
        if params.w.shape[:1] != (features,) or params.b.shape != (features,) or params.w.ndim != 2:
            raise ValueError(
                f"dense: params must have w [{features}, I] and b [{features}], "
                f"got w {params.w.shape} and b {params.b.shape}"
            )
        xs = jnp.asarray(xs)
        if xs.ndim == 1:
            return affine(params, xs)
        xs = check_sequence(xs)
        length = check_length(length, xs.shape[0])
        ys = jax.vmap(affine, in_axes=(None, 0))(params, mask_padding(xs, length))
        if length is None:
            return ys
        return jnp.where(valid_steps(xs.shape[0], length)[:, None], ys, jnp.zeros_like(ys))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        return stateless_output("dense", outputs(params, xs, length), carry)

    return Layer(init, apply, _no_carry)


def embedding(
    vocab_size: int,
    features: int,
    *,
    embed_init: _cells.Initializer = jax.nn.initializers.normal(1.0),
    param_dtype=jnp.float32,
) -> Layer:
    """A lookup table from integer tokens to vectors: ``ys[t] = E[xs[t]]``.

    The input is ONE sequence of integer tokens ``[T]`` (or one token ``[]``,
    giving one vector ``[F]``), each in ``[0, vocab_size)``; the output is
    ``[T, F]``, the same as the product of the tokens' one-hot vectors with
    ``E`` (Keras' ``Embedding``, ``torch.nn.Embedding``). In :func:`serial` it
    goes first, and the model's input size is the vocabulary's::

        model = serial(embedding(V, 32), recurrent(lstm(128)), dense(V))
        params = model.init(key, V)
        logits = jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)   # tokens: [B, T] integers

    Tokens are checked where they are concrete: a float token is a
    TypeError, and one outside ``[0, vocab_size)`` within ``length`` a
    ValueError. Traced tokens (under ``jit`` or ``vmap``) cannot be read:
    they are clamped to ``[0, vocab_size - 1]``, so an out-of-range token
    reads the first or the last row, never a NaN. The layer's ``tokens``
    field (and that of a :func:`serial` model it begins) is ``vocab_size``,
    by which :func:`scanrnn.train.fit` and :func:`scanrnn.train.evaluate`
    check every batch on the host with :func:`check_tokens` before it enters
    the compiled step. With
    ``length``, the outputs past it are zeros, as the recurrent layers give.
    No state (the carry is ``()``); ``key`` is ignored. The gradient with
    respect to ``E`` adds the output's cotangent into the row of every
    token read.

    Params (:class:`EmbeddingParams`): ``table [V, F]``, drawn by
    ``embed_init`` (default: normal with standard deviation 1, as
    ``torch.nn.Embedding``).
    """
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    features = _checks.positive_int("features", features)
    param_dtype = _checks.floating_dtype("param_dtype", param_dtype)
    table = _cells.param_init(embed_init, param_dtype)

    def init(key, input_size):
        _checks.prng_key("key", key)
        if _checks.positive_int("input_size", input_size) != vocab_size:
            raise ValueError(
                f"embedding: the input size of a token sequence is the vocabulary size {vocab_size}, "
                f"got input_size={input_size}"
            )
        return EmbeddingParams(table(key, (vocab_size, features)))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        if not isinstance(params, EmbeddingParams):
            raise _checks.InputTypeError(
                f"embedding expects params of type EmbeddingParams, got {type(params).__name__}"
            )
        if jnp.shape(params.table) != (vocab_size, features):
            raise ValueError(
                f"embedding: params.table must have shape ({vocab_size}, {features}), got {jnp.shape(params.table)}"
            )
        xs = jnp.asarray(xs)
        if xs.ndim == 0:
            if length is not None:
                raise ValueError("embedding: length applies to a token sequence [T], got one token")
            token = _checks.token_range("embedding: tokens", _checks.tokens("embedding: tokens", xs[None]),
                                        vocab_size)
            return stateless_output("embedding", params.table[token[0]], carry)
        tokens = _checks.tokens("embedding: tokens", xs)
        length = check_length(length, tokens.shape[0])
        ys = params.table[_checks.token_range("embedding: tokens", tokens, vocab_size, length)]
        if length is not None:
            ys = jnp.where(valid_steps(tokens.shape[0], length)[:, None], ys, jnp.zeros_like(ys))
        return stateless_output("embedding", ys, carry)

    return Layer(init, apply, _no_carry, tokens=vocab_size)


def check_tokens(tokens, vocab_size: int, lengths=None) -> None:
    """Check a batch of token sequences on the host: integers in ``[0, vocab_size)`` within their lengths.

    For the input of an :func:`embedding` before it enters a compiled
    step, where its tokens are traced and cannot be checked.

    Args:
      tokens: ``[B, T]`` integers (NumPy or a concrete JAX array).
      vocab_size: ``V``.
      lengths: ``None`` (every step counts) or ``[B]`` integers in ``[0, T]``.

    Raises:
      TypeError: float tokens or lengths.
      ValueError: a token out of range (its position and value in the
          message), or lengths of the wrong shape or out of ``[0, T]``.
    """
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [B, T], got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise _checks.InputTypeError(f"tokens must be integers, got dtype {tokens.dtype}")
    valid = np.ones(tokens.shape, bool)
    if lengths is not None:
        lengths = np.asarray(_checks.lengths("lengths", np.asarray(lengths), *tokens.shape))
        valid = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    bad = valid & ((tokens < 0) | (tokens >= vocab_size))
    if bad.any():
        b, t = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"tokens must lie in [0, {vocab_size}), got {int(tokens[b, t])} at example {b}, step {t} "
            f"({int(bad.sum())} out of range)"
        )


def dropout(rate: float, *, broadcast_time: bool = False) -> Layer:
    """Inverted dropout between layers (Srivastava et al. 2014), identity without a key.

    With a ``key`` (training) each element of ``xs`` is kept with
    probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, so its
    expectation is ``xs``::

        ys = xs * m / (1 - rate),    m ~ Bernoulli(1 - rate), elementwise

    Without a key (evaluation), and for ``rate = 0``, ``ys = xs``.
    ``broadcast_time=True`` draws one mask ``[I]`` for a sequence ``[T, I]``
    and uses it at every step (the same features dropped throughout, as in
    Keras' ``SpatialDropout1D``). The input may be a sequence ``[T, I]`` or a
    vector ``[I]`` (after a many-to-one layer). Steps past ``length`` are
    passed through as they come (zeros, after the recurrent layers).

    Params: ``()``. No state: the carry is ``()``.

    >>> layer = dropout(0.5)
    >>> xs = jnp.ones((4, 3))
    >>> bool((layer.apply((), xs) == xs).all())        # evaluation
    True
    >>> ys = layer.apply((), xs, key=jax.random.key(0))  # training: each 0 or 2
    >>> bool(((ys == 0) | (ys == 2)).all())
    True

    In a model, between recurrent layers::

        model = serial(recurrent(lstm(64)), dropout(0.3), recurrent(lstm(64)), dense(1))
        ys = model.apply(params, xs, key=key)   # training
        ys = model.apply(params, xs)            # evaluation
    """
    rate = check_rate("rate", rate)
    broadcast_time = _checks.flag("broadcast_time", broadcast_time)

    def init(key, input_size):
        _checks.prng_key("key", key)
        _checks.positive_int("input_size", input_size)
        return ()

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        if type(params) is not tuple or params:
            raise ValueError(f"dropout has no params and expects (), got {type(params).__name__}")
        xs = jnp.asarray(xs)
        if xs.ndim not in (1, 2):
            raise ValueError(f"dropout expects a sequence [T, I] or a vector [I], got shape {xs.shape}")
        _checks.real_dtype("dropout: xs", xs)
        if not jnp.issubdtype(xs.dtype, jnp.floating):
            raise ValueError(f"dropout expects floating inputs, got dtype {xs.dtype}")
        if xs.ndim == 2:
            check_length(length, xs.shape[0])
        if key is None or rate == 0:
            return stateless_output("dropout", xs, carry)
        shape = xs.shape[-1:] if broadcast_time else xs.shape
        keep = jax.random.bernoulli(key, 1.0 - rate, shape)
        ys = jnp.where(keep, xs / (1.0 - rate), jnp.zeros_like(xs))
        return stateless_output("dropout", ys, carry)

    return Layer(init, apply, _no_carry)


def serial(*layers: Layer) -> Layer:
    """Compose layers one after the other; params are a tuple, one entry per layer.

    ``apply(params, xs, length=None, *, key=None, carry=None)`` passes
    ``length`` to every layer and splits ``key`` into one key per layer. The
    carry is a tuple of the layers' carries (``()`` for a stateless layer);
    with it, ``apply`` returns ``(ys, final_carries)``. Every argument must
    be a :class:`Layer`: a cell given here raises (wrap it in
    :func:`recurrent`).

    >>> from scanrnn import lstm
    >>> model = serial(recurrent(lstm(8)), recurrent(lstm(8), return_sequences=False), dense(1))
    >>> params = model.init(jax.random.key(0), 3)
    >>> model.apply(params, jnp.ones((10, 3))).shape
    (1,)
    >>> ys, carry = model.apply(params, jnp.ones((10, 3)), carry=model.initial_carry(params))
    >>> [type(c).__name__ for c in carry]
    ['LSTMCarry', 'LSTMCarry', 'tuple']
    """
    if not layers:
        raise ValueError("serial needs at least one layer")
    for i, layer in enumerate(layers):
        _checks.layer(f"serial: layer {i}", layer)

    def init(key, input_size):
        key = _checks.prng_key("key", key)
        params = []
        size = input_size  # each layer's input size, read off the one before on a one-step sequence
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            p = layer.init(k, size)
            params.append(p)
            if i == len(layers) - 1:
                break  # the last layer's output size is not needed (its output may be a pytree)
            if layer.tokens is not None:  # an embedding reads one token
                one_step = jax.ShapeDtypeStruct((1,), jnp.int32)
            else:
                leaves = [l for l in jax.tree.leaves(p) if jnp.issubdtype(l.dtype, jnp.floating)]
                one_step = jax.ShapeDtypeStruct((1, size), leaves[0].dtype if leaves else jnp.float32)
            size = jax.eval_shape(layer.apply, p, one_step).shape[-1]
        return tuple(params)

    def check_params(params):
        # Exactly a tuple or list: a NamedTuple is one layer's params, even when
        # its number of fields happens to equal the number of layers.
        is_sequence = type(params) in (tuple, list)
        if not is_sequence or len(params) != len(layers):
            given = f"a {type(params).__name__} of {len(params)}" if is_sequence else type(params).__name__
            raise ValueError(f"serial of {len(layers)} layers expects a tuple of {len(layers)} params, got {given}")

    def initial_carry(params):
        check_params(params)
        return tuple(layer.initial_carry(p) for layer, p in zip(layers, params))

    def apply(params, xs, length=None, *, key=None, carry=None):
        _checks.prng_key("key", key, allow_none=True)
        check_params(params)
        if carry is not None and (type(carry) is not tuple or len(carry) != len(layers)):
            given = f"a {type(carry).__name__} of {len(carry)}" if type(carry) is tuple else type(carry).__name__
            raise ValueError(
                f"serial of {len(layers)} layers expects a carry tuple of {len(layers)} entries "
                f"(model.initial_carry(params)), got {given}"
            )
        keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        finals = []
        for i, (layer, p, k) in enumerate(zip(layers, params, keys)):
            if carry is None:
                xs = layer.apply(p, xs, length=length, key=k)
            else:
                xs, final = layer.apply(p, xs, length=length, key=k, carry=carry[i])
                finals.append(final)
        return xs if carry is None else (xs, tuple(finals))

    return Layer(init, apply, initial_carry, tokens=layers[0].tokens, parts=tuple(layers))
