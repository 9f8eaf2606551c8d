"""The corpus shipped with the repository: data/corpora/bible_en_es/{split}.jsonl.gz."""

from __future__ import annotations

from pathlib import Path

from data.config import DataConfig, resolve
from data.errors import DataError
from data.local_files import load_packaged
from data.splits import RawSplits, split_names

REBUILD_COMMAND = "python -m data.build_bible_corpus --out data/corpora/bible_en_es"


def embedded_files(cfg: DataConfig, root: Path) -> dict[str, Path]:
    """Canonical split -> its file (which may be missing; test is optional)."""
    folder = resolve(cfg.path or "data/corpora/bible_en_es", root)
    names = split_names(cfg)
    return {canon: folder / f"{name}.jsonl.gz" for canon, name in names.items()}


def load_embedded(cfg: DataConfig, root: Path) -> RawSplits:
    """Its splits; a missing train or validation file is an error naming the rebuild command."""
    files = embedded_files(cfg, root)
    for canon, path in files.items():
        if not path.exists():
            if canon == "test":
                continue
            raise DataError(
                f"The embedded corpus file {path} is missing. Rebuild it from the repository root "
                f"with `{REBUILD_COMMAND}` (see data/corpora/bible_en_es/README.md)."
            )
    present = {canon: str(p) for canon, p in files.items() if p.exists()}
    loaded = load_packaged("json", present, cfg, root)
    return {canon: (loaded[canon], present[canon]) for canon in present}
