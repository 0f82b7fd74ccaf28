"""Losses, a jit-compiled train step and a minibatch ``fit`` loop with optax.

Losses are functions of ONE example, ``loss(pred, target, length=None) ->
scalar``, like the models; a batch's loss is the mean over its examples. The
train step is a pure function ``(params, opt_state, batch, key=None) ->
(params, opt_state, metrics)`` built from a model, a loss and any optax
optimizer::

    step = make_train_step(model, mse, optax.adam(1e-3))
    opt_state = optax.adam(1e-3).init(params)
    params, opt_state, metrics = step(params, opt_state, Batch(x, y))
    params, opt_state, metrics = step(params, opt_state, Batch(x, y), key)  # with dropout

Truncated BPTT over one long stream hands each chunk's final carry to the
next (:func:`stream_batches`, :func:`batch_initial_carry`,
:func:`make_tbptt_step`)::

    step = make_tbptt_step(model, mse, optax.adam(1e-3))
    carry = batch_initial_carry(model, params, batch_size)
    params, opt_state, carry, metrics = step(params, opt_state, carry, Batch(x, y))
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
from .unroll import check_length, check_lengths, mask_padding, valid_steps

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
    if length is None or labels.ndim == 0:
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    length = check_length(length, labels.shape[0])
    # Padding past the length (a label of -1, a NaN logit) never enters the arithmetic.
    nll = optax.softmax_cross_entropy_with_integer_labels(mask_padding(logits, length), mask_padding(labels, length))
    return _masked_mean(nll, length)


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


def make_train_step(model: Layer, loss: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A jit-compiled pure train step ``(params, opt_state, batch, key=None) -> (params, opt_state, metrics)``.

    ``metrics`` holds the batch ``loss`` (before the update) and the global
    norm of the gradients, ``grad_norm``. A ``key`` is passed to the model
    (split into one per example): training mode, for dropout; without it
    the model is called as before, without a key.
    """

    def step(params, opt_state, batch, key=None):
        value, grads = jax.value_and_grad(lambda p: batch_loss(model, loss, p, batch, key=key))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": value, "grad_norm": global_norm(grads)}

    return jax.jit(step)


# --------------------------------------------------------------------------
# Truncated backpropagation through time over long streams.


def batch_initial_carry(model: Layer, params, batch_size: int):
    """The model's initial carry (zeros, or the learned one) for ``batch_size`` sequences.

    Every leaf of ``model.initial_carry(params)`` gets a leading axis of
    ``batch_size``: the ``carry`` that :func:`make_tbptt_step` and
    :func:`predict_batch` take.
    """
    if getattr(model, "initial_carry", None) is None:
        raise ValueError("the model has no initial_carry (a Layer of the two-function contract); it carries no state")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    carry = model.initial_carry(params)
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch_size,) + jnp.shape(a)), carry)


def make_tbptt_step(model: Layer, loss: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A jit-compiled step of truncated BPTT: ``(params, opt_state, carry, batch, key=None)
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

    Example, a model over a stream of floats::

        inputs, targets = stream_batches(series, batch_size=8, chunk_size=20)
        step = make_tbptt_step(model, mse, optax.adam(1e-2))
        opt_state = optax.adam(1e-2).init(params)
        carry = batch_initial_carry(model, params, 8)
        for x, y in zip(inputs, targets):               # [8, 20] each
            params, opt_state, carry, metrics = step(params, opt_state, carry, Batch(x[..., None], y[..., None]))
    """

    def objective(params, carry, batch, key):
        batch = _check_batch(batch)
        if carry is None:
            carry = batch_initial_carry(model, params, jnp.shape(batch.x)[0])
        pred, final = predict_batch(model, params, batch.x, batch.length, key=key, carry=carry)
        return jnp.mean(_losses(loss, pred, batch)), final

    def step(params, opt_state, carry, batch, key=None):
        (value, final), grads = jax.value_and_grad(objective, has_aux=True)(params, carry, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": value, "grad_norm": global_norm(grads)}
        return params, opt_state, jax.lax.stop_gradient(final), metrics

    return jax.jit(step)


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
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
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
    key: Optional[Array] = None,
    verbose: bool = False,
):
    """Train ``params`` with minibatches for ``epochs`` epochs.

    Each epoch shuffles the training set with ``numpy.random.default_rng(seed)``
    (so a run is reproducible), steps through it in minibatches of
    ``batch_size`` (``batch_size=1`` is the first seed's per-example SGD;
    the last batch may be smaller) and evaluates on ``valid``.

    Args:
      clip_norm: clip the gradients to this global norm before ``optimizer``.
      key: ``None`` (the model is called without a key, as in evaluation)
        or a PRNG key for the model's dropout: train step ``i`` of the run
        (counted over all epochs) passes ``jax.random.fold_in(key, i)`` to
        :func:`make_train_step`'s step. Validation is always without a key.
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
            step_key = None if key is None else jax.random.fold_in(key, (epoch - 1) * num_batches + b)
            params, opt_state, metrics = step(params, opt_state, _take(train, index), step_key)
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
