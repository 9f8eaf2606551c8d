"""The one interface through which everything besides the step plugs into a training run.

A hook is a function of the step number that runs after that step's update has been dispatched,
when its schedule says so:

    hooks.add(log_metrics, every=50, at_last=True)   # steps 50, 100, ... and the last step
    hooks.add(validate, every=500, at_last=False)    # the final validation runs after the loop
    hooks.add(stop_on_signal)                        # every step

Hooks run in the order they were added. Metric logging, validation (evaluators, probe,
checkpoint), periodic checkpoints, signal handling and the reliability tests' fault injection
are all hooks; the loop itself knows none of them. `on_save` callbacks run right after a
checkpoint save has been started (the tests' kill-during-save fault is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Hook:
    fn: Callable[[int], None]
    every: int = 1  # run at steps divisible by this; 0 = never by count
    at_last: Optional[bool] = None  # True: also at the last step; False: never at it; None: by count only

    def due(self, step: int, last_step: int) -> bool:
        if step == last_step and self.at_last is not None:
            return self.at_last
        return self.every > 0 and step % self.every == 0


class Hooks:
    def __init__(self, last_step: int):
        self.last_step = last_step
        self._step: list[Hook] = []
        self._save: list[Callable[[int], None]] = []

    def add(self, fn: Callable[[int], None], every: int = 1, at_last: Optional[bool] = None) -> None:
        self._step.append(Hook(fn, every, at_last))

    def on_save(self, fn: Callable[[int], None]) -> None:
        self._save.append(fn)

    def after_step(self, step: int) -> None:
        for hook in self._step:
            if hook.due(step, self.last_step):
                hook.fn(step)

    def after_save(self, step: int) -> None:
        for fn in self._save:
            fn(step)
