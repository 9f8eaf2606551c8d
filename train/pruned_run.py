"""Write a new run directory that holds a physically pruned copy of a run (`python -m train.prune`).

The new directory is a run like any other (train/runs.py reads it): its .hydra/config.yaml is the
source run's with model.head_counts (and model.head_mask cut to the kept heads), its
tokenizer.json is the source's, and checkpoints/ holds one Orbax checkpoint at the source
checkpoint's step with the whole training state pruned (model/pruning.py): parameters, the Adam
moments of those parameters, the step counter, the RNG key and the data position. Resuming it
(`python -m train <the source's overrides> model.head_counts=... hydra.run.dir=NEW`, which
.hydra/overrides.yaml and pruned.json spell out) therefore continues training the smaller model
exactly where the full one stopped, with the same schedule and data order; raise train.max_steps
to train on. The checkpoint records no validation metric (the pruned model has not been scored).
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from train.errors import RunError

OVERRIDDEN = ("model.head_counts=", "model.head_mask=", "hydra.run.dir=", "train.resume=", "train.init_from=")


def flow(value: Any) -> str:
    """A Hydra override value in flow style without spaces: {cross:[1,3],encoder_self:[2,2]}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(flow(v) for v in value) + "]"
    return "null" if value is None else str(value)


def pruned_overrides(run_dir: Path, model_cfg: Any) -> tuple[list[str], bool]:
    """The source run's overrides with the pruned model's head_counts (and head_mask) instead of
    its own; False when the source has no .hydra/overrides.yaml (the command is then incomplete)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    found = path.is_file()
    source = [str(o) for o in (OmegaConf.load(path) if found else [])]
    kept = [o for o in source if not o.lstrip("+~").startswith(OVERRIDDEN)]
    kept.append(f"model.head_counts={flow(dict(model_cfg.head_counts))}")
    if model_cfg.head_mask is not None or any(o.lstrip("+~").startswith("model.head_mask=") for o in source):
        kept.append(f"model.head_mask={flow(model_cfg.head_mask)}")
    return kept, found


def write_pruned_run(run: Any, keep: dict, out_dir: Path, provenance: dict) -> dict:
    """Write the pruned copy of `run` (a train.runs.LoadedRun) to out_dir; return pruned.json's content."""
    import jax
    from flax import nnx

    from model.pruning import prune_tree, pruned_config
    from model.transformer import Transformer
    from train.engine.checkpoint import Checkpointer, config_hash, model_defining
    from train.engine.optimizer import make_optimizer
    from train.engine.step import create_state, zero_metrics

    cfg = run.config
    small = pruned_config(cfg.model, keep)
    vocab = run.tokenizer.vocab_size
    tx, _ = make_optimizer(cfg.optim, cfg.train.max_steps)

    # The source's whole training state, restored into the structure the trainer saves.
    full_target = {"state": create_state(run.params, tx), "key": jax.random.PRNGKey(0)}
    source = Checkpointer(run.run_dir / "checkpoints")
    try:
        restored, meta = source.restore(run.step, full_target)
    except Exception as e:
        raise RunError(f"cannot read the training state of step {run.step} in {run.run_dir} ({e}).") from None
    finally:
        source.close()

    abstract_params = nnx.state(nnx.eval_shape(lambda: Transformer(small, vocab, rngs=nnx.Rngs(params=0))))
    target = {"state": jax.eval_shape(lambda p: create_state(p, tx), abstract_params),
              "key": jax.ShapeDtypeStruct(restored["key"].shape, restored["key"].dtype)}
    tree = prune_tree(target, restored, keep, cfg.model.resolved_head_dim)
    tree["state"] = tree["state"].replace(metrics=zero_metrics())  # sums since a log of the full model

    out_dir.mkdir(parents=True, exist_ok=True)  # absent or empty (train.prune checked)
    (out_dir / ".hydra").mkdir()
    saved = OmegaConf.load(run.run_dir / ".hydra" / "config.yaml")
    saved.model.head_counts = {k: list(v) for k, v in dict(small.head_counts).items()}
    saved.model.head_mask = small.head_mask
    OmegaConf.save(saved, out_dir / ".hydra" / "config.yaml")
    overrides, complete = pruned_overrides(run.run_dir, small)
    OmegaConf.save(OmegaConf.create(overrides), out_dir / ".hydra" / "overrides.yaml")
    shutil.copy2(run.run_dir / "tokenizer.json", out_dir / "tokenizer.json")

    defining = model_defining(small, vocab)
    new_meta = {"step": run.step, "data_state": meta.get("data_state"), "model_hash": config_hash(defining),
                "model_defining": defining, "wandb_run_id": None, "model_config": asdict(small),
                "vocab_size": vocab, "pruned_from": {"run_dir": str(run.run_dir), "step": run.step}}
    target_ckpt = Checkpointer(out_dir / "checkpoints", keep=cfg.train.keep_checkpoints, writer=True)
    try:
        target_ckpt.save(run.step, tree, new_meta, metric=None)
    finally:
        target_ckpt.close()  # waits for the asynchronous write

    # One more validation interval of training; any train.max_steps above the step continues it.
    resume = ["python", "-m", "train", *[o for o in overrides if not o.startswith("train.max_steps=")],
              f"hydra.run.dir={out_dir}", f"train.max_steps={run.step + cfg.train.eval_every}"]
    info = {**provenance, "source": str(run.run_dir), "step": run.step, "out": str(out_dir),
            "head_counts": {k: list(v) for k, v in dict(small.head_counts).items()}, "kept_heads": keep,
            "params": {"before": _count(run.params), "after": _count(tree["state"].params)},
            "resume_command": " ".join(shlex.quote(a) for a in resume),
            "resume_note": None if complete else (f"{run.run_dir} has no .hydra/overrides.yaml: add the settings it "
                                                  f"was trained with to the resume command")}
    (out_dir / "pruned.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _count(tree: Any) -> int:
    from model.flops import count_params

    return count_params(tree)
