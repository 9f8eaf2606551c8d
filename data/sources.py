"""Where sentence pairs come from: the embedded corpus, the Hugging Face Hub, or local files.

Every source ends as a `datasets.DatasetDict` with splits `train`, `validation` and, when the
corpus has one, `test`; each with string columns `source` and `target`, plus `id` and
`alignment` where the corpus has them. Everything goes through HF `datasets` loaders except
plain parallel text files, which are read here so that mismatched line counts and invalid
UTF-8 can be reported with file names and line numbers.

A corpus without a validation split gets one carved from train: `cfg.holdout_size` pairs
picked with a fixed seed, with a logged warning (deterministic, so every run of a sweep
sees the same split).
"""

from __future__ import annotations

import codecs
import concurrent.futures
import contextlib
import csv
import gzip
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import datasets

from data.config import DataConfig
from data.errors import DataError

log = logging.getLogger(__name__)

REBUILD_COMMAND = "python -m data.build_bible_corpus --out data/corpora/bible_en_es"
HUB_PROBE_TIMEOUT_S = 3.0  # a reachable Hub answers a TCP connect well within this
CANONICAL = ("train", "validation", "test")
LOCAL_EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "tsv": "tsv", "parquet": "parquet"}
TEXT_EXTENSIONS = ("", ".gz")


# --------------------------------------------------------------------------- public API


def load_splits(cfg: DataConfig, root: Path) -> datasets.DatasetDict:
    """Load the corpus named by `cfg` as train/validation[/test] with `source`/`target` columns."""
    if cfg.source == "embedded":
        raw = _load_embedded(cfg, root)
    elif cfg.source == "hub":
        raw = _load_hub(cfg, root)
    elif cfg.source == "local":
        raw = _load_local(cfg, root)
    else:  # DataConfig.validate rejects this first; kept for callers that skip it
        raise DataError(f"data.source={cfg.source!r} must be embedded, hub or local.")
    splits = {name: _standardize(ds, cfg, name, where) for name, (ds, where) in raw.items()}
    splits = _ensure_validation(splits, cfg)
    splits = _apply_caps(splits, cfg)
    return datasets.DatasetDict(splits)


def corpus_identity(cfg: DataConfig, root: Path) -> dict:
    """What determines the loaded pairs, cheap to compute: the key of every on-disk cache.

    Files count by path, size and mtime (a rebuilt corpus gets a new key); Hub datasets by
    id, config and revision.
    """
    ident: dict = {
        "source": cfg.source,
        "langs": [cfg.source_lang, cfg.target_lang],
        "fields": [cfg.source_field, cfg.target_field],
        "splits": [cfg.train_split, cfg.validation_split, cfg.test_split],
        "caps": [cfg.max_train_examples, cfg.max_eval_examples, cfg.holdout_size],
    }
    if cfg.source == "hub":
        local = _local_hub_dir(cfg, root)
        ident["hub"] = [cfg.hub_id, cfg.hub_config, cfg.hub_revision]
        if local is not None:
            files = sorted(p for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts)
            ident["files"] = [_file_stamp(p) for p in files]
    else:
        ident["format"] = cfg.format if cfg.source == "local" else "jsonl.gz"
        ident["files"] = [_file_stamp(p) for p in _corpus_files(cfg, root)]
    return ident


