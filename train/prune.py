"""`python -m train.prune run_dir=DIR [by=gates|importance|random] (keep=N | threshold=X) [seed=S] [out=DIR2]`

Removes attention heads for real: writes a new run directory (default DIR_pruned_<by>_<keep>, or
DIR_pruned_<by>_ge<X> with a threshold) whose model has only the kept heads, their q/k/v and
output projection slices (model/pruning.py), and per-layer model.head_counts in its config. It
loads, scores, decodes and trains like any run: `python -m train.evaluate run_dir=DIR2`,
`translate`, `heads`, `explore`, and the resume command printed at the end (also in
DIR2/pruned.json), which continues training from the same step with the pruned optimizer state.

    by=gates       P(gate open) of each head's Hard Concrete gate; needs a run trained with
                   model.head_gates=concrete (and usually train.gate_l0 > 0). Kept heads keep
                   their gates, so the pruned model computes what the gated one does.
    by=importance  normalised gate-gradient importance: DIR/heads/heads.json when
                   `python -m train.heads` scored this checkpoint, else computed here on `split`
                   (`limit` pairs)
    by=random      seeded uniform scores (seed=S): the baseline

keep=N keeps the N best heads over all layers and types together (a layer may lose all its heads:
its attention is then its output bias alone); threshold=X keeps heads scoring >= X. Heads the
run's model.head_mask switches off are never kept. The ranking is train/analysis/head_selection.py.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from train.cli import compose_args, run_command
from train.errors import RunError

USAGE = ("usage: python -m train.prune run_dir=DIR [by=gates|importance|random] (keep=N | threshold=X) "
         "[seed=0] [out=DIR2] [step=N] [split=validation] [limit=256] [batch_rows=32]")
BY = ("gates", "importance", "random")


@dataclass
class PruneArgs:
    run_dir: str = MISSING  # a run directory written by `python -m train`
    by: str = "importance"  # gates | importance | random
    keep: Optional[int] = None  # heads to keep in all (the best ones)
    threshold: Optional[float] = None  # or: keep heads scoring >= this
    seed: int = 0  # by=random
    out: Optional[str] = None  # the new run directory; default DIR_pruned_<by>_<keep>
    step: Optional[int] = None  # checkpoint to prune; None = the best by the validation metric
    split: str = "validation"  # by=importance without heads.json: the split importance is measured on
    limit: Optional[int] = 256  # ... and how many of its pairs (None = all)
    batch_rows: int = 32


def register_args() -> None:
    """No configs/prune.yaml is needed: the schema itself is the primary config."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prune", node=PruneArgs)


def check_args(args: Any) -> None:
    """Argument errors, before anything is loaded."""
    if args.by not in BY:
        raise RunError(f"by={args.by} is not one of {', '.join(BY)}.")
    if (args.keep is None) == (args.threshold is None):
        raise RunError("give exactly one of keep=N (heads to keep in all) and threshold=X (keep heads scoring >= X).")
    if args.keep is not None and args.keep < 0:
        raise RunError(f"keep={args.keep} must be >= 0.")


def default_out(run_dir: Path, args: Any) -> Path:
    tail = f"{args.keep}" if args.keep is not None else f"ge{args.threshold:g}"
    return run_dir.parent / f"{run_dir.name}_pruned_{args.by}_{tail}"


def importance(run: Any, args: Any, present: dict) -> tuple[dict, str]:
    """Normalised importance grids, from heads.json when it scored this checkpoint, else computed."""
    import jax

    from data.buckets import example_batches
    from train.analysis.head_importance import base_gates, head_importance, make_gate_grad_fn
    from train.analysis.head_selection import importance_scores
    from train.evals.alignment import length_buckets
    from train.runs import load_split

    path = run.run_dir / "heads" / "heads.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is not None and saved.get("step") == run.step:
        try:
            return importance_scores(saved, present), f"{path} (step {run.step}, {saved.get('split')} split)"
        except (KeyError, TypeError, ValueError) as e:
            print(f"warning: {path} does not fit this model ({e}); computing importance instead", file=sys.stderr)
    cfg = run.config
    dataset = load_split(cfg, run.tokenizer, args.split)
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    if len(dataset) == 0:
        raise RunError(f"the {args.split} split has no examples.")
    buckets = length_buckets(max(cfg.data.max_source_len, cfg.data.max_target_len))
    batches = [b.batch for b in example_batches(dataset, args.batch_rows, buckets)]
    imp = head_importance(jax.jit(make_gate_grad_fn(run.graphdef)), run.params, base_gates(cfg.model), batches, present)
    return imp["normalized"], f"gate gradients over {len(dataset)} {args.split} pairs"


