"""The checks every public function runs on its arguments, on the host, before tracing.

One function per kind of value; each returns the value in a canonical form
(a Python ``int``, ``bool`` or ``float``; an array for lengths and tokens)
or raises with a message that names the argument, what was expected and
what was given. A value of the wrong type raises :class:`InputTypeError`,
which is both a ``TypeError`` (what Python raises for a wrong type) and a
``ValueError`` (what scanrnn raised before it had this module, so ``except
ValueError`` keeps working).

A value that is only known at run time (a length or a token traced by a
user's ``jit``) is checked for its dtype and rank, which tracing knows, and
clamped to its valid range instead of checked: it never indexes out of
bounds, so it never gives a NaN, and a valid value is unchanged.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError`` that is also a ``ValueError``."""


def is_concrete(value) -> bool:
    """Whether ``value`` is known on the host (not a tracer of ``jit``, ``vmap`` or ``grad``)."""
    return not isinstance(value, jax.core.Tracer)


def describe(value) -> str:
    """How a message shows a given value: an array by its dtype and shape, anything else by ``repr``.

    A traced array's ``repr`` names its tracer, not its value; a message
    says "a traced array of dtype float32 and shape ()" instead.
    """
    if isinstance(value, jax.core.Tracer):
        return f"a traced array of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return repr(value)


def _dtype(value):
    """The dtype ``value`` would have as an array, or ``None`` for a value that is not array-like."""
    if isinstance(value, str):
        return None
    try:
        return jnp.result_type(value)
    except (TypeError, ValueError):
        return None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value) -> int:
    """``value`` as an ``int`` >= 1; a float, a bool or a string is refused, even ``2.0``."""
    if not _is_int(value):
        raise InputTypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(name: str, value) -> int:
    """``value`` as an ``int`` >= 0."""
    if not _is_int(value):
        raise InputTypeError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def flag(name: str, value, *, allow_none: bool = False) -> bool:
    """``value`` as a ``bool``: only ``True`` and ``False`` (and ``None`` when allowed), never a truthy string."""
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        allowed = "None, True or False" if allow_none else "True or False"
        raise InputTypeError(f"{name} must be {allowed}, got {value!r}")
    return bool(value)


