"""Orbax checkpoints of the whole training state: the latest K plus the best by validation.

Each checkpoint is a Composite of `state` (params, optimizer state, step, RNG key: arrays)
and `meta` (JSON: data-iterator position, model-config hash, wandb run id, metric). Saves
are asynchronous; `wait()` blocks until the last one is on disk (call it before exiting).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the current config."""


def config_hash(defining: dict) -> str:
    """A short hash of the model-defining config; a checkpoint only loads into the same shapes."""
    return hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2, metric_name: str = "val_metric"):
        self.directory = Path(directory).absolute()
        self.metric_name = metric_name
        preserve = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max(keep, 1)),
                policies.BestN(
                    get_metric_fn=lambda m: m[metric_name], n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=True, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, metric: Optional[float] = None) -> None:
        metrics = {self.metric_name: float(metric)} if metric is not None else None
        meta = dict(meta, metric=metric)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def best_step(self) -> Optional[int]:
        """The step with the highest recorded validation metric (else the latest)."""
        best, best_metric = None, None
        for step in self.all_steps():
            try:
                metric = self.read_meta(step).get("metric")
            except Exception:  # unreadable checkpoints are not candidates
                continue
            if metric is not None and (best_metric is None or metric > best_metric):
                best, best_metric = step, metric
        return best if best is not None else self.latest_step()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore `step` into the structure/shardings of `abstract_state`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
