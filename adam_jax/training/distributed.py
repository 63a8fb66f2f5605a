"""Training on a mesh: data parallel and FSDP shardings, many processes, a watchdog.

JAX's own SPMD runtime does the work: a ``jax.sharding.Mesh`` with a ``"data"``
axis, ``NamedSharding`` on every array, ``jax.jit`` propagating shardings through
the step, ``jax.distributed`` joining processes. adam_jax's ``init`` builds each
moment like its param, so the optimizer state lands where the params are and
``update`` keeps it there. A training loop adopts this module in four moves::

    mesh = make_mesh()                                 # every device, axis "data"
    shardings = fsdp_shardings(state, mesh)            # or replicated_shardings(...)
    state = place(state, shardings)                    # params and optimizer state
    batch = shard_batch(batch, mesh)                   # rows split over "data"

then the jitted step runs unchanged (with ``gather`` around the params where the
model uses them, for FSDP) and its outputs keep the inputs' shardings.

Two layouts (N devices on the ``"data"`` axis):

- data parallel: params and optimizer state replicated (every device holds all
  of them), the batch split over ``"data"``; gradients are all-reduced.
- FSDP / ZeRO-3: every array of params and optimizer state split over
  ``"data"`` along its largest axis that N divides (replicated when none does),
  so each device holds 1/N of them; ``gather`` all-gathers a param where it is
  used, and its gradient comes back reduce-scattered to the param's sharding.

References:
  Rajbhandari et al., `ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models <https://arxiv.org/abs/1910.02054>`_, SC 2020.
"""

import math
import os
import sys
import threading
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"  # the mesh axis the batch (and, in FSDP, every array) is split over


# --- meshes and shardings -------------------------------------------------------------
def make_mesh(
    num_devices: int | None = None,
    *,
    local: bool = False,
    axis_type: AxisType = AxisType.Explicit,
) -> Mesh:
    """A one-axis mesh named ``"data"`` over the first ``num_devices`` devices.

    Explicit axes (the default) make every array's sharding part of its type:
    ``jax.jit`` then propagates shardings through the step without
    ``out_shardings``, and the optimizer state built by ``tx.init`` under jit
    follows the params.

    Args:
      num_devices: how many devices, from 1 to the number available; default
        all of them.
      local: use this process's devices (``jax.local_devices()``) instead of
        every process's (``jax.devices()``, the global mesh of a multi-process
        run).
      axis_type: ``jax.sharding.AxisType.Explicit`` or ``Auto``.

    Returns:
      A ``jax.sharding.Mesh`` of shape ``(num_devices,)`` with axis ``"data"``.
    """
    devices = jax.local_devices() if local else jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
        which = "local devices" if local else "devices"
        raise ValueError(
            f"num_devices must be an int in [1, {len(devices)}] (the {which} available), "
            f"got {num_devices!r}"
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,), axis_types=(axis_type,))


def fsdp_spec(shape: Sequence[int], num_shards: int) -> PartitionSpec:
    """The FSDP partition of one array: its largest axis that ``num_shards`` divides.

    Ties go to the first such axis. Scalars and arrays with no divisible axis
    are replicated (``P()``): padding an uneven axis would change the array's
    shape in a checkpoint and its arithmetic.

    Args:
      shape: the array's shape.
      num_shards: the size of the ``"data"`` axis, >= 1.

    Returns:
      ``P(..., "data", ...)`` with ``"data"`` at the chosen axis, or ``P()``.
    """
    if num_shards == 1:
        return PartitionSpec()
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % num_shards == 0]
    if not divisible:
        return PartitionSpec()
    axis = -max(divisible)[1]
    return PartitionSpec(*([None] * axis), DATA_AXIS)


def fsdp_shardings(tree, mesh: Mesh):
    """FSDP shardings for every array of ``tree`` (params, optimizer state, a TrainState).

    Each leaf gets :func:`fsdp_spec` of its own shape, so a moment gets its
    param's sharding and the step count is replicated. Leaves may be arrays or
    ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``).
    """
    size = mesh.shape[DATA_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size)), tree)


