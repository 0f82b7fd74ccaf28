"""Unrolling a cell over ONE sequence with :func:`jax.lax.scan`.

``unroll(cell, params, xs)`` is, by definition::

    carry = cell.initial_carry(params)
    for x in xs:
        carry, y = cell.apply(params, carry, x)

with the ``y`` stacked along a leading time axis. A ``length`` marks the
valid prefix of a padded sequence; ``reverse=True`` reads the valid part
backwards. Batches are a :func:`jax.vmap` away (:func:`unroll_batch`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from scanrnn import _checks
from scanrnn._fast_bptt import loop_weights, recurrent_scan
from scanrnn.cells import RECURRENT_CORES
from scanrnn.regularization import check_rate, sample_masks, zoneout_blend, zoneout_rates

Array = jax.Array


def check_length(length, num_steps: int) -> Optional[Array]:
    """Validate a sequence length and return it as an integer scalar array (:func:`scanrnn._checks.length`).

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
    _check_carry_like(jax.eval_shape(cell.initial_carry, params), carry)


def _check_carry_like(expected, carry) -> None:
    """``carry`` must have the structure, shapes and dtypes of ``expected`` (``initial_carry``'s :func:`jax.eval_shape`)."""
    exp_leaves, exp_tree = jax.tree.flatten(expected)
    leaves, tree = jax.tree.flatten(carry)
    if tree != exp_tree:
        raise ValueError(f"carry must have the structure of cell.initial_carry(params), {exp_tree}; got {tree}")
    for e, g in zip(exp_leaves, leaves):
        if tuple(jnp.shape(g)) != tuple(e.shape):
            raise ValueError(
                f"carry must have the shapes of cell.initial_carry(params), "
                f"{[tuple(l.shape) for l in exp_leaves]}; got {[tuple(jnp.shape(l)) for l in leaves]}"
            )
    expected_dtypes, given_dtypes = _checks.dtype_names(exp_leaves), _checks.dtype_names(leaves)
    if given_dtypes != expected_dtypes:
        raise ValueError(
            f"carry must have the dtypes of cell.initial_carry(params), {expected_dtypes}; got {given_dtypes}"
        )


REMATS = ("none", "step", "sqrt")
BACKWARDS = ("auto", "hand", "autodiff")


def check_unroll_options(remat, backward, hoist=None) -> None:
    """Raise a ValueError unless ``remat``, ``backward`` and ``hoist`` are known options."""
    if not _is_one_of(remat, REMATS):
        raise ValueError(f"remat must be one of {REMATS}, got {remat!r}")
    if not _is_one_of(backward, BACKWARDS):
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    check_flag("hoist", hoist)


def _is_one_of(value, allowed) -> bool:
    return isinstance(value, str) and value in allowed


def check_flag(name: str, value) -> Optional[bool]:
    """``value`` if it is ``None`` (the backend's default), ``True`` or ``False``; else an ``InputTypeError``."""
    return _checks.flag(name, value, allow_none=True)


def prepare_sequence(cell, params, xs, carry, length):
    """Check one sequence's inputs: ``(xs [T, I], carry, length)``, the carry zeros when ``None``."""
    xs = check_sequence(xs)
    length = check_length(length, xs.shape[0])
    if carry is None:
        carry = cell.initial_carry(params)
    else:
        _check_carry(cell, params, carry)
    return xs, carry, length


def _registered_core(step):
    try:
        return RECURRENT_CORES.get(step)
    except TypeError:  # a callable that cannot be weakly referenced is never registered
        return None


def hoist_default() -> bool:
    """Whether :func:`unroll` hoists the input projection out of the scan on the default backend.

    On a CPU the scan projects each step's input inside the loop, as the
    matrix product of one step (a few ``[B, I] x [I, G]`` rows) is cheap
    there and its result stays in cache, while the hoisted projection of all
    steps is a ``[T, B, G]`` array written to and read back from memory, in
    the batch-major order that ``jax.vmap`` gives it and then transposed to
    the scan's time-major order (measured in ``experiments/benchmarks``).
    On accelerators the one large product is what cuDNN does, and the
    default keeps it.
    """
    return jax.default_backend() != "cpu"


def hand_written_default() -> bool:
    """Whether ``backward="auto"`` takes the hand-written pass on the default backend.

    On accelerators it does (the one-product weight gradients are what
    cuDNN does; not measured here). On a CPU it does not: measured on 2
    cores (LSTM and GRU training steps, T=100, I=32, H=32-256,
    ``experiments/results/benchmarks-backward/``), autodiff through the scan
    took 0.81-1.05 of the hand-written pass's time at batches of 64 and
    128, while the hand-written pass was the faster at B=16 from H=128 up
    (autodiff took 1.15-1.48 of its time; 0.95-1.10 at H=32 and 64). The
    batch is a :func:`jax.vmap` outside :func:`unroll`, which sees one
    example, so the default cannot follow it: pass ``backward="hand"`` for
    small batches.
    """
    return jax.default_backend() != "cpu"


