"""`python -m train.bench --only decode --run-dir FULL --run-dir PRUNED`: decoding speed of trained
runs' own models, for example a run pruned by `python -m train.prune` against the run it came from.

Each run's model and best checkpoint are loaded as `evaluate` loads them. Every run decodes the same
batch of --decode-batch random sources of --src-len tokens (ids drawn from the first run's
vocabulary) to exactly --tgt-len tokens: no EOS stops a sentence early, so a model that would stop
sooner does not look faster, and what is timed is the cost per generated token of the model's
shape. Greedy and beam search (--beam), KV-cached, as translation uses them. The runs alternate in
--rounds rounds (the best of --decode-reps calls per round); the summary is the median of the rounds
and each run's ratio to the first.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Callable

from train.bench.decode import best_sentences_per_s
from train.bench.records import log


def _decoders(run_dir: Path, a: argparse.Namespace, src: Any) -> tuple[dict, Callable[[], dict[str, float]]]:
    """(what the run is, a function timing greedy and beam decoding now: {kind: sentences/s})."""
    import jax

    from model.decoding import make_decode_fn
    from model.flops import count_params
    from train.runs import load_run

    run = load_run(run_dir)
    kw = dict(max_len=a.tgt_len, max_len_a=0.0, max_len_b=a.tgt_len, alpha=0.6, eos_id=-1)
    fns = {kind: make_decode_fn(run.graphdef, beam_size=k, **kw) for kind, k in (("greedy", 1), (f"beam{a.beam}", a.beam))}
    for fn in fns.values():
        jax.block_until_ready(fn(run.params, src))  # compiles

    def sentences_per_s() -> dict[str, float]:
        return {k: round(v, 2) for k, v in best_sentences_per_s(fns, run.params, src, a.decode_reps).items()}

    counts = run.config.model.resolved_head_counts()
    about = {"run": str(run_dir), "step": run.step, "params": count_params(run.params),
             "heads": sum(sum(v) for v in counts.values()), "head_counts": {k: list(v) for k, v in counts.items()}}
    return about, sentences_per_s


def compare_run_decoding(a: argparse.Namespace) -> list[dict]:
    """One record per round ({run: {kind: sentences/s}}), then the median round with ratios."""
    import numpy as np

    from train.runs import load_config

    vocab = load_config(Path(a.run_dir[0])).data.vocab_size
    src = np.random.default_rng(1).integers(4, vocab, (a.decode_batch, a.src_len), dtype=np.int32)
    runs = [_decoders(Path(d), a, src) for d in a.run_dir]
    kinds = ("greedy", f"beam{a.beam}")
    shape = {"batch": a.decode_batch, "src_len": a.src_len, "max_len": a.tgt_len, "beam": a.beam}
    records, rounds = [], []
    for r in range(a.rounds):
        measured = {about["run"]: timer() for about, timer in runs}
        rounds.append(measured)
        records.append({"name": "decode_runs", "round": r, **shape, "sentences_per_s": measured})
        log(f"decode_runs round {r}: " + "; ".join(f"{name} " + ", ".join(f"{k} {v[k]}" for k in kinds)
                                                   for name, v in measured.items()))
    first = runs[0][0]["run"]
    median = {about["run"]: {k: round(statistics.median(m[about["run"]][k] for m in rounds), 2) for k in kinds}
              for about, _ in runs}
    records.append({"name": "decode_runs", "round": "median", **shape, "runs": [about for about, _ in runs],
                    "sentences_per_s": median,
                    "vs_first": {name: {k: round(v[k] / median[first][k], 3) for k in kinds} for name, v in median.items()}})
    return records
