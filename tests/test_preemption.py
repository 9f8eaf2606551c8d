"""SLURM's warning before the time limit (SIGUSR2, `#SBATCH --signal=USR2@120`, what Hydra's
submitit launcher asks for): the run saves, says how to resume, and hands the signal on to the
launcher's own handler (submitit requeues the job from there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_sweep import TINY, write_corpus
from train.engine.signals import StopSignals


def test_usr2_is_a_stop_signal_handed_on_after_the_save():
    called = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: called.append(signum))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert stop.received == "SIGUSR2" and called == []  # only a flag while the step finishes
            stop.hand_on()  # the checkpoint is on disk: the launcher's handler may requeue now
        assert called == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_sigusr2_during_a_run_saves_and_names_the_resume_command(tmp_path: Path):
    write_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    args = [*TINY, "data=local", f"data.path={tmp_path / 'corpus'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16", "data.max_tokens=256",
            "train.max_steps=100000", "train.log_every=5", "train.eval_every=100000", "train.checkpoint_every=0",
            "train.probe_examples=0", "train.progress=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and "train/loss" in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 140, err[-3000:]
    assert "SIGUSR2: saved a checkpoint at step" in err and "Resume with:" in err
    steps = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and int(steps[0]) >= 5
