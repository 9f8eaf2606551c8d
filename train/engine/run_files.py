"""Files of a run directory that a kill must never leave half written, and their readers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import jax


def read_summary(run_dir: Path) -> Optional[dict]:
    """summary.json of a finished run; None when absent or torn (a kill while it was written)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "finished" else None


def write_atomically(path: Path, text: str) -> None:
    """Readers (and a rerun after a kill) see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def state_bytes(tree: Any) -> int:
    """Bytes of all arrays in `tree` (what a checkpoint of it holds)."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype")))