def replicated_shardings(tree, mesh: Mesh):
    """Data parallel shardings: every array of ``tree`` whole on every device."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over ``"data"``, the rest of each array whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def opt_state_shardings(tx, params, param_shardings, mesh: Mesh):
    """The shardings of ``tx.init(params)``: each param's for its moments, replicated else.

    The ``out_shardings`` for ``jax.jit(tx.init)`` on a mesh with Auto axes,
    where jit otherwise picks its own output layout (Explicit axes need none).
    Works for any optax transformation, by ``optax.tree_map_params``.

    Args:
      tx: an ``optax.GradientTransformation`` (or anything with ``init``).
      params: the params, or their ``jax.eval_shape``.
      param_shardings: a sharding per param, same tree as ``params``.
      mesh: where non-param leaves (the step count) are replicated.
    """
    import optax

    abstract = jax.eval_shape(tx.init, params)
    return optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract,
        param_shardings,
        transform_non_params=lambda _: NamedSharding(mesh, PartitionSpec()),
    )


# --- placing arrays ---------------------------------------------------------------------
def place(tree, shardings):
    """Puts every array of ``tree`` on its sharding; also across processes.

    Host values (NumPy arrays, or jax arrays one process can read whole) must
    be the same on every process; each device receives its slice. Arrays
    spread over several processes are resharded by ``jax.device_put``.

    Args:
      tree: a pytree of arrays.
      shardings: a ``jax.sharding.Sharding`` per leaf, same tree.

    Returns:
      The tree of global ``jax.Array``\\ s, each with its sharding.
    """

    def put(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def shard_batch(local_batch, mesh: Mesh):
    """This process's rows of a batch, as one global array split over ``"data"``.

    With one process, ``local_batch`` is the whole batch. With P processes,
    each passes its own consecutive 1/P of the rows (process 0 the first): the
    global batch has P times as many rows.
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def gather(tree):
    """Every array of ``tree`` replicated on the current mesh (FSDP's all-gather).

    Call it on the params inside the jitted loss, under ``jax.set_mesh(mesh)``
    with Explicit axes: the forward pass sees whole params, and their gradients
    flow back reduce-scattered to the params' own shardings. A no-op for
    params already replicated (data parallel).
    """
    return jax.tree.map(lambda x: jax.sharding.reshard(x, PartitionSpec()), tree)


def checkpoint_target(abstract_tree, shardings):
    """Restore targets for orbax: ``jax.ShapeDtypeStruct`` with a sharding each.

    ``abstract_tree`` comes from ``jax.eval_shape`` (no memory allocated), the
    shardings from the mesh the run resumes on, which may differ from the one
    it was saved on: ``StandardRestore(checkpoint_target(...))`` reads each
    device's slice straight into place.
    """
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
        abstract_tree,
        shardings,
    )


def bytes_per_device(tree) -> dict:
    """Bytes of ``tree``'s arrays held by each of this process's devices.

    Counted from each array's ``addressable_shards``, so a replicated array
    counts once per device and a sharded one by its slice.

    Returns:
      ``{device_id: bytes}`` for every local device holding part of ``tree``.
    """
    held: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device.id] = held.get(shard.device.id, 0) + shard.data.nbytes
    return held


