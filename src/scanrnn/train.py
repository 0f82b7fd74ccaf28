"""Losses, a jit-compiled train step and a ``fit`` loop that a long run can be left to.

Losses are functions of ONE example, ``loss(pred, target, length=None) ->
scalar``, like the models; a batch's loss is the mean over its examples. The
train step is a pure function ``(params, opt_state, batch, key=None) ->
(params, opt_state, metrics)`` built from a model, a loss and any optax
optimizer; the callable :func:`make_train_step` returns checks each batch
on the host, then runs the compiled step::

    step = make_train_step(model, mse, optax.adam(1e-3))
    opt_state = optax.adam(1e-3).init(params)
    params, opt_state, metrics = step(params, opt_state, Batch(x, y))
    params, opt_state, metrics = step(params, opt_state, Batch(x, y), key)  # with dropout

Both take ``devices=`` (a device count, a list of devices or a mesh): the
batch is then sharded over the devices and the params replicated, the
gradient's mean an all-reduce inside the compiled step
(:mod:`scanrnn.devices`).

:func:`fit` trains over minibatches for a number of epochs. Its whole
progress is a :class:`TrainState` (params, optimizer state, step count,
dropout key, data order, the best params so far and the history); a run
handed its state continues exactly where it stopped, and with
``checkpoint_dir`` the state is saved through orbax-checkpoint, so that a
run killed at any moment resumes bit for bit (``resume=True``). A step whose
loss, gradient or update is not finite stops the run with a
:class:`DivergenceError` (or is skipped, ``on_nonfinite="skip"``).

Truncated BPTT over one long stream hands each chunk's final carry to the
next (:func:`stream_batches`, :func:`batch_initial_carry`,
:func:`make_tbptt_step`)::

    step = make_tbptt_step(model, mse, optax.adam(1e-3))
    carry = batch_initial_carry(model, params, batch_size)
    params, opt_state, carry, metrics = step(params, opt_state, carry, Batch(x, y))
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checks
from . import devices as _devices
from .layers import Layer, check_tokens, last_valid
from .unroll import check_length, check_lengths, mask_padding, valid_steps

__all__ = [
    "Batch",
    "mse",
    "last_step_mse",
    "softmax_cross_entropy",
    "accuracy",
    "LOSSES",
    "predict_batch",
    "batch_loss",
    "global_norm",
    "make_train_step",
    "batch_initial_carry",
    "make_tbptt_step",
    "stream_batches",
    "make_eval_step",
    "evaluate",
    "predict",
    "TrainState",
    "init_state",
    "epoch_order",
    "DivergenceError",
    "NONFINITE",
    "fit",
]

Array = jax.Array


def _cached(function):
    """``function`` memoised on its (hashable) arguments; called uncached when one is not hashable.

    :func:`fit` builds its compiled step and evaluation from the model, the
    loss and the optimizer: with the same objects, a second ``fit`` (a run
    continued from its state, say) reuses the compiled programs instead of
    tracing and compiling them again. A few entries are kept.
    """
    cached = functools.lru_cache(maxsize=8)(function)

    def call(*args):
        try:
            hash(args)
        except TypeError:
            return function(*args)
        return cached(*args)

    return call


class Batch(NamedTuple):
    """A batch of examples, the batch axis first."""

    x: Array  # [B, T, I]
    y: Array  # [B, ...] targets, one per example
    length: Optional[Array] = None  # [B] integer valid lengths, or None


# --------------------------------------------------------------------------
# Losses and metrics of one example.
#
# A loss or metric may carry a ``check_targets(pred, target, length)``
# attribute: called on the host with the model's output shape ``pred`` (a
# ShapeDtypeStruct of one example) and the concrete targets and lengths of a
# whole data set or batch, it raises a ValueError for targets the loss cannot
# take (class labels outside [0, K), say). fit, evaluate and the train step
# call it before anything runs.


def _check_same_shape(name, pred, target):
    if jnp.shape(pred) != jnp.shape(target):
        raise ValueError(f"{name}: pred and target must have the same shape, got {jnp.shape(pred)} and {jnp.shape(target)}")


def _check_not_empty(name, pred):
    if 0 in jnp.shape(pred):
        raise ValueError(f"{name}: pred must have at least one element (one step), got shape {jnp.shape(pred)}")


def _masked_mean(values: Array, length) -> Array:
    """Mean of ``values [T, ...]`` over the elements of its first ``length`` steps (0 when none)."""
    values = values.reshape(values.shape[0], -1)
    mask = valid_steps(values.shape[0], length)[:, None]
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / (jnp.maximum(length, 1).astype(values.dtype) * values.shape[1])


def mse(pred, target, length=None) -> Array:
    """Mean squared error of one example.

    ``pred`` and ``target`` have the same shape, with at least one element.
    With ``length``, a prediction of rank 2 or more is a sequence ``[T, F,
    ...]`` of which only the first ``length`` steps count (the mean is over
    their elements, 0 when ``length`` is 0); what the steps past it hold,
    NaN included, changes neither the loss nor its gradient. A prediction of
    rank 0 or 1 (a many-to-one output ``[F]``) counts whole.
    """
    _check_same_shape("mse", pred, target)
    _check_not_empty("mse", pred)
    if length is None or jnp.ndim(pred) < 2:
        return jnp.mean(jnp.square(pred - target))
    length = check_length(length, jnp.shape(pred)[0])
    # Padding (a NaN target, say) never enters the arithmetic, nor its gradient.
    err = jnp.square(mask_padding(pred, length) - mask_padding(target, length))
    return _masked_mean(err, length)


def last_step_mse(pred, target, length=None) -> Array:
    """Mean squared error at the last valid time step only.

    The second seed's metric for sequence-to-sequence forecasts: the model
    forecasts the next 10 values at every step, and only the forecast made
    after the whole window counts (``pred[-1]`` against ``target[-1]``).
    ``pred`` and ``target`` are ``[T, F]`` with ``T >= 1``.
    """
    _check_same_shape("last_step_mse", pred, target)
    if jnp.ndim(pred) != 2:
        raise ValueError(f"last_step_mse needs sequences [T, F], got shape {jnp.shape(pred)}")
    _check_not_empty("last_step_mse", pred)
    length = check_length(length, jnp.shape(pred)[0])
    return jnp.mean(jnp.square(last_valid(pred, length) - last_valid(target, length)))


def _check_classification(name, logits, labels):
    labels = jnp.asarray(labels)
    if jnp.shape(logits)[:-1] != labels.shape or jnp.ndim(logits) not in (1, 2):
        raise ValueError(
            f"{name}: logits must be [T, K] with labels [T] (or [K] with a scalar), "
            f"got logits {jnp.shape(logits)} and labels {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if jnp.shape(logits)[-1] == 0 or 0 in labels.shape:
        raise ValueError(f"{name}: needs at least one class and one step, got logits of shape {jnp.shape(logits)}")
    if not isinstance(labels, jax.core.Tracer):
        _check_class_labels(name, jnp.shape(logits)[-1], np.asarray(labels), None)
    return labels


def _check_class_labels(name, num_classes, labels, length):
    """Concrete ``labels`` (``[N]`` or ``[N, T]`` with ``length [N]``, or one example) in ``[0, K)`` where they count."""
    labels = np.asarray(labels)
    if length is not None and labels.ndim >= 2:
        counted = labels[np.arange(labels.shape[1])[None, :] < np.asarray(length)[:, None]]
    else:
        counted = labels.ravel()
    if counted.size and (counted.min() < 0 or counted.max() >= num_classes):
        raise ValueError(
            f"{name}: class labels must lie in [0, {num_classes}) (K = {num_classes} logits), "
            f"got values in [{counted.min()}, {counted.max()}]"
        )


def _class_targets_check(name):
    def check_targets(pred, target, length):
        if len(pred.shape) not in (1, 2):
            raise ValueError(f"{name}: the model's output must be logits [K] or [T, K], got shape {pred.shape}")
        target = np.asarray(target)
        if not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"{name}: labels must be integers, got dtype {target.dtype}")
        if target.shape[1:] != tuple(pred.shape[:-1]):
            raise ValueError(
                f"{name}: labels must have shape [N{''.join(f', {d}' for d in pred.shape[:-1])}] for logits "
                f"{tuple(pred.shape)} per example, got {target.shape}"
            )
        _check_class_labels(name, pred.shape[-1], target, length)

    return check_targets


def softmax_cross_entropy(logits, labels, length=None) -> Array:
    """Softmax cross-entropy with integer labels, masked past ``length``.

    ``logits`` is ``[T, K]`` with ``labels`` ``[T]`` (mean over the first
    ``length`` steps; labels past it, such as a pad of -1, are ignored), or
    ``[K]`` with a scalar label (one classification, where ``length`` is
    ignored). Concrete labels must lie in ``[0, K)`` (a ValueError
    otherwise); a traced one (under a user's ``jit``) outside that range
    makes the loss NaN, never a number read off another class, so that the
    divergence guard of :func:`fit` stops at it.
    """
    labels = _check_classification("softmax_cross_entropy", logits, labels)
    if length is not None and labels.ndim:
        length = check_length(length, labels.shape[0])
        # Padding past the length (a label of -1, a NaN logit) never enters the arithmetic.
        logits, labels = mask_padding(logits, length), mask_padding(labels, length)
    num_classes = jnp.shape(logits)[-1]
    known = (labels >= 0) & (labels < num_classes)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(known, labels, 0))
    nll = jnp.where(known, nll, jnp.full_like(nll, jnp.nan))
    if length is None or labels.ndim == 0:
        return jnp.mean(nll)
    return _masked_mean(nll, length)


def accuracy(logits, labels, length=None) -> Array:
    """The fraction of correct classifications of one example: ``argmax(logits) == labels``.

    Shapes as :func:`softmax_cross_entropy`: ``[K]`` logits with a scalar
    label (1 or 0), or ``[T, K]`` with ``[T]`` labels, averaged over the
    first ``length`` steps. :func:`fit` reports it on the validation set
    when the loss is :func:`softmax_cross_entropy`.
    """
    labels = _check_classification("accuracy", logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    if length is None or labels.ndim == 0:
        return jnp.mean(correct)
    length = check_length(length, labels.shape[0])
    return _masked_mean(correct, length)


softmax_cross_entropy.check_targets = _class_targets_check("softmax_cross_entropy")
accuracy.check_targets = _class_targets_check("accuracy")

LOSSES = {"mse": mse, "last_step_mse": last_step_mse, "softmax_cross_entropy": softmax_cross_entropy}


# --------------------------------------------------------------------------
# Batches, checked on the host.


def _check_batch(batch) -> Batch:
    """The shape checks of a :class:`Batch` (run at trace time too)."""
    if not isinstance(batch, Batch):
        raise _checks.InputTypeError(f"expected a scanrnn.train.Batch(x, y, length), got {type(batch).__name__}")
    tokens = jnp.issubdtype(jnp.result_type(batch.x), jnp.integer)
    if jnp.ndim(batch.x) != (2 if tokens else 3):
        raise ValueError(
            f"batch.x must have shape [B, T, I] (or [B, T] integer tokens, for a model that begins with an "
            f"embedding), got {jnp.shape(batch.x)} of dtype {jnp.result_type(batch.x)}"
        )
    _checks.real_dtype("batch.x", batch.x)
    _checks.real_dtype("batch.y", batch.y)
    n = jnp.shape(batch.x)[0]
    if jnp.shape(batch.y)[:1] != (n,):
        raise ValueError(f"batch.y must have a leading batch axis of {n}, got shape {jnp.shape(batch.y)}")
    check_lengths(batch.length, n, jnp.shape(batch.x)[1])
    return batch


def _output_struct(model: Layer, params, x, length):
    """The model's output for one example, as a ShapeDtypeStruct (traced, nothing runs)."""
    x0 = jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x))
    n0 = None if length is None else jax.ShapeDtypeStruct((), jnp.result_type(length))
    return jax.eval_shape(lambda p, x, n: model.apply(p, x, n), params, x0, n0)


