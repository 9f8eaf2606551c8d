"""`python -m train.heads run_dir=DIR [split=validation] [limit=N] [bleu_limit=N] [step=N]`

What the attention heads of a trained run do, from its best checkpoint:

  importance   |d validation loss / d head gate| per head, normalised per layer (Michel et al.
               2019), for encoder self, decoder self and cross attention (train/analysis/head_importance.py)
  pruning      heads switched off in order of increasing importance, 10% of all heads per step,
               validation loss and BLEU re-scored at each step (gates reach the decoder too)
  orders       the same model pruned by trained gates (lowest P(open) first, a gated run) and in
               random orders (3 seeds), scored at 25/50/75% removed like importance
               (train/analysis/pruning_orders.py)
  alignment    each cross-attention head's (and each layer's head-average) argmax word
               alignment under teacher forcing, against the corpus's gold links: precision,
               recall, F1, AER (train/evals/alignment.py); only for corpora with an `alignment` column
  roles        each head's roles (Voita et al. 2019): positional (with its offset), rare-token
               (against the training split's token frequencies), sink, alignment, and the shares
               behind them (train/analysis/head_roles.py)
  gates        with model.head_gates=concrete: each head's P(gate open) and evaluation gate

A pruned run (`python -m train.prune`, per-layer model.head_counts) lists each layer's own heads:
the per-layer lists in heads.json are then of different lengths.

Writes DIR/heads/heads.json (every figure), importance.png, pruning_curve.png, pruning_orders.png,
alignment.png and summary.md, and prints the Markdown summary. Arguments are Hydra overrides typed by HeadsArgs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import MISSING

from train.cli import DecodeOverrides, compose_args, decode_config, run_command
from train.errors import RunError

USAGE = ("usage: python -m train.heads run_dir=DIR [split=validation] [step=N] [limit=N] [bleu_limit=N] "
         "[prune_step=0.1] [orders=[importance,gates,random]] [random_seeds=3] [order_step=0.25] "
         "[batch_rows=32] [frequency_pairs=200000] [decode.beam_size=1]")
OUT_DIR = "heads"


@dataclass
class HeadsArgs:
    run_dir: str = MISSING  # a run directory written by `python -m train`
    split: str = "validation"  # the split every figure is measured on
    step: Optional[int] = None  # checkpoint step; None = the best by the validation metric
    limit: Optional[int] = None  # use only the first N pairs of the split (quick looks); None = all
    bleu_limit: Optional[int] = None  # pairs decoded at each pruning step; None = as many as `limit`
    prune_step: float = 0.1  # share of all heads switched off per pruning step
    batch_rows: int = 32  # examples per batch for the teacher-forced passes
    frequency_pairs: Optional[int] = 200_000  # training pairs counted for the rare-token role; None = all
    orders: list[str] = field(default_factory=lambda: ["importance", "gates", "random"])  # pruning orders compared
    # (gates only for a run with model.head_gates=concrete; importance is always scored)
    random_seeds: int = 3  # random pruning orders, one per seed, summarised as mean and sd
    order_step: float = 0.25  # the gates and random orders are scored every this share of heads (+ 25/50/75%)
    decode: DecodeOverrides = field(default_factory=DecodeOverrides)


def register_args() -> None:
    """No configs/heads.yaml is needed: the schema itself is the primary config."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="heads", node=HeadsArgs)


# ---- the analysis ------------------------------------------------------------------------------

def alignment_block(counts: Any, present: np.ndarray) -> dict:
    """JSON for one query convention: per-head and layer-average scores, the best of each.
    present: (L, H) which cross-attention grid entries are heads."""
    from train.analysis.alignment import METRICS, best_aligner
    from train.analysis.head_importance import to_lists

    scores = counts.scores()  # (L, H + 1): column H is the layer's head average
    best_avg = best_aligner({m: scores[m][:, -1:] for m in METRICS}, heads_only=False)
    best_avg["head"] = "avg"
    return {"heads": {m: to_lists(scores[m][:, :-1], present, 4) for m in METRICS},
            "layer_average": {m: scores[m][:, -1].round(4).tolist() for m in METRICS},
            "best_head": best_aligner(scores), "best_layer_average": best_avg,
            "predicted_links": counts.predicted.tolist()}


def f1_grid(block: dict) -> np.ndarray:
    """(L, H + 1) F1: heads (NaN past a pruned layer's own), then the layer average."""
    from train.analysis.head_importance import grid

    rows = block["heads"]["f1"]
    heads = grid(rows, max((len(r) for r in rows), default=0))
    return np.concatenate([heads, np.asarray(block["layer_average"]["f1"], float)[:, None]], axis=1)


