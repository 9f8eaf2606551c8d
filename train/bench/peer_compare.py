"""Interleaved rounds against the PyTorch and Hugging Face peers, run by another interpreter.

    python -m train.bench --only train --torch-python /path/to/peer-venv/bin/python
    python -m train.bench --only decode --torch-python /path/to/peer-venv/bin/python

A shared VM's speed drifts from minute to minute, so times from separate sessions (or even
separate minutes) cannot be compared. Each train round times the project's already compiled
train step, then runs peers/torch_train.py (--torch-script) eagerly and under `torch.compile`
in a subprocess, back to back, on the same workload; each decode round times the project's
KV-cached greedy and beam search, then peers/hf_generate.py (--hf-script), Hugging Face
`generate` on the same shape, batch and number of new tokens. Each round reports its ratios;
the summary line gives the median ratio over rounds. torch and transformers are never imported
here: they live in whatever interpreter `--torch-python` names (a separate venv, see
docs/performance.md), so they stay out of the project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Callable, Iterator

PEERS = Path(__file__).resolve().parent / "peers"  # plain scripts for the peer interpreter
TRAIN_SCRIPT = PEERS / "torch_train.py"
DECODE_SCRIPT = PEERS / "hf_generate.py"
MODES = ("eager", "compile")
INSTALL = {"torch": "torch==2.13.0", "transformers": "transformers"}  # torch 2.13.0: the CPU build here
# Prints the versions of the modules named on its command line; exits 1 naming those missing.
PROBE = ("import importlib, sys\nfound, missing = [], []\nfor m in sys.argv[1:]:\n"
         "    try: found.append(m + ' ' + importlib.import_module(m).__version__)\n"
         "    except Exception: missing.append(m)\n"
         "print(', '.join(missing) if missing else ', '.join(found)); sys.exit(1 if missing else 0)")


class PeerError(RuntimeError):
    """The peer side could not run; the message says why and what to do."""


def peer_needs(parts: list[str]) -> tuple[list[str], list[str]]:
    """(modules the peer interpreter must import, the comparisons to run) for the bench's parts."""
    compared = [p for p in ("train", "decode") if p in parts]
    return ["torch"] + (["transformers"] if "decode" in compared else []), compared