def one_scan_default() -> bool:
    """Whether :func:`unroll_bidirectional` runs both directions in one scan on the default backend.

    On accelerators it does: one scan of ``T`` steps, ``jax.vmap`` over the
    stacked direction axis, does each step's two products as one batched
    product, in half the sequential steps of two scans (not measured here).
    On a CPU it runs a forward scan and then a reverse one. Measured on 2
    cores (``experiments/benchmarks/pieces.py``, LSTM and GRU at B=32, H=20,
    at B=64, H=128 and at B=128, H=256; ``experiments/results/benchmarks-pieces/``),
    the two scans took 0.57-1.01 of the one scan's time in a training step:
    under the batch's ``jax.vmap`` the one scan's carries are batch-major,
    ``[B, 2, H]``, while its batched products work direction-major, so each
    step of the forward and backward passes transposes gates and carries.
    In inference alone the two scans took 0.90-1.37 of its time, the one
    scan being the faster on the smallest LSTM.
    """
    return jax.default_backend() != "cpu"


def _builtin_recurrence(cell):
    """The :class:`scanrnn.cells.Recurrence` of a cell of :mod:`scanrnn.cells` (a hand-written pass), else ``None``."""
    step = getattr(cell, "step", None)
    return None if getattr(cell, "project", None) is None or step is None else _registered_core(step)


def _hand_written(cell, backward):
    """The cell's :class:`scanrnn.cells.Recurrence` if the hand-written pass differentiates its scan, else ``None``.

    Raises the ``ValueError`` of ``backward="hand"`` for a cell without one.
    """
    if backward == "autodiff":
        return None
    recurrence = _builtin_recurrence(cell)
    if backward == "hand":
        if recurrence is None:
            raise ValueError(
                "backward='hand' needs a cell with a hand-written backward pass (the cells of scanrnn.cells "
                "but gru(reset_after=False)); use 'auto' or 'autodiff' for this cell"
            )
        return recurrence
    return recurrence if hand_written_default() else None


def _scan_steps(cell, params, carry, xs, valid, keep, *, remat, backward, unroll, mask, rates, hoist):
    """Project and scan ``xs [n, I]``; ``valid`` is a boolean ``[n]`` or ``None``.

    ``mask`` (recurrent dropout), ``keep`` (zoneout masks ``[n, ...]`` per
    carry leaf) and ``rates`` (zoneout's expectation) are ``None`` or as
    :func:`_unroll_sequence` describes them. ``hoist``: project all steps
    before the scan (one matrix product) or each step inside it.
    """
    project = getattr(cell, "project", None)
    step = getattr(cell, "step", None)
    masked_step = getattr(cell, "masked_step", None)
    regularised = mask is not None or keep is not None or rates is not None
    recurrence = _hand_written(cell, backward)
    if project is None or step is None:
        inputs, body, to_p = xs, cell.apply, None
    else:
        if hoist:
            # One [T, I] x [I, G] product: vmap of a matrix-vector product.
            inputs, to_p = jax.vmap(project, in_axes=(None, 0))(params, xs), None
        else:
            inputs, to_p = xs, project
        body = step
        if recurrence is not None:
            save = "carries" if remat == "step" else "products"
            h_mask = None if mask is None else mask.h
            return recurrent_scan(
                recurrence.core, save, unroll, params, carry, inputs, valid, h_mask, keep, rates, to_p,
                recurrence.product,
            )

    # A built-in cell's products read its weights transposed (see loop_weights).
    in_loop = loop_weights(params) if _builtin_recurrence(cell) is not None else lambda: params

    def cell_step(c, x, k):
        params = in_loop()
        if to_p is not None:
            x = to_p(params, x)
        if regularised and masked_step is not None:
            return masked_step(params, c, x, mask, k)
        new_c, y = body(params, c, x)
        if k is not None:  # a cell that does not declare masked_step: zoneout of its carry
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

    if remat == "step":
        scan_body = jax.checkpoint(scan_body)
    return lax.scan(scan_body, carry, (inputs, valid, keep), unroll=unroll)


