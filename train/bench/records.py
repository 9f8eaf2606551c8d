"""What the benchmark prints: one JSON object per line on stdout (so it can be piped to jq),
progress on stderr, and the device fields every train and decode line carries."""

from __future__ import annotations

import json
import math
import os
import sys


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def rounded(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if isinstance(x, float) and math.isfinite(x) else x


def environment(mesh) -> dict:
    import jax

    dev = jax.devices()[0]
    return {
        "platform": dev.platform, "device_kind": dev.device_kind, "devices": int(mesh.size),
        "processes": jax.process_count(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
    }
