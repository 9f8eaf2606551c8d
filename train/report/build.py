"""The report of one sweep directory: read its runs (and the grid points that never started),
write report.md, report.csv and the figures under DIR/report/ (or --out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from train.report.plots import attention_entropy, metric_vs_key, val_curves
from train.report.sweep import (
    REPORT_DIR,
    find_runs,
    missing_points,
    sort_runs,
    sweep_record,
    swept_keys,
)
from train.report.table import (
    HEAD_COLUMNS,
    display_row,
    markdown_table,
    primary_metric,
    row_for,
    write_csv,
)


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
