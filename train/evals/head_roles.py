"""Head roles over a split: the shared attention forward (train/evals/attention_forward.py) on
one-example-per-row batches, each type's maps added to train/analysis/head_roles.py's counts, and
the token frequencies the rare-token role is measured against."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
from flax import nnx

from data.batch import Batch
from model.config import ATTENTION_TYPES
from train.analysis.head_roles import RoleCounts
from train.engine.sharding import to_host
from train.evals.attention_forward import attention_maps_fn


def token_frequencies(dataset: Any, vocab_size: int, chunk: int = 10_000) -> dict[str, np.ndarray]:
    """How often each token id occurs on each side of `dataset` (the training split's src_ids and
    tgt_ids): {"source": (V,), "target": (V,)} float. Read `chunk` rows at a time (bounded memory)."""
    out = {side: np.zeros(vocab_size, np.float64) for side in ("source", "target")}
    for batch in dataset.select_columns(["src_ids", "tgt_ids"]).iter(batch_size=chunk):
        for side, column in (("source", "src_ids"), ("target", "tgt_ids")):
            rows = [np.asarray(row, np.int64) for row in batch[column]]
            if rows:
                out[side] += np.bincount(np.concatenate(rows), minlength=vocab_size)[:vocab_size]
    return out


def key_side(kind: str) -> str:
    """Which language an attention type's keys are in."""
    return "target" if kind == "decoder_self" else "source"


def role_counts(graphdef: nnx.GraphDef, params: Any, batches: Iterable[Batch], heads: dict[str, tuple[int, int]],
                max_offset: int, frequencies: Optional[dict[str, np.ndarray]] = None) -> dict[str, RoleCounts]:
    """{type: RoleCounts} over `batches` (one example per row; filler rows are all padding).
    heads: {type: (L, H)} the grids' shapes (train/analysis/head_importance.gate_shapes)."""
    fn = attention_maps_fn(graphdef)
    counts = {kind: RoleCounts.zeros(*heads[kind], max_offset) for kind in ATTENTION_TYPES}
    for batch in batches:
        maps = to_host(fn(params, batch.src, batch.tgt_in))  # {type: (L, B, H, Tq, Tk)}
        src, tgt, src_ok, tgt_ok = np.asarray(batch.src), np.asarray(batch.tgt_in), batch.src_valid, batch.tgt_valid
        sides = {"encoder_self": (src_ok, src_ok, src), "decoder_self": (tgt_ok, tgt_ok, tgt), "cross": (tgt_ok, src_ok, src)}
        for kind in ATTENTION_TYPES:
            q_valid, k_valid, key_ids = sides[kind]
            freq = None if frequencies is None else frequencies[key_side(kind)]
            counts[kind].add(np.asarray(maps[kind]), q_valid, k_valid, key_ids, kind, freq)
    return counts