def _check_targets(fns, pred, batch: Batch) -> None:
    """Run the ``check_targets`` of each loss or metric in ``fns`` on a concrete batch."""
    for fn in fns:
        check = getattr(fn, "check_targets", None)
        if check is not None and not isinstance(batch.y, jax.core.Tracer):
            check(pred, batch.y, None if batch.length is None else np.asarray(batch.length))


def _num_examples(data) -> int:
    """The common leading axis of every leaf of ``data``; a ValueError when they differ or there are none."""
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("the data set has no arrays")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every array of a data set must have the same leading (example) axis, got leading sizes {sorted(map(str, sizes))}")
    return sizes.pop()


def _host_data(name: str, data, model):
    """``data`` as NumPy arrays (shuffled batches are then cut on the host), checked; returns ``(data, n)``."""
    if model is not None:
        if not isinstance(data, Batch):
            raise _checks.InputTypeError(f"{name} must be a scanrnn.train.Batch(x, y, length), got {type(data).__name__}")
        data = _check_batch(Batch(*(None if a is None else np.asarray(a) for a in data)))
    else:
        data = jax.tree.map(np.asarray, data)
        for leaf in jax.tree.leaves(data):
            _checks.real_dtype(name, leaf)
    n = _num_examples(data)
    if n == 0:
        raise ValueError(f"{name} is empty (0 examples); fit and evaluate need at least one")
    return data, n


def _take(data, index):
    return jax.tree.map(lambda a: a[index], data)


# --------------------------------------------------------------------------
# Batched evaluation and the train step.


def predict_batch(model: Layer, params, x, length=None, *, key=None, carry=None):
    """``model.apply`` over a batch ``x [B, T, I]`` (and ``length [B]``): a ``jax.vmap``.

    Args:
      key: ``None`` (evaluation) or a PRNG key, split into one key per
        example (training: each example draws its own dropout masks).
      carry: ``None``, or the model's carry with a leading batch axis on
        every leaf (:func:`batch_initial_carry`); then the result is
        ``(ys, final_carry)``, the final carry batched likewise.
    """
    keys = None if key is None else jax.random.split(key, jnp.shape(x)[0])
    return _apply_batch(model, params, x, length, keys, carry)


def _apply_batch(model: Layer, params, x, length, keys, carry=None):
    """:func:`predict_batch` with the examples' keys given, ``keys [B]`` or ``None``."""

    def one(x, n, k, c):
        options = {}
        if k is not None:
            options["key"] = k
        if c is not None:
            options["carry"] = c
        return model.apply(params, x, n, **options)

    def axis(a):
        return None if a is None else 0

    return jax.vmap(one, in_axes=(0, axis(length), axis(keys), axis(carry)))(x, length, keys, carry)


def _losses(loss: Callable, pred, batch: Batch) -> Array:
    """``loss`` of every example of the batch, ``[B]``."""
    if batch.length is None:
        return jax.vmap(loss)(pred, batch.y)
    return jax.vmap(loss)(pred, batch.y, batch.length)


def batch_loss(model: Layer, loss: Callable, params, batch: Batch, *, key=None) -> Array:
    """Mean over the batch of ``loss(model.apply(params, x, key=k), y, length)``.

    ``key`` is ``None`` (evaluation) or a PRNG key split into one per example.
    """
    batch = _check_batch(batch)
    pred = predict_batch(model, params, batch.x, batch.length, key=key)
    return jnp.mean(_losses(loss, pred, batch))


