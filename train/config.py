"""Typed configuration: Hydra schemas, their registration, and the checks run before any work.

model/ and data/ define frozen dataclasses (ModelConfig, DataConfig). Hydra needs mutable
dataclasses to apply command-line overrides, so each frozen class gets a mutable twin with
the same fields registered in the ConfigStore; after composition the twin is turned back
into the frozen class. One source of truth, typed at composition (unknown keys and wrong
types fail there) and immutable at run time.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from data.config import DataConfig
from model.config import ConfigError, ModelConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then a decay schedule, and global-norm clipping."""

    name: str = "adamw"
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 200
    schedule: str = "inverse_sqrt"  # inverse_sqrt (Vaswani et al.) | cosine | linear | constant
    min_lr_ratio: float = 0.0  # cosine/linear decay floor as a fraction of lr
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.01
    clip_norm: float = 1.0  # global gradient norm; 0 disables clipping
    grad_accum: int = 1  # micro-batches per update (optax.MultiSteps); train.max_steps counts micro-batches,
    # warmup_steps and the decay count updates (max_steps / grad_accum of them)
    gate_lr_scale: float = 1.0  # Hard Concrete gates' (model.head_gates) learning rate, as a multiple of the
    # schedule's: Adam moves a log_alpha by about lr per step, and an open gate (log_alpha 3) needs to move by
    # about 5 to close, so a fine-tune of a few thousand steps at lr 1e-3 needs a scale of 10 or more

    def validate(self) -> "OptimConfig":
        if self.lr <= 0:
            raise ConfigError(f"optim.lr={self.lr} must be positive.")
        if self.schedule not in ("inverse_sqrt", "cosine", "linear", "constant"):
            raise ConfigError(f"optim.schedule={self.schedule!r} must be inverse_sqrt, cosine, linear or constant.")
        if self.warmup_steps < 0 or self.grad_accum < 1:
            raise ConfigError("optim.warmup_steps must be >= 0 and optim.grad_accum >= 1.")
        if self.gate_lr_scale <= 0:
            raise ConfigError(f"optim.gate_lr_scale={self.gate_lr_scale} must be positive (1 = the schedule's rate).")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """How long to train and how often to log, validate and save."""

    max_steps: int = 2000
    log_every: int = 50  # host sync of the on-device metric sums happens only here
    eval_every: int = 500  # validation loss, BLEU on a fixed subset, attention probe
    checkpoint_every: int = 500  # steps; 0 = only at the end (and on SIGTERM)
    checkpoint_minutes: float = 0.0  # also save after this many minutes of wall time; 0 = off
    keep_checkpoints: int = 2  # latest K kept, plus the best by the validation metric
    resume: bool = True  # resume from the run directory's latest checkpoint when one exists
    label_smoothing: float = 0.1
    val_bleu_examples: int = 256  # fixed validation subset decoded at each eval
    probe_examples: int = 4  # fixed validation pairs whose attention maps are saved
    explorer: bool = True  # write explorer.html (python -m train.explore) at the end of the run
    nonfinite: str = "skip"  # skip the update | stop the run, on a non-finite loss or gradient
    max_nonfinite_in_row: int = 10
    progress: bool = True  # tqdm progress bar
    compilation_cache: Optional[str] = ".cache/jax"  # persistent XLA cache shared by runs; null = off
    # Devices and processes (train/engine/sharding.py). One code path for 1 CPU, N GPUs, N hosts.
    mesh_data: int = -1  # devices the run uses (of every process); -1 = all
    fsdp: bool = False  # shard parameters and optimizer state over the devices (an "fsdp" mesh axis)
    distributed: str = "auto"  # auto: join a multi-process job under SLURM (> 1 task) or with a coordinator
    coordinator_address: Optional[str] = None  # "host:port" of process 0, for clusters without SLURM
    num_processes: Optional[int] = None  # with coordinator_address: how many processes in all
    process_id: Optional[int] = None  # with coordinator_address: this process's rank (0 = the one that writes)
    heartbeat_timeout_s: int = 100  # a process that stops answering for this long fails the whole job
    # Head gates (model.head_gates=concrete): weight of the expected-L0 penalty, sum over heads of
    # P(gate open), added to the per-token loss (Voita et al. 2019); 0 = gates trained by the loss alone.
    gate_l0: float = 0.0
    # Start from the weights of another run directory (its best checkpoint, as `evaluate` picks it):
    # parameters that run lacks (fresh head gates) keep their initial values; fresh optimizer, step 0.
    # Ignored once this run has checkpoints of its own (it resumes from them). train/engine/init_from.py.
    init_from: Optional[str] = None

    def validate(self) -> "TrainConfig":
        for name in ("max_steps", "log_every", "eval_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be positive.")
        if self.nonfinite not in ("skip", "stop"):
            raise ConfigError(f"train.nonfinite={self.nonfinite!r} must be skip or stop.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1).")
        if self.gate_l0 < 0:
            raise ConfigError(f"train.gate_l0={self.gate_l0} must be >= 0 (0 = no L0 penalty on the head gates).")
        if self.distributed not in ("auto", "on", "off"):
            raise ConfigError(f"train.distributed={self.distributed!r} must be auto, on or off.")
        if self.coordinator_address and (self.num_processes is None or self.process_id is None):
            raise ConfigError("train.coordinator_address needs train.num_processes and train.process_id too "
                              "(the same address and count on every process, ids 0 .. num_processes-1).")
        if self.process_id is not None and self.num_processes is not None and \
                not 0 <= self.process_id < self.num_processes:
            raise ConfigError(f"train.process_id={self.process_id} must be in 0 .. train.num_processes-1 "
                              f"({self.num_processes - 1}).")
        return self


