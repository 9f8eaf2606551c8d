"""The attention probe: attention weights of fixed validation pairs, drawn, measured and logged.

At every validation (and at the end) the loop calls `AttentionProbe.run(step, params, loggers)`.
The shared jitted attention forward (train/evals/attention_forward.py: no gradient, no dropout,
weights recorded by model/attention_maps.py) runs on K fixed validation pairs padded to fixed
lengths, so it compiles once per run and the training step keeps its fast path. For every attention type and layer it writes

    run_dir/attention/step_{N}/{encoder_self,decoder_self,cross}_layer{l}.png   heads of example 0
    run_dir/attention/step_{N}/{type}_layer{l}.npz      float16 weights of all K examples + tokens
    run_dir/attention/step_{N}/stats/{type}_{stat}.png  layer-by-head heatmap of each statistic

and logs layer-level statistics (`attn/{type}/layer{l}/{stat}_{mean,min,max}`) and the images.
A layer of a pruned model (model.head_counts) saves its own heads only; one without heads saves
an npz with no head and no PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from flax import nnx

from data.batch import Batch
from data.config import BOS_ID
from model.config import ATTENTION_TYPES
from train.analysis.attention_plots import (
    AXIS_NAMES,
    head_grid_figure,
    render,
    stat_heatmap_figure,
)
from train.analysis.attention_stats import (
    STATS,
    layer_summary,
    real_heads,
    stack_layers,
    stats_of_kind,
)
from train.engine.sharding import to_host
from train.evals.attention_forward import attention_maps_fn

READABLE_LEN = 24  # pairs up to this many tokens per side keep tick labels legible; preferred
SCAN_LIMIT = 2000  # validation rows looked at when choosing the pairs (the first rows suffice)


@dataclass(frozen=True)
class ProbeBatch:
    """K pairs, one per row, padded to the longest (a data.batch.Batch), and their subword strings."""

    batch: Batch  # src (K, S), tgt_in (K, T): BOS + target without EOS
    src_tokens: np.ndarray  # (K, S) str, "" at padding
    tgt_tokens: np.ndarray  # (K, T) str

    @property
    def src(self) -> np.ndarray:
        return self.batch.src

    @property
    def tgt_in(self) -> np.ndarray:
        return self.batch.tgt_in

    @property
    def src_valid(self) -> np.ndarray:
        return self.batch.src_valid

    @property
    def tgt_valid(self) -> np.ndarray:
        return self.batch.tgt_valid


def choose_examples(src_ids: list[list[int]], tgt_ids: list[list[int]], k: int,
                    readable_len: int = READABLE_LEN) -> list[int]:
    """Indices of K pairs: the first ones short enough to read, else the shortest.

    Deterministic (depends only on the split), so every run and every step shows the same pairs.
    """
    lengths = np.array([max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)])
    chosen = [int(i) for i in np.flatnonzero(lengths <= readable_len)[:k]]
    if len(chosen) < k:
        taken = set(chosen)
        chosen += [int(i) for i in np.argsort(lengths, kind="stable") if i not in taken][: k - len(chosen)]
    return sorted(chosen)


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Subword pieces for tick labels (`▁` marks a word start), via the HF tokenizer's id_to_token."""
    hf = getattr(tokenizer, "tokenizer", tokenizer)
    return [hf.id_to_token(int(i)) or f"<{int(i)}>" for i in ids]


def make_batch(src_ids: list[list[int]], tgt_ids: list[list[int]], tokenizer: Any) -> ProbeBatch:
    """Pad the chosen pairs to the longest of them; teacher forcing input = [BOS] + target[:-1]."""
    batch = Batch.one_per_row(src_ids, tgt_ids)
    tgt_in = [[BOS_ID] + list(t[:-1]) for t in tgt_ids]

    def tokens(rows: list[list[int]], length: int) -> np.ndarray:
        return np.array([token_strings(tokenizer, r) + [""] * (length - len(r)) for r in rows], dtype=str)

    return ProbeBatch(batch, tokens(src_ids, batch.src.shape[1]), tokens(tgt_in, batch.tgt_in.shape[1]))