def global_norm(tree) -> Array:
    """The Euclidean norm of all the leaves of ``tree`` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def _all_finite(tree) -> Array:
    """One boolean: every element of every floating leaf of ``tree`` is finite."""
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _objective(model: Optional[Layer], loss: Callable) -> Callable:
    """``(params, batch, key) -> scalar``: the batch loss of a model, or ``loss`` itself when ``model`` is None."""
    if model is None:
        return loss
    return lambda params, batch, key: batch_loss(model, loss, params, batch, key=key)


def _sharded_value_and_grad(model: Layer, loss: Callable, mesh) -> Callable:
    """``(params, (batch, weight), key) -> (loss, grads)`` of the weighted objective, one program per device.

    Under :func:`jax.shard_map` each device differentiates the weighted sum
    of its own examples' losses, a program with no communication (left to
    XLA's sharding propagation, the weight gradients summed inside the
    backward scans were all-reduced at every time step); then one ``psum``
    of the sums, the gradients and the weights gives the mean over the
    real examples. The examples' keys are split from ``key`` over the whole
    batch before it is cut, as on one device.
    """
    from jax.sharding import PartitionSpec

    rows, whole = PartitionSpec(_devices.AXIS), PartitionSpec()

    def local(params, batch, weight, keys):
        def total(params):
            losses = _losses(loss, _apply_batch(model, params, batch.x, batch.length, keys), batch)
            return jnp.sum(losses * weight.astype(losses.dtype))

        value, grads = jax.value_and_grad(total)(params)
        value, grads, count = jax.lax.psum((value, grads, jnp.sum(weight)), _devices.AXIS)
        return value / count.astype(value.dtype), jax.tree.map(lambda g: g / count.astype(g.dtype), grads)

    def value_and_grad(params, weighted, key):
        batch, weight = weighted
        batch = _check_batch(batch)
        keys = None if key is None else jax.random.split(key, jnp.shape(weight)[0])
        # check_vma off: a cell's initial carry (zeros, the same on every device) meets the device's own
        # examples in the scan, which the check would have cast by hand in every cell.
        spread = jax.shard_map(local, mesh=mesh, in_specs=(whole, rows, rows, None if keys is None else rows),
                               out_specs=(whole, whole), check_vma=False)
        return spread(params, batch, weight, keys)

    return value_and_grad


def _sharded_tbptt_gradient(model: Layer, loss: Callable, mesh) -> Callable:
    """``(params, carry, batch, key) -> ((loss, final_carry), grads)`` of a chunk, one program per device.

    As :func:`_sharded_value_and_grad`, for :func:`make_tbptt_step`: each
    device runs its own streams from its part of the carry and returns its
    part of the final carry; the losses and gradients are summed once.
    """
    from jax.sharding import PartitionSpec

    rows, whole = PartitionSpec(_devices.AXIS), PartitionSpec()
    count = mesh.devices.size

    def local(params, carry, batch, keys):
        def total(params):
            start = batch_initial_carry(model, params, jnp.shape(batch.x)[0]) if carry is None else carry
            pred, final = _apply_batch(model, params, batch.x, batch.length, keys, start)
            return jnp.sum(_losses(loss, pred, batch)), final

        (value, final), grads = jax.value_and_grad(total, has_aux=True)(params)
        value, grads = jax.lax.psum((value, grads), _devices.AXIS)
        streams = jnp.shape(batch.x)[0] * count
        return (value / streams, final), jax.tree.map(lambda g: g / streams, grads)

    def gradient(params, carry, batch, key):
        batch = _check_batch(batch)
        keys = None if key is None else jax.random.split(key, jnp.shape(batch.x)[0])
        spread = jax.shard_map(local, mesh=mesh, in_specs=(whole, rows, rows, rows),
                               out_specs=((whole, rows), whole), check_vma=False)
        return spread(params, carry, batch, keys)

    return gradient


def _parallel_batch(model: Optional[Layer], batch, mesh):
    """A host batch as the data-parallel step takes it: padded and weighted (a model), sharded over ``mesh``.

    Every process gives the whole batch and places only its own devices' rows.
    """
    count = mesh.devices.size
    if model is None:
        return _devices.shard_batch(jax.tree.map(np.asarray, batch), mesh)
    batch = Batch(*(None if a is None else np.asarray(a) for a in batch))
    return _devices.shard_batch(_devices.pad_batch(batch, count), mesh)


def _guarded_step(
    objective: Callable, optimizer: optax.GradientTransformation, nonfinite: str, value_and_grad=None
) -> Callable:
    """The pure step ``(params, opt_state, batch, key, halted) -> (params, opt_state, metrics, halted)``.

    Inside the step it computes whether the loss, the gradient and the new
    params are finite. ``nonfinite`` says what a step does when one is not:
    ``"apply"`` updates anyway; ``"skip"`` returns params and the optimizer
    state unchanged (``optax.apply_if_finite``'s rule); ``"halt"`` skips it
    too and returns ``halted`` true, which makes every later step a no-op
    (``halted`` in), so that :func:`fit` learns of the failure at its next
    host sync, without a sync at every step, with the last finite state.
    ``value_and_grad(params, batch, key)`` replaces
    ``jax.value_and_grad(objective)`` (the data-parallel step's, which
    reduces over the devices).
    """
    value_and_grad = value_and_grad or jax.value_and_grad(objective)

    def step(params, opt_state, batch, key, halted):
        value, grads = value_and_grad(params, batch, key)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        loss_ok, grads_ok, update_ok = jnp.isfinite(value), _all_finite(grads), _all_finite(new_params)
        metrics = {
            "loss": value, "grad_norm": global_norm(grads),
            "loss_finite": loss_ok, "grads_finite": grads_ok, "update_finite": update_ok,
        }
        if nonfinite == "apply":
            return new_params, new_opt_state, metrics, halted
        ok = loss_ok & grads_ok & update_ok & ~halted
        params, opt_state = _select(ok, (new_params, new_opt_state), (params, opt_state))
        metrics["applied"] = ok
        return params, opt_state, metrics, (halted | ~ok) if nonfinite == "halt" else halted

    return step


def _step_checks(model: Layer, loss: Callable) -> Callable:
    """``check(params, batch, key)``: a train step's host-side checks of one batch.

    Its shapes and lengths (:func:`_check_batch`), at least one example (a
    step on none would only advance the optimizer's count), the key, and
    the targets through the loss's ``check_targets``, against the model's
    output shape (traced once per input shape).
    """
    outputs = {}

    def check(params, batch, key):
        batch = _check_batch(batch)
        if jnp.shape(batch.x)[0] == 0:
            raise ValueError("the batch is empty (0 examples): a step on it would only advance the optimizer's count")
        _checks.prng_key("key", key, allow_none=True)
        signature = (jnp.shape(batch.x), jnp.result_type(batch.x), batch.length is None)
        if signature not in outputs:
            outputs[signature] = _output_struct(model, params, batch.x, batch.length)
        _check_targets([loss], outputs[signature], batch)

    return check


def make_train_step(
    model: Layer,
    loss: Callable,
    optimizer: optax.GradientTransformation,
    *,
    skip_nonfinite: bool = False,
    devices: Optional[_devices.Devices] = None,
) -> Callable:
    """A train step ``(params, opt_state, batch, key=None) -> (params, opt_state, metrics)``.

    The returned callable checks ``batch`` on the host (its shapes; lengths
    in ``[0, T]``; at least one example; targets the loss can take, such as
    class labels in ``[0, K)``), then runs the jit-compiled step (its
    ``jitted`` attribute; called on traced values, the checks of values are
    left out). ``metrics`` holds the batch ``loss`` (before the update), the
    global norm of the gradients ``grad_norm``, and the booleans
    ``loss_finite``, ``grads_finite`` and ``update_finite`` (the new params),
    computed inside the compiled step. A ``key`` is passed to the model
    (split into one per example): training mode, for dropout; without it
    the model is called without a key.

    Args:
      skip_nonfinite: leave params and the optimizer state unchanged at a
        step whose loss, gradient or update is not finite (as
        ``optax.apply_if_finite`` does); ``metrics["applied"]`` says whether
        the update was applied. Without it the update is always applied.
      devices: ``None`` (one device), or data parallelism over a device
        count, a list of devices or a mesh (:func:`scanrnn.devices.data_mesh`):
        the batch (host arrays, padded to a multiple of the device count
        with zero-weight copies) is sharded over the devices, params and
        optimizer state are replicated on them and come back replicated,
        and the gradient's mean is an all-reduce inside the step. The
        numbers are those of one device up to rounding. ``jitted`` is then
        the step on ``(params, opt_state, (batch, weight), key)``.
    """
    if not isinstance(model, Layer):
        raise _checks.InputTypeError(f"make_train_step: model must be a scanrnn Layer (serial(...), recurrent(...)), got {type(model).__name__}")
    skip_nonfinite = _checks.flag("skip_nonfinite", skip_nonfinite)
    mesh = None if devices is None else _devices.data_mesh(devices)
    gradient = None if mesh is None else _sharded_value_and_grad(model, loss, mesh)
    pure = _guarded_step(_objective(model, loss), optimizer, "skip" if skip_nonfinite else "apply", gradient)

    def compiled_step(params, opt_state, batch, key=None):
        params, opt_state, metrics, _ = pure(params, opt_state, batch, key, jnp.asarray(False))
        return params, opt_state, metrics

    check = _step_checks(model, loss)
    if mesh is None:
        jitted = jax.jit(compiled_step)

        def step(params, opt_state, batch, key=None):
            check(params, batch, key)
            return jitted(params, opt_state, batch, key)

    else:
        jitted = jax.jit(compiled_step, out_shardings=_devices.replicated(mesh))

        def step(params, opt_state, batch, key=None):
            check(params, batch, key)
            params, opt_state, key = _devices.replicate((params, opt_state, key), mesh)
            out = jitted(params, opt_state, _parallel_batch(model, batch, mesh), key)
            return jax.block_until_ready(out) if _devices.needs_blocking(mesh) else out

    step.jitted = jitted
    return step


# --------------------------------------------------------------------------
# Truncated backpropagation through time over long streams.


def batch_initial_carry(model: Layer, params, batch_size: int):
    """The model's initial carry (zeros, or the learned one) for ``batch_size`` sequences.

    Every leaf of ``model.initial_carry(params)`` gets a leading axis of
    ``batch_size``: the ``carry`` that :func:`make_tbptt_step` and
    :func:`predict_batch` take.
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    carry = model.initial_carry(params)
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch_size,) + jnp.shape(a)), carry)


