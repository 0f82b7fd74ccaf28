"""Test configuration: strict dtype promotion, rank promotion raises, float64 available.

Silent broadcasting or dtype promotion in the library then fails a test at
once (as in equinox's test suite). float64 is enabled so gradients can be
checked against finite differences; the library keeps float32 by default
because every dtype it creates is explicit.
"""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
# The tests run tiny shapes, where compiling is most of the time: XLA's lighter
# pipeline compiles them about a third faster. (The experiments' --quick runs
# are subprocesses and keep the default.)
jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def key():
    """A fixed PRNG key; split it for independent draws."""
    return jax.random.key(0)


@pytest.fixture
def standard_dtype_promotion():
    """JAX's default promotion, for code outside scanrnn that strict promotion rejects.

    optax's Adam computes ``decay ** count`` with an int32 count.
    """
    with jax.numpy_dtype_promotion("standard"):
        yield
