"""`python -m train.report.compare`: two seed sweeps' points on one table and one plot, from the
sweep folders or from their reports alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.test_report_statistics import seeded_sweep

from train.report.build import build_report
from train.report.compare import compare


def shifted_sweep(root: Path, shift: float, head_dim: int) -> Path:
    """seeded_sweep with every finished run's test BLEU moved by `shift` and head_dim set."""
    seeded_sweep(root)
    for summary in root.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        data["test/bleu"] += shift
        data["flops_per_token"] *= 2
        summary.write_text(json.dumps(data))
    for config in root.glob("*/.hydra/config.yaml"):
        config.write_text(config.read_text().replace("head_dim: null", f"head_dim: {head_dim}"))
    return root


def test_two_sweeps_on_one_table_and_plot(tmp_path: Path):
    paper = seeded_sweep(tmp_path / "multirun" / "2026-01-01_00-00-00_paper")
    width = shifted_sweep(tmp_path / "multirun" / "2026-01-02_00-00-00_width", 2.0, head_dim=32)
    build_report(paper, plots=False)  # one from its report, one from its runs (its report is built)
    result = compare([paper / "report", width], tmp_path / "out")
    md = result["markdown"]
    assert result["key"] == "model.num_heads"
    assert "test bleu" in result["metrics"] and "val loss" in result["metrics"]
    assert "test chrf" not in result["metrics"]  # no run reports it: no empty column
    rows = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 4 |")]
    assert [r.split(" | ")[1] for r in rows] == ["paper", "width", "paper", "width"]  # labels: dates dropped
    # write_run's test BLEU is 9 + heads + seed: 1 head -> 10, 11, 12; 4 heads -> 13, 14 (seed 2 failed).
    assert "| 1 | paper | 1x64 |" in rows[0] and "11.00 ± 1.00 [8.52, 13.48]" in rows[0]
    assert "| 1 | width | 1x32 |" in rows[1] and "13.00 ± 1.00 [10.52, 15.48]" in rows[1]
    assert "2 (1 failed: not averaged)" in rows[2] and "13.50 ± 0.71 [7.15, 19.85]" in rows[2]
    assert "| 744.19k |" in rows[0] and "| 1.49M |" in rows[1]  # FLOPs/token: the width sweep's doubled
    assert (tmp_path / "out" / "compare.md").read_text() == md
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000 and "![" in md


def test_reports_alone_are_enough(tmp_path: Path):
    """Run folders deleted, reports kept: the comparison reads the points.csv files."""
    kept = []
    for name, shift in (("a", 0.0), ("b", 1.0)):
        sweep = shifted_sweep(tmp_path / name, shift, head_dim=16)
        build_report(sweep, plots=False)
        shutil.copy(sweep / "report" / "points.csv", tmp_path / f"{name}.csv")
        kept.append(tmp_path / f"{name}.csv")
        shutil.rmtree(sweep)
    result = compare(kept, tmp_path / "out", labels=["fixed width", "wider"], metrics=["test bleu"], plots=False)
    assert result["metrics"] == ["test bleu"]
    assert "| 1 | wider | 1x16 |" in result["markdown"] and "12.00 ± 1.00" in result["markdown"]
    assert not (tmp_path / "out" / "compare.png").exists()


def test_bad_input_names_the_problem(tmp_path: Path):
    sweep = seeded_sweep(tmp_path / "s")
    with pytest.raises(ValueError, match="at least two"):
        compare([sweep], tmp_path / "out")
    with pytest.raises(ValueError, match="not swept in"):
        compare([sweep, sweep], tmp_path / "out", key="model.d_model")
    with pytest.raises(ValueError, match="does not exist"):
        compare([sweep, tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="--label for 2 sweeps"):
        compare([sweep, sweep], tmp_path / "out", labels=["one"])
    with pytest.raises(ValueError, match="not in every sweep"):
        compare([sweep, sweep], tmp_path / "out", metrics=["test rouge"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a report's points.csv"):
        compare([sweep, tmp_path / "other.csv"], tmp_path / "out")
    result = run_cli(["-m", "train.report.compare", str(sweep), str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.returncode == 2 and "does not exist" in result.stderr
