"""Layers and models over ONE sequence, composed as in ``jax.example_libraries.stax``.

Every layer constructor returns a :class:`Layer`, a NamedTuple of two pure
functions:

- ``init(key, input_size) -> params``;
- ``apply(params, xs, length=None) -> ys`` for ONE sequence ``xs`` of shape
  ``[T, input_size]`` (or one vector, for layers after a many-to-one layer).

:func:`serial` composes layers into a model, which is a :class:`Layer` too;
it threads keys and feature sizes through ``init`` (the output size of each
layer is read off :func:`jax.eval_shape` of its ``apply``). ``length`` marks
the valid prefix of a padded sequence and is passed to every layer. Batches
come from :func:`jax.vmap`::

    model = serial(recurrent(lstm(20)), recurrent(lstm(20)), dense(1))
    params = model.init(jax.random.key(0), 1)
    ys = jax.vmap(model.apply, in_axes=(None, 0))(params, xs)  # xs: [B, T, 1]
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import cells as _cells
from .unroll import check_length, check_sequence, check_unroll_options, unroll, unroll_bidirectional, valid_steps

Array = jax.Array


class Layer(NamedTuple):
    """A layer or model: ``init(key, input_size) -> params`` and ``apply(params, xs, length=None) -> ys``."""

    init: Callable
    apply: Callable


class DenseParams(NamedTuple):
    """Params of :func:`dense`."""

    w: Array  # [F, I]
    b: Array  # [F]


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
    ``ys[-1]``.
    """
    if length is None:
        return jax.tree.map(lambda y: y[-1], ys)
    index = jnp.maximum(length - 1, 0)

    def pick(leaf):
        y = jax.lax.dynamic_index_in_dim(leaf, index, axis=0, keepdims=False)
        return jnp.where(length > 0, y, jnp.zeros_like(y))

    return jax.tree.map(pick, ys)


def recurrent(
    cell: _cells.Cell,
    return_sequences: bool = True,
    *,
    unroll_steps: int = 1,
    remat: str = "none",
    backward: str = "auto",
) -> Layer:
    """A recurrent layer: ``cell`` unrolled over the sequence.

    Args:
      cell: any :class:`scanrnn.Cell`, built-in or user-written.
      return_sequences: ``True`` gives the outputs of all steps ``[T, H]``
        (zeros past ``length``); ``False`` the output at the last valid step
        ``[H]`` (many-to-one, Keras' default).
      unroll_steps: passed to :func:`jax.lax.scan` as ``unroll``.
      remat, backward: passed to :func:`scanrnn.unroll` (memory for time in
        the backward pass; hand-written or autodiff BPTT).

    Params: the cell's params.
    """
    check_unroll_options(remat, backward)  # when the layer is built, not when first traced

    def apply(params, xs, length=None):
        _, ys = unroll(
            cell, params, xs, length=length, unroll=unroll_steps, remat=remat, backward=backward
        )  # checks xs and length
        return ys if return_sequences else last_valid(ys, length)

    return Layer(cell.init, apply)


def bidirectional(
    cell: _cells.Cell,
    merge: str = "concat",
    return_sequences: bool = True,
    *,
    unroll_steps: int = 1,
    remat: str = "none",
    backward: str = "auto",
) -> Layer:
    """A bidirectional layer: ``cell`` run forwards and backwards in one scan.

    The two directions' params are stacked on a leading axis of size 2
    (forward first) and run together through :func:`jax.vmap` over that axis
    (:func:`scanrnn.unroll_bidirectional`). The backward direction reads each
    sequence's valid part reversed; its outputs are put back in time order.

    Args:
      merge: how the two directions' outputs are combined: ``"concat"``
        (features ``2H``), ``"sum"``, ``"mean"`` or ``"mul"``.
      return_sequences: ``False`` merges the forward output at the last valid
        step with the backward output at step 0 (after it read the whole
        sequence), as Keras and PyTorch's ``h_n`` do.
      unroll_steps, remat, backward: as for :func:`recurrent`.
    """
    check_unroll_options(remat, backward)
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {sorted(MERGES)}, got {merge!r}")
    combine = MERGES[merge]

    def init(key, input_size):
        return jax.vmap(lambda k: cell.init(k, input_size))(jax.random.split(key, 2))

    def apply(params, xs, length=None):
        _, ys = unroll_bidirectional(
            cell, params, xs, length=length, unroll=unroll_steps, remat=remat, backward=backward
        )  # checks xs and length
        # Index the direction axis leaf by leaf: a user cell's y may be a pytree.
        forwards = jax.tree.map(lambda y: y[0], ys)
        backwards = jax.tree.map(lambda y: y[1], ys)
        if not return_sequences:
            forwards = last_valid(forwards, length)
            backwards = jax.tree.map(lambda y: y[0], backwards)
        return jax.tree.map(combine, forwards, backwards)

    return Layer(init, apply)


