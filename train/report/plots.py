"""The report's figures, each with a text version for report.md and the terminal.

  metric_vs_<key>.png       final validation loss / metric and test metric against each swept key
                            (mean and 95% confidence interval over seeds when `seed` is swept)
  val_curves.png            validation loss and metric against step, all runs overlaid
  attention_entropy.png     per-layer attention entropy (nats, mean over heads, at the last
                            probe) against the head count, one panel per attention type

Each function returns (the figure's path or None when there is nothing to draw, its text).
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from model.config import ATTENTION_TYPES
from train.report.runs import Run
from train.report.statistics import interval
from train.report.sweep import sorted_values
from train.report.values import finite_number, mean_sd_n, sort_key

SPARK = "▁▂▃▄▅▆▇█"


# --------------------------------------------------------------------------- text charts
def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(SPARK[int(round((v - lo) / span * (len(SPARK) - 1))) if span > 0 else 0] for v in values)


def _bar(value: float, top: float, width: int = 24) -> str:
    if top <= 0 or not math.isfinite(value):
        return ""
    return "█" * max(0, int(round(width * value / top)))


def _label(run: Run, keys: list[str]) -> str:
    return " ".join(f"{k.split('.')[-1]}={run.value(k)}" for k in keys) or run.name


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "key"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- plots + their text
def metric_vs_key(runs: list[Run], keys: list[str], key: str, metric: str, out_dir: Path) -> tuple[Optional[Path], str]:
    """Final metrics against one swept key; lines for the other non-seed keys; spread over seeds."""
    done = [r for r in runs if r.summary is not None]
    if not done:
        return None, ""
    others = [k for k in keys if k not in (key, "seed")]
    xs = sorted_values(done, key)
    panels = [("val/loss", "validation loss"), (f"val/{metric}", f"validation {metric}"),
              (f"test/{metric}", f"test {metric}")]
    panels = [(m, t) for m, t in panels if any(finite_number(r.summary.get(m)) is not None for r in done)]
    seeds = "seed" in keys and key != "seed"

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    lines = sorted({tuple(r.value(k) for k in others) for r in done}, key=lambda t: [sort_key(v) for v in t])
    for ax, (m, title) in zip(axes[0], panels):
        for line in lines[:12]:
            members = [r for r in done if tuple(r.value(k) for k in others) == line]
            px, mean, err = [], [], []
            for i, x in enumerate(xs):
                vals = [finite_number(r.summary.get(m)) for r in members if r.value(key) == x]
                vals = [v for v in vals if v is not None]
                if vals:
                    iv = interval(vals)
                    px.append(i), mean.append(iv.mean), err.append(iv.half_width)
                    ax.scatter([i] * len(vals), vals, s=10, alpha=0.35, color="gray")
            label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, line)) or None
            ax.errorbar(px, mean, yerr=err if seeds else None, marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(key)
        ax.set_title(title + (" (mean, 95% CI over seeds)" if seeds else ""), fontsize=9)
        ax.grid(alpha=0.3)
    if others:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"metric_vs_{_safe(key)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    # Text: the validation metric by this key's value, pooled over seeds and the other keys.
    m = f"val/{metric}"
    groups = {x: [v for v in (finite_number(r.summary.get(m)) for r in done if r.value(key) == x) if v is not None]
              for x in xs}
    top = max((max(v) for v in groups.values() if v), default=0.0)
    pooled = [w for w, on in (("seeds", "seed" in keys and key != "seed"), ("the other swept values", others)) if on]
    text = [f"{m} by {key}" + (f" (mean ± sd over {' and '.join(pooled)}; n runs)" if pooled else ""), "```"]
    width = max(len(x) for x in xs)
    for x in xs:
        if groups[x]:
            mu, sd, n = mean_sd_n(groups[x])
            spread = f" ± {sd:5.2f}  n={n}" if n > 1 else ""
            text.append(f"{x:>{width}}  {_bar(mu, top):<24}  {mu:7.2f}{spread}")
        else:
            text.append(f"{x:>{width}}  {'':<24}  no finished run")
    text.append("```")
    return path, "\n".join(text)


def val_curves(runs: list[Run], keys: list[str], metric: str, out_dir: Path) -> tuple[Optional[Path], str]:
    series = []
    for run in runs:
        rows = [r for r in run.metrics if finite_number(r.get("val/loss")) is not None]
        if rows:
            series.append((run, [int(r["step"]) for r in rows], [float(r["val/loss"]) for r in rows],
                           [finite_number(r.get(f"val/{metric}")) for r in rows]))
    if not series:
        return None, ""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("viridis")
    first = next((k for k in keys if k != "seed"), None)
    colour_values = sorted_values([s[0] for s in series], first) if first else []
    styles = ["-", "--", ":", "-."]
    seed_values = sorted_values([s[0] for s in series], "seed") if "seed" in keys else []
    for run, steps, loss, score in series:
        c = cmap(colour_values.index(run.value(first)) / max(len(colour_values) - 1, 1)) if first else None
        ls = styles[seed_values.index(run.value("seed")) % len(styles)] if seed_values else "-"
        label = _label(run, keys)
        axes[0].plot(steps, loss, ls, color=c, marker=".", label=label)
        pts = [(s, v) for s, v in zip(steps, score) if v is not None]
        if pts:
            axes[1].plot(*zip(*pts), ls, color=c, marker=".", label=label)
    axes[0].set_title("validation loss", fontsize=9)
    axes[1].set_title(f"validation {metric} (on the val subset; the final point on all of validation)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if len(series) <= 16:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "val_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    width = max(len(_label(s[0], keys)) for s in series)
    text = [f"validation curves (val loss and val {metric} at each evaluation, first -> last)", "```"]
    for run, steps, loss, score in series:
        sc = [v for v in score if v is not None]
        tail = f"   {metric} {sparkline(sc)} {sc[0]:.2f} -> {sc[-1]:.2f}" if sc else ""
        text.append(f"{_label(run, keys):<{width}}  loss {sparkline(loss)} {loss[0]:.3f} -> {loss[-1]:.3f} "
                    f"(step {steps[-1]}){tail}")
    text.append("```")
    return path, "\n".join(text)


def last_attention(run: Run) -> dict[str, float]:
    """The attention statistics of the run's last probe (keys attn/{type}/layer{l}/{stat}_mean)."""
    for row in reversed(run.metrics):
        stats = {k: float(v) for k, v in row.items() if k.startswith("attn/") and finite_number(v) is not None}
        if stats:
            return stats
    return {}


