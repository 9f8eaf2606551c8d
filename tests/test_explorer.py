"""`python -m train.explore DIR`: the page of a real run and of a real sweep, what it embeds, and
bad input (no probes, a killed run's half-written last step). The browser side is in
tests/test_explorer_browser.py."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from explorer_runs import (
    HEADS,
    LAYERS,
    PROBE_STEPS,
    SWEEP_STEPS,
    explore,
    page_data,
    trained_run,
    trained_sweep,
)

from model.config import ATTENTION_TYPES
from train.analysis.attention_stats import STATS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return trained_sweep(tmp_path_factory.getbasetemp())


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "tb", "explorer.html"))
    return dst


# ---- a run ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_page_of_a_run_embeds_every_step_small_and_self_contained(run_dir):
    proc = explore(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = run_dir / "explorer.html"
    assert f"wrote {page}" in proc.stdout and "probe steps [0, 4, 8, 12]" in proc.stdout
    text = page.read_text()
    assert len(text.encode()) < 1_000_000  # a tiny run's page; the README gives a default run's size
    # Self-contained: no external script, style, image or font; nothing fetched.
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", text)
    assert "url(" not in text and "@import" not in text and "fetch(" not in text
    assert "8 bits" in text

    data = page_data(page)
    assert data["swept"] == [] and len(data["runs"]) == 1 and data["warnings"] == []
    run = data["runs"][0]
    assert run["steps"] == PROBE_STEPS and run["skipped"] == []
    assert set(run["types"]) == set(ATTENTION_TYPES)
    for kind, t in run["types"].items():
        assert (t["layers"], t["heads"]) == (LAYERS, HEADS) and len(t["tokens"]) == 2
        cells = sum(len(q) * len(k) for q, k in t["tokens"])
        assert [len(base64.b64decode(m)) for m in t["maps"]] == [len(PROBE_STEPS) * HEADS * cells] * LAYERS
        for name in STATS:
            assert np.array(t["stats"][name], dtype=float).shape == (len(PROBE_STEPS), LAYERS, HEADS)
    assert set(run["metrics"]) >= {"val/loss", "val/bleu"} and run["metrics"]["val/loss"][0] is None  # no val at 0


@pytest.mark.slow
def test_maps_are_the_saved_weights_cropped_and_8_bit(run_dir):
    explore(run_dir)
    t = page_data(run_dir / "explorer.html")["runs"][0]["types"]["cross"]
    blob = np.frombuffer(base64.b64decode(t["maps"][1]), np.uint8)
    with np.load(run_dir / "attention" / "step_8" / "cross_layer1.npz") as npz:
        weights, q_valid, k_valid = npz["weights"].astype(np.float32), npz["query_valid"], npz["key_valid"]
        q_tokens, k_tokens = npz["query_tokens"], npz["key_tokens"]
    sizes = [len(q) * len(k) for q, k in t["tokens"]]
    offset = 2 * HEADS * sum(sizes) + HEADS * sizes[0] + 3 * sizes[1]  # step index 2, pair 1, head 3
    tq, tk = int(q_valid[1].sum()), int(k_valid[1].sum())
    got = blob[offset:offset + sizes[1]].reshape(tq, tk) / 255
    assert np.abs(got - weights[1, 3, :tq, :tk]).max() <= 0.5 / 255 + 1e-3
    assert t["tokens"][1] == [list(q_tokens[1, :tq]), list(k_tokens[1, :tk])]


@pytest.mark.slow
def test_stats_are_the_probes_own(run_dir):
    """The per-head statistics agree with the layer means the probe logged during training."""
    explore(run_dir)
    run = page_data(run_dir / "explorer.html")["runs"][0]
    logged = {row["step"]: row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if "attn/cross/layer0/entropy_mean" in row}
    for i, step in enumerate(run["steps"]):
        for kind in ATTENTION_TYPES:
            for name in STATS:
                heads = np.array(run["types"][kind]["stats"][name][i][1], dtype=float)
                assert heads.mean() == pytest.approx(logged[step][f"attn/{kind}/layer1/{name}_mean"], rel=2e-3)


@pytest.mark.slow
def test_heads_json_becomes_badges(run_dir):
    explore(run_dir)
    heads = page_data(run_dir / "explorer.html")["runs"][0]["heads"]
    saved = json.loads((run_dir / "heads" / "heads.json").read_text())
    assert heads["step"] == saved["step"] and heads["step"] in PROBE_STEPS  # the best checkpoint's step
    for kind in ATTENTION_TYPES:
        assert heads["importance"][kind] == saved["importance"][kind]["normalized"]
        assert heads["rank"][kind] == saved["importance"][kind]["pruning_rank"]
    assert heads["f1"] is None  # the toy corpus has no gold word links


def test_alignment_f1_is_read_when_the_corpus_has_gold_links():
    from train.explore.collect import head_results

    f1 = [[0.1, 0.5], [0.2, 0.3]]
    result = head_results({"step": 5, "split": "validation", "model": {"heads_total": 12},
                           "importance": {"cross": {"normalized": [[1, 0], [0, 1]], "pruning_rank": [[4, 1], [2, 3]]}},
                           "alignment": {"output_rows": {"heads": {"f1": f1}}}})
    assert result["f1"] == f1 and result["rank"] == {"cross": [[4, 1], [2, 3]]} and result["heads_total"] == 12
    assert head_results(None) is None and head_results({"importance": None}) is None


def test_library_function_for_the_trainer(tmp_path):
    """write_explorer(run_dir) -> Path, importable without the command (the trainer calls it)."""
    import inspect

    from train.explore import write_explorer

    assert list(inspect.signature(write_explorer).parameters)[:1] == ["run_dir"]
    fake_step(tmp_path / "attention" / "step_0", step=0)
    path = write_explorer(tmp_path)
    assert path == tmp_path / "explorer.html" and page_data(path)["runs"][0]["steps"] == [0]


# ---- a sweep -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_page_of_a_sweep_has_each_run_titled_by_its_swept_value(sweep_dir):
    proc = explore(sweep_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = page_data(sweep_dir / "explorer.html")
    assert data["swept"] == ["model.num_heads"]
    assert [r["title"] for r in data["runs"]] == ["model.num_heads=1", "model.num_heads=2"]
    assert [r["types"]["cross"]["heads"] for r in data["runs"]] == [1, 2]
    assert all(r["steps"] == SWEEP_STEPS for r in data["runs"])
    # The same probe pairs in both runs: the comparison shows one sentence side by side.
    assert data["runs"][0]["types"]["cross"]["tokens"] == data["runs"][1]["types"]["cross"]["tokens"]


# ---- bad input -----------------------------------------------------------------------------------

def fake_step(folder: Path, step: int, layers: int = 1, heads: int = 2, t: int = 3) -> None:
    """A probe step as train/evals/probe.py writes it, with uniform weights over t tokens."""
    folder.mkdir(parents=True)
    tokens = np.array([["<s>"] + [f"▁w{i}" for i in range(1, t)]])
    for kind in ATTENTION_TYPES:
        for layer in range(layers):
            np.savez_compressed(folder / f"{kind}_layer{layer}.npz",
                                weights=np.full((1, heads, t, t), 1 / t, np.float16),
                                query_ids=np.arange(t)[None], key_ids=np.arange(t)[None],
                                query_tokens=tokens, key_tokens=tokens, query_valid=np.ones((1, t), bool),
                                key_valid=np.ones((1, t), bool), step=np.int64(step))


def test_no_probes_names_the_command_that_makes_them(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("model:\n  num_heads: 4\ntrain:\n  probe_examples: 0\n")
    proc = explore(tmp_path / "run")
    assert proc.returncode == 2
    assert "error: no attention probes" in proc.stderr and "train.probe_examples" in proc.stderr
    assert "python -m train" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "explorer.html").exists()

    missing = explore(tmp_path / "nowhere")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    bad = explore(tmp_path, "colour=red")
    assert bad.returncode == 2 and "unknown option colour=" in bad.stderr and "usage: python -m train.explore DIR" in bad.stderr


@pytest.mark.slow
def test_truncated_last_step_gives_the_earlier_steps(run_dir, tmp_path):
    """A run killed while the probe wrote its last step: that step is skipped with a warning."""
    run = copy_run(run_dir, tmp_path / "killed")
    last = run / "attention" / f"step_{PROBE_STEPS[-1]}"
    npz = last / "cross_layer1.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    (last / "decoder_self_layer1.npz").unlink()
    proc = explore(run, f"out={tmp_path / 'page.html'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warning: killed: skipped step {PROBE_STEPS[-1]}: decoder_self_layer1.npz is missing" in proc.stderr
    data = page_data(tmp_path / "page.html")
    assert data["runs"][0]["steps"] == PROBE_STEPS[:-1]
    assert any(f"step {PROBE_STEPS[-1]}" in w for w in data["warnings"])

    (last / "decoder_self_layer1.npz").write_bytes(b"")  # present but empty: also skipped
    proc = explore(run, f"out={tmp_path / 'page.html'}")
    assert f"skipped step {PROBE_STEPS[-1]}: decoder_self_layer1.npz does not read" in proc.stderr


def test_every_step_truncated_is_an_error(tmp_path):
    fake_step(tmp_path / "attention" / "step_0", step=0)
    for npz in (tmp_path / "attention" / "step_0").glob("*.npz"):
        npz.write_bytes(npz.read_bytes()[:40])
    proc = explore(tmp_path)
    assert proc.returncode == 2 and "no complete probe step" in proc.stderr and "does not read" in proc.stderr


def test_a_page_over_budget_keeps_the_maps_of_evenly_spaced_steps(tmp_path):
    from train.explore.collect import PAGE_OVERHEAD, collect

    steps = list(range(0, 100, 10))
    for step in steps:
        fake_step(tmp_path / "attention" / f"step_{step}", step=step, heads=4, t=20)  # 4.8 kB of maps a step
    data = collect(tmp_path, max_mb=(PAGE_OVERHEAD + 60_000) / 1e6)
    run = data["runs"][0]
    assert run["stat_steps"] == steps and len(run["types"]["cross"]["stats"]["entropy"]) == len(steps)
    assert 2 <= len(run["steps"]) < len(steps) and run["steps"][0] == 0 and run["steps"][-1] == 90
    assert [run["stat_steps"][i] for i in run["stat_index"]] == run["steps"]
    assert len(base64.b64decode(run["types"]["cross"]["maps"][0])) == len(run["steps"]) * 4 * 400
    assert any(f"attention maps of {len(run['steps'])} of 10 probe steps" in w for w in data["warnings"])
    assert collect(tmp_path)["runs"][0]["steps"] == steps  # under the default 10 MB: every step
