"""The progress bar: real rates and a believable time left.

Steps are dispatched asynchronously, so counting them as they are dispatched would show the
dispatch rate (bursts of steps in no time, then a long wait at each log point). The bar moves
only at log points, where the host has waited for the device, by the steps finished since the
last one; the rate is measured over that interval, and the time left is the remaining steps at
that rate plus the remaining validations at the last validation's duration.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from tqdm.auto import tqdm

_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Progress:
    def __init__(self, start_step: int, max_steps: int, eval_every: int, enabled: bool):
        self.start_step, self.max_steps, self.eval_every, self.enabled = start_step, max_steps, eval_every, enabled
        self.bar: Optional[tqdm] = None  # drawn from open() on, when the loop starts
        self.steps_per_s: Optional[float] = None
        self.validation_s = 0.0  # the last validation's duration

    def open(self) -> None:
        self.bar = tqdm(total=self.max_steps, initial=self.start_step, disable=not self.enabled,
                        dynamic_ncols=True, desc="train", file=sys.stdout, bar_format=_FORMAT)

    def log_point(self, step: int, steps: int, elapsed_s: float, loss: float, tokens_per_s: float) -> None:
        """`steps` finished in `elapsed_s` of training time (validations and compiling excluded)."""
        if steps > 0 and elapsed_s > 0:
            self.steps_per_s = steps / elapsed_s
        self.bar.update(step - self.bar.n)
        parts = {"loss": f"{loss:.3f}", "tok/s": f"{tokens_per_s:.0f}"}
        if self.steps_per_s:
            parts["steps/s"] = f"{self.steps_per_s:.2f}"
            parts["left"] = _clock(self.time_left(step))
        self.bar.set_postfix(parts, refresh=True)

    def time_left(self, step: int) -> float:
        remaining = self.max_steps - step
        validations = remaining // self.eval_every + 1  # the periodic ones still to come, and the final
        return remaining / self.steps_per_s + validations * self.validation_s

    def validated(self, seconds: float) -> None:
        self.validation_s = seconds

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def now() -> float:
    return time.perf_counter()