def check_peer(python: str, scripts: list[Path], modules: list[str] = ("torch",)) -> str:
    """Fail before anything is compiled: the scripts exist and `python` imports `modules`.
    Returns what it found ("torch 2.13.0, transformers 5.x")."""
    for script in scripts:
        if not Path(script).is_file():
            raise PeerError(f"peer script {script} does not exist (the project's peers are "
                            f"{TRAIN_SCRIPT.name} and {DECODE_SCRIPT.name} in {PEERS}).")
    try:
        probe = subprocess.run([python, "-c", PROBE, *modules], capture_output=True, text=True,
                               timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerError(f"--torch-python {python} could not be run: {e}") from e
    if probe.returncode != 0:
        missing = probe.stdout.strip() or ", ".join(modules)
        install = " ".join(INSTALL[m] for m in modules)
        raise PeerError(f"--torch-python {python} cannot import {missing}; install the peer's "
                        f"packages there with `{python} -m pip install {install}` (torch's CPU "
                        f"build; keep that interpreter's venv apart from the project's .venv).")
    return probe.stdout.strip()


def peer_command(python: str, script: Path, a: argparse.Namespace, mode: str) -> list[str]:
    """peers/torch_train.py on the same workload as this benchmark's train line."""
    cmd = [python, str(script), "--d-model", str(a.d_model), "--heads", str(a.heads),
           "--layers", str(a.layers), "--ffn", str(a.ffn), "--vocab", str(a.vocab),
           "--batch", str(a.batch), "--src-len", str(a.src_len), "--tgt-len", str(a.tgt_len),
           "--steps", str(a.steps), "--warmup", str(max(a.warmup, 1))]
    if a.torch_like:
        cmd += ["--positions", "learned", "--untied"]
    return cmd + (["--compile"] if mode == "compile" else [])


def decode_peer_command(python: str, script: Path, a: argparse.Namespace) -> list[str]:
    """peers/hf_generate.py on the decode line's model shape, batch and length."""
    return [python, str(script), "--d-model", str(a.d_model), "--heads", str(a.heads),
            "--layers", str(a.layers), "--ffn", str(a.ffn), "--vocab", str(a.vocab),
            "--batch", str(a.decode_batch), "--src-len", str(a.src_len),
            "--new-tokens", str(a.tgt_len), "--beam", str(a.beam), "--reps", str(a.decode_reps),
            "--warmup", "1", "--modes", "greedy,beam"]


def run_peer_lines(cmd: list[str], timeout: float = 1800) -> list[dict]:
    """Run a peer script once; every stdout line that starts with "{" is one JSON record."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{' '.join(cmd)} took over {timeout:.0f} s") from e
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise PeerError(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return [json.loads(line) for line in lines]


def run_peer(cmd: list[str], timeout: float = 1800) -> dict:
    """Run the train peer once; its last JSON line carries ms_per_step."""
    record = run_peer_lines(cmd, timeout)[-1]
    if "ms_per_step" not in record:
        raise PeerError(f"{cmd[1]} printed no ms_per_step: {json.dumps(record)}")
    return record


def _median(per_round: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in per_round), 3)


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
    summary = {"name": "compare", "round": "median", "rounds": rounds,
               "project_ms": _median(per_round, "project_ms")}
    for mode in MODES:
        summary[f"torch_{mode}_ms"] = _median(per_round, f"torch_{mode}_ms")
        # The median of the per-round ratios: each ratio compares two runs minutes apart.
        summary[f"vs_torch_{mode}"] = _median(per_round, f"vs_torch_{mode}")
    summary["tokens"] = a.batch * (a.src_len + a.tgt_len)
    yield summary


def compare_decode_rounds(a: argparse.Namespace, time_project: Callable[[], dict[str, float]],
                          python: str, script: Path, rounds: int) -> Iterator[dict]:
    """Yield one "compare_decode" record per round, then the summary (round = "median").

    time_project() -> {"greedy": sentences/s, "beam<K>": sentences/s} of the project's
    KV-cached decoders, timed now (decode.fixed_length_decoders). Ratios are project / HF
    sentences per second: above 1 means the project decodes faster.
    """
    kinds = {"greedy": "greedy", f"beam{a.beam}": "beam"}  # project's name -> the peer's mode
    per_round = []
    for r in range(rounds):
        project = time_project()
        peer = {rec.get("mode"): rec for rec in run_peer_lines(decode_peer_command(python, script, a))}
        rec: dict = {"name": "compare_decode", "round": r}
        for kind, mode in kinds.items():
            hf = peer.get(mode)
            if hf is None or "sentences_per_s" not in hf:
                raise PeerError(f"{script} printed no {mode} line with sentences_per_s: {list(peer)}")
            if hf.get("new_tokens") != a.tgt_len or hf.get("all_full_length") is False:
                raise PeerError(f"{script} {mode}: {hf.get('new_tokens')} new tokens per sentence "
                                f"(all full length: {hf.get('all_full_length')}), the project "
                                f"decodes exactly {a.tgt_len}: the work would differ")
            rec[f"project_{kind}_sentences_per_s"] = round(project[kind], 2)
            rec[f"hf_{kind}_sentences_per_s"] = hf["sentences_per_s"]
            rec[f"vs_hf_{kind}"] = round(project[kind] / hf["sentences_per_s"], 3)
        per_round.append(rec)
        yield rec
    summary: dict = {"name": "compare_decode", "round": "median", "rounds": rounds}
    for kind in kinds:
        for key in (f"project_{kind}_sentences_per_s", f"hf_{kind}_sentences_per_s", f"vs_hf_{kind}"):
            summary[key] = _median(per_round, key)
    summary.update(batch=a.decode_batch, src_len=a.src_len, new_tokens=a.tgt_len, beam=a.beam)
    yield summary
