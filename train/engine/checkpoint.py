"""Orbax checkpoints of the whole training state: the latest K plus the best by validation.

Each checkpoint is a Composite of `state` ({"state": TrainState, "key": PRNG key}: params,
optimizer state, step, on-device metric sums, non-finite counters, RNG key) and `meta` (JSON:
the data-iterator position of what was consumed, the model-defining config and its hash, the
wandb run id, the validation metric). Saves are asynchronous: `save()` returns once the arrays
are copied off the device and Orbax writes them on a background thread into
`<step>.orbax-checkpoint-tmp`, renamed to `<step>` only when complete. A process killed mid-save
therefore leaves a tmp folder that `all_steps()` ignores and the next writer deletes
(`cleanup_tmp_directories`); the previous checkpoint is untouched. `wait()` blocks until the last
save is on disk (call it before exiting).

`restore_latest()` is what resuming uses: the newest checkpoint that restores, warning about (and
moving aside) newer ones that are truncated or have missing files.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from train.errors import first_line

CORRUPT_DIR = "checkpoints.corrupt"  # beside checkpoints/: damaged steps moved aside on resume


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the current config."""


def config_hash(defining: dict) -> str:
    """A short hash of the model-defining config; a checkpoint only loads into the same shapes."""
    return hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(saved: dict, current: dict, prefix: str = "", now: str = "now") -> list[str]:
    """'{prefix}key: checkpoint X, {now} Y' for each model-defining key that differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{prefix}{k}: checkpoint {saved.get(k, '<absent>')!r}, {now} {current.get(k, '<absent>')!r}"
            for k in keys if saved.get(k) != current.get(k)]


def model_defining(model_cfg: Any, vocab_size: int) -> dict:
    """What fixes the parameter shapes: the model's defining fields plus the vocabulary size."""
    return model_cfg.defining_fields() | {"vocab_size": vocab_size}


def fits_model(meta: dict, defining: dict) -> bool:
    """Whether a checkpoint (its metadata) was saved by a model with these defining fields."""
    return meta.get("model_hash") == config_hash(defining)


@dataclass
class Restored:
    step: int
    state: Any  # the tree given to save(), restored into the abstract structure
    meta: dict
    skipped: list[int]  # newer steps that could not be restored (moved aside)


