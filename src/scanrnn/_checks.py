"""The checks every public function runs on its arguments, on the host, before tracing.

One function per kind of value; each returns the value in a canonical form
(a Python ``int``, ``bool`` or ``float``) or raises with a message that
names the argument, what was expected and what was given. A value of the
wrong type raises :class:`InputTypeError`, which is both a ``TypeError``
(what Python raises for a wrong type) and a ``ValueError`` (what scanrnn
raised before it had this module, so ``except ValueError`` keeps working).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError`` that is also a ``ValueError``."""


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
    given = f"an array of dtype {dtype} and shape {jnp.shape(key)}" if dtype is not None else repr(key)
    raise InputTypeError(f"{name} must be a PRNG key such as jax.random.key(0), got {given}")


def real_dtype(name: str, array) -> None:
    """Refuse a complex (or non-numeric) array where real numbers are expected."""
    dtype = jnp.result_type(array)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
        raise InputTypeError(f"{name} must hold real numbers (floating or integer), got dtype {dtype}")
