"""Where a run's wall time goes: seconds per phase, for summary.json's `wall_breakdown_s`.

Phases are timed where they run (data preparation, model set-up, the first step's compile,
each evaluator, the attention probe, checkpoint saves, the test split, the explorer page);
`train_steps` is the rest of the loop: the steps themselves, waiting for batches, and the
metric logging's host syncs. The steps run asynchronously, so a phase that starts by reading
device values (a validation, a save) may include the tail of steps dispatched before it; the
metric hook, which syncs at every log point and runs first, keeps that tail to a few steps.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator


class WallTime:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    def breakdown(self, loop_s: float) -> dict[str, float]:
        """Every timed phase, `train_steps` (the loop's `loop_s`, final validation included, less
        the phases timed inside it) and `total` since set-up began."""
        inside = sum(s for name, s in self.seconds.items() if name not in OUTSIDE_LOOP)
        out = {name: round(s, 1) for name, s in sorted(self.seconds.items())}
        out["train_steps"] = round(max(loop_s - inside, 0.0), 1)
        out["total"] = round(time.perf_counter() - self.start, 1)
        return out


OUTSIDE_LOOP = ("data", "setup", "test", "explorer")  # timed before the loop's clock starts or after it stops