class Checkpointer:
    """A CheckpointManager with this project's layout and retention.

    writer=True (the training loop) also deletes tmp folders left by a killed save when opened.
    Readers (evaluate, translate) leave them alone: a run may be writing one right now.
    """

    def __init__(self, directory: Path, keep: int = 2, metric_name: str = "val_metric", writer: bool = False):
        self.directory = Path(directory).absolute()
        self.metric_name = metric_name
        preserve = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max(keep, 1)),
                # larger is better (BLEU, ROUGE); saves without a metric are kept by LatestN only
                policies.BestN(
                    get_metric_fn=lambda m: m[metric_name], n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=True, create=writer,
            cleanup_tmp_directories=writer,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, metric: Optional[float] = None) -> bool:
        """Start an asynchronous save; False (nothing done) when `step` is already saved."""
        if step in self.manager.all_steps():
            return False
        if metric is not None and not math.isfinite(metric):
            metric = None  # a NaN would poison the best-N ranking
        metrics = {self.metric_name: float(metric)} if metric is not None else None
        meta = dict(meta, metric=metric)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:  # also raises what went wrong in the previous save's background write
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:
            raise CheckpointError(
                f"writing a checkpoint to {self.directory} failed ({first_line(e)}). Checkpoints already "
                f"on disk are intact; free space or fix the folder, then resume."
            ) from e
        return True

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
            # Ties go to the later step: with equal scores, the longer-trained model.
            if metric is not None and (best_metric is None or metric >= best_metric):
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

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Read only the model parameters of checkpoint `step` (orbax partial restore).

        The checkpoint holds {"state": TrainState, "key": PRNGKey} in its `state` item (see
        save()); asking for state.params alone skips the optimizer moments (2x the
        parameters) and needs no optimizer to build the target. strict=True: a shape that differs
        from the model this code builds is an error, not a silent pad/truncate.
        """
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                        abstract_params)
        restore_args = jax.tree_util.tree_map(
            lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype, strict=True),
            abstract_params)
        args = ocp.args.PyTreeRestore(item={"state": {"params": target}},
                                      restore_args={"state": {"params": restore_args}}, partial_restore=True)
        out = self.manager.restore(step, args=ocp.args.Composite(state=args))
        params = out["state"]["state"]["params"]

        # A partial restore neither fails on parameters the checkpoint lacks (they come back as
        # ShapeDtypeStructs) nor on ones the model lacks (skipped): check both ways by name.
        missing = [path for path, leaf in _named_leaves(params).items() if not isinstance(leaf, jax.Array)]
        saved = self._saved_param_names(step)
        extra = sorted(saved - set(_named_leaves(abstract_params))) if saved is not None else []
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"the model has {len(missing)} parameters the checkpoint lacks, e.g. {'.'.join(missing[0])}")
            if extra:
                parts.append(f"the checkpoint has {len(extra)} parameters the model lacks, e.g. {'.'.join(extra[0])}")
            raise ValueError("; ".join(parts))
        return params

    def _saved_param_names(self, step: int) -> Optional[set[tuple[str, ...]]]:
        """Names of the parameters stored in checkpoint `step`; None when orbax cannot say."""
        try:  # known to the manager once an item has been restored with PyTreeRestore (above)
            tree = self.manager.item_metadata(step)["state"]
            tree = getattr(tree, "tree", tree)
            return set(_named_leaves(tree["state"]["params"]))
        except Exception:
            return None

    def restore_latest(self, abstract_state: Any, check_meta: Callable[[dict], None]) -> Restored:
        """The newest checkpoint that restores completely.

        `check_meta(meta)` runs before any array is read and may raise (a config that does not
        fit is not damage: it stops the search). A checkpoint whose metadata or arrays cannot be
        read (truncated, missing files) is reported and the next older one tried; when one works,
        the damaged newer ones are moved to ../checkpoints.corrupt/ so that training can save
        those step numbers again. When none works, nothing is moved and CheckpointError says so.
        """
        steps = sorted(self.all_steps(), reverse=True)
        bad: list[tuple[int, str]] = []
        for step in steps:
            try:
                meta = self.read_meta(step)
                if not isinstance(meta, dict):
                    raise ValueError("metadata is not a JSON object")
            except Exception as e:
                bad.append((step, f"metadata unreadable: {first_line(e)}"))
                self._warn(step, bad[-1][1], steps)
                continue
            check_meta(meta)
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as e:
                bad.append((step, f"arrays unreadable: {first_line(e)}"))
                self._warn(step, bad[-1][1], steps)
                continue
            skipped = [s for s, _ in bad]
            if skipped:
                self._set_aside(skipped)
            return Restored(step, state, meta, skipped)
        detail = "; ".join(f"step {s}: {why}" for s, why in bad)
        raise CheckpointError(
            f"no valid checkpoint in {self.directory} ({detail}). Nothing was changed there. Start a new "
            f"run with train.resume=false and a new hydra.run.dir=DIR (or move the damaged checkpoints "
            f"away to start this run over)."
        )

    def _warn(self, step: int, why: str, steps: list[int]) -> None:
        older = [s for s in steps if s < step]
        then = f"trying step {older[0]}" if older else "no older checkpoint to try"
        print(f"warning: checkpoint step {step} in {self.directory} is damaged ({why}); {then}.",
              file=sys.stderr, flush=True)

    def _set_aside(self, steps: list[int]) -> None:
        if jax.process_index() != 0:  # one process moves; the others only reload
            self.manager.reload()
            return
        target_root = self.directory.parent / CORRUPT_DIR
        target_root.mkdir(parents=True, exist_ok=True)
        for step in steps:
            src = self.directory / str(step)
            dst = target_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.move(str(src), str(dst))
            print(f"warning: moved the damaged checkpoint of step {step} to {dst}", file=sys.stderr, flush=True)
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _named_leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    """Leaves by their path as strings (orbax metadata spells list indices as strings)."""
    def name(k: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(name(k) for k in path): leaf for path, leaf in flat}
