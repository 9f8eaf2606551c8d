"""Your own files under data.path: parallel text, or jsonl/csv/tsv/parquet with named columns.

Plain parallel text is read here, not by datasets, so that mismatched line counts and invalid
UTF-8 are reported with file names and line numbers. The other formats go through datasets'
packaged loaders (also used for the embedded corpus), after a UTF-8 check of their own.
"""

from __future__ import annotations

import codecs
import csv
import gzip
from pathlib import Path
from typing import BinaryIO, Optional, Union

import datasets

from data.config import DataConfig, resolve
from data.errors import DataError
from data.splits import RawSplits, split_names

LOCAL_EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "tsv": "tsv", "parquet": "parquet"}
TEXT_EXTENSIONS = ("", ".gz")


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


def local_files(cfg: DataConfig, root: Path) -> dict[str, list[Path]]:
    """The files of each present split; raises for a missing train or validation split."""
    folder = _local_folder(cfg, root)
    out: dict[str, list[Path]] = {}
    for canon, name in split_names(cfg).items():
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
        names = sorted(p.name for p in folder.iterdir())
        langs = sorted({n.split(".")[1] for n in names if n.startswith(f"{name}.") and n.count(".") >= 1} - {"gz"})
        hint = (f" The {name} files there are in {', '.join(langs)}: set data.source_lang / data.target_lang "
                f"to two of them." if cfg.format == "text" and langs else "")
        raise DataError(
            f"data=local: the {canon} split needs {' and '.join(missing)} (optionally .gz) in "
            f"{folder}, which has {names[:20]}. Add the file"
            f"{'s' if len(missing) > 1 else ''} or set data.{canon}_split / data.format.{hint}"
        )
    return out


def load_local(cfg: DataConfig, root: Path) -> RawSplits:
    """The splits under data.path in data.format; text pairs are already source/target."""
    files = local_files(cfg, root)
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
    loaded = load_packaged(builder, present, cfg, root)
    return {canon: (loaded[canon], present[canon]) for canon in present}


def load_packaged(builder: str, files: dict[str, Union[str, list[str]]], cfg: DataConfig,
                  root: Path) -> datasets.DatasetDict:
    """datasets' json/csv/parquet loaders (one file or a list per split); their Arrow cache lives
    in the project cache dir."""
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
        names = [p for paths in files.values() for p in ([paths] if isinstance(paths, str) else paths)]
        fmt = cfg.format if cfg.source == "local" else builder
        raise DataError(
            f"Could not read {', '.join(names[:6])}{' ...' if len(names) > 6 else ''} as {fmt}: "
            f"{type(cause).__name__}: {str(cause)[:300]}. Check the file format or set data.format."
        ) from None


def _open_bytes(path: Path) -> BinaryIO:
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
