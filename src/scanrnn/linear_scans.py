r"""Evaluating a linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` over a whole sequence at once.

The steps of such a recurrence are affine maps of the state. Given the
coefficients of all steps, the states come out of a scan of the ``T`` steps
(:func:`sequential_scan`), of :func:`jax.lax.associative_scan`, since
composing affine maps is associative (Blelloch 1990), in ``O(log T)``
sequential depth (:func:`linear_scan`), or chunk by chunk
(:func:`chunked_scan`). :func:`evaluate` runs a
:class:`scanrnn.kinds.LinearCell` over a sequence in the cell's mode:
the projections of all steps first, then the recurrence, then the outputs of
all steps; :func:`scanrnn.unroll` calls it.

With positive ``a`` and ``b`` the scan can run on their logarithms
(Heinsen 2023, as the minGRU paper's ``parallel_scan_log``), combining
``(log a, log b)`` pairs with

.. math::
    (\alpha_1, \beta_1) \circ (\alpha_2, \beta_2)
        = (\alpha_1 + \alpha_2,\; \operatorname{logaddexp}(\beta_1 + \alpha_2, \beta_2)),

giving :math:`\log A_t = \sum_{s \le t} \log a_s` and
:math:`\log S_t = \log \sum_{s \le t} (\prod_{s < r \le t} a_r)\, b_s`;
the state is then :math:`h_t = e^{\log A_t} \odot h_0 + e^{\log S_t}`, for an
initial state of either sign.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import _checks
from .kinds import LinearCell, _check_coefficients, check_mode

__all__ = [
    "linear_scan",
    "linear_scan_log",
    "sequential_scan",
    "chunked_scan",
    "evaluate",
]

Array = jax.Array


def _affine_compose(earlier, later):
    """Compose two steps ``h -> a h + b`` given as ``(a, b)``: ``later`` after ``earlier``."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def linear_scan(h0: Array, a: Array, b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` by an associative scan in linear space.

    Real or complex; for coefficients with exact zeros and ones too, as
    zoneout makes them (``a = 1, b = 0`` where a unit keeps its value),
    whose logarithms would be infinite.

    Args:
      h0: the state before the first step, of any shape ``S``.
      a, b: ``[T, *S]``.

    Returns:
      ``[T, *S]``, the states :math:`h_1 \ldots h_T`.
    """
    prod, acc = jax.lax.associative_scan(_affine_compose, (a, b), axis=0)
    return prod * h0[None] + acc


def _combine_logs(earlier, later):
    """Compose two affine maps given as ``(log a, log b)``: ``later`` after ``earlier``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def linear_scan_log(h0: Array, log_a: Array, log_b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` from ``log a`` and ``log b``.

    Args:
      h0: the state before the first step, of any shape ``S`` and either sign.
      log_a: ``[T, *S]``, the logs of the (positive) coefficients.
      log_b: ``[T, *S]``, the logs of the (positive) offsets.

    Returns:
      ``[T, *S]``, the states :math:`h_1 \ldots h_T`.
    """
    log_prod, log_sum = jax.lax.associative_scan(_combine_logs, (log_a, log_b), axis=0)
    return jnp.exp(log_prod) * h0[None] + jnp.exp(log_sum)


def _linear_tangent(run):
    r"""Give ``run(h0, a, b, option)``, which evaluates the recurrence, the derivative of a linear recurrence.

    The tangent of :math:`h_t = a_t h_{t-1} + b_t` is the same recurrence,
    :math:`\dot h_t = a_t \dot h_{t-1} + (\dot a_t h_{t-1} + \dot b_t)`,
    so ``run`` evaluates it too. Reverse mode transposes that (linear)
    evaluation into the reverse recurrence, and keeps only ``a`` and the
    states for it, where differentiating ``run``'s own operations would
    keep what each of its scans computes.
    """
    run = jax.custom_jvp(run, nondiff_argnums=(3,))

    @run.defjvp
    def tangent(option, primals, tangents):
        h0, a, b = primals
        dh0, da, db = tangents
        hs = run(h0, a, b, option)
        previous = jnp.concatenate([h0[None], hs[:-1]])
        return hs, run(dh0, a, da * previous + db, option)

    return run


def _affine_step(h, coefficients):
    a, b = coefficients
    h = a * h + b
    return h, h


@_linear_tangent
def _sequential(h0, a, b, unroll):
    return jax.lax.scan(_affine_step, h0, (a, b), unroll=unroll)[1]


@_linear_tangent
def _chunked(h0, a, b, size):
    num_steps = a.shape[0]
    count = -(-num_steps // size)
    pad = count * size - num_steps
    if pad:
        a = jnp.concatenate([a, jnp.ones((pad,) + a.shape[1:], a.dtype)])
        b = jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)])
    # [C, K, *S]: position in the chunk first, so that one scan over the C
    # positions steps all K chunks at once.
    a = jnp.swapaxes(a.reshape((count, size) + a.shape[1:]), 0, 1)
    b = jnp.swapaxes(b.reshape((count, size) + b.shape[1:]), 0, 1)

    def inside(carry, coefficients):
        state, product = carry
        a, b = coefficients
        carry = (a * state + b, a * product)
        return carry, carry

    start = (jnp.zeros_like(b[0]), jnp.ones_like(a[0]))
    _, (local, products) = jax.lax.scan(inside, start, (a, b))
    _, starts = jax.lax.scan(lambda h, last: (_affine_step(h, last)[0], h), h0, (products[-1], local[-1]))
    hs = local + products * starts[None]
    return jnp.swapaxes(hs, 0, 1).reshape((count * size,) + hs.shape[2:])[:num_steps]


def sequential_scan(h0: Array, a: Array, b: Array, unroll: int = 1) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` by a :func:`jax.lax.scan` of ``T`` steps.

    The derivative is the recurrence's own (the tangent is a linear
    recurrence with the same ``a``), so the backward pass is one reverse
    scan that reads ``a`` and the states, for real and complex numbers.

    Args:
      h0: the state before the first step, of any shape ``S``.
      a, b: ``[T, *S]``.
      unroll: the scan's ``unroll``, a positive int.

    Returns:
      ``[T, *S]``, the states :math:`h_1 \ldots h_T`.
    """
    return _sequential(h0, a, b, _checks.positive_int("unroll", unroll))


def chunked_scan(h0: Array, a: Array, b: Array, chunk_size: int) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t`, chunk by chunk.

    The ``T`` steps are cut into ``K = ceil(T / C)`` chunks of ``C =
    chunk_size`` steps (the last padded with ``a = 1, b = 0``, which keep
    the state). Then:

    1. one scan over the ``C`` positions of all ``K`` chunks at once gives,
       at every position ``i`` of chunk ``k``, the state from a zero start,
       :math:`s^{(k)}_i = \sum_{j \le i} a_i \cdots a_{j+1} b_j`, and the
       product :math:`A^{(k)}_i = a_i \cdots a_1`;
    2. a scan of ``K`` steps hands the state over from chunk to chunk,
       :math:`h^{(k)} = A^{(k)}_C h^{(k-1)} + s^{(k)}_C`;
    3. every state is then :math:`h^{(k)}_i = s^{(k)}_i + A^{(k)}_i
       h^{(k-1)}`, elementwise, with no scan.

    The sequential depth is ``C + T / C`` (least at ``C`` near
    ``sqrt(T)``) against ``T`` for a scan of the step, each step as wide as
    ``K`` chunks: the state passed chunk to chunk as in Mamba-2's chunked
    algorithm (Dao and Gu 2024), with the inside of a diagonal recurrence's
    chunk computed by a scan rather than by products. A product
    :math:`A^{(k)}_i` that underflows to zero is the limit it approaches:
    the start of a chunk no longer reaches that state. The derivative is
    the recurrence's own, evaluated the same way (see
    :func:`sequential_scan`).

    Args:
      h0: the state before the first step, of any shape ``S``.
      a, b: ``[T, *S]``, real or complex.
      chunk_size: ``C``, a positive int.

    Returns:
      ``[T, *S]``, the states :math:`h_1 \ldots h_T`.
    """
    size = min(_checks.positive_int("chunk_size", chunk_size), max(a.shape[0], 1))
    if a.shape[0] == 0:
        return b
    return _chunked(h0, a, b, size)