def gates_block(graphdef: Any, params: Any) -> dict:
    """Each gated head's P(open) and evaluation gate, per type and layer (model/gate_params.py)."""
    import jax
    from flax import nnx

    from model.gate_params import gate_table, log_alphas

    table = gate_table(jax.device_get(log_alphas(nnx.merge(graphdef, params))))
    return {name: {kind: [[] if row is None else np.round(row[key], 4).tolist() for row in rows]
                   for kind, rows in table.items()}
            for name, key in (("open_probability", "open_probability"), ("eval_gate", "eval_gate"))}


def roles_block(graphdef: Any, params: Any, batches: list, cfg: Any, tokenizer: Any, present: dict,
                alignment: Optional[dict], frequency_pairs: Optional[int]) -> dict:
    """Every head's roles and the evidence, in heads.json's layout (train/analysis/head_roles.py)."""
    from train.analysis.head_importance import gate_shapes
    from train.analysis.head_roles import ROLES, classify, roles_json, thresholds_json
    from train.evals.head_roles import role_counts, token_frequencies
    from train.runs import load_split

    try:  # token frequencies of the training data, for the rare-token role
        train = load_split(cfg, tokenizer, "train")
        if frequency_pairs is not None and frequency_pairs < len(train):
            train = train.select(range(frequency_pairs))
        frequencies, source = token_frequencies(train, tokenizer.vocab_size), f"train split, {len(train)} pairs"
    except RunError as e:
        frequencies, source = None, f"none ({e}): no rare-token role"
    longest = max(max(b.src.shape[1], b.tgt_in.shape[1]) for b in batches)
    counts = role_counts(graphdef, params, batches, gate_shapes(cfg.model), longest - 1, frequencies)
    f1 = baseline = None
    if alignment is not None:
        f1 = f1_grid(alignment["output_rows"])[:, :-1]
        baseline = alignment["diagonal_baseline"]["f1"]
    out: dict[str, Any] = {"thresholds": thresholds_json(), "frequencies": source}
    for kind, c in counts.items():
        evidence = c.evidence()
        aligned = f1 if kind == "cross" else None
        out[kind] = roles_json(evidence, classify(evidence, alignment_f1=aligned, baseline_f1=baseline),
                               present[kind], aligned)
    out["counts"] = {role: sum(role in h["roles"] for kind in counts for layer in out[kind] for h in layer)
                     for role in ROLES}
    return out


def mean_loss(loss_fn, params, gates, batches) -> float:
    import jax

    nll, tokens = 0.0, 0.0
    for batch in batches:
        n, t = jax.device_get(loss_fn(params, gates, batch))
        nll, tokens = nll + float(np.sum(n)), tokens + float(np.sum(t))
    return nll / max(tokens, 1.0)


