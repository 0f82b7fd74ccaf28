"""Checkpoints: a training run's whole state through orbax-checkpoint, and params exported as ``.npz``.

Run checkpoints: :func:`scanrnn.train.fit` with ``checkpoint_dir`` saves its
:class:`scanrnn.train.TrainState` (params, optimizer state, step, data
order, dropout key, best params, history) through :class:`RunCheckpoints`,
orbax-checkpoint's ``CheckpointManager``: one step directory per checkpoint,
written to a temporary directory and renamed when complete, the last few
kept and the best by validation. :func:`load_state` reads one back and
:func:`checkpoint_steps` lists them. orbax is imported only when a run
checkpoint is opened.

Exporting params:

:func:`save_params` writes every leaf of a params pytree as one array of an
``.npz`` archive, named by its path in the tree (``[0].w_ih``: layer 0, field
``w_ih``), so the file also opens with plain ``np.load``. :func:`load_params`
reads it back into the structure of a ``like`` tree and checks every name,
shape and dtype against it.

The export is safe to overwrite: the archive is written to a temporary file
in the destination's directory, flushed to disk and renamed over the
destination, so a process killed at any moment leaves either the previous
complete file or the new complete one. bfloat16 (and the other ``ml_dtypes``
types JAX uses) are stored losslessly as their unsigned-integer bits, with the
dtype names recorded in one extra entry, ``__scanrnn_checkpoint__``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from ._run_checkpoints import RunCheckpoints, checkpoint_steps, load_state

__all__ = ["RunCheckpoints", "atomic_file", "checkpoint_steps", "load_params", "load_state", "save_params"]


def save_params(path, params) -> None:
    """Write every leaf of ``params`` to an ``.npz`` file, named by its path in the tree.

    Names look like ``[0].w_ih`` (layer 0, field ``w_ih``). The write is atomic:
    the archive goes to a temporary file ``.<name>.<host>-<pid>.<random>.tmp``
    in the same directory, is flushed and fsynced, and is then renamed over
    the destination; on an error the temporary file is removed. A process
    killed while saving can leave its temporary file behind (nothing can
    remove it then), never a broken destination; the next save to the same
    destination from the same host removes such files once their process has
    ended (on POSIX; files of running processes and all other files are left
    alone). The new file has the permissions of any newly created file
    (``0o666`` less the umask); a destination that is a symlink is written
    through.

    Args:
      path: the file, with or without the ``.npz`` suffix, which is added as
        NumPy does (``"run/params"`` writes ``run/params.npz``). Its directory
        must exist: no directory is created.
      params: a pytree whose leaves are arrays (``jax.Array``, ``np.ndarray`` or
        NumPy scalars) of bool, integer, floating or complex dtype, bfloat16 and
        the other ``ml_dtypes`` types included; at least one leaf.

    Returns:
      None.

    Raises:
      FileNotFoundError: the directory of ``path`` does not exist.
      ValueError: ``path`` is a directory, or ``params`` has no leaves or two
        leaves with the same name.
      TypeError: a leaf is not an array (a Python number, a string, a PRNG
        key array): an ``InputTypeError``, which is also a ``ValueError``.

    Example:
      >>> import os, tempfile
      >>> import jax, scanrnn
      >>> model = scanrnn.serial(scanrnn.recurrent(scanrnn.lstm(3)), scanrnn.dense(1))
      >>> params = model.init(jax.random.key(0), 2)
      >>> with tempfile.TemporaryDirectory() as directory:
      ...     save_params(os.path.join(directory, "params"), params)
      ...     print(os.listdir(directory))
      ['params.npz']
    """
    destination = _npz_path(path)
    directory = os.path.dirname(destination) or os.curdir
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot save params to {destination!r}: directory {directory!r} does not exist "
            "(save_params creates no directories)"
        )
    arrays, dtypes = {}, {}
    for name, leaf in _named_leaves(params, "params"):
        array = np.asarray(leaf)
        dtypes[name] = array.dtype.name
        arrays[name] = array.view(_bits_dtype(array.dtype)) if _is_ml_dtype(array.dtype) else array
    arrays[_METADATA] = np.array(json.dumps({"format": _FORMAT, "version": _VERSION, "dtypes": dtypes}))
    if os.path.islink(destination):
        destination = os.path.realpath(destination)
        directory = os.path.dirname(destination)
    _remove_stale_temporaries(destination)
    with atomic_file(destination) as file:
        np.savez(file, allow_pickle=False, **arrays)


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like``.

    Every leaf of ``like`` must have a saved array of the same name, shape and
    dtype: nothing is cast. A file written before the dtypes were recorded
    (no ``__scanrnn_checkpoint__`` entry) is read as it was then, its dtypes
    being those of its arrays; a bfloat16 (``ml_dtypes``) leaf, which such a
    file holds as raw bytes, is read as ``like``'s dtype of the same size.

    Args:
      path: the file, with or without the ``.npz`` suffix (``"run/params"``
        reads ``run/params.npz``).
      like: a pytree of the structure to fill, whose leaves have ``shape`` and
        ``dtype`` (arrays or ``jax.ShapeDtypeStruct``), e.g. freshly
        initialised params of the same model.

    Returns:
      A pytree of the structure of ``like`` whose leaves are ``jax.Array`` with
      the saved values.

    Raises:
      FileNotFoundError: no file at ``path`` (the message names the path tried).
      ValueError: ``path`` is a directory; the file is empty, truncated, not an
        ``.npz`` archive or not one written by :func:`save_params`; its names
        differ from ``like``'s (the message lists the missing and the
        unexpected ones); a leaf's shape or dtype differs from ``like``'s;
        a float64 or int64 leaf is loaded while ``jax_enable_x64`` is off.
      TypeError: a leaf of ``like`` is not an array (an ``InputTypeError``, which is also a ValueError).

    Example:
      >>> import os, tempfile
      >>> import jax, jax.numpy as jnp, scanrnn
      >>> model = scanrnn.serial(scanrnn.recurrent(scanrnn.lstm(3)), scanrnn.dense(1))
      >>> params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), model.init(jax.random.key(0), 2))
      >>> with tempfile.TemporaryDirectory() as directory:
      ...     save_params(os.path.join(directory, "params.npz"), params)
      ...     restored = load_params(os.path.join(directory, "params"), params)
      >>> jax.tree.leaves(restored)[0].dtype
      dtype(bfloat16)
      >>> all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)))
      True
    """
    source = _npz_path(path)
    if not os.path.exists(source):
        given = os.fspath(path)
        tried = f"{source!r}" if given == source else f"{source!r} (the path {given!r} with .npz added)"
        raise FileNotFoundError(f"no params file at {tried}")
    named = _named_leaves(like, "like")
    arrays, dtypes = _read_npz(source)
    names = [name for name, _ in named]
    missing = sorted(set(names) - set(arrays))
    unexpected = sorted(set(arrays) - set(names))
    if missing or unexpected:
        raise ValueError(
            f"{source!r} does not hold the leaves expected from `like`: missing (expected, not in the file) "
            f"{_listing(missing)}; unexpected (in the file, not expected) {_listing(unexpected)}"
        )
    loaded = []
    for name, leaf in named:
        value, dtype = arrays[name], dtypes.get(name)
        if dtype is None:  # a file without metadata: its arrays' own dtypes
            dtype = leaf.dtype if _is_legacy_ml_dtype(value.dtype, leaf.dtype) else value.dtype
        if value.shape != tuple(leaf.shape):
            raise ValueError(
                f"{source!r}: leaf {_show(name)} was saved with shape {value.shape}, "
                f"`like` expects {tuple(leaf.shape)}"
            )
        if dtype != leaf.dtype:
            raise ValueError(
                f"{source!r}: leaf {_show(name)} was saved as {dtype.name}, `like` has {np.dtype(leaf.dtype).name} "
                "(load_params does not cast; cast `like` or the loaded params explicitly)"
            )
        if jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise ValueError(
                f"{source!r}: leaf {_show(name)} is {dtype.name}, which JAX would store as "
                f"{jax.dtypes.canonicalize_dtype(dtype).name} with jax_enable_x64 off; enable it to load this file"
            )
        loaded.append(jnp.asarray(value.view(dtype) if value.dtype != dtype else value))
    return jax.tree.unflatten(jax.tree.structure(like), loaded)


