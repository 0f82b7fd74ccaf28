"""Unrolling a cell over ONE sequence with :func:`jax.lax.scan`.

``unroll(cell, params, xs)`` is, by definition::

    carry = cell.initial_carry(params)
    for x in xs:
        carry, y = cell.apply(params, carry, x)

with the ``y`` stacked along a leading time axis, for every kind of cell
(:mod:`scanrnn.kinds`). A ``length`` marks the valid prefix of a padded
sequence; ``reverse=True`` reads the valid part backwards. How the scan
runs is one :class:`scanrnn.Execution`, the regularisation rates one
:class:`scanrnn.Regularization`. Batches are a :func:`jax.vmap` away
(:func:`unroll_batch` adds the host checks of a batch's lengths).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from scanrnn import _checks
from scanrnn import execution as _execution
from scanrnn import regularization as _regularization
from scanrnn._gated_backward import loop_weights, recurrent_scan
from scanrnn.execution import Execution
from scanrnn.kinds import GatedCell, LinearCell, check_mode
from scanrnn import cudnn, linear_scans
from scanrnn.regularization import Regularization, sample_masks, zoneout_blend, zoneout_rates

__all__ = [
    "check_length",
    "check_lengths",
    "check_sequence",
    "valid_steps",
    "mask_padding",
    "flip_valid",
    "prepare_sequence",
    "check_regularization",
    "unroll",
    "unroll_batch",
]

Array = jax.Array


def check_length(length, num_steps: int) -> Optional[Array]:
    """Validate a sequence length and return it as an integer scalar array (the check every function that takes a ``length`` makes).

    ``None`` stays ``None``. A length that is not an integer scalar raises
    (naming its dtype, traced or not). A concrete length must lie in ``[0,
    num_steps]``; a traced one (under ``jit`` or ``vmap``) cannot be checked
    on the host and is clamped to ``[0, num_steps]``: ``-5`` counts as 0
    and ``num_steps + 40`` as ``num_steps``, never a NaN.
    """
    return _checks.length("length", length, num_steps)


def check_lengths(lengths, batch: int, num_steps: int) -> Optional[Array]:
    """Validate per-example lengths ``[batch]``; the batched :func:`check_length` (traced ones clamped)."""
    return _checks.lengths("length", lengths, batch, num_steps)


def check_sequence(xs, name: str = "xs") -> Array:
    """Return ``xs`` as an array of rank 2 ``[T, features]`` of real numbers, or raise a ValueError.

    Complex inputs are refused: complex numbers may live inside a cell, but
    what crosses its boundary is real.
    """
    xs = jnp.asarray(xs)
    if xs.ndim != 2:
        raise ValueError(
            f"{name} must have shape [T, input_size] (one sequence; vmap adds the batch), "
            f"got shape {xs.shape}"
        )
    _checks.real_dtype(name, xs)
    return xs


def valid_steps(num_steps: int, length) -> Array:
    """A boolean ``[num_steps]`` mask, true on the first ``length`` steps."""
    length = jnp.asarray(length)
    return jnp.arange(num_steps, dtype=length.dtype) < length


def mask_padding(xs, length) -> Array:
    """``xs [T, ...]`` with the steps past ``length`` replaced by zeros (``xs`` itself without a length).

    The steps past a sequence's length still run (their results are
    discarded), so what the padding holds must never enter them: a NaN or
    an inf there would give NaN gradients through ``0 * NaN`` in the
    backward pass, although the outputs are masked. ``jnp.where`` (not a
    product with the mask) makes the padding exactly zero, and its gradient
    there exactly zero.
    """
    if length is None:
        return xs
    valid = valid_steps(xs.shape[0], length).reshape((-1,) + (1,) * (xs.ndim - 1))
    return jnp.where(valid, xs, jnp.zeros_like(xs))


def flip_valid(xs, length) -> Array:
    """Reverse the first ``length`` steps of ``xs`` along axis 0, keeping the rest.

    ``flip_valid(arange(5), 3) == [2, 1, 0, 3, 4]``. It is its own inverse.
    ``length`` is an integer scalar (a Python int too), checked as
    :func:`check_length` checks it: a concrete one must lie in ``[0, T]``,
    a traced one is clamped to it; ``None`` reverses all ``T`` steps.
    """
    xs = jnp.asarray(xs)
    if xs.ndim < 1:
        raise ValueError(f"flip_valid: xs must have a leading time axis, got shape {xs.shape}")
    length = check_length(length, xs.shape[0])
    if length is None:
        return jnp.flip(xs, axis=0)
    t = jnp.arange(xs.shape[0], dtype=length.dtype)
    order = jnp.where(t < length, length - 1 - t, t)
    return jnp.take(xs, order, axis=0)


def _check_carry(cell, params, carry) -> None:
    _checks.carry_like(jax.eval_shape(cell.initial_carry, params), carry)


def prepare_sequence(cell, params, xs, carry, length):
    """Check one sequence's inputs: ``(xs [T, I], carry, length)``, the carry zeros when ``None``."""
    xs = check_sequence(xs)
    length = check_length(length, xs.shape[0])
    if carry is None:
        carry = cell.initial_carry(params)
    else:
        _check_carry(cell, params, carry)
    return xs, carry, length


