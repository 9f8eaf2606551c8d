"""Real runs for the explorer's tests (tests/test_explorer.py, tests/test_explorer_browser.py):
one tiny run with 4 probe steps and a head analysis, one two-point head sweep, each trained once
per test session (under pytest's base temporary folder) and shared by both modules.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import run_cli
from test_sweep import write_corpus

STEPS, EVERY = 12, 4  # probes at steps 0, 4, 8, 12
PROBE_STEPS = [0, 4, 8, 12]
SWEEP_STEPS = [0, 4, 8]
LAYERS, HEADS = 2, 4  # model=tiny
TINY = ["model=tiny", "model.d_model=32", "model.ffn_dim=64", "logger=jsonl"]


def common(root: Path, steps: int) -> list[str]:
    if not (root / "corpus").exists():
        write_corpus(root / "corpus")
    return [*TINY, "data=local", f"data.path={root / 'corpus'}", f"data.cache_dir={root / 'cache'}",
            "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16", "data.max_tokens=256",
            f"train.max_steps={steps}", f"train.log_every={EVERY}", f"train.eval_every={EVERY}",
            "train.checkpoint_every=0", "train.val_bleu_examples=4", "train.probe_examples=2",
            "train.progress=false"]


def check(proc) -> None:
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def trained_run(base: Path) -> Path:
    """A run with probes at PROBE_STEPS and heads/heads.json (a quick `python -m train.heads`)."""
    run = base / "explorer" / "run"
    if not (run / "heads" / "heads.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        check(run_cli(["-m", "train", *common(base / "explorer", STEPS), f"hydra.run.dir={run}"], timeout=600))
        check(run_cli(["-m", "train.heads", f"run_dir={run}", "limit=8", "bleu_limit=4", "prune_step=0.25"],
                      timeout=300))
    return run


def trained_sweep(base: Path) -> Path:
    """`-m model.num_heads=1,2`: two runs with probes at SWEEP_STEPS."""
    sweep = base / "explorer" / "sweep"
    if not (sweep / "1_heads2" / "summary.json").exists():
        shutil.rmtree(sweep, ignore_errors=True)
        check(run_cli(["-m", "train", "-m", "model.num_heads=1,2", *common(base / "explorer", SWEEP_STEPS[-1]),
                       f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}_heads${model.num_heads}"],
                      timeout=900))
    return sweep


def explore(folder: Path, *extra: str):
    """`python -m train.explore FOLDER ...` as a user runs it."""
    return run_cli(["-m", "train.explore", str(folder), *extra], timeout=300)


def page_data(page: Path) -> dict:
    """The JSON a page embeds (what its scripts draw from)."""
    text = page.read_text()
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S)
    assert match, "the page embeds no data"
    return json.loads(match.group(1))
