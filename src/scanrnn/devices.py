r"""Data parallelism over several devices: a mesh, batches sharded over it, params replicated.

A train step on ``N`` devices is the one-device step compiled for a
:class:`jax.sharding.Mesh` with one axis, ``"data"``: each device holds
``B / N`` examples of the batch (a :class:`jax.sharding.NamedSharding`
over that axis), every device holds the whole params and optimizer state
(replicated), and the mean of the per-example gradients is an all-reduce
that XLA inserts into the compiled step, so nothing goes through the host
between the forward pass and the update. The numbers are those of one
device up to the order of a sum.

:func:`scanrnn.train.make_train_step` and :func:`scanrnn.train.fit` take
``devices=`` (a device count, a list of devices or a mesh of
:func:`data_mesh`) and do the rest:

- each batch is cut on the host and handed over with
  :func:`shard_batch` (:func:`jax.make_array_from_process_local_data`), so
  a device receives only its part of it, never the whole batch;
- a batch whose size is not a multiple of ``N`` (the last batch of an
  epoch) is **padded** with copies of its first example given weight zero
  (:func:`pad_batch`): the loss is the weighted mean over the real
  examples, so the step equals the one-device step on the unpadded batch.
  A batch objective (``fit(None, ...)``), whose mean scanrnn cannot
  reweight, needs batch sizes that are multiples of ``N`` instead;
- each example's dropout key is ``jax.random.split(step_key, B)[i]`` as on
  one device (with JAX's default ``jax_threefry_partitionable``, the
  first ``B`` keys of a split into more are the split into ``B``), so it
  does not depend on how the batch is cut over the devices.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set
before JAX is imported) gives ``N`` devices to test with. There, with
jaxlib 0.10.2, a loop of asynchronously dispatched steps can abort with
``Termination timeout for 'all reduce' ... only 3 of them arrived``: the
host devices' collectives wait a bounded time for every participant
while earlier steps still occupy the thread pool. The steps here wait
for the previous step's result before the next is dispatched on a CPU
mesh of more than one device (:func:`needs_blocking`), which avoids it;
GPUs run their collectives on streams and do not wait.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _checks

AXIS = "data"

Devices = Union[int, Sequence, Mesh]


def data_mesh(devices: Optional[Devices] = None) -> Mesh:
    """A one-axis mesh ``("data",)`` over ``devices``.

    Args:
      devices: ``None`` (every device JAX sees, of every process), an int
        ``N`` (the first ``N`` of them), a sequence of devices, or a
        :class:`jax.sharding.Mesh` with one axis named ``"data"`` (returned
        as it is).
    """
    if isinstance(devices, Mesh):
        if devices.axis_names != (AXIS,):
            raise ValueError(f"a data-parallel mesh has the one axis ({AXIS!r},), got axes {devices.axis_names}")
        return devices
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        count = _checks.positive_int("devices", int(devices))
        if count > len(available):
            raise ValueError(
                f"devices={count} but JAX sees {len(available)} device(s) ({available[0].platform}); on a CPU, "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} set before JAX is imported gives {count}"
            )
        chosen = available[:count]
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices lists a device twice: {list(devices)}")
        chosen = list(devices)
    else:
        raise _checks.InputTypeError(
            f"devices must be None, a positive int, a non-empty list of jax devices or a Mesh, got {devices!r}"
        )
    return Mesh(np.array(chosen), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays cut along their leading (example) axis over the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays held whole by every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh: Mesh):
    """Every array leaf of ``tree`` placed whole on every device of ``mesh`` (``None`` leaves stay)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def pad_batch(tree, multiple: int):
    """``(padded, weight)``: the leading axis of every leaf grown to a multiple of ``multiple``.

    The rows added are copies of row 0 (real data, so no NaN can come from
    them, an empty sequence's mean loss for one); ``weight`` is a float32
    ``[B_padded]`` of ones for the real rows and zeros for the copies.
    """
    multiple = _checks.positive_int("multiple", multiple)
    leaves = [leaf for leaf in jax.tree.leaves(tree)]
    size = int(np.shape(leaves[0])[0])
    pad = -size % multiple
    weight = np.concatenate([np.ones(size, np.float32), np.zeros(pad, np.float32)])
    if not pad:
        return tree, weight
    padded = jax.tree.map(lambda a: np.concatenate([a, np.repeat(np.asarray(a)[:1], pad, axis=0)]), tree)
    return padded, weight


def shard_batch(tree, mesh: Mesh):
    """Host arrays with a leading example axis as global arrays sharded over ``mesh``'s ``"data"`` axis.

    In one process ``tree`` is the whole batch; with several processes
    (``jax.distributed``) it is this process's part of it, its rows in
    process order, as :func:`jax.make_array_from_process_local_data`
    takes it. Each device receives only its rows. The leading axis of the
    global batch must be a multiple of the mesh's size (see
    :func:`pad_batch`).
    """
    sharding = batch_sharding(mesh)
    count = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        rows = int(np.shape(leaf)[0]) * jax.process_count()
        if rows % count:
            raise ValueError(
                f"a batch of {rows} examples cannot be cut evenly over {count} devices; pad it (pad_batch) or "
                f"give a batch size that is a multiple of {count}"
            )
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def needs_blocking(mesh: Mesh) -> bool:
    """Whether steps on ``mesh`` should wait for the previous one (host devices' all-reduce, see above)."""
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"
