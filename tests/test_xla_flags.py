"""train/engine/xla_flags.py: the training processes' XLA options reach the compiled train step.

Each check runs in a fresh interpreter, because XLA reads XLA_FLAGS once, when JAX creates its
backend (this test process has long done so)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

# Build the benchmark's train step at a tiny size, as `python -m train.bench` does (flags first),
# and count the copies of AdamW moment buffers in the compiled HLO.
SCRIPT = """
from train.engine.xla_flags import configure_xla_flags
configure_xla_flags()
from train.bench.workload import parse_args
from train.bench.train_step import build_train_step
from train.engine.sharding import make_mesh
a = parse_args(["--only", "train", "--batch", "4", "--src-len", "8", "--tgt-len", "8", "--d-model", "32",
                "--ffn", "64", "--layers", "1", "--vocab", "300"])
_, step, state, batch, key, _ = build_train_step(a, make_mesh())
hlo = step.lower(state, batch, key).compile().as_text()
print(sum(" copy(%state_opt_state" in line for line in hlo.splitlines()))
"""


def moment_copies(xla_flags: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1])


def test_the_step_keeps_no_copy_of_the_optimizer_moments() -> None:
    assert moment_copies(None) == 0
    # A user's own setting wins; turned off, XLA:CPU copies the moments again (what the flag removes).
    assert moment_copies("--xla_cpu_copy_insertion_use_region_analysis=false") > 0


def test_a_users_own_setting_is_kept(monkeypatch) -> None:
    from train.engine.xla_flags import configure_xla_flags

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_copy_insertion_use_region_analysis=false --xla_dump_to=/tmp/x")
    assert configure_xla_flags() == []
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert configure_xla_flags() == ["--xla_cpu_copy_insertion_use_region_analysis=true"]
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_copy_insertion_use_region_analysis=true"