def _scan_segments(cell, params, carry, xs, valid, keep, *, backward, unroll, mask, rates, hoist):
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

    @jax.checkpoint
    def segment(c, inp):
        x, v, k = inp
        return _scan_steps(
            cell, params, c, x, v, k, remat="none", backward=backward, unroll=unroll, mask=mask, rates=rates,
            hoist=hoist,
        )

    carry, ys = lax.scan(segment, carry, (xs, valid, keep))
    ys = jax.tree.map(lambda y: y.reshape((count * size,) + y.shape[2:])[:num_steps], ys)
    return carry, ys


def check_regularization(cell, params, xs, carry, dropout, recurrent_dropout, zoneout, key):
    """Check the rates and sample the masks of one sequence.

    Returns ``(input_mask, recurrent_mask, keep, rates)``: the masks of
    :func:`scanrnn.regularization.sample_masks` when ``key`` is given (the
    zoneout masks as ``keep``, ``rates`` ``None``), and without a key no
    masks and the zoneout rates (``None`` when they are all 0). Raises a
    ValueError for a rate outside ``[0, 1)``, a zoneout pytree of the wrong
    structure, or recurrent dropout on a cell that cannot take it.
    """
    dropout = check_rate("dropout", dropout)
    recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
    rates = zoneout_rates(zoneout, carry)
    if recurrent_dropout > 0:
        _check_recurrent_dropout(cell, params, xs, carry)
    if key is None:
        return None, None, None, rates
    if dropout == 0 and recurrent_dropout == 0 and rates is None:
        return None, None, None, None
    masks = sample_masks(key, xs, carry, dropout=dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout)
    return masks.inputs, masks.recurrent, masks.zoneout, None


def _check_recurrent_dropout(cell, params, xs, carry) -> None:
    """Raise a ValueError unless ``cell.masked_step`` takes a recurrent mask (traced abstractly)."""
    masked_step = getattr(cell, "masked_step", None)
    if masked_step is None:
        raise ValueError(
            "recurrent_dropout > 0 needs a cell that declares where its state enters a recurrent "
            "weight product (Cell.masked_step); this cell has no masked_step. Use dropout or zoneout, "
            "or give the cell a masked_step"
        )
    project = getattr(cell, "project", None)

    def probe(params, carry, x):
        p = x if project is None else project(params, x)
        return masked_step(params, carry, p, jax.tree.map(jnp.ones_like, carry), None)

    jax.eval_shape(probe, params, carry, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))


