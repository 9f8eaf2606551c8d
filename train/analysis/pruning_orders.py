"""Pruning orders compared: which heads to switch off first.

Three orders over the same trained model, each scored at the same shares of heads removed:

  importance  least |dL/d gate| first (Michel et al. 2019; train/analysis/head_importance.py)
  gates       lowest P(gate open) first, from a run trained or fine-tuned with Hard Concrete gates
              and the L0 penalty (Voita et al. 2019; model.head_gates=concrete)
  random      a uniformly random order, one per seed (Budhraja et al. 2020 find it competitive)

Each order gives a curve of (share of heads removed, generation score); a random order's curves are
summarised over seeds as mean and standard deviation. `at_shares` reads the score at fixed shares
(25%, 50%, 75% removed), which the steps always include, so the orders compare at the same points.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from model.config import ATTENTION_TYPES
from train.analysis.head_importance import Head, prunable_share

ORDERS = ("importance", "gates", "random")
COMPARE_SHARES = (0.25, 0.5, 0.75)  # shares of heads removed the orders are compared at


def random_order(heads: Sequence[Head], seed: int) -> list[Head]:
    """A uniformly random permutation of `heads`, the same for the same seed and head list."""
    perm = np.random.default_rng(seed).permutation(len(heads))
    return [tuple(heads[i]) for i in perm]


def gate_order(open_probability: dict[str, list[list[float]]], heads: Sequence[Head]) -> list[Head]:
    """`heads` by increasing P(gate open) (heads.json's gates block); ties by type, layer, head."""
    p = lambda h: float(open_probability[h[0]][h[1]][h[2]])
    return sorted((tuple(h) for h in heads), key=lambda h: (p(h), ATTENTION_TYPES.index(h[0]), h[1], h[2]))


def with_shares(steps: Sequence[int], num_heads: int, shares: Sequence[float] = COMPARE_SHARES) -> list[int]:
    """`steps` (heads removed) plus the counts closest to each of `shares` of `num_heads`."""
    return sorted(set(steps) | {int(round(s * num_heads)) for s in shares})


def at_shares(curve: Sequence[dict], metric: str, shares: Sequence[float] = COMPARE_SHARES) -> dict[str, float]:
    """{"25%": score, ...}: the curve's point nearest each share (the steps include them)."""
    out = {}
    for s in shares:
        point = min(curve, key=lambda p: abs(p["share"] - s))
        out[f"{s:.0%}"] = point[metric]
    return out


def summarize(curves: Sequence[Sequence[dict]], metric: str, shares: Sequence[float] = COMPARE_SHARES) -> dict:
    """One order's curves (one per seed, the same steps each): per-step mean and sd of `metric`,
    the score at `shares` (mean, sd), and the share prunable for < 1 point lost (mean, sd)."""
    if not curves or len({tuple(p["heads_off"] for p in c) for c in curves}) != 1:
        raise ValueError("summarize needs one or more curves over the same steps")
    scores = np.array([[p[metric] for p in c] for c in curves])  # (seeds, steps)
    sd = lambda a, axis=None: np.std(a, axis=axis, ddof=1) if len(curves) > 1 else np.zeros_like(np.mean(a, axis=axis))
    point_at = [at_shares(c, metric, shares) for c in curves]
    prunable = np.array([prunable_share(c, 1.0, metric) for c in curves])
    return {
        "seeds": len(curves),
        "steps": [{"heads_off": p["heads_off"], "share": p["share"]} for p in curves[0]],
        "mean": np.round(scores.mean(0), 3).tolist(),
        "sd": np.round(sd(scores, 0), 3).tolist(),
        "at_shares": {k: {"mean": round(float(np.mean([a[k] for a in point_at])), 3),
                          "sd": round(float(sd(np.array([a[k] for a in point_at]))), 3)} for k in point_at[0]},
        "prunable_share_1bleu": {"mean": round(float(prunable.mean()), 4), "sd": round(float(sd(prunable)), 4)},
    }
