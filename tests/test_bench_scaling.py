"""`python -m train.bench --scaling` (train/bench/scaling.py): every study measures the shape it
varies in its own process, and the report has a table and a plot per study. The --short grid runs
under the `long` marker (`pytest -m long`, about a minute and a half); the full grid is only
planned (no subprocess), since it takes most of an hour.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

SCALING_POINTS = {  # --short's grid (scaling.SHORT): what each study must have measured
    "heads": [(1,), (4,)],
    "length": [(8, "fast"), (8, "explicit"), (16, "fast"), (16, "explicit")],
    "width": [(16, 1), (16, 2), (32, 1), (32, 2)],
    "decode": [(4,), (16,)],
}


@pytest.fixture(scope="module")
def scaling_run(tmp_path_factory) -> tuple[dict[str, list[dict]], Path]:
    out = tmp_path_factory.mktemp("scaling")
    result = run_cli(["-m", "train.bench", "--scaling", "--short", "--scaling-out", str(out)], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(line.startswith("{") for line in result.stdout.splitlines() if line.strip())
    by: dict[str, list[dict]] = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        assert record["name"] == "scaling" and "error" not in record, record
        by.setdefault(record["table"], []).append(record)
    return by, out


@pytest.mark.long
def test_scaling_studies_have_their_points_and_sane_figures(scaling_run):
    import math

    by, _ = scaling_run
    assert set(by) == set(SCALING_POINTS)
    for table, points in SCALING_POINTS.items():
        assert [tuple(r[k] for k in r["varied"][:len(points[0])]) for r in by[table]] == points, table
        for r in by[table]:
            assert r["peak_memory_bytes"] >= r["start_peak_memory_bytes"] > 0 and r["memory_source"]
            part = "decode" if table == "decode" else "train"
            assert r["short"] is True and f"python -m train.bench --only {part} --peak-memory " in r["command"]
            if table == "decode":
                kinds = ("greedy_cached", "greedy_uncached", "beam4_cached", "beam4_uncached")
                assert all(math.isfinite(r[f"{k}_sentences_per_s"]) and r[f"{k}_sentences_per_s"] > 0
                           for k in kinds)
                assert r["greedy_cached_equals_uncached"] is True
            else:
                assert math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0
                assert 0 < r["mfu"] < 1.5
                assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / (r["ms_per_step"] / 1e3), rel=1e-2)


@pytest.mark.long
def test_scaling_points_measured_what_they_vary(scaling_run):
    """Each point's figures come from a process that built the varied shape: the values below
    are what the subprocess reports it built, and they would not change if the flag were lost."""
    by, _ = scaling_run
    heads = by["heads"]
    assert len({r["d_model"] for r in heads}) == 1
    assert [r["head_dim"] for r in heads] == [r["d_model"] // r["heads"] for r in heads] == [32, 8]
    assert len({r["flops_per_step"] for r in heads}) == 1  # W = H * K is fixed: same FLOPs

    for impl in ("fast", "explicit"):
        rows = [r for r in by["length"] if r["attention_impl"] == impl]
        assert all(r["src_len"] == r["tgt_len"] == r["length"] for r in rows)
        assert len({r["tokens_per_step"] for r in rows}) == 1  # batch scaled against the length
        assert rows[0]["flops_per_step"] < rows[1]["flops_per_step"]  # attention grows with length
        assert all(r["attention_path"] == impl and r["attention_dropout"] == 0.0 for r in rows)

    width = {(r["d_model"], r["layers"]): r for r in by["width"]}
    for (d, layers), r in width.items():
        assert r["ffn"] == 4 * d and r["heads"] == d // 16
    assert width[16, 1]["params"] < width[16, 2]["params"] < width[32, 2]["params"]
    assert width[16, 1]["params"] < width[32, 1]["params"] < width[32, 2]["params"]

    decode = by["decode"]
    assert [r["max_len"] for r in decode] == [4, 16] and {r["src_len"] for r in decode} == {8}


@pytest.mark.long
def test_scaling_report_has_a_table_and_a_plot_per_study(scaling_run):
    _, out = scaling_run
    text = (out / "scaling.md").read_text()
    assert text.count("\n## ") == 4
    assert sum(line.startswith("|---") for line in text.splitlines()) == 4  # one table each
    for table in SCALING_POINTS:
        png = out / f"scaling_{table}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"](scaling_{table}.png)" in text


def test_scaling_plan_of_the_full_run():
    """What the full measurement will run (no subprocess): the grids of the task, per study."""
    from train.bench.scaling import plan
    from train.bench.workload import parse_args

    points = plan(parse_args(["--scaling"]))
    by: dict[str, list] = {}
    for p in points:
        by.setdefault(p.table, []).append(p)
    assert [(p.args.heads, p.args.d_model) for p in by["heads"]] == [(h, 256) for h in (1, 2, 4, 8, 16, 32)]
    assert [(p.args.src_len, p.args.tgt_len, p.args.batch, p.args.attention_impl) for p in by["length"]] == [
        (n, n, max(1, 64 * 32 // n), impl) for n in (32, 64, 128, 256, 512) for impl in ("fast", "explicit")]
    assert all(p.args.attention_dropout == 0.0 for p in by["length"])
    assert [(p.args.d_model, p.args.layers, p.args.heads, p.args.ffn) for p in by["width"]] == [
        (d, n, d // 64, 4 * d) for d in (128, 256, 512) for n in (3, 6)]
    assert [(p.args.tgt_len, p.args.src_len, p.part) for p in by["decode"]] == [
        (n, 32, "decode") for n in (16, 32, 64, 128)]
    subset = plan(parse_args(["--scaling", "--scaling-tables", "decode,heads"]))
    assert {p.table for p in subset} == {"heads", "decode"}


def test_scaling_options_are_checked():
    result = run_cli(["-m", "train.bench", "--scaling", "--scaling-tables", "heads,depth"], timeout=120)
    assert result.returncode == 2 and "--scaling-tables" in result.stderr
    result = run_cli(["-m", "train.bench", "--scaling-out", "/tmp/nowhere"], timeout=120)
    assert result.returncode == 2 and "add --scaling" in result.stderr
