r"""Data parallelism over several devices: a mesh, batches sharded over it, params replicated.

A train step on ``N`` devices is the one-device step compiled for a
:class:`jax.sharding.Mesh` with one axis, ``"data"``: each device holds
``B / N`` examples of the batch (a :class:`jax.sharding.NamedSharding`
over that axis), every device holds the whole params and optimizer state
(replicated). Under :func:`jax.shard_map` each device differentiates the
loss of its own examples, a program without communication, and one
``psum`` (an all-reduce inside the compiled step, after the backward pass)
makes the mean gradient, so nothing goes through the host between the
forward pass and the update. The numbers are those of one device up to
the order of a sum. (Written as one program over the whole sharded batch
instead, XLA's sharding propagation all-reduced the weight gradients
inside the backward scans, at every time step.)

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

Several processes (one per host, or several on one host) join one run
with :func:`initialize` (:func:`jax.distributed.initialize`, with the gloo
collectives on CPUs); the mesh then spans every process's devices, each
process hands :func:`shard_batch` only its own rows of each batch, and
:func:`is_primary` (process 0) writes what is written once. :func:`launch`
starts ``N`` such processes on this host, on ``127.0.0.1``; on a cluster
the scheduler starts them and gives each the coordinator's address, the
process count and its id (flags or the ``SCANRNN_*`` variables below).

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

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _checks

__all__ = [
    "AXIS",
    "data_mesh",
    "batch_sharding",
    "replicated",
    "replicate",
    "pad_batch",
    "shard_batch",
    "needs_blocking",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "initialize",
    "is_primary",
    "process_devices",
    "free_port",
    "launch",
]

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
    size = int(np.shape(jax.tree.leaves(tree)[0])[0])
    pad = -size % multiple
    weight = np.concatenate([np.ones(size, np.float32), np.zeros(pad, np.float32)])
    if not pad:
        return tree, weight
    padded = jax.tree.map(lambda a: np.concatenate([a, np.repeat(np.asarray(a)[:1], pad, axis=0)]), tree)
    return padded, weight


def shard_batch(tree, mesh: Mesh):
    """A whole batch of host arrays as global arrays cut over ``mesh``'s ``"data"`` axis.

    Every process gives the same whole batch (each holds the data set, as
    :func:`scanrnn.train.fit` does) and keeps only the rows of its own
    devices, which :func:`jax.make_array_from_process_local_data` places:
    each device receives its ``B / N`` rows and nothing else. ``B`` must be
    a multiple of the mesh's size ``N`` (see :func:`pad_batch`).
    """
    sharding = batch_sharding(mesh)
    count = mesh.devices.size
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError(f"process {jax.process_index()}'s devices must be one contiguous run of the mesh, got {mine}")

    def place(a):
        a = np.asarray(a)
        rows = int(a.shape[0])
        if rows % count:
            raise ValueError(
                f"a batch of {rows} examples cannot be cut evenly over {count} devices; pad it (pad_batch) or "
                f"give a batch size that is a multiple of {count}"
            )
        per_device = rows // count
        local = a[mine[0] * per_device : (mine[-1] + 1) * per_device]
        return jax.make_array_from_process_local_data(sharding, local, a.shape)

    return jax.tree.map(place, tree)


def needs_blocking(mesh: Mesh) -> bool:
    """Whether steps on ``mesh`` should wait for the previous one (host devices' all-reduce, see above)."""
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


# What launch() gives each process, and initialize() reads when not given arguments.
ENV_COORDINATOR = "SCANRNN_COORDINATOR"
ENV_NUM_PROCESSES = "SCANRNN_NUM_PROCESSES"
ENV_PROCESS_ID = "SCANRNN_PROCESS_ID"


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    timeout: int = 120,
) -> None:
    """Join a run of several processes: :func:`jax.distributed.initialize` with CPU collectives.

    Call it before anything else uses JAX. Each argument left out is read
    from ``SCANRNN_COORDINATOR`` (``host:port`` of process 0),
    ``SCANRNN_NUM_PROCESSES`` and ``SCANRNN_PROCESS_ID`` (what
    :func:`launch` sets). CPU devices talk through gloo
    (``jax_cpu_collectives_implementation``); GPUs through NCCL as JAX
    sets them up. ``timeout`` is the seconds to wait for every process to
    arrive.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and ENV_NUM_PROCESSES in os.environ:
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and ENV_PROCESS_ID in os.environ:
        process_id = int(os.environ[ENV_PROCESS_ID])
    if not coordinator_address or num_processes is None or process_id is None:
        raise ValueError(
            "initialize needs the coordinator's address (host:port), the process count and this process's id, "
            f"as arguments or as {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}; got "
            f"{coordinator_address!r}, {num_processes!r}, {process_id!r}"
        )
    num_processes = _checks.positive_int("num_processes", num_processes)
    process_id = _checks.non_negative_int("process_id", process_id)
    if process_id >= num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
        initialization_timeout=timeout,
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes a run's outputs (always, in one process)."""
    return jax.process_index() == 0


def process_devices(per_process: Optional[int] = None) -> list:
    """The first ``per_process`` devices of every process, in process order (all of them by default)."""
    chosen = []
    for p in range(jax.process_count()):
        own = [d for d in jax.devices() if d.process_index == p]
        count = len(own) if per_process is None else _checks.positive_int("per_process", per_process)
        if count > len(own):
            raise ValueError(f"{count} devices per process asked for, but process {p} has {len(own)}")
        chosen.extend(own[:count])
    return chosen


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (the coordinator's, for :func:`launch`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def launch(command: Sequence[str], processes: int, *, port: Optional[int] = None, timeout: Optional[float] = None,
           env: Optional[dict] = None) -> int:
    """Run ``command`` as ``processes`` processes of one run on this host; their worst exit status.

    Each process gets the environment plus ``SCANRNN_COORDINATOR=127.0.0.1:port``
    (``port`` free by default), ``SCANRNN_NUM_PROCESSES`` and its
    ``SCANRNN_PROCESS_ID``, which :func:`initialize` reads. When one exits
    with a failure, or on ``timeout`` seconds, Ctrl-C or SIGTERM, the
    others are stopped (SIGTERM, then SIGKILL after 10 s): no process is
    left behind. Returns 0 when every process exited 0, else the first
    failure's status (124 on the timeout).
    """
    processes = _checks.positive_int("processes", processes)
    if not command:
        raise ValueError("launch needs a command to run")
    port = free_port() if port is None else _checks.positive_int("port", port)
    base = dict(os.environ if env is None else env)
    base.update({ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_NUM_PROCESSES: str(processes)})
    children = []
    for i in range(processes):
        children.append(subprocess.Popen(list(command), env=dict(base, **{ENV_PROCESS_ID: str(i)})))

    def stop_all():
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def interrupted(signum, frame):  # SIGTERM stops the processes as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    start = time.monotonic()
    status = 0
    try:
        while None in [child.poll() for child in children]:  # a list: poll every child, each time
            failed = [child.returncode for child in children if child.returncode not in (None, 0)]
            if failed:
                status = failed[0]
                break
            if timeout is not None and time.monotonic() - start > timeout:
                print(f"launch: the processes ran past {timeout:g} s; stopping them", file=sys.stderr, flush=True)
                status = 124
                break
            time.sleep(0.1)
        else:
            failed = [child.returncode for child in children if child.returncode != 0]
            status = failed[0] if failed else 0
    except KeyboardInterrupt:
        status = 130
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, previous)
    return status
