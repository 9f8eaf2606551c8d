"""Per-head statistics of attention weights, over real (non-pad) queries and keys.

Input is one attention type of one layer: weights (B, H, T, S) with boolean validity masks for
queries (B, T) and keys (B, S). Every statistic is first computed per query row, then averaged
over the valid rows of all B examples, giving one value per head (H,):

  entropy             -sum_j w_ij log w_ij (nats)
  entropy_normalized  entropy / log(number of keys the query may see); 1 = uniform, 0 = one-hot.
                      Rows that see a single key (log 1 = 0) carry no information and are left out.
  confidence          max_j w_ij
  distance            sum_j w_ij |i - j| (tokens). For cross-attention the reference is the
                      diagonal scaled to the two lengths (a monotone alignment), not j = i.
  bos_eos_mass        sum of w_ij over keys that are BOS or EOS (a "no-op" sink for many heads)

Host-side numpy: the probe fetches the weights anyway to draw them, and K examples are tiny.
"""

from __future__ import annotations

import numpy as np
from scipy.special import (
    entr,  # -x log x with 0 log 0 = 0 (a plain x * log(x) gives NaN at 0)
)

from data.config import BOS_ID, EOS_ID

STATS = ("entropy", "entropy_normalized", "confidence", "distance", "bos_eos_mass")


def real_heads(weights: np.ndarray) -> int:
    """How many heads one layer's maps (B, H, T, S) hold: a pruned model's narrower layers are
    NaN-padded at the end (model/attention_maps.py), and a real head's map is never NaN."""
    w = np.asarray(weights)
    if 0 in (w.shape[0], w.shape[2], w.shape[3]):  # no entry to tell by
        return int(w.shape[1])
    return int((~np.isnan(w[0, :, 0, 0])).sum())


def visible_keys(q_valid: np.ndarray, k_valid: np.ndarray, causal: bool) -> np.ndarray:
    """Which keys each query may attend to: (B, T), (B, S) -> (B, T, S) bool."""
    allowed = q_valid[:, :, None] & k_valid[:, None, :]
    if causal:
        t, s = allowed.shape[1:]
        allowed = allowed & np.tril(np.ones((t, s), dtype=bool))[None]
    return allowed


def reference_positions(q_valid: np.ndarray, k_valid: np.ndarray, cross: bool) -> np.ndarray:
    """Key position each query is measured against: (B, T) float.

    Self-attention: the query's own position i. Cross-attention: the length-scaled diagonal
    (i + 0.5) * S_b / T_b - 0.5, which maps the centres of the T_b target cells onto the S_b source
    cells, so that a monotone alignment between sentences of different lengths scores 0.
    """
    t = q_valid.shape[1]
    i = np.arange(t, dtype=np.float64)[None, :]  # (1, T)
    if not cross:
        return np.broadcast_to(i, q_valid.shape).copy()
    q_len = np.maximum(q_valid.sum(-1, keepdims=True), 1)  # (B, 1)
    k_len = k_valid.sum(-1, keepdims=True)  # (B, 1)
    return (i + 0.5) * k_len / q_len - 0.5


def stats_of_kind(weights: np.ndarray, key_ids: np.ndarray, q_valid: np.ndarray, k_valid: np.ndarray,
                  kind: str) -> dict[str, np.ndarray]:
    """head_stats of one layer of attention type `kind` (encoder_self, decoder_self, cross), with
    BOS/EOS keys as the sinks: what the probe logs and the explorer plots."""
    special = np.isin(key_ids, (BOS_ID, EOS_ID))  # (B, S)
    return head_stats(weights, q_valid, k_valid, causal=kind == "decoder_self", cross=kind == "cross",
                      special_keys=special)


def head_stats(weights: np.ndarray, q_valid: np.ndarray, k_valid: np.ndarray, *,
               causal: bool = False, cross: bool = False,
               special_keys: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Statistics per head, averaged over the valid queries of all examples.

    weights: (B, H, T, S) attention probabilities (rows of valid queries sum to 1).
    q_valid: (B, T) bool, real query tokens. k_valid: (B, S) bool, real key tokens.
    causal: decoder self-attention (query i sees keys j <= i; affects the normalised entropy).
    cross: measure distance from the length-scaled diagonal instead of from j = i.
    special_keys: (B, S) bool, keys that are BOS or EOS; None gives zero mass.
    Returns {name: (H,) float64} for every name in STATS.
    """
    w = np.asarray(weights, dtype=np.float64)
    q_valid, k_valid = np.asarray(q_valid, bool), np.asarray(k_valid, bool)
    allowed = visible_keys(q_valid, k_valid, causal)  # (B, T, S)
    w = np.where(allowed[:, None], w, 0.0)  # pad keys carry (near-)zero weight anyway; make it exact

    n_keys = allowed.sum(-1)  # (B, T)
    entropy = entr(w).sum(-1)  # (B, H, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = entropy / np.log(n_keys)[:, None]  # (B, H, T); inf/nan where n_keys <= 1
    confidence = w.max(-1)  # (B, H, T)

    t, s = w.shape[-2:]
    ref = reference_positions(q_valid, k_valid, cross)  # (B, T)
    offsets = np.abs(np.arange(s, dtype=np.float64)[None, None, :] - ref[:, :, None])  # (B, T, S)
    distance = (w * offsets[:, None]).sum(-1)  # (B, H, T)

    if special_keys is None:
        special_keys = np.zeros_like(k_valid)
    special_mass = (w * np.asarray(special_keys, bool)[:, None, None, :]).sum(-1)  # (B, H, T)

    rows = q_valid & (n_keys > 0)  # (B, T); a valid query that sees nothing has no distribution
    return {
        "entropy": _row_mean(entropy, rows),
        "entropy_normalized": _row_mean(np.nan_to_num(normalized), rows & (n_keys > 1)),
        "confidence": _row_mean(confidence, rows),
        "distance": _row_mean(distance, rows),
        "bos_eos_mass": _row_mean(special_mass, rows),
    }


def _row_mean(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean over the selected (B, T) rows of a (B, H, T) array -> (H,); NaN when none selected."""
    count = rows.sum()
    if count == 0:
        return np.full(values.shape[1], np.nan)
    return (values * rows[:, None, :]).sum(axis=(0, 2)) / count


def layer_summary(per_layer: list[dict[str, np.ndarray]], attention_type: str) -> dict[str, float]:
    """Layer-level mean/min/max over heads, with keys that don't depend on the head count.

    per_layer: one head_stats() result per layer. Returns e.g.
    {"attn/cross/layer0/entropy_mean": ..., "attn/cross/layer0/entropy_min": ..., ...}.
    """
    out: dict[str, float] = {}
    for layer, stats in enumerate(per_layer):
        for name, values in stats.items():
            prefix = f"attn/{attention_type}/layer{layer}/{name}"
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                continue  # e.g. every query saw one key: nothing to report, and NaN would break charts
            out[f"{prefix}_mean"] = float(finite.mean())
            out[f"{prefix}_min"] = float(finite.min())
            out[f"{prefix}_max"] = float(finite.max())
    return out


def stack_layers(per_layer: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: (H_l,)}] * L -> {name: (L, H)}, the layer-by-head grids that get drawn as heatmaps;
    layers with fewer heads than the widest (a pruned model) are NaN-padded."""
    width = max(len(next(iter(stats.values()))) for stats in per_layer)
    pad = lambda v: np.concatenate([v, np.full(width - len(v), np.nan)])
    return {name: np.stack([pad(np.asarray(stats[name], np.float64)) for stats in per_layer]) for name in per_layer[0]}
