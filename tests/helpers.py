"""Shared pieces of the test suite: the table of built-in cells, random params
and carries, user-written cells, and a jaxpr walker."""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn
from scanrnn import Cell

# (test id, factory name, options): every built-in cell in every variant.
# The options are also the keyword arguments of the matching function in
# reference.py.
CASES = [
    ("simple_rnn-tanh", "simple_rnn", {"activation": "tanh"}),
    ("simple_rnn-sigmoid", "simple_rnn", {"activation": "sigmoid"}),
    ("simple_rnn-relu", "simple_rnn", {"activation": "relu"}),
    ("lstm", "lstm", {"peephole": False}),
    ("lstm-peephole", "lstm", {"peephole": True}),
    ("gru-reset_after", "gru", {"reset_after": True}),
    ("gru-cho", "gru", {"reset_after": False}),
    ("layer_norm_rnn-tanh", "layer_norm_rnn", {"activation": "tanh"}),
    ("layer_norm_rnn-sigmoid", "layer_norm_rnn", {"activation": "sigmoid"}),
    ("layer_norm_rnn-relu", "layer_norm_rnn", {"activation": "relu"}),
    ("layer_norm_lstm", "layer_norm_lstm", {}),
]
CASE_IDS = [c[0] for c in CASES]

# One variant of each factory (plus the Cho GRU, whose step differs most),
# for the tests where the activation does not matter.
FACTORY_CASES = [c for c in CASES if c[0] in (
    "simple_rnn-tanh", "lstm-peephole", "gru-reset_after", "gru-cho", "layer_norm_rnn-tanh", "layer_norm_lstm"
)]
FACTORY_IDS = [c[0] for c in FACTORY_CASES]


def make_cell(name: str, options: dict, hidden_size: int, **kwargs) -> Cell:
    return getattr(scanrnn, name)(hidden_size, **options, **kwargs)


def hand_or_autodiff(cell) -> str:
    """``"hand"`` for a cell with a hand-written backward pass (a GatedCell; at any hidden size, on any backend), else ``"autodiff"``."""
    return "hand" if isinstance(cell, scanrnn.GatedCell) else "autodiff"




def perturb(params, seed=0, scale=0.5):
    """Add Gaussian noise to every leaf: non-zero biases, gains away from 1, peepholes on.

    The noise comes from NumPy, so tests compile no random-number programs.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda l: l + jnp.asarray(scale * rng.standard_normal(l.shape), l.dtype), params
    )


def random_params(cell, input_size, seed=0, scale=0.5):
    """Params with the structure, shapes and dtypes of ``cell.init``, filled with noise.

    Every leaf is ``scale`` times a standard normal draw; layer-norm gains
    (fields whose name contains ``scale``) are ``1 +`` that. Biases, offsets
    and peepholes are therefore all non-zero. The structure comes from
    :func:`jax.eval_shape` and the numbers from NumPy, so nothing is compiled
    (the default initialisers have their own tests in test_cells.py).
    """
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        value = scale * rng.standard_normal(leaf.shape)
        if "scale" in jax.tree_util.keystr(path):
            value = 1.0 + value
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def random_carry(cell, params, seed=0, scale=0.5):
    """A carry like ``cell.initial_carry(params)`` filled with Gaussian noise."""
    return perturb(cell.initial_carry(params), seed, scale)


def normal(shape, seed=0, dtype=jnp.float64):
    """Standard-normal data from NumPy, as a JAX array of ``dtype``."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def carry_tuple(carry) -> tuple:
    """A built-in carry (RNNCarry or LSTMCarry) as a tuple of float64 NumPy arrays."""
    return tuple(np.asarray(c, np.float64) for c in carry)


# --------------------------------------------------------------------------
# User-written cells: only init, initial_carry and apply (project/step None).


def elman(hidden_size: int, dtype=jnp.float64) -> Cell:
    """A minimal Elman cell written against the contract; params a dict, carry a bare array."""
    H = hidden_size

    def init(key, input_size):
        k1, k2, k3 = jax.random.split(key, 3)
        return {
            "w": 0.5 * jax.random.normal(k1, (H, input_size), dtype),
            "u": 0.5 * jax.random.normal(k2, (H, H), dtype),
            "b": 0.5 * jax.random.normal(k3, (H,), dtype),
        }

    def initial_carry(params):
        return jnp.zeros((H,), params["u"].dtype)

    def apply(params, h, x):
        h = jnp.tanh(params["w"] @ x + params["u"] @ h + params["b"])
        return h, h

    return Cell(init, initial_carry, apply)


