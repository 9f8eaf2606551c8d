"""Shared fixtures: everything on the CPU, small, and inside pytest's temporary folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def run_cli(args: list[str], cwd: Path = REPO_ROOT, env: dict | None = None, timeout: int = 600, input: str | None = None):
    """Run a project command (`python -m ...`) the way a user does; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)
