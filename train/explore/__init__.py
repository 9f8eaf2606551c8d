"""The attention explorer: `python -m train.explore DIR` writes DIR/explorer.html, one
self-contained page (opened from disk, nothing fetched) to watch every attention head learn.

    probes.py    one run's probe steps (attention/step_N/*.npz): checked, cropped, 8-bit, stats
    collect.py   everything the page shows, for a run or for every run of a sweep (heads.json,
                 validation figures, the swept values as titles)
    page.py      the HTML file: data as JSON, static/ (explorer.css, draw.js, views.js,
                 explorer.js) inlined; write_explorer(run_dir) for training to call
    __main__.py  the command

Reads files only: may import numpy, model.config and data.config (constants), train.analysis
(the statistics), train.errors and train.report's sweep reading; never JAX or the model code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def write_explorer(run_dir: Path, out: Optional[Path] = None, max_mb: float = 10.0) -> Path:
    """Write run_dir/explorer.html (or `out`) for a run or a sweep directory; return its path.

    Raises train.errors.RunError when run_dir holds no usable attention probe. Incomplete probe
    steps are skipped and listed on the page; past max_mb the page keeps fewer steps' maps.
    """
    from train.explore.page import write_explorer as write

    return write(run_dir, out, max_mb)