def prune(args: Any) -> dict:
    """Score, select, write the pruned run; return what pruned.json holds."""
    import jax
    from flax import nnx

    from model.gate_params import gate_table, log_alphas
    from train.analysis.head_importance import present_heads
    from train.analysis.head_selection import describe, gate_scores, random_scores, select_heads
    from train.engine.runtime import quiet_library_logs
    from train.pruned_run import write_pruned_run
    from train.runs import check_run_dir, load_run

    quiet_library_logs(logging.ERROR)
    check_args(args)
    run_dir = check_run_dir(Path(args.run_dir))
    out = Path(args.out).expanduser().absolute() if args.out else default_out(run_dir, args)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not empty: pass out=ANOTHER_DIR or remove it.")
    run = load_run(run_dir, step=args.step)
    model_cfg = run.config.model
    present = present_heads(model_cfg)
    if args.by == "gates":
        if model_cfg.head_gates == "none":
            raise RunError(f"by=gates needs a run trained with model.head_gates=concrete; {run_dir.name} has no gates. "
                           f"Fine-tune it with gates: python -m train <its overrides> model.head_gates=concrete "
                           f"train.gate_l0=0.05 train.init_from={run_dir} hydra.run.dir=NEW; or use by=importance.")
        scores = gate_scores(gate_table(jax.device_get(log_alphas(nnx.merge(run.graphdef, run.params)))), present)
        source = "P(gate open) of the Hard Concrete gates"
    elif args.by == "importance":
        scores, source = importance(run, args, present)
    else:
        scores, source = random_scores(present, args.seed), f"uniform draws, seed {args.seed}"
    eligible = {k: present[k].copy() for k in present}
    for kind, rows in (model_cfg.head_mask or {}).items():  # heads the run itself switched off
        for layer, row in enumerate(rows):
            eligible[kind][layer, : len(row)] &= [g != 0 for g in row]
    try:
        keep = select_heads(scores, keep=args.keep, threshold=args.threshold, eligible=eligible)
    except ValueError as e:
        raise RunError(str(e)) from None
    provenance = {"by": args.by, "keep": args.keep, "threshold": args.threshold, "seed": args.seed,
                  "scores_from": source, **describe(keep, present),
                  "scores": {k: [[None if v != v else round(float(v), 6) for v in row] for row in values]
                             for k, values in scores.items()}}  # NaN (v != v): no such head
    return write_pruned_run(run, keep, out, provenance)


def main(argv: Optional[list[str]] = None) -> None:
    register_args()
    args = compose_args("prune", PruneArgs, sys.argv[1:] if argv is None else argv, USAGE)
    info = run_command(prune, args)
    print(f"kept {info['kept']} of {info['of']} heads (by {info['by']}: {info['scores_from']}); "
          f"parameters {info['params']['before']:,} -> {info['params']['after']:,}")
    for kind, per_layer in info["per_layer"].items():
        print(f"  {kind}: " + ", ".join(f"layer {l} {c}" for l, c in enumerate(per_layer)))
    print(f"wrote {info['out']} (step {info['step']}); evaluate: python -m train.evaluate run_dir={info['out']}")
    print(f"train on: {info['resume_command']}")
    if info["resume_note"]:
        print(f"warning: {info['resume_note']}", file=sys.stderr)


if __name__ == "__main__":
    main()
