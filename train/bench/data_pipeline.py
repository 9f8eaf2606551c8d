"""The data line: packing-pipeline tokens/s and padding efficiency on the embedded corpus's
training split, and the number of distinct train-step batch shapes over one epoch (packing
should give one, hence one train-step compile)."""

from __future__ import annotations

import argparse
import time


def bench_data(a: argparse.Namespace) -> dict:
    import numpy as np

    from data.config import DataConfig
    from data.packing import PackedBatches
    from data.pipeline import prepare
    from train.config import REPO_ROOT

    cfg = DataConfig()  # the embedded corpus with the project's default lengths and batch size
    t0 = time.perf_counter()
    data = prepare(cfg, REPO_ROOT)
    prepare_s = time.perf_counter() - t0
    batches = PackedBatches(data.splits["train"], cfg, seed=0)
    t0 = time.perf_counter()
    plan = batches.plan(0)
    plan_s = time.perf_counter() - t0
    limit = a.data_batches or len(plan)
    shapes: set = set()
    real = padded = n = 0
    t0 = time.perf_counter()
    for batch in batches.iter_epoch(0):
        shapes.add(tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch._asdict().items())))
        real += int(np.count_nonzero(batch.src_segments)) + int(np.count_nonzero(batch.tgt_segments))
        padded += batch.src.size + batch.tgt_in.size
        n += 1
        if n >= limit:
            break
    build_s = time.perf_counter() - t0
    eff = batches.efficiency
    return {
        "name": "data", "dataset": cfg.name, "split": "train", "examples": len(data.splits["train"]),
        "tokens_per_s": round(real / (build_s + plan_s * n / len(plan)), 1),  # plan cost pro rata
        "padded_tokens_per_s": round(padded / (build_s + plan_s * n / len(plan)), 1),
        "padding_efficiency": round(eff["tokens"], 4),
        "src_efficiency": round(eff["src"], 4), "tgt_efficiency": round(eff["tgt"], 4),
        "pairs_per_batch": round(eff["pairs_per_batch"], 2),
        "batches_per_epoch": len(plan), "batches_timed": n,
        "distinct_shapes": len(shapes), "full_epoch": n == len(plan),
        "rows": batches.rows, "max_source_len": cfg.max_source_len, "max_target_len": cfg.max_target_len,
        "plan_s": round(plan_s, 3), "prepare_s": round(prepare_s, 2),
        "cache_hit": bool(data.stats.get("cache", {}).get("hit")),
    }
