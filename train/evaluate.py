"""`python -m train.evaluate run_dir=DIR [split=test] [decode.beam_size=4 decode.alpha=0.6]`

Decodes one split of a run's corpus with its best checkpoint (by the validation metric) and
the same decoder that training validates with (train/evals/generation.py), then prints a one-line
summary and writes

    DIR/eval/{split}.json      BLEU and chrF with their sacreBLEU signatures, and beside them
                               `bleu_lc_tok`, the lowercased tokenized BLEU tutorials report
                               (ROUGE-1/2/L/Lsum for summarization); the decode settings and
                               the checkpoint step
    DIR/eval/{split}.hyp.txt   detokenized hypotheses, one per line, in corpus order

Options: configs/evaluate.yaml. Decode options default to the run's own decode config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from train.cli import DecodeOverrides, compose_args, decode_config, run_command
from train.errors import RunError

USAGE = ("usage: python -m train.evaluate run_dir=DIR [split=test] [step=N] [limit=N] "
         "[decode.beam_size=4] [decode.alpha=0.6] [decode.batch_size=64]  (see configs/evaluate.yaml)")


@dataclass
class EvaluateArgs:
    """Schema of configs/evaluate.yaml."""

    run_dir: str = MISSING
    split: str = "test"
    step: Optional[int] = None
    limit: Optional[int] = None
    decode: DecodeOverrides = field(default_factory=DecodeOverrides)


def summary_line(split: str, result: dict) -> str:
    """One line to paste into a README or a lab notebook."""
    d = result["decode"]
    mode = "greedy" if d["beam_size"] == 1 else f"beam {d['beam_size']} alpha {d['alpha']}"
    if "bleu" in result:
        scores = f"BLEU {result['bleu']:.2f} chrF {result['chrf']:.2f}"
        if "bleu_lc_tok" in result:
            scores += f" | lowercased tokenized BLEU {result['bleu_lc_tok']:.2f} (as tutorials report it)"
        sig = f" | sacreBLEU {result['bleu_signature']}"
    else:
        scores = (f"ROUGE-1/2/Lsum {result['rouge1']:.2f}/{result['rouge2']:.2f}/{result['rougeLsum']:.2f} "
                  f"ROUGE-L {result['rougeL']:.2f}")
        sig = " | rouge-score F1, stemmed, one sentence per line for Lsum"
    return (f"{split} {scores} | {mode} | step {result['step']} | {result['examples']} examples | "
            f"{result['decode_s']:.1f} s incl. compile{sig}")


def evaluate(args) -> dict:
    """Decode and score one split; write the eval files; return what went into the JSON."""
    from train.engine.runtime import enable_compilation_cache, quiet_library_logs
    from train.runs import (
        check_run_dir,
        load_config,
        load_run,
        load_split,
        load_tokenizer,
        require_checkpoint_dir,
    )

    quiet_library_logs(logging.ERROR)
    # Cheap checks, then the data: a missing checkpoint, a wrong split or a missing corpus is
    # reported before the model is read.
    run_dir = check_run_dir(Path(args.run_dir))
    cfg = load_config(run_dir)
    require_checkpoint_dir(run_dir)
    decode = decode_config(cfg.decode, args.decode)
    dataset = load_split(cfg, load_tokenizer(run_dir), args.split)
    run = load_run(run_dir, step=args.step)
    enable_compilation_cache(cfg.train.compilation_cache)

    from data.pipeline import (
        PreparedData,  # imported late: errors above answer in a second or two
    )
    from train.evals.generation import Generator, write_lines
    from train.evals.scores import generation_scores, tutorial_bleu

    if args.limit is not None:
        dataset = dataset.select(range(min(max(args.limit, 0), len(dataset))))
    if len(dataset) == 0:
        raise RunError(f"the {args.split} split has no examples to decode.")

    data = PreparedData(run.tokenizer, None, run.tokenizer.vocab_size, {}, run.run_dir)
    generator = Generator(run.graphdef, data, decode, cfg.data.task, cfg.data.max_source_len,
                          cfg.data.max_target_len)
    print(f"decoding {len(dataset)} {args.split} examples "
          f"({'greedy' if decode.beam_size == 1 else f'beam {decode.beam_size}'})", file=sys.stderr)
    t0 = time.time()
    hyps = generator.translate(run.params, dataset)
    decode_s = time.time() - t0
    references = list(dataset["target"])
    scores = generation_scores(cfg.data.task, hyps, references)
    if cfg.data.task == "translation":  # the same hypotheses, scored the tutorials' way
        scores.update(tutorial_bleu(hyps, references))

    result = {
        "split": args.split,
        **scores,
        "examples": len(dataset),
        "step": run.step,
        "checkpoint": "best" if args.step is None else "requested",
        "checkpoint_val_metric": run.meta.get("metric"),
        "decode": dataclasses.asdict(decode),
        "task": cfg.data.task,
        "decode_s": round(decode_s, 2),
        "run_dir": str(run.run_dir),
    }
    out_dir = run.run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    write_lines(out_dir / f"{args.split}.hyp.txt", hyps)
    (out_dir / f"{args.split}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def main(argv: Optional[list[str]] = None) -> None:
    args = compose_args("evaluate", EvaluateArgs, sys.argv[1:] if argv is None else argv, USAGE)
    result = run_command(evaluate, args)
    out = Path(result["run_dir"]) / "eval"
    print(f"wrote {out / (args.split + '.json')} and {out / (args.split + '.hyp.txt')}", file=sys.stderr)
    print(summary_line(args.split, result))


if __name__ == "__main__":
    main()
