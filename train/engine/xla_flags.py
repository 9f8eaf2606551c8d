"""XLA options the project's training processes start with, added to XLA_FLAGS before JAX creates
its backend (XLA reads the variable once, then)."""

from __future__ import annotations

import os

# Copy insertion with region-based live-range analysis (off by default on the CPU). Without it,
# XLA:CPU copies every weight matrix's AdamW moments at every step: the step's donated moment
# buffers are updated in place, and the fusion that updates the parameter, which still reads the
# old moments, is not ordered before it. The analysis orders it and drops the copies; values are
# unchanged (docs/performance.md, "Where the step's time goes").
CPU_FLAGS = {"xla_cpu_copy_insertion_use_region_analysis": "true"}


def configure_xla_flags() -> list[str]:
    """Add CPU_FLAGS to XLA_FLAGS, each unless XLA_FLAGS already names it (a user's own setting
    wins, `=false` included); returns the flags added."""
    current = os.environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in CPU_FLAGS.items() if f"--{name}=" not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
