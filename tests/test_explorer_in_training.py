"""Training writes the explorer page at the end of a run (train.explorer, on by default) and wandb
receives it as wandb.Html; train.explorer=false writes none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_sweep import TINY, write_corpus


def train(tmp: Path, name: str, *extra: str):
    return run_cli(["-m", "train", *TINY, "data=local", f"data.path={tmp / 'corpus'}",
                    f"data.cache_dir={tmp / 'cache'}", "data.vocab_size=100", "data.max_source_len=16",
                    "data.max_target_len=16", "data.max_tokens=256", "train.max_steps=4", "train.eval_every=2",
                    "train.log_every=2", "train.checkpoint_every=0", "train.val_bleu_examples=4",
                    "train.probe_examples=2", "train.progress=false", f"hydra.run.dir={tmp / name}", *extra],
                   timeout=600)


@pytest.mark.slow
def test_a_run_ends_with_its_explorer_page(tmp_path: Path):
    write_corpus(tmp_path / "corpus")
    proc = train(tmp_path, "on", "logger=default", "logger.wandb=offline")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    page = tmp_path / "on" / "explorer.html"
    assert page.is_file() and "<script" in page.read_text() and f"explorer: {page}" in proc.stdout
    assert list((tmp_path / "on" / "wandb").rglob("media/html/explorer_*.html"))

    off = train(tmp_path, "off", "train.explorer=false")
    assert off.returncode == 0, off.stderr[-2000:]
    assert not (tmp_path / "off" / "explorer.html").exists()
