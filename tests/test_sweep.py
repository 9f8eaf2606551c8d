"""Sweeps: `python -m train -m ...` end to end, the up-front grid check, and the SLURM launcher config."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest
import yaml
from tests.conftest import run_cli

TINY = ["model=tiny", "model.num_layers=1", "model.d_model=32", "model.ffn_dim=64", "logger=jsonl"]


def write_corpus(folder: Path) -> None:
    """Word-for-word toy pairs in the data=local text format."""
    rng = random.Random(0)
    lexicon = dict(zip("the a cat dog sees likes big small red blue house tree".split(),
                       "el un gato perro ve quiere grande pequeño rojo azul casa árbol".split()))
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 200), ("validation", 12), ("test", 12)):
        src = [" ".join(rng.choice(list(lexicon)) for _ in range(rng.randint(3, 7))) for _ in range(n)]
        (folder / f"{split}.src").write_text("\n".join(src) + "\n")
        (folder / f"{split}.tgt").write_text("\n".join(" ".join(lexicon[w] for w in s.split()) for s in src) + "\n")


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep.rglob(".hydra/config.yaml"))


@pytest.mark.slow
def test_two_point_two_seed_sweep_then_report(tmp_path: Path):
    write_corpus(tmp_path / "corpus")
    sweep = tmp_path / "multirun" / "heads"
    proc = run_cli([
        "-m", "train", "-m", "model.num_heads=1,2", "seed=0,1", *TINY,
        "data=local", f"data.path={tmp_path / 'corpus'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.vocab_size=100", "data.max_source_len=16", "data.max_target_len=16",
        "data.max_tokens=256", "train.max_steps=12", "train.log_every=4", "train.eval_every=12",
        "train.checkpoint_every=0", "train.val_bleu_examples=4", "train.probe_examples=2", "train.progress=false",
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}_heads${model.num_heads}_seed${seed}",
    ], timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # The data was prepared once, before the jobs: every job then found it in the cache.
    assert out.count("prepared once for all jobs") == 1 and out.count("Training a bpe tokenizer") == 1
    assert out.count("data cache: hit=True") == 4
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["swept"] == ["model.num_heads", "seed"] and len(record["points"]) == 4

    runs = run_dirs(sweep)
    assert [p.name for p in runs] == ["0_heads1_seed0", "1_heads1_seed1", "2_heads2_seed0", "3_heads2_seed1"]
    for heads, run in zip((1, 1, 2, 2), runs):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 12
        assert summary["params"] > 0 and summary["flops_per_token"] > 0
        assert 0 <= summary["test/repeat_4gram"] <= 100 and summary["test/len_ratio"] > 0  # loops, length
        wall = summary["wall_breakdown_s"]  # where the time went, phase by phase
        assert {"data", "setup", "compile", "train_steps", "probe", "checkpoint", "test", "total"} <= set(wall)
        assert {"validation/ValidationLoss", "validation/GenerationScores"} <= set(wall)
        assert sum(v for k, v in wall.items() if k != "total") == pytest.approx(wall["total"], abs=3.0)
        assert json.loads((run / "job_status.json").read_text())["status"] == "finished"
        assert yaml.safe_load((run / ".hydra/config.yaml").read_text())["model"]["num_heads"] == heads
        # What the report's significance test reads: one line per test pair.
        assert len((run / "test.hyp.txt").read_text().splitlines()) == 12
        assert (run / "test.ref.txt").read_text().splitlines()[0] == (tmp_path / "corpus/test.tgt").read_text().splitlines()[0]
    # head_dim unset: the heads split d_model, so both points have the same size and cost.
    first, second = (json.loads((r / "summary.json").read_text()) for r in (runs[0], runs[2]))
    assert first["params"] == second["params"] and first["flops_per_token"] == second["flops_per_token"]

    report = run_cli(["-m", "train.report", str(sweep)], timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    folder = sweep / "report"
    assert {"report.md", "report.csv", "report.html", "points.csv", "metric_vs_model.num_heads.png",
            "val_curves.png", "attention_entropy.png"} <= {p.name for p in folder.iterdir()}
    lines = [line for line in report.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model.num_heads | seed | heads x dim | params | FLOPs/token | val loss | val bleu | test bleu")
    assert lines[2].startswith("| 1 | 0 | 1x32 |") and lines[5].startswith("| 2 | 1 | 2x16 |")
    assert all(line.rstrip().endswith("| finished |") for line in lines[2:6])
    # The points table: two points, each over 2 seeds, with intervals; then the test of 2 heads vs 1.
    points = [line for line in lines if line.startswith(("| 1 | 2/2 |", "| 2 | 2/2 |"))]
    assert len(points) == 2 and all(" ± " in line and "[" in line for line in points)
    assert "model.num_heads=2 vs model.num_heads=1: " in report.stdout and "over 2 seeds" in report.stdout
    assert "attention entropy by layer and head count" in report.stdout and "cross:" in report.stdout

    # The page opens in Chromium without an error and fetches nothing; its links reach the explorers.
    from tests.test_explorer_browser import assert_clean, need_chromium, opened

    page_html = (folder / "report.html").read_text()
    assert page_html.count('explorer.html">open</a>') == 4
    need_chromium()
    with opened(folder / "report.html") as (page, errors, requests):
        assert page.locator("img").count() >= 3 and page.locator("table").count() == 2
        assert "p = " in page.inner_text("body") or "p ≤ " in page.inner_text("body")
        assert_clean(errors, requests)


def test_invalid_grid_fails_before_any_job(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "train", "-m", "model=tiny", "model.num_heads=2,3", "seed=0,1", f"hydra.sweep.dir={sweep}"],
                   timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    listed = proc.stderr.split("no job was started:")[1]
    assert "error: 2 of 4 sweep points are invalid" in proc.stderr
    assert "model.num_heads=3 (2 points): model.num_heads=3 does not divide model.d_model=64" in listed
    assert "model.num_heads=2" not in listed  # only the bad points are listed
    assert not sweep.exists()  # no job directory, no data prepared, nothing launched


def test_invalid_optuna_space_fails_before_the_first_trial(tmp_path: Path):
    """With Optuna, every choice and both ends of each interval are checked: a float interval on
    an integer key would fail at the first trial that samples it."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "train", "hparams_search=optuna", "model=tiny", "optim.warmup_steps=interval(0,100)",
                    "optim.lr=1e-3", "model.dropout=0.1", f"hydra.sweep.dir={sweep}"], timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "interval ends included) are invalid; no job was started" in proc.stderr
    assert "optim.warmup_steps=0.0" in proc.stderr and "could not be converted to Integer" in proc.stderr
    assert not sweep.exists()