def _unroll_sequence(cell, params, xs, carry, length, reverse, unroll, remat, backward, reg, hoist=None):
    """:func:`unroll` after its checks, with ``reg = (input_mask, recurrent_mask, keep, rates)``.

    ``input_mask [I]`` multiplies every step's input; ``recurrent_mask`` is
    the carry-structured mask of ``cell.masked_step``; ``keep`` the zoneout
    masks ``[T, ...]`` per carry leaf, row ``t`` for the step that reads
    ``xs[t]``; ``rates`` the zoneout rates of evaluation. Each may be ``None``.
    """
    input_mask, mask, keep, rates = reg
    num_steps = xs.shape[0]
    if backward == "hand":
        _hand_written(cell, backward)  # the cell has the pass, or a ValueError
    xs = mask_padding(xs, length)
    if input_mask is not None:
        xs = xs * input_mask[None, :]

    project = getattr(cell, "project", None)
    parallel = getattr(cell, "parallel", None)
    if project is not None and parallel is not None and mask is None:
        # The whole sequence at once; reversal is a flip of the valid part.
        n = length if length is not None else jnp.asarray(num_steps)
        if reverse:
            xs, keep = jax.tree.map(lambda a: flip_valid(a, n), (xs, keep))
        inputs = jax.vmap(project, in_axes=(None, 0))(params, xs)
        zone = rates if keep is None else keep
        if zone is None:
            carry, ys = parallel(params, carry, inputs, length)
        else:
            carry, ys = parallel(params, carry, inputs, length, keep=zone)
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

    hoist = hoist_default() if hoist is None else hoist
    options = dict(backward=backward, unroll=unroll, mask=mask, rates=rates, hoist=hoist)
    if remat == "sqrt":
        carry, ys = _scan_segments(cell, params, carry, xs, valid, keep, **options)
    else:
        carry, ys = _scan_steps(cell, params, carry, xs, valid, keep, remat=remat, **options)

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
    unroll: int = 1,
    remat: str = "none",
    backward: str = "auto",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: Any = 0.0,
    key=None,
    hoist: Optional[bool] = None,
):
    """Run ``cell`` over one sequence with :func:`jax.lax.scan`.

    Args:
      cell: a :class:`scanrnn.Cell` (or anything with ``init``,
        ``initial_carry`` and ``apply``; a :class:`scanrnn.Layer` is refused).
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
      unroll: how many steps :func:`jax.lax.scan` unrolls per loop iteration.
      remat: what the backward pass keeps from the forward pass, a trade of
        memory for time with identical gradients. ``"none"`` keeps every
        step's intermediate values; ``"step"`` keeps only each step's carry
        and recomputes the step in the backward pass; ``"sqrt"`` keeps only
        the carry at the start of segments of about ``sqrt(T)`` steps and
        recomputes each segment (memory ``O(sqrt(T))`` per sequence besides
        the inputs and outputs, for about one more forward pass of time).
      backward: ``"hand"`` differentiates the cells of :mod:`scanrnn.cells`
        (all but ``gru(reset_after=False)``) by a hand-written backward scan
        whose weight gradients are one matrix product over all steps (see
        ``scanrnn._fast_bptt``), and raises a ``ValueError`` for other
        cells; ``"autodiff"`` uses autodiff through the scan for every cell;
        ``"auto"`` (the default) is ``"hand"`` where the cell has the
        hand-written pass and :func:`hand_written_default` says it pays
        (on accelerators; on a CPU only small batches gain from it), and
        ``"autodiff"`` otherwise. They give the same numbers up to rounding,
        with or without the regularisation below.
      dropout: rate of inverted dropout of the input features, one mask
        ``[I]`` for the whole sequence (Gal and Ghahramani 2016).
      recurrent_dropout: rate of inverted dropout of the state where it
        enters a recurrent weight product, one mask for the whole sequence;
        the cell must declare where (``Cell.masked_step``): all the built-in
        cells but :func:`scanrnn.min_gru` and :func:`scanrnn.min_lstm`,
        which have no recurrent weights, do.
      zoneout: the probability that a carry unit keeps its previous value at
        a step (Krueger et al. 2016); a float for every carry leaf, or a
        pytree with the carry's structure, such as ``LSTMCarry(h=0.05,
        c=0.5)``. The built-in cells of :mod:`scanrnn.cells` and
        :mod:`scanrnn.minimal` output their hidden state after zoneout.
      key: ``None`` (evaluation: no dropout, and zoneout by its expectation
        ``rate * old + (1 - rate) * new``) or a PRNG key (training: masks
        drawn as :func:`scanrnn.regularization.sample_masks` draws them).
        Every rate is a float in ``[0, 1)``; rates of 0 give exactly the
        unregularised result, with or without a key.
      hoist: for cells with ``project`` and ``step`` (all the built-in
        ones), ``True`` computes the input projection of all ``T`` steps as
        one matrix product before the scan and runs only ``step`` inside it;
        ``False`` projects each step's input inside the scan. ``None`` (the
        default) is :func:`hoist_default`: inside the scan on a CPU, before
        it elsewhere. The numbers are the same up to rounding. (Cells with
        ``Cell.parallel`` always project all steps first.)

    Returns:
      ``(final_carry, ys)``, ``ys`` with a leading axis of size ``T``.
 Called outside :func:`jax.jit`, each call
    traces and compiles its scan again; wrap the surrounding function in
    ``jax.jit`` for repeated use.

    >>> from scanrnn import gru
    >>> cell = gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = unroll(cell, params, jnp.ones((5, 3)), length=4)
    >>> ys.shape, bool((ys[4] == 0).all())
    ((5, 8), True)
    """
    _check_options(cell, reverse, unroll, remat, backward, hoist, key)
    xs, carry, length = prepare_sequence(cell, params, xs, carry, length)
    reg = check_regularization(cell, params, xs, carry, dropout, recurrent_dropout, zoneout, key)
    return _unroll_sequence(cell, params, xs, carry, length, reverse, unroll, remat, backward, reg, hoist)


_unroll = unroll  # the name `unroll` is shadowed by the scan argument below


def _check_options(cell, reverse, unroll, remat, backward, hoist, key) -> None:
    """The checks of :func:`unroll`'s arguments that do not depend on the sequence."""
    _checks.cell("cell", cell)
    _checks.flag("reverse", reverse)
    _checks.positive_int("unroll", unroll)
    check_unroll_options(remat, backward, hoist)
    _checks.prng_key("key", key, allow_none=True)


