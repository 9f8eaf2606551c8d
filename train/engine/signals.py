"""Stop signals: SIGTERM, SIGINT and SIGUSR2 only set a flag; the run finishes the current step,
saves, waits for the asynchronous write and exits (143 / 130 / 140), naming the step and the
command that resumes. A second SIGINT exits at once (the previous checkpoint stays valid: Orbax
commits by rename).

SIGUSR2 is what SLURM sends ahead of the time limit when asked (`#SBATCH --signal=USR2@120`;
Hydra's submitit launcher asks for it itself, `hydra.launcher.signal_delay_s`). When a handler
was installed before the run (submitit's, which requeues the job), it is called once the
checkpoint is on disk, so the requeued job resumes from it.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Optional

EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130, "SIGUSR2": 140}  # 128 + signal number, what shells report
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopSignals:
    """Turn SIGTERM/SIGINT/SIGUSR2 into a flag (`.received`) for the duration of a `with` block."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":  # Ctrl-C twice: the user means now
            raise KeyboardInterrupt("second SIGINT: exiting without waiting for the checkpoint")
        if self.received is None:
            print(f"\n{name} received: saving a checkpoint after the current step...", file=sys.stderr,
                  flush=True)
        self.received = self.received or name

    def hand_on(self) -> None:
        """After the checkpoint is saved: give SIGUSR2 to the handler that was there before (a
        cluster launcher's requeue), when there was one. It may exit the process itself."""
        previous = self._previous.get(signal.SIGUSR2)
        if self.received == "SIGUSR2" and callable(previous):
            self.__exit__()
            previous(signal.SIGUSR2, None)


def resume_command(run_dir: Path) -> str:
    """The command that continues this run: the job's own overrides plus its run directory."""
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # outside Hydra (tests, notebooks): the run directory is enough to name
        pass
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.run.dir=", "train.resume="))]
    args = ["python", "-m", "train", *overrides, f"hydra.run.dir={Path(run_dir).absolute()}"]
    return " ".join(shlex.quote(a) for a in args)
