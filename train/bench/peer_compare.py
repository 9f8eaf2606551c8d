"""Interleaved rounds against a PyTorch peer script, run by another interpreter.

    python -m train.bench --only train --torch-python /path/to/venv-with-torch/bin/python

A shared VM's speed drifts from minute to minute, so times from separate sessions (or even
separate minutes) cannot be compared. Each round here times the project's already compiled
train step, then runs the PyTorch script (--torch-script) eagerly and under `torch.compile`
in a subprocess, back to back, with the same workload, and reports the ratios of that round;
the summary line gives the median ratio over rounds. PyTorch is never imported here: it lives
in whatever interpreter `--torch-python` names (`pip install torch==2.13.0` there), so it
stays out of the project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Callable, Iterator

from train.config import REPO_ROOT

DEFAULT_SCRIPT = REPO_ROOT.parent / "shared" / "bench" / "torch_reference.py"
MODES = ("eager", "compile")


class PeerError(RuntimeError):
    """The PyTorch side could not run; the message says why and what to do."""


def check_peer(python: str, script: Path) -> str:
    """Fail before anything is compiled: the script exists and `python` imports torch.
    Returns the torch version."""
    if not script.is_file():
        raise PeerError(f"--torch-script {script} does not exist (the peer baseline lives in "
                        f"../shared/bench/torch_reference.py beside the repository).")
    try:
        probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerError(f"--torch-python {python} could not be run: {e}") from e
    if probe.returncode != 0:
        raise PeerError(f"--torch-python {python} cannot import torch; install it there with "
                        f"`{python} -m pip install torch==2.13.0` (the CPU build).")
    return probe.stdout.strip()


def peer_command(python: str, script: Path, a: argparse.Namespace, mode: str) -> list[str]:
    """The PyTorch script on the same workload as this benchmark's train line."""
    cmd = [python, str(script), "--d-model", str(a.d_model), "--heads", str(a.heads),
           "--layers", str(a.layers), "--ffn", str(a.ffn), "--vocab", str(a.vocab),
           "--batch", str(a.batch), "--src-len", str(a.src_len), "--tgt-len", str(a.tgt_len),
           "--steps", str(a.steps), "--warmup", str(max(a.warmup, 1))]
    return cmd + (["--compile"] if mode == "compile" else [])


def run_peer(cmd: list[str], timeout: float = 1800) -> dict:
    """Run the PyTorch script once; its last stdout line is one JSON object with ms_per_step."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise PeerError(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    record = json.loads(lines[-1])
    if "ms_per_step" not in record:
        raise PeerError(f"{cmd[1]} printed no ms_per_step: {lines[-1]}")
    return record


def compare_rounds(a: argparse.Namespace, time_project: Callable[[], float], python: str,
                   script: Path, rounds: int) -> Iterator[dict]:
    """Yield one "compare" record per round, then the summary (round = "median").

    time_project() -> seconds per step of the project's train step, timed now.
    """
    per_round = []
    for r in range(rounds):
        rec: dict = {"name": "compare", "round": r, "project_ms": round(time_project() * 1e3, 2)}
        for mode in MODES:
            rec[f"torch_{mode}_ms"] = run_peer(peer_command(python, script, a, mode))["ms_per_step"]
            rec[f"vs_torch_{mode}"] = round(rec[f"torch_{mode}_ms"] / rec["project_ms"], 3)
        per_round.append(rec)
        yield rec
    median = lambda key: round(statistics.median(r[key] for r in per_round), 3)
    summary = {"name": "compare", "round": "median", "rounds": rounds,
               "project_ms": median("project_ms")}
    for mode in MODES:
        summary[f"torch_{mode}_ms"] = median(f"torch_{mode}_ms")
        # The median of the per-round ratios: each ratio compares two runs minutes apart.
        summary[f"vs_torch_{mode}"] = median(f"vs_torch_{mode}")
    summary["tokens"] = a.batch * (a.src_len + a.tgt_len)
    yield summary
