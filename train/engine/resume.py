"""Resuming a run from its own directory: the latest checkpoint that restores, and a metrics log
that holds each step once.

`restore_latest(...)` is what a run with checkpoints does at start-up (train.resume=true, the
default): it refuses a different model config before reading any array, and resumes state, key
and data position exactly. `trim_metrics_log(...)` then drops what the interrupted run logged
after that checkpoint, since the resumed run logs those steps again with the same values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

from train.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    config_diff,
    fits_model,
)


class Resumed(NamedTuple):
    step: int
    tree: Any  # {"state": TrainState, "key": PRNGKey}, restored into the given structure
    meta: dict


def restore_latest(checkpointer: Checkpointer, target: Any, defining: dict, run_dir: Path,
                   resume: bool) -> Optional[Resumed]:
    """The latest checkpoint in run_dir restored into `target`, or None when there is none.

    SystemExit with the fix when train.resume=false would overwrite checkpoints, when they were
    trained with another model config, or when none of them restores.
    """
    latest = checkpointer.latest_step()
    if latest is None:
        return None
    if not resume:
        raise SystemExit(
            f"error: {run_dir} already holds checkpoints (latest step {latest}) and "
            f"train.resume=false: refusing to overwrite them. Choose a new hydra.run.dir, or drop "
            f"train.resume=false to continue this run."
        )

    def check_model(meta: dict) -> None:  # before any array is read: shapes would not fit anyway
        if fits_model(meta, defining):
            return
        diffs = config_diff(meta.get("model_defining") or {}, defining)
        raise SystemExit(
            f"error: the checkpoints in {checkpointer.directory} were trained with another model "
            f"config; these model-defining keys differ:\n  " + "\n  ".join(diffs or ["(unknown: no "
            "model_defining in the checkpoint)"]) + f"\nResume with the run's config "
            f"({run_dir / '.hydra' / 'overrides.yaml'}), or start a new run in another hydra.run.dir."
        )

    try:
        restored = checkpointer.restore_latest(target, check_model)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    return Resumed(restored.step, restored.state, restored.meta)


def trim_metrics_log(path: Path, last_step: int) -> int:
    """Drop the lines of metrics.jsonl logged after `last_step` (and a torn last line); return how many.

    A run killed between a log point and its next checkpoint logged steps that the resumed run
    will log again (with the same values: the resume is exact). Dropping them keeps one line per
    (step, metric) in the file. The file is replaced atomically.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1  # torn by a kill mid-write, or not ours
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped
