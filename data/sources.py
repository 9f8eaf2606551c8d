"""Where sentence pairs come from: the embedded corpus, the Hugging Face Hub, or local files.

Every source ends as a `datasets.DatasetDict` with splits `train`, `validation` and, when the
corpus has one, `test`; each with string columns `source` and `target`, plus `id` and
`alignment` where the corpus has them. The loaders live in data/embedded.py, data/hub.py and
data/local_files.py; data/splits.py turns what they load into those canonical splits.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from data.config import DataConfig
from data.embedded import embedded_files, load_embedded
from data.errors import DataError
from data.hub import load_hub, local_hub_dir
from data.hub_files import SAMPLER_VERSION as HUB_SAMPLER_VERSION
from data.local_files import load_local, local_files
from data.splits import apply_caps, ensure_validation, standardize


def load_splits(cfg: DataConfig, root: Path) -> datasets.DatasetDict:
    """Load the corpus named by `cfg` as train/validation[/test] with `source`/`target` columns."""
    if cfg.source == "embedded":
        raw = load_embedded(cfg, root)
    elif cfg.source == "hub":
        raw = load_hub(cfg, root)
    elif cfg.source == "local":
        raw = load_local(cfg, root)
    else:  # DataConfig.validate rejects this first; kept for callers that skip it
        raise DataError(f"data.source={cfg.source!r} must be embedded, hub or local.")
    splits = {name: standardize(ds, cfg, name, where) for name, (ds, where) in raw.items()}
    splits = ensure_validation(splits, cfg)
    splits = apply_caps(splits, cfg)
    return datasets.DatasetDict(splits)


def corpus_identity(cfg: DataConfig, root: Path) -> dict:
    """What determines the loaded pairs, cheap to compute: the key of every on-disk cache.

    Files count by path, size and mtime (a rebuilt corpus gets a new key); Hub datasets by
    id, config, revision and the file patterns read.
    """
    ident: dict = {
        "source": cfg.source,
        "langs": [cfg.source_lang, cfg.target_lang],
        "fields": [cfg.source_field, cfg.target_field],
        "splits": [cfg.train_split, cfg.validation_split, cfg.test_split],
        "caps": [cfg.max_train_examples, cfg.max_eval_examples, cfg.holdout_size],
    }
    if cfg.source == "hub":
        local = local_hub_dir(cfg, root)
        ident["hub"] = [cfg.hub_id, cfg.hub_config, cfg.hub_revision]
        if cfg.hub_data_files:  # read as files; a capped train split is a row-group sample
            ident["hub_files"] = sorted(cfg.hub_data_files.items())
            ident["sampler"] = HUB_SAMPLER_VERSION
        if local is not None:
            files = sorted(p for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts)
            ident["files"] = [_file_stamp(p) for p in files]
    else:
        ident["format"] = cfg.format if cfg.source == "local" else "jsonl.gz"
        ident["files"] = [_file_stamp(p) for p in _corpus_files(cfg, root)]
    return ident


def _corpus_files(cfg: DataConfig, root: Path) -> list[Path]:
    if cfg.source == "embedded":
        return [p for p in embedded_files(cfg, root).values() if p.exists()]
    return [p for paths in local_files(cfg, root).values() for p in paths]


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]
