"""Load a trained run for inference: its config, tokenizer and parameters from a checkpoint.

Shared by `python -m train.evaluate`, `translate`, `heads` and `attention_figures`. Everything comes from
the run directory, never from the current defaults: the model is rebuilt from the run's
`.hydra/config.yaml`, the vocabulary from its `tokenizer.json`, and only the parameters are
read from the checkpoint (orbax partial restore: no optimizer state, no training data).

Each way a run directory can be unusable raises `RunError` with a message that says what is
wrong and what to do; the commands print it without a traceback (train/cli.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from model.config import ConfigError
from train.config import SCHEMAS, Config, RootSchema, register_configs, to_config
from train.errors import RunError, first_line

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
        raise RunError(f"the config in {path} does not match this code ({first_line(e)}). The run was made by "
                       f"another version of the code: check that version out to use it, or train "
                       f"again.") from None


# Keys older versions of the code wrote into run configs and this one no longer has (they never
# changed what a run did): dropped on load so that those runs stay usable.
RETIRED_KEYS = {"data": ("bucket_lengths", "eval_batch_size")}


def _typed_sections(saved: DictConfig) -> DictConfig:
    """Wrap each section in its schema so that the merge type-checks every field."""
    out = OmegaConf.create({})
    for key in saved:
        if key in SCHEMAS:
            section = OmegaConf.masked_copy(saved[key], [k for k in saved[key]
                                                           if k not in RETIRED_KEYS.get(key, ())])
            out[key] = OmegaConf.merge(OmegaConf.structured(SCHEMAS[key]), section)
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


def load_run(run_dir: Path | str, step: Optional[int] = None) -> LoadedRun:
    """Config, tokenizer and parameters of the best (or the given) checkpoint of a run."""
    run_dir = check_run_dir(Path(run_dir))
    cfg = load_config(run_dir)
    tokenizer = load_tokenizer(run_dir)
    ckpt_dir = require_checkpoint_dir(run_dir)

    from flax import nnx  # imported only now: the checks above answer in a second

    from model.flops import count_params
    from model.transformer import Transformer
    from train.engine.checkpoint import (
        Checkpointer,
        config_diff,
        fits_model,
        model_defining,
    )

    checkpointer = Checkpointer(ckpt_dir)
    try:
        chosen = choose_step(checkpointer, run_dir, step)
        try:
            meta = checkpointer.read_meta(chosen)
        except Exception as e:
            raise RunError(f"cannot read the checkpoint at step {chosen} in {ckpt_dir} ({first_line(e)}). "
                           f"It may be incomplete or damaged: pass another step=N "
                           f"({', '.join(map(str, checkpointer.all_steps()))}).") from None
        vocab_size = tokenizer.vocab_size
        defining = model_defining(cfg.model, vocab_size)
        if meta.get("model_hash") is not None and not fits_model(meta, defining):  # None: older runs
            diffs = config_diff(meta.get("model_defining") or {}, defining, prefix="model.", now="config")
            raise RunError(
                f"the checkpoint at step {chosen} in {run_dir} was trained with another model config than "
                f"{run_dir / '.hydra' / 'config.yaml'} and tokenizer.json describe "
                f"({'; '.join(diffs) or 'the model-defining fields hash differently in this code'}). Restore "
                f"the run's original config.yaml / tokenizer.json, or use the code version that trained it.")

        # Build the model abstractly (shapes only, nothing allocated) just to get its structure.
        model = nnx.eval_shape(lambda: Transformer(cfg.model, vocab_size, rngs=nnx.Rngs(params=0)))
        graphdef, abstract = nnx.split(model)
        try:
            params = checkpointer.restore_params(chosen, abstract)
        except Exception as e:
            raise RunError(
                f"the checkpoint at step {chosen} in {ckpt_dir} does not fit the model this code builds "
                f"from the run's config ({first_line(e)}). It was trained with another version of the "
                f"model code: check that version out to use it, or train again.") from None
    finally:
        checkpointer.close()
    print(f"loaded {run_dir.name}: step {chosen}, {count_params(params) / 1e6:.2f}M parameters, vocab {vocab_size}", file=sys.stderr)
    return LoadedRun(run_dir, cfg, tokenizer, graphdef, params, chosen, meta)


def load_split(cfg, tokenizer, split: str):
    """The split's pairs with `src_ids` from the run's tokenizer, as training scored them.

    Reuses the data pipeline's tokenized cache when it holds this corpus tokenized by this very
    tokenizer (no raw data read); otherwise loads the raw corpus and tokenizes just this split
    (the same `tokenize_split`: empty pairs dropped, overlong sources truncated).
    """
    import datasets

    from data.pipeline import STATS_FILE, cache_folders, tokenize_split
    from data.sources import load_splits
    from data.tokenizer import TOKENIZER_FILE
    from train.config import REPO_ROOT

    folder, tokenized = cache_folders(cfg.data, REPO_ROOT)
    cached_tok = folder / TOKENIZER_FILE
    if (tokenized / STATS_FILE).exists() and cached_tok.exists() and \
            cached_tok.read_text() == tokenizer.tokenizer.to_str():
        splits = datasets.load_from_disk(str(tokenized))  # memory-mapped
        _check_split(splits, split)
        return splits[split]
    raw = load_splits(cfg.data, REPO_ROOT)
    _check_split(raw, split)
    ds, _ = tokenize_split(raw[split], tokenizer, cfg.data, split, drop_overlong=False)
    return ds


def _check_split(splits, split: str) -> None:
    if split not in splits:
        raise RunError(f"the run's corpus has no {split!r} split; it has {', '.join(splits)}. "
                       f"Pass split= one of them.")
