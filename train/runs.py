"""Load a trained run for inference: its config, tokenizer and parameters from a checkpoint.

Shared by `python -m train.evaluate` and `python -m train.translate`. Everything comes from
the run directory, never from the current defaults: the model is rebuilt from the run's
`.hydra/config.yaml`, the vocabulary from its `tokenizer.json`, and only the parameters are
read from the checkpoint (orbax partial restore: no optimizer state, no training data).

Each way a run directory can be unusable raises `RunError` with a message that says what is
wrong and what to do; the commands print it without a traceback (`fail`).

Also here: the command-line edge of both commands. Arguments are Hydra overrides
(`run_dir=DIR decode.beam_size=4`) composed against a typed schema, so an unknown key or a
wrong type fails at once; decode options left unset fall back to the run's own decode config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional

from omegaconf import DictConfig, OmegaConf

from model.config import ConfigError
from train.config import CONFIG_DIR, SCHEMAS, Config, DecodeConfig, RootSchema, register_configs, to_config


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message names the problem and the fix."""


# --------------------------------------------------------------------------- command line


@dataclass
class DecodeOverrides:
    """`decode.*` on the command line; None = what the training run used (its decode config)."""

    beam_size: Optional[int] = None
    alpha: Optional[float] = None
    max_len_a: Optional[float] = None
    max_len_b: Optional[int] = None
    batch_size: Optional[int] = None


def compose_args(config_name: str, schema: type, argv: list[str], usage: str) -> DictConfig:
    """Compose configs/{config_name}.yaml (typed by `schema`) with Hydra overrides from argv."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    bad = [a for a in argv if a.startswith("-") or "=" not in a]
    if bad:
        fail(f"unexpected argument {bad[0]!r}: arguments are key=value overrides.\n{usage}")
    ConfigStore.instance().store(name=f"{config_name}_schema", node=schema)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=argv)
    except (HydraException, OmegaConfBaseException) as e:
        cause = f" ({_first_line(e.__cause__)})" if e.__cause__ is not None else ""
        fail(f"{_first_line(e)}{cause}\n{usage}")
    missing = sorted(k for k in cfg if OmegaConf.is_missing(cfg, k))
    if missing:
        fail(f"missing {', '.join(f'{k}=...' for k in missing)}\n{usage}")
    return cfg


def decode_config(run_decode: DecodeConfig, overrides: Any) -> DecodeConfig:
    """The run's decode config with the command line's non-null `decode.*` values on top.

    Raises ConfigError for values that cannot work (beam_size=0, ...).
    """
    given = {k: v for k, v in OmegaConf.to_container(overrides).items() if v is not None}
    return dataclasses.replace(run_decode, **given).validate()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person (no traceback) and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def quiet_logs() -> None:
    """Keep stderr readable: orbax and absl narrate every restore; datasets draws progress bars."""
    for name in ("absl", "orbax", "jax._src.xla_bridge", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="orbax")
    # Set before `datasets` is imported (it reads this then); importing it here would cost seconds.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def enable_compilation_cache(cfg: Config) -> None:
    """Reuse the XLA executables training compiled (same decoder, same shapes): faster start-up."""
    if cfg.train.compilation_cache:
        import jax

        from train.config import resolve_path

        jax.config.update("jax_compilation_cache_dir", str(resolve_path(cfg.train.compilation_cache)))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# --------------------------------------------------------------------------- the run directory


@dataclass
class LoadedRun:
    """What inference needs from a run directory."""

    run_dir: Path
    config: Config  # the run's config, as it trained
    tokenizer: Any  # data.tokenizer.SubwordTokenizer
    graphdef: Any  # nnx.GraphDef of the Transformer
    params: Any  # nnx.State with the checkpoint's parameters
    step: int  # the checkpoint's training step
    meta: dict = field(default_factory=dict)  # the checkpoint's JSON metadata (metric, model_config, ...)


def check_run_dir(run_dir: Path) -> Path:
    """The absolute run directory; RunError unless it looks like one `python -m train` wrote."""
    run_dir = Path(run_dir).expanduser().absolute()
    if not run_dir.is_dir():
        raise RunError(f"the run directory {run_dir} does not exist. Pass run_dir=DIR, the directory "
                       f"`python -m train` printed at the end (its hydra.run.dir).")
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        jobs = sorted(p.parent.parent.name for p in run_dir.glob("*/.hydra/config.yaml"))
        hint = (f" It looks like a multirun (sweep) directory: pass one of its jobs, e.g. "
                f"run_dir={run_dir / jobs[0]} (jobs: {', '.join(jobs[:8])}{', ...' if len(jobs) > 8 else ''})."
                if jobs else " Pass the directory `python -m train` printed at the end.")
        raise RunError(f"{run_dir} is not a training run directory (no .hydra/config.yaml).{hint}")
    return run_dir


def load_config(run_dir: Path) -> Config:
    """The run's resolved config, checked against this code's schema."""
    path = run_dir / ".hydra" / "config.yaml"
    try:
        saved = OmegaConf.load(path)
        register_configs()
        # Merging into the structured schema rejects keys this code does not know and wrong types;
        # keys the code added since the run get their defaults.
        merged = OmegaConf.merge(OmegaConf.structured(RootSchema), _typed_sections(saved))
        return to_config(merged)
    except ConfigError as e:
        raise RunError(f"the config of {run_dir} does not pass this code's checks: {e} "
                       f"The run was made by another version of the code: check that version out to "
                       f"use it, or train again.") from None
    except Exception as e:  # omegaconf/YAML errors: unknown or mistyped keys, a damaged file
        raise RunError(f"the config in {path} does not match this code ({_first_line(e)}). The run was made by "
                       f"another version of the code: check that version out to use it, or train "
                       f"again.") from None


def _typed_sections(saved: DictConfig) -> DictConfig:
    """Wrap each section in its schema so that the merge type-checks every field."""
    out = OmegaConf.create({})
    for key in saved:
        if key in SCHEMAS:
            out[key] = OmegaConf.merge(OmegaConf.structured(SCHEMAS[key]), saved[key])
        else:
            out[key] = saved[key]
    return out


def load_tokenizer(run_dir: Path):
    """The run's own tokenizer (tokenizer.json), so inference needs no corpus or data cache."""
    from data.tokenizer import TOKENIZER_FILE, SubwordTokenizer

    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {TOKENIZER_FILE}: training stopped before the data was "
                       f"prepared, so there is no model either. Train again with hydra.run.dir={run_dir}.")
    try:
        return SubwordTokenizer.load(path)
    except Exception as e:
        raise RunError(f"cannot read {path} ({e}); it is damaged. Train again to recreate it.") from None


