"""Drawing attention: one head-grid figure per (attention type, layer), and layer-by-head
heatmaps of a statistic. Returns RGB arrays (for TensorBoard/wandb) and writes PNGs.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot): no global state,
no GUI backend, safe to call from a training process on a headless machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

AXIS_NAMES = {  # (rows, columns) of each attention type's map
    "encoder_self": ("source (query)", "source (key)"),
    "decoder_self": ("target input (query)", "target input (key)"),
    "cross": ("target input (query)", "source (key)"),
}
DPI = 100
MAX_INCHES = 10.24  # 1024 px at DPI: big enough to read, small enough for dashboards and wandb
CMAP = "viridis"


def grid_shape(num_heads: int) -> tuple[int, int]:
    """(rows, cols) for the head panels: near-square, wider than tall (1 -> 1x1, 8 -> 3x3, 16 -> 4x4)."""
    cols = math.ceil(math.sqrt(num_heads))
    return math.ceil(num_heads / cols), cols


def _fontsize(panel_inches: float, num_labels: int) -> float:
    """Tick label size that fits num_labels labels along a panel side (points), kept readable."""
    per_label_pt = panel_inches * 72 / max(num_labels, 1)
    return float(np.clip(per_label_pt * 0.8, 4.0, 9.0))


def head_grid_figure(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str],
                     title: str, query_label: str = "query", key_label: str = "key") -> Figure:
    """One panel per head, shared colour scale and one colour bar.

    weights: (H, T, S) for one example, already cropped to its real tokens;
    query_tokens: T labels (rows); key_tokens: S labels (columns); *_label: the axis names.
    """
    num_heads, t, s = weights.shape
    rows, cols = grid_shape(num_heads)
    # Margins (inches) are computed, not found by constrained layout: measuring hundreds of tick
    # labels made that cost seconds per figure. Labels sit on the outer panels only.
    longest = max([len(tok) for tok in (*query_tokens, *key_tokens)] + [1])
    side = min(4.0, (MAX_INCHES - 1.5) / cols, (MAX_INCHES - 1.5) / rows)  # first guess at a panel
    size = _fontsize(side, max(t, s))
    label_in = min(1.6, 0.15 + longest * size * 0.62 / 72)  # room for the rotated/left tick labels
    left, bottom, top, right = label_in + 0.25, label_in + 0.25, 0.45, 1.0  # + axis names; right: colour bar
    gap = 0.25  # between panels: the "head h" titles
    panel = min(4.0, (MAX_INCHES - left - right - gap * (cols - 1)) / cols,
                (MAX_INCHES - bottom - top - gap * (rows - 1)) / rows)
    width = left + right + cols * panel + gap * (cols - 1)
    height = bottom + top + rows * panel + gap * (rows - 1)
    fig = Figure(figsize=(width, height), dpi=DPI)
    vmax = float(np.max(weights)) if weights.size else 1.0
    norm = colors.Normalize(vmin=0.0, vmax=max(vmax, 1e-6))  # the scale all heads share
    image = None
    for h in range(num_heads):
        r, c = divmod(h, cols)
        x0 = left + c * (panel + gap)
        y0 = height - top - (r + 1) * panel - r * gap
        ax = fig.add_axes((x0 / width, y0 / height, panel / width, panel / height))
        image = ax.imshow(weights[h], cmap=CMAP, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=8, pad=2)
        ax.tick_params(length=0, pad=1)
        bottom_row = h + cols >= num_heads  # no panel below this one
        ax.set_xticks(range(s) if bottom_row else [], labels=list(key_tokens) if bottom_row else [],
                      rotation=90, fontsize=size)
        ax.set_yticks(range(t) if c == 0 else [], labels=list(query_tokens) if c == 0 else [], fontsize=size)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    grid_mid_x = (left + (width - right)) / 2 / width
    grid_mid_y = (bottom + (height - top)) / 2 / height
    fig.text(grid_mid_x, 0.08 / height, key_label, ha="center", va="bottom", fontsize=9)
    fig.text(0.08 / width, grid_mid_y, query_label, ha="left", va="center", rotation=90, fontsize=9)
    if image is not None:
        bar = fig.add_axes(((width - right + 0.2) / width, bottom / height, 0.15 / width,
                            (height - top - bottom) / height))
        fig.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
    return fig


def stat_heatmap_figure(values: np.ndarray, title: str, label: str) -> Figure:
    """A (L, H) statistic as a layer-by-head heatmap, values written in the cells when they fit."""
    layers, heads = values.shape
    cell_w, cell_h = min(0.55, 8.0 / heads), min(0.45, 8.0 / layers)
    plot_w, plot_h = max(2.6, heads * cell_w), max(1.0, layers * cell_h)  # room for the title
    left, right, bottom, top = 0.6, 0.9, 0.5, 0.35  # inches: axis labels, colour bar, title
    width, height = left + right + plot_w, bottom + top + plot_h
    fig = Figure(figsize=(width, height), dpi=DPI)  # fixed margins: no layout engine to run
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    image = ax.imshow(np.ma.masked_invalid(values), cmap=CMAP, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(heads), labels=[str(h) for h in range(heads)], fontsize=7)
    ax.set_yticks(range(layers), labels=[str(layer) for layer in range(layers)], fontsize=7)
    ax.tick_params(length=0, pad=2)
    ax.set_xlabel("head", fontsize=8, labelpad=2)
    ax.set_ylabel("layer", fontsize=8, labelpad=2)
    ax.set_title(title, fontsize=9, pad=4)
    if heads <= 16 and layers <= 12:
        lo, hi = (float(np.nanmin(values)), float(np.nanmax(values))) if np.isfinite(values).any() else (0, 1)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = (v - lo) < 0.5 * (hi - lo)  # viridis is dark at the low end: white text there
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
    bar = fig.add_axes(((width - right + 0.12) / width, bottom / height, 0.12 / width, plot_h / height))
    fig.colorbar(image, cax=bar).ax.tick_params(labelsize=6)
    bar.set_ylabel(label, fontsize=7)
    return fig


def render(fig: Figure, path: Optional[Path] = None) -> np.ndarray:
    """Draw the figure once: returns (H, W, 3) uint8 and, with a path, writes the same pixels as PNG."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)  # RGB PNG; loggers reuse these bytes instead of re-encoding
    return rgb
