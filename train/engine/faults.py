"""What a run does when something goes wrong: stop signals, pre-flight checks, and fault hooks.

- `StopSignals`: SIGTERM/SIGINT only set a flag; the loop finishes the current step, saves,
  waits for the asynchronous write and exits (143 / 130) naming the step and `resume_command()`.
  A second SIGINT exits at once (the previous checkpoint stays valid: Orbax commits by rename).
- `preflight()` / `check_free_space()` / `OutputDirCheck`: an unwritable or full output folder is
  an error at start-up, not a lost run at the first save. `OutputDirCheck` is a Hydra callback that
  runs before Hydra itself writes `.hydra/` into the run folder (Hydra would fail with a traceback).
- Fault injection for the reliability tests (tests/test_faults.py, tests/test_resume.py). Each is
  an environment variable read once at start-up; unset (always, outside tests) they cost nothing:
  the NaN hook is decided at trace time and the others are an integer compare per step or save.

    ATTENTION_LAB_FAULT_NAN=K[:N],...  steps K..K+N-1 (1-based, as logged) get non-finite gradients
    ATTENTION_LAB_FAULT_KILL_AT_STEP=K SIGKILL this process after step K, once earlier saves are on disk
    ATTENTION_LAB_FAULT_KILL_IN_SAVE=K SIGKILL this process while the async save of step K is writing
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

ENV_NAN = "ATTENTION_LAB_FAULT_NAN"
ENV_KILL_AT_STEP = "ATTENTION_LAB_FAULT_KILL_AT_STEP"
ENV_KILL_IN_SAVE = "ATTENTION_LAB_FAULT_KILL_IN_SAVE"
EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}  # 128 + signal number, what shells report


# ---- stop signals ------------------------------------------------------------------------------


class StopSignals:
    """Turn SIGTERM/SIGINT into a flag (`.received`) for the duration of a `with` block."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for sig in (signal.SIGTERM, signal.SIGINT):
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


# ---- pre-flight ------------------------------------------------------------------------------


def preflight(run_dir: Path, checkpoint_dir: Path) -> None:
    """Create and write-test the run and checkpoint folders; SystemExit with the fix if either fails."""
    for folder in (run_dir, checkpoint_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write_test"
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


# ---- fault injection (tests) ----------------------------------------------------------------------


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def kill_at_step() -> Optional[int]:
    return _env_int(ENV_KILL_AT_STEP)


def kill_in_save() -> Optional[int]:
    return _env_int(ENV_KILL_IN_SAVE)


def kill_self(why: str) -> None:
    """SIGKILL: no handler, no cleanup, no flush of anything not yet on disk (a crash, an OOM kill)."""
    print(f"fault injection: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def nan_steps() -> Optional[tuple[int, ...]]:
    """Steps (1-based, as logged) from ATTENTION_LAB_FAULT_NAN="K[:N][,K[:N]...]" (N steps from K)."""
    value = os.environ.get(ENV_NAN, "").strip()
    if not value:
        return None
    steps: list[int] = []
    for part in value.split(","):
        first, _, count = part.strip().partition(":")
        steps.extend(range(int(first), int(first) + int(count or 1)))
    return tuple(sorted(set(steps)))


def with_injected_nan(train_step: Callable, steps: tuple[int, ...]) -> Callable:
    """Wrap a pure train step so that the given steps see NaN parameters.

    The loss and every gradient are then non-finite, exactly as after an overflow, and the wrapped
    step's own guard decides what happens (skip the update, count it). The poisoned parameters are
    put back afterwards, so only the guard's decision is visible in the returned state.
    """
    import jax
    import jax.numpy as jnp

    bad_steps = jnp.asarray(steps, jnp.int32)

    def step(state: Any, batch: dict, base_key: jax.Array) -> Any:
        bad = jnp.any(state.step + 1 == bad_steps)  # state.step: updates so far, so this is step+1
        poison = lambda p: jnp.where(bad, jnp.nan, p) if jnp.issubdtype(p.dtype, jnp.floating) else p
        new = train_step(state.replace(params=jax.tree_util.tree_map(poison, state.params)), batch, base_key)
        params = jax.tree_util.tree_map(lambda n, o: jnp.where(bad, o, n), new.params, state.params)
        return new.replace(params=params)

    return step


# ---- logs after a resume ----------------------------------------------------------------------


def trim_metrics_log(path: Path, last_step: int) -> int:
    """Drop the lines of metrics.jsonl logged after `last_step` (and a torn last line); return how many.

    A run killed between a log point and its next checkpoint logged steps that the resumed run
    will log again (with the same values: the resume is exact). Dropping them keeps one line per
    (step, metric) in the file. The file is replaced atomically.
    """
    import json

    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1  # torn by a kill mid-write, or not ours
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped
