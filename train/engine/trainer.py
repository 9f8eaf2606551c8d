"""One training run: `run(cfg, run_dir)` is everything `python -m train` does after Hydra.

`Trainer.setup()` builds the parts (data, model, jitted step, checkpointer, loggers, evaluators)
and resumes from the run directory when it holds checkpoints; `Trainer.fit()` is the loop: one
jitted step, then the hooks (train/engine/hooks.py) that are due. Logging, validation (with the
probe and a ranked checkpoint), periodic checkpoints, stop signals and the tests' fault
injection are all hooks. Host/device traffic is kept to the log points: the step accumulates
metric sums on device and the metrics hook reads them every `train.log_every` steps.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional

import datasets
import jax
from flax import nnx

from data.packing import PackedBatches
from data.pipeline import PreparedData, prepare
from data.prefetch import Prefetcher
from model.flops import count_params, flops_per_token
from model.transformer import Transformer
from train.config import REPO_ROOT, Config
from train.engine import faults
from train.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    config_hash,
    model_defining,
)
from train.engine.finish import test_scores, write_explorer_page
from train.engine.hooks import Hooks
from train.engine.init_from import initial_params
from train.engine.loggers import Loggers, NoLoggers
from train.engine.optimizer import make_optimizer
from train.engine.preflight import check_free_space, preflight
from train.engine.progress import Progress, now
from train.engine.resume import restore_latest, trim_metrics_log
from train.engine.run_files import read_summary, state_bytes, write_atomically
from train.engine.runtime import enable_compilation_cache, quiet_library_logs
from train.engine.sharding import (
    any_process,
    batch_sharding,
    check_divisible,
    describe,
    initialize_distributed,
    is_writer,
    jit_train_step,
    make_mesh,
    put_batch,
    put_global,
    replicated,
    state_sharding,
)
from train.engine.signals import EXIT_CODES, StopSignals, resume_command
from train.engine.step import TrainState, create_state, make_train_step
from train.engine.train_metrics import MetricsLog
from train.engine.validation import Validation
from train.engine.wall_time import WallTime
from train.errors import first_line
from train.evals.alignment import AlignmentEvaluator, gold_reversed, length_buckets
from train.evals.generation import GenerationScores, Generator
from train.evals.probe import AttentionProbe
from train.evals.scores import primary_metric
from train.evals.validation_loss import ValidationLoss


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived; the loop saved and is exiting."""


