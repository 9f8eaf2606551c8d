"""The evaluator protocol: what validation runs, every `train.eval_every` steps and at the end.

An evaluator is called with the current parameters and whether this is the final validation
(the final one may look at more data), and returns scalars named as they are logged
(`val/loss`, `val/bleu`, `val/align_f1`, ...). One of them may also return the score that
checkpoints are ranked by under SELECTION; the validation hook takes it out before logging.
"""

from __future__ import annotations

from typing import Any, Protocol

SELECTION = "checkpoint_selection"  # larger is better (BLEU, ROUGE-L on a fixed subset)


class Evaluator(Protocol):
    def __call__(self, params: Any, final: bool) -> dict[str, float]: ...


def split_key(split: str) -> str:
    """The prefix a split's metrics are logged under."""
    return "val" if split == "validation" else split