# --- many processes ------------------------------------------------------------------------
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_devices_per_process: int | None = None,
    heartbeat_timeout_s: int = 100,
    initialization_timeout_s: int = 300,
) -> tuple[int, int]:
    """Joins this process to a multi-process JAX run; call before any other JAX call.

    With ``coordinator_address``, ``num_processes`` and ``process_id`` (or the
    environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID`` that ``scripts/launch.py`` sets), the run is described
    explicitly. With none of them, ``jax.distributed.initialize`` detects SLURM
    (``srun``), Open MPI (``mpirun``) and Cloud TPU environments itself.

    On CPU, cross-process collectives go through gloo
    (``jax_cpu_collectives_implementation``, the default of jax 0.10).

    A process that dies, or stops answering (hung machine, network
    partition), sends no more heartbeats: after ``heartbeat_timeout_s`` JAX's
    coordination service declares it dead and terminates every other process
    (SIGABRT). If it was process 0, which hosts the service, the others notice
    the lost connection at once. A process alive but stuck in Python keeps
    sending heartbeats from a C++ thread and is not detected: its peers wait
    in the next collective, which is what :class:`Watchdog` bounds.

    Args:
      coordinator_address: ``host:port`` of process 0, which runs the service.
      num_processes: how many processes, >= 1.
      process_id: this process's index, in [0, num_processes).
      cpu_devices_per_process: on CPU, how many devices each process exposes
        (``jax_num_cpu_devices``); None leaves it to JAX (1).
      heartbeat_timeout_s: seconds without heartbeats before a process counts
        as dead, >= 1.
      initialization_timeout_s: seconds to wait for every process to connect,
        >= 1.

    Returns:
      ``(jax.process_index(), jax.process_count())``.
    """
    environment = {
        "num_processes": ("JAX_NUM_PROCESSES", num_processes),
        "process_id": ("JAX_PROCESS_ID", process_id),
    }
    given = {}
    for name, (variable, value) in environment.items():
        if value is None and os.environ.get(variable):
            try:
                value = int(os.environ[variable])
            except ValueError:
                raise ValueError(
                    f"{variable} must be an integer, got {os.environ[variable]!r}"
                ) from None
        given[name] = value
    num_processes, process_id = given["num_processes"], given["process_id"]
    if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
        raise ValueError(f"num_processes must be an int >= 1, got {num_processes!r}")
    if process_id is not None and num_processes is not None:
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be an int in [0, {num_processes}), got {process_id!r}"
            )
    for name, value in (
        ("heartbeat_timeout_s", heartbeat_timeout_s),
        ("initialization_timeout_s", initialization_timeout_s),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (seconds), got {value!r}")
    if cpu_devices_per_process is not None:
        if not isinstance(cpu_devices_per_process, int) or cpu_devices_per_process < 1:
            raise ValueError(
                f"cpu_devices_per_process must be an int >= 1, got {cpu_devices_per_process!r}"
            )
        jax.config.update("jax_num_cpu_devices", cpu_devices_per_process)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        initialization_timeout=initialization_timeout_s,
    )
    return jax.process_index(), jax.process_count()


class Watchdog:
    """Ends this process with one clear error when no step finishes in ``timeout_s``.

    JAX detects a dead or silent process (see :func:`initialize`), but not one
    that is alive and stuck: the others then wait in a collective forever. Call
    ``beat(step)`` after each finished step (or chunk of steps, once its
    results reached the host); if ``timeout_s`` pass without one, the watchdog
    writes one line to stderr and exits the process with ``exit_code``, which a
    launcher (``scripts/launch.py``) or scheduler sees.

    Use as a context manager::

        with Watchdog(timeout_s=600) as watchdog:
            for step in ...:
                ...
                watchdog.beat(step)

    Args:
      timeout_s: seconds allowed between beats (and before the first), > 0;
        allow for compilation and checkpointing.
      exit_code: the process's exit status when it fires, in [1, 255].
    """

    def __init__(self, timeout_s: float, *, exit_code: int = 70):
        if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if not isinstance(exit_code, int) or not 1 <= exit_code <= 255:
            raise ValueError(f"exit_code must be an int in [1, 255], got {exit_code!r}")
        self.timeout_s = timeout_s
        self.exit_code = exit_code
        self._last = time.monotonic()
        self._step = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="adam_jax-watchdog", daemon=True)

    def beat(self, step=None) -> None:
        """Records that a step (``step``, for the error message) finished now."""
        self._step = step
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                where = (
                    "before the first step" if self._step is None else f"after step {self._step}"
                )
                sys.stderr.write(
                    f"adam_jax watchdog: process {jax.process_index()} finished no step for "
                    f"{idle:.0f} s (timeout_s={self.timeout_s:g}) {where}; another process "
                    f"has probably died or hung; exiting with status {self.exit_code}\n"
                )
                sys.stderr.flush()
                os._exit(self.exit_code)

    def __enter__(self) -> "Watchdog":
        self._last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