def resolve(path: str, root: Path) -> Path:
    """Relative config paths are relative to the repository root, not the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


# --------------------------------------------------------------------------- embedded


def _embedded_files(cfg: DataConfig, root: Path) -> dict[str, Path]:
    folder = resolve(cfg.path or "data/corpora/bible_en_es", root)
    names = _split_names(cfg)
    return {canon: folder / f"{name}.jsonl.gz" for canon, name in names.items()}


def _load_embedded(cfg: DataConfig, root: Path) -> dict:
    files = _embedded_files(cfg, root)
    for canon, path in files.items():
        if not path.exists():
            if canon == "test":
                continue
            raise DataError(
                f"The embedded corpus file {path} is missing. Rebuild it from the repository root "
                f"with `{REBUILD_COMMAND}` (see data/corpora/bible_en_es/README.md)."
            )
    present = {canon: str(p) for canon, p in files.items() if p.exists()}
    loaded = _load_packaged("json", present, cfg, root)
    return {canon: (loaded[canon], present[canon]) for canon in present}


# --------------------------------------------------------------------------- Hugging Face Hub


def _local_hub_dir(cfg: DataConfig, root: Path) -> Optional[Path]:
    """A hub_id naming a folder (absolute, or relative to the repo root) is a Hub-like dataset on
    disk: load_dataset takes it through the same code path, without any network access."""
    path = Path(cfg.hub_id or "").expanduser()
    path = path if path.is_absolute() else Path(root) / path
    return path if cfg.hub_id and path.is_dir() else None


def _load_hub(cfg: DataConfig, root: Path) -> dict:
    local = _local_hub_dir(cfg, root)
    target = str(local) if local is not None else cfg.hub_id
    offline_reason = None
    if local is None:
        offline_reason = _offline_reason()
    what = f"{cfg.hub_id!r}" + (f" (config {cfg.hub_config!r})" if cfg.hub_config else "")
    try:
        with _forced_offline(offline_reason is not None):
            loaded = datasets.load_dataset(target, cfg.hub_config, revision=cfg.hub_revision)
    except (ConnectionError, TimeoutError) as e:
        reason = offline_reason or f"the Hub could not be reached ({type(e).__name__})"
        raise DataError(
            f"Cannot load the Hugging Face dataset {what}: {reason}, and it is not in the local "
            f"cache ({datasets.config.HF_DATASETS_CACHE}). Run `python -m data.prepare "
            f"data={cfg.name}` once with network access to cache it, or train on your own files "
            f"with data=local data.path=DIR."
        ) from None
    except FileNotFoundError as e:  # includes datasets' DatasetNotFoundError
        extra = f" The Hub is unreachable ({offline_reason}), so only the cache was searched." if offline_reason else ""
        raise DataError(
            f"The Hugging Face dataset {what} was not found: {e}.{extra} Check data.hub_id and "
            f"data.hub_config, or use data=local data.path=DIR."
        ) from None
    except ValueError as e:  # e.g. an unknown config name; the message lists the valid ones
        if isinstance(e, DataError):
            raise
        raise DataError(f"Cannot load the Hugging Face dataset {what}: {e}") from None
    except RuntimeError as e:
        if "scripts are no longer supported" in str(e):
            raise DataError(
                f"The Hugging Face dataset {what} is script-based, which datasets>=4 cannot run. "
                f"Load its Parquet export with data.hub_revision=refs/convert/parquet."
            ) from None
        raise
    if isinstance(loaded, datasets.Dataset):  # a single-split folder
        loaded = datasets.DatasetDict({"train": loaded})
    out = {}
    for canon, name in _split_names(cfg).items():
        if name in loaded:
            out[canon] = (loaded[name], f"{cfg.hub_id}[{name}]")
        elif canon == "train":
            raise DataError(
                f"The Hugging Face dataset {what} has no split {name!r} (it has {sorted(loaded)}); "
                f"set data.train_split to one of them."
            )
        elif canon == "validation" and cfg.validation_split not in (None, ""):
            log.info("%s has no split %r; a validation set will be held out of train.", what, name)
    return out


def _offline_reason() -> Optional[str]:
    """Why the Hub cannot be used right now, or None; decided in seconds, never by retrying."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}=1 is set"
    import huggingface_hub.constants as hub_constants

    url = urlparse(hub_constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)

    def connect() -> None:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            pass

    # getaddrinfo ignores socket timeouts, so the probe runs in a thread we can stop waiting for.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=HUB_PROBE_TIMEOUT_S + 1)
        return None
    except concurrent.futures.TimeoutError:
        return f"no answer from {host}:{port} within {HUB_PROBE_TIMEOUT_S:.0f}s"
    except OSError as e:
        return f"{host}:{port} is unreachable ({e.strerror or e})"
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def _forced_offline(enabled: bool) -> Iterator[None]:
    """Offline mode for one load: datasets then reads its cache and fails at once otherwise.

    Both libraries read HF_HUB_OFFLINE at import time, so the module flags are switched
    rather than the environment; without this an unreachable Hub costs ~25 s of retries.
    """
    if not enabled:
        yield
        return
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


# --------------------------------------------------------------------------- local files


def _local_folder(cfg: DataConfig, root: Path) -> Path:
    folder = resolve(cfg.path, root)
    if not folder.is_dir():
        raise DataError(f"data.path={cfg.path!r} resolves to {folder}, which is not a folder.")
    return folder


