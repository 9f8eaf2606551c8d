"""The soak: kill a training run with SIGKILL at random moments, rerun it each time, and check that
nothing was lost or changed.

    python -m tests.soak --kills 20 --seed 1        # prints one line, exit status 0 when clean

A tiny model trains on a generated corpus, with every logger on (metrics.jsonl, TensorBoard,
wandb offline) and an empty data cache. Each kill first draws (from the seed) a moment of the
run that is still ahead of it: while the data cache and tokenizer are first built, between steps,
inside an asynchronous checkpoint save, during validation and decoding, while the probe writes its
PNG and npz files, or during the final test decoding and summary; the soak watches the run's
files, waits for that moment and sends SIGKILL, after a random jitter. The same command is then
started again in the same run directory, until the run finishes; the kills left go to a new run
directory with a new empty cache. Every finished run is compared with an unbroken run of the same
command: every array of the final checkpoint
(parameters, optimizer state, key, data position), every logged metric (`train/loss` at every
step, validation, alignment and attention statistics), bitwise; no metric line missing or
duplicated; the summary's scores. tests/test_soak.py runs a 3-kill version in the suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS, EVAL_EVERY, CHECKPOINT_EVERY = 24, 8, 4
TIMING_KEYS = ("train/tokens_per_s",)  # wall-clock figures: the only values allowed to differ
SUMMARY_KEYS = ("val/loss", "val/bleu", "val/chrf", "test/loss", "test/bleu", "test/chrf", "steps", "params")


def command(ws: Path, run_dir: Path, cache: Path) -> list[str]:
    overrides = {
        "model": "tiny", "model.num_layers": "1", "model.d_model": "32", "model.ffn_dim": "64",
        "data": "local", "data.path": str(ws / "corpus"), "data.cache_dir": str(cache), "data.vocab_size": "100",
        "data.max_source_len": "16", "data.max_target_len": "16", "data.max_tokens": "256",
        "train.max_steps": str(STEPS), "train.log_every": "2", "train.eval_every": str(EVAL_EVERY),
        "train.checkpoint_every": str(CHECKPOINT_EVERY), "train.val_bleu_examples": "8",
        "train.probe_examples": "2", "train.progress": "false", "train.compilation_cache": str(ws / "jax_cache"),
        "logger.tensorboard": "true", "logger.wandb": "offline", "hydra.run.dir": str(run_dir),
    }
    return [sys.executable, "-m", "train", *[f"{k}={v}" for k, v in overrides.items()]]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENTION_LAB_FAULT_")}
    return env | {"PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu", "WANDB_SILENT": "true",
                  "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


# ---- what the run is doing, read off its files -----------------------------------------------

def logged_steps(run_dir: Path) -> list[int]:
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "train/loss" in row:
            out.append(int(row["step"]))
    return out


def saved_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def saving(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any("tmp" in p.name for p in folder.iterdir())


def probing(run_dir: Path, seen: set) -> bool:
    steps = {p.name for p in (run_dir / "attention").glob("step_*")} if (run_dir / "attention").is_dir() else set()
    return bool(steps - seen)


def moments(run_dir: Path, cache: Path) -> list[str]:
    """The moments still ahead of a (re)started run."""
    done = max(saved_steps(run_dir), default=0)
    out = ["between steps"] if done < STEPS else []
    if not any(cache.glob("*/tokenized-*/stats.json")):
        out.append("data cache build")
    if done < STEPS:
        out += ["checkpoint save", "validation", "probe files"]
    if not (run_dir / "summary.json").is_file():
        out.append("test decoding and summary")
    return out


def wait_for(moment: str, proc: subprocess.Popen, run_dir: Path, cache: Path, rng: random.Random,
             timeout: float = 600) -> bool:
    """Block until `moment` of the run is under way (True), or the run ended first (False)."""
    deadline = time.time() + timeout
    start_steps = set(logged_steps(run_dir))
    start_probes = {p.name for p in (run_dir / "attention").glob("step_*")} if (run_dir / "attention").is_dir() else set()
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if moment == "data cache build" and any(cache.glob("*.lock")):
            time.sleep(rng.uniform(0.0, 1.5))  # tokenizer training and tokenization take about that
            return True
        new = set(logged_steps(run_dir)) - start_steps
        if moment == "between steps" and new:
            time.sleep(rng.uniform(0.0, 0.3))
            return True
        if moment == "validation" and any(s % EVAL_EVERY == 0 for s in new):
            time.sleep(rng.uniform(0.0, 1.0))  # validation loss, decoding, alignment follow the log point
            return True
        if moment == "checkpoint save" and saving(run_dir):
            return True
        if moment == "probe files" and probing(run_dir, start_probes):
            return True
        if moment == "test decoding and summary" and STEPS in set(logged_steps(run_dir)):
            time.sleep(rng.uniform(0.0, 3.0))
            return True
        time.sleep(0.005)
    return False


# ---- comparison ---------------------------------------------------------------------------------

def metric_table(run_dir: Path) -> tuple[dict, int]:
    """{(step, key): value} of every logged metric, and how many (step, key) pairs appear twice."""
    table, duplicates = {}, 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key == "step" or key in TIMING_KEYS:
                continue
            duplicates += (row["step"], key) in table
            table[(row["step"], key)] = value
    return table, duplicates


def checkpoint(run_dir: Path) -> dict[str, np.ndarray]:
    from tests.reliability_runs import checkpoint_arrays

    return checkpoint_arrays(run_dir, STEPS)


def compare(reference: Path, soaked: Path) -> dict:
    ref_metrics, ref_dup = metric_table(reference)
    got_metrics, got_dup = metric_table(soaked)
    lost = [k for k in ref_metrics if k not in got_metrics]
    extra = [k for k in got_metrics if k not in ref_metrics]
    changed = [k for k in ref_metrics if k in got_metrics and ref_metrics[k] != got_metrics[k]
               and not (ref_metrics[k] != ref_metrics[k] and got_metrics[k] != got_metrics[k])]  # NaN == NaN
    a, b = checkpoint(reference), checkpoint(soaked)
    arrays = sorted(set(a) ^ set(b)) + [k for k in a if k in b and not np.array_equal(a[k], b[k])]
    sa = json.loads((reference / "summary.json").read_text())
    sb = json.loads((soaked / "summary.json").read_text())
    summary = [k for k in SUMMARY_KEYS if sa.get(k) != sb.get(k)]
    return {"lost": lost, "extra": extra, "duplicated": got_dup - ref_dup, "changed": changed,
            "arrays": arrays, "summary": summary}


# ---- the soak -----------------------------------------------------------------------------------

def soak(kills: int, seed: int, ws: Path) -> tuple[str, bool]:
    from tests.test_sweep import write_corpus

    t0 = time.time()
    rng = random.Random(seed)
    write_corpus(ws / "corpus")
    env = environment()
    reference = ws / "reference"
    ref = subprocess.run(command(ws, reference, ws / "cache_reference"), cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    if ref.returncode != 0:
        raise SystemExit(f"soak: the unbroken run failed:\n{ref.stderr[-3000:]}")

    hit: collections.Counter = collections.Counter()
    landed, episodes, differences, lost = 0, 0, 0, 0
    details = []
    log = open(ws / "soak.log", "w")
    # An episode is one run directory (and an empty data cache) killed until it finishes; a run
    # has only so many moments, so the kills are spread over as many episodes as they need.
    while landed < kills:
        episodes += 1
        run_dir, cache = ws / f"soaked{episodes}", ws / f"cache{episodes}"
        while landed < kills:
            ahead = moments(run_dir, cache)
            if not ahead:
                break
            moment = rng.choice(ahead)
            proc = subprocess.Popen(command(ws, run_dir, cache), cwd=REPO_ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            if not wait_for(moment, proc, run_dir, cache, rng):
                proc.wait()
                if proc.returncode != 0:
                    return f"soak: a rerun failed after {landed} kills (rc {proc.returncode}); see {ws / 'soak.log'}", False
                break  # it finished before that moment came: the episode is complete
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
            hit[moment] += 1
            print(f"soak: kill {landed}/{kills} during {moment} (episode {episodes}, checkpoints "
                  f"{saved_steps(run_dir)})", file=sys.stderr, flush=True)
        final = subprocess.run(command(ws, run_dir, cache), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=1200)
        if final.returncode != 0:
            return f"soak: the rerun after {landed} kills was refused or failed:\n{final.stderr[-3000:]}", False
        diff = compare(reference, run_dir)
        differences += len(diff["changed"]) + len(diff["arrays"]) + len(diff["summary"]) + len(diff["extra"])
        lost += len(diff["lost"]) + max(diff["duplicated"], 0)
        if any(diff.values()):
            details.append({"episode": episodes, **{k: [str(x) for x in v] if isinstance(v, list) else v
                                                    for k, v in diff.items()}})
    ok = differences == 0 and lost == 0 and landed == kills
    moments_hit = ", ".join(f"{k} {v}" for k, v in sorted(hit.items()))
    line = (f"soak: {landed}/{kills} kills survived, {differences} differences, {lost} lost log lines "
            f"(seed {seed}, {time.time() - t0:.0f} s, {episodes} runs; kills during: {moments_hit})")
    if not ok:
        line += "\n" + json.dumps(details)[:3000]
    return line, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the workspace (printed) for inspection")
    a = parser.parse_args(argv)
    ws = Path(tempfile.mkdtemp(prefix="attention-lab-soak-"))
    line, ok = soak(a.kills, a.seed, ws)
    print(line, flush=True)
    if a.keep or not ok:
        print(f"soak: workspace kept in {ws}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(ws, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
