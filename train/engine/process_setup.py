"""What a process that runs the model sets up before JAX starts: glibc's malloc settings
(host_allocator.py) and XLA's options (xla_flags.py). Training, the benchmark and the profilers
all call it, so that each runs the step the way training does."""

from __future__ import annotations

from train.engine.host_allocator import configure_host_allocator
from train.engine.xla_flags import configure_xla_flags


def configure_process(host_allocator: bool = True) -> None:
    """Apply both, before JAX starts its threads and creates its backend. host_allocator=False
    keeps glibc's defaults (the benchmark's --no-host-allocator-fix, to measure what they cost)."""
    if host_allocator:
        configure_host_allocator()
    configure_xla_flags()
