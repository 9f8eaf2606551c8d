"""train/report/ on a hand-made multirun directory: every status, seeds, sorting, plots, text."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from train.report.__main__ import main
from train.report.build import build_report
from train.report.plots import sparkline

HEADS = (1, 2, 16)  # 16 sorts after 2: numeric, not lexicographic
SEEDS = (0, 1)


def write_run(root: Path, num: int, heads: int, seed: int, status: str, steps: int = 100) -> Path:
    """One run directory like a sweep job leaves; status: finished | failed | unfinished."""
    overrides = ["model=tiny", f"model.num_heads={heads}", f"seed={seed}"]
    run = root / f"{num}_{','.join(overrides)}"
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "name": "${data.name}",
              "model": {"d_model": 64, "num_heads": heads, "head_dim": None, "num_encoder_layers": 2},
              "data": {"name": "toy", "task": "translation"}, "train": {"max_steps": 100}}
    (run / ".hydra/config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra/hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": "tiny"}}}}))
    bleu = 10.0 + heads + seed  # a known answer for the means
    rows = []
    for step in range(10, steps + 1, 10):
        rows.append({"step": step, "train/loss": 5.0 - step / 50, "train/tokens_per_s": 1000.0 + heads})
        if step % 50 == 0:
            rows.append({"step": step, "val/loss": 4.0 - step / 100, "val/bleu": bleu * step / 100})
            rows.append({"step": step, **{f"attn/{kind}/layer{layer}/entropy_mean": 2.0 - 0.1 * heads - layer
                                          for kind in ("encoder_self", "decoder_self", "cross") for layer in (0, 1)}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 10')  # torn last line
    if status == "finished":
        summary = {"val/loss": 3.0, "val/bleu": bleu, "test/bleu": bleu - 1, "train/tokens_per_s": 1000.0 + heads,
                   "params": 240128, "flops_per_token": 744192.0, "steps": steps, "wall_s": 41.3, "status": "finished"}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "job_status.json").write_text(json.dumps({"status": "finished", "return_value": bleu}))
    elif status == "failed":
        (run / "job_status.json").write_text(json.dumps({"status": "failed", "error": "NonFiniteStop: loss is nan"}))
    return run


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01_00-00-00_toy"
    root.mkdir(parents=True)
    points = [["model=tiny", f"model.num_heads={h}", f"seed={s}"] for h in HEADS for s in SEEDS]
    (root / "sweep.json").write_text(json.dumps({"swept": ["model.num_heads", "seed"], "points": points}))
    # Written out of order on purpose; heads=16 seed=1 never started.
    write_run(root, 0, 16, 0, "unfinished", steps=60)
    write_run(root, 1, 2, 1, "failed", steps=50)
    write_run(root, 2, 1, 0, "finished")
    write_run(root, 3, 1, 1, "finished")
    write_run(root, 4, 2, 0, "finished")
    return root


def test_table_lists_every_point_sorted_with_its_status(sweep_dir: Path):
    report = build_report(sweep_dir, plots=False)
    rows = report["rows"]
    assert report["keys"] == ["model.num_heads", "seed"]
    assert [(r["model.num_heads"], r["seed"]) for r in rows] == [
        ("1", "0"), ("1", "1"), ("2", "0"), ("2", "1"), ("16", "0"), ("16", "1")]
    assert [r["status"] for r in rows] == ["finished", "finished", "finished", "failed", "unfinished", "not started"]
    first, unfinished = rows[0], rows[4]
    assert first["params"] == 240128 and first["FLOPs/token"] == 744192.0 and first["heads x dim"] == "1x64"
    assert first["val bleu"] == 11.0 and first["test bleu"] == 10.0 and first["wall s"] == 41.3
    # An unfinished run shows what it reached: its last evaluation and step.
    assert unfinished["steps"] == 60 and unfinished["val bleu"] == 13.0 and unfinished["val loss"] == 3.5
    assert unfinished["test bleu"] is None and unfinished["params"] is None
    assert rows[3]["val bleu"] == pytest.approx(13.0 * 0.5) and rows[3]["heads x dim"] == "2x32"

    table = report["table"]
    assert table.splitlines()[0].startswith("| model.num_heads | seed | heads x dim | params | FLOPs/token | val loss")
    assert "| 240.13k | 744.19k | 3.000 | 11.00 | 10.00 | – | – | 1001 | 41 | finished |" in table
    assert "unfinished (60/100 steps)" in table and "not started" in table
    assert "NonFiniteStop: loss is nan" in report["markdown"]


def test_files_plots_and_terminal_text(sweep_dir: Path, capsys):
    assert main([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    folder = sweep_dir / "report"
    names = {p.name for p in folder.iterdir()}
    assert {"report.md", "report.csv", "metric_vs_model.num_heads.png", "val_curves.png",
            "attention_entropy.png"} <= names
    assert all((folder / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    assert (folder / "report.md").read_text() in out  # the terminal gets the whole report

    with open(folder / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[-1]["status"] == "not started" and rows[0]["val bleu"] == "11.0"

    # Text versions: mean ± sd over seeds (1 head: 11 and 12), curves as sparklines, entropy by layer.
    assert "val/bleu by model.num_heads (mean ± sd over seeds; n runs)" in out
    assert "11.50 ±  0.71  n=2" in out and "12.00\n" in out  # n=1: no spread
    assert "num_heads=1 seed=0 " in out and "loss █▁ 3.500 -> 3.000 (step 100)   bleu ▁█ 5.50 -> 11.00" in out
    assert "cross:" in out and "1 heads" in out and "16 heads" in out
    assert "1.900" in out and "0.400" in out  # layer-0 entropy for 1 and 16 heads: 2.0 - 0.1 * heads


def test_run_directories_nested_by_slashes_in_overrides(tmp_path: Path):
    """override_dirname keeps '/' from values like data.path=/x/y: runs sit deeper; still found."""
    root = tmp_path / "sweep"
    nested = root / "0_data.path=" / "tmp" / "corpus,model.num_heads=4"
    nested.parent.mkdir(parents=True)
    run = write_run(root, 9, 4, 0, "finished")
    run.rename(nested)
    (root / "sweep.json").write_text(json.dumps({"swept": ["model.num_heads"], "points": None}))
    report = build_report(root, plots=False)
    assert [r["status"] for r in report["rows"]] == ["finished"]
    assert report["rows"][0]["model.num_heads"] == "4"


def test_bad_directory_is_a_clear_error(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert main([str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


def test_sparkline():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([1.0, 1.0]) == "▁▁"


def test_head_analysis_columns_appear_when_a_run_has_one(sweep_dir: Path):
    """`train.heads` writes heads/heads.json; the report shows its prunable share and best F1."""
    assert "prunable heads" not in build_report(sweep_dir, plots=False)["table"]  # none yet: narrow table
    run = next(sweep_dir.glob("2_*"))  # heads=1 seed=0, finished
    (run / "heads").mkdir()
    (run / "heads" / "heads.json").write_text(json.dumps({"prunable_share_1bleu": 0.25, "best_alignment_f1": 0.4123}))
    report = build_report(sweep_dir, plots=False)
    first = report["rows"][0]
    assert first["prunable heads"] == 0.25 and first["best align F1"] == 0.4123
    assert report["rows"][1]["prunable heads"] is None
    header, _, row = report["table"].splitlines()[:3]
    assert "| prunable heads | best align F1 |" in header
    assert "| 25% | 0.412 |" in row
    with open(sweep_dir / "report" / "report.csv") as f:
        assert next(csv.DictReader(f))["best align F1"] == "0.4123"