def choose_step(checkpointer: Any, run_dir: Path, step: Optional[int]) -> int:
    """The requested step, else the best by the validation metric (else the latest)."""
    steps = sorted(checkpointer.all_steps())
    if not steps:
        raise _no_checkpoint(run_dir)
    if step is None:
        best = checkpointer.best_step()
        return steps[-1] if best is None else int(best)
    if step not in steps:
        raise RunError(f"{run_dir} has no checkpoint at step {step}; it has steps "
                       f"{', '.join(map(str, steps))}. Pass one of them as step=N, or leave step unset "
                       f"for the best.")
    return step


def require_checkpoint_dir(run_dir: Path) -> Path:
    """run_dir/checkpoints; RunError (cheap, no orbax import) when training never saved there."""
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        raise _no_checkpoint(run_dir)
    return ckpt_dir


def _no_checkpoint(run_dir: Path) -> RunError:
    return RunError(
        f"{run_dir} has no checkpoint yet. Training saves one at every validation "
        f"(train.eval_every), every train.checkpoint_every steps and at the end: wait for the first "
        f"save, or continue the run with `python -m train hydra.run.dir={run_dir}` plus the overrides "
        f"it was started with (see {run_dir / '.hydra' / 'overrides.yaml'})."
    )


def restore_params(checkpointer: Any, step: int, abstract_params: Any) -> Any:
    """Read only the model parameters of checkpoint `step` (orbax partial restore).

    The checkpoint holds {"state": TrainState, "key": PRNGKey} in its `state` item (see
    train/engine/checkpoint.py); asking for state.params alone skips the optimizer moments (2x the
    parameters) and needs no optimizer to build the target. strict=True: a shape that differs
    from the model this code builds is an error, not a silent pad/truncate.
    """
    import jax
    import orbax.checkpoint as ocp

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                    abstract_params)
    restore_args = jax.tree_util.tree_map(
        lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype, strict=True),
        abstract_params)
    args = ocp.args.PyTreeRestore(item={"state": {"params": target}},
                                  restore_args={"state": {"params": restore_args}}, partial_restore=True)
    out = checkpointer.manager.restore(step, args=ocp.args.Composite(state=args))
    params = out["state"]["state"]["params"]

    # A partial restore neither fails on parameters the checkpoint lacks (they come back as
    # ShapeDtypeStructs) nor on ones the model lacks (skipped): check both ways by name.
    missing = [path for path, leaf in _named_leaves(params).items() if not isinstance(leaf, jax.Array)]
    saved = _saved_param_names(checkpointer, step)
    extra = sorted(saved - set(_named_leaves(abstract_params))) if saved is not None else []
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the model has {len(missing)} parameters the checkpoint lacks, e.g. {'.'.join(missing[0])}")
        if extra:
            parts.append(f"the checkpoint has {len(extra)} parameters the model lacks, e.g. {'.'.join(extra[0])}")
        raise ValueError("; ".join(parts))
    return params


