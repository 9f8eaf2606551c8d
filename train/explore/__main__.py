"""`python -m train.explore DIR [out=PATH] [max_mb=10]`: the attention explorer of a run or a sweep.

    python -m train.explore runs/2026-01-01_12-00-00_default
    python -m train.explore multirun/2026-01-01_12-00-00_head_sweep out=/tmp/heads.html

DIR is a run directory written by `python -m train` (with train.probe_examples > 0, the
default) or a sweep's folder (`python -m train -m ...`). Writes DIR/explorer.html (or PATH): one
file that opens from disk in a browser, with a training-step slider, the selected head's map and
bertviz-style head view, every layer x head at that step, the head statistics over training,
heads/heads.json's importance, pruning rank and alignment F1 when present, and for a sweep the
same head side by side across the runs. Incomplete probe steps are skipped with a warning.
A page that would pass max_mb megabytes embeds the maps of fewer steps (evenly spaced; the
statistics keep every step) and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

USAGE = "usage: python -m train.explore DIR [out=PATH] [max_mb=10]"


def parse(argv: list[str]) -> tuple[Path, Optional[Path], float]:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        sys.exit(0)
    dirs = [a for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(options) - {"out", "max_mb"})
    if unknown or len(dirs) != 1 or any(a.startswith("-") for a in dirs):
        what = f"unknown option {unknown[0]}=" if unknown else "give exactly one directory"
        raise SystemExit(f"error: {what}\n{USAGE}")
    try:
        max_mb = float(options.get("max_mb", 10))
    except ValueError:
        max_mb = -1.0
    if not max_mb > 0:
        raise SystemExit(f"error: max_mb={options['max_mb']} must be a positive number of megabytes\n{USAGE}")
    out = options.get("out")
    return Path(dirs[0]), Path(out) if out else None, max_mb


def main(argv: Optional[list[str]] = None) -> int:
    try:
        root, out, max_mb = parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    from train.errors import RunError
    from train.explore.page import write_page

    try:
        path, data = write_page(root, out, max_mb)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in data["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    runs = data["runs"]
    steps = sorted({s for r in runs for s in r["stat_steps"]})
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB; {len(runs)} run(s), probe steps {steps}; weights "
          f"{data['raw_bytes'] / 1e6:.2f} MB as float16, stored as 8 bits cropped to real tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
