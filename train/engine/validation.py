"""The validation hook: evaluators, the attention probe and a checkpoint ranked by the result.

Every `train.eval_every` steps (not at the last step: the final validation runs after the loop,
on the whole split): run each evaluator (train/evals/base.py) on the current parameters, log
their scalars in one line, let the probe draw and log attention maps, then save a checkpoint
ranked by the evaluators' selection score. The time it takes is left out of the training rate.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from train.engine.progress import Progress, now
from train.engine.wall_time import WallTime
from train.evals.base import SELECTION, Evaluator


class Validation:
    def __init__(self, evaluators: Sequence[Evaluator], probe: Any, loggers: Any,
                 params: Callable[[], Any], save: Callable[[Optional[float]], None], progress: Progress,
                 exclude_time: Callable[[float], None], wall: Optional[WallTime] = None):
        self.evaluators, self.probe, self.loggers = list(evaluators), probe, loggers
        self.params, self.save, self.progress, self.exclude_time = params, save, progress, exclude_time
        self.wall = wall or WallTime()

    def run(self, step: int, final: bool = False, record: bool = True) -> dict[str, float]:
        """Evaluate, log, probe and save; return the scalars.

        record=False: evaluate only. A run killed after its final checkpoint had already logged,
        probed and saved this validation (all three come before the kill could): on the rerun the
        scores are computed again for the summary, and nothing is logged twice.
        """
        t0 = now()
        params = self.params()
        results: dict[str, float] = {}
        selection = None
        for evaluator in self.evaluators:
            with self.wall.phase(f"validation/{type(evaluator).__name__}"):
                scores = evaluator(params, final)
            selection = scores.pop(SELECTION, selection)
            results.update(scores)
        if not record:
            return results
        self.loggers.scalars(step, results)
        with self.wall.phase("probe"):
            self.probe.run(step, params, self.loggers)
        if not final:
            self.progress.write(f"step {step}: " + "  ".join(f"{k}={v:.3f}" for k, v in results.items()))
        self.save(selection)
        seconds = now() - t0
        self.progress.validated(seconds)
        self.exclude_time(seconds)
        return results

    def __call__(self, step: int) -> None:
        self.run(step)
