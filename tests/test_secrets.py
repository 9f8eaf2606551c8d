"""No secret on disk: with WANDB_API_KEY set to a marker, a run (wandb offline and disabled), a
sweep and a resumed run write the marker into no file under their directories (Hydra's .hydra/
files, logs, wandb's own folder, checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_sweep import TINY, write_corpus

MARKER = "SECRET-MARKER-7f3a9c"


def files_with_marker(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]


def common(tmp: Path) -> list[str]:
    return [*TINY, "data=local", f"data.path={tmp / 'corpus'}", f"data.cache_dir={tmp / 'cache'}",
            "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16", "data.max_tokens=256",
            "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=2", "train.val_bleu_examples=4",
            "train.probe_examples=2", "train.progress=false", "logger.tensorboard=true"]


@pytest.mark.slow
def test_the_api_key_reaches_no_file(tmp_path: Path):
    write_corpus(tmp_path / "corpus")
    env = {"WANDB_API_KEY": MARKER, "WANDB_MODE": "offline"}
    runs = {
        "offline": [*common(tmp_path), "logger.wandb=offline", "train.max_steps=4", f"hydra.run.dir={tmp_path / 'offline'}"],
        "disabled": [*common(tmp_path), "logger.wandb=disabled", "train.max_steps=4",
                     f"hydra.run.dir={tmp_path / 'disabled'}"],
        "resumed": [*common(tmp_path), "logger.wandb=offline", "train.max_steps=6", f"hydra.run.dir={tmp_path / 'offline'}"],
        "sweep": ["-m", *common(tmp_path), "logger.wandb=offline", "train.max_steps=4", "model.num_heads=1,2",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}"],
    }
    for name, args in runs.items():
        proc = run_cli(["-m", "train", *args], env=env, timeout=600)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        assert MARKER not in proc.stdout + proc.stderr, name
    for folder in ("offline", "disabled", "sweep"):
        assert (tmp_path / folder).is_dir()
        assert files_with_marker(tmp_path / folder) == [], folder
    assert (tmp_path / "offline" / "summary.json").read_text().count('"steps": 6') == 1  # the resume ran
