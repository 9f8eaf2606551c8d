"""One training run: data, model, jitted steps, periodic validation, checkpoints, logs.

`run(cfg, run_dir)` is everything `python -m train` does after Hydra has composed and
validated the config. Host/device traffic is kept to the log points: the step accumulates
metric sums on device and the host reads them every `train.log_every` steps.
"""

from __future__ import annotations

import json
import logging
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
from train.engine import faults
from train.engine.checkpoint import CheckpointError, Checkpointer, config_diff, config_hash
from train.config import REPO_ROOT, Config
from train.evals.generation import Generator
from train.engine.loggers import Loggers
from train.evals.scores import primary_metric
from train.engine.optimizer import make_optimizer
from train.evals.probe import AttentionProbe
from train.engine.step import TrainState, create_state, make_eval_step, make_train_step, zero_metrics


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived; the loop saved and is exiting."""


class NonFiniteStop(Exception):
    """train.nonfinite=stop (or too many skips in a row) ended the run."""


def quiet_library_logs() -> None:
    """Hydra sets the root logger to INFO; Orbax and JAX then narrate every save and backend probe."""
    for name in ("absl", "jax._src.xla_bridge", "orbax", "datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
        self.signals = faults.StopSignals()
        self.batches: Optional[Prefetcher] = None  # the consumer side: its state() is what was trained on
        self.start_step = 0

    # ---- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        faults.preflight(self.run_dir, self.run_dir / "checkpoints")  # unwritable: an error now, not at the first save
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
        step_fn = make_train_step(self.graphdef, self.tx, cfg.train.label_smoothing)
        if faults.nan_steps():  # test-only fault hook (train/engine/faults.py); decided here, not per step
            step_fn = faults.with_injected_nan(step_fn, faults.nan_steps())
        self.train_step = jax.jit(step_fn, donate_argnums=0)
        self.eval_step = jax.jit(make_eval_step(self.graphdef))
        self.generator = Generator(self.graphdef, self.data, cfg.decode, cfg.data.task,
                                   cfg.data.max_source_len, cfg.data.max_target_len)
        self.metric_name = primary_metric(cfg.data.task)
        self.flops = flops_per_token(cfg.model, self.data.vocab_size, cfg.data.max_source_len,
                                     cfg.data.max_target_len)

        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep=cfg.train.keep_checkpoints, writer=True)
        faults.check_free_space(self.checkpointer.directory, state_bytes(self.state), cfg.train.keep_checkpoints)
        self.model_defining = cfg.model.defining_fields() | {"vocab_size": self.data.vocab_size}
        self.model_hash = config_hash(self.model_defining)
        self.kill_at_step, self.kill_in_save = faults.kill_at_step(), faults.kill_in_save()  # test hooks
        try:
            wandb_id = self.resume_if_possible()
        except BaseException:
            self.checkpointer.close()  # no Orbax threads left behind by a refused resume
            raise
        dropped = faults.trim_metrics_log(self.run_dir / "metrics.jsonl", self.start_step)
        if dropped:
            print(f"metrics.jsonl: dropped {dropped} lines logged after step {self.start_step} by the "
                  f"interrupted run (they are logged again)")
        config_dict = {"seed": cfg.seed, "name": cfg.name, "group": group_name(self.group, cfg),
                       **{k: asdict(getattr(cfg, k)) for k in ("model", "data", "optim", "train", "decode", "logger")}}
        self.loggers = Loggers(self.run_dir, cfg.logger, config_dict, name=self.run_dir.name,
                               group=group_name(self.group, cfg), wandb_run_id=wandb_id,
                               resume_step=self.start_step or None)
        # Attention maps and per-head statistics at each validation (its own jitted step).
        self.probe = AttentionProbe(self.graphdef, self.data, cfg, self.run_dir)
        # Best cross-attention head's word-alignment F1 against gold links (train/evals/alignment.py) on
        # the first val_bleu_examples validation pairs that have them; None without gold links.
        from train.evals.alignment import AlignmentEvaluator, gold_reversed, length_buckets

        self.alignment = AlignmentEvaluator.build(
            self.graphdef, self.data.splits["validation"], self.data.tokenizer,
            limit=cfg.train.val_bleu_examples,
            buckets=length_buckets(max(cfg.data.max_source_len, cfg.data.max_target_len)),
            swap_gold=gold_reversed(cfg.data.source_lang, cfg.data.target_lang))

    def resume_if_possible(self) -> Optional[str]:
        """Continue from the latest checkpoint in run_dir (train.resume=true, the default)."""
        latest = self.checkpointer.latest_step()
        if latest is None:
            return None
        if not self.cfg.train.resume:
            raise SystemExit(
                f"error: {self.run_dir} already holds checkpoints (latest step {latest}) and "
                f"train.resume=false: refusing to overwrite them. Choose a new hydra.run.dir, or drop "
                f"train.resume=false to continue this run."
            )

        def check_model(meta: dict) -> None:  # before any array is read: shapes would not fit anyway
            if meta.get("model_hash") == self.model_hash:
                return
            diffs = config_diff(meta.get("model_defining") or {}, self.model_defining)
            raise SystemExit(
                f"error: the checkpoints in {self.checkpointer.directory} were trained with another model "
                f"config; these model-defining keys differ:\n  " + "\n  ".join(diffs or ["(unknown: no "
                "model_defining in the checkpoint)"]) + f"\nResume with the run's config "
                f"({self.run_dir / '.hydra' / 'overrides.yaml'}), or start a new run in another hydra.run.dir."
            )

        try:
            restored = self.checkpointer.restore_latest({"state": self.state, "key": self.base_key}, check_model)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        meta = restored.meta
        self.state = jax.device_put(restored.state["state"], self.replicated)
        self.base_key = restored.state["key"]
        self.train_batches.restore(meta["data_state"])
        self.start_step = int(self.state.step)
        print(f"resumed from step {restored.step} in {self.run_dir}")
        return meta.get("wandb_run_id")

    # ---- helpers ------------------------------------------------------------------------
    def save(self, metric: Optional[float] = None) -> None:
        """Start an asynchronous save of the whole state (never of a state past a policy stop)."""
        self.check_nonfinite()  # train.nonfinite=stop keeps the last good checkpoint the latest
        step = int(self.state.step)
        meta = {
            "step": step,
            # what the loop consumed, not what the prefetch thread has run ahead to
            "data_state": (self.batches or self.train_batches).state(),
            "model_hash": self.model_hash,
            "model_defining": self.model_defining,
            "wandb_run_id": self.loggers.wandb_run_id,
            "model_config": asdict(self.cfg.model),
            "vocab_size": self.data.vocab_size,
        }
        self.checkpointer.save(step, {"state": self.state, "key": self.base_key}, meta, metric)
        if step == self.kill_in_save:  # test hook: the write is in flight on Orbax's thread
            faults.kill_self(f"while saving step {step} (in progress: {self.checkpointer.manager.is_saving_in_progress()})")

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
        if m["steps"] == 0:  # every update of the interval was skipped as non-finite: no loss to report
            out.update({k: float("nan") for k in ("train/loss", "train/nll", "train/ppl", "train/accuracy",
                                                  "train/grad_norm")})
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
        subset = self.cfg.train.val_bleu_examples
        scores = self.generator.score_split(self.state.params, "validation", limit=None if final else subset,
                                            prefix=subset)
        results.update({f"val/{k}": v for k, v in scores.items() if isinstance(v, (int, float))})
        # Checkpoints are ranked on the same fixed subset at every validation, the final one included.
        self.selection_metric = scores["prefix"][self.metric_name]
        if self.alignment is not None:  # val/align_f1, val/align_aer, val/align_f1_layer_avg
            results.update(self.alignment.run(self.state.params))
        self.loggers.scalars(step, results)
        self.probe.run(step, self.state.params, self.loggers)
        return results

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, t_start = self.cfg, time.time()
        start_step = int(self.state.step)
        summary_path = self.run_dir / "summary.json"
        if start_step >= cfg.train.max_steps and summary_path.is_file():  # rerun of a finished run
            self.checkpointer.close()
            summary = json.loads(summary_path.read_text())
            self.loggers.finish(summary, "finished")
            print(f"{self.run_dir} already finished at step {start_step} (summary.json); raise "
                  f"train.max_steps to train on.")
            return summary
        self.signals.__enter__()  # SIGTERM/SIGINT: finish the step, save, wait, exit (train/engine/faults.py)
        if start_step == 0:  # the maps at initialisation: the baseline every later probe is read against
            self.probe.run(0, self.state.params, self.loggers)
        batches = self.batches = Prefetcher(self.train_batches, size=cfg.data.prefetch, sharding=self.batch_sharding)
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
                if step == self.kill_at_step:  # test hook (train/engine/faults.py): a crash between saves
                    self.checkpointer.wait()  # so that the test knows which checkpoints are complete
                    faults.kill_self(f"after step {step}")
                if step % cfg.train.eval_every == 0 and step != cfg.train.max_steps:
                    last_eval = self.evaluate(step)
                    metric = self.selection_metric
                    best_metric = metric if best_metric is None else max(best_metric, metric)
                    bar.write(f"step {step}: " + "  ".join(f"{k}={v:.3f}" for k, v in last_eval.items()))
                    self.save(metric)
                    last_save_time = time.time()
                    interval_start = time.time()
                elif step != cfg.train.max_steps and self.should_checkpoint(step, last_save_time):
                    self.save()  # (the last step is saved below, with its validation metric)
                    last_save_time = time.time()
                if self.signals.received:
                    self.save()
                    raise StopRequested()
            bar.close()
            last_eval = self.evaluate(cfg.train.max_steps, final=True)
            self.save(self.selection_metric)
            summary = self.finish_summary(last_eval, throughput, time.time() - t_start)
            return summary
        except StopRequested:
            status = "interrupted"
            self.checkpointer.wait()  # the asynchronous write is on disk before the message says so
            step, name = int(self.state.step), self.signals.received
            print(f"\n{name}: saved a checkpoint at step {step} in {self.checkpointer.directory}. Resume with:\n"
                  f"  {faults.resume_command(self.run_dir)}", file=sys.stderr, flush=True)
            raise SystemExit(faults.EXIT_CODES.get(name, 1))
        except NonFiniteStop as e:
            status = "failed"
            self.checkpointer.wait()
            raise SystemExit(f"error: {e}") from None
        except CheckpointError as e:
            status = "failed"
            raise SystemExit(f"error: {e}") from None
        except BaseException:
            status = "failed"
            raise
        finally:
            self.signals.__exit__(None, None, None)
            batches.close()
            bar.close()
            self.checkpointer.close()
            if status != "finished":
                self.loggers.finish({"steps": int(self.state.step)}, status)

    def should_checkpoint(self, step: int, last_save_time: float) -> bool:
        every = self.cfg.train.checkpoint_every
        minutes = self.cfg.train.checkpoint_minutes
        return (every > 0 and step % every == 0) or (minutes > 0 and time.time() - last_save_time > 60 * minutes)

    def check_nonfinite(self, logs: Optional[dict] = None) -> None:
        """Apply train.nonfinite at a log point or before a save (the step itself already skipped it).

        skip: warn, go on; stop once the streak running at this point reaches max_nonfinite_in_row.
        stop: end the run at the first one, before any later state is saved.
        """
        in_row = int(self.state.nonfinite_in_row)
        last = int(self.state.last_nonfinite_step)
        if last < self.start_step:  # none, or only before this run resumed (counted by that run)
            return
        latest = self.checkpointer.latest_step()
        where = (f"the last good checkpoint is step {latest} in {self.checkpointer.directory}" if latest is not None
                 else "no checkpoint was saved before it")
        if self.cfg.train.nonfinite == "stop":
            raise NonFiniteStop(f"non-finite loss or gradient at step {last + 1} (train.nonfinite=stop); the "
                                f"update was not applied and {where}.")
        if in_row >= self.cfg.train.max_nonfinite_in_row:
            raise NonFiniteStop(
                f"{in_row} non-finite losses or gradients in a row, the last at step {last + 1} "
                f"(train.max_nonfinite_in_row={self.cfg.train.max_nonfinite_in_row}); those updates were "
                f"skipped and {where}."
            )
        if logs and logs.get("train/nonfinite_steps"):
            print(f"warning: skipped {int(logs['train/nonfinite_steps'])} non-finite update(s) since the last "
                  f"log, the last at step {last + 1} (train.nonfinite=skip)", file=sys.stderr, flush=True)

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


def state_bytes(tree: Any) -> int:
    """Bytes of all arrays in `tree` (what a checkpoint of it holds)."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype")))


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
