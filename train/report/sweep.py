"""A sweep directory: its runs, the keys it swept, and the grid points that never started.

The swept keys come from the sweep record the sweep callback leaves (`sweep.json`,
train/sweep/callbacks.py), else Hydra's `multirun.yaml`, plus any override whose value differs
between runs (Optuna trials, merged sweeps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from train.report.runs import Run, load_run, read_json, split_override
from train.report.values import sort_key

REPORT_DIR = "report"  # the report's own folder under the sweep directory: not a run


def find_runs(root: Path) -> list[Run]:
    if (root / ".hydra/config.yaml").exists():
        return [load_run(root, root)]
    paths = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml")
                   if REPORT_DIR not in p.relative_to(root).parts[:1])
    return [load_run(p, root) for p in paths]


def sweep_record(root: Path) -> tuple[list[str], Optional[list[list[str]]]]:
    """(swept keys, every point of the grid or None) from the sweep's own records."""
    from train.sweep.callbacks import SWEEP_FILE

    record = read_json(root / SWEEP_FILE)
    if record:
        return list(record.get("swept") or []), record.get("points")
    multirun = root / "multirun.yaml"
    if multirun.exists():  # a sweep launched without the callback: expand what Hydra saved
        try:
            from omegaconf import OmegaConf

            from train.sweep.callbacks import expand_grid, sweep_arguments

            points, swept, exact = expand_grid(sweep_arguments(OmegaConf.load(multirun)))
            return swept, points if exact else None
        except Exception:
            pass
    return [], None


def swept_keys(runs: list[Run], recorded: list[str]) -> list[str]:
    keys = list(recorded)
    for run in runs:  # keys whose values differ between runs (Optuna trials, merged sweeps)
        for key in run.overrides:
            if key not in keys and len({r.overrides.get(key) for r in runs}) > 1:
                keys.append(key)
    return keys


def missing_points(runs: list[Run], points: Optional[list[list[str]]], keys: list[str]) -> list[Run]:
    """Grid points with no run directory: the sweep stopped before launching them."""
    if not points:
        return []
    seen = {tuple(r.value(k) for k in keys) for r in runs}
    out = []
    for point in points:
        overrides = dict(split_override(o) for o in point)
        run = Run(name="", path=None, overrides=overrides, status="not started")
        if tuple(run.value(k) for k in keys) not in seen:
            out.append(run)
    return out


def sort_runs(runs: list[Run], keys: list[str]) -> list[Run]:
    """By the swept values in key order (numbers numerically), then by folder name."""
    return sorted(runs, key=lambda r: ([sort_key(r.value(k)) for k in keys], r.name))


def sorted_values(runs: list[Run], key: str) -> list[str]:
    """The distinct values of one swept key over the runs, in sort order."""
    return sorted({r.value(key) for r in runs}, key=sort_key)
