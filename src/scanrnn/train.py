"""Losses, a jit-compiled train step and a minibatch ``fit`` loop with optax.

Losses are functions of ONE example, ``loss(pred, target, length=None) ->
scalar``, like the models; a batch's loss is the mean over its examples. The
train step is a pure function ``(params, opt_state, batch) -> (params,
opt_state, metrics)`` built from a model, a loss and any optax optimizer::

    step = make_train_step(model, mse, optax.adam(1e-3))
    opt_state = optax.adam(1e-3).init(params)
    params, opt_state, metrics = step(params, opt_state, Batch(x, y))
"""

from __future__ import annotations

import sys
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .layers import Layer, last_valid
from .unroll import check_length, check_lengths, valid_steps

Array = jax.Array


class Batch(NamedTuple):
    """A batch of examples, the batch axis first."""

    x: Array  # [B, T, I]
    y: Array  # [B, ...] targets, one per example
    length: Optional[Array] = None  # [B] integer valid lengths, or None


# --------------------------------------------------------------------------
# Losses of one example.


def _check_same_shape(name, pred, target):
    if jnp.shape(pred) != jnp.shape(target):
        raise ValueError(f"{name}: pred and target must have the same shape, got {jnp.shape(pred)} and {jnp.shape(target)}")


def _masked_mean(values: Array, length) -> Array:
    """Mean of ``values [T, ...]`` over the elements of its first ``length`` steps (0 when none)."""
    values = values.reshape(values.shape[0], -1)
    mask = valid_steps(values.shape[0], length)[:, None]
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / (jnp.maximum(length, 1).astype(values.dtype) * values.shape[1])


def mse(pred, target, length=None) -> Array:
    """Mean squared error of one example.

    ``pred`` and ``target`` have the same shape. With ``length``, a
    prediction of rank 2 or more is a sequence ``[T, F, ...]`` of which only
    the first ``length`` steps count (the mean is over their elements); a
    prediction of rank 0 or 1 (a many-to-one output ``[F]``) counts whole.
    """
    _check_same_shape("mse", pred, target)
    err = jnp.square(pred - target)
    if length is None or err.ndim < 2:
        return jnp.mean(err)
    return _masked_mean(err, check_length(length, err.shape[0]))


def last_step_mse(pred, target, length=None) -> Array:
    """Mean squared error at the last valid time step only.

    The second seed's metric for sequence-to-sequence forecasts: the model
    forecasts the next 10 values at every step, and only the forecast made
    after the whole window counts (``pred[-1]`` against ``target[-1]``).
    ``pred`` and ``target`` are ``[T, F]``.
    """
    _check_same_shape("last_step_mse", pred, target)
    if jnp.ndim(pred) != 2:
        raise ValueError(f"last_step_mse needs sequences [T, F], got shape {jnp.shape(pred)}")
    length = check_length(length, jnp.shape(pred)[0])
    return jnp.mean(jnp.square(last_valid(pred, length) - last_valid(target, length)))


def softmax_cross_entropy(logits, labels, length=None) -> Array:
    """Softmax cross-entropy with integer labels, masked past ``length``.

    ``logits`` is ``[T, K]`` with ``labels`` ``[T]`` (mean over the first
    ``length`` steps), or ``[K]`` with a scalar label (one classification,
    where ``length`` is ignored).
    """
    labels = jnp.asarray(labels)
    if jnp.shape(logits)[:-1] != labels.shape or jnp.ndim(logits) not in (1, 2):
        raise ValueError(
            f"softmax_cross_entropy: logits must be [T, K] with labels [T] (or [K] with a scalar), "
            f"got logits {jnp.shape(logits)} and labels {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got dtype {labels.dtype}")
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if length is None or nll.ndim == 0:
        return jnp.mean(nll)
    return _masked_mean(nll, check_length(length, nll.shape[0]))


LOSSES = {"mse": mse, "last_step_mse": last_step_mse, "softmax_cross_entropy": softmax_cross_entropy}


# --------------------------------------------------------------------------
# Batched evaluation and the train step.


def _check_batch(batch) -> Batch:
    if not isinstance(batch, Batch):
        raise ValueError(f"expected a scanrnn.train.Batch(x, y, length), got {type(batch).__name__}")
    if jnp.ndim(batch.x) != 3:
        raise ValueError(f"batch.x must have shape [B, T, I], got {jnp.shape(batch.x)}")
    n = jnp.shape(batch.x)[0]
    if jnp.shape(batch.y)[:1] != (n,):
        raise ValueError(f"batch.y must have a leading batch axis of {n}, got shape {jnp.shape(batch.y)}")
    check_lengths(batch.length, n, jnp.shape(batch.x)[1])
    return batch


def predict_batch(model: Layer, params, x, length=None):
    """``model.apply`` over a batch ``x [B, T, I]`` (and ``length [B]``): a ``jax.vmap``."""
    return jax.vmap(model.apply, in_axes=(None, 0, None if length is None else 0))(params, x, length)


