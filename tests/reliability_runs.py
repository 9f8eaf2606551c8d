"""The machinery of the reliability suite (tests/test_resume.py, tests/test_faults.py): a workspace
with a generated corpus and shared caches, the scenarios run as real `python -m train`
subprocesses in concurrent waves, readers for what a run leaves on disk, and the ledger behind
the summary line printed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from train.engine import faults

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS = 12  # the reference run's length
EVERY = 3  # checkpoint interval: saves at 3, 6, 9 and the final one at 12 (keep_checkpoints=2)
TIMEOUT_S = 1500  # per wave; a 2-core CI machine runs a wave in well under a minute
NAN_STEPS = "4,7:2"  # NaN gradients at steps 4, 7, 8 (both policies: one compiled step in the cache)
RELIABILITY_MODULES = ("test_resume", "test_faults")

# ---- the ledger behind the summary line -------------------------------------------------------

LEDGER: dict[str, dict[str, Optional[bool]]] = {"fault": {}, "bad input": {}}


@contextmanager
def scenario(kind: str, name: str):
    """Record a fault injected (or a bad input tried); it counts as lost unless its checks pass."""
    LEDGER[kind][name] = False
    yield
    LEDGER[kind][name] = True


def summary_line() -> str:
    faults_, bad = LEDGER["fault"], LEDGER["bad input"]
    lost = [n for group in (faults_, bad) for n, ok in group.items() if not ok]
    return (f"reliability suite: {len(faults_)} faults injected ({', '.join(faults_)}); {len(bad)} bad inputs "
            f"tried ({', '.join(bad)}); " + (f"{len(lost)} LOST: {', '.join(lost)}" if lost else "nothing lost")
            + (f" [run waves: {', '.join(f'{t:.0f}' for t in _RESULTS['wave_s'])} s]" if _RESULTS else ""))


@pytest.fixture(scope="module", autouse=True)
def print_summary(request):
    """Print the summary line after the last reliability module of the session has run."""
    yield
    here = request.module.__name__.rsplit(".", 1)[-1]
    order = [item.module.__name__.rsplit(".", 1)[-1] for item in request.session.items
             if item.module.__name__.rsplit(".", 1)[-1] in RELIABILITY_MODULES]
    if order and order[-1] == here:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print("\n" + summary_line(), flush=True)  # past pytest's capture, so it shows on success too
            if _WS is not None and request.session.testsfailed:
                print(f"reliability runs kept for inspection in {_WS}", flush=True)
        if _WS is not None and not request.session.testsfailed:
            for folder in (_WS / "ro_parent", _WS / "ro_probe", _WS / "runs" / "ro_checkpoints" / "checkpoints"):
                if folder.is_dir():
                    folder.chmod(0o755)  # the read-only test folders, so that rmtree can empty them
            shutil.rmtree(_WS, ignore_errors=True)


# ---- workspace: corpus, data cache, compile cache -----------------------------------------------


def make_corpus(folder: Path, n_train: int = 300, n_val: int = 8) -> None:
    """A toy translation task (reverse the words, spell each backwards) as data=local text files."""
    rng = np.random.default_rng(0)
    words = "red green blue cat dog bird sun moon tree house river stone light dark small big old new".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        src, tgt = [], []
        for _ in range(n):
            sent = [words[i] for i in rng.integers(0, len(words), rng.integers(3, 9))]
            src.append(" ".join(sent))
            tgt.append(" ".join(w[::-1] for w in reversed(sent)))
        (folder / f"{split}.src").write_text("".join(s + "\n" for s in src))
        (folder / f"{split}.tgt").write_text("".join(t + "\n" for t in tgt))


def base_overrides(ws: Path) -> dict[str, str]:
    return {
        "model": "tiny", "model.d_model": "32", "model.ffn_dim": "64", "model.num_heads": "2",
        "model.num_layers": "1",
        "data": "local", "data.path": str(ws / "corpus"), "data.vocab_size": "300",
        "data.cache_dir": str(ws / "data_cache"), "data.max_source_len": "32", "data.max_target_len": "32",
        "data.max_tokens": "256", "data.prefetch": "2",
        "train.max_steps": str(STEPS), "train.log_every": "1", "train.eval_every": "1000",
        "train.checkpoint_every": str(EVERY), "train.keep_checkpoints": "2", "train.val_bleu_examples": "4",
        "train.probe_examples": "0", "train.progress": "false", "train.compilation_cache": "null",
        "logger": "jsonl",
    }


_WS: Optional[Path] = None


def workspace() -> Path:
    """One folder per session: corpus written and data prepared once, before any parallel run.

    Its own temporary folder rather than pytest's basetemp: pytest sessions running side by side
    on one machine delete each other's older basetemps. Removed at the end unless a test failed.
    """
    global _WS
    if _WS is None:
        _WS = Path(tempfile.mkdtemp(prefix="attention-lab-reliability-"))
    ws = _WS
    if not (ws / "ready").exists():
        make_corpus(ws / "corpus")
        from data.pipeline import prepare
        from train.config import compose, to_config

        cfg = to_config(compose([f"{k}={v}" for k, v in base_overrides(ws).items()]))
        prepare(cfg.data, REPO_ROOT)  # concurrent first preparations would race on the cache
        (ws / "ready").write_text("")
    return ws


def run_env(ws: Path, extra: Optional[dict] = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENTION_LAB_FAULT_")}
    env.update({
        "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
        # every compile of every run lands in one cache: later runs skip XLA (identical executables)
        "JAX_COMPILATION_CACHE_DIR": str(ws / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    })
    env.update(extra or {})
    return env


class Run:
    """One `python -m train` subprocess; output in <run_dir>.log."""

    def __init__(self, ws: Path, name: str, overrides: Optional[dict] = None, env: Optional[dict] = None,
                 run_dir: Optional[Path] = None, argv: Optional[list[str]] = None, prefix: tuple = ()):
        self.name = name
        self.run_dir = Path(run_dir or ws / "runs" / name)
        self.log = ws / "logs" / f"{name}.log"  # not beside run_dir: that may be read-only
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if argv is None:
            args = base_overrides(ws) | (overrides or {})
            argv = [sys.executable, "-m", "train", *[f"{k}={v}" for k, v in args.items()],
                    f"hydra.run.dir={self.run_dir}"]
        self.argv = [*prefix, *argv]
        self._file = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=run_env(ws, env), stdout=self._file,
                                     stderr=subprocess.STDOUT, text=True)
        self.rc: Optional[int] = None

    @property
    def out(self) -> str:
        return self.log.read_text(errors="replace")

    def done(self) -> bool:
        return self.proc.poll() is not None

    def wait(self, deadline: float) -> "Run":
        try:
            self.rc = self.proc.wait(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.rc = self.proc.wait()
        self._file.close()
        return self

    def __repr__(self) -> str:  # what pytest shows when an assertion about a run fails
        return f"<run {self.name} rc={self.rc}: ...{self.out[-3000:]}>"


# ---- reading results ----------------------------------------------------------------------------


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir: Path) -> dict[int, tuple]:
    """{step: (loss, nll, accuracy, grad_norm)}; fails on a step logged twice (nothing may be duplicated)."""
    out: dict[int, tuple] = {}
    for row in metric_lines(run_dir):
        if "train/loss" in row:
            assert row["step"] not in out, f"step {row['step']} logged twice in {run_dir}/metrics.jsonl"
            out[row["step"]] = tuple(row[k] for k in ("train/loss", "train/nll", "train/accuracy", "train/grad_norm"))
    return out


def checkpoint_arrays(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step` (params, optimizer state, step, metric sums, key) by path."""
    import jax
    import orbax.checkpoint as ocp

    from train.engine.checkpoint import Checkpointer

    ckpt = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        tree = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    finally:
        ckpt.manager.close()
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def assert_same_state(a: Path, b: Path, step: int) -> None:
    xa, xb = checkpoint_arrays(a, step), checkpoint_arrays(b, step)
    assert xa.keys() == xb.keys()
    differ = [k for k in xa if xa[k].dtype != xb[k].dtype or not np.array_equal(xa[k], xb[k])]
    assert not differ, f"{len(differ)} arrays differ between {a} and {b} at step {step}: {differ[:5]}"