def queries_and_keys(batch: ProbeBatch, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query ids, key ids, query valid, key valid) for one attention type."""
    if kind == "encoder_self":
        return batch.src, batch.src, batch.src_valid, batch.src_valid
    if kind == "decoder_self":
        return batch.tgt_in, batch.tgt_in, batch.tgt_valid, batch.tgt_valid
    return batch.tgt_in, batch.src, batch.tgt_valid, batch.src_valid


def query_key_tokens(batch: ProbeBatch, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "encoder_self":
        return batch.src_tokens, batch.src_tokens
    if kind == "decoder_self":
        return batch.tgt_tokens, batch.tgt_tokens
    return batch.tgt_tokens, batch.src_tokens


def compute_stats(weights: dict[str, np.ndarray], batch: ProbeBatch) -> dict[str, dict[str, np.ndarray]]:
    """{type: {stat: (L, H)}} over the real tokens of all K examples."""
    out = {}
    for kind in ATTENTION_TYPES:
        _, k_ids, q_valid, k_valid = queries_and_keys(batch, kind)
        per_layer = [stats_of_kind(w, k_ids, q_valid, k_valid, kind) for w in weights[kind]]  # w: (K, H, Tq, Tk)
        out[kind] = stack_layers(per_layer)
    return out


class AttentionProbe:
    """Fixed validation pairs + a jitted forward that returns every attention map."""

    def __init__(self, graphdef: nnx.GraphDef, data: Any, cfg: Any, run_dir: Path,
                 split: str = "validation", write: bool = True):
        """write=False (processes other than 0): compute the maps with the others, write nothing."""
        self.run_dir, self.write = Path(run_dir), write
        self.batch: Optional[ProbeBatch] = None
        k = int(cfg.train.probe_examples)
        ds = data.splits.get(split) if hasattr(data.splits, "get") else data.splits[split]
        if k <= 0 or ds is None or len(ds) == 0:
            return  # probe off: nothing to show
        head = ds.select_columns(["src_ids", "tgt_ids"])[: min(len(ds), SCAN_LIMIT)]
        chosen = choose_examples(head["src_ids"], head["tgt_ids"], k)
        self.batch = make_batch([head["src_ids"][i] for i in chosen], [head["tgt_ids"][i] for i in chosen],
                                data.tokenizer)
        self.fn = attention_maps_fn(graphdef)

    @property
    def enabled(self) -> bool:
        return self.batch is not None

    def weights(self, params: nnx.State) -> dict[str, np.ndarray]:
        """{type: (L, K, H, Tq, Tk) float32} on the host."""
        out = self.fn(params, self.batch.src, self.batch.tgt_in)
        return {k: np.asarray(v) for k, v in to_host(out).items()}

    def run(self, step: int, params: nnx.State, loggers: Any = None) -> dict[str, float]:
        """Probe, save PNG + npz under run_dir/attention/step_{step}/, log stats and images."""
        if not self.enabled:
            return {}
        weights = self.weights(params)  # every process takes part: the forward spans all devices
        if not self.write:
            return {}
        stats = compute_stats(weights, self.batch)
        out_dir = self.run_dir / "attention" / f"step_{int(step)}"
        images = self.save_maps(weights, out_dir, int(step))
        images.update(self.save_stat_heatmaps(stats, out_dir / "stats", int(step)))
        scalars: dict[str, float] = {}
        for kind in ATTENTION_TYPES:
            layers = [{name: stats[kind][name][layer] for name in STATS}
                      for layer in range(stats[kind][STATS[0]].shape[0])]
            scalars.update(layer_summary(layers, kind))
        if loggers is not None:
            loggers.scalars(step, scalars)
            loggers.images(step, images)
        return scalars

    def save_maps(self, weights: dict[str, np.ndarray], out_dir: Path, step: int) -> dict[str, Path]:
        """One PNG (example 0, cropped to its tokens) and one npz (all K) per type and layer."""
        images = {}
        for kind in ATTENTION_TYPES:
            q_ids, k_ids, q_valid, k_valid = queries_and_keys(self.batch, kind)
            q_tok, k_tok = query_key_tokens(self.batch, kind)
            tq, tk = int(q_valid[0].sum()), int(k_valid[0].sum())
            for layer, w in enumerate(weights[kind]):  # w: (K, H, Tq, Tk)
                name = f"{kind}_layer{layer}"
                w = w[:, : real_heads(w)]  # a pruned layer's own heads (the rest is NaN padding)
                out_dir.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(
                    out_dir / f"{name}.npz", weights=w.astype(np.float16), query_ids=q_ids, key_ids=k_ids,
                    query_tokens=q_tok, key_tokens=k_tok, query_valid=q_valid, key_valid=k_valid,
                    step=np.int64(step))
                if w.shape[1] == 0:
                    continue  # no heads: nothing to draw
                fig = head_grid_figure(w[0, :, :tq, :tk], q_tok[0, :tq], k_tok[0, :tk],
                                       f"{kind.replace('_', ' ')} attention, layer {layer}, step {step}",
                                       *AXIS_NAMES[kind])
                render(fig, out_dir / f"{name}.png")
                images[f"attention/{kind}/layer{layer}"] = out_dir / f"{name}.png"
        return images

    def save_stat_heatmaps(self, stats: dict[str, dict[str, np.ndarray]], out_dir: Path,
                           step: int) -> dict[str, Path]:
        images = {}
        for kind in ATTENTION_TYPES:
            if stats[kind][STATS[0]].shape[1] == 0:
                continue  # no layer of this type has a head
            for name in STATS:
                fig = stat_heatmap_figure(stats[kind][name], f"{kind} {name}, step {step}", name)
                render(fig, out_dir / f"{kind}_{name}.png")
                images[f"attention_stats/{kind}/{name}"] = out_dir / f"{kind}_{name}.png"
        return images