def batch_loss(model: Layer, loss: Callable, params, batch: Batch) -> Array:
    """Mean over the batch of ``loss(model.apply(params, x), y, length)``."""
    batch = _check_batch(batch)
    pred = predict_batch(model, params, batch.x, batch.length)
    if batch.length is None:
        per_example = jax.vmap(loss)(pred, batch.y)
    else:
        per_example = jax.vmap(loss)(pred, batch.y, batch.length)
    return jnp.mean(per_example)


def global_norm(tree) -> Array:
    """The Euclidean norm of all the leaves of ``tree`` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def make_train_step(model: Layer, loss: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A jit-compiled pure train step ``(params, opt_state, batch) -> (params, opt_state, metrics)``.

    ``metrics`` holds the batch ``loss`` (before the update) and the global
    norm of the gradients, ``grad_norm``.
    """

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(lambda p: batch_loss(model, loss, p, batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": value, "grad_norm": global_norm(grads)}

    return jax.jit(step)


def make_eval_step(model: Layer, loss: Callable) -> Callable:
    """A jit-compiled ``(params, batch) -> mean loss``."""
    return jax.jit(lambda params, batch: batch_loss(model, loss, params, batch))


def _take(data: Batch, index) -> Batch:
    return Batch(*(None if a is None else a[index] for a in data))


def evaluate(model: Layer, loss: Callable, params, data: Batch, batch_size: int = 1024, *, eval_step=None) -> float:
    """Mean loss over ``data``, in chunks of ``batch_size`` examples."""
    eval_step = eval_step or make_eval_step(model, loss)
    n = len(data.x)
    total = 0.0
    for start in range(0, n, batch_size):
        chunk = _take(data, slice(start, start + batch_size))
        total += float(eval_step(params, chunk)) * len(chunk.x)
    return total / n


def predict(model: Layer, params, x, length=None, batch_size: int = 1024) -> np.ndarray:
    """``model.apply`` over many examples, in jit-compiled chunks; returns NumPy."""
    fn = jax.jit(lambda p, x, n: predict_batch(model, p, x, n))
    out = []
    for start in range(0, len(x), batch_size):
        n = None if length is None else length[start : start + batch_size]
        out.append(np.asarray(fn(params, x[start : start + batch_size], n)))
    return np.concatenate(out)


def _progress(epoch, epochs, done, total, width=30):
    filled = int(width * done / total)
    bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
    sys.stdout.write(f"\repoch {epoch}/{epochs} [{bar[:width]}] {done}/{total}")
    sys.stdout.flush()


def fit(
    model: Layer,
    params,
    optimizer: optax.GradientTransformation,
    loss: Callable,
    train: Batch,
    valid: Optional[Batch] = None,
    *,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    clip_norm: Optional[float] = None,
    verbose: bool = False,
):
    """Train ``params`` with minibatches for ``epochs`` epochs.

    Each epoch shuffles the training set with ``numpy.random.default_rng(seed)``
    (so a run is reproducible), steps through it in minibatches of
    ``batch_size`` (``batch_size=1`` is the first seed's per-example SGD;
    the last batch may be smaller) and evaluates on ``valid``.

    Args:
      clip_norm: clip the gradients to this global norm before ``optimizer``.
      verbose: print one line per epoch (train loss, validation loss,
        seconds), and a progress bar within the epoch when stdout is a terminal.

    Returns:
      ``(params, history)``: ``history`` is a dict of per-epoch lists
      ``train_loss`` (mean of the batch losses over the epoch),
      ``valid_loss`` (when ``valid`` is given) and ``seconds``.
    """
    # Host arrays: indexing a shuffled minibatch out of them costs no device op.
    train = _check_batch(Batch(*(None if a is None else np.asarray(a) for a in train)))
    if valid is not None:
        valid = _check_batch(Batch(*(None if a is None else np.asarray(a) for a in valid)))
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    step = make_train_step(model, loss, optimizer)
    eval_step = make_eval_step(model, loss)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    n = len(train.x)
    num_batches = -(-n // batch_size)
    bar = verbose and sys.stdout.isatty()
    history = {"train_loss": [], "seconds": []}
    if valid is not None:
        history["valid_loss"] = []

    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        losses, sizes = [], []
        for b in range(num_batches):
            index = order[b * batch_size : (b + 1) * batch_size]
            params, opt_state, metrics = step(params, opt_state, _take(train, index))
            losses.append(metrics["loss"])
            sizes.append(len(index))
            if bar and (b + 1 == num_batches or b % max(1, num_batches // 100) == 0):
                _progress(epoch, epochs, b + 1, num_batches)
        train_loss = float(np.dot(np.asarray(jax.device_get(losses)), sizes) / n)
        history["train_loss"].append(train_loss)
        line = f"epoch {epoch}/{epochs}  train loss {train_loss:.6f}"
        if valid is not None:
            valid_loss = evaluate(model, loss, params, valid, eval_step=eval_step)
            history["valid_loss"].append(valid_loss)
            line += f"  valid loss {valid_loss:.6f}"
        seconds = time.perf_counter() - start
        history["seconds"].append(seconds)
        if verbose:
            print(("\r" if bar else "") + line + f"  {seconds:.1f}s" + (" " * 20 if bar else ""), flush=True)
    return params, history
