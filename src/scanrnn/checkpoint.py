"""Saving params to ``.npz`` and loading them back into the same structure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _names(params) -> list:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [jax.tree_util.keystr(path) for path, _ in leaves]


def save_params(path, params) -> None:
    """Write every leaf of ``params`` to an ``.npz`` file, named by its path in the tree.

    Names look like ``[0].w_ih`` (layer 0, field ``w_ih``).
    """
    leaves = jax.tree.leaves(params)
    np.savez(path, **{name: np.asarray(leaf) for name, leaf in zip(_names(params), leaves)})


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like``.

    Raises a ValueError when the file's names or shapes differ from ``like``'s.
    """
    names = _names(like)
    leaves, treedef = jax.tree.flatten(like)
    with np.load(path) as data:
        if sorted(data.files) != sorted(names):
            raise ValueError(f"saved params have leaves {sorted(data.files)}, expected {sorted(names)}")
        loaded = []
        for name, leaf in zip(names, leaves):
            value = data[name]
            if value.shape != jnp.shape(leaf):
                raise ValueError(f"saved {name} has shape {value.shape}, expected {jnp.shape(leaf)}")
            loaded.append(jnp.asarray(value, dtype=jnp.result_type(leaf)))
    return jax.tree.unflatten(treedef, loaded)
