"""The alignment evaluator: every cross-attention head's word alignment against gold links.

On fixed pairs with gold links (the embedded corpus's Strong's-number links), it runs the shared
attention forward (train/evals/attention_forward.py) over length-bucketed one-example-per-row
batches and scores each head and each layer average with train/analysis/alignment.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import datasets
import numpy as np
from flax import nnx

from data.buckets import IndexedBatch, example_batches
from train.analysis.alignment import (
    AlignmentCounts,
    best_aligner,
    diagonal_counts,
    oracle_counts,
    score_cross_attention,
)
from train.engine.sharding import to_host
from train.evals.attention_forward import attention_maps_fn


def length_buckets(longest: int, sizes: Sequence[int] = (32, 64, 128)) -> list[int]:
    """Padded lengths for example_batches: a few sizes (one compile each), capped at `longest`
    (the data's max length, which the model's positions cover)."""
    return [b for b in sizes if b < longest] + [longest]


def gold_reversed(source_lang: str, target_lang: str) -> bool:
    """The embedded corpus stores links as (en word, es word): reversed when translating es -> en."""
    return source_lang == "es" and target_lang == "en"


def cross_attention_fn(graphdef: nnx.GraphDef) -> Callable:
    """(params, src (B, S), tgt_in (B, T)) -> cross-attention weights (L, B, H, T, S) float32,
    one example per row (segments from padding), from the shared jitted attention forward."""
    maps = attention_maps_fn(graphdef, ("cross",))
    return lambda params, src, tgt_in: maps(params, src, tgt_in)["cross"]


@dataclass
class AlignmentEvaluator:
    """Scores every cross-attention head (and layer average) on fixed pairs with gold links.

    Build with `AlignmentEvaluator.build(graphdef, dataset, tokenizer, ...)`; `dataset` needs the
    columns src_ids, tgt_ids, source, target and alignment. Compiles once per length bucket.
    """

    fn: Callable
    batches: list[IndexedBatch]
    src_words: dict[int, list[int]]
    tgt_words: dict[int, list[int]]
    gold: dict[int, list]
    shift: bool = False
    examples: int = 0
    last: dict = field(default_factory=dict)

    @classmethod
    def build(cls, graphdef: nnx.GraphDef, dataset: datasets.Dataset, tokenizer: Any, *,
              limit: Optional[int] = None, rows: int = 32, buckets: Sequence[int] = (32, 64, 128),
              shift: bool = False, swap_gold: bool = False) -> Optional["AlignmentEvaluator"]:
        """None when the split has no gold alignments. swap_gold: the gold pairs are
        [target word, source word] (the corpus's en-es order when translating es -> en)."""
        if "alignment" not in dataset.column_names:
            return None
        gold_all = dataset["alignment"]
        keep = [i for i, g in enumerate(gold_all) if g]
        if limit is not None:
            keep = keep[:limit]
        if not keep:
            return None
        subset = dataset.select(keep)
        # Word of each subword the model sees: ids were truncated to the max lengths (EOS kept).
        src_words = {i: tokenizer.word_ids(t)[: len(ids) - 1]
                     for i, (t, ids) in enumerate(zip(subset["source"], subset["src_ids"]))}
        tgt_words = {i: tokenizer.word_ids(t)[: len(ids) - 1]
                     for i, (t, ids) in enumerate(zip(subset["target"], subset["tgt_ids"]))}
        gold = {i: ([[t, s] for s, t in g] if swap_gold else g)
                for i, g in enumerate(subset["alignment"])}
        return cls(
            fn=cross_attention_fn(graphdef),
            batches=list(example_batches(subset, rows, buckets)),
            src_words=src_words, tgt_words=tgt_words,
            gold=gold, shift=shift, examples=len(keep))

    def counts(self, params: nnx.State, shifts: Sequence[bool] = (False,)) -> dict[bool, AlignmentCounts]:
        """Counts for output-token rows (shift False) and/or input-token rows (True), one pass."""
        out: dict[bool, AlignmentCounts] = {}
        for batch in self.batches:
            cross = to_host(self.fn(params, batch.batch.src, batch.batch.tgt_in))
            real = np.flatnonzero(batch.index >= 0)
            ids = batch.index[real].tolist()
            for s in shifts:
                out[s] = score_cross_attention(
                    cross[:, real], [self.src_words[i] for i in ids], [self.tgt_words[i] for i in ids],
                    [self.gold[i] for i in ids], out.get(s), shift=s)
        return out

    def diagonal(self) -> AlignmentCounts:
        """Counts of the length-scaled diagonal on the same pairs (see diagonal_counts)."""
        ids = sorted(self.gold)
        return diagonal_counts([self.src_words[i] for i in ids], [self.tgt_words[i] for i in ids],
                               [self.gold[i] for i in ids])

    def oracle(self) -> AlignmentCounts:
        """Counts of the gold-guided argmax ceiling on the same pairs (see oracle_counts)."""
        ids = sorted(self.gold)
        return oracle_counts([self.src_words[i] for i in ids], [self.tgt_words[i] for i in ids],
                             [self.gold[i] for i in ids])

    def __call__(self, params: nnx.State, final: bool = False) -> dict[str, float]:
        """The evaluator protocol (train/evals/base.py): the same fixed pairs at every validation."""
        return self.run(params)

    def run(self, params: nnx.State) -> dict[str, float]:
        """Validation scalars: the best head's F1 and AER, and the best layer average's F1."""
        scores = self.counts(params, (self.shift,))[self.shift].scores()
        best = best_aligner(scores)
        layer_avg = scores["f1"][:, -1]
        self.last = {"scores": scores, "best": best}
        return {"val/align_f1": best["f1"], "val/align_aer": best["aer"],
                "val/align_f1_layer_avg": float(layer_avg.max())}