# The npz export's private helpers.

_METADATA = "__scanrnn_checkpoint__"  # no tree path's name starts with "_" (they start with "[" or ".")
_FORMAT = "scanrnn.checkpoint.save_params"
_VERSION = 1
_NOT_OURS = "not an .npz file written by scanrnn.checkpoint.save_params"
_HOST = format(zlib.crc32(socket.gethostname().encode()), "08x")


def _npz_path(path) -> str:
    """``path`` as a string ending in ``.npz``; a directory is refused."""
    path = os.fsdecode(os.fspath(path))
    npz = path if path.endswith(".npz") else path + ".npz"
    for candidate in dict.fromkeys((path, npz)):
        if os.path.isdir(candidate):
            hint = f" (to write {npz!r}, give that name)" if candidate == path != npz else ""
            raise ValueError(
                f"{candidate!r} is a directory, not a params file: give a file name such as "
                f"{os.path.join(candidate, 'params.npz')!r}{hint}"
            )
    return npz


def _named_leaves(tree, argument: str) -> list:
    """``(name, leaf)`` for every leaf of ``tree``, checking that each is an array and each name is new."""
    named = [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if not named:
        raise ValueError(f"{argument} has no leaves, so there is nothing to save or load: got {tree!r}")
    seen = set()
    for name, leaf in named:
        dtype = getattr(leaf, "dtype", None)
        if not hasattr(leaf, "shape") or dtype is None:
            raise _checks.InputTypeError(
                f"{argument} leaf {_show(name)} must be an array, got {type(leaf).__name__} {leaf!r}"
            )
        if jax.dtypes.issubdtype(dtype, jax.dtypes.extended) or not (
            np.dtype(dtype).kind in "biufc" or _is_ml_dtype(dtype)
        ):
            raise _checks.InputTypeError(
                f"{argument} leaf {_show(name)} must be a numeric array, got dtype {dtype}"
            )
        if name in seen:
            raise ValueError(f"{argument} has two leaves named {_show(name)}; each leaf needs its own name")
        seen.add(name)
    return named


def _is_ml_dtype(dtype) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' (bfloat16, float8_*, int4...), which .npy files cannot name."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return False
    dtype = np.dtype(dtype)
    return dtype.kind == "V" and dtype.names is None and dtype.type.__module__.split(".")[0] == "ml_dtypes"


def _bits_dtype(dtype) -> np.dtype:
    """The unsigned integer dtype of ``dtype``'s size, which holds its bits."""
    return np.dtype(f"u{np.dtype(dtype).itemsize}")


def _is_legacy_ml_dtype(stored, expected) -> bool:
    """Whether a file without metadata holds, as raw bytes (``|V2``), an ml_dtypes leaf of ``expected``'s size."""
    stored = np.dtype(stored)
    return stored.kind == "V" and stored.names is None and _is_ml_dtype(expected) and (
        stored.itemsize == np.dtype(expected).itemsize
    )


def _read_npz(source: str):
    """Every array of the archive at ``source`` and the dtypes its metadata records (``{}`` without it)."""
    with open(source, "rb") as file:
        magic = file.read(4)
    if not magic:
        raise ValueError(f"{source!r} is {_NOT_OURS} (the file is empty)")
    if magic != b"PK\x03\x04":
        raise ValueError(f"{source!r} is {_NOT_OURS} (it is not a zip archive of arrays)")
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        problem = f"it is truncated or damaged: {type(error).__name__}: {error}"
        raise ValueError(f"{source!r} is {_NOT_OURS} ({problem})") from error
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{source!r} is {_NOT_OURS} (its member {name!r} is not a .npy array)")
    if _METADATA not in arrays:
        return arrays, {}
    metadata = arrays.pop(_METADATA)
    try:
        metadata = json.loads(str(metadata[()]))
        version, recorded = metadata["version"], metadata["dtypes"]
        if metadata["format"] != _FORMAT or not isinstance(recorded, dict):
            raise ValueError(f"format {metadata['format']!r}")
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"{source!r} is {_NOT_OURS} (its {_METADATA} entry is not ours: {error})") from error
    if version != _VERSION:
        raise ValueError(f"{source!r} has format version {version!r}; this scanrnn reads version {_VERSION}")
    if set(recorded) != set(arrays):
        raise ValueError(f"{source!r} is {_NOT_OURS} (its metadata names other arrays than it holds)")
    dtypes = {}
    for name, dtype_name in recorded.items():
        try:
            dtype = np.dtype(dtype_name)
        except TypeError as error:
            raise ValueError(f"{source!r}: leaf {_show(name)} has the unknown dtype {dtype_name!r}") from error
        stored = _bits_dtype(dtype) if _is_ml_dtype(dtype) else dtype
        if arrays[name].dtype != stored:
            raise ValueError(
                f"{source!r} is {_NOT_OURS} (leaf {_show(name)} is recorded as {dtype_name} "
                f"but stored as {arrays[name].dtype})"
            )
        dtypes[name] = dtype
    return arrays, dtypes