def analyse(args: Any) -> dict:
    """Run all three analyses; write DIR/heads/; return the heads.json content."""
    import jax

    from data.buckets import example_batches
    from data.config import BOS_ID, EOS_ID, PAD_ID
    from data.pipeline import PreparedData
    from model.decoding import make_decode_fn
    from train.analysis.head_importance import (
        base_gates,
        gates_without,
        head_importance,
        make_gate_grad_fn,
        make_loss_fn,
        present_heads,
        prunable_share,
        pruning_order,
        pruning_steps,
        to_lists,
    )
    from train.analysis.pruning_orders import gate_order, random_order, summarize, with_shares
    from train.engine.runtime import enable_compilation_cache, quiet_library_logs
    from train.evals.alignment import AlignmentEvaluator, gold_reversed, length_buckets
    from train.evals.generation import Generator
    from train.evals.scores import generation_scores, primary_metric
    from train.runs import load_run, load_split

    quiet_library_logs(logging.ERROR)
    t0 = time.time()
    run = load_run(args.run_dir, step=args.step)
    cfg = run.config
    decode = decode_config(cfg.decode, args.decode)
    enable_compilation_cache(cfg.train.compilation_cache)
    dataset = load_split(cfg, run.tokenizer, args.split)
    if args.limit is not None:
        dataset = dataset.select(range(min(max(args.limit, 0), len(dataset))))
    if len(dataset) == 0:
        raise RunError(f"the {args.split} split has no examples.")
    if not 0 < args.prune_step <= 1 or not 0 < args.order_step <= 1:
        raise RunError(f"prune_step={args.prune_step} and order_step={args.order_step} must be in (0, 1].")
    from train.analysis.pruning_orders import ORDERS

    if unknown := [o for o in args.orders if o not in ORDERS]:
        raise RunError(f"orders={list(args.orders)}: unknown {unknown}; choose from {list(ORDERS)}.")
    out_dir = run.run_dir / OUT_DIR
    out_dir.mkdir(exist_ok=True)
    buckets = length_buckets(max(cfg.data.max_source_len, cfg.data.max_target_len))
    batches = [b.batch for b in example_batches(dataset, args.batch_rows, buckets)]
    gates0 = base_gates(cfg.model)
    present = present_heads(cfg.model)  # (L, H) per type: all True unless the run was pruned
    params = run.params
    log = lambda msg: print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr)

    # 1. Importance at the unpruned gates (also gives the teacher-forced validation loss).
    log(f"importance: per-sentence gate gradients over {len(dataset)} {args.split} pairs")
    imp = head_importance(jax.jit(make_gate_grad_fn(run.graphdef)), params, gates0, batches, present)
    order = [h for h in pruning_order(imp["normalized"]) if gates0[h[0]][h[1], h[2]] > 0]
    rank = {k: np.zeros(v.shape, int) for k, v in imp["normalized"].items()}
    for r, (kind, layer, head) in enumerate(order, start=1):
        rank[kind][layer, head] = r

    # 2. Alignment of cross-attention heads against gold links, when the corpus has them.
    alignment = None
    evaluator = AlignmentEvaluator.build(run.graphdef, dataset, run.tokenizer, rows=args.batch_rows, buckets=buckets,
                                         swap_gold=gold_reversed(cfg.data.source_lang, cfg.data.target_lang))
    if evaluator is not None:
        log(f"alignment: {evaluator.examples} pairs with gold links")
        counts = evaluator.counts(params, (False, True))
        references = {"diagonal_baseline": evaluator.diagonal().scores(),  # no model: word order alone
                      "argmax_ceiling": evaluator.oracle().scores()}  # the best one link per subword can do
        alignment = {"examples": evaluator.examples, "gold_links": counts[False].gold,
                     "output_rows": alignment_block(counts[False], present["cross"]),
                     "input_rows": alignment_block(counts[True], present["cross"]),
                     **{name: {m: round(float(v), 4) for m, v in sc.items()} for name, sc in references.items()}}
    else:
        log("alignment: skipped (the split has no gold word alignments)")

    # 3. Pruning curve: validation loss and generation score with heads switched off.
    loss_fn = jax.jit(make_loss_fn(run.graphdef))
    data = PreparedData(run.tokenizer, None, run.tokenizer.vocab_size, {}, run.run_dir)
    generator = Generator(run.graphdef, data, decode, cfg.data.task, cfg.data.max_source_len,
                          cfg.data.max_target_len)
    generator.decode_fn = make_decode_fn(  # gates ride along with the params: no recompiles
        run.graphdef, beam_size=decode.beam_size, alpha=decode.alpha, max_len=generator.max_len,
        max_len_a=decode.max_len_a, max_len_b=decode.max_len_b, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_id=PAD_ID, gated=True)
    n_bleu = len(dataset) if args.bleu_limit is None else min(args.bleu_limit, len(dataset))
    bleu_set = dataset.select(range(n_bleu))
    metric = primary_metric(cfg.data.task)
    shapes = {k: v.shape for k, v in gates0.items()}
    already_off = [(k, l, h) for k, g in gates0.items() for l, h in zip(*np.nonzero((g == 0) & present[k]))]
    total = len(order) + len(already_off)
    shared: dict[int, dict] = {}  # k = 0 and k = all: the same model whatever the order

    def pruning_curve(name: str, heads: list, steps: list[int]) -> list[dict]:
        """Validation loss and score with heads[:k] switched off, for each k in steps."""
        curve = []
        for k in steps:
            if k in shared and k in (0, len(heads)):  # every order starts and ends at the same model
                curve.append(shared[k])
                continue
            gates = gates_without(shapes, already_off + heads[:k])
            loss = imp["loss"] if k == 0 else mean_loss(loss_fn, params, gates, batches)
            hyps = generator.translate((params, gates), bleu_set)
            scores = generation_scores(cfg.data.task, hyps, bleu_set["target"])
            point = {"heads_off": k, "share": round(k / max(len(heads), 1), 4), "val_loss": round(loss, 4),
                     **{m: v for m, v in scores.items() if isinstance(v, (int, float))}}  # off: heads[:k]
            if k in (0, len(heads)):
                shared[k] = point
            curve.append(point)
            log(f"pruning ({name}): {k}/{len(heads)} heads off: val loss {loss:.3f}, {metric} {point[metric]:.2f}")
        return curve

    curve = pruning_curve("importance", order, with_shares(pruning_steps(len(order), args.prune_step), len(order)))
    share = prunable_share(curve, 1.0, metric)
    gates = None if cfg.model.head_gates == "none" else gates_block(run.graphdef, params)

    # 3b. The same model pruned in other orders: trained gates and random (Voita et al.; Budhraja et al.).
    orders = {"importance": summarize([curve], metric)}
    compare = with_shares(pruning_steps(len(order), args.order_step), len(order))
    if "gates" in args.orders and gates is not None:
        by_gate = gate_order(gates["open_probability"], order)
        orders["gates"] = summarize([pruning_curve("gates", by_gate, compare)], metric) | {
            "order": [list(h) for h in by_gate]}
    if "random" in args.orders and args.random_seeds > 0:
        orders["random"] = summarize([pruning_curve(f"random, seed {seed}", random_order(order, seed), compare)
                                      for seed in range(args.random_seeds)], metric)

    # 4. Roles (and gates, for a gated run).
    log("roles: positional, rare-token, sink, alignment")
    roles = roles_block(run.graphdef, params, batches, cfg, run.tokenizer, present, alignment, args.frequency_pairs)

    result = {
        "run_dir": str(run.run_dir),
        "step": run.step,
        "split": args.split,
        "examples": len(dataset),
        "bleu_examples": n_bleu,
        "metric": metric,
        "decode": dataclasses.asdict(decode),
        "model": {"num_heads": max(v.shape[1] for v in present.values()), "encoder_layers": cfg.model.encoder_layers,
                  "decoder_layers": cfg.model.decoder_layers, "heads_total": total,
                  "head_counts": {k: list(v) for k, v in cfg.model.resolved_head_counts().items()}},
        "baseline": {"val_loss": round(imp["loss"], 4), metric: curve[0][metric]},
        "importance": {k: {"raw": to_lists(imp["raw"][k], present[k]),
                           "normalized": to_lists(imp["normalized"][k], present[k], 4),
                           "pruning_rank": to_lists(rank[k], present[k])} for k in imp["raw"]},
        "importance_tokens": imp["tokens"],
        "pruning_order": [list(h) for h in order],
        "pruning_curve": curve,
        "prunable_share_1bleu": share,
        "pruning_orders": orders,
        "alignment": alignment,
        "best_alignment_f1": None if alignment is None else alignment["output_rows"]["best_head"]["f1"],
        "roles": roles,
        "gates": gates,
        "wall_s": round(time.time() - t0, 1),
    }
    (out_dir / "heads.json").write_text(json.dumps(result, indent=1) + "\n")
    write_figures(result, out_dir)
    from train.analysis.heads_summary import markdown_summary

    (out_dir / "summary.md").write_text(markdown_summary(result))
    return result