def elman_numpy(params, xs, h=None):
    """The Elman cell as a NumPy loop: (final h, ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h = np.zeros(p["u"].shape[0]) if h is None else np.asarray(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        h = np.tanh(p["w"] @ x + p["u"] @ h + p["b"])
        ys.append(h)
    return h, np.stack(ys)


def counting_cell(hidden_size: int, dtype=jnp.float64) -> Cell:
    """A user cell whose carry is a dict with a scalar step counter and whose
    ``y`` is a tuple ``(h, [sum h, sum h^2])``: pytrees everywhere."""
    base = elman(hidden_size, dtype)

    def initial_carry(params):
        return {"h": base.initial_carry(params), "n": jnp.zeros((), params["u"].dtype)}

    def apply(params, carry, x):
        h, _ = base.apply(params, carry["h"], x)
        y = (h, jnp.stack([jnp.sum(h), jnp.sum(h * h)]))
        return {"h": h, "n": carry["n"] + 1.0}, y

    return Cell(base.init, initial_carry, apply)


def counting_numpy(params, xs):
    """The counting cell as a NumPy loop: (final carry dict, (ys_h, ys_stats))."""
    h, ys = elman_numpy(params, xs)
    stats = np.stack([ys.sum(axis=1), (ys * ys).sum(axis=1)], axis=1)
    return {"h": h, "n": float(len(xs))}, (ys, stats)


def tripwire_cell(hidden_size: int = 3) -> Cell:
    """A user cell whose ``apply`` raises AssertionError: a test that gives it bad input and
    expects a ValueError shows that the check ran on the host, before any step was traced."""

    def init(key, input_size):
        return {"w": jnp.asarray(np.zeros((hidden_size, input_size)), jnp.float32)}

    def initial_carry(params):
        return jnp.asarray(np.zeros(hidden_size), params["w"].dtype)

    def apply(params, carry, x):
        raise AssertionError("a step was traced: the bad input should have been refused before")

    return Cell(init, initial_carry, apply)


def tripwire_params(input_size: int, hidden_size: int = 3, directions: int = 0):
    """Params of :func:`tripwire_cell` (stacked on a leading axis of ``directions`` when not 0)."""
    shape = (directions,) * bool(directions) + (hidden_size, input_size)
    return {"w": jnp.asarray(np.zeros(shape), jnp.float32)}


# --------------------------------------------------------------------------
# Jaxpr inspection.


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr


def count_primitive(jaxpr, name: str) -> tuple[int, int]:
    """``(outside, inside)``: equations of primitive ``name`` outside any scan
    and inside a scan body, searching nested jaxprs (jit, custom_jvp, ...)."""
    outside = inside = 0

    def walk(jx, in_scan):
        nonlocal outside, inside
        for eqn in jx.eqns:
            if eqn.primitive.name == name:
                if in_scan:
                    inside += 1
                else:
                    outside += 1
            for sub in _sub_jaxprs(eqn):
                walk(sub, in_scan or eqn.primitive.name == "scan")

    walk(jaxpr.jaxpr if hasattr(jaxpr, "jaxpr") else jaxpr, False)
    return outside, inside


# --------------------------------------------------------------------------
# Reference loops and comparisons.


def loop(cell, params, xs, carry=None):
    """The definition of :func:`scanrnn.unroll`: a Python loop of ``cell.apply``."""
    carry = cell.initial_carry(params) if carry is None else carry
    ys = []
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        ys.append(y)
    return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    """Two pytrees of the same structure, leaf by leaf."""
    a_leaves, a_tree = jax.tree.flatten(actual)
    e_leaves, e_tree = jax.tree.flatten(expected)
    assert a_tree == e_tree, (a_tree, e_tree)
    for a, e in zip(a_leaves, e_leaves):
        assert np.shape(a) == np.shape(e), (np.shape(a), np.shape(e))
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol)


def assert_zero(tree):
    for leaf in jax.tree.leaves(tree):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


def masked_loop(cell, params, xs, n, reverse=False, carry=None):
    """What ``unroll(cell, params, xs, carry, length=n, reverse=reverse)`` should give,
    from a Python loop over the valid part (outputs zero past ``n``)."""
    valid = xs[:n][::-1] if reverse else xs[:n]
    carry = cell.initial_carry(params) if carry is None else carry
    zero = jax.tree.map(jnp.zeros_like, cell.apply(params, carry, xs[0])[1])
    ys = []
    for x in valid:
        carry, y = cell.apply(params, carry, x)
        ys.append(y)
    ys = (ys[::-1] if reverse else ys) + [zero] * (len(xs) - n)
    return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)


def load_script(path, name: str):
    """The experiment or benchmark script at ``path``, imported as module ``name`` (its ``main`` not run).

    Its folder is first on ``sys.path`` while it is imported, as ``python
    <path>`` has it, so that its imports of its neighbours resolve; the path
    is restored afterwards.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(pathlib.Path(path).resolve().parent))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def script_config(x64: bool = False):
    """JAX's defaults, which conftest.py changes for the suite, while a script's ``main`` runs in this process.

    Within it: float32 (``x64=True`` keeps float64 available, for a script
    that enables it itself), standard dtype promotion and implicit rank
    promotion, as ``python <script>`` has them. The compilation options stay
    the suite's: XLA's lighter pipeline (``jax_disable_most_optimizations``,
    as the experiments' ``--quick`` runs have it) and the compilation cache.
    """
    with jax.enable_x64(x64), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield
