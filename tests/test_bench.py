"""`python -m train.bench --short` runs end to end and prints its three JSON lines; the peer
comparisons (--torch-python) run against stand-in peers, and against the project's own peer
scripts where a torch venv is named by ATTENTION_LAB_TORCH_PYTHON.

No speed thresholds: CI machines differ and share their cores. docs/performance.md has the
figures of a full run and how to compare them with the PyTorch and Hugging Face peers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys

import pytest

from tests.conftest import REPO_ROOT, run_cli

# An interpreter with torch and transformers (`python3 -m venv /tmp/peer-venv &&
# /tmp/peer-venv/bin/pip install torch==2.13.0 transformers`): the real-peer tests run with it.
PEER_PYTHON = os.environ.get("ATTENTION_LAB_TORCH_PYTHON")
needs_peer = pytest.mark.skipif(not PEER_PYTHON, reason="set ATTENTION_LAB_TORCH_PYTHON to an "
                                "interpreter with torch and transformers")

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
    # The KV cache must not change what greedy decoding or beam search produces.
    assert decode["greedy_cached_equals_uncached"] is True
    assert decode["beam4_cached_equals_uncached"] is True


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


def test_default_peer_scripts_live_in_the_repository():
    from train.bench.peer_compare import DECODE_SCRIPT, PEERS, TRAIN_SCRIPT
    from train.bench.workload import parse_args

    for script in (TRAIN_SCRIPT, DECODE_SCRIPT):
        assert script.is_file() and script.resolve().is_relative_to(REPO_ROOT), script
        assert script.parent == PEERS == REPO_ROOT / "train" / "bench" / "peers"
    a = parse_args([])
    assert (a.torch_script, a.hf_script) == (str(TRAIN_SCRIPT), str(DECODE_SCRIPT))


def test_peer_scripts_import_neither_jax_nor_the_project():
    """They run in the other interpreter, which has torch and none of the project's packages."""
    from train.bench.peer_compare import PEERS

    banned = {"jax", "jaxlib", "flax", "optax", "model", "data", "train", "tests"}
    for script in PEERS.glob("*.py"):
        tops = set()
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                tops.add(node.module.split(".")[0])
        assert not tops & banned, f"{script.name} imports {sorted(tops & banned)}"
        if script.name != "__init__.py":
            assert "torch" in tops, script.name


def test_default_peer_without_torch_fails_before_measuring():
    """No --torch-script: the project's own peer, and the interpreter check still comes first."""
    result = run_cli(["-m", "train.bench", "--only", "train", "--torch-python", sys.executable], timeout=120)
    assert result.returncode != 0 and "cannot import torch" in result.stderr
    assert f"{sys.executable} -m pip install torch==2.13.0" in result.stderr
    assert "matmul peak" not in result.stderr and "train:" not in result.stderr


def test_decode_peer_needs_transformers_and_fails_before_measuring(tmp_path):
    """A peer interpreter with torch but not transformers is refused for --only decode, with the
    install command, before anything is decoded. Stand-in modules play torch and the missing one."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "torch.py").write_text('__version__ = "2.13.0-fake"\n')
    (shim / "transformers.py").write_text('raise ImportError("not installed here")\n')
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\nPYTHONPATH={shim} exec {sys.executable} "$@"\n')
    fake_python.chmod(0o755)
    result = run_cli(["-m", "train.bench", "--only", "decode", "--torch-python", str(fake_python)],
                     timeout=120)
    assert result.returncode != 0
    assert "cannot import transformers" in result.stderr
    assert "pip install torch==2.13.0 transformers" in result.stderr
    assert "decode greedy" not in result.stderr  # nothing measured


FAKE_DECODE_PEER = '''
import json, sys
EXTRA = 0  # tokens generated beyond --new-tokens
arg = lambda flag: int(sys.argv[sys.argv.index(flag) + 1])
tokens = arg("--new-tokens") + EXTRA
for mode, speed in (("greedy", 10.0), ("beam", 4.0)):
    print(json.dumps({"impl": "fake", "mode": mode, "sentences_per_s": speed, "new_tokens": tokens,
                      "all_full_length": True, "batch": arg("--batch")}))
'''


def _decode_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**dict(d_model=64, heads=4, layers=2, ffn=256, vocab=1000,
                                        decode_batch=4, src_len=16, tgt_len=16, beam=4,
                                        decode_reps=1), **kw})


def test_compare_decode_rounds_ratios_and_median(tmp_path):
    """Per-round ratios are project / HF sentences per second; the summary takes their median."""
    from train.bench.peer_compare import compare_decode_rounds

    script = tmp_path / "peer.py"
    script.write_text(FAKE_DECODE_PEER)
    speeds = iter([{"greedy": 20.0, "beam4": 8.0}, {"greedy": 30.0, "beam4": 4.0},
                   {"greedy": 50.0, "beam4": 6.0}])
    records = list(compare_decode_rounds(_decode_args(), lambda: next(speeds), sys.executable,
                                         script, rounds=3))
    assert [r["name"] for r in records] == ["compare_decode"] * 4
    assert [r["round"] for r in records] == [0, 1, 2, "median"]
    assert [r["vs_hf_greedy"] for r in records[:3]] == [2.0, 3.0, 5.0]
    assert [r["vs_hf_beam4"] for r in records[:3]] == [2.0, 1.0, 1.5]
    summary = records[-1]
    assert summary["vs_hf_greedy"] == 3.0 and summary["vs_hf_beam4"] == 1.5
    assert summary["hf_greedy_sentences_per_s"] == 10.0 and summary["new_tokens"] == 16


def test_compare_decode_refuses_a_peer_that_decodes_other_lengths(tmp_path):
    from train.bench.peer_compare import PeerError, compare_decode_rounds

    script = tmp_path / "peer.py"
    script.write_text(FAKE_DECODE_PEER.replace("EXTRA = 0", "EXTRA = 1"))
    with pytest.raises(PeerError, match="work would differ"):
        list(compare_decode_rounds(_decode_args(), lambda: {"greedy": 1.0, "beam4": 1.0},
                                   sys.executable, script, rounds=1))


def test_decode_rounds_with_a_stand_in_peer(tmp_path):
    """--only decode --torch-python: the project's fixed-length decoders, then the peer, per round."""
    script = tmp_path / "peer.py"
    script.write_text(FAKE_DECODE_PEER)
    fake_python = tmp_path / "python"  # answers the import probe, then runs the script
    fake_python.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then echo torch fake; exit 0; fi\n'
                           f'exec {sys.executable} "$@"\n')
    fake_python.chmod(0o755)
    result = run_cli(["-m", "train.bench", "--short", "--only", "decode", "--torch-python",
                      str(fake_python), "--hf-script", str(script), "--rounds", "2"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in records] == ["decode"] + ["compare_decode"] * 3
    for r in records[1:3]:
        assert r["hf_greedy_sentences_per_s"] == 10.0 and r["hf_beam4_sentences_per_s"] == 4.0
        assert r["vs_hf_greedy"] == pytest.approx(r["project_greedy_sentences_per_s"] / 10.0, rel=1e-2)
    assert records[-1]["round"] == "median" and records[-1]["new_tokens"] == 16


TINY = ["--d-model", "32", "--heads", "2", "--layers", "1", "--ffn", "64", "--vocab", "100",
        "--batch", "4", "--src-len", "8"]


def _project_params(argv: list[str]) -> int:
    from flax import nnx

    from model.flops import count_params
    from model.transformer import Transformer
    from train.bench.workload import model_config, parse_args

    a = parse_args(argv)
    return count_params(nnx.split(Transformer(model_config(a), a.vocab, rngs=nnx.Rngs(params=0)))[1])


@needs_peer
def test_real_peer_scripts_run_on_their_own():
    """Each peer script, run directly by the peer interpreter at a tiny size, prints its lines."""
    import subprocess

    from train.bench.peer_compare import DECODE_SCRIPT, TRAIN_SCRIPT

    def lines(cmd):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    train = lines([PEER_PYTHON, str(TRAIN_SCRIPT), *TINY, "--tgt-len", "8", "--steps", "2",
                   "--warmup", "1"])
    assert [r["mode"] for r in train] == ["eager"] and train[0]["ms_per_step"] > 0
    assert train[0]["tied"] and train[0]["positions"] == "sinusoidal"
    assert train[0]["params"] == _project_params(TINY + ["--tgt-len", "8"])  # the same model
    decode = lines([PEER_PYTHON, str(DECODE_SCRIPT), *TINY, "--new-tokens", "6", "--reps", "1"])
    assert [r["mode"] for r in decode] == ["greedy", "beam"]
    for r in decode:
        assert r["new_tokens"] == 6 and r["all_full_length"] and r["sentences_per_s"] > 0


@needs_peer
def test_real_peers_end_to_end():
    """`python -m train.bench --short --only train,decode --torch-python PEER`: one round of each
    comparison against the project's own peers (torch eager and torch.compile, HF generate)."""
    result = run_cli(["-m", "train.bench", "--short", "--only", "train,decode", "--torch-python",
                      PEER_PYTHON, "--rounds", "1"], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    compare = [r for r in records if r["name"] == "compare"]
    assert [r["round"] for r in compare] == [0, "median"]
    assert compare[0]["torch_eager_ms"] > 0 and compare[0]["torch_compile_ms"] > 0
    decode = [r for r in records if r["name"] == "compare_decode"]
    assert [r["round"] for r in decode] == [0, "median"]
    assert decode[0]["hf_greedy_sentences_per_s"] > 0 and decode[0]["hf_beam4_sentences_per_s"] > 0
    assert decode[-1]["new_tokens"] == 16  # --short's target length, on both sides


def test_decode_profile_names_the_ops_and_their_shares():
    """python -m train.bench.profile_decode on a small model: every step's output projection
    (a dot to (vocab, batch): greedy reads vocabulary-major logits) is found, runs once per step,
    and the shares add up."""
    r = run_cli(["-m", "train.bench.profile_decode", "--decode-batch", "4", "--tgt-len", "6", "--d-model", "32",
                 "--ffn", "64", "--layers", "1", "--vocab", "300", "--reps", "1", "--top", "500"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("greedy, 4 sentences x 6 new tokens:")
    rows = [line.split(" | ") for line in r.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    logits = [row for row in rows if "(dot -> f32[300,4])" in row[-1]]
    assert logits and all(row[1] == "6" for row in logits)  # one per decoding step
    shares = [float(row[3].rstrip("%")) for row in rows]
    assert 99.0 <= sum(shares) <= 101.0  # --top 500 lists every op: their shares add up to 100% (rounded)


def test_profile_train_groups_the_steps_ops() -> None:
    """python -m train.bench.profile_train on a small model: the output layer's forward dot (to
    (batch * tgt_len, vocab)) is a dense matmul, the softmax over the vocabulary has its own group,
    AdamW's updates of the (vocab, d_model) table count as parameter updates, and shares add up."""
    r = run_cli(["-m", "train.bench.profile_train", "--batch", "4", "--src-len", "8", "--tgt-len", "8",
                 "--d-model", "32", "--ffn", "64", "--layers", "1", "--vocab", "300", "--steps", "1",
                 "--warmup", "0", "--reps", "1", "--top", "1000"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("train step, 4 pairs x (8 + 8) tokens, d_model 32:")
    tables = [[line.split(" | ") for line in block.splitlines()[2:]] for block in r.stdout.split("\n\n")[1:]]
    groups, ops = tables
    assert [row[0].lstrip("| ") for row in groups] == ["dense matmuls", "attention products", "vocabulary softmax",
                                                       "copies", "parameter updates", "other"]
    assert 99.0 <= sum(float(row[3].rstrip(" |%")) for row in groups) <= 101.0
    by_group = {}
    for row in ops:
        by_group.setdefault(row[1], []).append(row[-1])
    assert any("(dot -> f32[32,300])" in what for what in by_group["dense matmuls"])  # logits: 4 x 8 rows
    assert any("dot -> f32[4,4,8,8]" in what for what in by_group["attention products"])  # (B, H, Tq, Tk)
    assert any("-> f32[4,8,300]" in what for what in by_group["vocabulary softmax"])
    assert any("-> f32[300,32]" in what for what in by_group["parameter updates"])