def _hand_written(cell, backward: str) -> bool:
    """Whether the hand-written pass differentiates ``cell``'s scan; a ValueError for ``"hand"`` and another kind."""
    if backward == "autodiff":
        return False
    if not isinstance(cell, GatedCell):
        raise ValueError(
            "backward='hand' needs a GatedCell (input projection, recurrent product, elementwise core), "
            f"such as the cells of scanrnn.cells; got a {type(cell).__name__}. Use backward='autodiff'"
        )
    return True


def _scan_steps(cell, params, carry, xs, valid, keep, execution: Execution, mask, rates):
    """Project and scan ``xs [n, I]``; ``valid`` is a boolean ``[n]`` or ``None``.

    ``mask`` (recurrent dropout), ``keep`` (zoneout masks ``[n, ...]`` per
    carry leaf) and ``rates`` (zoneout's expectation) are ``None`` or as
    :func:`_unroll_sequence` describes them.
    """
    if isinstance(cell, (GatedCell, LinearCell)) and execution.hoist:
        # One [T, I] x [I, G] product: vmap of a matrix-vector product.
        inputs, in_loop_projection = jax.vmap(cell.project, in_axes=(None, 0))(params, xs), False
    else:
        inputs, in_loop_projection = xs, isinstance(cell, (GatedCell, LinearCell))

    if isinstance(cell, GatedCell):
        if _hand_written(cell, execution.backward):
            save = "carries" if execution.remat == "step" else "products"
            return recurrent_scan(cell, save, execution.unroll, params, carry, inputs, valid, mask, keep, rates,
                                  in_loop_projection)
        in_loop = loop_weights(cell, params)  # the products read the weights transposed

        def cell_step(c, x, k):
            params_ = in_loop()
            p = cell.project(params_, x) if in_loop_projection else x
            return cell.step(params_, c, p, mask, k)

    elif isinstance(cell, LinearCell):

        def cell_step(c, x, k):
            return cell.step(params, c, cell.project(params, x) if in_loop_projection else x, k)

    else:

        def cell_step(c, x, k):
            new_c, y = cell.apply(params, c, x)
            if k is not None:  # zoneout of the generic cell's carry; its output as apply gives it
                new_c = zoneout_blend(k, c, new_c)
            return new_c, y

    def scan_body(c, inp):
        x, v, k = inp
        new_c, y = cell_step(c, x, rates if k is None else k)
        if v is None:
            return new_c, y
        c = jax.tree.map(lambda new, old: jnp.where(v, new, old), new_c, c)
        y = jax.tree.map(lambda a: jnp.where(v, a, jnp.zeros_like(a)), y)
        return c, y

    if execution.remat == "step":
        scan_body = jax.checkpoint(scan_body)
    return lax.scan(scan_body, carry, (inputs, valid, keep), unroll=execution.unroll)


