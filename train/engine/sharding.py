"""Process set-up and device placement: one train step for 1 device, N devices or N hosts.

Data parallelism goes through `jax.sharding` only, so the same jitted step serves every
scale: a 1-D `Mesh` over the devices with axis "data"; the batch is split along its rows
over that axis; parameters and optimizer state are replicated (plain data parallelism) or,
with `train.fsdp=true`, each large array is split along one of its dimensions over the
same axis (FSDP / ZeRO-3 style). XLA's SPMD partitioner then inserts the collectives
itself: a gradient all-reduce for replicated parameters; for sharded ones an all-gather
before use and a reduce-scatter of the gradients, the optimizer update running on the
local shard only. Nothing in train/engine/step.py knows how many devices there are.

Several hosts: `initialize_distributed` calls `jax.distributed.initialize()` before
anything touches a device (auto-detected under SLURM with more than one task, or from
explicit coordinator settings); each process then feeds its own rows of the global batch
(`put_batch` -> `jax.make_array_from_process_local_data`) and the mesh spans the devices
of all processes.

The CPU speed fix for XLA's host allocations is in train/engine/host_allocator.py.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# FSDP leaves arrays smaller than this replicated: biases and LayerNorm scales are cheap to
# keep everywhere, and sharding them would only add tiny collectives.
FSDP_MIN_SIZE = 2**12


# ---- process set-up (call before anything touches a device) --------------------------------

def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default) if cfg is not None else default


def initialize_distributed(cfg: Any = None) -> bool:
    """Join a multi-process JAX job when there is one; returns whether it did.

    Explicit settings win: `cfg.coordinator_address` ("host:port"), `cfg.num_processes`,
    `cfg.process_id` (fields of TrainConfig when present), else the environment variables
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. Otherwise, under SLURM
    with more than one task (srun -n N / --ntasks-per-node), jax.distributed.initialize()
    reads everything from SLURM's variables. A single process (the usual case, including
    Hydra's SLURM launcher running one task per sweep job) initializes nothing.
    `cfg.distributed` = "auto" (default) | "off" | "on" (fail when nothing is detected).
    """
    mode = _cfg_get(cfg, "distributed", "auto") or "auto"
    if mode == "off":
        return False
    if jax.distributed.is_initialized():
        return True
    address = _cfg_get(cfg, "coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    nprocs = _cfg_get(cfg, "num_processes") or os.environ.get("JAX_NUM_PROCESSES")
    pid = _cfg_get(cfg, "process_id")
    pid = pid if pid is not None else os.environ.get("JAX_PROCESS_ID")
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(nprocs) if nprocs is not None else None,
            process_id=int(pid) if pid is not None else None,
        )
        return True
    slurm_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if "SLURM_JOB_ID" in os.environ and slurm_tasks > 1:
        jax.distributed.initialize()  # SlurmCluster: coordinator = first node, ids from SLURM_PROCID
        return True
    if mode == "on":
        raise RuntimeError(
            "train.distributed=on but no coordinator was given (train.coordinator_address or "
            "JAX_COORDINATOR_ADDRESS) and this is not a multi-task SLURM step."
        )
    return False


# ---- mesh and shardings -------------------------------------------------------------------

def make_mesh(cfg: Any = None) -> Mesh:
    """1-D mesh ("data",) over `cfg.mesh_data` devices (-1 or 0: all devices of all processes)."""
    devices = jax.devices()
    n = _cfg_get(cfg, "mesh_data", -1)
    n = len(devices) if n in (-1, 0, None) else int(n)
    if not 1 <= n <= len(devices):
        raise ValueError(f"train.mesh_data={n} but only {len(devices)} devices are visible.")
    if n < len(devices) and jax.process_count() > 1:
        raise ValueError("train.mesh_data must cover all devices when running on several processes.")
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (axis 0) split over the data axis; every other axis whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def _fsdp_spec(shape: tuple[int, ...], n: int) -> PartitionSpec:
    """Split the largest dimension that the n devices divide; small arrays stay replicated."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_sharding(state: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """A pytree of NamedShardings matching `state` (a TrainState, params, ...).

    fsdp=False: everything replicated. fsdp=True: parameters and their optimizer moments
    split along one dimension over the data axis (the same rule for both, so a moment lives
    next to its parameter); scalars and small arrays replicated.
    """
    n = mesh.shape[DATA_AXIS]

    def one(x: Any) -> NamedSharding:
        shape = tuple(getattr(x, "shape", ()))
        spec = _fsdp_spec(shape, n) if fsdp and shape else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map(one, state)


def jit_train_step(step_fn: Callable, state_shardings: Any, batch_shard: NamedSharding) -> Callable:
    """The one jitted train step for every scale: (state, batch, key) -> state, state donated.

    Shardings are pinned on both sides, so the state keeps its layout from step to step
    (under FSDP too) and host batches given as numpy are split over the data axis by jit.
    """
    repl = NamedSharding(batch_shard.mesh, PartitionSpec())
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_shard, repl),
                   out_shardings=state_shardings, donate_argnums=0)


def put_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Host batch -> global jax.Arrays split over the data axis.

    One process: `batch` is the whole batch. Several processes: `batch` holds this process's
    rows (data/packing.py gives each process its own batches) and the global batch is their
    concatenation in process order.
    """
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch)


def check_divisible(rows: int, mesh: Mesh) -> Optional[str]:
    """An error message when a batch of `rows` (global) rows cannot be split over the mesh."""
    n = mesh.shape[DATA_AXIS]
    if rows % n:
        return (f"{rows} rows per batch do not split over {n} devices; adjust data.max_tokens "
                f"(rows = max_tokens // (max_source_len + max_target_len)) or train.mesh_data.")
    return None