def make_tbptt_step(
    model: Layer, loss: Callable, optimizer: optax.GradientTransformation, *, devices: Optional[_devices.Devices] = None
) -> Callable:
    """A step of truncated BPTT: ``(params, opt_state, carry, batch, key=None)
    -> (params, opt_state, carry, metrics)``.

    A long stream is cut into chunks of ``K`` steps (:func:`stream_batches`).
    Each step runs the model over one chunk ``batch.x [B, K, I]`` starting
    from ``carry`` (leaves ``[B, ...]``), and takes the gradient of the
    chunk's mean loss through those ``K`` steps only: the incoming carry is a
    constant, so no gradient reaches earlier chunks (Williams and Peng 1990;
    Sutskever 2013's truncated BPTT with ``k1 = k2 = K``). The returned
    carry is the final carry after ``lax.stop_gradient``, ready to be the
    next chunk's ``carry``. The forward pass is therefore exactly that of
    one pass over the whole stream.

    ``carry=None`` starts the streams from the model's initial carry inside
    the differentiated function, so a learned initial carry
    (``learn_initial_carry=True``) gets its gradient from the first chunk;
    :func:`batch_initial_carry` gives the same numbers as a constant.
    ``key`` is passed to the model, one per example, as in
    :func:`make_train_step`. ``metrics`` holds ``loss`` and ``grad_norm``.
    The callable checks each batch on the host as :func:`make_train_step`'s
    does (lengths in ``[0, K]``, targets), then runs the compiled step (its
    ``jitted`` attribute).

    ``devices`` (a count, a list or a mesh) trains data-parallel as
    :func:`make_train_step` does, the streams cut over the devices: the
    number of streams ``B`` must be a multiple of the device count (a
    stream cannot be padded without a carry of its own), and the carry
    comes back cut the same way, ready for the next chunk without going
    through the host.

    Example, a model over a stream of floats::

        inputs, targets = stream_batches(series, batch_size=8, chunk_size=20)
        step = make_tbptt_step(model, mse, optax.adam(1e-2))
        opt_state = optax.adam(1e-2).init(params)
        carry = batch_initial_carry(model, params, 8)
        for x, y in zip(inputs, targets):               # [8, 20] each
            params, opt_state, carry, metrics = step(params, opt_state, carry, Batch(x[..., None], y[..., None]))
    """
    if not isinstance(model, Layer):
        raise _checks.InputTypeError(f"make_tbptt_step: model must be a scanrnn Layer, got {type(model).__name__}")

    def objective(params, carry, batch, key):
        batch = _check_batch(batch)
        if carry is None:
            carry = batch_initial_carry(model, params, jnp.shape(batch.x)[0])
        pred, final = predict_batch(model, params, batch.x, batch.length, key=key, carry=carry)
        return jnp.mean(_losses(loss, pred, batch)), final

    def make_step(gradient):
        def compiled_step(params, opt_state, carry, batch, key=None):
            (value, final), grads = gradient(params, carry, batch, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {"loss": value, "grad_norm": global_norm(grads)}
            return params, opt_state, jax.lax.stop_gradient(final), metrics

        return compiled_step

    compiled_step = make_step(jax.value_and_grad(objective, has_aux=True))
    check = _step_checks(model, loss)
    if devices is None:
        jitted = jax.jit(compiled_step)

        def step(params, opt_state, carry, batch, key=None):
            check(params, batch, key)
            return jitted(params, opt_state, carry, batch, key)

        step.jitted = jitted
        return step

    mesh = _devices.data_mesh(devices)
    rows, whole = _devices.batch_sharding(mesh), _devices.replicated(mesh)
    jitted = jax.jit(make_step(_sharded_tbptt_gradient(model, loss, mesh)), out_shardings=(whole, whole, rows, whole))

    def placed(a):  # a carry leaf: where the previous step left it, or from the host at the first chunk
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(rows, a.ndim):
            return a
        return _devices.shard_batch(np.asarray(a), mesh)

    def step(params, opt_state, carry, batch, key=None):
        check(params, batch, key)
        streams, count = int(jnp.shape(batch.x)[0]), mesh.devices.size
        if streams % count:
            raise ValueError(
                f"make_tbptt_step with devices: the {streams} streams of a batch must be a multiple of the "
                f"{count} devices (stream_batches' batch_size)"
            )
        params, opt_state, key = _devices.replicate((params, opt_state, key), mesh)
        carry = None if carry is None else jax.tree.map(placed, carry)
        batch = _devices.shard_batch(Batch(*(None if a is None else np.asarray(a) for a in batch)), mesh)
        out = jitted(params, opt_state, carry, batch, key)
        return jax.block_until_ready(out) if _devices.needs_blocking(mesh) else out

    step.jitted = jitted
    return step


def stream_batches(tokens, batch_size: int, chunk_size: int):
    """Cut one long 1-D stream into ``batch_size`` parallel streams and chunks of them.

    With ``L = (len(tokens) - 1) // batch_size`` the stream ``b`` is
    ``tokens[b L : b L + L]``, and its targets are the next tokens
    ``tokens[b L + 1 : b L + L + 1]``. Each is cut into ``num_chunks = L //
    chunk_size`` chunks (the remainder is dropped)::

        inputs[c, b, t]  = tokens[b L + c K + t]
        targets[c, b, t] = tokens[b L + c K + t + 1]

    so chunk ``c + 1`` continues every stream of chunk ``c``, and one
    chunk's final carry is the next one's initial carry
    (:func:`make_tbptt_step`).

    Args:
      tokens: a 1-D array (integer tokens or floats).
      batch_size: ``B``, the number of parallel streams.
      chunk_size: ``K``, the steps per chunk (the truncation length).

    Returns:
      ``(inputs, targets)``, NumPy arrays ``[num_chunks, B, K]`` of the
      tokens' dtype.

    >>> inputs, targets = stream_batches(np.arange(21), batch_size=2, chunk_size=4)
    >>> inputs[:, 1].tolist(), targets[0, 1].tolist()
    ([[10, 11, 12, 13], [14, 15, 16, 17]], [11, 12, 13, 14])
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tokens.shape}")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        _checks.positive_int(name, value)
    length = (len(tokens) - 1) // batch_size
    num_chunks = length // chunk_size
    if num_chunks == 0:
        raise ValueError(
            f"a stream of {len(tokens)} tokens gives {batch_size} streams of {length} steps, fewer than "
            f"one chunk of {chunk_size}; need at least {batch_size * chunk_size + 1} tokens"
        )
    used = num_chunks * chunk_size
    starts = np.arange(batch_size) * length  # [B]

    def cut(offset):
        streams = np.stack([tokens[s + offset : s + offset + used] for s in starts])  # [B, used]
        return streams.reshape(batch_size, num_chunks, chunk_size).swapaxes(0, 1)

    return cut(0), cut(1)


# --------------------------------------------------------------------------
# Evaluation and prediction over a whole data set.


def _eval_fn(model: Optional[Layer], loss: Callable, metrics: Mapping[str, Callable]) -> Callable:
    """``(params, batch) -> {"loss": mean, name: mean, ...}`` over one batch (not compiled)."""

    def evaluate_batch(params, batch):
        if model is None:
            out = {"loss": loss(params, batch, None)}
            out.update({name: fn(params, batch) for name, fn in metrics.items()})
            return out
        batch = _check_batch(batch)
        pred = predict_batch(model, params, batch.x, batch.length)
        out = {"loss": jnp.mean(_losses(loss, pred, batch))}
        out.update({name: jnp.mean(_losses(fn, pred, batch)) for name, fn in metrics.items()})
        return out

    return evaluate_batch


@_cached
def _eval_program(model, loss, metrics: tuple):
    """:func:`_eval_fn` jit-compiled, once for the same model, loss and metrics (sorted ``(name, fn)`` pairs)."""
    return jax.jit(_eval_fn(model, loss, dict(metrics)))


def make_eval_step(model: Optional[Layer], loss: Callable) -> Callable:
    """A jit-compiled ``(params, batch) -> mean loss`` (``model=None``: ``loss(params, batch, None)``)."""
    evaluate_batch = _eval_fn(model, loss, {})
    return jax.jit(lambda params, batch: evaluate_batch(params, batch)["loss"])


def _check_metrics(metrics) -> dict:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping) or not all(isinstance(k, str) and callable(f) for k, f in metrics.items()):
        raise _checks.InputTypeError(f"metrics must be a dict of name -> function, got {metrics!r}")
    if "loss" in metrics:
        raise ValueError("metrics must not be named 'loss' (the loss is always reported)")
    return dict(metrics)


def _mean_over(eval_fn, params, data, n: int, batch_size: int) -> dict:
    """The means of ``eval_fn``'s values over ``data``, in chunks of ``batch_size``, weighted by chunk size."""
    totals = {}
    for start in range(0, n, batch_size):
        index = slice(start, start + batch_size)
        chunk = _take(data, index)
        size = len(range(n)[index])
        for name, value in jax.device_get(eval_fn(params, chunk)).items():
            totals[name] = totals.get(name, 0.0) + float(value) * size
    return {name: total / n for name, total in totals.items()}


def _check_data_targets(model, params, data, fns) -> None:
    if model is not None and getattr(model, "tokens", None) is not None:  # a model that begins with an embedding
        check_tokens(data.x, model.tokens, data.length)
    if model is not None and any(getattr(fn, "check_targets", None) for fn in fns):
        _check_targets(fns, _output_struct(model, params, data.x, data.length), data)


def evaluate(
    model: Optional[Layer], loss: Callable, params, data, batch_size: int = 1024, *, eval_step=None, metrics=None
):
    """Mean loss over ``data``, in chunks of ``batch_size`` examples.

    ``model=None`` evaluates a batch objective ``loss(params, batch, key)``
    (see :func:`fit`) over any pytree of arrays with a leading example axis.
    With ``metrics`` (a dict of name -> function of one example, like the
    losses; with ``model=None``, of ``(params, batch)``), the result is a
    dict of means, ``"loss"`` and one entry per metric; without, a float.
    The data are checked on the host first (shapes, lengths in ``[0, T]``,
    at least one example, targets such as class labels in ``[0, K)``).
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    data, n = _host_data("data", data, model)
    metric_fns = _check_metrics(metrics)
    _check_data_targets(model, params, data, [loss, *metric_fns.values()])
    if metrics is None and eval_step is not None:
        return _mean_over(lambda p, b: {"loss": eval_step(p, b)}, params, data, n, batch_size)["loss"]
    means = _mean_over(_eval_program(model, loss, tuple(sorted(metric_fns.items()))), params, data, n, batch_size)
    return means["loss"] if metrics is None else means


def predict(model: Layer, params, x, length=None, batch_size: int = 1024) -> np.ndarray:
    """``model.apply`` over many examples ``x [N, T, I]``, in jit-compiled chunks; returns NumPy.

    ``length`` (``[N]``, concrete) is checked on the host: integers in ``[0, T]``.
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape [N, T, I], got shape {x.shape}")
    _checks.real_dtype("x", x)
    if len(x) == 0:
        raise ValueError("x is empty (0 examples)")
    if length is not None:
        length = np.asarray(check_lengths(length, x.shape[0], x.shape[1]))
    fn = jax.jit(lambda p, x, n: predict_batch(model, p, x, n))
    out = []
    for start in range(0, len(x), batch_size):
        n = None if length is None else length[start : start + batch_size]
        out.append(np.asarray(fn(params, x[start : start + batch_size], n)))
    return np.concatenate(out)


# --------------------------------------------------------------------------
# The state of a training run.


class TrainState(NamedTuple):
    """Everything a :func:`fit` run is between two train steps: continuing from it continues the run exactly.

    The data order of epoch ``e`` is the ``e``-th permutation drawn by
    ``numpy.random.default_rng(seed)`` (:func:`epoch_order`), so ``seed``,
    ``epoch`` and ``batch`` place the run in its data without any generator
    state. Counters and sums are NumPy scalars; ``history`` is host data.
    """

    params: Any  # the model's params
    opt_state: Any  # the optimizer's state (with clip_norm's, when fit clips)
    step: Any  # [] int64: train steps taken over the run (a skipped non-finite step counts)
    epoch: Any  # [] int64: epochs completed
    batch: Any  # [] int64: batches of the epoch in progress done (0 between epochs)
    seed: Any  # [] int64: seeds the data order
    key: Any  # the run's PRNG key for the model's dropout (step i uses fold_in(key, i)), or None
    best_params: Any  # the params after the best epoch by the monitored metric (the params until one is seen)
    best_value: Any  # [] float64: the monitored metric's best value so far (NaN before the first)
    best_epoch: Any  # [] int64: the epoch (from 1) that gave it; 0 before the first
    epoch_loss: Any  # [] float64: sum over the epoch in progress of batch loss x batch size, applied steps only
    epoch_examples: Any  # [] int64: the examples of those applied steps
    epoch_skipped: Any  # [] int64: non-finite steps skipped in the epoch in progress
    history: dict  # per-epoch lists of floats: train_loss, seconds, valid_loss, valid_<metric>, skipped_steps


def _int(value) -> np.ndarray:
    return np.asarray(value, np.int64)


def _float(value) -> np.ndarray:
    return np.asarray(value, np.float64)


@_cached
def _with_clipping(optimizer, clip_norm):
    if clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)