def _scan_segments(cell, params, carry, xs, valid, keep, execution: Execution, mask, rates):
    """``remat="sqrt"``: segments of about sqrt(T) steps, each recomputed in the backward pass."""
    num_steps = xs.shape[0]
    size = max(1, math.isqrt(num_steps - 1) + 1) if num_steps > 1 else 1  # ceil(sqrt(T))
    count = -(-num_steps // size)
    pad = count * size - num_steps
    if valid is None and pad:
        valid = jnp.ones((num_steps,), bool)

    def segments(a):  # [T, ...] -> [count, size, ...], padded at the end
        if pad:
            a = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
        return a.reshape((count, size) + a.shape[1:])

    xs, valid, keep = jax.tree.map(segments, (xs, valid, keep))
    inner = execution._replace(remat="none")

    @jax.checkpoint
    def segment(c, inp):
        x, v, k = inp
        return _scan_steps(cell, params, c, x, v, k, inner, mask, rates)

    carry, ys = lax.scan(segment, carry, (xs, valid, keep))
    ys = jax.tree.map(lambda y: y.reshape((count * size,) + y.shape[2:])[:num_steps], ys)
    return carry, ys


def check_regularization(cell, params, xs, carry, regularization: Regularization, key):
    """Check the rates against the cell and sample the masks of one sequence.

    Returns ``(input_mask, recurrent_mask, keep, rates)``: the masks of
    :func:`scanrnn.regularization.sample_masks` when ``key`` is given (the
    zoneout masks as ``keep``, ``rates`` ``None``), and without a key no
    masks and the zoneout rates (``None`` when they are all 0). Raises a
    ValueError for a zoneout pytree of the wrong structure, or recurrent
    dropout on a cell that cannot take it.
    """
    rates = zoneout_rates(regularization.zoneout, carry)
    if regularization.recurrent_dropout > 0:
        _check_recurrent_dropout(cell)
    if key is None:
        return None, None, None, rates
    if regularization.is_off():
        return None, None, None, None
    masks = sample_masks(key, xs, carry, **regularization._asdict())
    return masks.inputs, masks.recurrent, masks.zoneout, None


def _check_recurrent_dropout(cell) -> None:
    """Raise a ValueError unless ``cell`` is a :class:`scanrnn.kinds.GatedCell`, whose state enters a product."""
    if isinstance(cell, LinearCell):
        raise ValueError(
            "recurrent_dropout > 0 needs recurrent weights; this LinearCell has no recurrent weights (its "
            "coefficients read only the input). Use dropout or zoneout"
        )
    if not isinstance(cell, GatedCell):
        raise ValueError(
            "recurrent_dropout > 0 needs a GatedCell, which says where its state enters a recurrent weight "
            f"product (GatedCell.recurrent); got a {type(cell).__name__}. Use dropout or zoneout, or write "
            "the cell as a GatedCell"
        )


def _reals(tree) -> int:
    """The number of real scalars in a pytree of arrays or shapes (a complex one counts two)."""
    return sum(math.prod(leaf.shape) * (2 if jnp.issubdtype(leaf.dtype, jnp.complexfloating) else 1)
               for leaf in jax.tree.leaves(tree))


def _whole_sequence(cell: LinearCell, params, carry, xs, execution: Execution) -> bool:
    """Whether a LinearCell runs through :func:`scanrnn.linear_scans.evaluate` rather than a scan of its step.

    The associative and chunked modes always do. The sequential mode does
    when its state is no larger than its projection of one step: the
    coefficients of all steps, ``[T, *state]``, are then no larger than the
    projections, and the products before and after the recurrence run over
    all steps at once. A state larger than its projection (the selective
    SSM's ``[N, D]`` from a projection of ``2 D + 2 N``) is scanned step by
    step, which never holds ``T`` of them; so is every step under
    ``remat="step"`` or ``"sqrt"``, which asks for the step to be recomputed.
    """
    if cell.mode != "sequential":
        return True
    if execution.remat != "none":
        return False
    projection = jax.eval_shape(cell.project, params, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    return _reals(carry.h) <= _reals(projection)


def _unroll_sequence(cell, params, xs, carry, length, reverse, execution: Execution, reg):
    """:func:`unroll` after its checks, with ``reg = (input_mask, recurrent_mask, keep, rates)``.

    ``input_mask [I]`` multiplies every step's input; ``recurrent_mask`` is
    the carry-structured mask of :meth:`scanrnn.GatedCell.step`; ``keep``
    the zoneout masks ``[T, ...]`` per carry leaf, row ``t`` for the step
    that reads ``xs[t]``; ``rates`` the zoneout rates of evaluation. Each
    may be ``None``.
    """
    input_mask, mask, keep, rates = reg
    num_steps = xs.shape[0]
    if execution.backward == "hand":
        _hand_written(cell, execution.backward)  # a GatedCell, or a ValueError
    xs = mask_padding(xs, length)
    if input_mask is not None:
        xs = xs * input_mask[None, :]

    if execution.cudnn:  # checked by _check_options: an LSTM, no recurrent dropout or zoneout
        cudnn.check_params(params)
        return cudnn.lstm_sequence(params, xs, carry, length, reverse=reverse)

    if isinstance(cell, LinearCell) and _whole_sequence(cell, params, carry, xs, execution):
        # The whole sequence at once; reversal is a flip of the valid part.
        n = length if length is not None else jnp.asarray(num_steps)
        if reverse:
            xs, keep = jax.tree.map(lambda a: flip_valid(a, n), (xs, keep))
        inputs = jax.vmap(cell.project, in_axes=(None, 0))(params, xs)
        carry, ys = linear_scans.evaluate(
            cell, params, carry, inputs, length, rates if keep is None else keep, execution.unroll
        )
        if reverse:
            ys = jax.tree.map(lambda y: flip_valid(y, n), ys)
        return carry, ys

    if length is None:
        valid = None
        if reverse:
            xs, keep = jax.tree.map(lambda a: jnp.flip(a, axis=0), (xs, keep))
    else:
        valid = valid_steps(num_steps, length)
        if reverse:
            xs, keep = jax.tree.map(lambda a: flip_valid(a, length), (xs, keep))

    if execution.remat == "sqrt":
        carry, ys = _scan_segments(cell, params, carry, xs, valid, keep, execution, mask, rates)
    else:
        carry, ys = _scan_steps(cell, params, carry, xs, valid, keep, execution, mask, rates)

    if reverse:
        if length is None:
            ys = jax.tree.map(lambda y: jnp.flip(y, axis=0), ys)
        else:
            ys = jax.tree.map(lambda y: flip_valid(y, length), ys)
    return carry, ys


def unroll(
    cell,
    params,
    xs,
    carry: Any = None,
    *,
    length=None,
    reverse: bool = False,
    execution: Optional[Execution] = None,
    regularization: Optional[Regularization] = None,
    key=None,
):
    """Run ``cell`` over one sequence with :func:`jax.lax.scan`.

    Args:
      cell: a cell of any kind (:mod:`scanrnn.kinds`): a
        :class:`scanrnn.GatedCell`, a :class:`scanrnn.LinearCell`, or a
        :class:`scanrnn.Cell` (anything with ``init``, ``initial_carry`` and
        ``apply``; a :class:`scanrnn.Layer` is refused).
      params: the cell's params.
      xs: ``[T, input_size]``, one sequence of real numbers.
      carry: the initial carry; ``cell.initial_carry(params)`` when ``None``.
        A carry given must have its structure, shapes and dtypes.
      length: optional integer scalar (may be traced): only the first
        ``length`` steps are valid. The carry stops changing after them,
        outputs past them are zeros, and the returned carry is the one after
        step ``length``. A concrete length outside ``[0, T]`` raises; a
        traced one is clamped to ``[0, T]``.
      reverse: read the (valid part of the) sequence backwards. Padding
        stays at the end and outputs come back in the original time order:
        ``ys[t]`` is the output of the step that read ``xs[t]``.
      execution: how the scan runs, a :class:`scanrnn.Execution` (``None``:
        ``Execution()``, the defaults measured fastest on a CPU): the scan's
        unroll factor, rematerialisation, the hand-written backward pass,
        the input projection before or inside the scan. Every choice gives
        the same numbers up to rounding.
      regularization: the rates of dropout, recurrent dropout and zoneout, a
        :class:`scanrnn.Regularization` (``None``: none).
      key: ``None`` (evaluation: no dropout, and zoneout by its expectation
        ``rate * old + (1 - rate) * new``) or a PRNG key (training: masks
        drawn as :func:`scanrnn.regularization.sample_masks` draws them).
        Rates of 0 give exactly the unregularised result, with or without
        a key.

    Returns:
      ``(final_carry, ys)``, ``ys`` with a leading axis of size ``T``.
      Called outside :func:`jax.jit`, each call traces and compiles its scan
      again; wrap the surrounding function in ``jax.jit`` for repeated use.

    >>> from scanrnn import gru
    >>> cell = gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = unroll(cell, params, jnp.ones((5, 3)), length=4)
    >>> ys.shape, bool((ys[4] == 0).all())
    ((5, 8), True)
    """
    execution, regularization = _check_options(cell, reverse, execution, regularization, key)
    xs, carry, length = prepare_sequence(cell, params, xs, carry, length)
    reg = check_regularization(cell, params, xs, carry, regularization, key)
    return _unroll_sequence(cell, params, xs, carry, length, reverse, execution, reg)


def _check_options(cell, reverse, execution, regularization, key):
    """The checks of :func:`unroll`'s arguments that do not depend on the sequence; the checked bundles."""
    _checks.cell("cell", cell)
    if isinstance(cell, LinearCell):
        check_mode(cell.mode, cell.chunk_size)
    _checks.flag("reverse", reverse)
    _checks.prng_key("key", key, allow_none=True)
    execution, regularization = _execution.check(execution), _regularization.check(regularization)
    if execution.cudnn:
        cudnn.check(cell, regularization, execution)
    return execution, regularization


def unroll_batch(
    cell,
    params,
    xs,
    carry=None,
    *,
    length=None,
    reverse=False,
    execution: Optional[Execution] = None,
    regularization: Optional[Regularization] = None,
    key=None,
):
    """:func:`unroll` over a batch, the batch axis first: ``jax.vmap`` of it, after host checks of the batch.

    Beyond ``jax.vmap(unroll)`` it checks ``xs [B, T, I]`` and every
    example's concrete length on the host (under ``vmap`` a length is
    traced, so it could only be clamped), and gives each example its own
    key.

    Args:
      xs: ``[B, T, input_size]``.
      carry: ``None`` (zeros) or a carry whose leaves have a leading ``B`` axis.
      length: ``None`` or an integer array of shape ``[B]``; concrete
        lengths outside ``[0, T]`` raise, traced ones are clamped to it.
      reverse, execution, regularization: as for :func:`unroll`.
      key: ``None`` or ONE PRNG key; example ``b`` gets
        ``jax.random.split(key, B)[b]``, so every example has its own masks.

    Returns:
      ``(final_carry, ys)`` with a leading batch axis on every leaf. It equals
      a Python loop of :func:`unroll` over the examples.
    """
    _check_options(cell, reverse, execution, regularization, key)
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape [B, T, input_size], got shape {xs.shape}")
    _checks.real_dtype("xs", xs)
    length = check_lengths(length, xs.shape[0], xs.shape[1])
    keys = None if key is None else jax.random.split(key, xs.shape[0])

    def one(x, c, n, k):
        return unroll(
            cell, params, x, c, length=n, reverse=reverse, execution=execution, regularization=regularization, key=k
        )

    def axis(a):
        return None if a is None else 0

    return jax.vmap(one, in_axes=(0, axis(carry), axis(length), axis(keys)))(xs, carry, length, keys)
