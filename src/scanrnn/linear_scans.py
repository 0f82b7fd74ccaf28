r"""Evaluating a linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` over a whole sequence at once.

The steps of such a recurrence are affine maps of the state, and composing
affine maps is associative (Blelloch 1990), so all states come out of
:func:`jax.lax.associative_scan` in ``O(log T)`` sequential depth instead of
the ``T`` steps of a scan. :func:`associative` runs a
:class:`scanrnn.kinds.LinearCell` that way; :func:`scanrnn.unroll` calls it
for a cell of ``mode="parallel"``.

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
from .kinds import LinearCell

Array = jax.Array


def linear_scan(h0: Array, a: Array, b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` by an associative scan in linear space.

    For coefficients with exact zeros and ones, as zoneout makes them
    (``a = 1, b = 0`` where a unit keeps its value), whose logarithms would
    be infinite.

    Args:
      h0: ``[H]``. a, b: ``[T, H]``.

    Returns:
      ``[T, H]``, the states :math:`h_1 \ldots h_T`.
    """

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    prod, acc = jax.lax.associative_scan(combine, (a, b), axis=0)
    return prod * h0[None, :] + acc


def _combine_logs(earlier, later):
    """Compose two affine maps given as ``(log a, log b)``: ``later`` after ``earlier``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def linear_scan_log(h0: Array, log_a: Array, log_b: Array) -> Array:
    r"""All states of :math:`h_t = a_t \odot h_{t-1} + b_t` from ``log a`` and ``log b``.

    Args:
      h0: ``[H]``, the state before the first step, of either sign.
      log_a: ``[T, H]``, the logs of the (positive) coefficients.
      log_b: ``[T, H]``, the logs of the (positive) offsets.

    Returns:
      ``[T, H]``, the states :math:`h_1 \ldots h_T`.
    """
    log_prod, log_sum = jax.lax.associative_scan(_combine_logs, (log_a, log_b), axis=0)
    return jnp.exp(log_prod) * h0[None, :] + jnp.exp(log_sum)


def associative(cell: LinearCell, params, carry, ps, length=None, keep=None):
    """A :class:`scanrnn.kinds.LinearCell` over the projections ``ps [T, G]`` of a whole sequence.

    Args:
      cell: the cell.
      params, carry: its params and the initial carry.
      ps: ``[T, G]``, ``cell.project`` of every step.
      length: ``None`` or an integer scalar (a traced one clamped to ``[0, T]``).
      keep: ``None``, or zoneout: a pytree with the carry's structure whose
        leaves are ``[T, H]`` booleans (training; ``True`` keeps the previous
        value) or Python floats (evaluation, the rates).

    Returns:
      ``(final_carry, ys)``: the numbers of a scan of ``cell.step`` masked as
      :func:`scanrnn.unroll` masks it (the carry after step ``length``,
      zero outputs past it).
    """
    num_steps = ps.shape[0]
    length = _checks.length("length", length, num_steps)
    H = carry.h.shape[0]
    if num_steps == 0:
        return carry, jnp.zeros((0, H), carry.h.dtype)
    if keep is None:
        if cell.log_coefficients is None:
            hs = linear_scan(carry.h, *cell.coefficients(params, ps))
        else:
            hs = linear_scan_log(carry.h, *cell.log_coefficients(params, ps))
    elif isinstance(keep.h, float):
        # Expected zoneout: a' = rate + (1 - rate) a, b' = (1 - rate) b.
        rate = keep.h
        if cell.log_coefficients is None:
            a, b = cell.coefficients(params, ps)
            hs = linear_scan(carry.h, rate + (1 - rate) * a, (1 - rate) * b)
        else:
            log_a, log_b = cell.log_coefficients(params, ps)
            log_keep, log_change = math.log(rate), math.log1p(-rate)
            hs = linear_scan_log(carry.h, jnp.logaddexp(log_keep, log_change + log_a), log_change + log_b)
    else:
        # Sampled zoneout: a kept unit has a = 1, b = 0 at that step.
        a, b = cell.coefficients(params, ps)
        hs = linear_scan(carry.h, jnp.where(keep.h, jnp.ones_like(a), a), jnp.where(keep.h, jnp.zeros_like(b), b))
    if length is None:
        return carry._replace(h=hs[-1]), hs
    # States past `length` are computed and discarded, as the masked scan
    # discards its steps there: no -inf offsets, whose tangents would be NaN.
    valid = (jnp.arange(num_steps, dtype=length.dtype) < length)[:, None]
    ys = jnp.where(valid, hs, jnp.zeros_like(hs))
    last = jax.lax.dynamic_index_in_dim(hs, jnp.maximum(length - 1, 0), axis=0, keepdims=False)
    return carry._replace(h=jnp.where(length > 0, last, carry.h)), ys
