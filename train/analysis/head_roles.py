"""Head roles (Voita et al. 2019, section 4) read off attention maps. Pure numpy.

For every query row of every example, a head's argmax key is where its largest weight falls; a
row whose largest weight is shared by k keys gives each of them 1/k (a uniform row credits every
key alike, so it never looks like a preference). Only valid query rows that see at least two keys
count (one visible key is no choice). Per head, over all counted rows:

  positional  (self-attention only) the share of rows whose argmax is at one relative offset
              j - i, for the most frequent offset; the role when that share >= 0.9 (Voita et al.:
              "at least 90% of the time"), reported with the offset (-1 = the previous token).
  rare_token  the share of rows whose argmax is the least frequent token the query can see
              (frequencies in the training data of the key side, an argument; BOS/EOS are never
              candidates), against chance, the mean over rows of (rarest visible keys / visible
              keys) ~ 1/len; the role when share >= 2 x chance.
  sink        the mean attention mass on BOS/EOS keys (the first key of the decoder's input and
              the last of the source: the "no-op" sinks of Clark et al. 2019), over rows that see
              both a BOS/EOS key and another one; the role when that mass >= 0.5 (most of it).
  alignment   (cross-attention only) the head's argmax word-alignment F1 against gold links
              (train/analysis/alignment.py) beats the length-scaled diagonal's F1 on the same pairs.

A head may have several roles or none. NaN maps (a head a pruned layer lacks,
model/attention_maps.py) give NaN evidence and no role. Thresholds are RoleThresholds' fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from data.config import BOS_ID, EOS_ID
from train.analysis.attention_stats import visible_keys

ROLES = ("positional", "rare_token", "sink", "alignment")
TIE = 1e-6  # weights within this of a row's largest count as tied for the argmax


@dataclass(frozen=True)
class RoleThresholds:
    positional_share: float = 0.9  # argmax at one relative offset at least this often
    rare_lift: float = 2.0  # argmax on the rarest token at least this many times chance
    sink_mass: float = 0.5  # mean mass on BOS/EOS at least this


@dataclass
class RoleCounts:
    """Sums over counted query rows for one attention type, per (layer, head)."""

    rows: np.ndarray  # (L, H) counted rows
    offset_hits: np.ndarray  # (L, H, 2M + 1) argmax credit at relative offset -M .. M
    rare_hits: np.ndarray  # (L, H) argmax credit on the rarest visible key
    rare_chance: np.ndarray  # (L, H) sum over rows of rarest / visible keys
    rare_rows: np.ndarray  # (L, H) rows with a rarest-key candidate
    sink_mass: np.ndarray  # (L, H) sum over rows of the mass on BOS/EOS keys
    sink_rows: np.ndarray  # (L, H)
    max_offset: int

    @classmethod
    def zeros(cls, layers: int, heads: int, max_offset: int) -> "RoleCounts":
        z = lambda: np.zeros((layers, heads))
        return cls(z(), np.zeros((layers, heads, 2 * max_offset + 1)), z(), z(), z(), z(), z(), max_offset)

    def add(self, weights: np.ndarray, q_valid: np.ndarray, k_valid: np.ndarray, key_ids: np.ndarray, kind: str,
            frequencies: Optional[np.ndarray] = None, sink_ids: Sequence[int] = (BOS_ID, EOS_ID)) -> "RoleCounts":
        """Add one batch: weights (L, B, H, T, S) of attention type `kind`; q_valid (B, T) and
        k_valid (B, S) bool; key_ids (B, S) int; frequencies (V,) counts of each token id on the
        key side (None: no rare-token evidence)."""
        for layer, w in enumerate(np.asarray(weights, np.float64)):
            sums = layer_sums(w, q_valid, k_valid, key_ids, kind, frequencies, sink_ids, self.max_offset)
            for name, value in sums.items():
                getattr(self, name)[layer] += value
        return self

    def evidence(self) -> dict[str, np.ndarray]:
        """Per head (L, H): positional_share and positional_offset, rare_share and rare_chance,
        sink_mass (NaN where nothing was counted or the head has NaN maps)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per_offset = self.offset_hits / self.rows[..., None]
            best = np.nanargmax(np.where(np.isfinite(per_offset), per_offset, -1.0), axis=-1)
            share = np.take_along_axis(per_offset, best[..., None], axis=-1)[..., 0]
            return {"positional_share": share, "positional_offset": np.where(np.isfinite(share), best - self.max_offset, np.nan),
                    "rare_share": self.rare_hits / self.rare_rows, "rare_chance": self.rare_chance / self.rare_rows,
                    "sink_mass": self.sink_mass / self.sink_rows}


