"""Two `python -m train` processes on one machine, joined by `jax.distributed` on loopback (JAX's
CPU collectives), each with one CPU device: the multi-host path, as a cluster would run it.

They must train on the same global batches as one process (the same losses), let only process
0 write logs, resume bitwise after both are killed, and fail within a bounded time, not hang,
when one of them dies.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_sweep import TINY, write_corpus

STEPS = 8
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(tmp: Path, run_dir: Path, **extra: str) -> list[str]:
    values = {"data": "local", "data.path": str(tmp / "corpus"), "data.cache_dir": str(tmp / "cache"),
              "data.vocab_size": "100", "data.max_source_len": "16", "data.max_target_len": "16",
              "data.max_tokens": "256", "train.max_steps": str(STEPS), "train.log_every": "1",
              "train.eval_every": str(STEPS), "train.checkpoint_every": "2", "train.val_bleu_examples": "4",
              "train.probe_examples": "2", "train.progress": "false", "train.compilation_cache": "null",
              "logger.tensorboard": "true", "hydra.run.dir": str(run_dir), **extra}
    return [sys.executable, "-m", "train", *TINY, *[f"{k}={v}" for k, v in values.items()]]


def launch(tmp: Path, run_dir: Path, envs: tuple[dict, dict] = ({}, {})) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for pid, extra_env in enumerate(envs):
        cmd = args(tmp, run_dir, **{"train.coordinator_address": f"127.0.0.1:{port}", "train.num_processes": "2",
                                    "train.process_id": str(pid), "train.heartbeat_timeout_s": "10"})
        env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS="--xla_force_host_platform_device_count=1",
                   **extra_env)
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=timeout)
        out.append((p.returncode, text))
    return out


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in rows(run_dir) if "train/loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multiprocess")
    write_corpus(tmp / "corpus")
    one = subprocess.run(args(tmp, tmp / "one"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    two = finish(launch(tmp, tmp / "two"))
    # Both processes are SIGKILLed after step 5 (checkpoints at 2 and 4), then started again.
    kill = {"ATTENTION_LAB_FAULT_KILL_AT_STEP": "5"}
    killed = finish(launch(tmp, tmp / "resumed", (kill, kill)))
    resumed = finish(launch(tmp, tmp / "resumed"))
    return {"tmp": tmp, "one": one, "two": two, "killed": killed, "resumed": resumed}


def test_two_processes_train_on_the_global_batch_of_one(runs):
    (rc0, out0), (rc1, out1) = runs["two"]
    assert rc0 == 0 and rc1 == 0, out0[-3000:] + out1[-3000:]
    assert "2 x cpu in 2 process(es)" in out0
    one, two = losses(runs["tmp"] / "one"), losses(runs["tmp"] / "two")
    assert sorted(two) == list(range(1, STEPS + 1))
    for step, loss in one.items():
        assert two[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), step


def test_only_process_zero_writes(runs):
    run_dir = runs["tmp"] / "two"
    steps = [r["step"] for r in rows(run_dir) if "train/loss" in r]
    assert steps == sorted(set(steps))  # each step logged once: process 1 wrote no metrics line
    assert len(list((run_dir / "tb").rglob("events.out.tfevents.*"))) == 1
    assert (run_dir / "summary.json").is_file() and (run_dir / "attention").is_dir()
    (_, out0), (_, out1) = runs["two"]
    assert "test bleu" in out0 and "test bleu" not in out1 and "model:" not in out1


def test_killed_processes_resume_bitwise(runs):
    (k0, _), (k1, _) = runs["killed"]
    # Each process SIGKILLs itself after step 5. A process still inside step 5's collectives
    # when its peer dies is stopped by the distributed runtime instead (SIGABRT): on a loaded
    # machine that is what happens to the slower one. Either way both died mid-run.
    assert {k0, k1} <= {-9, -6} and -9 in (k0, k1), (k0, k1)
    (rc0, out0), (rc1, out1) = runs["resumed"]
    assert rc0 == 0 and rc1 == 0, out0[-3000:] + out1[-3000:]
    assert "resumed from step 4" in out0
    assert losses(runs["tmp"] / "resumed") == losses(runs["tmp"] / "two")  # bitwise, steps 1..8


def test_a_dead_process_stops_the_other(tmp_path):
    write_corpus(tmp_path / "corpus")
    t0 = time.time()
    procs = launch(tmp_path, tmp_path / "run", ({}, {"ATTENTION_LAB_FAULT_KILL_AT_STEP": "3"}))
    (rc0, out0), (rc1, _) = finish(procs, timeout=300)
    assert rc1 == -9 and rc0 != 0
    assert time.time() - t0 < 240  # bounded by the heartbeat timeout, not a hang
    assert "process 0 of 2 stopped" in out0 or "heartbeat" in out0.lower()


def test_a_two_process_run_resumes_in_one_process(runs, tmp_path):
    import shutil

    run_dir = tmp_path / "continued"
    shutil.copytree(runs["tmp"] / "two", run_dir)
    (run_dir / "summary.json").unlink()
    cmd = args(runs["tmp"], run_dir, **{"train.max_steps": str(STEPS + 2)})
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"resumed from step {STEPS}" in proc.stdout
    assert sorted(losses(run_dir)) == list(range(1, STEPS + 3))
