"""Figures of `python -m train.heads`: head importance, the pruning curve, alignment F1 per head.

matplotlib's object API on an Agg canvas (no pyplot, no global state), like attention_plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TITLES = {"encoder_self": "encoder self", "decoder_self": "decoder self", "cross": "cross"}


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def _heatmap(ax, values: np.ndarray, title: str, col_labels: Sequence[str], vmin: float, vmax: float,
             cmap: str = "viridis", fmt: str = "{:.2f}"):
    """Layer-by-column heatmap with each value written in its cell."""
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_title(title)
    ax.set_xticks(range(values.shape[1]), col_labels)
    ax.set_yticks(range(values.shape[0]), [str(i) for i in range(values.shape[0])])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    mid = (vmin + vmax) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):  # NaN: a head a pruned layer does not have
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="black" if v > mid else "white")
    return im


def importance_figure(normalized: dict[str, np.ndarray], order_rank: dict[str, np.ndarray]) -> Figure:
    """One heatmap per attention type of the per-layer-normalised importance; the small number
    in each cell is the head's pruning rank (1 = switched off first)."""
    kinds = [k for k in TITLES if k in normalized]
    heads = max(normalized[k].shape[1] for k in kinds)
    fig = Figure(figsize=(1.2 + 3.6 * len(kinds) * max(heads, 4) / 4, 3.6), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        values = normalized[kind]
        im = _heatmap(ax, values, f"{TITLES[kind]} attention", [str(h) for h in range(values.shape[1])], 0.0, 1.0)
        for (i, j), r in np.ndenumerate(order_rank[kind]):
            if r <= 0:  # no such head (or already off): no rank
                continue
            ax.text(j + 0.45, i + 0.45, f"#{r}", ha="right", va="bottom", fontsize=7,
                    color="black" if values[i, j] > 0.5 else "white")
    fig.colorbar(im, ax=list(axes), label="importance / layer L2 norm")
    fig.suptitle("Head importance |dL/d gate| (Michel et al. 2019); #k = pruning order")
    return fig


def pruning_figure(curve: Sequence[dict], share_1bleu: float, metric: str = "bleu") -> Figure:
    """BLEU (left axis) and validation loss (right axis) against the share of heads switched off."""
    share = np.array([p["share"] for p in curve]) * 100
    score = np.array([p[metric] for p in curve])
    loss = np.array([p["val_loss"] for p in curve])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(share, score, "o-", color="tab:blue", label=metric.upper())
    ax.axhline(score[0] - 1.0, color="tab:blue", ls=":", lw=1, label=f"unpruned {metric.upper()} - 1")
    ax.axvline(share_1bleu * 100, color="0.5", ls="--", lw=1,
               label=f"{share_1bleu:.0%} of heads off, < 1 {metric.upper()} lost")
    ax.set_xlabel("heads switched off (%), least important first")
    ax.set_ylabel(metric.upper(), color="tab:blue")
    ax.set_xlim(-2, 102)
    right = ax.twinx()
    right.plot(share, loss, "s--", color="tab:red", ms=4, label="validation loss")
    right.set_ylabel("validation loss (nats/token)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center left", fontsize=8)
    ax.set_title("Pruning heads by importance")
    return fig


def alignment_figure(panels: dict[str, np.ndarray], note: str = "") -> Figure:
    """Alignment F1 of every cross-attention head (+ the layer's head average), one panel per
    query convention: {title: (L, H + 1) F1}; `note` goes under the panels."""
    fig = Figure(figsize=(1.2 + 3.8 * len(panels), 3.6 if note else 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vmax = max(float(np.max(v)) for v in panels.values()) or 1.0
    for ax, (title, f1) in zip(axes, panels.items()):
        labels = [str(h) for h in range(f1.shape[1] - 1)] + ["avg"]
        im = _heatmap(ax, f1, title, labels, 0.0, vmax)
        ax.axvline(f1.shape[1] - 1.5, color="white", lw=2)
    fig.colorbar(im, ax=list(axes), label="F1 against gold links")
    fig.suptitle("Cross-attention argmax word alignments (teacher forcing)")
    if note:
        fig.supxlabel(note, fontsize=8)
    return fig


ORDER_STYLE = {"importance": ("tab:blue", "o-"), "gates": ("tab:green", "s-"), "random": ("tab:gray", "^--")}


def orders_figure(orders: dict[str, dict], metric: str = "bleu") -> Figure:
    """Score against the share of heads removed, one line per pruning order (heads.json's
    pruning_orders); a multi-seed order is drawn as its mean with a band of ± one sd."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, o in orders.items():
        share = np.array([s["share"] for s in o["steps"]]) * 100
        mean, sd = np.array(o["mean"]), np.array(o["sd"])
        color, style = ORDER_STYLE.get(name, ("tab:purple", "d-"))
        label = name if o["seeds"] == 1 else f"{name} (mean ± sd, {o['seeds']} seeds)"
        ax.plot(share, mean, style, color=color, ms=4, label=label)
        if o["seeds"] > 1:
            ax.fill_between(share, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    first = next(iter(orders.values()))
    ax.axhline(first["mean"][0] - 1.0, color="0.5", ls=":", lw=1, label=f"unpruned {metric.upper()} - 1")
    ax.set_xlabel("heads switched off (%)")
    ax.set_ylabel(metric.upper())
    ax.set_xlim(-2, 102)
    ax.legend(fontsize=8)
    names = {"importance": "importance", "gates": "trained gates", "random": "random"}
    ax.set_title("Pruning orders: " + ", ".join(names.get(n, n) for n in orders))
    return fig