def layer_sums(w: np.ndarray, q_valid: np.ndarray, k_valid: np.ndarray, key_ids: np.ndarray, kind: str,
               frequencies: Optional[np.ndarray], sink_ids: Sequence[int], max_offset: int) -> dict[str, np.ndarray]:
    """RoleCounts' sums for one layer's maps w (B, H, T, S): {field: (H,) or (H, 2M + 1)}."""
    h = w.shape[1]
    allowed = visible_keys(np.asarray(q_valid, bool), np.asarray(k_valid, bool), kind == "decoder_self")
    rows = allowed.sum(-1) >= 2  # (B, T): a choice between keys
    w = np.where(allowed[:, None], w, 0.0)  # NaN (no such head) stays NaN
    top = w.max(-1, keepdims=True)
    is_max = allowed[:, None] & (w >= top - TIE)  # (B, H, T, S); all False for a NaN head
    credit = is_max / np.maximum(is_max.sum(-1, keepdims=True), 1)
    credit = np.where(np.isnan(top), np.nan, credit) * rows[:, None, :, None]  # NaN heads: NaN evidence
    no_head = np.where(np.isnan(top).any(axis=(0, 2, 3)), np.nan, 0.0)  # (H,): NaN for a head the layer lacks
    count = lambda total: np.full(h, float(total)) + no_head  # a per-row total, the same for every real head
    out = {"rows": count(rows.sum())}

    offsets = np.full((h, 2 * max_offset + 1), np.nan)
    if kind != "cross":  # a relative offset means something only within one sequence
        for d in range(-max_offset, max_offset + 1):  # key j = query i + d
            offsets[:, d + max_offset] = np.diagonal(credit, offset=d, axis1=2, axis2=3).sum(axis=(0, 2))
    out["offset_hits"] = offsets

    special = np.isin(key_ids, list(sink_ids))  # (B, S)
    normal = allowed & ~special[:, None, :]  # (B, T, S)
    sink_rows = rows & (allowed & special[:, None, :]).any(-1) & normal.any(-1)  # (B, T)
    mass = (w * special[:, None, None, :]).sum(-1)  # (B, H, T)
    out["sink_mass"] = (mass * sink_rows[:, None]).sum(axis=(0, 2))
    out["sink_rows"] = count(sink_rows.sum())

    if frequencies is None:
        nan = np.full(h, np.nan)
        out.update(rare_hits=nan, rare_chance=nan, rare_rows=nan)
        return out
    freq = np.asarray(frequencies, np.float64)[np.asarray(key_ids)]  # (B, S)
    cand = np.where(normal, freq[:, None, :], np.inf)  # (B, T, S)
    rarest = normal & (cand == cand.min(-1, keepdims=True))  # (B, T, S)
    rare_rows = rows & normal.any(-1)  # (B, T)
    hits = (credit * rarest[:, None]).sum(-1)  # (B, H, T)
    out["rare_hits"] = (hits * rare_rows[:, None]).sum(axis=(0, 2))
    chance = rarest.sum(-1) / np.maximum(allowed.sum(-1), 1)  # (B, T)
    out["rare_chance"] = count((chance * rare_rows).sum())
    out["rare_rows"] = count(rare_rows.sum())
    return out


def classify(evidence: dict[str, np.ndarray], thresholds: RoleThresholds = RoleThresholds(),
             alignment_f1: Optional[np.ndarray] = None, baseline_f1: Optional[float] = None) -> np.ndarray:
    """(L, H) object array of role lists from RoleCounts.evidence() (and, for cross attention, each
    head's alignment F1 with the diagonal baseline's)."""
    shape = evidence["sink_mass"].shape
    roles = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        e = {k: float(v[index]) for k, v in evidence.items()}
        found = []
        if e["positional_share"] >= thresholds.positional_share:
            found.append("positional")
        if e["rare_share"] >= thresholds.rare_lift * e["rare_chance"] and e["rare_chance"] > 0:
            found.append("rare_token")
        if e["sink_mass"] >= thresholds.sink_mass:
            found.append("sink")
        if alignment_f1 is not None and baseline_f1 is not None and float(alignment_f1[index]) > baseline_f1:
            found.append("alignment")
        roles[index] = found
    return roles


def roles_json(evidence: dict[str, np.ndarray], roles: np.ndarray, present: np.ndarray,
               alignment_f1: Optional[np.ndarray] = None) -> list[list[dict[str, Any]]]:
    """Per layer, per real head: {"roles": [...], evidence shares rounded} (what heads.json holds)."""
    def value(x: float, digits: int = 4) -> Optional[float]:
        return None if not np.isfinite(x) else round(float(x), digits)

    out = []
    for layer in range(roles.shape[0]):
        row = []
        for head in np.flatnonzero(present[layer]):
            entry: dict[str, Any] = {"roles": list(roles[layer, head])}
            entry.update({k: value(v[layer, head]) for k, v in evidence.items() if k != "positional_offset"})
            offset = evidence["positional_offset"][layer, head]
            entry["positional_offset"] = int(offset) if np.isfinite(offset) else None
            if alignment_f1 is not None:
                entry["alignment_f1"] = value(alignment_f1[layer, head])
            row.append(entry)
        out.append(row)
    return out


def thresholds_json(thresholds: RoleThresholds = RoleThresholds()) -> dict[str, float]:
    return asdict(thresholds)
