"""Decode a split with the jitted (KV-cached) decoder and score it: shared by validation,
`python -m train.evaluate`, `translate` and `heads`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import datasets

from data.buckets import decode_batches
from data.pipeline import PreparedData
from model.decoding import make_decode_fn
from train.config import DecodeConfig
from train.engine.sharding import to_host
from train.evals.base import SELECTION
from train.evals.scores import generation_scores

# Source lengths are padded up to one of these, so decoding compiles once per bucket.
DECODE_BUCKETS = [16, 32, 64, 128, 256, 512, 1024]


def write_lines(path: Path, texts: list[str]) -> None:
    """One text per line, whatever it holds: a newline inside one would shift the rest."""
    path.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")


class Generator:
    def __init__(self, graphdef: Any, data: PreparedData, cfg: DecodeConfig, task: str,
                 max_source_len: int, max_target_len: int):
        self.data, self.cfg, self.task = data, cfg, task
        self.buckets = [b for b in DECODE_BUCKETS if b < max_source_len] + [max_source_len]
        self.max_len = max_target_len
        self.decode_fn = make_decode_fn(graphdef, beam_size=cfg.beam_size, alpha=cfg.alpha,
                                        max_len=self.max_len, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)

    def compiles(self) -> int:
        size = getattr(self.decode_fn, "_cache_size", None)
        return size() if size else -1

    def decode_ids(self, params: Any, dataset: datasets.Dataset) -> list[list[int]]:
        """Token ids of the hypotheses for the `src_ids` column, in the dataset's order."""
        out: list[list[int]] = [[] for _ in range(len(dataset))]
        for indices, src in decode_batches(dataset, self.cfg.batch_size, self.buckets):
            tokens = to_host(self.decode_fn(params, src))
            for row, index in enumerate(indices):
                if index >= 0:
                    out[index] = tokens[row].tolist()
        return out

    def translate(self, params: Any, dataset: datasets.Dataset) -> list[str]:
        return self.data.tokenizer.decode_batch(self.decode_ids(params, dataset))

    def score_split(self, params: Any, split: str, limit: Optional[int] = None,
                    hyp_path: Optional[Path] = None, ref_path: Optional[Path] = None,
                    prefix: Optional[int] = None) -> dict:
        """Scores of the first `limit` examples (all when None). With `prefix`, also the scores
        of the first `prefix` examples under "prefix", from the same hypotheses. `hyp_path` and
        `ref_path` receive the hypotheses and references, one per line (what the sweep report's
        significance tests read)."""
        dataset = self.data.splits[split]
        n = len(dataset) if limit is None else min(limit, len(dataset))
        subset = dataset.select(range(n))
        hyps = self.translate(params, subset)
        for path, texts in ((hyp_path, hyps), (ref_path, subset["target"])):
            if path is not None:
                write_lines(Path(path), texts)
        scores = generation_scores(self.task, hyps, subset["target"])
        if prefix is not None:
            scores["prefix"] = generation_scores(self.task, hyps[:prefix], subset["target"][:prefix])
        return scores


class GenerationScores:
    """Evaluator: decode the validation split and score it (`val/bleu`, `val/chrf` or ROUGE).

    Periodic validations decode a fixed subset of `subset` pairs; the final one decodes the whole
    split. Checkpoints are ranked on that same subset every time (SELECTION), the final
    validation included, so that the best checkpoint is chosen on one yardstick.
    """

    def __init__(self, generator: Generator, metric: str, subset: int, split: str = "validation"):
        self.generator, self.metric, self.subset, self.split = generator, metric, subset, split

    def __call__(self, params: Any, final: bool = False) -> dict[str, float]:
        scores = self.generator.score_split(params, self.split, limit=None if final else self.subset,
                                            prefix=self.subset)
        out = {f"val/{k}": v for k, v in scores.items() if isinstance(v, (int, float))}
        out[SELECTION] = scores["prefix"][self.metric]
        return out
