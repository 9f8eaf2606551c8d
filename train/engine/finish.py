"""The end of a run, after its final validation: the test split's scores and the explorer page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import datasets

from data.config import DataConfig
from train.errors import RunError
from train.evals.generation import Generator
from train.evals.validation_loss import ValidationLoss


def test_scores(graphdef: Any, split: datasets.Dataset, data_cfg: DataConfig, batch_sharding: Any,
                eval_step: Any, generator: Generator, params: Any, run_dir: Optional[Path]) -> dict:
    """Loss and generation scores on the test split. With `run_dir` (the writing process), the
    hypotheses and references go to test.hyp.txt and test.ref.txt, which the sweep report's
    significance tests read."""
    loss = ValidationLoss(graphdef, split, data_cfg, batch_sharding, split="test", eval_step=eval_step)
    scores = generator.score_split(params, "test", limit=None,
                                   hyp_path=run_dir / "test.hyp.txt" if run_dir else None,
                                   ref_path=run_dir / "test.ref.txt" if run_dir else None)
    return {**loss(params), **{f"test/{k}": v for k, v in scores.items()}}


def write_explorer_page(run_dir: Path, loggers: Any) -> None:
    """The run's attention explorer page (train/explore/), logged as an HTML panel."""
    from train.explore import write_explorer

    try:
        path = write_explorer(run_dir)
    except RunError as e:  # a page is a view of the run: never a reason to fail it
        print(f"warning: no explorer page: {e}", file=sys.stderr)
        return
    loggers.html("explorer", path)
    print(f"explorer: {path}")