def unroll_batch(
    cell,
    params,
    xs,
    carry=None,
    *,
    length=None,
    reverse=False,
    unroll=1,
    remat="none",
    backward="auto",
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    key=None,
    hoist=None,
):
    """:func:`unroll` over a batch, the batch axis first: ``jax.vmap`` of it.

    Args:
      xs: ``[B, T, input_size]``.
      carry: ``None`` (zeros) or a carry whose leaves have a leading ``B`` axis.
      length: ``None`` or an integer array of shape ``[B]``; concrete
        lengths outside ``[0, T]`` raise, traced ones are clamped to it.
      dropout, recurrent_dropout, zoneout, hoist: as for :func:`unroll`.
      key: ``None`` or ONE PRNG key; example ``b`` gets
        ``jax.random.split(key, B)[b]``, so every example has its own masks.

    Returns:
      ``(final_carry, ys)`` with a leading batch axis on every leaf. It equals
      a Python loop of :func:`unroll` over the examples.
    """
    _check_options(cell, reverse, unroll, remat, backward, hoist, key)
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape [B, T, input_size], got shape {xs.shape}")
    _checks.real_dtype("xs", xs)
    length = check_lengths(length, xs.shape[0], xs.shape[1])
    keys = None if key is None else jax.random.split(key, xs.shape[0])

    def one(x, c, n, k):
        return _unroll(
            cell, params, x, c, length=n, reverse=reverse, unroll=unroll, remat=remat, backward=backward,
            dropout=dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout, key=k, hoist=hoist,
        )

    def axis(a):
        return None if a is None else 0

    return jax.vmap(one, in_axes=(0, axis(carry), axis(length), axis(keys)))(xs, carry, length, keys)


def unroll_bidirectional(
    cell,
    params,
    xs,
    carry=None,
    *,
    length=None,
    unroll=1,
    remat="none",
    backward="auto",
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    key=None,
    hoist=None,
    one_scan=None,
):
    """Both directions of a bidirectional layer, in one scan or in two.

    The forward and backward params are stacked on a leading axis of size 2
    (``jax.vmap(cell.init)`` of two keys makes them). The backward direction
    reads each sequence's valid part reversed. With ``one_scan`` both run in
    a single :func:`jax.lax.scan` through :func:`jax.vmap` over the direction
    axis; without it, as a forward scan and then a reverse one. The two give
    the same numbers.

    Args:
      params: the cell's params with a leading direction axis of size 2.
      xs: ``[T, input_size]``.
      carry: ``None`` or initial carries with a leading direction axis of size 2.
      length: optional integer scalar, the valid prefix (a traced one is
        clamped to ``[0, T]``, as in :func:`unroll`).
      unroll, remat, backward, dropout, recurrent_dropout, zoneout, hoist: as
        for :func:`unroll`; each direction has its own masks.
      key: ``None`` or ONE PRNG key (of one sequence: under ``jax.vmap`` pass
        one per example); ``k_forward, k_backward = jax.random.split(key)``.
      one_scan: ``True`` (one vmapped scan), ``False`` (two scans) or
        ``None``, the backend's default (:func:`one_scan_default`: one scan
        on accelerators, two on a CPU, where they were measured faster).

    Returns:
      ``(final_carries, ys)``, each leaf with a leading direction axis of 2
      (forward first); ``ys[1]`` is in the original time order, so ``ys[1][0]``
      is the backward direction's output after reading the whole sequence.
      It equals ``unroll`` of the forward params (with ``key=k_forward``) and
      ``unroll(..., reverse=True)`` of the backward params (with
      ``key=k_backward``).
    """
    _check_options(cell, False, unroll, remat, backward, hoist, key)
    check_flag("one_scan", one_scan)
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
    one_scan = one_scan_default() if one_scan is None else one_scan
    if carry is None:
        carry = jax.vmap(cell.initial_carry)(params)
    else:
        _check_carry_like(jax.eval_shape(jax.vmap(cell.initial_carry), params), carry)
    one_params, one_carry = jax.tree.map(lambda a: a[0], (params, carry))
    _, _, _, rates = check_regularization(cell, one_params, xs, one_carry, dropout, recurrent_dropout, zoneout, None)
    masks = (None, None, None)
    if key is not None and (dropout > 0 or recurrent_dropout > 0 or rates is not None):
        # One key per direction; each direction's zoneout rows are in time
        # order, row t for the step that reads xs[t].
        options = dict(dropout=dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout)
        drawn = jax.vmap(lambda k: sample_masks(k, xs, one_carry, **options))(jax.random.split(key))
        masks, rates = (drawn.inputs, drawn.recurrent, drawn.zoneout), None

    def one_direction(p, x, c, m, reverse):
        return _unroll_sequence(cell, p, x, c, length, reverse, unroll, remat, backward, (*m, rates), hoist)

    if not one_scan:  # a forward scan, then a reverse one

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
