"""One run directory of a sweep as a `Run`: its config, overrides, metrics, summary and status.

A run is a folder holding `.hydra/config.yaml`. Its status comes from `summary.json` (written
at the end of training) or the job record the sweep callback leaves (train/sweep/callbacks.py):
"failed" when the job raised, "unfinished" when neither says it ended (killed, preempted or
still running), "not started" for a grid point with no folder at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class Run:
    name: str  # path relative to the multirun directory; "" for a point that never started
    path: Optional[Path]
    overrides: dict[str, str]
    config: dict = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)  # config groups: model -> tiny, ...
    summary: Optional[dict] = None
    heads: Optional[dict] = None  # heads/heads.json, written by `python -m train.heads run_dir=...`
    metrics: list[dict] = field(default_factory=list)
    status: str = "unfinished"
    error: Optional[str] = None

    def value(self, key: str) -> str:
        """The run's value of a swept key, as the command line spelled it."""
        if key in self.overrides:
            return self.overrides[key]
        bare = key.lstrip("+~")
        if bare in self.choices:
            return str(self.choices[bare])
        node: Any = self.config
        for part in bare.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return "" if node is None or isinstance(node, (dict, list)) else str(node)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def split_override(item: str) -> tuple[str, str]:
    """"model.num_heads=4" -> ("model.num_heads", "4")."""
    key, _, value = item.partition("=")
    return key, value


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file must not stop the report
        return None


def read_metrics(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the line a killed job was writing
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def load_run(path: Path, root: Path) -> Run:
    from train.sweep.callbacks import STATUS_FILE

    overrides = dict(split_override(o) for o in (read_yaml(path / ".hydra/overrides.yaml") or []))
    hydra_cfg = read_yaml(path / ".hydra/hydra.yaml") or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    run = Run(
        name=str(path.relative_to(root)) if path != root else path.name,
        path=path,
        overrides=overrides,
        config=read_yaml(path / ".hydra/config.yaml") or {},
        choices={k: v for k, v in choices.items() if not k.startswith("hydra/")},
        summary=read_json(path / "summary.json"),
        heads=read_json(path / "heads" / "heads.json"),
        metrics=read_metrics(path / "metrics.jsonl"),
    )
    job = read_json(path / STATUS_FILE) or {}
    if run.summary is not None:
        run.status = str(run.summary.get("status", "finished"))
    elif job.get("status") == "failed":
        run.status, run.error = "failed", job.get("error")
    else:
        run.status = "unfinished"  # killed, preempted, or still running
    return run
