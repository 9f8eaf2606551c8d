"""The report of one sweep directory: read its runs (and the grid points that never started),
write report.md, report.csv, report.html and the figures under DIR/report/ (or --out); with
`seed` swept, also points.csv (every metric's mean, sd and 95% interval per point) and the
significance of each point's test BLEU against the baseline point."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from train.report.page import render_page
from train.report.plots import attention_entropy, metric_vs_key, val_curves
from train.report.seeds import display_points, group_points, point_keys, point_row, significance
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


def build_report(root: Path, out_dir: Optional[Path] = None, plots: bool = True,
                 baseline: Optional[str] = None) -> dict[str, Any]:
    """Read every run under `root`, write the report files; return {"rows", "markdown", "files",
    "points", "tests", ...}. `baseline`: text that picks the point the others are tested against
    (e.g. "model.num_heads=1"; default: the first point)."""
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
    points, point_rows, tests = [], [], []
    if "seed" in keys:
        points = group_points(runs, keys)
        point_rows = display_points(points, keys, metric)
        sections.append("Over seeds: mean ± sd [95% confidence interval of the mean] of the finished seeds of "
                        "each point; failed and unfinished runs are counted, never averaged.\n\n"
                        + markdown_table(point_rows))
        tests = significance(points, keys, metric, baseline) if len(point_keys(keys)) else []
        if tests:
            sections.append("Significance (paired bootstrap over the test sentences, 1000 resamples, all seeds "
                            "of both points, two-sided):\n\n" + "\n".join(f"- {t.sentence}" for t in tests))
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
    figures = files
    files = [out_dir / "report.md"]
    if rows:
        write_csv(out_dir / "report.csv", rows)
        files.append(out_dir / "report.csv")
    if points:
        write_csv(out_dir / "points.csv", [point_row(p, keys, metric) for p in points])
        files.append(out_dir / "points.csv")
    page = render_page(header[0].lstrip("# "), header[2:], point_rows,
                       [(t.sentence, bool(t.comparison and t.comparison.p_value < 0.05)) for t in tests],
                       shown, runs, figures, out_dir)
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    files = [*files, out_dir / "report.html", *figures]
    return {"rows": rows, "markdown": markdown, "table": table, "files": files, "keys": keys,
            "points": points, "tests": tests}
