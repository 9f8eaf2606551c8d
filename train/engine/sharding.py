"""Processes and devices: one code path for 1 CPU, N devices and N hosts.

Everything goes through `jax.sharding`, so the same jitted step serves every scale:

- a `Mesh` over every device of every process with two axes, ("data", "fsdp"): without
  `train.fsdp` the fsdp axis has size 1 (plain data parallelism); with it, all devices are on
  the fsdp axis (FSDP / ZeRO-3);
- the batch's rows are split over both axes (every device gets rows/N of them);
- parameters and optimizer state are replicated, or with `train.fsdp=true` each large array is
  split along one of its dimensions over the fsdp axis (a moment next to its parameter);
- the step is jitted with these shardings pinned on both sides (`jit_train_step`) and XLA's
  SPMD partitioner inserts the collectives: a gradient all-reduce for replicated parameters;
  for sharded ones an all-gather before use and a reduce-scatter of the gradients.
Nothing in train/engine/step.py knows how many devices there are.

Several hosts: `initialize_distributed` calls `jax.distributed.initialize()` before anything
touches a device (auto-detected under SLURM with more than one task, or from
train.coordinator_address / num_processes / process_id); each process then reads its own rows
of every global batch (data/packing.py) and `put_batch` assembles the global array from them.
Only process 0 writes files (`is_writer`). The CPU allocator fix is in host_allocator.py.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the batch's rows are split over every device
# FSDP leaves arrays smaller than this replicated: biases and LayerNorm scales are cheap to
# keep everywhere, and sharding them would only add tiny collectives.
FSDP_MIN_SIZE = 2**12


# ---- process set-up (call before anything touches a device) --------------------------------

def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    value = getattr(cfg, name, default) if cfg is not None else default
    return default if value is None else value


def initialize_distributed(cfg: Any = None) -> bool:
    """Join a multi-process JAX job when there is one; returns whether this process is in one.

    `cfg` is a TrainConfig (or anything with its fields). train.coordinator_address (with
    num_processes and process_id) wins; else, under SLURM with more than one task (srun -n N,
    --ntasks-per-node), jax.distributed.initialize() reads SLURM's variables. A single process
    (the usual case, including Hydra's SLURM launcher running one task per sweep job) starts
    nothing. train.distributed=off never joins; =on fails when there is nothing to join.
    """
    mode = _cfg_get(cfg, "distributed", "auto")
    if mode == "off":
        return False
    if jax.distributed.is_initialized():
        return True
    timeout = int(_cfg_get(cfg, "heartbeat_timeout_s", 100))
    address = _cfg_get(cfg, "coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        nprocs = _cfg_get(cfg, "num_processes", os.environ.get("JAX_NUM_PROCESSES"))
        pid = _cfg_get(cfg, "process_id", os.environ.get("JAX_PROCESS_ID"))
        jax.distributed.initialize(coordinator_address=address, num_processes=int(nprocs), process_id=int(pid),
                                   heartbeat_timeout_seconds=timeout)
        return True
    slurm_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if "SLURM_JOB_ID" in os.environ and slurm_tasks > 1:
        jax.distributed.initialize(heartbeat_timeout_seconds=timeout)  # coordinator: the first node
        return True
    if mode == "on":
        raise SystemExit("error: train.distributed=on but there is no job to join: give train.coordinator_address, "
                         "train.num_processes and train.process_id, or start the processes with srun -n N.")
    return False


def is_writer() -> bool:
    """Whether this process writes logs, metrics, figures and summaries (process 0 only)."""
    return jax.process_index() == 0


# ---- mesh and shardings -------------------------------------------------------------------

def make_mesh(cfg: Any = None) -> Mesh:
    """("data", "fsdp") over `cfg.mesh_data` devices (-1: all devices of all processes)."""
    devices = jax.devices()
    n = int(_cfg_get(cfg, "mesh_data", -1))
    n = len(devices) if n in (-1, 0) else n
    if not 1 <= n <= len(devices):
        raise SystemExit(f"error: train.mesh_data={n} but only {len(devices)} devices are visible.")
    if n < len(devices) and jax.process_count() > 1:
        raise SystemExit("error: train.mesh_data must cover every device when running on several processes.")
    fsdp = n if _cfg_get(cfg, "fsdp", False) else 1
    return Mesh(np.asarray(devices[:n]).reshape(n // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over every device; every other axis whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def _fsdp_spec(shape: tuple[int, ...], n: int) -> PartitionSpec:
    """Split the largest dimension that the n devices divide; small arrays stay replicated."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = FSDP_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_sharding(state: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """A pytree of NamedShardings matching `state` (a TrainState, params, ...).

    fsdp=False: everything replicated. fsdp=True: parameters and their optimizer moments
    split along one dimension over the fsdp axis (the same rule for both, so a moment lives
    next to its parameter); scalars and small arrays replicated.
    """
    n = mesh.shape[FSDP_AXIS]

    def one(x: Any) -> NamedSharding:
        shape = tuple(getattr(x, "shape", ()))
        spec = _fsdp_spec(shape, n) if fsdp and shape else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map(one, state)


def jit_train_step(step_fn: Callable, state_shardings: Any, batch_shard: NamedSharding) -> Callable:
    """The one jitted train step for every scale: (state, batch, key) -> state, state donated.

    Shardings are pinned on both sides, so the state keeps its layout from step to step
    (under FSDP too) and host batches given as numpy are split over the devices by jit.
    """
    repl = NamedSharding(batch_shard.mesh, PartitionSpec())
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_shard, repl),
                   out_shardings=state_shardings, donate_argnums=0)


def put_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Host batch -> global jax.Arrays with rows split over the devices.

    One process: `batch` is the whole batch. Several processes: `batch` holds this process's
    rows (data/packing.py gives each process its share of every global batch) and the global
    batch is their concatenation in process order.
    """
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch)


def put_global(tree: Any, shardings: Any) -> Any:
    """Host values that every process holds identically (an initial state, a restored key) ->
    global arrays laid out as `shardings` (one sharding or a matching pytree)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree_util.tree_map(lambda _: shardings, tree)

    def one(x: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Device values -> numpy, on every process: replicated arrays from the local copy, sharded
    ones gathered from all processes."""
    from jax.experimental import multihost_utils

    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any (a stop signal that reached one of them)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))))


def check_divisible(rows: int, mesh: Mesh) -> Optional[str]:
    """An error message when a batch of `rows` (global) rows cannot be split over the mesh."""
    n, procs = mesh.size, jax.process_count()
    if rows % n or rows % procs:
        return (f"{rows} rows per batch do not split over {n} devices in {procs} process(es); adjust "
                f"data.max_tokens (rows = max_tokens // (max_source_len + max_target_len)) or train.mesh_data.")
    return None


def describe(mesh: Mesh) -> str:
    """One line for the start of a run: devices, processes, axes."""
    platform = jax.devices()[0].platform
    axes = " x ".join(f"{name} {size}" for name, size in mesh.shape.items())
    return f"{mesh.size} x {platform} in {jax.process_count()} process(es), mesh {axes}"

