"""Which heads a pruned model keeps: one score per head, then the N best or those above a threshold.

Scores are (L, H) grids per attention type, NaN where a layer has no such head (a model that was
pruned before), the layout of train/analysis/head_importance.py:

    gates       P(gate open) = P(z > 0) of each Hard Concrete gate (model/gates.py), in [0, 1]
    importance  gate-gradient importance normalised per layer (Michel et al. 2019), in [0, 1]
    random      seeded uniform draws in [0, 1): a baseline any other order should beat

`keep=N` keeps the N highest-scoring heads over every type and layer together (a global budget,
as Voita et al. and Michel et al. prune; ties go to the earlier type, layer, head), so a layer can
end with no head. `threshold=X` keeps every head whose score is >= X. Heads the run's own
model.head_mask switches off (gate 0) are never kept.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from model.config import ATTENTION_TYPES
from train.analysis.head_importance import grid

Grid = dict[str, np.ndarray]  # {type: (L, H) float, NaN where there is no head}
Keep = dict[str, list[list[int]]]  # {type: [kept head indices of each layer]}


def random_scores(present: dict[str, np.ndarray], seed: int) -> Grid:
    """Seeded uniform scores, one per head (the same seed gives the same heads on the same model)."""
    rng = np.random.default_rng(seed)
    return {kind: np.where(present[kind], rng.random(present[kind].shape), np.nan) for kind in ATTENTION_TYPES}


def gate_scores(table: dict[str, list[Optional[dict[str, np.ndarray]]]], present: dict[str, np.ndarray]) -> Grid:
    """P(open) of every head from model/gate_params.gate_table (NaN where a layer has no gates)."""
    return {kind: np.where(present[kind], grid([[] if row is None else row["open_probability"]
                                                  for row in table[kind]], present[kind].shape[1]), np.nan)
            for kind in ATTENTION_TYPES}


def importance_scores(heads_json: dict, present: dict[str, np.ndarray]) -> Grid:
    """The per-layer normalised importance heads.json holds (`python -m train.heads`).
    Raises ValueError when its layers or heads are not the model's."""
    out = {}
    for kind in ATTENTION_TYPES:
        rows = heads_json["importance"][kind]["normalized"]
        widths = [len(row) for row in rows]
        if widths != present[kind].sum(axis=1).tolist():
            raise ValueError(f"heads.json has {kind} heads per layer {widths}; the model has "
                             f"{present[kind].sum(axis=1).tolist()}")
        values = grid([[np.nan if v is None else v for v in row] for row in rows], present[kind].shape[1])
        out[kind] = np.where(present[kind], values, np.nan)
    return out


def ranked(scores: Grid, eligible: Optional[Grid] = None) -> list[tuple[str, int, int]]:
    """Every eligible head with a finite score, best first (ties: type, layer, head order)."""
    heads = [(kind, int(l), int(h)) for kind in ATTENTION_TYPES for l, h in zip(*np.nonzero(np.isfinite(scores[kind])))
             if eligible is None or eligible[kind][l, h]]
    return sorted(heads, key=lambda x: (-float(scores[x[0]][x[1], x[2]]), ATTENTION_TYPES.index(x[0]), x[1], x[2]))


def select_heads(scores: Grid, *, keep: Optional[int] = None, threshold: Optional[float] = None,
                 eligible: Optional[Grid] = None) -> Keep:
    """The kept heads of each layer (increasing indices): the `keep` best, or those >= `threshold`.
    Exactly one of them must be given; ValueError otherwise or when keep exceeds the heads."""
    if (keep is None) == (threshold is None):
        raise ValueError("give exactly one of keep=N (heads to keep in all) and threshold=X (keep heads scoring >= X)")
    order = ranked(scores, eligible)
    if keep is not None:
        if not 0 <= keep <= len(order):
            raise ValueError(f"keep={keep} must be between 0 and the {len(order)} heads that can be kept")
        chosen = set(order[:keep])
    else:
        chosen = {head for head in order if scores[head[0]][head[1], head[2]] >= threshold}
    return {kind: [sorted(h for k, l, h in chosen if k == kind and l == layer) for layer in range(scores[kind].shape[0])]
            for kind in ATTENTION_TYPES}


def describe(keep: Keep, present: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts for a person: heads kept / there per type and layer, and in all."""
    per_type = {kind: [f"{len(k)}/{int(n)}" for k, n in zip(keep[kind], present[kind].sum(axis=1))]
                for kind in ATTENTION_TYPES}
    kept = sum(len(k) for rows in keep.values() for k in rows)
    return {"kept": kept, "of": int(sum(p.sum() for p in present.values())), "per_layer": per_type}
