"""Test configuration: strict dtype promotion, rank promotion raises, float64 available.

Silent broadcasting or dtype promotion in the library then fails a test at
once (as in equinox's test suite). float64 is enabled so gradients can be
checked against finite differences; the library keeps float32 by default
because every dtype it creates is explicit.
"""

import os
import shutil
import tempfile

# A compilation cache for this run, shared by the pytest-xdist workers (which
# inherit the environment) and the --quick subprocesses: many tests build the
# same cells at the same shapes, and their programs then compile once. It is
# set before JAX is imported, and removed when the run ends.
if "SCANRNN_TEST_JAX_CACHE" not in os.environ:
    os.environ["SCANRNN_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="scanrnn-tests-jax-cache-")
    os.environ["SCANRNN_TEST_JAX_CACHE_OWNER"] = str(os.getpid())
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SCANRNN_TEST_JAX_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
# The tests run tiny shapes, where compiling is most of the time: XLA's lighter
# pipeline compiles them about a third faster. (The experiments' --quick runs
# are subprocesses and keep the default.)
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir", os.environ["SCANRNN_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """The process that made the cache directory removes it."""
    if os.environ.get("SCANRNN_TEST_JAX_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["SCANRNN_TEST_JAX_CACHE"], ignore_errors=True)


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
