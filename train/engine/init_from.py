"""`train.init_from=RUN_DIR`: start a new run from another run's weights.

What Voita et al. (2019) do to find prunable heads: train a model, then fine-tune it with Hard
Concrete gates and the L0 penalty. `python -m train model.head_gates=concrete train.gate_l0=0.05
train.init_from=runs/RUN ...` (with RUN's model settings) builds the gated model, then replaces
every parameter RUN has by RUN's value (its best checkpoint, the one `evaluate` loads); the
gates, which RUN lacks, keep their initial log_alpha (model.gate_init: open). The optimizer,
step counter and data order start fresh. Any other difference (a shape, a parameter only one side
has, another vocabulary) stops the run before anything is compiled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from train.config import Config

# Parameters a run may add on top of the one it starts from: they keep their initial values.
FRESH_PARAMS = ("gate_log_alpha",)


def _has_checkpoints(folder: Path) -> bool:
    """Whether Orbax has a finished step there (its folders are named by the step number)."""
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def _named(tree: Any) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def merge_params(fresh: Any, loaded: Any, source: str) -> Any:
    """`fresh` (this run's initial parameters) with every leaf `loaded` has replaced by its value.
    SystemExit naming the first mismatch when the two models differ in more than fresh gates."""
    have = _named(loaded)
    want = _named(fresh)
    hint = (f"train.init_from needs the model of {source} (its .hydra/overrides.yaml: the model.* "
            f"settings, including model.head_counts), with only model.head_gates=concrete added")
    extra = sorted(set(have) - set(want))
    if extra:
        raise SystemExit(f"error: {source} has parameters this model lacks ({extra[0]}"
                         f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}): {hint}.")
    for name, leaf in want.items():
        if name not in have and not any(p in name for p in FRESH_PARAMS):
            raise SystemExit(f"error: {source} lacks the parameter {name}: {hint}.")
        if name in have and tuple(have[name].shape) != tuple(leaf.shape):
            raise SystemExit(f"error: parameter {name} is {tuple(have[name].shape)} in {source} and "
                             f"{tuple(leaf.shape)} here: {hint}.")

    def pick(path, leaf):
        name = jax.tree_util.keystr(path)
        return jnp.asarray(have[name], leaf.dtype) if name in have else leaf

    return jax.tree_util.tree_map_with_path(pick, fresh)


def initial_params(cfg: Config, params: Any, tokenizer: Any, run_dir: Path) -> Any:
    """The parameters a new run starts from: `params` (its own initialisation), or with
    train.init_from set, that run's weights merged in (see the module docstring). A run that
    already has checkpoints resumes from them: then init_from is not read at all."""
    if not cfg.train.init_from or _has_checkpoints(Path(run_dir) / "checkpoints"):
        return params
    from train.errors import RunError
    from train.runs import load_run

    try:
        run = load_run(cfg.train.init_from)
    except RunError as e:
        raise SystemExit(f"error: train.init_from={cfg.train.init_from}: {e}") from None
    if run.tokenizer.tokenizer.to_str() != tokenizer.tokenizer.to_str():
        raise SystemExit(f"error: train.init_from={cfg.train.init_from} was trained with another tokenizer "
                         f"than this run's data gives (its tokenizer.json differs): use the same data.* settings.")
    print(f"train.init_from: starting from {run.run_dir.name} step {run.step}", flush=True)
    return merge_params(params, run.params, str(run.run_dir))
