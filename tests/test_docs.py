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
    "scanrnn.teaching_bptt",
    "scanrnn.conv",
    "scanrnn.classic",
    "scanrnn.linear_cells",
    "scanrnn.diagnostics",
    "scanrnn.ctc",
    "scanrnn.seq2seq",
    "scanrnn.data.dates",
    "scanrnn.data.text",
    "scanrnn.regularization",
    "scanrnn.train",
    "scanrnn.language_model",
    "scanrnn.execution",
    "scanrnn.checkpoint",
    "scanrnn.state_space",
    "scanrnn.griffin",
    "scanrnn.mamba",
    "scanrnn.data.memory",
]
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def user_config():
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        yield


@pytest.mark.slow
@pytest.mark.usefixtures("user_config")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_every_module_with_examples_is_listed():
    """A module whose docstrings have ``>>>`` examples is in MODULES, so its examples run."""
    root = pathlib.Path(importlib.import_module("scanrnn").__file__).parent
    with_examples = {
        "scanrnn." + ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in root.rglob("*.py")
        if ">>> " in path.read_text()
    }
    assert with_examples - {"scanrnn.__init__"} <= set(MODULES), sorted(with_examples - set(MODULES))


@pytest.mark.slow
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


def readme_block(containing: str) -> str:
    """The README's Python block that contains ``containing``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if containing in b]
    assert len(blocks) == 1, f"one README block must contain {containing!r}"
    return blocks[0]


@pytest.mark.slow
def test_readme_truncated_bptt_example():
    """The truncated-BPTT snippet runs as written and lowers the loss over the stream."""
    check = (
        "\nimport numpy as np"
        "\nassert carry[0].h.shape == (8, 32), carry[0].h.shape"
        "\nassert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) < np.log(vocab.size), metrics"
    )
    result = subprocess.run([sys.executable, "-c", readme_block("make_tbptt_step") + check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_readme_long_run_example(tmp_path):
    """The long-run example trains with checkpoints; run again, it resumes from them and gives the same params.

    Both runs are in one fresh interpreter (the block executed twice): the
    second finds the first's checkpoints on disk and resumes from them.
    """
    check = (
        "\nimport hashlib, numpy as np"
        "\nassert 1 <= len(history['valid_loss']) <= 4, history"
        "\ndigests.append(hashlib.sha256(b''.join(np.asarray(a).tobytes() for a in jax.tree.leaves(params))).hexdigest())"
    )
    code = "digests = []\n" + (readme_block("checkpoint_dir") + check + "\n") * 2 + "print(*digests)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.split()[-2:]
    assert first == second
    assert (tmp_path / "runs" / "long-run-example").is_dir()
