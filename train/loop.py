"""One training run: data, model, jitted steps, periodic validation, checkpoints, logs.

`run(cfg, run_dir)` is everything `python -m train` does after Hydra has composed and
validated the config. Host/device traffic is kept to the log points: the step accumulates
metric sums on device and the host reads them every `train.log_every` steps.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import datasets
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from data.pipeline import PreparedData, prepare
from data.packing import PackedBatches
from data.prefetch import Prefetcher
from model.decoding import make_decode_fn
from model.flops import flops_per_token
from model.transformer import Transformer
from train.checkpoint import Checkpointer, config_hash
from train.config import REPO_ROOT, Config
from train.generate import Generator
from train.loggers import Loggers
from train.metrics import primary_metric
from train.optimizer import make_optimizer
from train.step import TrainState, create_state, make_eval_step, make_train_step, zero_metrics


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived; the loop saved and is exiting."""


class NonFiniteStop(Exception):
    """train.nonfinite=stop (or too many skips in a row) ended the run."""


def quiet_library_logs() -> None:
    """Hydra sets the root logger to INFO; Orbax and JAX then narrate every save and backend probe."""
    for name in ("absl", "jax._src.xla_bridge", "orbax", "datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)


def preflight(run_dir: Path) -> None:
    """Fail at start-up, not at the first save, when the run directory can't be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: cannot write to the run directory {run_dir}: {e.strerror}. "
                         f"Free space or choose another with hydra.run.dir=DIR.")


def enable_compilation_cache(path: Optional[str]) -> None:
    """A persistent XLA cache shared by runs and sweep jobs: the second run skips compiling."""
    if not path:
        return
    from train.config import resolve_path

    jax.config.update("jax_compilation_cache_dir", str(resolve_path(path)))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def make_mesh(cfg: Config) -> jax.sharding.Mesh:
    """A 1-D mesh over the devices on the data axis: batch split, parameters replicated."""
    devices = jax.devices()
    n = len(devices) if cfg.train.mesh_data in (-1, 0) else cfg.train.mesh_data
    return jax.sharding.Mesh(np.array(devices[:n]), ("data",))


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, group: Optional[str] = None):
        self.cfg, self.run_dir, self.group = cfg, Path(run_dir), group
        self.stop_signal: Optional[str] = None

    # ---- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        preflight(self.run_dir)
        quiet_library_logs()
        enable_compilation_cache(cfg.train.compilation_cache)
        datasets.disable_progress_bars()  # the run's own bar is the one to watch
        self.data: PreparedData = prepare(cfg.data, REPO_ROOT)
        for split, stats in self.data.stats.items():
            if isinstance(stats, dict):
                print(f"data {split}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))

        # The run directory carries its own tokenizer, so evaluate/translate need nothing else.
        self.data.tokenizer.save(self.run_dir / "tokenizer.json")
        model = Transformer(cfg.model, self.data.vocab_size, rngs=nnx.Rngs(params=cfg.seed))
        self.graphdef, params = nnx.split(model)
        self.num_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
        self.tx, self.schedule = make_optimizer(cfg.optim, cfg.train.max_steps)

        self.mesh = make_mesh(cfg)
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self.batch_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
        self.state: TrainState = jax.device_put(create_state(params, self.tx), self.replicated)
        self.base_key = jax.random.PRNGKey(cfg.seed)  # raw uint32 key: plain to checkpoint

        self.train_batches = PackedBatches(self.data.splits["train"], cfg.data, seed=cfg.seed)
        rows = self.train_batches.rows
        if rows % self.mesh.size:
            raise SystemExit(f"error: {rows} rows per batch do not split over {self.mesh.size} devices; "
                             f"adjust data.max_tokens.")
        self.train_step = jax.jit(make_train_step(self.graphdef, self.tx, cfg.train.label_smoothing),
                                  donate_argnums=0)
        self.eval_step = jax.jit(make_eval_step(self.graphdef))
        self.generator = Generator(self.graphdef, self.data, cfg.decode, cfg.data.task,
                                   cfg.data.max_source_len, cfg.data.max_target_len)
        self.metric_name = primary_metric(cfg.data.task)
        self.flops = flops_per_token(cfg.model, self.data.vocab_size, cfg.data.max_source_len,
                                     cfg.data.max_target_len)

        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep=cfg.train.keep_checkpoints)
        self.model_hash = config_hash(cfg.model.defining_fields() | {"vocab_size": self.data.vocab_size})
        wandb_id = self.resume_if_possible()
        config_dict = {"seed": cfg.seed, "name": cfg.name, **{k: asdict(getattr(cfg, k)) for k in
                       ("model", "data", "optim", "train", "decode", "logger")}}
        self.loggers = Loggers(self.run_dir, cfg.logger, config_dict, name=self.run_dir.name,
                               group=group_name(self.group, cfg), wandb_run_id=wandb_id)
        self.probe = None
        try:  # attention maps at each validation (train/probe.py)
            from train.probe import AttentionProbe

            self.probe = AttentionProbe(self.graphdef, self.data, cfg, self.run_dir)
        except ImportError:
            pass

    def resume_if_possible(self) -> Optional[str]:
        """Continue from the latest checkpoint in run_dir (train.resume=true, the default)."""
        latest = self.checkpointer.latest_step()
        if latest is None:
            return None
        if not self.cfg.train.resume:
            raise SystemExit(
                f"error: {self.run_dir} already holds checkpoints (latest step {latest}) and "
                f"train.resume=false. Choose a new hydra.run.dir, or drop train.resume=false to continue."
            )
        restored, meta = self.checkpointer.restore(latest, {"state": self.state, "key": self.base_key})
        if meta.get("model_hash") != self.model_hash:
            raise SystemExit(f"error: the checkpoint in {self.run_dir} was trained with another model config.")
        self.state = jax.device_put(restored["state"], self.replicated)
        self.base_key = restored["key"]
        self.train_batches.restore(meta["data_state"])
        print(f"resumed from step {latest} in {self.run_dir}")
        return meta.get("wandb_run_id")

    # ---- helpers ------------------------------------------------------------------------
    def save(self, metric: Optional[float] = None) -> None:
        step = int(self.state.step)
        meta = {
            "step": step,
            "data_state": self.train_batches.state(),
            "model_hash": self.model_hash,
            "wandb_run_id": self.loggers.wandb_run_id,
            "model_config": asdict(self.cfg.model),
            "vocab_size": self.data.vocab_size,
        }
        self.checkpointer.save(step, {"state": self.state, "key": self.base_key}, meta, metric)

    def read_and_reset_metrics(self, interval_start: float) -> dict[str, float]:
        m = jax.device_get(self.state.metrics)  # waits for the steps dispatched so far
        elapsed = time.time() - interval_start
        self.state = self.state.replace(metrics=jax.device_put(zero_metrics(), self.replicated))
        tokens, steps = max(m["tokens"], 1.0), max(m["steps"], 1.0)
        out = {
            "train/loss": m["loss_sum"] / tokens,
            "train/nll": m["nll_sum"] / tokens,
            "train/ppl": float(np.exp(min(m["nll_sum"] / tokens, 50.0))),
            "train/accuracy": m["correct_sum"] / tokens,
            "train/grad_norm": m["grad_norm_sum"] / steps,
            "train/lr": float(self.schedule(int(self.state.step))),
            "train/tokens_per_s": (m["tokens"] + m["src_tokens"]) / max(elapsed, 1e-9),
            "train/nonfinite_steps": m["nonfinite"],
        }
        return {k: float(v) for k, v in out.items()}

    def validation_loss(self, split: str) -> dict[str, float]:
        sums = None
        for batch in PackedBatches(self.data.splits[split], self.cfg.data, seed=0, shuffle=False, repeat=False):
            out = self.eval_step(self.state.params, jax.device_put(batch, self.batch_sharding))
            sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
        sums = jax.device_get(sums)
        tokens = max(float(sums["tokens"]), 1.0)
        nll = float(sums["nll_sum"]) / tokens
        return {f"{split_key(split)}/loss": nll, f"{split_key(split)}/ppl": float(np.exp(min(nll, 50.0))),
                f"{split_key(split)}/accuracy": float(sums["correct_sum"]) / tokens}

    def evaluate(self, step: int, final: bool = False) -> dict[str, float]:
        """Validation loss on the whole split; generation scores on a fixed subset (all at the end)."""
        results = self.validation_loss("validation")
        limit = None if final else self.cfg.train.val_bleu_examples
        scores = self.generator.score_split(self.state.params, "validation", limit=limit)
        results.update({f"val/{k}": v for k, v in scores.items() if isinstance(v, (int, float))})
        self.loggers.scalars(step, results)
        if self.probe is not None:
            self.probe.run(step, self.state.params, self.loggers)
        return results

    def handle_signal(self, signum, frame) -> None:
        self.stop_signal = signal.Signals(signum).name

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, t_start = self.cfg, time.time()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_signal)
        start_step = int(self.state.step)
        batches = Prefetcher(self.train_batches, size=cfg.data.prefetch, sharding=self.batch_sharding)
        bar = tqdm(total=cfg.train.max_steps, initial=start_step, disable=not cfg.train.progress,
                   dynamic_ncols=True, desc="train", file=sys.stdout)
        best_metric, last_eval, last_save_time = None, {}, time.time()
        throughput: list[float] = []
        interval_start = time.time()
        status = "finished"
        try:
            for step in range(start_step + 1, cfg.train.max_steps + 1):
                self.state = self.train_step(self.state, next(batches), self.base_key)
                bar.update(1)
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    logs = self.read_and_reset_metrics(interval_start)
                    if step > start_step + cfg.train.log_every:  # the first interval includes compiling
                        throughput.append(logs["train/tokens_per_s"])
                    self.loggers.scalars(step, logs)
                    bar.set_postfix(loss=f"{logs['train/loss']:.3f}", tok_s=f"{logs['train/tokens_per_s']:.0f}")
                    self.check_nonfinite(logs)
                    interval_start = time.time()
                if step % cfg.train.eval_every == 0 and step != cfg.train.max_steps:
                    last_eval = self.evaluate(step)
                    metric = last_eval.get(f"val/{self.metric_name}")
                    best_metric = metric if best_metric is None else max(best_metric, metric)
                    bar.write(f"step {step}: " + "  ".join(f"{k}={v:.3f}" for k, v in last_eval.items()))
                    self.save(metric)
                    last_save_time = time.time()
                    interval_start = time.time()
                elif self.should_checkpoint(step, last_save_time):
                    self.save()
                    last_save_time = time.time()
                if self.stop_signal:
                    self.save()
                    raise StopRequested()
            bar.close()
            last_eval = self.evaluate(cfg.train.max_steps, final=True)
            self.save(last_eval.get(f"val/{self.metric_name}"))
            summary = self.finish_summary(last_eval, throughput, time.time() - t_start)
            return summary
        except StopRequested:
            status = "interrupted"
            self.checkpointer.wait()
            step = int(self.state.step)
            print(f"\n{self.stop_signal}: saved a checkpoint at step {step} in {self.run_dir / 'checkpoints'}. "
                  f"Resume with the same command and hydra.run.dir={self.run_dir}", file=sys.stderr)
            raise SystemExit(143 if self.stop_signal == "SIGTERM" else 130)
        except BaseException:
            status = "failed"
            raise
        finally:
            batches.close()
            bar.close()
            self.checkpointer.close()
            if status != "finished":
                self.loggers.finish({"steps": int(self.state.step)}, status)

    def should_checkpoint(self, step: int, last_save_time: float) -> bool:
        every = self.cfg.train.checkpoint_every
        minutes = self.cfg.train.checkpoint_minutes
        return (every > 0 and step % every == 0) or (minutes > 0 and time.time() - last_save_time > 60 * minutes)

    def check_nonfinite(self, logs: dict) -> None:
        in_row = int(self.state.nonfinite_in_row)
        last = int(self.state.last_nonfinite_step)
        if last < 0:
            return
        if self.cfg.train.nonfinite == "stop" or in_row >= self.cfg.train.max_nonfinite_in_row:
            raise NonFiniteStop(
                f"non-finite loss or gradient at step {last + 1} ({in_row} in a row); the update was "
                f"not applied and the last good checkpoint is in {self.run_dir / 'checkpoints'}."
            )

    def finish_summary(self, val: dict, throughput: list[float], wall_s: float) -> dict:
        summary: dict[str, Any] = dict(val)
        if self.data.splits.get("test") is not None:
            summary.update(self.validation_loss("test"))
            scores = self.generator.score_split(self.state.params, "test", limit=None,
                                                hyp_path=self.run_dir / "test.hyp.txt")
            summary.update({f"test/{k}": v for k, v in scores.items()})
        summary.update({
            "train/tokens_per_s": float(np.median(throughput)) if throughput else None,
            "params": self.num_params,
            "flops_per_token": self.flops["per_token"],
            "steps": int(self.state.step),
            "wall_s": round(wall_s, 1),
            "compiles": {"train_step": self.train_step._cache_size(), "eval_step": self.eval_step._cache_size(),
                         "decode": self.generator.compiles()},
            "status": "finished",
        })
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.loggers.finish(summary, "finished")
        return summary


def split_key(split: str) -> str:
    return "val" if split == "validation" else split


def group_name(group: Optional[str], cfg: Config) -> Optional[str]:
    return cfg.logger.wandb_group or group


def run(cfg: Config, run_dir: Path, group: Optional[str] = None) -> dict:
    trainer = Trainer(cfg, run_dir, group)
    trainer.setup()
    print(f"model: {trainer.num_params / 1e6:.2f}M parameters, {trainer.flops['per_token'] / 1e6:.1f} MFLOPs "
          f"per token; {trainer.train_batches.rows} rows x ({cfg.data.max_source_len}+{cfg.data.max_target_len}) "
          f"tokens per batch; devices: {trainer.mesh.size} x {jax.devices()[0].platform}")
    return trainer.fit()