def _named_leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    """Leaves by their path as strings (orbax metadata spells list indices as strings)."""
    import jax

    def name(k: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(name(k) for k in path): leaf for path, leaf in flat}


def _saved_param_names(checkpointer: Any, step: int) -> Optional[set[tuple[str, ...]]]:
    """Names of the parameters stored in checkpoint `step`; None when orbax cannot say."""
    try:  # known to the manager once an item has been restored with PyTreeRestore (above)
        tree = checkpointer.manager.item_metadata(step)["state"]
        tree = getattr(tree, "tree", tree)
        return set(_named_leaves(tree["state"]["params"]))
    except Exception:
        return None


def load_run(run_dir: Path | str, step: Optional[int] = None) -> LoadedRun:
    """Config, tokenizer and parameters of the best (or the given) checkpoint of a run."""
    run_dir = check_run_dir(Path(run_dir))
    cfg = load_config(run_dir)
    tokenizer = load_tokenizer(run_dir)
    ckpt_dir = require_checkpoint_dir(run_dir)

    import jax  # imported only now: the checks above answer in a second
    from flax import nnx

    from model.transformer import Transformer
    from train.engine.checkpoint import Checkpointer, config_hash

    checkpointer = Checkpointer(ckpt_dir)
    try:
        chosen = choose_step(checkpointer, run_dir, step)
        try:
            meta = checkpointer.read_meta(chosen)
        except Exception as e:
            raise RunError(f"cannot read the checkpoint at step {chosen} in {ckpt_dir} ({_first_line(e)}). "
                           f"It may be incomplete or damaged: pass another step=N "
                           f"({', '.join(map(str, checkpointer.all_steps()))}).") from None
        vocab_size = tokenizer.vocab_size
        want = config_hash(cfg.model.defining_fields() | {"vocab_size": vocab_size})
        if meta.get("model_hash") not in (None, want):
            raise RunError(_mismatch_message(run_dir, chosen, cfg, meta, vocab_size))

        # Build the model abstractly (shapes only, nothing allocated) just to get its structure.
        model = nnx.eval_shape(lambda: Transformer(cfg.model, vocab_size, rngs=nnx.Rngs(params=0)))
        graphdef, abstract = nnx.split(model)
        try:
            params = restore_params(checkpointer, chosen, abstract)
        except Exception as e:
            raise RunError(
                f"the checkpoint at step {chosen} in {ckpt_dir} does not fit the model this code builds "
                f"from the run's config ({_first_line(e)}). It was trained with another version of the "
                f"model code: check that version out to use it, or train again.") from None
    finally:
        checkpointer.close()
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"loaded {run_dir.name}: step {chosen}, {n / 1e6:.2f}M parameters, vocab {vocab_size}", file=sys.stderr)
    return LoadedRun(run_dir, cfg, tokenizer, graphdef, params, chosen, meta)


def _mismatch_message(run_dir: Path, step: int, cfg: Config, meta: dict, vocab_size: int) -> str:
    saved = meta.get("model_config") or {}
    now = dataclasses.asdict(cfg.model)
    diffs = [f"model.{k}: checkpoint {saved[k]!r}, config {now[k]!r}" for k in now
             if k in saved and saved[k] != now[k]]
    if meta.get("vocab_size") not in (None, vocab_size):
        diffs.append(f"vocab size: checkpoint {meta['vocab_size']}, tokenizer.json {vocab_size}")
    detail = "; ".join(diffs) if diffs else "the model-defining fields hash differently in this code"
    return (f"the checkpoint at step {step} in {run_dir} was trained with another model config than "
            f"{run_dir / '.hydra' / 'config.yaml'} and tokenizer.json describe ({detail}). Restore the "
            f"run's original config.yaml / tokenizer.json, or use the code version that trained it.")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