def _states(cell: LinearCell, params, h0, ps, keep, unroll):
    """All states of ``cell`` from the projections ``ps`` by its mode, ``keep`` as :func:`evaluate` takes it."""
    def checked(params, p):
        a, b = cell.coefficients(params, p)
        _check_coefficients(h0, a, b)
        return a, b

    coefficients = jax.vmap(checked, in_axes=(None, 0))
    log_space = cell.mode == "associative" and cell.log_coefficients is not None
    log_coefficients = jax.vmap(cell.log_coefficients, in_axes=(None, 0)) if log_space else None

    def scan(a, b):
        if cell.mode == "chunked":
            return chunked_scan(h0, a, b, cell.chunk_size)
        if cell.mode == "sequential":
            return sequential_scan(h0, a, b, unroll)
        return linear_scan(h0, a, b)

    if keep is None:
        if log_space:
            return linear_scan_log(h0, *log_coefficients(params, ps))
        return scan(*coefficients(params, ps))
    if isinstance(jax.tree.leaves(keep)[0], float):
        # Expected zoneout: a' = rate + (1 - rate) a, b' = (1 - rate) b.
        rate = keep.h
        if log_space:
            log_a, log_b = log_coefficients(params, ps)
            log_keep, log_change = math.log(rate), math.log1p(-rate)
            return linear_scan_log(h0, jnp.logaddexp(log_keep, log_change + log_a), log_change + log_b)
        a, b = coefficients(params, ps)
        return scan(rate + (1 - rate) * a, (1 - rate) * b)
    # Sampled zoneout: a kept unit has a = 1, b = 0 at that step.
    a, b = coefficients(params, ps)
    return scan(jnp.where(keep.h, jnp.ones_like(a), a), jnp.where(keep.h, jnp.zeros_like(b), b))


