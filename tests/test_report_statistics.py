"""The sweep report's statistics: intervals over seeds and the paired bootstrap test, on made-up
systems whose answer is known, and the seed-averaged report of a hand-made sweep."""

from __future__ import annotations

import csv
import html
import json
import random
from pathlib import Path

import pytest
from tests.test_report import write_run

from train.report.build import build_report
from train.report.statistics import interval, paired_bootstrap

WORDS = "el la de que y a en los se del las por un con no una su para es al lo como".split()


def references(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) for _ in range(n)]


def degrade(refs: list[str], share: float, seed: int) -> list[str]:
    """Each word replaced by an unknown one with probability `share`."""
    rng = random.Random(seed)
    return [" ".join("zz" if rng.random() < share else w for w in r.split()) for r in refs]


def test_interval_is_the_t_interval_of_the_mean():
    iv = interval([1.0, 2.0, 3.0])
    assert (iv.mean, iv.sd, iv.n) == (2.0, 1.0, 3)
    # t(0.975, df=2) = 4.3027: half-width 4.3027 * 1 / sqrt(3)
    assert iv.high - iv.mean == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-4)
    assert iv.mean - iv.low == pytest.approx(iv.high - iv.mean)
    one = interval([5.0])
    assert (one.low, one.high, one.sd, one.n) == (5.0, 5.0, 0.0, 1)
    with pytest.raises(ValueError):
        interval([float("nan")])


def test_a_strictly_better_system_is_significant():
    refs = references()
    better = [degrade(refs, 0.1, seed) for seed in range(3)]  # three "seeds" of each system
    worse = [degrade(refs, 0.4, 10 + seed) for seed in range(3)]
    c = paired_bootstrap(better, worse, refs)
    assert c.difference > 10 and c.low > 0 and c.seeds == 3 and c.sentences == len(refs)
    assert c.p_value <= 2 / (c.samples + 1)  # no resample puts the worse system ahead
    flipped = paired_bootstrap(worse, better, refs)
    assert flipped.difference == pytest.approx(-c.difference) and flipped.p_value == c.p_value


def test_identical_systems_are_not_significant():
    refs = references()
    same = [degrade(refs, 0.3, seed) for seed in range(2)]
    c = paired_bootstrap(same, [list(h) for h in same], refs)
    assert c.difference == 0 and c.p_value == 1.0 and c.low == c.high == 0


def test_two_draws_of_one_system_are_usually_not_significant():
    refs = references(400)
    c = paired_bootstrap([degrade(refs, 0.3, 1)], [degrade(refs, 0.3, 2)], refs)
    assert c.p_value > 0.05 and c.low < 0 < c.high


def test_chrf_and_bad_input():
    refs = references(100)
    assert paired_bootstrap([refs], [degrade(refs, 0.5, 0)], refs, metric="chrf", samples=200).difference > 0
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        paired_bootstrap([refs[:-1]], [refs], refs)
    with pytest.raises(ValueError, match="not 'ter'"):
        paired_bootstrap([refs], [refs], refs, metric="ter")


def seeded_sweep(root: Path) -> Path:
    """Heads 1 and 4 x seeds 0-2; 4 heads translate better. One 4-head seed failed."""
    refs = references(200)
    root.mkdir(parents=True)
    points = [["model=tiny", f"model.num_heads={h}", f"seed={s}"] for h in (1, 4) for s in (0, 1, 2)]
    (root / "sweep.json").write_text(json.dumps({"swept": ["model.num_heads", "seed"], "points": points}))
    for num, (heads, seed) in enumerate((h, s) for h in (1, 4) for s in (0, 1, 2)):
        status = "failed" if (heads, seed) == (4, 2) else "finished"
        run = write_run(root, num, heads, seed, status)
        if status == "finished":
            (run / "test.hyp.txt").write_text("\n".join(degrade(refs, 0.5 if heads == 1 else 0.2, num)) + "\n")
            (run / "test.ref.txt").write_text("\n".join(refs) + "\n")
            summary = json.loads((run / "summary.json").read_text())
            summary.update({"test/repeat_4gram": 10.0 * seed, "test/len_ratio": 1.0})
            (run / "summary.json").write_text(json.dumps(summary))
    (next(root.glob("0_*")) / "explorer.html").write_text("<html></html>")
    return root


def test_report_averages_seeds_and_tests_points(tmp_path: Path):
    root = seeded_sweep(tmp_path / "sweep")
    report = build_report(root, plots=False)
    first, second = report["points"]
    assert first.values == ("1",) and len(first.finished) == 3
    assert second.values == ("4",) and len(second.finished) == 2 and len(second.runs) == 3  # failed run kept
    md = report["markdown"]
    # write_run's val bleu is 10 + heads + seed: 1 head -> 11, 12, 13; 4 heads (seeds 0, 1) -> 14, 15.
    assert "| 1 | 3/3 | 3.000 ± 0.000 [3.000, 3.000] | 12.00 ± 1.00 [9.52, 14.48] |" in md
    assert "| 4 | 2/3 |" in md and "14.50 ± 0.71 [8.15, 20.85]" in md and "| 1 failed |" in md
    assert "| 10.00 ± 10.00 [-14.84, 34.84] |" in md  # test loops %: 0, 10, 20
    (test,) = report["tests"]
    assert test.comparison.difference > 10 and test.comparison.p_value < 0.01 and test.comparison.seeds == 2
    assert test.sentence.startswith("model.num_heads=4 vs model.num_heads=1: +")
    assert "significant at 0.05" in test.sentence and "over 2 seeds" in test.sentence and test.sentence in md

    with open(root / "report" / "points.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["val bleu mean"]) == 12.0 and float(rows[1]["val bleu sd"]) == pytest.approx(0.7071, abs=1e-4)
    page = (root / "report" / "report.html").read_text()
    assert "Points, over seeds" in page and html.escape(test.sentence) in page
    assert 'href="../0_model=tiny,model.num_heads=1,seed=0/explorer.html"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched


def test_baseline_point_can_be_chosen(tmp_path: Path):
    root = seeded_sweep(tmp_path / "sweep")
    (test,) = build_report(root, plots=False, baseline="model.num_heads=4")["tests"]
    assert test.sentence.startswith("model.num_heads=1 vs model.num_heads=4: -")
    with pytest.raises(ValueError, match="matches no point"):
        build_report(root, plots=False, baseline="model.num_heads=8")
