"""`python -m train.heads run_dir=DIR [split=validation] [limit=N] [bleu_limit=N] [step=N]`

What the attention heads of a trained run do, from its best checkpoint:

  importance   |d validation loss / d head gate| per head, normalised per layer (Michel et al.
               2019), for encoder self, decoder self and cross attention (train/analysis/head_importance.py)
  pruning      heads switched off in order of increasing importance, 10% of all heads per step,
               validation loss and BLEU re-scored at each step (gates reach the decoder too)
  alignment    each cross-attention head's (and each layer's head-average) argmax word
               alignment under teacher forcing, against the corpus's gold links: precision,
               recall, F1, AER (train/evals/alignment.py); only for corpora with an `alignment` column

Writes DIR/heads/heads.json (every figure), importance.png, pruning_curve.png, alignment.png and
summary.md, and prints the Markdown summary. Arguments are Hydra overrides typed by HeadsArgs.
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
         "[prune_step=0.1] [batch_rows=32] [decode.beam_size=1]")
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
    decode: DecodeOverrides = field(default_factory=DecodeOverrides)


def register_args() -> None:
    """No configs/heads.yaml is needed: the schema itself is the primary config."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="heads", node=HeadsArgs)


# ---- the analysis ------------------------------------------------------------------------------

def alignment_block(counts: Any) -> dict:
    """JSON for one query convention: per-head and layer-average scores, the best of each."""
    from train.analysis.alignment import METRICS, best_aligner

    scores = counts.scores()  # (L, H + 1): column H is the layer's head average
    best_avg = best_aligner({m: scores[m][:, -1:] for m in METRICS}, heads_only=False)
    best_avg["head"] = "avg"
    return {"heads": {m: scores[m][:, :-1].round(4).tolist() for m in METRICS},
            "layer_average": {m: scores[m][:, -1].round(4).tolist() for m in METRICS},
            "best_head": best_aligner(scores), "best_layer_average": best_avg,
            "predicted_links": counts.predicted.tolist()}


def f1_grid(block: dict) -> np.ndarray:
    """(L, H + 1) F1: heads, then the layer average."""
    return np.array([h + [a] for h, a in zip(block["heads"]["f1"], block["layer_average"]["f1"])])


def base_gates(model_cfg: Any) -> dict[str, np.ndarray]:
    """All heads on, except those the run's own model.head_mask switched off."""
    from train.analysis.head_importance import all_on, gate_shapes

    gates = all_on(gate_shapes(model_cfg))
    for kind, rows in (model_cfg.head_mask or {}).items():
        gates[kind] = np.asarray(rows, np.float32)
    return gates


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
        gates_without,
        head_importance,
        make_gate_grad_fn,
        make_loss_fn,
        prunable_share,
        pruning_order,
        pruning_steps,
    )
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
    if not 0 < args.prune_step <= 1:
        raise RunError(f"prune_step={args.prune_step} must be in (0, 1].")
    out_dir = run.run_dir / OUT_DIR
    out_dir.mkdir(exist_ok=True)
    buckets = length_buckets(max(cfg.data.max_source_len, cfg.data.max_target_len))
    batches = [b.batch for b in example_batches(dataset, args.batch_rows, buckets)]
    gates0 = base_gates(cfg.model)
    params = run.params
    log = lambda msg: print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr)

    # 1. Importance at the unpruned gates (also gives the teacher-forced validation loss).
    log(f"importance: per-sentence gate gradients over {len(dataset)} {args.split} pairs")
    imp = head_importance(jax.jit(make_gate_grad_fn(run.graphdef)), params, gates0, batches)
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
                     "output_rows": alignment_block(counts[False]), "input_rows": alignment_block(counts[True]),
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
    already_off = [(k, l, h) for k, g in gates0.items() for l, h in zip(*np.nonzero(g == 0))]
    total = len(order) + len(already_off)
    curve = []
    for k in pruning_steps(len(order), args.prune_step):
        gates = gates_without(shapes, already_off + order[:k])
        loss = imp["loss"] if k == 0 else mean_loss(loss_fn, params, gates, batches)
        hyps = generator.translate((params, gates), bleu_set)
        scores = generation_scores(cfg.data.task, hyps, bleu_set["target"])
        point = {"heads_off": k, "share": round(k / max(len(order), 1), 4), "val_loss": round(loss, 4),
                 **{m: v for m, v in scores.items() if isinstance(v, (int, float))}}  # off: pruning_order[:k]
        curve.append(point)
        log(f"pruning: {k}/{len(order)} heads off: val loss {loss:.3f}, {metric} {point[metric]:.2f}")
    share = prunable_share(curve, 1.0, metric)

    result = {
        "run_dir": str(run.run_dir),
        "step": run.step,
        "split": args.split,
        "examples": len(dataset),
        "bleu_examples": n_bleu,
        "metric": metric,
        "decode": dataclasses.asdict(decode),
        "model": {"num_heads": cfg.model.num_heads, "encoder_layers": cfg.model.encoder_layers,
                  "decoder_layers": cfg.model.decoder_layers, "heads_total": total},
        "baseline": {"val_loss": round(imp["loss"], 4), metric: curve[0][metric]},
        "importance": {k: {"raw": imp["raw"][k].tolist(), "normalized": imp["normalized"][k].round(4).tolist(),
                           "pruning_rank": rank[k].tolist()} for k in imp["raw"]},
        "importance_tokens": imp["tokens"],
        "pruning_order": [list(h) for h in order],
        "pruning_curve": curve,
        "prunable_share_1bleu": share,
        "alignment": alignment,
        "best_alignment_f1": None if alignment is None else alignment["output_rows"]["best_head"]["f1"],
        "wall_s": round(time.time() - t0, 1),
    }
    (out_dir / "heads.json").write_text(json.dumps(result, indent=1) + "\n")
    write_figures(result, out_dir)
    (out_dir / "summary.md").write_text(markdown_summary(result))
    return result


