"""From a DataConfig to tokenized splits, cached on disk so a sweep tokenizes once.

Cache layout under `cfg.cache_dir` (relative to the repo root):

    {name}-{tok_key}/tokenizer.json                 keyed by corpus identity + tokenizer settings
    {name}-{tok_key}/tokenized-{len_key}/           DatasetDict.save_to_disk, + stats.json
    {name}-{tok_key}.lock                           held while building (filelock)

`tok_key` hashes the corpus files (path, size, mtime) or Hub id/config/revision, the fields,
caps and tokenizer settings; `len_key` adds the length limits. A cache hit reads neither
the raw corpus nor the tokenizer's training data. Concurrent jobs wait on the lock and then
reuse what the first one built; finished folders appear by atomic rename only. A cache that
does not read back whole (a killed build, a truncated file after a power loss) is reported,
removed and rebuilt, never trusted.

Token ids: src_ids = tokens + [EOS] and tgt_ids = tokens + [EOS], at most max_source_len /
max_target_len long. Overlong training pairs are truncated (keeping EOS) or dropped per
`cfg.overlong`; validation and test pairs are only ever truncated, never dropped, so
that their metrics stay comparable across settings (their raw `target` stays whole for
BLEU/ROUGE). Pairs with an empty side are dropped everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from filelock import FileLock

from data.config import EOS_ID, DataConfig, resolve
from data.errors import DataError
from data.sources import corpus_identity, load_splits
from data.tokenizer import TOKENIZER_FILE, SubwordTokenizer, load_or_train

log = logging.getLogger(__name__)

# Bump when the tokenizer recipe or the tokenized layout changes: old caches are ignored.
TOKENIZER_VERSION = 1
PIPELINE_VERSION = 1
STATS_FILE = "stats.json"
MAP_BATCH = 1000


@dataclass
class PreparedData:
    """What training needs from the data side.

    splits: `train`, `validation`[, `test`] with columns `src_ids`, `tgt_ids` (int32 lists,
    each ending in EOS), `src_len`, `tgt_len` (int32, their lengths) and the raw `source`,
    `target` (plus `id`, `alignment` where the corpus has them).
    stats: {split: {examples, kept, empty_dropped, src_truncated, tgt_truncated,
    overlong_dropped, src_tokens, tgt_tokens, src_len_mean, tgt_len_mean, src_len_p99,
    tgt_len_p99 (before truncation)}, "tokenizer": {...}, "cache": {...}}.
    """

    tokenizer: SubwordTokenizer
    splits: datasets.DatasetDict
    vocab_size: int
    stats: dict
    cache_dir: Path  # the tokenized-splits folder this run reads


def cache_folders(cfg: DataConfig, root: Path) -> tuple[Path, Path]:
    """(tokenizer folder, tokenized-splits folder) for this config; computing them reads no data."""
    ident = corpus_identity(cfg, root)
    tok_settings = [cfg.tokenizer, cfg.vocab_size, cfg.shared_vocab, cfg.tokenizer_max_examples]
    tok_key = _hash({"corpus": ident, "tokenizer": tok_settings, "v": TOKENIZER_VERSION})
    len_key = _hash({"tok": tok_key, "lens": [cfg.max_source_len, cfg.max_target_len, cfg.overlong],
                     "v": PIPELINE_VERSION})
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name) or "data"
    folder = resolve(cfg.cache_dir, root) / f"{slug}-{tok_key}"
    return folder, folder / f"tokenized-{len_key}"


def prepare(cfg: DataConfig, root: Path) -> PreparedData:
    """Load, tokenize and cache the corpus of `cfg`, or reuse the cache."""
    cfg.validate()
    root = Path(root)
    folder, tokenized = cache_folders(cfg, root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        hit = (tokenized / STATS_FILE).exists() and (folder / TOKENIZER_FILE).exists()
        if hit:
            try:
                tokenizer, stats, splits = _read_cache(folder, tokenized)
            except Exception as e:  # damaged: say so, and build it again from the corpus
                log.warning("The data cache %s is damaged (%s: %s); rebuilding it.", folder, type(e).__name__,
                            str(e).splitlines()[0][:200] if str(e) else "")
                shutil.rmtree(folder, ignore_errors=True)
                hit = False
        if not hit:
            tokenizer, stats = _build(cfg, root, folder, tokenized)
            splits = datasets.load_from_disk(str(tokenized))  # memory-mapped
    stats["cache"] = {"hit": hit, "dir": str(tokenized)}
    log.info("Data %s: %s", "cache hit" if hit else "prepared", tokenized)
    return PreparedData(tokenizer, splits, tokenizer.vocab_size, stats, tokenized)


def _read_cache(folder: Path, tokenized: Path) -> tuple[SubwordTokenizer, dict, datasets.DatasetDict]:
    """The cached tokenizer, stats and splits, each read back whole (raises when any is damaged)."""
    tokenizer = SubwordTokenizer.load(folder / TOKENIZER_FILE)
    stats = json.loads((tokenized / STATS_FILE).read_text())
    stats["tokenizer"]["trained"] = False
    splits = datasets.load_from_disk(str(tokenized))
    for name, ds in splits.items():  # every record batch of every column, not just the schema
        table = ds.data.table
        table.validate(full=True)
        if len(ds) != stats[name]["kept"]:
            raise ValueError(f"{name} has {len(ds)} pairs, stats.json says {stats[name]['kept']}")
    return tokenizer, stats, splits


def _build(cfg: DataConfig, root: Path, folder: Path, tokenized: Path) -> tuple[SubwordTokenizer, dict]:
    t0 = time.time()
    raw = load_splits(cfg, root)
    tokenizer, trained = load_or_train(cfg, raw["train"], folder)
    t1 = time.time()
    splits, stats = {}, {}
    for name, ds in raw.items():
        drop = name == "train" and cfg.overlong == "drop"
        splits[name], stats[name] = tokenize_split(ds, tokenizer, cfg, name, drop_overlong=drop)
    stats["tokenizer"] = {
        "kind": cfg.tokenizer, "vocab_size": tokenizer.vocab_size, "trained": trained,
        "train_s": round(t1 - t0, 2) if trained else 0.0,
    }
    stats["tokenize_s"] = round(time.time() - t1, 2)
    tmp = folder / f".tmp-{tokenized.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(tmp))
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=1))
    _sync_tree(tmp)  # on disk before the rename makes it the cache: a power loss leaves no half cache
    shutil.rmtree(tokenized, ignore_errors=True)  # only a leftover without stats.json gets here
    os.replace(tmp, tokenized)
    return tokenizer, stats


def tokenize_split(
    ds: datasets.Dataset, tokenizer: SubwordTokenizer, cfg: DataConfig, name: str, drop_overlong: bool
) -> tuple[datasets.Dataset, dict]:
    """Add src_ids/tgt_ids/src_len/tgt_len, drop empty (and maybe overlong) pairs; return counts."""
    S, T = cfg.max_source_len, cfg.max_target_len

    def encode(batch: dict) -> dict:
        src = [s or "" for s in batch["source"]]
        tgt = [t or "" for t in batch["target"]]
        src_ids, tgt_ids = tokenizer.encode(src), tokenizer.encode(tgt)
        return {
            # truncation keeps EOS so the decoder still learns to stop
            "src_ids": [ids[: S - 1] + [EOS_ID] for ids in src_ids],
            "tgt_ids": [ids[: T - 1] + [EOS_ID] for ids in tgt_ids],
            "src_full": [len(ids) + 1 for ids in src_ids],
            "tgt_full": [len(ids) + 1 for ids in tgt_ids],
            "empty": [not s.strip() or not t.strip() for s, t in zip(src, tgt)],
        }

    features = ds.features.copy()
    features.update({
        "src_ids": datasets.List(datasets.Value("int32")),
        "tgt_ids": datasets.List(datasets.Value("int32")),
        "src_full": datasets.Value("int32"),
        "tgt_full": datasets.Value("int32"),
        "empty": datasets.Value("bool"),
    })
    fingerprint = _hash({"ds": ds._fingerprint, "tok": tokenizer.tokenizer.to_str(), "S": S, "T": T})
    ds = ds.map(encode, batched=True, batch_size=MAP_BATCH, features=features, keep_in_memory=True,
                new_fingerprint=fingerprint, desc=f"Tokenizing {name}")
    empty, src_full, tgt_full = (np.asarray(ds.data.column(c).to_numpy()) for c in ("empty", "src_full", "tgt_full"))
    src_over, tgt_over = (src_full > S) & ~empty, (tgt_full > T) & ~empty
    keep = ~empty & ~(src_over | tgt_over) if drop_overlong else ~empty
    if not keep.any():
        if empty.all():
            why = "every pair has an empty source or target (the empty-line filter)"
            fix = "check data.source_field/target_field and the files' contents"
        else:
            why = (f"every non-empty pair is longer than max_source_len={S} or max_target_len={T} "
                   f"(the overlong filter, data.overlong=drop)")
            fix = "raise data.max_source_len/max_target_len or set data.overlong=truncate"
        raise DataError(f"The {name} split has no pairs left: {why}; {fix}.")
    src_len, tgt_len = np.minimum(src_full, S)[keep], np.minimum(tgt_full, T)[keep]
    stats = {
        "examples": int(len(keep)),
        "kept": int(keep.sum()),
        "empty_dropped": int(empty.sum()),
        "overlong_dropped": int((~empty & (src_over | tgt_over)).sum()) if drop_overlong else 0,
        "src_truncated": 0 if drop_overlong else int(src_over.sum()),
        "tgt_truncated": 0 if drop_overlong else int(tgt_over.sum()),
        "src_tokens": int(src_len.sum()),
        "tgt_tokens": int(tgt_len.sum()),
        "src_len_mean": round(float(src_len.mean()), 2),
        "tgt_len_mean": round(float(tgt_len.mean()), 2),
        "src_len_p99": int(np.percentile(src_full[~empty], 99)),
        "tgt_len_p99": int(np.percentile(tgt_full[~empty], 99)),
    }
    if not keep.all():
        ds = ds.select(np.flatnonzero(keep))
    ds = ds.remove_columns(["src_full", "tgt_full", "empty"])
    ds = ds.add_column("src_len", src_len.astype(np.int32)).add_column("tgt_len", tgt_len.astype(np.int32))
    return ds.flatten_indices(), stats


def _sync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
