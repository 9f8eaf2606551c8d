"""A sweep over seeds, read as points: every metric with its spread and interval over the seeds
of each point, and each point's test BLEU tested against a baseline point.

A point is one combination of the swept keys other than `seed`. Only finished runs are averaged;
failed, unfinished and never-started runs of a point are counted in its row, never averaged in.
The significance test needs each run's `test.hyp.txt` and `test.ref.txt` (written at the end of
training) and is run for translation, where sacreBLEU's statistics apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from train.report.runs import Run
from train.report.statistics import Comparison, Interval, describe, interval, paired_bootstrap
from train.report.table import head_layout
from train.report.values import finite_number, sort_key

HYPOTHESES, REFERENCES = "test.hyp.txt", "test.ref.txt"


@dataclass
class Point:
    values: tuple[str, ...]  # the point's value of each non-seed key
    runs: list[Run] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.status == "finished" and r.summary is not None]

    def not_averaged(self) -> str:
        """"1 failed, 1 unfinished": the point's runs left out of its averages."""
        statuses = [r.status for r in self.runs if r.status != "finished"]
        return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))

    def label(self, keys: list[str]) -> str:
        return " ".join(f"{k}={v}" for k, v in zip(keys, self.values)) or "all runs"


def point_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if k != "seed"]


def group_points(runs: list[Run], keys: list[str]) -> list[Point]:
    """Runs grouped by their non-seed values, in the sweep's sort order."""
    others = point_keys(keys)
    points: dict[tuple[str, ...], Point] = {}
    for run in runs:
        values = tuple(run.value(k) for k in others)
        points.setdefault(values, Point(values)).runs.append(run)
    return sorted(points.values(), key=lambda p: [sort_key(v) for v in p.values])


def summary_metrics(metric: str) -> list[tuple[str, str]]:
    """(summary key, column name) of what the points table averages."""
    return [("val/loss", "val loss"), (f"val/{metric}", f"val {metric}"), (f"test/{metric}", f"test {metric}"),
            ("test/chrf", "test chrf"), ("test/repeat_4gram", "test loops %"), ("test/len_ratio", "test len ratio")]


def point_interval(point: Point, key: str) -> Optional[Interval]:
    values = [v for v in (finite_number(r.summary.get(key)) for r in point.finished) if v is not None]
    return interval(values) if values else None


def point_row(point: Point, keys: list[str], metric: str) -> dict[str, Any]:
    """Full-precision row for report.csv's companion, points.csv."""
    row: dict[str, Any] = dict(zip(point_keys(keys), point.values))
    row["seeds finished"] = len(point.finished)
    row["not averaged"] = point.not_averaged()
    first = point.finished[0] if point.finished else None  # the seeds share the model
    row["heads x dim"] = head_layout(first) if first else ""
    row["params"] = first.summary.get("params") if first else None
    row["FLOPs/token"] = first.summary.get("flops_per_token") if first else None
    for key, name in summary_metrics(metric):
        iv = point_interval(point, key)
        row[f"{name} mean"] = iv.mean if iv else None
        row[f"{name} sd"] = iv.sd if iv else None
        row[f"{name} ci95 low"] = iv.low if iv else None
        row[f"{name} ci95 high"] = iv.high if iv else None
    return row


def format_interval(iv: Optional[Interval], digits: int) -> str:
    if iv is None:
        return "–"
    if iv.n == 1:
        return f"{iv.mean:.{digits}f} (1 seed)"
    return f"{iv.mean:.{digits}f} ± {iv.sd:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def display_points(points: list[Point], keys: list[str], metric: str) -> list[dict[str, str]]:
    """The points table for reading: one column per metric some finished run has."""
    shown = [(key, name) for key, name in summary_metrics(metric)
             if any(key in r.summary for p in points for r in p.finished)]
    rows = []
    for point in points:
        row = {k: v for k, v in zip(point_keys(keys), point.values)}
        row["seeds"] = f"{len(point.finished)}/{len(point.runs)}"
        for key, name in shown:
            row[name] = format_interval(point_interval(point, key), 3 if "loss" in key or "ratio" in key else 2)
        row["not averaged"] = point.not_averaged() or "–"
        rows.append(row)
    return rows


def read_lines(path: Path) -> Optional[list[str]]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None


@dataclass
class Test:
    point: Point
    comparison: Optional[Comparison]  # None when the runs lack their test files
    sentence: str


def significance(points: list[Point], keys: list[str], metric: str = "bleu",
                 baseline: Optional[str] = None) -> list[Test]:
    """Each point's test `metric` against the baseline point (the first one, or the one whose
    label contains `baseline`), by paired bootstrap over the test sentences and all seeds."""
    if metric not in ("bleu", "chrf") or len(points) < 2:
        return []
    others = point_keys(keys)
    base = points[0]
    if baseline is not None:
        matches = [p for p in points if baseline in p.label(others)]
        if not matches:
            raise ValueError(f"--baseline {baseline!r} matches no point; points: "
                             f"{[p.label(others) for p in points]}")
        base = matches[0]

    def test_files(point: Point) -> tuple[list[list[str]], Optional[list[str]]]:
        hyps, refs = [], None
        for run in point.finished:
            h, r = read_lines(run.path / HYPOTHESES), read_lines(run.path / REFERENCES)
            if h is not None and r is not None and len(h) == len(r):
                hyps.append(h)
                refs = refs or r
        return hyps, refs

    base_hyps, refs = test_files(base)
    tests = []
    for point in points:
        if point is base:
            continue
        hyps, point_refs = test_files(point)
        name, base_name = point.label(others), base.label(others)
        why = ("the runs lack test.hyp.txt / test.ref.txt" if not hyps or not base_hyps else
               "the runs were tested on different references" if point_refs != refs else None)
        if why:
            tests.append(Test(point, None, f"{name} vs {base_name}: no test ({why})"))
            continue
        comparison = paired_bootstrap(hyps, base_hyps, refs, metric=metric)
        tests.append(Test(point, comparison, describe(name, base_name, metric, comparison)))
    return tests
