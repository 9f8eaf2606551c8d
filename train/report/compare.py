"""`python -m train.report.compare A B [...] --out DIR`: several sweeps' points on one table and one plot.

    python -m train.report.compare multirun/<date>_head_count_paper multirun/<date>_head_count_paper_width \
        --out reports/two_readings

Each of A, B, ... is a seed sweep's folder (its report/points.csv is read; the report is built first
when the folder has runs but no report yet), a report folder, or a points.csv itself: a report is all
it needs, so sweeps whose run folders were deleted can still be compared. The sweeps must share the
swept key on the x axis (--key; default the first key they all have, e.g. model.num_heads). Written
under DIR:

  compare.md    a row per key value and sweep: mean ± sd [95% CI] of every metric the sweeps all
                report, with heads x dim, parameters, FLOPs per token and finished seeds (also printed)
  compare.png   one panel per metric, one line per sweep: the mean and its 95% interval over seeds

A point with no finished seed has no mean: its cell says what was not averaged, and the plot
leaves it out.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from train.report.sweep import REPORT_DIR
from train.report.table import si_text
from train.report.values import finite_number, sort_key

POINTS_FILE = "points.csv"
FIRST_METRIC_COLUMN = "seeds finished"  # points.csv: the swept keys come before this column
DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_")  # hydra.sweep.dir's ${now:...}_


@dataclass
class SweepPoints:
    label: str
    source: Path  # the points.csv read
    keys: list[str]  # the swept keys other than seed
    rows: list[dict[str, str]]

    def metrics(self) -> list[str]:
        """"test bleu", "val loss", ...: every metric some point of the points.csv has a mean of."""
        columns = [c for c in self.rows[0] if c.endswith(" mean")] if self.rows else []
        return [c[: -len(" mean")] for c in columns if any(finite_number(r.get(c)) is not None for r in self.rows)]

    def row(self, key: str, value: str) -> Optional[dict[str, str]]:
        return next((r for r in self.rows if r.get(key) == value), None)


def points_file(path: Path) -> Path:
    """The points.csv behind a sweep folder, a report folder or the file itself; builds the
    report of a sweep folder that has runs but none yet."""
    if path.is_file():
        return path
    for candidate in (path / POINTS_FILE, path / REPORT_DIR / POINTS_FILE):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        from train.report.build import build_report

        report = build_report(path, plots=False)
        if report["points"]:
            return path / REPORT_DIR / POINTS_FILE
        raise ValueError(f"{path} holds no seed sweep (no points over seeds: sweep `seed` with the other keys)")
    raise ValueError(f"{path} does not exist (give a sweep folder, its report folder or a points.csv)")


def default_label(source: Path) -> str:
    folder = source.parent.parent if source.parent.name == REPORT_DIR else source.parent
    return DATE_PREFIX.sub("", folder.name) or folder.name


def read_points(path: Path, label: Optional[str] = None) -> SweepPoints:
    source = points_file(path)
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    if FIRST_METRIC_COLUMN not in columns:
        raise ValueError(f"{source} is not a report's points.csv (no {FIRST_METRIC_COLUMN!r} column)")
    keys = columns[: columns.index(FIRST_METRIC_COLUMN)]
    return SweepPoints(label or default_label(source), source, keys, rows)


def shared_key(sweeps: list[SweepPoints], key: Optional[str]) -> str:
    if key is not None:
        lacking = [s.label for s in sweeps if key not in s.keys]
        if lacking:
            raise ValueError(f"--key {key} is not swept in {', '.join(lacking)}")
        return key
    common = [k for k in sweeps[0].keys if all(k in s.keys for s in sweeps[1:])]
    if not common:
        raise ValueError("the sweeps share no swept key: " + "; ".join(f"{s.label}: {', '.join(s.keys)}" for s in sweeps))
    return common[0]


def interval_text(row: Optional[dict[str, str]], metric: str, digits: int) -> str:
    if row is None:
        return "–"
    mean, sd = finite_number(row.get(f"{metric} mean")), finite_number(row.get(f"{metric} sd"))
    if mean is None:
        return row.get("not averaged") or "no finished seed"
    low, high = finite_number(row.get(f"{metric} ci95 low")), finite_number(row.get(f"{metric} ci95 high"))
    text = f"{mean:.{digits}f}"
    if sd is not None and low is not None and high is not None:
        text += f" ± {sd:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def compare_markdown(sweeps: list[SweepPoints], key: str, metrics: list[str]) -> str:
    """One row per (key value, sweep): the sweeps' rows for one value sit together."""
    values = sorted({r[key] for s in sweeps for r in s.rows}, key=sort_key)
    cols = [key, "sweep", "heads x dim", "params", "FLOPs/token", "seeds"] + metrics
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for value in values:
        for s in sweeps:
            row = s.row(key, value)
            if row is None:
                continue
            seeds = row.get(FIRST_METRIC_COLUMN) or "–"
            if row.get("not averaged"):
                seeds += f" ({row['not averaged']}: not averaged)"
            cells = [value, s.label, row.get("heads x dim") or "–", si_text(row.get("params")),
                     si_text(row.get("FLOPs/token")), seeds]
            cells += [interval_text(row, m, 3 if "loss" in m or "ratio" in m else 2) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_plot(sweeps: list[SweepPoints], key: str, metrics: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({r[key] for s in sweeps for r in s.rows}, key=sort_key)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for n, s in enumerate(sweeps):
            xs, means, below, above = [], [], [], []
            for i, value in enumerate(values):
                row = s.row(key, value)
                mean = finite_number(row.get(f"{metric} mean")) if row else None
                if mean is None:
                    continue
                low = finite_number(row.get(f"{metric} ci95 low"))
                high = finite_number(row.get(f"{metric} ci95 high"))
                # Shift each sweep a little sideways so that overlapping intervals stay readable.
                xs.append(i + (n - (len(sweeps) - 1) / 2) * 0.06)
                means.append(mean)
                below.append(mean - low if low is not None else 0.0)
                above.append(high - mean if high is not None else 0.0)
            ax.errorbar(xs, means, yerr=[below, above], marker="o", capsize=3, label=s.label)
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(key)
        ax.set_title(f"{metric} (mean, 95% CI over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(paths: list[Path], out_dir: Path, labels: Optional[list[str]] = None, key: Optional[str] = None,
            metrics: Optional[list[str]] = None, plots: bool = True) -> dict:
    """Write compare.md (and compare.png) for the sweeps at `paths`; return {"markdown", "files", "key", "metrics"}."""
    if len(paths) < 2:
        raise ValueError("give at least two sweeps to compare")
    if labels and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} --label for {len(paths)} sweeps: give one per sweep, in order")
    sweeps = [read_points(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    key = shared_key(sweeps, key)
    shared = [m for m in sweeps[0].metrics() if all(m in s.metrics() for s in sweeps[1:])]
    if metrics:
        unknown = [m for m in metrics if m not in shared]
        if unknown:
            raise ValueError(f"--metric {', '.join(unknown)}: not in every sweep's points.csv; shared: {', '.join(shared)}")
        shared = metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = "\n".join(f"- {s.label}: {s.source}" for s in sweeps)
    markdown = (f"# {' vs '.join(s.label for s in sweeps)}\n\nAgainst {key}: mean ± sd [95% confidence interval of "
                f"the mean] over each point's finished seeds.\n\n{sources}\n\n{compare_markdown(sweeps, key, shared)}\n")
    files = [out_dir / "compare.md"]
    plotted = [m for m in shared if m.startswith("test ")] or shared[:3]
    if plots and plotted:
        files.append(compare_plot(sweeps, key, plotted, out_dir / "compare.png"))
        markdown += f"\n![{', '.join(plotted)} against {key}](compare.png)\n"
    files[0].write_text(markdown)
    return {"markdown": markdown, "files": files, "key": key, "metrics": shared}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.report.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep folders, report folders or points.csv files")
    parser.add_argument("--out", type=Path, required=True, help="where to write compare.md and compare.png")
    parser.add_argument("--label", action="append", default=None, help="a name per sweep, in order (default: the folder's)")
    parser.add_argument("--key", default=None, help="the swept key on the x axis (default: the first they share)")
    parser.add_argument("--metric", action="append", default=None, help='only these metrics, e.g. "test bleu"')
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = compare(args.sweeps, args.out, args.label, args.key, args.metric, plots=not args.no_plots)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(result["markdown"] + "\nwritten: " + ", ".join(str(p) for p in result["files"]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