SLURM_DRIVER = textwrap.dedent("""
    # Runs `python -m train -m hydra/launcher=slurm ...` with submitit's AutoExecutor swapped for one
    # that (1) validates the parameters against submitit's SLURM executor and renders its sbatch
    # script, then (2) runs the jobs with submitit's local executor. The task is OmegaConf.to_yaml:
    # the test is about the launcher, not training.
    import json, os, sys
    import hydra, submitit
    from omegaconf import OmegaConf
    from train.config import CONFIG_DIR, register_configs

    out, fake_bin = sys.argv[1], sys.argv[2]
    os.environ["PATH"] = fake_bin + os.pathsep + os.environ["PATH"]  # a dummy srun: SlurmExecutor checks for it
    Real = submitit.AutoExecutor
    seen = {}

    class SlurmThenLocal:
        def __init__(self, folder, cluster=None, **kwargs):
            seen.update(cluster=cluster, init=kwargs)
            self.slurm = Real(folder=folder, cluster="slurm", **kwargs)
            self.local = Real(folder=folder, cluster="local")

        def update_parameters(self, **params):
            seen["params"] = params
            self.slurm.update_parameters(**params)
            seen["sbatch"] = self.slurm._executor._make_submission_file_text("COMMAND", "UID")
            self.local.update_parameters(**params)

        def map_array(self, fn, *args):
            jobs = self.local.map_array(fn, *args)
            seen["jobs"] = len(jobs)
            return jobs

    submitit.AutoExecutor = SlurmThenLocal
    register_configs()
    sys.argv = ["train", "-m", *sys.argv[3:]]
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(OmegaConf.to_yaml)()
    with open(out, "w") as f:
        json.dump(seen, f)
""")