@_cached
def _fit_programs(model, loss, optimizer, metrics: tuple, nonfinite: str, mesh=None):
    """The jit-compiled train step and evaluation of :func:`fit` (``metrics``: sorted ``(name, fn)`` pairs).

    With a ``mesh``, the data-parallel step: a model's objective weighted
    (:func:`_sharded_value_and_grad`), everything it returns replicated.
    """
    if mesh is None:
        step = jax.jit(_guarded_step(_objective(model, loss), optimizer, nonfinite))
    else:  # a batch objective is opaque: its batch is sharded and XLA places the reductions
        gradient = None if model is None else _sharded_value_and_grad(model, loss, mesh)
        step = jax.jit(_guarded_step(_objective(model, loss), optimizer, nonfinite, gradient),
                       out_shardings=_devices.replicated(mesh))
    return step, _eval_program(model, loss, metrics)


def init_state(
    params, optimizer: optax.GradientTransformation, *, seed: int = 0, key=None, clip_norm: Optional[float] = None
) -> TrainState:
    """The state of a run that has not taken a step: hand it to :func:`fit` to get a state back.

    ``optimizer`` and ``clip_norm`` must be those given to :func:`fit`
    (the optimizer state includes the clipping's). ``seed`` seeds the data
    order and ``key`` (a PRNG key or ``None``) the model's dropout.

    >>> import optax
    >>> state = init_state({"w": jnp.zeros(2)}, optax.sgd(0.1), seed=3)
    >>> int(state.step), int(state.epoch), int(state.seed)
    (0, 0, 3)
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise _checks.InputTypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    seed = _checks.non_negative_int("seed", seed)
    key = _checks.prng_key("key", key, allow_none=True)
    if clip_norm is not None:
        clip_norm = _checks.positive_number("clip_norm", clip_norm)
    zero = _int(0)
    return TrainState(
        params=params, opt_state=_with_clipping(optimizer, clip_norm).init(params), step=zero, epoch=zero,
        batch=zero, seed=_int(seed), key=key, best_params=params, best_value=_float(np.nan), best_epoch=zero,
        epoch_loss=_float(0.0), epoch_examples=zero, epoch_skipped=zero, history={},
    )


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order :func:`fit` visits ``n`` examples in at epoch ``epoch`` (counted from 0).

    It is the ``epoch``-th permutation drawn by ``numpy.random.default_rng(seed)``.

    >>> rng = np.random.default_rng(7)
    >>> first, second = rng.permutation(5), rng.permutation(5)
    >>> bool((epoch_order(7, 1, 5) == second).all())
    True
    """
    rng = np.random.default_rng(_checks.non_negative_int("seed", seed))
    for _ in range(_checks.non_negative_int("epoch", epoch)):
        rng.permutation(n)
    return rng.permutation(n)


