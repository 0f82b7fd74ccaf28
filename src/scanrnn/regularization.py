r"""Dropout, recurrent dropout and zoneout over ONE sequence: the masks and their checks.

:func:`scanrnn.unroll` takes three rates in a :class:`Regularization`, each
a float in ``[0, 1)``, and a ``key``:

- ``dropout``: inverted dropout of the input features with ONE mask ``[I]``
  for the whole sequence (the "variational" dropout of Gal and Ghahramani
  2016; Keras' ``dropout=`` on its recurrent layers). Kept features are
  scaled by ``1 / (1 - dropout)``.
- ``recurrent_dropout``: ONE inverted-dropout mask on the state wherever it
  enters a recurrent weight product, the same at every step (Gal and
  Ghahramani 2016): ``W_hh (h_{t-1} * m)``. The GRU's ``z * h_{t-1}`` term
  and the LSTM's cell state are never masked.
- ``zoneout``: at every step each carry unit keeps its previous value with
  probability ``zoneout`` (Krueger et al. 2016),
  ``c_t = d_t * c_{t-1} + (1 - d_t) * c~_t`` with ``d_t ~ Bernoulli(rate)``
  per step and unit. A float applies to every carry leaf; a pytree with the
  carry's structure, such as ``LSTMCarry(h=0.05, c=0.5)``, gives per-leaf
  rates.

``key=None`` is evaluation: dropout and recurrent dropout are off, and
zoneout is replaced by its expectation ``c_t = rate * c_{t-1} + (1 - rate) *
c~_t`` (no randomness). Rates of 0 leave :func:`scanrnn.unroll` exactly as
without them, with or without a key.

The masks
---------
:func:`sample_masks` is what :func:`scanrnn.unroll` draws for a ``key``; a
user can call it to see or reproduce them. With ``N`` the number of carry
units (the sizes of the leaves of ``jax.tree.leaves(carry)`` added up) and
every uniform draw in float32::

    k_inputs, k_recurrent, k_zoneout = jax.random.split(key, 3)
    u_inputs = jax.random.uniform(k_inputs, (I,), jnp.float32)
    u_recurrent = jax.random.uniform(k_recurrent, (N,), jnp.float32)
    u_zoneout = jax.random.uniform(k_zoneout, (T, N), jnp.float32)

- input mask ``[I]``: ``1 / (1 - dropout)`` where ``u_inputs >= dropout``,
  else 0, in the inputs' dtype;
- recurrent mask: the carry's structure; leaf ``j`` takes the next
  ``leaf.size`` entries of ``u_recurrent`` (leaves in ``jax.tree.leaves``
  order), reshaped to the leaf's shape: ``1 / (1 - recurrent_dropout)``
  where they are ``>= recurrent_dropout``, else 0, in the leaf's dtype. A
  cell uses the leaves that enter its recurrent products (``h`` for the
  cells of :mod:`scanrnn.cells`, ``context`` for :func:`scanrnn.elman`,
  ``memory`` for :func:`scanrnn.jordan`, ``outputs`` for
  :func:`scanrnn.narx`) and ignores the others;
- zoneout mask: the carry's structure; leaf ``j`` takes the same columns of
  ``u_zoneout``, reshaped to ``[T, *leaf.shape]``: ``True`` (keep the
  previous value) where they are ``< rate_j``. Row ``t`` belongs to the step
  that reads ``xs[t]`` (with ``reverse=True`` too).

Each part is drawn from its own key whatever the other rates are, so
changing one rate does not change the other masks. :func:`scanrnn.unroll_batch`
gives example ``b`` the key ``jax.random.split(key, B)[b]``;
:func:`scanrnn.unroll_bidirectional` gives the forward direction
``jax.random.split(key)[0]`` and the backward one ``[1]``.

How a cell takes them: dropout and zoneout act on the inputs and the carry
and need nothing from the cell. Recurrent dropout needs to know where the
state enters a recurrent product, which a :class:`scanrnn.GatedCell` says
(its ``recurrent``); another kind of cell raises a ValueError for
``recurrent_dropout > 0``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks

__all__ = [
    "Masks",
    "Regularization",
    "check",
    "check_rate",
    "zoneout_rates",
    "sample_masks",
    "zoneout_blend",
]

Array = jax.Array


class Masks(NamedTuple):
    """The random masks of one sequence (see the module docstring for how they are drawn)."""

    inputs: Optional[Array]  # [I] 0 or 1/(1-dropout); None when dropout == 0
    recurrent: Any  # the carry's structure, each leaf its shape: 0 or 1/(1-rate); None when the rate is 0
    zoneout: Any  # the carry's structure, each leaf [T, *leaf.shape] bool, True = keep; None when all rates are 0


class Regularization(NamedTuple):
    """The rates of :func:`scanrnn.unroll` and the recurrent layers, one bundle (see the module docstring).

    Attributes:
      dropout: inverted dropout of the input features, one mask for the sequence.
      recurrent_dropout: inverted dropout of the state where it enters a
        recurrent product (a :class:`scanrnn.GatedCell`'s ``recurrent``).
      zoneout: the probability that a carry unit keeps its value at a step;
        a float for every carry leaf, or per-leaf rates such as
        ``LSTMCarry(h=0.05, c=0.5)``.

    Each rate is a float in ``[0, 1)``; ``Regularization()`` (all 0) is
    exactly the unregularised run. The masks are drawn from the ``key`` the
    call is given; without one (evaluation) dropout is off and zoneout is
    its expectation.
    """

    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: Any = 0.0

    def is_off(self) -> bool:
        """Whether every rate is 0 (the plain run, with or without a key)."""
        rates = [self.dropout, self.recurrent_dropout, *jax.tree.leaves(self.zoneout)]
        return all(rate == 0 for rate in rates)


def check(regularization) -> Regularization:
    """``regularization`` (``Regularization()`` for ``None``) with every rate checked; a clear error otherwise.

    The structure of a per-leaf ``zoneout`` is checked against the carry
    where the carry is known (:func:`zoneout_rates`).
    """
    if regularization is None:
        return Regularization()
    if not isinstance(regularization, Regularization):
        raise _checks.InputTypeError(
            "regularization must be a scanrnn.Regularization (e.g. Regularization(dropout=0.1)) or None, "
            f"got {type(regularization).__name__}"
        )
    check_rate("dropout", regularization.dropout)
    check_rate("recurrent_dropout", regularization.recurrent_dropout)
    leaves = jax.tree.leaves(regularization.zoneout)  # a float, or per-field rates such as LSTMCarry(h=.05, c=.5)
    if not leaves:
        raise ValueError(
            f"zoneout must be a float in [0, 1) or a carry-structured tuple of them, got {regularization.zoneout!r}"
        )
    for rate in leaves:
        check_rate("zoneout", rate)
    return regularization


def check_rate(name: str, rate) -> float:
    """Return ``rate`` as a Python float if it is a number in ``[0, 1)``; else raise a ValueError (the check every rate option gets)."""
    return _checks.rate(name, rate)


def zoneout_rates(zoneout, carry):
    """The zoneout rate of every carry leaf: a pytree with the carry's structure of Python floats.

    ``zoneout`` is a float (the same rate for every leaf) or a pytree with
    the structure of ``carry`` whose leaves are floats, such as
    ``LSTMCarry(h=0.05, c=0.5)``. Returns ``None`` when every rate is 0.
    """
    carry_tree = jax.tree.structure(carry)
    if isinstance(zoneout, (int, float, np.integer, np.floating)) and not isinstance(zoneout, (bool, np.bool_)):
        rate = check_rate("zoneout", zoneout)
        rates = jax.tree.unflatten(carry_tree, [rate] * carry_tree.num_leaves)
    else:
        given = jax.tree.structure(zoneout)
        if given != carry_tree:
            raise ValueError(
                f"zoneout must be a float or a pytree with the carry's structure {carry_tree} "
                f"(one rate per leaf), got {zoneout!r}"
            )
        rates = jax.tree.map(lambda r: check_rate("zoneout", r), zoneout)
    if all(r == 0.0 for r in jax.tree.leaves(rates)):
        return None
    return rates


def sample_masks(key, xs, carry, *, dropout=0.0, recurrent_dropout=0.0, zoneout=0.0) -> Masks:
    """The masks :func:`scanrnn.unroll` draws for ``key``: one sequence's :class:`Masks`.

    Args:
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``).
      xs: ``[T, I]``, the sequence (only its shape and dtype are read).
      carry: the initial carry, or anything with its structure, shapes and
        dtypes (``jax.eval_shape(cell.initial_carry, params)``).
      dropout, recurrent_dropout: floats in ``[0, 1)``.
      zoneout: a float in ``[0, 1)`` or a pytree of them with the carry's structure.

    Returns:
      :class:`Masks`; a part whose rate is 0 is ``None``.

    >>> from scanrnn import LSTMCarry
    >>> carry = LSTMCarry(jnp.zeros(4), jnp.zeros(4))
    >>> m = sample_masks(jax.random.key(0), jnp.ones((6, 3)), carry, dropout=0.5,
    ...                  zoneout=LSTMCarry(h=0.1, c=0.0))
    >>> m.inputs.shape, m.recurrent, m.zoneout.h.shape
    ((3,), None, (6, 4))
    """
    key = _checks.prng_key("key", key)
    dropout = check_rate("dropout", dropout)
    recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
    rates = zoneout_rates(zoneout, carry)
    if jnp.ndim(xs) != 2:
        raise ValueError(f"xs must have shape [T, input_size] (one sequence), got shape {jnp.shape(xs)}")
    num_steps, input_size = jnp.shape(xs)
    k_inputs, k_recurrent, k_zoneout = jax.random.split(key, 3)
    leaves, tree = jax.tree.flatten(carry)

    sizes = [int(np.prod(jnp.shape(leaf), dtype=int)) for leaf in leaves]
    starts = np.cumsum([0] + sizes)

    def per_leaf(u):  # [..., N] -> one [..., *leaf.shape] slice per leaf, as the carry
        return tree.unflatten(
            [u[..., a:b].reshape(u.shape[:-1] + tuple(jnp.shape(leaf))) for a, b, leaf in zip(starts, starts[1:], leaves)]
        )

    inputs = None
    if dropout > 0:
        dtype = jnp.result_type(xs)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"dropout needs floating-point inputs, got dtype {dtype}")
        inputs = _inverted(jax.random.uniform(k_inputs, (input_size,), jnp.float32), dropout, dtype)

    recurrent = None
    if recurrent_dropout > 0:
        u = per_leaf(jax.random.uniform(k_recurrent, (int(starts[-1]),), jnp.float32))
        recurrent = jax.tree.map(lambda u, leaf: _inverted(u, recurrent_dropout, jnp.result_type(leaf)), u, carry)

    keep = None
    if rates is not None:
        u = per_leaf(jax.random.uniform(k_zoneout, (num_steps, int(starts[-1])), jnp.float32))
        keep = jax.tree.map(lambda u, rate: u < rate, u, rates)
    return Masks(inputs, recurrent, keep)


def _inverted(u: Array, rate: float, dtype) -> Array:
    """An inverted-dropout mask from uniform draws ``u``: ``1 / (1 - rate)`` where ``u >= rate``, else 0."""
    return jnp.where(u >= rate, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))


def zoneout_blend(keep, old, new):
    """Zoneout of a carry: ``old`` where a unit is kept, ``new`` elsewhere, leaf by leaf.

    ``keep`` has the carry's structure; each leaf is either a boolean array
    of the leaf's shape (training: ``True`` keeps the old value) or a Python
    float, the rate (evaluation: the expectation ``rate * old + (1 - rate) * new``;
    a rate of 0 returns ``new`` itself).
    """

    def blend(k, o, n):
        if isinstance(k, float):
            return n if k == 0.0 else k * o + (1.0 - k) * n
        return jnp.where(k, o, n)

    return jax.tree.map(blend, keep, old, new)