def test_slurm_launcher_passes_resources_to_submitit(tmp_path: Path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    sweep = tmp_path / "sweep"
    seen_path = tmp_path / "seen.json"
    proc = run_cli(["-c", SLURM_DRIVER, str(seen_path), str(fake_bin),
                    "hydra/launcher=slurm", "hydra.launcher.partition=testpart", "hydra.launcher.gpus_per_node=2",
                    "hydra.launcher.timeout_min=17", "hydra.launcher.mem_gb=3", "hydra.launcher.cpus_per_task=5",
                    "hydra.launcher.array_parallelism=7", "hydra.callbacks.sweep.prepare_data=false",
                    "model=tiny", "model.num_heads=1,2", f"hydra.sweep.dir={sweep}"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(seen_path.read_text())
    assert seen["cluster"] == "slurm" and seen["jobs"] == 2
    params = seen["params"]
    assert params["timeout_min"] == 17 and params["gpus_per_node"] == 2 and params["mem_gb"] == 3
    assert params["cpus_per_task"] == 5 and params["slurm_partition"] == "testpart"
    assert params["slurm_array_parallelism"] == 7
    sbatch = seen["sbatch"]
    for line in ("#SBATCH --partition=testpart", "#SBATCH --gpus-per-node=2", "#SBATCH --time=17",
                 "#SBATCH --mem=3GB", "#SBATCH --cpus-per-task=5", "#SBATCH --signal=USR2@120"):
        assert line in sbatch, sbatch

    # The jobs ran (through submitit's local executor), each with its own point of the grid.
    runs = run_dirs(sweep)
    assert len(runs) == 2
    for heads, run in zip((1, 2), runs):
        status = json.loads((run / "job_status.json").read_text())
        assert status["status"] == "finished" and f"num_heads: {heads}" in status["return_value"]


OPTUNA_DRIVER = textwrap.dedent("""
    # `python -m train hparams_search=optuna ...` with a stand-in task that returns a number derived
    # from its config, the way train/__main__.py returns the final validation metric.
    import sys
    import hydra
    from train.config import CONFIG_DIR, register_configs

    def task(cfg):
        return float(cfg.model.num_heads) - 1000 * cfg.optim.lr

    register_configs()
    sys.argv = ["train", *sys.argv[1:]]
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(task)()
""")


def test_optuna_search_maximises_what_the_task_returns(tmp_path: Path):
    sweep = tmp_path / "sweep"
    # Fixed values on the command line take keys out of the search space (fewer points to check).
    proc = run_cli(["-c", OPTUNA_DRIVER, "hparams_search=optuna", "model=tiny", "hydra.sweeper.n_trials=4",
                    "optim.warmup_steps=100", "model.dropout=0.1",
                    "hydra.callbacks.sweep.prepare_data=false", f"hydra.sweep.dir={sweep}"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == {"model.num_heads", "optim.lr"}
    trials = run_dirs(sweep)
    assert len(trials) == 4
    values = [json.loads((t / "job_status.json").read_text())["return_value"] for t in trials]
    assert results["best_value"] == pytest.approx(max(values))  # direction: maximize
    assert json.loads((sweep / "sweep.json").read_text())["swept"] == ["model.num_heads", "optim.lr"]
