"""The examples in the docstrings and in the README run as written.

They run under JAX's default configuration (float32, standard dtype
promotion), which is what a user has, rather than the suite's float64 and
strict promotion.
"""

import doctest
import importlib
import pathlib
import re
import subprocess
import sys

import jax
import pytest

MODULES = [
    "scanrnn.cells",
    "scanrnn.unroll",
    "scanrnn.layers",
    "scanrnn.data",
    "scanrnn.bptt",
    "scanrnn.conv",
    "scanrnn.classic",
    "scanrnn.minimal",
    "scanrnn.diagnostics",
    "scanrnn.ctc",
    "scanrnn.seq2seq",
    "scanrnn.dates",
    "scanrnn.text",
    "scanrnn.regularization",
]
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def user_config():
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        yield


@pytest.mark.usefixtures("user_config")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_readme_example():
    """The README's example, in a fresh interpreter with JAX's default configuration."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    check = (
        "\nassert len(history['valid_loss']) == 5, history"
        "\nassert history['valid_loss'][-1] < history['valid_loss'][0], history"
        "\nassert ys.shape == (32, 1), ys.shape"
        "\nassert ys.dtype == jnp.float32"
    )
    result = subprocess.run([sys.executable, "-c", blocks[0] + check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
