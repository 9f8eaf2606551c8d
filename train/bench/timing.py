"""The best wall time of a call over several tries: what every timing in the benchmark reports
(a shared VM's slow moments only ever add time)."""

from __future__ import annotations

import time
from typing import Callable


def best_seconds(call: Callable[[], object], reps: int) -> float:
    """The fastest of `reps` runs of `call`, which must block until its result is ready."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best