def attention_entropy(runs: list[Run], out_dir: Path) -> tuple[Optional[Path], str]:
    pattern = re.compile(r"attn/(\w+?)/layer(\d+)/entropy_mean$")
    # (type, layer, heads) -> entropies across runs (seeds, other swept values)
    values: dict[tuple[str, int, int], list[float]] = {}
    for run in runs:
        heads = run.cfg("model.num_heads")
        if not isinstance(heads, int):
            continue
        for key, v in last_attention(run).items():
            m = pattern.match(key)
            if m:
                values.setdefault((m.group(1), int(m.group(2)), heads), []).append(v)
    if not values:
        return None, ""
    types = [t for t in ATTENTION_TYPES if any(k[0] == t for k in values)]
    heads_all = sorted({k[2] for k in values})
    plt = _plt()
    fig, axes = plt.subplots(1, len(types), figsize=(4.2 * len(types), 3.4), squeeze=False)
    text = ["attention entropy by layer and head count (nats, mean over heads at the last probe; "
            "mean over runs with that head count)"]
    for ax, kind in zip(axes[0], types):
        layers = sorted({k[1] for k in values if k[0] == kind})
        text += [f"{kind}:", "```", "layer  " + "".join(f"{f'{h} heads':>10}" for h in heads_all)]
        for layer in layers:
            hs = [h for h in heads_all if (kind, layer, h) in values]
            means = [mean_sd_n(values[(kind, layer, h)]) for h in hs]
            ax.errorbar(hs, [m[0] for m in means], yerr=[m[1] for m in means], marker="o", capsize=3,
                        label=f"layer {layer}")
            cells = "".join(f"{mean_sd_n(values[(kind, layer, h)])[0]:>10.3f}" if (kind, layer, h) in values
                            else f"{'–':>10}" for h in heads_all)
            text.append(f"{layer:>5}  {cells}")
        text.append("```")
        ax.set_xscale("log", base=2)
        ax.set_xticks(heads_all, [str(h) for h in heads_all])
        ax.set_xlabel("num_heads")
        ax.set_ylabel("entropy (nats)")
        ax.set_title(kind, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "attention_entropy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "\n".join(text)
