"""The report's table: one row per run (full precision, for report.csv), the same rows formatted
for reading, and the Markdown table.

Head counts: with `model.head_dim` unset, heads split a fixed d_model, so parameters and FLOPs
stay the same across head counts; with `model.head_dim` set, the attention width is
num_heads * head_dim and both grow with it. The `heads x dim` column shows which, and
`params` and `FLOPs/token` make the points comparable either way.

`test loops %` is the share of test hypotheses in which some 4-gram occurs 3 or more times and
`test len ratio` their length over the references' (train/evals/degeneracy.py).

The head-analysis columns (HEAD_COLUMNS) are left out of the shown table when no run has one.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from train.report.runs import Run
from train.report.values import finite_number

HEAD_COLUMNS = ("prunable heads", "best align F1")


def primary_metric(runs: list[Run]) -> str:
    from train.evals.scores import primary_metric as metric_for

    for run in runs:
        task = run.cfg("data.task")
        if task:
            return metric_for(task)
    return "bleu"


def last_value(run: Run, key: str) -> Optional[float]:
    for row in reversed(run.metrics):
        if finite_number(row.get(key)) is not None:
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
        values = [v for v in (finite_number(r.get("train/tokens_per_s")) for r in run.metrics[1:]) if v is not None]
        throughput = float(np.median(values)) if values else None
    row: dict[str, Any] = {k: run.value(k) for k in keys}
    row.update({
        "heads x dim": head_layout(run),
        "params": s.get("params"),
        "FLOPs/token": s.get("flops_per_token"),
        "val loss": s["val/loss"] if "val/loss" in s else last_value(run, "val/loss"),
        f"val {metric}": s[f"val/{metric}"] if f"val/{metric}" in s else last_value(run, f"val/{metric}"),
        f"test {metric}": s.get(f"test/{metric}"),
        "test loops %": s.get("test/repeat_4gram"),
        "test len ratio": s.get("test/len_ratio"),
        "tokens/s": throughput,
        "wall s": s.get("wall_s"),
        "steps": steps,
        "max steps": run.cfg("train.max_steps"),
        **head_columns(run, metric),
        "status": run.status,
        "run": run.name,
    })
    return row


def head_columns(run: Run, metric: str) -> dict[str, Any]:
    """The head analysis, when `train.heads` has run: the share of heads that can be switched off
    for less than 1 point of the metric lost, and the best cross-attention head's alignment F1."""
    h = run.heads or {}
    return {"prunable heads": h.get("prunable_share_1bleu"), "best align F1": h.get("best_alignment_f1")}


def si_text(value: Any) -> str:
    """12345 -> "12.35k": a count with a k / M / G suffix, or "–"."""
    number = finite_number(value)
    if number is None:
        return "–"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= div:
            return f"{number / div:.2f}{suffix}"
    return f"{number:.0f}"


def _fixed(value: Any, digits: int) -> str:
    number = finite_number(value)
    return "–" if number is None else f"{number:.{digits}f}"


def display_row(row: dict[str, Any], keys: list[str], metric: str) -> dict[str, str]:
    steps, max_steps = row["steps"], row["max steps"]
    status = row["status"]
    if status == "unfinished" and steps is not None:
        status = f"unfinished ({steps}/{max_steps} steps)" if max_steps else f"unfinished (step {steps})"
    out = {k: str(row[k]) for k in keys}
    out.update({
        "heads x dim": row["heads x dim"] or "–",
        "params": si_text(row["params"]),
        "FLOPs/token": si_text(row["FLOPs/token"]),
        "val loss": _fixed(row["val loss"], 3),
        f"val {metric}": _fixed(row[f"val {metric}"], 2),
        f"test {metric}": _fixed(row[f"test {metric}"], 2),
        "test loops %": _fixed(row["test loops %"], 1),
        "test len ratio": _fixed(row["test len ratio"], 2),
        "tokens/s": _fixed(row["tokens/s"], 0),
        "wall s": _fixed(row["wall s"], 0),
        "prunable heads": "–" if finite_number(row["prunable heads"]) is None else f"{row['prunable heads']:.0%}",
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