def evaluate(cell: LinearCell, params, carry, ps, length=None, keep=None, unroll: int = 1):
    """A :class:`scanrnn.kinds.LinearCell` over a whole sequence, the recurrence evaluated by the cell's mode.

    Args:
      cell: the cell.
      params, carry: its params and the initial carry.
      ps: ``cell.project`` of every step, leaves with a leading axis ``T``.
      length: ``None`` or an integer scalar (a traced one clamped to ``[0, T]``).
      keep: ``None``, or zoneout: a pytree with the carry's structure whose
        leaves are ``[T, *S]`` booleans (training; ``True`` keeps the
        previous value) or Python floats (evaluation, the rates).
      unroll: the ``unroll`` of the scan of ``mode="sequential"``.

    Returns:
      ``(final_carry, ys)``: the numbers of a scan of ``cell.step`` masked as
      :func:`scanrnn.unroll` masks it (the carry after step ``length``,
      zero outputs past it).
    """
    check_mode(cell.mode, cell.chunk_size)
    num_steps = jax.tree.leaves(ps)[0].shape[0]
    length = _checks.length("length", length, num_steps)
    h0 = carry.h
    if num_steps == 0:
        hs = jnp.zeros((0,) + h0.shape, h0.dtype)
    else:
        hs = _states(cell, params, h0, ps, keep, unroll)
    ys = jax.vmap(cell.emit, in_axes=(None, 0, 0))(params, hs, ps)
    if length is None:
        return carry._replace(h=hs[-1] if num_steps else h0), ys
    # States past `length` are computed and discarded, as the masked scan
    # discards its steps there: no -inf offsets, whose tangents would be NaN.
    valid = jnp.arange(num_steps, dtype=length.dtype) < length
    ys = jax.tree.map(lambda y: jnp.where(valid.reshape((-1,) + (1,) * (y.ndim - 1)), y, jnp.zeros_like(y)), ys)
    if num_steps == 0:
        return carry, ys
    last = jax.lax.dynamic_index_in_dim(hs, jnp.maximum(length - 1, 0), axis=0, keepdims=False)
    return carry._replace(h=jnp.where(length > 0, last, h0)), ys