def write_figures(result: dict, out_dir: Path) -> None:
    """The three PNGs, drawn from heads.json's content alone (so they can be redrawn from it)."""
    from train.analysis.head_plots import (
        alignment_figure,
        importance_figure,
        pruning_figure,
        save,
    )

    imp = result["importance"]
    save(importance_figure({k: np.array(v["normalized"]) for k, v in imp.items()},
                           {k: np.array(v["pruning_rank"]) for k, v in imp.items()}), out_dir / "importance.png")
    save(pruning_figure(result["pruning_curve"], result["prunable_share_1bleu"], result["metric"]),
         out_dir / "pruning_curve.png")
    a = result["alignment"]
    if a is not None:
        note = (f"{a['examples']} pairs, {a['gold_links']} gold links.  References: length-scaled diagonal "
                f"F1 {a['diagonal_baseline']['f1']:.3f} (no model); argmax ceiling F1 "
                f"{a['argmax_ceiling']['f1']:.3f} (gold-guided, one link per subword)")
        save(alignment_figure({"rows = predicted token (reported)": f1_grid(a["output_rows"]),
                               "rows = input token (shift-att)": f1_grid(a["input_rows"])}, note),
             out_dir / "alignment.png")


# ---- the Markdown summary ---------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def markdown_summary(r: dict) -> str:
    m, M = r["metric"], r["metric"].upper()
    lines = [f"# Heads of {Path(r['run_dir']).name} (step {r['step']}, {r['split']}: {r['examples']} pairs)", "",
             f"Unpruned: validation loss {r['baseline']['val_loss']:.3f}, {M} {r['baseline'][m]:.2f} "
             f"({'greedy' if r['decode']['beam_size'] == 1 else 'beam ' + str(r['decode']['beam_size'])}, "
             f"{r['bleu_examples']} pairs).", "",
             "## Importance", "",
             "Mean |d loss / d gate| per target token, divided by the layer's L2 norm (Michel et al. 2019).", ""]
    heads = r["model"]["num_heads"]
    rows = [[kind.replace("_", " "), layer] + [round(v, 3) for v in values]
            for kind, imp in r["importance"].items() for layer, values in enumerate(imp["normalized"])]
    lines += _table(["attention", "layer"] + [f"head {h}" for h in range(heads)], rows)
    lines += ["", f"## Pruning ({r['model']['heads_total']} heads, least important first)", ""]
    base = r["pruning_curve"][0][m]
    lines += _table(["heads off", "share", "val loss", M, f"{M} lost"],
                    [[p["heads_off"], f"{p['share']:.0%}", p["val_loss"], round(p[m], 2), round(base - p[m], 2)]
                     for p in r["pruning_curve"]])
    lines += ["", f"**{r['prunable_share_1bleu']:.0%} of the heads can be switched off for less than 1 {M} lost.**"]
    if base < 5:  # near the floor nothing can drop by a whole point: the share says little
        lines += [f"(The unpruned model scores only {base:.2f} {M}; train longer for a meaningful share.)"]
    a = r["alignment"]
    if a is not None:
        out = a["output_rows"]
        lines += ["", f"## Alignment ({a['examples']} pairs, {a['gold_links']} gold links)", "",
                  "F1 of each cross-attention head's argmax word alignment (rows = the predicted token); "
                  "avg = the layer's head-averaged attention.", ""]
        lines += _table(["layer"] + [f"head {h}" for h in range(heads)] + ["avg"],
                        [[layer] + [round(v, 3) for v in f1] + [round(out["layer_average"]["f1"][layer], 3)]
                         for layer, f1 in enumerate(out["heads"]["f1"])])
        desc = lambda b: (f"F1 {b['f1']:.3f}, precision {b['precision']:.3f}, recall {b['recall']:.3f}, "
                          f"AER {b['aer']:.3f}")
        b, la, sh = out["best_head"], out["best_layer_average"], a["input_rows"]["best_head"]
        lines += ["", f"Best head: layer {b['layer']} head {b['head']}: {desc(b)}.",
                  f"Best layer average: layer {la['layer']}: {desc(la)}.",
                  f"With rows = input token (shift-att): best head layer {sh['layer']} head {sh['head']}: {desc(sh)}.",
                  f"Reference without a model, the length-scaled diagonal: {desc(a['diagonal_baseline'])}.",
                  f"Ceiling for argmax aligners (gold-guided, one link per subword): {desc(a['argmax_ceiling'])}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    register_args()
    args = compose_args("heads", HeadsArgs, sys.argv[1:] if argv is None else argv, USAGE)
    result = run_command(analyse, args)
    print(markdown_summary(result))
    print(f"wrote {Path(result['run_dir']) / OUT_DIR}/: heads.json, importance.png, pruning_curve.png"
          + (", alignment.png" if result["alignment"] else "") + ", summary.md", file=sys.stderr)


if __name__ == "__main__":
    main()
