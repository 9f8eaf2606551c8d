"""Prepare (download, tokenize, cache) a dataset ahead of training: `python -m train.prepare`.

    python -m train.prepare                                  # the default, data=bible_en_es
    python -m train.prepare data=wmt14_de_en data.vocab_size=16000

Takes the same Hydra overrides as `python -m train`, so it fills exactly the cache that
the training run will read. Run it once before a sweep: the jobs then only read the cache
(concurrent first-time preparation is safe, as jobs wait on a lock, but wasteful).
Prints the split statistics, the packing efficiency of the training batches and the
cache folder.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from data.config import DataConfig
from data.errors import DataError
from data.packing import PackedBatches
from data.pipeline import prepare
from train.config import REPO_ROOT, compose, to_config


def main(cfg: DataConfig, root: Path) -> dict:
    """Prepare `cfg`'s data under `root`, print a summary, and return the stats."""
    data = prepare(cfg, root)
    eff = PackedBatches(data.splits["train"], cfg, seed=0).efficiency
    summary = {
        "name": cfg.name,
        "vocab_size": data.vocab_size,
        "cache_dir": str(data.cache_dir),
        "packing": {k: round(v, 4) if isinstance(v, float) else v for k, v in eff.items()},
        **data.stats,
    }
    print(json.dumps(summary, indent=2))
    print(
        f"\n{cfg.name}: train packs into {eff['batches_per_epoch']} batches/epoch of "
        f"{eff['rows']}x({cfg.max_source_len}+{cfg.max_target_len}) tokens at "
        f"{eff['tokens']:.1%} real tokens; cache {data.cache_dir}"
    )
    return summary


def _compose(overrides: list[str]) -> DataConfig:
    """The data section of the full Hydra config (same composition as `python -m train`)."""
    return to_config(compose(overrides)).data


if __name__ == "__main__":
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data_cfg = _compose(sys.argv[1:])
    except (ValueError, HydraException, OmegaConfBaseException) as e:  # ConfigError, bad overrides
        sys.exit(f"error: {e}")
    try:
        main(data_cfg, REPO_ROOT)
    except DataError as e:  # bad input: the message says what to do, no traceback needed
        sys.exit(f"error: {e}")
