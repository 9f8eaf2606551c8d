"""`python -m train.bench --short` runs end to end and prints its three JSON lines.

No speed thresholds: CI machines differ and share their cores. docs/performance.md has the
figures of a full run and how to compare them with the PyTorch reference.
"""

from __future__ import annotations

import json
import statistics

import pytest

from tests.conftest import run_cli

TRAIN_KEYS = {"ms_per_step", "tokens_per_s", "compile_s", "flops_per_step", "peak_flops_per_s", "mfu",
              "compiles", "params", "loss"}
DECODE_KINDS = ("greedy_cached", "greedy_uncached", "beam4_cached", "beam4_uncached")
DATA_KEYS = {"tokens_per_s", "padding_efficiency", "distinct_shapes", "batches_per_epoch"}


def _lines(stdout: str) -> dict[str, dict]:
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {r["name"]: r for r in records}


@pytest.fixture(scope="module")
def short_run() -> dict[str, dict]:
    result = run_cli(["-m", "train.bench", "--short"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # stdout is only the JSON lines (progress goes to stderr), so it can be piped to jq.
    assert all(line.startswith("{") for line in result.stdout.splitlines() if line.strip())
    return _lines(result.stdout)


def test_train_line(short_run):
    train = short_run["train"]
    assert TRAIN_KEYS <= train.keys()
    assert train["tokens_per_s"] > 0 and train["ms_per_step"] > 0 and train["peak_flops_per_s"] > 0
    assert train["compiles"] == 1  # the timed steps reuse the first compile: no retracing
    tokens = train["batch"] * (train["src_len"] + train["tgt_len"])
    assert train["tokens_per_s"] == pytest.approx(tokens / (train["ms_per_step"] / 1e3), rel=1e-2)
    mfu = train["flops_per_step"] / (train["ms_per_step"] / 1e3) / train["peak_flops_per_s"]
    assert train["mfu"] == pytest.approx(mfu, rel=1e-2)
    assert sum(train["flops_breakdown"].values()) == pytest.approx(train["flops_per_step"])


def test_decode_line(short_run):
    decode = short_run["decode"]
    for kind in DECODE_KINDS:
        assert decode[f"{kind}_sentences_per_s"] > 0
    # The KV cache must not change what greedy decoding produces.
    assert decode["greedy_cached_equals_uncached"] is True


def test_data_line(short_run):
    data = short_run["data"]
    assert DATA_KEYS <= data.keys()
    assert 0.5 < data["padding_efficiency"] <= 1.0
    assert data["distinct_shapes"] == 1  # packing gives one batch shape: one train-step compile


def test_only_and_options():
    """--only picks parts; the scale options (FSDP, remat, accumulation, bf16) go through the same step."""
    result = run_cli(["-m", "train.bench", "--short", "--only", "train", "--fsdp", "--remat",
                      "--grad-accum", "2", "--dtype", "bfloat16"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _lines(result.stdout)
    assert set(lines) == {"train"}
    train = lines["train"]
    assert train["fsdp"] and train["remat"] and train["grad_accum"] == 2 and train["dtype"] == "bfloat16"
    assert train["tokens_per_s"] > 0


def test_bad_part_is_rejected():
    result = run_cli(["-m", "train.bench", "--only", "trian"], timeout=120)
    assert result.returncode == 2 and "unknown part" in result.stderr


FAKE_PEER = '''
import json, sys
ms = 2000.0 if "--compile" in sys.argv else 3000.0
assert sys.argv[sys.argv.index("--batch") + 1] == "8"  # the bench's workload is passed on
print(json.dumps({"impl": "fake", "ms_per_step": ms, "tokens_per_s": 1.0}))
'''


def test_torch_rounds_with_a_stand_in_peer(tmp_path):
    """--torch-python runs interleaved rounds and reports per-round and median ratios. A stand-in
    script (no torch import) plays the peer; the interpreter check is what fails without torch."""
    import sys

    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER)
    fake_python = tmp_path / "python"  # answers the `import torch` probe, then runs the script
    fake_python.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then echo 2.13.0-fake; exit 0; fi\n'
                           f'exec {sys.executable} "$@"\n')
    fake_python.chmod(0o755)
    result = run_cli(["-m", "train.bench", "--short", "--only", "train", "--torch-python",
                      str(fake_python), "--torch-script", str(script), "--rounds", "2"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    compare = [r for r in records if r["name"] == "compare"]
    assert [r["round"] for r in compare] == [0, 1, "median"]
    for r in compare[:2]:
        assert r["torch_eager_ms"] == 3000.0 and r["torch_compile_ms"] == 2000.0
        assert r["vs_torch_eager"] == pytest.approx(3000.0 / r["project_ms"], rel=1e-2)
    summary = compare[-1]
    assert summary["vs_torch_compile"] == pytest.approx(
        statistics.median(r["vs_torch_compile"] for r in compare[:2]), rel=1e-3)


def test_torch_python_without_torch_fails_before_compiling(tmp_path):
    import sys

    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER)
    result = run_cli(["-m", "train.bench", "--only", "train", "--torch-python", sys.executable,
                      "--torch-script", str(script)], timeout=120)
    assert result.returncode != 0
    assert "cannot import torch" in result.stderr and "pip install torch==2.13.0" in result.stderr
    assert "matmul peak" not in result.stderr and "train:" not in result.stderr  # nothing measured


def test_missing_peer_script_is_named(tmp_path):
    import sys

    result = run_cli(["-m", "train.bench", "--only", "train", "--torch-python", sys.executable,
                      "--torch-script", str(tmp_path / "absent.py")], timeout=120)
    assert result.returncode != 0 and "absent.py does not exist" in result.stderr
