"""From a loader's raw splits to the canonical ones every source ends as.

Canonical names are train, validation and (when the corpus has one) test; each split keeps
string columns `source` and `target`, plus `id` and `alignment` where the corpus has them.
A corpus without a validation split gets one held out of the training split:
`cfg.holdout_size` pairs picked with a fixed seed, with a logged warning (deterministic, so
every run of a sweep sees the same split).
"""

from __future__ import annotations

import logging
from typing import Optional

import datasets

from data.config import DataConfig
from data.errors import DataError

log = logging.getLogger(__name__)

# What a loader returns: canonical split name -> (its dataset, where it came from, for messages).
RawSplits = dict[str, tuple[datasets.Dataset, str]]


def split_names(cfg: DataConfig) -> dict[str, str]:
    """Canonical split name -> the name the corpus uses."""
    names = {"train": cfg.train_split, "validation": cfg.validation_split}
    if cfg.test_split:
        names["test"] = cfg.test_split
    return names


def _column_for(ds: datasets.Dataset, field: Optional[str], lang: str, role: str, where: str) -> str:
    """The (flattened) column holding one side: an explicit field, translation[lang], or lang."""
    columns = list(ds.column_names)
    candidates = [field] if field else [f"translation.{lang}", lang]
    for c in candidates:
        head, _, key = c.partition(".")
        if c in columns or (key and head in columns and key in _translation_langs(ds, head)):
            return c
    if not field and "translation" in columns:
        langs = _translation_langs(ds)
        raise DataError(
            f"{where}: the translation column has languages {langs}, not {lang!r}; set "
            f"data.{role}_lang to one of them."
        )
    raise DataError(
        f"{where}: no column {candidates[0] if field else lang!r} for the {role}; the columns "
        f"are {columns}. Set data.{role}_field to one of them"
        + ("" if field else f" (or data.{role}_lang, which names the column by default)")
        + "."
    )


def _translation_langs(ds: datasets.Dataset, column: str = "translation") -> list:
    """Keys of a dict-valued column (datasets' Translation feature or a plain struct)."""
    feature = ds.features[column]
    if hasattr(feature, "languages"):
        return list(feature.languages)
    return list(feature.keys()) if isinstance(feature, dict) else []


def standardize(ds: datasets.Dataset, cfg: DataConfig, split: str, where: str) -> datasets.Dataset:
    """Select and rename to source/target[/id/alignment]; columnar, no Python per row."""
    if len(ds) == 0:
        raise DataError(f"{where}: the {split} split is empty. Add pairs or point data.path elsewhere.")
    if cfg.source == "local" and cfg.format == "text":
        return ds  # read here, already source/target
    src = _column_for(ds, cfg.source_field, cfg.source_lang, "source", where)
    tgt = _column_for(ds, cfg.target_field, cfg.target_lang, "target", where)
    if "." in src or "." in tgt:
        ds = ds.flatten()
    keep = {src: "source", tgt: "target"}
    for extra in ("id", "alignment"):
        if extra in ds.column_names and extra not in keep:
            keep[extra] = extra
    ds = ds.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
    for name in ("source", "target", "id"):
        if name in ds.column_names and ds.features[name] != datasets.Value("string"):
            ds = ds.cast_column(name, datasets.Value("string"))  # numbers in CSV, integer ids
    return ds


def ensure_validation(splits: dict[str, datasets.Dataset], cfg: DataConfig) -> dict[str, datasets.Dataset]:
    if "validation" in splits:
        return splits
    train = splits["train"]
    size = min(cfg.holdout_size, len(train) // 10)
    if size < 1:
        raise DataError(
            f"The corpus has no {cfg.validation_split!r} split and {len(train)} training pairs are "
            f"too few to hold out a validation set (data.holdout_size={cfg.holdout_size}). "
            f"Provide a validation split."
        )
    log.warning(
        "No %r split: holding out %d of %d training pairs (seed 0) as validation.",
        cfg.validation_split, size, len(train),
    )
    parts = train.train_test_split(test_size=size, seed=0, shuffle=True)
    return {**splits, "train": parts["train"].flatten_indices(), "validation": parts["test"].flatten_indices()}


def apply_caps(splits: dict[str, datasets.Dataset], cfg: DataConfig) -> dict[str, datasets.Dataset]:
    """Caps for quick runs: a seeded sample of train (large corpora are ordered by origin),
    the first N of validation/test (order kept, so a capped test set is a prefix)."""
    out = dict(splits)
    if cfg.max_train_examples and len(out["train"]) > cfg.max_train_examples:
        idx = out["train"].shuffle(seed=0).select(range(cfg.max_train_examples))
        out["train"] = idx.flatten_indices()
    for name in ("validation", "test"):
        if name in out and cfg.max_eval_examples and len(out[name]) > cfg.max_eval_examples:
            out[name] = out[name].select(range(cfg.max_eval_examples))
    return out