def steps_on_disk(run_dir: Path) -> list[str]:
    folder = Path(run_dir) / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def damage(step_dir: Path, how: str) -> None:
    """Truncate every array data file of a checkpoint to half, or delete them."""
    files = [Path(f) for f in glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True)]
    assert files, f"no data files under {step_dir}"
    for f in files:
        if how == "truncate":
            with open(f, "r+b") as fh:
                fh.truncate(f.stat().st_size // 2)
        else:
            f.unlink()


# ---- read-only folders, also as root ------------------------------------------------------------


def unprivileged_prefix(probe_dir: Path) -> Optional[tuple]:
    """A command prefix under which a chmod 555 folder is really read-only, or None.

    Root ignores permission bits; dropping CAP_DAC_OVERRIDE with setpriv restores them (the
    process stays root, so the repo and the virtual environment stay readable).
    """
    prefix: tuple = ()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            return None
        caps = "-dac_override,-dac_read_search"
        prefix = ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")
        if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
            return None  # no CAP_SETPCAP here (some containers): setpriv itself fails
    probe_dir.mkdir(parents=True, exist_ok=True)
    probe_dir.chmod(0o555)
    result = subprocess.run([*prefix, "sh", "-c", f"touch {shlex.quote(str(probe_dir / 'x'))}"],
                            capture_output=True)
    return prefix if result.returncode != 0 else None


# ---- all the runs of the suite, in two waves ------------------------------------------------------

_RESULTS: Optional[dict] = None


def scenarios() -> dict:
    global _RESULTS
    if _RESULTS is None:
        _RESULTS = run_all(workspace())
    return _RESULTS


def wait_all(r: dict, deadline: float) -> None:
    for run in list(r.values()):
        if isinstance(run, Run) and run.rc is None:
            run.wait(deadline)


def run_all(ws: Path) -> dict:
    """Three waves; the first fills the shared compile cache that the later ones read."""
    r: dict = {"ws": ws}
    t0 = time.time()
    # wave 1: the unbroken reference run, the stop policy, and the unwritable folders
    r["straight"] = Run(ws, "straight")
    r["nan_stop"] = Run(ws, "nan_stop", {"train.nonfinite": "stop"}, env={faults.ENV_NAN: NAN_STEPS})
    prefix = r["ro_prefix"] = unprivileged_prefix(ws / "ro_probe")
    if prefix is not None:
        ro_parent = ws / "ro_parent"
        ro_parent.mkdir()
        ro_parent.chmod(0o555)
        callback = {"++hydra.callbacks.output_dir_check._target_": "train.engine.preflight.OutputDirCheck"}
        r["ro_run_dir"] = Run(ws, "ro_run_dir", callback, run_dir=ro_parent / "run", prefix=prefix)
        ro_ckpt = ws / "runs" / "ro_checkpoints"
        (ro_ckpt / "checkpoints").mkdir(parents=True)
        (ro_ckpt / "checkpoints").chmod(0o555)
        r["ro_checkpoints"] = Run(ws, "ro_checkpoints", run_dir=ro_ckpt, prefix=prefix)
    wait_all(r, time.time() + TIMEOUT_S)

    # wave 2: the faults
    t1 = time.time()
    r["sigkill"] = Run(ws, "sigkill", env={faults.ENV_KILL_AT_STEP: "7"})
    r["sigkill_in_save"] = Run(ws, "sigkill_in_save", env={faults.ENV_KILL_IN_SAVE: "6"})
    r["sigterm"] = Run(ws, "sigterm", {"train.max_steps": "100000"})
    r["nan_skip"] = Run(ws, "nan_skip", {"train.nonfinite": "skip", "train.max_nonfinite_in_row": "2"},
                        env={faults.ENV_NAN: NAN_STEPS})
    deadline = time.time() + TIMEOUT_S
    sigterm = r["sigterm"]
    while not sigterm.done() and time.time() < deadline:  # SIGTERM once a few steps are logged
        path = sigterm.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        if any(json.loads(line).get("step", 0) >= 4 for line in lines[:-1] if line.strip()):
            sigterm.proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    wait_all(r, deadline)

    # wave 3: the resumes
    t2 = time.time()
    r["sigkill_listing"] = steps_on_disk(r["sigkill"].run_dir)
    if r["sigkill_listing"] == ["3", "6"]:  # and the latest of them is damaged: resume falls back to 3
        damage(r["sigkill"].run_dir / "checkpoints" / "6", "truncate")
    # eval_every changes on resume: allowed (it does not define the model), and training is unchanged
    r["sigkill_resumed"] = Run(ws, "sigkill_resumed", {"train.eval_every": "10"}, run_dir=r["sigkill"].run_dir)
    r["sigkill_in_save_listing"] = steps_on_disk(r["sigkill_in_save"].run_dir)
    r["sigkill_in_save_resumed"] = Run(ws, "sigkill_in_save_resumed", run_dir=r["sigkill_in_save"].run_dir)
    r["sigterm_step"] = sigterm_step(sigterm.out)
    command = resume_argv(sigterm.out)
    if command is not None and r["sigterm_step"] is not None:
        # the printed command, as a user would paste it, training 3 steps more (an allowed change)
        argv = [a for a in command if not a.startswith("train.max_steps=")]
        argv = [sys.executable if a == "python" else a for a in argv]
        argv.append(f"train.max_steps={r['sigterm_step'] + 3}")
        r["sigterm_resumed"] = Run(ws, "sigterm_resumed", run_dir=sigterm.run_dir, argv=argv)
    wait_all(r, time.time() + TIMEOUT_S)
    r["wave_s"] = (t1 - t0, t2 - t1, time.time() - t2)
    return r


def run_in_process(ws: Path, run_dir: Path, overrides: Optional[dict] = None) -> dict:
    """`python -m train` without the subprocess, for runs that stop in set-up (no compile)."""
    from train.config import compose, to_config
    from train.engine.trainer import run

    args = base_overrides(ws) | (overrides or {})
    return run(to_config(compose([f"{k}={v}" for k, v in args.items()])), run_dir)


def sigterm_step(out: str) -> Optional[int]:
    for line in out.splitlines():
        if line.startswith("SIGTERM: saved a checkpoint at step "):
            return int(line.split("at step ")[1].split()[0])
    return None


def resume_argv(out: str) -> Optional[list[str]]:
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("Resume with:") and i + 1 < len(lines):
            return shlex.split(lines[i + 1].strip())
    return None


@pytest.fixture(scope="module")
def runs() -> dict:
    return scenarios()


def assert_clean_error(run: Run, *needles: str) -> None:
    """Failed with a message, not a traceback."""
    assert run.rc not in (0, None), run
    assert "Traceback" not in run.out, run
    for needle in needles:
        assert needle in run.out, (needle, run)


# ---- the tests ----------------------------------------------------------------------------------


def copy_of_reference(runs: dict, name: str) -> Path:
    assert runs["straight"].rc == 0, runs["straight"]
    target = runs["ws"] / "runs" / name
    shutil.copytree(runs["straight"].run_dir, target)
    return target
