"""Process-wide set-up shared by training and the inference commands: quiet library logs and
the persistent XLA compilation cache."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional


def quiet_library_logs(level: int = logging.WARNING) -> None:
    """Hydra sets the root logger to INFO; Orbax, absl and JAX then narrate every save, restore and
    backend probe, and `datasets` draws progress bars over the run's own. The inference commands
    pass logging.ERROR: their stderr is read by people in a pipe."""
    for name in ("absl", "jax._src.xla_bridge", "orbax", "datasets"):
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", module="orbax")
    # Read by `datasets` when it is imported; importing it here would cost seconds of start-up.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def enable_compilation_cache(path: Optional[str]) -> None:
    """A persistent XLA cache shared by runs, sweep jobs and the inference commands: a second
    process with the same shapes skips compiling (train.compilation_cache; None = off)."""
    if not path:
        return
    import jax

    from train.config import resolve_path

    jax.config.update("jax_compilation_cache_dir", str(resolve_path(path)))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