def rate(name: str, value) -> float:
    """``value`` as a ``float`` in ``[0, 1)``."""
    if not _is_real(value):
        raise InputTypeError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0 <= value < 1:  # NaN fails too
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def positive_number(name: str, value) -> float:
    """``value`` as a finite ``float`` > 0."""
    if not _is_real(value):
        raise InputTypeError(f"{name} must be a positive number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def non_negative_number(name: str, value) -> float:
    """``value`` as a finite ``float`` >= 0."""
    if not _is_real(value):
        raise InputTypeError(f"{name} must be a non-negative number, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def one_of(name: str, value, allowed) -> object:
    """``value`` if it is one of ``allowed`` (compared with ``==`` among hashable values)."""
    try:
        known = value in allowed
    except TypeError:  # unhashable
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def prng_key(name: str, key, *, allow_none: bool = False):
    """A single PRNG key: a typed key (``jax.random.key``) of shape ``()`` or a raw ``uint32 [2]`` (``PRNGKey``).

    An integer seed, ``None`` (unless allowed), a float array or a batch of
    keys is refused with the way to make one.
    """
    if key is None and allow_none:
        return None
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if jnp.shape(key) != ():
            raise ValueError(f"{name} must be one PRNG key of shape (), got a key array of shape {jnp.shape(key)}")
        return key
    if dtype is not None and dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return key  # a raw key of jax.random.PRNGKey
    raise InputTypeError(f"{name} must be a PRNG key such as jax.random.key(0), got {describe(key)}")


def dtype_names(leaves) -> list:
    """The dtypes of arrays (or of their :func:`jax.eval_shape` structs) as strings, for comparing carries."""
    return [str(jnp.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else str(jnp.result_type(leaf)) for leaf in leaves]


def real_dtype(name: str, array) -> None:
    """Refuse a complex (or non-numeric) array where real numbers are expected."""
    dtype = jnp.result_type(array)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
        raise InputTypeError(f"{name} must hold real numbers (floating or integer), got dtype {dtype}")


def finite_real(name: str, value) -> float:
    """``value`` as a finite ``float`` (of either sign)."""
    if not _is_real(value):
        raise InputTypeError(f"{name} must be a finite real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def floating_dtype(name: str, dtype, *, allow_none: bool = False):
    """``dtype`` as a ``numpy.dtype`` if it is a real floating dtype (``jnp.float32``, ``jnp.bfloat16``, ...).

    An integer, complex or boolean dtype, or a value that is no dtype at
    all, is refused; ``None`` too unless allowed (then it is returned).
    """
    if allow_none and dtype is None:
        return None
    try:
        canonical = None if dtype is None else jnp.dtype(dtype)  # jnp.dtype(None) would be float64
    except TypeError:  # not a dtype at all, such as a string that names none
        canonical = None
    if canonical is None or not jnp.issubdtype(canonical, jnp.floating):
        allowed = "None or a floating dtype" if allow_none else "a floating dtype"
        given = f"dtype {canonical}" if canonical is not None else repr(dtype)
        raise InputTypeError(f"{name} must be {allowed} such as jnp.float32 or jnp.bfloat16, got {given}")
    return canonical


def length(name: str, value, upper: int, *, what: str = "the number of steps") -> Optional[jax.Array]:
    """An integer scalar in ``[0, upper]`` as an array, or ``None``: the one length check.

    A concrete value out of range raises. A traced one (under ``jit`` or
    ``vmap``) cannot be checked on the host: it is clamped to ``[0, upper]``,
    so that a wrong length under a user's ``jit`` never indexes past the
    sequence (no NaN), and a valid one is unchanged.
    """
    if value is None:
        return None
    dtype = _dtype(value)
    if isinstance(value, (bool, np.bool_)) or dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise InputTypeError(f"{name} must be an integer scalar, got {describe(value)}")
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar (one sequence; vmap adds the batch), got shape {value.shape}")
    if is_concrete(value):
        if not 0 <= int(value) <= upper:
            raise ValueError(f"{name} must lie in [0, {upper}] ({what}), got {int(value)}")
        return value
    return _clamp(value, upper)


def lengths(name: str, values, batch: int, upper: int) -> Optional[jax.Array]:
    """Integer lengths ``[batch]``, each in ``[0, upper]``; the batched :func:`length`.

    Concrete values out of range raise; traced ones are clamped to ``[0, upper]``.
    """
    if values is None:
        return None
    dtype = _dtype(values)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        given = f"dtype {dtype}" if dtype is not None else describe(values)
        raise InputTypeError(f"{name} must be an integer array, got {given}")
    values = jnp.asarray(values)
    if values.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one per example), got shape {values.shape}")
    if is_concrete(values):
        if values.size:
            host = np.asarray(values)  # on the host: under jit, values.min() would be traced
            lo, hi = int(host.min()), int(host.max())
            if lo < 0 or hi > upper:
                raise ValueError(f"{name} must lie in [0, {upper}], got values in [{lo}, {hi}]")
        return values
    return _clamp(values, upper)


def _clamp(value, upper: int):
    top = min(upper, int(jnp.iinfo(value.dtype).max))
    return jnp.clip(value, 0, top).astype(value.dtype)


def tokens(name: str, value) -> jax.Array:
    """Integer tokens ``[T]`` of one sequence, as an array (their range is :func:`token_range`'s)."""
    value = jnp.asarray(value)
    if value.ndim != 1:
        raise ValueError(
            f"{name} must have shape [T] (one sequence of tokens; vmap adds the batch), got shape {value.shape}"
        )
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise InputTypeError(f"{name} must be integer tokens, got dtype {value.dtype}")
    return value


def token_range(name: str, value, vocab_size: int, length=None) -> jax.Array:
    """Integer tokens (an array) of a vocabulary of ``vocab_size``, in ``[0, vocab_size)``.

    Concrete tokens are checked: those of the first ``length`` steps (all
    without a ``length``, which :func:`length` has checked) must lie in
    ``[0, vocab_size)``, else a ValueError. Traced tokens, and the padding
    past ``length``, are clamped to ``[0, vocab_size - 1]``: an out-of-range
    token under a user's ``jit`` reads the first or the last embedding,
    never a NaN, and a negative one does not index from the end.
    """
    if is_concrete(value) and is_concrete(length):
        checked = np.asarray(value).reshape(-1)
        whole = length is None or int(length) == checked.size
        if length is not None:
            checked = checked[: int(length)]
        if checked.size:
            lo, hi = int(checked.min()), int(checked.max())
            if lo < 0 or hi >= vocab_size:
                where = "" if length is None else f" (its first {int(length)}, the valid ones)"
                raise ValueError(
                    f"{name}{where} must lie in [0, {vocab_size}) (the vocabulary size), got values in [{lo}, {hi}]"
                )
        if whole:
            return value
    return _clamp(value, vocab_size - 1)


def cell(name: str, value):
    """A recurrent cell: anything with callable ``init``, ``initial_carry`` and ``apply``, but not a layer.

    A :class:`scanrnn.Layer` has ``init`` and ``apply`` too (and an
    ``initial_carry``), but its ``apply`` runs a whole sequence; given where
    a cell is expected it raises here, not deep inside ``lax.scan``.
    """
    from .layers import Layer  # scanrnn.layers imports this module

    if isinstance(value, Layer):
        raise InputTypeError(
            f"{name} must be a Cell such as scanrnn.lstm(8) (apply(params, carry, x) for one step), "
            "got a Layer (apply(params, xs) for a whole sequence); pass the cell the layer was built from"
        )
    if not all(callable(getattr(value, field, None)) for field in ("init", "initial_carry", "apply")):
        raise InputTypeError(
            f"{name} must be a Cell such as scanrnn.lstm(8) (with init, initial_carry and apply), "
            f"got {type(value).__name__}"
        )
    return value


def layer(name: str, value):
    """A :class:`scanrnn.Layer`; a cell is refused with the way to make a layer of it."""
    from .layers import Layer  # scanrnn.layers imports this module

    if isinstance(value, Layer):
        return value
    if all(callable(getattr(value, field, None)) for field in ("init", "initial_carry", "apply")):
        raise InputTypeError(f"{name} must be a Layer, got a {type(value).__name__}; wrap a cell in recurrent(...)")
    raise InputTypeError(
        f"{name} must be a Layer (recurrent, bidirectional, dense, ...; wrap a cell in recurrent(...)), "
        f"got {type(value).__name__}"
    )


def carry_like(expected, carry) -> None:
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
    expected_dtypes, given_dtypes = dtype_names(exp_leaves), dtype_names(leaves)
    if given_dtypes != expected_dtypes:
        raise ValueError(
            f"carry must have the dtypes of cell.initial_carry(params), {expected_dtypes}; got {given_dtypes}"
        )


# --------------------------------------------------------------------------
# A cell's params, example and carry (the checks of the built-in cells).


def shape(a) -> tuple:
    return tuple(getattr(a, "shape", ()))


def cell_params(name: str, params, cls, shapes) -> None:
    """A cell's params: a ``cls`` with the shapes of ``shapes(I)``, ``I`` read off ``params.w_ih [G, I]``."""
    if not isinstance(params, cls):
        raise ValueError(f"{name} expects params of type {cls.__name__}, got {type(params).__name__}")
    w_ih = shape(params.w_ih)
    if len(w_ih) != 2:
        raise ValueError(f"{name}: params.w_ih must have rank 2, got shape {w_ih}")
    for field, expected in shapes(w_ih[1]).items():
        given = shape(getattr(params, field))
        if given != expected:
            raise ValueError(f"{name}: params.{field} must have shape {expected}, got {given}")


def example(name: str, x, kernel) -> None:
    """``x`` must be one example ``[I]`` for ``kernel [G, I]``, of its dtype when floating."""
    input_size = kernel.shape[1]
    if shape(x) != (input_size,):
        raise ValueError(
            f"{name}: x must have shape ({input_size},) (one example, input_size from params), "
            f"got {shape(x)}"
        )
    real_dtype(f"{name}: x", x)
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.floating) and dtype != kernel.dtype:
        raise ValueError(
            f"{name}: x must have the params' dtype {kernel.dtype}, got {dtype}; cast one of them"
        )


def cell_carry(name: str, carry, cls, hidden_size, dtype=None) -> None:
    """``carry`` must be a ``cls`` of vectors ``[hidden_size]`` (of ``dtype``, the params', when given).

    ``hidden_size`` is one size for every field, or a dict of each field's
    size (the projected LSTM's ``h [P]`` and ``c [H]``).
    """
    if not isinstance(carry, cls):
        raise ValueError(f"{name} expects a carry of type {cls.__name__}, got {type(carry).__name__}")
    for field, value in zip(cls._fields, carry):
        size = hidden_size[field] if isinstance(hidden_size, dict) else hidden_size
        if shape(value) != (size,):
            raise ValueError(f"{name}: carry.{field} must have shape ({size},), got {shape(value)}")
        carry_dtype(name, field, value, dtype)


def carry_dtype(name: str, field: str, value, dtype) -> None:
    """A carry leaf must have the params' dtype: another would change the scan's carry type, or its precision."""
    if dtype is not None and jnp.result_type(value) != dtype:
        raise ValueError(
            f"{name}: carry.{field} must have the params' dtype {jnp.dtype(dtype)} (as initial_carry gives it), "
            f"got {jnp.result_type(value)}; cast one of them"
        )