class DivergenceError(FloatingPointError):
    """A train step of :func:`fit` had a non-finite loss, gradient or update.

    Attributes:
      epoch: the epoch (from 1) of the step.
      step: the step's number in the run (from 1).
      batch: the batch's number in its epoch (from 1).
      nonfinite: ``"loss"``, ``"gradient"`` or ``"update"``: the first of them that was not finite.
      state: the :class:`TrainState` before that step, the last finite one
        (also saved as the latest checkpoint when ``fit`` had a directory).
    """

    def __init__(self, message, *, epoch, step, batch, nonfinite, state):
        super().__init__(message)
        self.epoch, self.step, self.batch, self.nonfinite, self.state = epoch, step, batch, nonfinite, state


NONFINITE = ("raise", "skip")


def _progress(epoch, epochs, done, total, width=30):
    filled = int(width * done / total)
    bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
    sys.stdout.write(f"\repoch {epoch}/{epochs} [{bar[:width]}] {done}/{total}")
    sys.stdout.flush()


def _better(value, state: TrainState, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if int(state.best_epoch) == 0:
        return True
    return value < float(state.best_value) if mode == "min" else value > float(state.best_value)


def _check_resumable(state: TrainState, optimizer, n, num_batches) -> TrainState:
    """Raise a ValueError unless ``state`` fits this run's optimizer and data."""
    if not isinstance(state, TrainState):
        raise _checks.InputTypeError(f"expected a TrainState, got {type(state).__name__}")
    expected = jax.tree.structure(jax.eval_shape(optimizer.init, state.params))
    if jax.tree.structure(state.opt_state) != expected:
        raise ValueError(
            "the TrainState's opt_state does not match the optimizer (and clip_norm) given to fit: "
            f"expected {expected}, got {jax.tree.structure(state.opt_state)}; make the state with "
            "init_state(params, optimizer, clip_norm=...) using the same ones"
        )
    if not 0 <= int(state.batch) < num_batches:
        raise ValueError(
            f"the TrainState stopped after batch {int(state.batch)} of an epoch, but this data set of {n} "
            f"examples has {num_batches} batches: continue a run with the data and batch_size it started with"
        )
    return state


def fit(
    model: Optional[Layer],
    params,
    optimizer: optax.GradientTransformation,
    loss: Callable,
    train,
    valid=None,
    *,
    epochs: int,
    batch_size: int = 32,
    seed: Optional[int] = None,
    clip_norm: Optional[float] = None,
    key: Optional[Array] = None,
    metrics: Optional[Mapping[str, Callable]] = None,
    monitor: str = "valid_loss",
    monitor_mode: str = "auto",
    patience: Optional[int] = None,
    restore_best: bool = False,
    on_nonfinite: str = "raise",
    checkpoint_dir: Optional[str] = None,
    checkpoint_every: Optional[int] = None,
    checkpoint_interval: float = 5.0,
    keep: int = 3,
    resume: bool = False,
    verbose: bool = False,
    devices: Optional[_devices.Devices] = None,
):
    """Train with minibatches until ``epochs`` epochs of the run are done.

    Each epoch visits the training set in the order :func:`epoch_order`
    gives (``numpy.random.default_rng(seed)``'s permutations, so a run is
    reproducible), in minibatches of ``batch_size`` (``batch_size=1`` is the
    first seed's per-example SGD; the last batch may be smaller), then
    evaluates on ``valid``.

    ``params`` is the model's params (a new run) or a :class:`TrainState`
    (:func:`init_state`, or the state a previous ``fit`` returned): the run
    continues from it, and ``epochs`` counts the epochs of the whole run, as
    Keras' ``epochs`` with ``initial_epoch``. Two calls ``state, _ =
    fit(..., state, epochs=3)`` then ``fit(..., state, epochs=6)`` give the
    params of one call with ``epochs=6``, bit for bit. What comes back is of
    the kind given: params, or a TrainState.

    Two forms of loss:

    - ``model`` a :class:`scanrnn.Layer`, ``loss(pred, target, length)`` of
      one example (:func:`mse`, :func:`softmax_cross_entropy`, ...), and
      data a :class:`Batch`;
    - ``model=None`` and ``loss(params, batch, key) -> scalar``, the mean
      loss of a batch for any model (an encoder-decoder, a CTC model): the
      data are then any pytree of arrays with a leading example axis, such
      as a tuple ``(src, src_length, tgt, tgt_length)``, and ``key`` is
      ``None`` or the step's PRNG key.

    Args:
      epochs: the epochs of the run (>= 1); a state already there returns as it is.
      seed: seeds the data order (default 0); a TrainState has its own.
      clip_norm: clip the gradients to this global norm (> 0) before ``optimizer``.
      key: ``None`` (the model is called without a key, as in evaluation)
        or a PRNG key for the model's dropout: step ``i`` of the run (from
        0) gets ``jax.random.fold_in(key, i)``. Validation is without a key.
        A TrainState has its own.
      metrics: a dict of name -> metric evaluated on ``valid`` each epoch
        (functions like the losses; with ``model=None``, of ``(params,
        batch)``), recorded as ``valid_<name>``. With the
        :func:`softmax_cross_entropy` loss, :func:`accuracy` is added.
      monitor, monitor_mode: the history entry that picks the best params
        (``state.best_params``) and drives ``patience``; ``"auto"`` minimises
        it unless its name ends in ``accuracy``.
      patience: stop once this many epochs have passed without a better
        ``monitor`` value (early stopping); ``None`` trains every epoch.
      restore_best: return the best params instead of the last.
      on_nonfinite: ``"raise"`` stops at the first step whose loss,
        gradient or update is not finite with a :class:`DivergenceError`
        (a ``FloatingPointError``) naming the epoch, the step and what was
        not finite; the state is the one before that step, also saved as
        the latest checkpoint. ``"skip"`` leaves params and optimizer state
        unchanged at such a step and goes on (``optax.apply_if_finite``),
        counting them in ``history["skipped_steps"]``. Both are checked
        inside the compiled step; the host learns of them at the end of an
        epoch or at a checkpoint, without a sync at every step.
      checkpoint_dir: save the run's state there through orbax-checkpoint
        (:mod:`scanrnn.checkpoint`): every ``checkpoint_every`` steps, at
        the end of the last epoch, and at the end of every other epoch at
        most once every ``checkpoint_interval`` seconds and not while the
        previous save is still being written; keeping the last ``keep`` and
        the best by ``monitor``. A save is atomic (a checkpoint is complete
        or absent), and ``fit`` returns once the last save is on disk. A
        directory that already holds checkpoints needs ``resume=True``.
      checkpoint_interval: the least seconds between two end-of-epoch
        saves (0: every epoch whose previous save is written). A save has a
        fixed cost, much of it in orbax's background threads; with epochs
        shorter than that, saving each one would cost more than the training
        (measured in ``BENCHMARKS.md``), while with the default a killed
        run loses at most that many seconds of epochs.
      resume: continue from the latest checkpoint in ``checkpoint_dir`` (a
        new run when there is none).
      verbose: print one line per epoch (losses, metrics, seconds), and a
        progress bar within the epoch when stdout is a terminal.
      devices: ``None`` (one device), or data parallelism over a device
        count, a list of devices or a mesh (:mod:`scanrnn.devices`): each
        batch is cut on the host and sharded over the devices, params and
        optimizer state are replicated, the gradient's mean is an
        all-reduce inside the compiled step. A batch whose size is not a
        multiple of the device count (the last one of an epoch) is padded
        with zero-weight copies of an example, so the run's numbers are
        those of one device up to rounding. With ``model=None`` (a batch
        objective, which cannot be reweighted) ``batch_size`` and the last
        batch's size must be multiples of the device count instead, and the
        objective runs as one program over the sharded batch, whose
        reductions XLA places (inside its loops too, which costs most
        between processes).

    Returns:
      ``(params or state, history)``: ``history`` (also ``state.history``)
      is a dict of per-epoch lists over the whole run: ``train_loss`` (mean
      of the applied batches' losses), ``seconds``, and with ``valid`` the
      ``valid_loss`` and ``valid_<metric>`` entries; with
      ``on_nonfinite="skip"``, ``skipped_steps``.
    """
    # Every option is checked before anything is compiled or written.
    if model is not None and not isinstance(model, Layer):
        raise _checks.InputTypeError(f"model must be a scanrnn Layer or None (a batch objective as loss), got {type(model).__name__}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise _checks.InputTypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(loss):
        raise _checks.InputTypeError(f"loss must be a function, got {type(loss).__name__}")
    epochs = _checks.positive_int("epochs", epochs)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if clip_norm is not None:
        clip_norm = _checks.positive_number("clip_norm", clip_norm)
    if patience is not None:
        patience = _checks.positive_int("patience", patience)
    restore_best = _checks.flag("restore_best", restore_best)
    resume = _checks.flag("resume", resume)
    verbose = _checks.flag("verbose", verbose)
    _checks.one_of("on_nonfinite", on_nonfinite, NONFINITE)
    _checks.one_of("monitor_mode", monitor_mode, ("auto", "min", "max"))
    keep = _checks.positive_int("keep", keep)
    if checkpoint_every is not None:
        checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)
    checkpoint_interval = _checks.non_negative_number("checkpoint_interval", checkpoint_interval)
    if checkpoint_dir is None and (resume or checkpoint_every is not None):
        raise ValueError("resume and checkpoint_every need a checkpoint_dir")
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir must be a directory, got the file {checkpoint_dir!r}")
    metric_fns = _check_metrics(metrics)
    if model is not None and loss is softmax_cross_entropy and "accuracy" not in metric_fns:
        metric_fns["accuracy"] = accuracy
    if valid is None and (patience is not None or restore_best or monitor != "valid_loss"):
        raise ValueError("patience, restore_best and monitor need a validation set (valid)")
    names = ["valid_loss"] + [f"valid_{name}" for name in metric_fns]
    if valid is not None and monitor not in names:
        raise ValueError(f"monitor must be one of {names} (the validation entries of the history), got {monitor!r}")
    mode = monitor_mode if monitor_mode != "auto" else ("max" if monitor.endswith("accuracy") else "min")
    mesh = None if devices is None else _devices.data_mesh(devices)

    given_state = isinstance(params, TrainState)
    train, n = _host_data("train", train, model)
    if mesh is not None and model is None:
        count = mesh.devices.size
        if batch_size % count or (n % batch_size) % count:
            raise ValueError(
                f"fit(None, ...) with devices: a batch objective is not reweighted for padding, so every batch "
                f"must be a multiple of the {count} devices; got batch_size={batch_size} over {n} examples "
                f"(last batch {n % batch_size or batch_size})"
            )
    if valid is not None:
        valid, n_valid = _host_data("valid", valid, model)
    model_params = params.params if given_state else params
    _check_data_targets(model, model_params, train, [loss])
    if valid is not None:
        _check_data_targets(model, model_params, valid, [loss, *metric_fns.values()])
    num_batches = -(-n // batch_size)
    optimizer = _with_clipping(optimizer, clip_norm)
    if given_state:
        state = _check_resumable(params, optimizer, n, num_batches)
        for name, value, own in (("seed", seed, int(state.seed)), ("key", key, state.key)):
            if value is not None and (name == "seed" and value != own or name == "key" and value is not own):
                raise ValueError(f"{name} comes from the TrainState when fit continues one; leave it out (got {value!r})")
    else:
        state = init_state(params, optimizer, seed=0 if seed is None else seed, key=key)
    if mesh is not None:  # on every device before a checkpoint is restored into it, which keeps its placement
        state = _replicated_state(state, mesh)

    checkpoints = None
    if checkpoint_dir is not None:
        from ._run_checkpoints import RunCheckpoints

        checkpoints = RunCheckpoints(checkpoint_dir, keep=keep, monitor=monitor if valid is not None else None, mode=mode)
        latest = checkpoints.latest_step()
        if latest is not None and not resume:
            checkpoints.close()
            raise ValueError(
                f"{checkpoint_dir!r} already holds checkpoints (latest step {latest}): pass resume=True to "
                "continue that run, or give another directory"
            )
        if latest is not None:
            state = _check_resumable(checkpoints.restore(state), optimizer, n, num_batches)
    try:
        state = _run(
            model, loss, optimizer, metric_fns, train, n, valid, state, checkpoints,
            epochs=epochs, batch_size=batch_size, num_batches=num_batches, monitor=monitor, mode=mode,
            patience=patience, on_nonfinite=on_nonfinite, checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval, verbose=verbose, mesh=mesh,
        )
    finally:
        if checkpoints is not None:
            checkpoints.close()  # waits for the last save
    if restore_best:
        state = state._replace(params=state.best_params)
    return (state if given_state else state.params), state.history


def _replicated_state(state: TrainState, mesh) -> TrainState:
    """The state's arrays (params, optimizer state, key, best params) on every device of ``mesh``."""
    return state._replace(**_devices.replicate(
        {name: getattr(state, name) for name in ("params", "opt_state", "key", "best_params")}, mesh
    ))


def _run(model, loss, optimizer, metric_fns, train, n, valid, state, checkpoints, *, epochs, batch_size, num_batches,
         monitor, mode, patience, on_nonfinite, checkpoint_every, checkpoint_interval, verbose, mesh=None):
    """The loop of :func:`fit` from ``state`` on; returns the final state."""
    halt = on_nonfinite == "raise"
    programs = (model, loss, optimizer, tuple(sorted(metric_fns.items())), "halt" if halt else "skip")
    step_fn, eval_fn = _fit_programs(*programs) if mesh is None else _fit_programs(*programs, mesh)
    if mesh is None:
        place_batch = lambda batch: batch  # noqa: E731
    else:
        state = _replicated_state(state, mesh)

        def place_batch(batch):
            return _parallel_batch(model, batch, mesh)

    blocking = mesh is not None and _devices.needs_blocking(mesh)
    bar = verbose and sys.stdout.isatty()
    history = {name: list(values) for name, values in state.history.items()}
    for name in ["train_loss", "seconds"] + (["skipped_steps"] if not halt else []):
        history.setdefault(name, [])
    if valid is not None:
        for name in ["valid_loss"] + [f"valid_{m}" for m in metric_fns]:
            history.setdefault(name, [])
    state = state._replace(history=history)

    def stopped_early(state):
        return patience is not None and int(state.best_epoch) > 0 and int(state.epoch) - int(state.best_epoch) >= patience

    def sync(params, opt_state, state, pending):
        """Fold the pending steps into ``state``; raise at the first non-finite one when halting."""
        values = jax.device_get([m for m, _, _ in pending])
        loss_sum, examples, skipped = float(state.epoch_loss), int(state.epoch_examples), int(state.epoch_skipped)
        for m, (_, size, b) in zip(values, pending):
            if not m["applied"]:
                if halt:
                    what = "loss" if not m["loss_finite"] else "gradient" if not m["grads_finite"] else "update"
                    raise _divergence(state, params, opt_state, b, loss_sum, examples, m, what, num_batches, checkpoints)
                skipped += 1
                continue
            loss_sum += float(m["loss"]) * size
            examples += size
        done = pending[-1][2] if pending else int(state.batch)
        return state._replace(
            params=params, opt_state=opt_state, step=_int(int(state.step) + len(pending)), batch=_int(done),
            epoch_loss=_float(loss_sum), epoch_examples=_int(examples), epoch_skipped=_int(skipped),
        )

    rng = np.random.default_rng(int(state.seed))
    for _ in range(int(state.epoch)):  # the permutations of the epochs done
        rng.permutation(n)
    halted = jnp.asarray(False)
    last_epoch_save = -math.inf
    while int(state.epoch) < epochs and not stopped_early(state):
        epoch = int(state.epoch) + 1
        start = time.perf_counter()
        order = rng.permutation(n)
        params, opt_state = state.params, state.opt_state
        pending = []  # (metrics on the device, batch size, batch number) since the last sync

        for b in range(int(state.batch), num_batches):
            index = order[b * batch_size : (b + 1) * batch_size]
            global_step = int(state.step) + len(pending)
            step_key = None if state.key is None else jax.random.fold_in(state.key, global_step)
            params, opt_state, m, halted = step_fn(params, opt_state, place_batch(_take(train, index)), step_key, halted)
            if blocking:
                jax.block_until_ready(params)
            pending.append((m, len(index), b + 1))
            if checkpoints is not None and checkpoint_every and (global_step + 1) % checkpoint_every == 0 and b + 1 < num_batches:
                state, pending = sync(params, opt_state, state, pending), []
                checkpoints.save(state)
            if bar and (b + 1 == num_batches or b % max(1, num_batches // 100) == 0):
                _progress(epoch, epochs, b + 1, num_batches)
        state = sync(params, opt_state, state, pending)

        # The epoch is done: record it, validate, keep the best, save.
        record = {name: list(values) for name, values in state.history.items()}
        examples = int(state.epoch_examples)
        record["train_loss"].append(float(state.epoch_loss) / examples if examples else float("nan"))
        if not halt:
            record["skipped_steps"].append(int(state.epoch_skipped))
        line = f"epoch {epoch}/{epochs}  train loss {record['train_loss'][-1]:.6f}"
        state = state._replace(epoch=_int(epoch), batch=_int(0), epoch_loss=_float(0.0), epoch_examples=_int(0), epoch_skipped=_int(0))
        scores = None
        if valid is not None:
            means = _mean_over(eval_fn, state.params, valid, _num_examples(valid), 1024)
            scores = {"valid_loss": means["loss"], **{f"valid_{m}": means[m] for m in metric_fns}}
            for name, value in scores.items():
                record[name].append(value)
                line += f"  {name.replace('_', ' ')} {value:.6f}"
            if _better(scores[monitor], state, mode):
                state = state._replace(best_params=state.params, best_value=_float(scores[monitor]), best_epoch=_int(epoch))
        seconds = time.perf_counter() - start
        record["seconds"].append(seconds)
        if not halt and record["skipped_steps"][-1]:
            line += f"  skipped {record['skipped_steps'][-1]} non-finite steps"
        state = state._replace(history=record)
        if checkpoints is not None:  # the last epoch's save always; the others at most every checkpoint_interval s
            if epoch == epochs or stopped_early(state):
                checkpoints.save(state, scores)
            elif time.monotonic() - last_epoch_save >= checkpoint_interval:
                if checkpoints.save(state, scores, when_busy="skip"):
                    last_epoch_save = time.monotonic()
        if verbose:
            print(("\r" if bar else "") + line + f"  {seconds:.1f}s" + (" " * 20 if bar else ""), flush=True)
            if stopped_early(state):
                print(f"early stop: no better {monitor} in {patience} epochs (best {float(state.best_value):.6f} at epoch {int(state.best_epoch)})")
    return state


def _divergence(state, params, opt_state, batch, loss_sum, examples, metrics, what, num_batches, checkpoints):
    """The :class:`DivergenceError` of the step that read batch ``batch`` of the epoch in progress.

    With ``checkpoints``, the state before that step is saved first.

    ``params`` and ``opt_state`` are the device's, frozen since the first
    non-finite step: the state before that step.
    """
    steps_before = int(state.step) + (batch - 1 - int(state.batch))
    last = state._replace(
        params=params, opt_state=opt_state, step=_int(steps_before), batch=_int(batch - 1),
        epoch_loss=_float(loss_sum), epoch_examples=_int(examples),
    )
    epoch = int(state.epoch) + 1
    detail = {
        "loss": f"the loss was {float(metrics['loss'])}",
        "gradient": f"the gradient had non-finite entries (the loss was {float(metrics['loss']):.6g})",
        "update": "the update was not finite although the loss and the gradient were (a learning rate of NaN or inf?)",
    }[what]
    where = ""
    if checkpoints is not None:
        checkpoints.save(last)
        where = f"; the latest checkpoint in {checkpoints.directory} holds the state before it (step {steps_before})"
    return DivergenceError(
        f"training diverged at epoch {epoch}, step {steps_before + 1} (batch {batch} of {num_batches}): {detail}{where}",
        epoch=epoch, step=steps_before + 1, batch=batch, nonfinite=what, state=last,
    )