def _listing(names: list, limit: int = 10) -> str:
    if not names:
        return "none"
    shown = ", ".join(_show(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _show(name: str) -> str:
    return repr(name) if name else "'' (the root)"


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """A file opened for writing whose contents replace ``path`` when the block ends without an error.

    The file is a temporary one beside ``path`` (see :func:`save_params`);
    at the end of the ``with`` block it is flushed, fsynced and renamed over
    ``path``, so that a process killed at any moment leaves the old
    complete file or the new one. On an error it is removed and ``path``
    is left as it was. ``path`` is used as given (no suffix is added).

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     with atomic_file(os.path.join(directory, "notes.txt"), "w") as f:
    ...         _ = f.write("complete")
    ...     open(os.path.join(directory, "notes.txt")).read(), len(os.listdir(directory))
    ('complete', 1)
    """
    path = os.fspath(path)
    temporary, fd = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(os.path.dirname(path) or os.curdir)


def _temporary_prefix(destination: str) -> str:
    """The start of the names of this process's temporary files for ``destination``."""
    return f".{os.path.basename(destination)}.{_HOST}-{os.getpid()}."


def _create_temporary(destination: str):
    """A new file beside ``destination``, opened for writing: ``(path, fd)``.

    Like ``tempfile.mkstemp``, but created with mode ``0o666`` less the umask
    (mkstemp's ``0o600`` would make every export private to its owner).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(
            os.path.dirname(destination), f"{_temporary_prefix(destination)}{secrets.token_hex(4)}.tmp"
        )
        try:
            return path, os.open(path, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {destination!r}")


def _remove_stale_temporaries(destination: str) -> None:
    """Remove temporary files for ``destination`` left by ended processes of this host (POSIX only)."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return
    directory = os.path.dirname(destination) or os.curdir
    pattern = re.compile(re.escape(f".{os.path.basename(destination)}.{_HOST}-") + r"([0-9]+)\.[0-9a-f]{8}\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            match = pattern.fullmatch(entry)
            if match and not _is_running(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename durable where the platform lets a directory be fsynced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