def write_figures(result: dict, out_dir: Path) -> None:
    """The three PNGs, drawn from heads.json's content alone (so they can be redrawn from it)."""
    from train.analysis.head_plots import (
        alignment_figure,
        importance_figure,
        orders_figure,
        pruning_figure,
        save,
    )

    from train.analysis.head_importance import grid

    imp = result["importance"]
    width = lambda rows: max((len(r) for r in rows), default=0)
    save(importance_figure({k: grid(v["normalized"], width(v["normalized"])) for k, v in imp.items()},
                           {k: grid(v["pruning_rank"], width(v["pruning_rank"]), 0).astype(int) for k, v in imp.items()}),
         out_dir / "importance.png")
    save(pruning_figure(result["pruning_curve"], result["prunable_share_1bleu"], result["metric"]),
         out_dir / "pruning_curve.png")
    if result.get("pruning_orders"):
        save(orders_figure(result["pruning_orders"], result["metric"]), out_dir / "pruning_orders.png")
    a = result["alignment"]
    if a is not None:
        note = (f"{a['examples']} pairs, {a['gold_links']} gold links.  References: length-scaled diagonal "
                f"F1 {a['diagonal_baseline']['f1']:.3f} (no model); argmax ceiling F1 "
                f"{a['argmax_ceiling']['f1']:.3f} (gold-guided, one link per subword)")
        save(alignment_figure({"rows = predicted token (reported)": f1_grid(a["output_rows"]),
                               "rows = input token (shift-att)": f1_grid(a["input_rows"])}, note),
             out_dir / "alignment.png")


def main(argv: Optional[list[str]] = None) -> None:
    from train.analysis.heads_summary import markdown_summary

    register_args()
    args = compose_args("heads", HeadsArgs, sys.argv[1:] if argv is None else argv, USAGE)
    result = run_command(analyse, args)
    print(markdown_summary(result))
    print(f"wrote {Path(result['run_dir']) / OUT_DIR}/: heads.json, importance.png, pruning_curve.png, pruning_orders.png"
          + (", alignment.png" if result["alignment"] else "") + ", summary.md", file=sys.stderr)


if __name__ == "__main__":
    main()
