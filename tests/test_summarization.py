"""Summarization is a task, not a special case: the same `python -m train` on local JSONL files
with `data.task=summarization` truncates long documents, validates and selects checkpoints by
ROUGE-Lsum (the papers' metric), reports ROUGE-1/2/L/Lsum on the test split, and
`train.evaluate` reproduces them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_evaluate import FAST_XLA

pytestmark = pytest.mark.slow  # trains a model (subprocess)

WORDS = "storm river city council school harvest bridge market festival road train hospital".split()
FILLER = "the of a and in to was on for with that by at from".split()
STEPS = 20
MAX_SOURCE_LEN = 24  # documents run to ~60 tokens: most are truncated


def write_corpus(folder: Path) -> None:
    """Documents of filler around a few topic words; the summary is the topic words in order."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 160), ("validation", 12), ("test", 12)):
        rows = []
        for i in range(n):
            topics = rng.sample(WORDS, 3)
            body = [w for t in topics for w in (t, *rng.choices(FILLER, k=6))] + rng.choices(FILLER, k=40)
            rows.append({"id": f"{split}-{i}", "document": " ".join(body), "summary": " ".join(topics)})
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def test_summarization_run_reports_rouge(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    proc = run_cli([
        "-m", "train", "model=tiny", "model.num_layers=1", "data=local", f"data.path={tmp_path / 'corpus'}",
        "data.format=jsonl", "data.task=summarization", "data.source_field=document",
        "data.target_field=summary", "data.vocab_size=120", f"data.max_source_len={MAX_SOURCE_LEN}",
        "data.max_target_len=8", "data.max_tokens=256", f"data.cache_dir={tmp_path / 'data-cache'}",
        f"train.max_steps={STEPS}", "train.log_every=10", "train.eval_every=10", "train.val_bleu_examples=8",
        "train.probe_examples=0", "train.progress=false", "logger=jsonl", f"hydra.run.dir={run_dir}",
    ], env=FAST_XLA)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "src_truncated" in log  # the truncation count is reported in the run log

    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"):
        assert 0.0 <= summary[key] <= 100.0, (key, summary[key])
    assert "test/bleu" not in summary  # the task's metrics, not translation's
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val/rougeLsum" in r]
    assert [r["step"] for r in val] == [10, 20]
    assert all("val/bleu" not in r for r in records)

    # The evaluate command scores the same checkpoint the same way.
    proc = run_cli(["-m", "train.evaluate", f"run_dir={run_dir}", "split=test", f"step={STEPS}"], env=FAST_XLA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("test ROUGE-1/2/Lsum "), proc.stdout
    result = json.loads((run_dir / "eval" / "test.json").read_text())
    assert result["task"] == "summarization" and result["examples"] == 12
    assert result["rougeLsum"] == pytest.approx(summary["test/rougeLsum"])
    assert result["rougeL"] == pytest.approx(summary["test/rougeL"])