def dense(
    features: int,
    *,
    kernel_init: _cells.Initializer = _cells.glorot_uniform,
    bias_init: _cells.Initializer = _cells.zeros,
    param_dtype=jnp.float32,
) -> Layer:
    """An affine layer ``y = W x + b`` on the last axis.

    Given a sequence ``[T, I]`` it is applied at every step (Keras'
    ``TimeDistributed(Dense)``), and with ``length`` the outputs past it are
    zeros like those of the recurrent layers. Given a vector ``[I]`` (after a
    many-to-one layer) it is applied once.

    Params (:class:`DenseParams`): ``w [F, I]``, ``b [F]``.
    """
    _cells._check_hidden_size(features)

    def init(key, input_size):
        _cells._check_input_size(input_size)
        k1, k2 = jax.random.split(key)
        return DenseParams(
            kernel_init(k1, (features, input_size), param_dtype), bias_init(k2, (features,), param_dtype)
        )

    def affine(params, x):
        _cells._check_x("dense", x, params.w)
        return params.w @ x + params.b

    def apply(params, xs, length=None):
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
        ys = jax.vmap(affine, in_axes=(None, 0))(params, xs)
        if length is None:
            return ys
        return jnp.where(valid_steps(xs.shape[0], length)[:, None], ys, jnp.zeros_like(ys))

    return Layer(init, apply)


def serial(*layers: Layer) -> Layer:
    """Compose layers one after the other; params are a tuple, one entry per layer.

    >>> from scanrnn import lstm
    >>> model = serial(recurrent(lstm(8)), recurrent(lstm(8), return_sequences=False), dense(1))
    >>> params = model.init(jax.random.key(0), 3)
    >>> model.apply(params, jnp.ones((10, 3))).shape
    (1,)
    """
    if not layers:
        raise ValueError("serial needs at least one layer")

    def init(key, input_size):
        params = []
        shape = (1, input_size)  # a one-step sequence, to read off each layer's output size
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, len(layers)))):
            p = layer.init(k, shape[-1])
            params.append(p)
            if i == len(layers) - 1:
                break  # the last layer's output size is not needed (its output may be a pytree)
            leaves = [l for l in jax.tree.leaves(p) if jnp.issubdtype(l.dtype, jnp.floating)]
            dtype = leaves[0].dtype if leaves else jnp.float32
            shape = jax.eval_shape(layer.apply, p, jax.ShapeDtypeStruct(shape, dtype)).shape
        return tuple(params)

    def apply(params, xs, length=None):
        # Exactly a tuple or list: a NamedTuple is one layer's params, even when
        # its number of fields happens to equal the number of layers.
        is_sequence = type(params) in (tuple, list)
        if not is_sequence or len(params) != len(layers):
            given = f"a {type(params).__name__} of {len(params)}" if is_sequence else type(params).__name__
            raise ValueError(f"serial of {len(layers)} layers expects a tuple of {len(layers)} params, got {given}")
        for layer, p in zip(layers, params):
            xs = layer.apply(p, xs, length=length)
        return xs

    return Layer(init, apply)