def _find(folder: Path, stem: str) -> Optional[Path]:
    for ext in TEXT_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def _local_files(cfg: DataConfig, root: Path) -> dict[str, list[Path]]:
    """The files of each present split; raises for a missing train or validation split."""
    folder = _local_folder(cfg, root)
    out: dict[str, list[Path]] = {}
    for canon, name in _split_names(cfg).items():
        if cfg.format == "text":
            stems = [f"{name}.{cfg.source_lang}", f"{name}.{cfg.target_lang}"]
        else:
            stems = [f"{name}.{LOCAL_EXTENSIONS[cfg.format]}"]
        found = [_find(folder, stem) for stem in stems]
        if all(found):
            out[canon] = found
            continue
        if canon == "test" or (canon == "validation" and cfg.holdout_size > 0 and not any(found)):
            continue  # optional test; validation can be held out of train (logged later)
        missing = [s for s, f in zip(stems, found) if f is None]
        raise DataError(
            f"data=local: the {canon} split needs {' and '.join(missing)} (optionally .gz) in "
            f"{folder}, which has {sorted(p.name for p in folder.iterdir())[:20]}. Add the file"
            f"{'s' if len(missing) > 1 else ''} or set data.{canon}_split / data.format."
        )
    return out


def _load_local(cfg: DataConfig, root: Path) -> dict:
    files = _local_files(cfg, root)
    if cfg.format == "text":
        out = {}
        for canon, (src_path, tgt_path) in files.items():
            src, tgt = _read_lines(src_path), _read_lines(tgt_path)
            if len(src) != len(tgt):
                raise DataError(
                    f"Parallel files differ in length: {src_path} has {len(src)} lines but "
                    f"{tgt_path} has {len(tgt)}. Line i of one must translate line i of the other."
                )
            ds = datasets.Dataset.from_dict({"source": src, "target": tgt})
            out[canon] = (ds, f"{src_path} + {tgt_path}")
        return out
    for paths in files.values():
        if cfg.format != "parquet":
            _check_utf8(paths[0])
    present = {canon: str(paths[0]) for canon, paths in files.items()}
    builder = {"jsonl": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}[cfg.format]
    loaded = _load_packaged(builder, present, cfg, root)
    return {canon: (loaded[canon], present[canon]) for canon in present}


def _load_packaged(builder: str, files: dict[str, str], cfg: DataConfig, root: Path) -> datasets.DatasetDict:
    """datasets' json/csv/parquet loaders; their Arrow cache lives in the project cache dir."""
    kwargs: dict = {"cache_dir": str(resolve(cfg.cache_dir, root) / "hf")}
    if builder == "csv":
        # Keep text as text: no NaN for empty cells, no quote handling in TSV (quotes are words).
        kwargs["na_filter"] = False
        if cfg.format == "tsv":
            kwargs.update(sep="\t", quoting=csv.QUOTE_NONE)
    try:
        return datasets.load_dataset(builder, data_files=files, **kwargs)
    except Exception as e:  # a parse error deep in pyarrow/pandas: name the files
        cause = e.__cause__ or e
        raise DataError(
            f"Could not read {', '.join(files.values())} as {cfg.format}: {type(cause).__name__}: "
            f"{str(cause)[:300]}. Check the file format or set data.format."
        ) from None


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (.gz accepted), split on \\n only (not on U+2028 etc.)."""
    lines = []
    with _open_bytes(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as e:
                raise _utf8_error(path, lineno, raw, e) from None
    return lines


def _check_utf8(path: Path) -> None:
    """Fail with file and line number on invalid UTF-8; one fast pass, line scan only on error."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_bytes(path) as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return
    except UnicodeDecodeError:
        pass
    _read_lines(path)  # raises with the line number


def _utf8_error(path: Path, lineno: int, raw: bytes, e: UnicodeDecodeError) -> DataError:
    return DataError(
        f"{path}: line {lineno} is not valid UTF-8 (bytes {raw[e.start:e.start + 4]!r} at column "
        f"{e.start}). Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
    )


def _corpus_files(cfg: DataConfig, root: Path) -> list[Path]:
    if cfg.source == "embedded":
        return [p for p in _embedded_files(cfg, root).values() if p.exists()]
    return [p for paths in _local_files(cfg, root).values() for p in paths]


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


# --------------------------------------------------------------------------- shared steps


def _split_names(cfg: DataConfig) -> dict[str, str]:
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


def _standardize(ds: datasets.Dataset, cfg: DataConfig, split: str, where: str) -> datasets.Dataset:
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


def _ensure_validation(splits: dict, cfg: DataConfig) -> dict:
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


def _apply_caps(splits: dict, cfg: DataConfig) -> dict:
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