class NonFiniteStop(Exception):
    """train.nonfinite=stop (or too many skips in a row) ended the run."""


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, group: Optional[str] = None):
        self.cfg, self.run_dir, self.group = cfg, Path(run_dir), group
        self.signals = StopSignals()
        self.batches: Optional[Prefetcher] = None  # the consumer side: its state() is what was trained on
        self.start_step = 0
        self.last_save_time, self.last_saved_step = now(), -1
        self.wall = WallTime()  # seconds per phase, for summary.json's wall_breakdown_s

    # ---- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        initialize_distributed(cfg.train)  # several processes: join them before any device is touched
        self.writer = is_writer()  # process 0 writes logs, figures and the summary; all save checkpoints
        preflight(self.run_dir, self.run_dir / "checkpoints")  # unwritable: an error now, not at the first save
        quiet_library_logs()
        enable_compilation_cache(cfg.train.compilation_cache)
        datasets.disable_progress_bars()  # the run's own bar is the one to watch
        with self.wall.phase("data"):  # tokenizer and tokenized splits: trained and built, or read back
            self.data: PreparedData = prepare(cfg.data, REPO_ROOT)
        for split, stats in self.data.stats.items():
            if isinstance(stats, dict) and self.writer:
                print(f"data {split}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
        if self.writer:  # the run directory carries its own tokenizer, so evaluate/translate need nothing else
            self.data.tokenizer.save(self.run_dir / "tokenizer.json")

        with self.wall.phase("setup"):
            self._build_run()

    def _build_run(self) -> None:
        """Model, step, checkpoints (resuming from the latest), loggers, evaluators and hooks."""
        cfg = self.cfg
        self._build_model_and_step()
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep=cfg.train.keep_checkpoints, writer=True)
        check_free_space(self.checkpointer.directory, state_bytes(self.state), cfg.train.keep_checkpoints)
        try:
            wandb_id = self._resume()
        except BaseException:
            self.checkpointer.close()  # no Orbax threads left behind by a refused resume
            raise
        # Lines an interrupted attempt logged after the checkpoint it left (after none: all of them,
        # the step-0 probe included) are logged again by this one.
        kept_step = self.start_step if self.resumed else -1
        dropped = trim_metrics_log(self.run_dir / "metrics.jsonl", kept_step) if self.writer else 0
        if dropped:
            print(f"metrics.jsonl: dropped {dropped} lines logged after step {kept_step} by the "
                  f"interrupted run (they are logged again)")
        group = cfg.logger.wandb_group or self.group
        config_dict = {"seed": cfg.seed, "name": cfg.name, "group": group,
                       **{k: asdict(getattr(cfg, k)) for k in ("model", "data", "optim", "train", "decode", "logger")}}
        self.loggers = (Loggers(self.run_dir, cfg.logger, config_dict, name=self.run_dir.name, group=group,
                                wandb_run_id=wandb_id, resume_step=kept_step if dropped or self.resumed else None)
                        if self.writer else NoLoggers())
        self._build_evaluators()
        self._add_hooks()

    def _build_model_and_step(self) -> None:
        cfg = self.cfg
        model = Transformer(cfg.model, self.data.vocab_size, rngs=nnx.Rngs(params=cfg.seed))
        self.graphdef, params = nnx.split(model)
        params = initial_params(cfg, params, self.data.tokenizer, self.run_dir)  # train.init_from
        self.num_params = count_params(params)
        self.tx, self.schedule = make_optimizer(cfg.optim, cfg.train.max_steps)
        # The one device path (train/engine/sharding.py): every device of every process.
        self.mesh = make_mesh(cfg.train)
        self.replicated = replicated(self.mesh)
        self.batch_sharding = batch_sharding(self.mesh)
        state = create_state(params, self.tx)
        self.state_shardings = state_sharding(state, self.mesh, cfg.train.fsdp)
        self.state: TrainState = put_global(state, self.state_shardings)
        self.base_key = put_global(jax.random.PRNGKey(cfg.seed), self.replicated)  # raw uint32: plain to checkpoint
        rows = cfg.data.max_tokens // (cfg.data.max_source_len + cfg.data.max_target_len)
        problem = check_divisible(rows, self.mesh)
        if problem:
            raise SystemExit(f"error: {problem}")
        self.train_batches = PackedBatches(self.data.splits["train"], cfg.data, seed=cfg.seed,
                                           process_index=jax.process_index(), process_count=jax.process_count())
        step_fn = faults.wrap_step(make_train_step(self.graphdef, self.tx, cfg.train.label_smoothing, cfg.train.gate_l0))
        self.train_step = jit_train_step(step_fn, self.state_shardings, self.batch_sharding)
        self.flops = flops_per_token(cfg.model, self.data.vocab_size, cfg.data.max_source_len,
                                     cfg.data.max_target_len)
        self.model_defining = model_defining(cfg.model, self.data.vocab_size)

    def _resume(self) -> Optional[str]:
        """Continue from the latest checkpoint in run_dir; return the wandb run id to continue."""
        resumed = restore_latest(self.checkpointer, {"state": self.state, "key": self.base_key},
                                 self.model_defining, self.run_dir, self.cfg.train.resume)
        self.resumed = resumed is not None
        if resumed is None:
            return None
        self.state = put_global(resumed.tree["state"], self.state_shardings)
        self.base_key = put_global(resumed.tree["key"], self.replicated)
        self.train_batches.restore(resumed.meta["data_state"])
        self.start_step = int(self.state.step)
        print(f"resumed from step {resumed.step} in {self.run_dir}")
        return resumed.meta.get("wandb_run_id")

    def _build_evaluators(self) -> None:
        cfg, data = self.cfg, self.data
        self.generator = Generator(self.graphdef, data, cfg.decode, cfg.data.task,
                                   cfg.data.max_source_len, cfg.data.max_target_len)
        self.val_loss = ValidationLoss(self.graphdef, data.splits["validation"], cfg.data, self.batch_sharding)
        evaluators = [self.val_loss, GenerationScores(self.generator, primary_metric(cfg.data.task),
                                                      cfg.train.val_bleu_examples)]
        # The best cross-attention head's word-alignment F1 against gold links, on the first
        # val_bleu_examples validation pairs that have them; None without gold links.
        alignment = AlignmentEvaluator.build(
            self.graphdef, data.splits["validation"], data.tokenizer, limit=cfg.train.val_bleu_examples,
            buckets=length_buckets(max(cfg.data.max_source_len, cfg.data.max_target_len)),
            swap_gold=gold_reversed(cfg.data.source_lang, cfg.data.target_lang))
        if alignment is not None:
            evaluators.append(alignment)
        self.evaluators = evaluators
        # Attention maps and per-head statistics at each validation.
        self.probe = AttentionProbe(self.graphdef, data, cfg, self.run_dir, write=self.writer)

    def _add_hooks(self) -> None:
        """The built-in hooks, in the order they run after a step; add your own after setup():
        `trainer.hooks.add(fn, every=N)` (fn(step) runs after the built-in ones)."""
        train = self.cfg.train
        self.progress = progress = Progress(self.start_step, train.max_steps, train.eval_every, train.progress)
        self.hooks = Hooks(last_step=train.max_steps)
        self.metrics = MetricsLog(self, progress, self.check_nonfinite)
        self.validation = Validation(self.evaluators, self.probe, self.loggers, lambda: self.state.params,
                                     self.save, progress, self.metrics.exclude, self.wall)
        self.hooks.add(self.metrics, every=train.log_every, at_last=True)
        faults.install(self)  # test-only faults, when their environment variables are set
        self.hooks.add(self.validation, every=train.eval_every, at_last=False)
        self.hooks.add(self.periodic_checkpoint, at_last=False)  # the last step is saved with its validation
        self.hooks.add(self.stop_on_signal)

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        summary = read_summary(self.run_dir)
        if self.start_step >= cfg.train.max_steps and summary is not None:  # rerun of a finished run
            self.checkpointer.close()
            self.loggers.finish(summary, "finished")
            print(f"{self.run_dir} already finished at step {self.start_step} (summary.json); raise "
                  f"train.max_steps to train on.")
            return summary
        t_start, progress = time.time(), self.progress
        progress.open()
        with self._session(progress):
            if self.start_step == 0:  # the maps at initialisation: the baseline every later probe is read against
                with self.wall.phase("probe"):
                    self.probe.run(0, self.state.params, self.loggers)
            # The prefetch thread places each batch on the devices (its rows split over them).
            self.batches = Prefetcher(self.train_batches, size=cfg.data.prefetch,
                                      transform=lambda batch: put_batch(batch, self.batch_sharding))
            self.metrics.restart()
            for step in range(self.start_step + 1, cfg.train.max_steps + 1):
                self.state = self.train_step(self.state, next(self.batches), self.base_key)
                if step == self.start_step + 1:
                    self._time_first_step()
                self.hooks.after_step(step)
            progress.close()
            # Killed after the final checkpoint (during the test split or the summary): that
            # validation was logged already; compute it again for the summary only.
            final = self.validation.run(cfg.train.max_steps, final=True,
                                        record=self.start_step < cfg.train.max_steps)
            return self.finish_summary(final, time.time() - t_start)

    def _time_first_step(self) -> None:
        """Wait for the first step once: it includes compiling, which the rates must not count."""
        t0 = self.metrics.interval_start
        jax.block_until_ready(self.state.step)
        self.compile_s = now() - t0
        self.wall.add("compile", self.compile_s)
        self.metrics.restart(step=self.start_step + 1)

    @contextlib.contextmanager
    def _session(self, progress: Progress) -> Iterator[None]:
        """Signals caught for the loop's duration; every way out leaves checkpoints on disk, the
        data thread stopped and the loggers told how the run ended."""
        status = "finished"
        self.signals.__enter__()  # SIGTERM/SIGINT: finish the step, save, wait, exit
        try:
            yield
        except StopRequested:
            status = "interrupted"
            self.checkpointer.wait()  # the asynchronous write is on disk before the message says so
            step, name = int(self.state.step), self.signals.received
            if self.writer:
                print(f"\n{name}: saved a checkpoint at step {step} in {self.checkpointer.directory}. Resume "
                      f"with:\n  {resume_command(self.run_dir)}", file=sys.stderr, flush=True)
            self.signals.hand_on()  # SLURM's USR2 under submitit: its handler requeues the job
            raise SystemExit(EXIT_CODES.get(name, 1))
        except NonFiniteStop as e:
            status = "failed"
            self.checkpointer.wait()
            raise SystemExit(f"error: {e}") from None
        except CheckpointError as e:
            status = "failed"
            raise SystemExit(f"error: {e}") from None
        except BaseException as e:
            status = "failed"
            if jax.process_count() > 1 and not isinstance(e, (KeyboardInterrupt, SystemExit)):
                print(f"error: process {jax.process_index()} of {jax.process_count()} stopped: {first_line(e)}. When "
                      f"a collective failed, another process of the run has died first: its log says why.",
                      file=sys.stderr, flush=True)
            raise
        finally:
            self.signals.__exit__(None, None, None)
            if self.batches is not None:
                self.batches.close()
            progress.close()
            self.checkpointer.close()
            if status != "finished":
                self.loggers.finish({"steps": int(self.state.step)}, status)

    # ---- hooks ----------------------------------------------------------------------------
    def save(self, metric: Optional[float] = None) -> None:
        """Start an asynchronous save of the whole state (never of a state past a policy stop)."""
        self.check_nonfinite()  # train.nonfinite=stop keeps the last good checkpoint the latest
        step = int(self.state.step)
        meta = {
            "step": step,
            # what the loop consumed, not what the prefetch thread has run ahead to
            "data_state": (self.batches or self.train_batches).state(),
            "model_hash": config_hash(self.model_defining),
            "model_defining": self.model_defining,
            "wandb_run_id": self.loggers.wandb_run_id,
            "model_config": asdict(self.cfg.model),
            "vocab_size": self.data.vocab_size,
        }
        with self.wall.phase("checkpoint"):
            self.checkpointer.save(step, {"state": self.state, "key": self.base_key}, meta, metric)
        self.last_save_time, self.last_saved_step = now(), step
        self.hooks.after_save(step)

    def periodic_checkpoint(self, step: int) -> None:
        """Every train.checkpoint_every steps and every train.checkpoint_minutes, unless saved already."""
        every, minutes = self.cfg.train.checkpoint_every, self.cfg.train.checkpoint_minutes
        due = (every > 0 and step % every == 0) or (minutes > 0 and now() - self.last_save_time > 60 * minutes)
        if due and self.last_saved_step != step:
            self.save()

    def stop_on_signal(self, step: int) -> None:
        """A stop signal (SIGTERM, SIGINT, SLURM's SIGUSR2) ends the run after a save. With several
        processes they agree at log points, so that all of them save the same step together."""
        received = bool(self.signals.received)
        if jax.process_count() > 1:
            if step % self.cfg.train.log_every and step != self.cfg.train.max_steps:
                return
            received = any_process(received)
            if received and not self.signals.received:
                self.signals.received = "SIGTERM"  # another process got the signal
        if received:
            if self.last_saved_step != step:
                self.save()
            raise StopRequested()

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

    # ---- the end ----------------------------------------------------------------------------
    def finish_summary(self, val: dict, wall_s: float) -> dict:
        summary: dict[str, Any] = dict(val)
        with self.wall.phase("test"):
            if self.data.splits.get("test") is not None:
                summary.update(test_scores(self.graphdef, self.data.splits["test"], self.cfg.data, self.batch_sharding,
                                           self.val_loss.step, self.generator, self.state.params,
                                           self.run_dir if self.writer else None))
        summary.update({
            "train/tokens_per_s": self.metrics.median_tokens_per_s(),
            "params": self.num_params,
            "flops_per_token": self.flops["per_token"],
            "steps": int(self.state.step),
            "wall_s": round(wall_s, 1),
            "compile_s": round(getattr(self, "compile_s", 0.0), 1),
            "compiles": {"train_step": self.train_step._cache_size(), "eval_step": self.val_loss.compiles(),
                         "decode": self.generator.compiles()},
            "status": "finished",
        })
        if self.writer:
            if self.cfg.train.explorer and self.probe.enabled:
                with self.wall.phase("explorer"):
                    write_explorer_page(self.run_dir, self.loggers)  # before the summary, which marks the run finished
            summary["wall_breakdown_s"] = self.wall.breakdown(loop_s=wall_s)
            write_atomically(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.loggers.finish(summary, "finished")
        return summary


def run(cfg: Config, run_dir: Path, group: Optional[str] = None) -> dict:
    trainer = Trainer(cfg, run_dir, group)
    trainer.setup()
    if trainer.writer:
        print(f"model: {trainer.num_params / 1e6:.2f}M parameters, {trainer.flops['per_token'] / 1e6:.1f} MFLOPs "
              f"per token; {trainer.train_batches.rows} rows x ({cfg.data.max_source_len}+"
              f"{cfg.data.max_target_len}) tokens per batch; devices: {describe(trainer.mesh)}")
    return trainer.fit()