@dataclass(frozen=True)
class DecodeConfig:
    """Generation settings shared by validation BLEU, evaluate and translate."""

    beam_size: int = 1  # 1 = greedy
    alpha: float = 0.6  # GNMT length penalty ((5 + len) / 6) ** alpha
    max_len_a: float = 1.5  # output length limit a * source_len + b
    max_len_b: int = 10
    batch_size: int = 64

    def validate(self) -> "DecodeConfig":
        if self.beam_size < 1 or self.batch_size < 1:
            raise ConfigError("decode.beam_size and decode.batch_size must be >= 1.")
        return self


@dataclass(frozen=True)
class LoggerConfig:
    """Where metrics go. metrics.jsonl is always written; the others are optional."""

    jsonl: bool = True
    tensorboard: bool = True
    wandb: str = "disabled"  # disabled | auto (offline without key or network) | online | offline
    wandb_project: str = "attention-lab"
    wandb_entity: Optional[str] = None
    wandb_group: Optional[str] = None  # defaults to the sweep's name in multirun
    wandb_tags: list = field(default_factory=list)

    def validate(self) -> "LoggerConfig":
        if self.wandb not in ("disabled", "auto", "online", "offline"):
            raise ConfigError(f"logger.wandb={self.wandb!r} must be disabled, auto, online or offline.")
        return self


def _mutable_twin(frozen_cls: type) -> type:
    """A non-frozen dataclass with the same fields, for Hydra's ConfigStore."""
    hints = typing.get_type_hints(frozen_cls)  # real types, not the strings of `annotations`
    fields = []
    for f in dataclasses.fields(frozen_cls):
        default = (
            {"default_factory": f.default_factory}
            if f.default_factory is not dataclasses.MISSING
            else {"default": f.default}
        )
        fields.append((f.name, hints[f.name], field(**default)))
    return dataclasses.make_dataclass(frozen_cls.__name__ + "Schema", fields)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "decode": DecodeConfig,
    "logger": LoggerConfig,
}
SCHEMAS = {name: _mutable_twin(cls) for name, cls in SECTIONS.items()}


@dataclass
class RootSchema:
    seed: int = 0
    name: str = "run"  # shown in dashboards; sweeps use it as their group
    model: Any = field(default_factory=SCHEMAS["model"])
    data: Any = field(default_factory=SCHEMAS["data"])
    optim: Any = field(default_factory=SCHEMAS["optim"])
    train: Any = field(default_factory=SCHEMAS["train"])
    decode: Any = field(default_factory=SCHEMAS["decode"])
    logger: Any = field(default_factory=SCHEMAS["logger"])


@dataclass(frozen=True)
class Config:
    """The whole, validated run configuration."""

    seed: int
    name: str
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig
    decode: DecodeConfig
    logger: LoggerConfig

    def validate(self) -> "Config":
        for name in SECTIONS:
            getattr(self, name).validate()
        if self.model.max_len < max(self.data.max_source_len, self.data.max_target_len):
            raise ConfigError(
                f"model.max_len={self.model.max_len} is shorter than the data's max lengths "
                f"({self.data.max_source_len}/{self.data.max_target_len}); raise model.max_len."
            )
        if self.train.gate_l0 > 0 and self.model.head_gates == "none":
            raise ConfigError(f"train.gate_l0={self.train.gate_l0} penalises head gates, but the model has none: "
                              f"add model.head_gates=concrete (or drop train.gate_l0).")
        if self.train.max_steps % self.optim.grad_accum:
            raise ConfigError(
                f"train.max_steps={self.train.max_steps} is not a multiple of optim.grad_accum="
                f"{self.optim.grad_accum}: the last update would get only part of its micro-batches.")
        return self


def register_configs() -> None:
    """Register the schemas so that the YAML files in configs/ are typed."""
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootSchema)
    for name, schema in SCHEMAS.items():
        cs.store(group=name, name=f"{name}_schema", node=schema)


def to_config(cfg: DictConfig) -> Config:
    """Convert Hydra's composed config into frozen dataclasses and run the cross-field checks."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    sections = {name: cls(**container[name]) for name, cls in SECTIONS.items()}
    return Config(seed=container["seed"], name=container["name"], **sections).validate()


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the config outside of a Hydra app (tests, helper commands)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


def resolve_path(path: str | os.PathLike) -> Path:
    """Relative paths in configs are relative to the repository root, not Hydra's run dir."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p
