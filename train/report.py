"""`python -m train.report MULTIRUN_DIR`: compare the runs of a sweep in one table and a few plots.

    python -m train.report multirun/2026-01-01_12-00-00_head_sweep

Every folder under MULTIRUN_DIR holding `.hydra/config.yaml` is a run. The swept keys come from
the sweep record the sweep callback leaves (`sweep.json`, train/sweep/callbacks.py), else Hydra's
`multirun.yaml`, plus any override whose value differs between runs (Optuna trials). Written
under MULTIRUN_DIR/report/:

  report.md                 the table (also printed), then text versions of every plot
  report.csv                the table at full precision, one row per run
  metric_vs_<key>.png       final validation loss / metric and test metric against each swept key
                            (mean and standard deviation over seeds when `seed` is swept)
  val_curves.png            validation loss and metric against step, all runs overlaid
  attention_entropy.png     per-layer attention entropy (nats, mean over heads, at the last
                            probe) against the head count, one panel per attention type

Runs that have a head analysis (`python -m train.heads run_dir=RUN`, heads/heads.json) add two
columns: `prunable heads`, the share of heads that can be switched off for less than 1 point of
the metric lost, and `best align F1`, the best cross-attention head's word-alignment F1.

Failed runs (the job raised), unfinished runs (no summary: killed, preempted or still running)
and points of the grid that never started are rows of the table, with what they reached.

Head counts: with `model.head_dim` unset, heads split a fixed d_model, so parameters and FLOPs
stay the same across head counts; with `model.head_dim` set, the attention width is
num_heads * head_dim and both grow with it. The `heads x dim` column shows which, and
`params` and `FLOPs/token` make the points comparable either way.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPORT_DIR = "report"
ATTENTION_TYPES = ("encoder_self", "decoder_self", "cross")
SPARK = "▁▂▃▄▅▆▇█"


# --------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    name: str  # path relative to the multirun directory; "" for a point that never started
    path: Optional[Path]
    overrides: dict[str, str]
    config: dict = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)  # config groups: model -> tiny, ...
    summary: Optional[dict] = None
    heads: Optional[dict] = None  # heads/heads.json, written by `python -m train.heads run_dir=...`
    metrics: list[dict] = field(default_factory=list)
    status: str = "unfinished"
    error: Optional[str] = None

    def value(self, key: str) -> str:
        """The run's value of a swept key, as the command line spelled it."""
        if key in self.overrides:
            return self.overrides[key]
        bare = key.lstrip("+~")
        if bare in self.choices:
            return str(self.choices[bare])
        node: Any = self.config
        for part in bare.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return "" if node is None or isinstance(node, (dict, list)) else str(node)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def _split_override(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file must not stop the report
        return None


def read_metrics(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the line a killed job was writing
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def load_run(path: Path, root: Path) -> Run:
    from train.sweep.callbacks import STATUS_FILE

    overrides = dict(_split_override(o) for o in (_read_yaml(path / ".hydra/overrides.yaml") or []))
    hydra_cfg = _read_yaml(path / ".hydra/hydra.yaml") or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    run = Run(
        name=str(path.relative_to(root)) if path != root else path.name,
        path=path,
        overrides=overrides,
        config=_read_yaml(path / ".hydra/config.yaml") or {},
        choices={k: v for k, v in choices.items() if not k.startswith("hydra/")},
        summary=_read_json(path / "summary.json"),
        heads=_read_json(path / "heads" / "heads.json"),
        metrics=read_metrics(path / "metrics.jsonl"),
    )
    job = _read_json(path / STATUS_FILE) or {}
    if run.summary is not None:
        run.status = str(run.summary.get("status", "finished"))
    elif job.get("status") == "failed":
        run.status, run.error = "failed", job.get("error")
    else:
        run.status = "unfinished"  # killed, preempted, or still running
    return run


def find_runs(root: Path) -> list[Run]:
    if (root / ".hydra/config.yaml").exists():
        return [load_run(root, root)]
    paths = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml")
                   if REPORT_DIR not in p.relative_to(root).parts[:1])
    return [load_run(p, root) for p in paths]


def sweep_record(root: Path) -> tuple[list[str], Optional[list[list[str]]]]:
    """(swept keys, every point of the grid or None) from the sweep's own records."""
    from train.sweep.callbacks import SWEEP_FILE

    record = _read_json(root / SWEEP_FILE)
    if record:
        return list(record.get("swept") or []), record.get("points")
    multirun = root / "multirun.yaml"
    if multirun.exists():  # a sweep launched without the callback: expand what Hydra saved
        try:
            from omegaconf import OmegaConf

            from train.sweep.callbacks import expand_grid, sweep_arguments

            points, swept, exact = expand_grid(sweep_arguments(OmegaConf.load(multirun)))
            return swept, points if exact else None
        except Exception:
            pass
    return [], None


def swept_keys(runs: list[Run], recorded: list[str]) -> list[str]:
    keys = list(recorded)
    for run in runs:  # keys whose values differ between runs (Optuna trials, merged sweeps)
        for key in run.overrides:
            if key not in keys and len({r.overrides.get(key) for r in runs}) > 1:
                keys.append(key)
    return keys


def missing_points(runs: list[Run], points: Optional[list[list[str]]], keys: list[str]) -> list[Run]:
    """Grid points with no run directory: the sweep stopped before launching them."""
    if not points:
        return []
    seen = {tuple(r.value(k) for k in keys) for r in runs}
    out = []
    for point in points:
        overrides = dict(_split_override(o) for o in point)
        run = Run(name="", path=None, overrides=overrides, status="not started")
        if tuple(run.value(k) for k in keys) not in seen:
            out.append(run)
    return out


# --------------------------------------------------------------------------- the table
def primary_metric(runs: list[Run]) -> str:
    from train.evals.scores import primary_metric as metric_for

    for run in runs:
        task = run.cfg("data.task")
        if task:
            return metric_for(task)
    return "bleu"


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def last_value(run: Run, key: str) -> Optional[float]:
    for row in reversed(run.metrics):
        if _num(row.get(key)) is not None:
            return float(row[key])
    return None


def head_layout(run: Run) -> str:
    heads, d_model, head_dim = run.cfg("model.num_heads"), run.cfg("model.d_model"), run.cfg("model.head_dim")
    if not isinstance(heads, int) or heads <= 0:
        return ""
    if not isinstance(head_dim, int):
        if not isinstance(d_model, int):
            return ""
        head_dim = d_model // heads
    return f"{heads}x{head_dim}"


def row_for(run: Run, keys: list[str], metric: str) -> dict[str, Any]:
    s = run.summary or {}
    steps = s.get("steps")
    if steps is None and run.metrics:
        steps = max(int(r["step"]) for r in run.metrics)
    throughput = s.get("train/tokens_per_s")
    if throughput is None:
        values = [v for v in (_num(r.get("train/tokens_per_s")) for r in run.metrics[1:]) if v is not None]
        throughput = float(np.median(values)) if values else None
    row: dict[str, Any] = {k: run.value(k) for k in keys}
    row.update({
        "heads x dim": head_layout(run),
        "params": s.get("params"),
        "FLOPs/token": s.get("flops_per_token"),
        "val loss": s["val/loss"] if "val/loss" in s else last_value(run, "val/loss"),
        f"val {metric}": s[f"val/{metric}"] if f"val/{metric}" in s else last_value(run, f"val/{metric}"),
        f"test {metric}": s.get(f"test/{metric}"),
        "tokens/s": throughput,
        "wall s": s.get("wall_s"),
        "steps": steps,
        "max steps": run.cfg("train.max_steps"),
        **head_columns(run, metric),
        "status": run.status,
        "run": run.name,
    })
    return row


HEAD_COLUMNS = ("prunable heads", "best align F1")


def head_columns(run: Run, metric: str) -> dict[str, Any]:
    """The head analysis, when `train.heads` has run: the share of heads that can be switched off
    for less than 1 point of the metric lost, and the best cross-attention head's alignment F1."""
    h = run.heads or {}
    return {"prunable heads": h.get("prunable_share_1bleu"), "best align F1": h.get("best_alignment_f1")}


def _sort_value(value: Any) -> tuple:
    number = _num(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def sort_runs(runs: list[Run], keys: list[str]) -> list[Run]:
    return sorted(runs, key=lambda r: ([_sort_value(r.value(k)) for k in keys], r.name))


def _si(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "–"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= div:
            return f"{number / div:.2f}{suffix}"
    return f"{number:.0f}"


def _fixed(value: Any, digits: int) -> str:
    number = _num(value)
    return "–" if number is None else f"{number:.{digits}f}"


def display_row(row: dict[str, Any], keys: list[str], metric: str) -> dict[str, str]:
    steps, max_steps = row["steps"], row["max steps"]
    status = row["status"]
    if status == "unfinished" and steps is not None:
        status = f"unfinished ({steps}/{max_steps} steps)" if max_steps else f"unfinished (step {steps})"
    out = {k: str(row[k]) for k in keys}
    out.update({
        "heads x dim": row["heads x dim"] or "–",
        "params": _si(row["params"]),
        "FLOPs/token": _si(row["FLOPs/token"]),
        "val loss": _fixed(row["val loss"], 3),
        f"val {metric}": _fixed(row[f"val {metric}"], 2),
        f"test {metric}": _fixed(row[f"test {metric}"], 2),
        "tokens/s": _fixed(row["tokens/s"], 0),
        "wall s": _fixed(row["wall s"], 0),
        "prunable heads": "–" if _num(row["prunable heads"]) is None else f"{row['prunable heads']:.0%}",
        "best align F1": _fixed(row["best align F1"], 3),
        "status": status,
    })
    return out


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    numeric = {c for c in cols if all(re.fullmatch(r"[-+]?[\d.]+[kMG]?|–", r[c] or "–") for r in rows)}
    lines = ["| " + " | ".join(cols) + " |",
             "| " + " | ".join("---:" if c in numeric else "---" for c in cols) + " |"]
    lines += ["| " + " | ".join((r[c] or "").replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


# --------------------------------------------------------------------------- grouping helpers
def _stats(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)


def _sorted_values(runs: list[Run], key: str) -> list[str]:
    return sorted({r.value(key) for r in runs}, key=_sort_value)


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
    xs = _sorted_values(done, key)
    panels = [("val/loss", "validation loss"), (f"val/{metric}", f"validation {metric}"),
              (f"test/{metric}", f"test {metric}")]
    panels = [(m, t) for m, t in panels if any(_num(r.summary.get(m)) is not None for r in done)]
    seeds = "seed" in keys and key != "seed"

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    lines = sorted({tuple(r.value(k) for k in others) for r in done}, key=lambda t: [_sort_value(v) for v in t])
    for ax, (m, title) in zip(axes[0], panels):
        for line in lines[:12]:
            members = [r for r in done if tuple(r.value(k) for k in others) == line]
            px, mean, err = [], [], []
            for i, x in enumerate(xs):
                vals = [_num(r.summary.get(m)) for r in members if r.value(key) == x]
                vals = [v for v in vals if v is not None]
                if vals:
                    mu, sd, _ = _stats(vals)
                    px.append(i), mean.append(mu), err.append(sd)
                    ax.scatter([i] * len(vals), vals, s=10, alpha=0.35, color="gray")
            label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, line)) or None
            ax.errorbar(px, mean, yerr=err if seeds else None, marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(key)
        ax.set_title(title + (" (mean ± sd over seeds)" if seeds else ""), fontsize=9)
        ax.grid(alpha=0.3)
    if others:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"metric_vs_{_safe(key)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    # Text: the validation metric by this key's value, pooled over seeds and the other keys.
    m = f"val/{metric}"
    groups = {x: [v for v in (_num(r.summary.get(m)) for r in done if r.value(key) == x) if v is not None] for x in xs}
    top = max((max(v) for v in groups.values() if v), default=0.0)
    pooled = [w for w, on in (("seeds", "seed" in keys and key != "seed"), ("the other swept values", others)) if on]
    text = [f"{m} by {key}" + (f" (mean ± sd over {' and '.join(pooled)}; n runs)" if pooled else ""), "```"]
    width = max(len(x) for x in xs)
    for x in xs:
        if groups[x]:
            mu, sd, n = _stats(groups[x])
            spread = f" ± {sd:5.2f}  n={n}" if n > 1 else ""
            text.append(f"{x:>{width}}  {_bar(mu, top):<24}  {mu:7.2f}{spread}")
        else:
            text.append(f"{x:>{width}}  {'':<24}  no finished run")
    text.append("```")
    return path, "\n".join(text)


def val_curves(runs: list[Run], keys: list[str], metric: str, out_dir: Path) -> tuple[Optional[Path], str]:
    series = []
    for run in runs:
        rows = [r for r in run.metrics if _num(r.get("val/loss")) is not None]
        if rows:
            series.append((run, [int(r["step"]) for r in rows], [float(r["val/loss"]) for r in rows],
                           [_num(r.get(f"val/{metric}")) for r in rows]))
    if not series:
        return None, ""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("viridis")
    first = next((k for k in keys if k != "seed"), None)
    colour_values = _sorted_values([s[0] for s in series], first) if first else []
    styles = ["-", "--", ":", "-."]
    seed_values = _sorted_values([s[0] for s in series], "seed") if "seed" in keys else []
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
        stats = {k: float(v) for k, v in row.items() if k.startswith("attn/") and _num(v) is not None}
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
            means = [_stats(values[(kind, layer, h)]) for h in hs]
            ax.errorbar(hs, [m[0] for m in means], yerr=[m[1] for m in means], marker="o", capsize=3,
                        label=f"layer {layer}")
            cells = "".join(f"{_stats(values[(kind, layer, h)])[0]:>10.3f}" if (kind, layer, h) in values
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


# --------------------------------------------------------------------------- the command
def build_report(root: Path, out_dir: Optional[Path] = None, plots: bool = True) -> dict[str, Any]:
    """Read every run under `root`, write the report files; return {"rows", "markdown", "files"}."""
    root = Path(root)
    runs = find_runs(root)
    recorded, points = sweep_record(root)
    keys = swept_keys(runs, recorded)
    runs = sort_runs(runs + missing_points(runs, points, keys), keys)
    metric = primary_metric(runs)
    rows = [row_for(r, keys, metric) for r in runs]
    shown = [display_row(r, keys, metric) for r in rows]
    if not any(r.heads for r in runs):  # no run has a head analysis: keep the table narrow
        shown = [{k: v for k, v in r.items() if k not in HEAD_COLUMNS} for r in shown]
    table = markdown_table(shown)

    out_dir = Path(out_dir) if out_dir else root / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = [r for r in runs if r.path is not None]
    counts = {s: sum(r.status == s for r in runs) for s in dict.fromkeys(r.status for r in runs)}
    header = [f"# Sweep report: {root.name}", "",
              f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
              f"swept: {', '.join(keys) or 'nothing'}; metric: {metric}. "
              "val loss is per-token cross-entropy (nats) on the whole validation split; "
              f"val/test {metric} are scored on the whole splits at the end of training "
              "(for unfinished runs: the last evaluation, on the validation subset).", ""]
    sections = [table]
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        sections.append("Failed runs:\n" + "\n".join(f"- {r.name}: {r.error}" for r in failed))

    files = []
    plot_keys = [k for k in keys if k != "seed"] or [k for k in keys if k == "seed"]
    for key in plot_keys if plots else []:
        path, text = metric_vs_key(existing, keys, key, metric, out_dir)
        if path:
            files.append(path)
            sections.append(f"{text}\n\n![{metric} vs {key}]({path.name})")
    for draw in (lambda: val_curves(existing, keys, metric, out_dir), lambda: attention_entropy(existing, out_dir)):
        path, text = draw() if plots else (None, "")
        if path:
            files.append(path)
            sections.append(f"{text}\n\n![{path.stem}]({path.name})")

    markdown = "\n".join(header) + "\n" + "\n\n".join(sections) + "\n"
    (out_dir / "report.md").write_text(markdown)
    if rows:
        write_csv(out_dir / "report.csv", rows)
    files = [out_dir / "report.md", out_dir / "report.csv", *files]
    return {"rows": rows, "markdown": markdown, "table": table, "files": files, "keys": keys}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a sweep's folder (hydra.sweep.dir), or one run's")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: MULTIRUN_DIR/report)")
    parser.add_argument("--no-plots", action="store_true", help="only the table (faster)")
    args = parser.parse_args(argv)
    root = args.multirun_dir
    if not root.is_dir():
        print(f"error: {root} is not a directory (give the folder a sweep wrote, hydra.sweep.dir)", file=sys.stderr)
        return 2
    if not find_runs(root) and not sweep_record(root)[1]:
        print(f"error: no runs under {root} (no */.hydra/config.yaml)", file=sys.stderr)
        return 2
    report = build_report(root, args.out, plots=not args.no_plots)
    out = io.StringIO()
    out.write(report["markdown"])
    out.write("\nwritten: " + ", ".join(str(p) for p in report["files"]) + "\n")
    sys.stdout.write(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
