"""Pre-flight checks: an unwritable or full output folder is an error at start-up, not a lost run
at the first save. `OutputDirCheck` is a Hydra callback (configs/config.yaml) that runs before
Hydra itself writes `.hydra/` into the run folder (Hydra would fail there with a traceback).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional


def preflight(run_dir: Path, checkpoint_dir: Path) -> None:
    """Create and write-test the run and checkpoint folders; SystemExit with the fix if either fails."""
    for folder in (run_dir, checkpoint_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write_test_{os.getpid()}"  # processes of one run share the folder
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())  # a full disk may only say so when the data is flushed
            probe.unlink()
        except OSError as e:
            raise SystemExit(
                f"error: cannot write to {folder}: {e.strerror or e}. Nothing was trained. Free space, "
                f"fix its permissions, or choose another folder with hydra.run.dir=DIR."
            ) from None


def check_free_space(folder: Path, checkpoint_bytes: int, keep: int) -> None:
    """Error if one checkpoint does not fit on the disk; warn if the kept ones (+1 being written) don't."""
    free = shutil.disk_usage(folder).free
    one = int(checkpoint_bytes * 1.1) + (1 << 20)  # arrays plus Orbax's metadata files
    if free < one:
        raise SystemExit(
            f"error: {folder} has {free / 2**20:.1f} MiB free but one checkpoint needs about "
            f"{one / 2**20:.1f} MiB. Nothing was trained. Free space or choose another hydra.run.dir."
        )
    if free < one * (keep + 2):  # latest K + best + the one in flight
        print(f"warning: {folder} has {free / 2**20:.1f} MiB free; keeping {keep} checkpoints plus the best "
              f"needs about {one * (keep + 2) / 2**20:.1f} MiB.", file=sys.stderr)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(target: Path) -> Optional[str]:
    """Why `target` (which may not exist yet) cannot be created and written, or None if it can."""
    existing = _nearest_existing(Path(target))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:  # os.access misses read-only mounts and ACLs: really write
        probe = existing / f".write_test_{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        return f"{existing} is not writable ({e.strerror or e})"
    return None


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency; keep this module importable anyway
    _HydraCallback = object


class OutputDirCheck(_HydraCallback):
    """Hydra callback: refuse to start when the run (or sweep) folder cannot be written.

    Enabled in configs/config.yaml under `hydra.callbacks`. It runs before Hydra creates the folder
    and writes `.hydra/config.yaml` there, which would otherwise fail with a Python traceback.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(folder: str, key: str) -> None:
        reason = check_output_dir(Path(str(folder)))
        if reason:
            print(f"error: cannot write the run folder {folder}: {reason}. Nothing was trained. "
                  f"Choose another with {key}=DIR.", file=sys.stderr)
            raise SystemExit(2)
