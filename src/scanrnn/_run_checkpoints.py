"""The checkpoints of a training run (:class:`RunCheckpoints`), through orbax-checkpoint.

Re-exported by :mod:`scanrnn.checkpoint`; orbax is imported when a run
checkpoint is first opened, so ``import scanrnn`` stays light.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

def _json_safe(value):
    """``value`` with every non-finite float as ``None``: strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _from_json(history: dict) -> dict:
    return {k: [float("nan") if v is None else v for v in values] for k, values in history.items()}


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


class RunCheckpoints:
    """The checkpoints of one training run in a directory, through orbax-checkpoint.

    Each checkpoint is a step directory holding the arrays of a
    :class:`scanrnn.train.TrainState` (orbax's standard pytree format) and
    its history as JSON. orbax writes a checkpoint into a temporary
    directory and renames it when it is complete, so a process killed while
    saving leaves the earlier checkpoints intact and no partial one that
    could be loaded. Saves run in the background; :meth:`close` waits for
    the last. The last ``keep`` checkpoints are kept, and the one with the
    best ``monitor`` value among the end-of-epoch checkpoints.

    :func:`scanrnn.train.fit` uses it through ``checkpoint_dir``; to read a
    run's checkpoints yourself use :func:`load_state` and :func:`checkpoint_steps`.
    """

    def __init__(self, directory, *, keep: int = 3, monitor: Optional[str] = None, mode: str = "min"):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(os.fspath(directory))
        self.monitor = monitor
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        if monitor is not None:
            # BestN keeps the n last after sorting; descending order puts the smallest last.
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[monitor], reverse=mode == "min", n=1, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,
            enable_async_checkpointing=True,
        )
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        """The step of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> list:
        return list(self._manager.all_steps())

    def save(self, state, metrics: Optional[dict] = None, *, when_busy: str = "wait") -> bool:
        """Save ``state`` as the checkpoint of step ``state.step``; whether a save was started.

        Nothing is saved when that step is saved already. ``metrics`` (the
        epoch's validation scores) rank the checkpoint for keeping the best.
        While the previous save is still being written, ``when_busy="wait"``
        waits for it, and ``"skip"`` saves nothing: a skipped save costs the
        run nothing but a later resume point (every checkpoint holds the
        best params so far), while waiting stalls training on the previous
        save's background work.
        """
        step = int(state.step)
        if step in self._manager.all_steps():
            return False
        if when_busy == "skip" and self._manager.is_saving_in_progress():
            return False
        arrays = _saveable(state._replace(history=None))
        record = {"history": _json_safe(state.history), "format": "scanrnn.train.TrainState"}
        metrics = None if metrics is None or self.monitor is None else _json_safe(metrics)
        if metrics is not None and metrics.get(self.monitor) is None:
            metrics = None  # a non-finite value never ranks as the best
        ocp = self._ocp
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), record=ocp.args.JsonSave(record)),
            metrics=metrics,
        )
        return True

    def restore(self, like, step: Optional[int] = None):
        """The TrainState saved at ``step`` (the latest by default), with the structure of ``like``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        ocp = self._ocp
        template = _saveable(like._replace(history=None))
        abstract = jax.tree.map(_abstract, template)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore())
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"the checkpoint of step {step} in {self.directory} does not fit this run (another model, "
                f"optimizer or validation set?): {error}"
            ) from error
        state = _unsaveable(restored.state, like._replace(history=None))
        return state._replace(history=_from_json(restored.record["history"]))

    def close(self) -> None:
        """Wait for the saves in flight, then release the directory."""
        self._manager.wait_until_finished()
        self._manager.close()


def _saveable(state):
    """PRNG keys as their raw data: orbax saves arrays of numbers."""
    return jax.tree.map(lambda a: jax.random.key_data(a) if _is_key(a) else a, state)


def _unsaveable(restored, like):
    """The keys of ``like`` back from their raw data, NumPy leaves as NumPy."""

    def back(saved, template):
        if _is_key(template):
            return jax.random.wrap_key_data(jnp.asarray(saved), impl=jax.random.key_impl(template))
        if isinstance(template, np.ndarray):
            return np.asarray(saved, template.dtype)
        return saved

    return jax.tree.map(back, restored, like)


def _abstract(leaf):
    """What orbax restores a leaf as: NumPy stays NumPy (int64 counters stay exact), the rest jax.Arrays.

    A jax.Array comes back placed as the template's is (replicated over a
    mesh's devices, in a data-parallel run of several processes).
    """
    if isinstance(leaf, np.ndarray):
        return leaf
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf), sharding=sharding)


def _existing(directory) -> str:
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {directory!r}")
    return directory


def checkpoint_steps(directory) -> list:
    """The steps of the complete checkpoints in ``directory``, oldest first."""
    checkpoints = RunCheckpoints(_existing(directory))
    try:
        return checkpoints.all_steps()
    finally:
        checkpoints.close()


def load_state(directory, like, step: Optional[int] = None):
    """The :class:`scanrnn.train.TrainState` saved by ``fit(..., checkpoint_dir=directory)``.

    ``like`` is a state of the same run's structure, such as
    ``init_state(params, optimizer, clip_norm=...)``; ``step`` defaults to
    the latest checkpoint.
    """
    checkpoints = RunCheckpoints(_existing(directory))
    try:
        return checkpoints.restore(like, step)
    finally:
        checkpoints.close()
