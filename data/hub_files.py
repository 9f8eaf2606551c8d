"""Hub datasets read as the Parquet files that `data.hub_data_files` names.

Script-based Hub repositories (IWSLT/iwslt2017, EdinburghNLP/xsum) cannot be loaded by
datasets>=4; their Parquet conversion on the `refs/convert/parquet` branch lays each config out
as `{config}/{split}/0000.parquet`, which `load_dataset(id, config)` does not resolve. Naming the
files by glob (split -> pattern, relative to the repository root at `hub_revision`) reads exactly
those files, on the Hub or in a local folder laid out the same way (`hub_id` naming a folder):
the two differ only in the `Repo` that lists, downloads and opens files.

With `max_train_examples`, the training split is not downloaded whole: the Parquet footers
(a few KB each) give every row group's size, a seeded choice of row groups spread over the whole
split covers the cap, and only those byte ranges are read. The sample is kept under
`{cache_dir}/hub-samples/`, so a rerun (online or offline) reads nothing from the Hub. The
resolved file list is kept under `{cache_dir}/hub-files/`, so that an offline run can find files
that an online one has downloaded.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import BinaryIO, Optional
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from data.config import DataConfig, resolve
from data.errors import DataError
from data.local_files import load_packaged
from data.splits import RawSplits, split_names

log = logging.getLogger(__name__)

SAMPLER_VERSION = 1  # bump when the choice of row groups changes: old samples are ignored
READ_THREADS = 8  # row groups fetched at once (one range request each on the Hub)


# ---- where the files are -------------------------------------------------------------------

class LocalRepo:
    """A folder laid out like the Hub repository (what the tests build)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.name = str(folder)

    def list_files(self) -> dict[str, int]:
        """Relative posix path -> size in bytes, of every file."""
        return {p.relative_to(self.folder).as_posix(): p.stat().st_size
                for p in sorted(self.folder.rglob("*")) if p.is_file() and ".cache" not in p.parts}

    def local_path(self, rel: str) -> str:
        return str(self.folder / rel)

    def open(self, rel: str, size: Optional[int] = None) -> BinaryIO:
        return open(self.folder / rel, "rb")

    def stamp(self, rel: str, size: Optional[int]) -> list:
        st = (self.folder / rel).stat()
        return [rel, st.st_size, st.st_mtime_ns]


class HubRepo:
    """A dataset repository on the Hugging Face Hub at one revision (a branch, tag or commit)."""

    def __init__(self, repo_id: str, revision: Optional[str], offline: bool = False):
        self.repo_id, self.revision, self.offline = repo_id, revision or "main", offline
        self.name = f"{repo_id}@{self.revision}"

    def list_files(self) -> dict[str, int]:
        return _hub_list_files(self.repo_id, self.revision)

    def local_path(self, rel: str) -> str:
        """The whole file, downloaded once into the Hugging Face cache (or found there offline)."""
        return _hub_download(self.repo_id, rel, self.revision, local_only=self.offline)

    def open(self, rel: str, size: Optional[int] = None) -> BinaryIO:
        """Random access for footers and row groups: the cached file, or HTTP range requests."""
        return _hub_open(self.repo_id, rel, self.revision, size)

    def stamp(self, rel: str, size: Optional[int]) -> list:
        return [rel, size]  # a regenerated branch changes sizes (and the listing is re-read online)


# The three calls that touch the Hub (tests replace them with a Hub served from a folder).

def _hub_list_files(repo_id: str, revision: str) -> dict[str, int]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        entries = HfApi().list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
        return {e.path: int(e.size) for e in entries if getattr(e, "size", None) is not None}
    except RevisionNotFoundError:
        raise FileNotFoundError(f"the dataset has no revision {revision!r}") from None
    except GatedRepoError:
        raise FileNotFoundError("it is gated: accept its terms on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError("no such dataset repository on the Hub") from None
    except OfflineModeIsEnabled as e:
        raise ConnectionError(str(e)) from None


def _is_network_error(e: BaseException) -> bool:
    """OSError, or the HTTP client's own transport errors (not OSErrors)."""
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")


def _hub_download(repo_id: str, filename: str, revision: str, local_only: bool = False) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, local_files_only=local_only)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise ConnectionError(f"{filename} is not in the Hugging Face cache ({type(e).__name__})") from None


def _hub_open(repo_id: str, filename: str, revision: str, size: Optional[int]) -> BinaryIO:
    from huggingface_hub import HfFileSystem, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type="dataset")
    if isinstance(cached, str):
        return open(cached, "rb")
    # cache_type="none": every read is one exact range request, never a 5 MB read-ahead block.
    path = f"datasets/{repo_id}@{quote(revision, safe='')}/{filename}"
    return HfFileSystem().open(path, "rb", cache_type="none", **({"size": size} if size else {}))


# ---- the loader ----------------------------------------------------------------------------

def load_hub_files(cfg: DataConfig, root: Path, local: Optional[Path], offline: bool) -> RawSplits:
    """The splits of `cfg.hub_data_files`, from the Hub (or the local folder `local`)."""
    repo = LocalRepo(local) if local is not None else HubRepo(cfg.hub_id, cfg.hub_revision, offline)
    try:
        return _load(cfg, root, repo, offline)
    except (DataError, FileNotFoundError, ConnectionError):
        raise
    except Exception as e:  # the Hub went away mid-load (after the up-front probe succeeded)
        if isinstance(repo, HubRepo) and _is_network_error(e):
            raise ConnectionError(f"{type(e).__name__}: {e}") from None
        raise


def _load(cfg: DataConfig, root: Path, repo, offline: bool) -> RawSplits:
    files, sizes = resolve_files(cfg, root, repo, offline)
    out: RawSplits = {}
    for canon, name in split_names(cfg).items():
        rels = files.get(name)
        if not rels:
            continue  # a missing validation split is held out of train; test is optional
        if canon == "train" and cfg.max_train_examples:
            path = sample_path(cfg, root, repo, rels, sizes)
            if not path.is_file():
                if offline and isinstance(repo, HubRepo):
                    raise ConnectionError(f"no cached sample of {cfg.max_train_examples} training rows")
                write_sample(repo, rels, sizes, cfg.max_train_examples, path)
            paths: list[str] = [str(path)]
        else:
            paths = [repo.local_path(rel) for rel in rels]
        loaded = load_packaged("parquet", {canon: paths}, cfg, root)
        out[canon] = (loaded[canon], f"{cfg.hub_id}[{name}]")
    return out


def resolve_files(cfg: DataConfig, root: Path, repo, offline: bool) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Split name -> its files (sorted), and every file's size. Offline, the list an online run
    saved is used; a training split that matches nothing is an error naming what is there."""
    manifest = resolve(cfg.cache_dir, root) / "hub-files" / f"{_key([repo.name, cfg.hub_data_files])}.json"
    if offline and isinstance(repo, HubRepo):
        if not manifest.is_file():
            raise ConnectionError(f"the file list of {repo.name} was never fetched")
        saved = json.loads(manifest.read_text())
        return saved["files"], saved["sizes"]
    listing = repo.list_files()
    files = {split: sorted(p for p in listing if fnmatch.fnmatchcase(p, pattern))
             for split, pattern in cfg.hub_data_files.items()}
    # Every split read needs files: the training split always, the others when a pattern names them.
    for split in split_names(cfg).values():
        pattern = cfg.hub_data_files.get(split)
        if files.get(split) or (pattern is None and split != cfg.train_split):
            continue
        near = sorted(p for p in listing if p.endswith(".parquet"))[:12] or sorted(listing)[:12]
        raise DataError(
            f"The Hugging Face dataset {repo.name} has no file matching "
            + (f"data.hub_data_files.{split}={pattern!r}" if pattern else f"a data.hub_data_files entry for {split!r}")
            + f"; its Parquet files include {near}. Fix data.hub_data_files (configs/data/{cfg.name}.yaml "
            f"states the layout it expects) or data.hub_revision."
        )
    sizes = {p: listing[p] for ps in files.values() for p in ps}
    if isinstance(repo, HubRepo):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"files": files, "sizes": sizes}, indent=1))
        os.replace(tmp, manifest)
    return files, sizes


def sample_path(cfg: DataConfig, root: Path, repo, rels: list[str], sizes: dict[str, int]) -> Path:
    key = _key([repo.name, [repo.stamp(r, sizes.get(r)) for r in rels], cfg.max_train_examples, SAMPLER_VERSION])
    return resolve(cfg.cache_dir, root) / "hub-samples" / f"{cfg.name}-{key}.parquet"


def choose_row_groups(counts: list[list[int]], cap: int, seed: int = 0) -> list[tuple[int, int]]:
    """(file, row group) pairs, in corpus order, holding at least `cap` rows: row groups taken
    in a seeded random order, so the sample spans the whole split (corpora are ordered by origin)."""
    units = [(f, g) for f, groups in enumerate(counts) for g in range(len(groups))]
    order = random.Random(seed).sample(units, len(units))
    chosen, rows = [], 0
    for f, g in order:
        if rows >= cap:
            break
        chosen.append((f, g))
        rows += counts[f][g]
    return sorted(chosen)


def write_sample(repo, rels: list[str], sizes: dict[str, int], cap: int, out: Path) -> None:
    """Read the footers, then only the chosen row groups, and write them to `out` (Parquet)."""
    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        metas = list(pool.map(lambda rel: _footer(repo, rel, sizes.get(rel)), rels))
        counts = [[md.row_group(g).num_rows for g in range(md.num_row_groups)] for md in metas]
        chosen = choose_row_groups(counts, cap)
        total_rows = sum(map(sum, counts))
        log.info(
            "%s: max_train_examples=%d: reading %d of %d row groups (%d of %d rows, %.0f of %.0f MB) "
            "instead of the whole training split.", repo.name, cap, len(chosen), sum(map(len, counts)),
            sum(counts[f][g] for f, g in chosen), total_rows,
            sum(_group_bytes(metas[f], g) for f, g in chosen) / 1e6, sum(sizes.get(r, 0) for r in rels) / 1e6)

        def read(unit: tuple[int, int]) -> pa.Table:
            f, g = unit
            with repo.open(rels[f], sizes.get(rels[f])) as handle:
                return pq.ParquetFile(handle, metadata=metas[f], pre_buffer=True).read_row_group(g)

        tables = list(pool.map(read, chosen))
    schema = tables[0].schema
    table = pa.concat_tables([t.cast(schema) if t.schema != schema else t for t in tables])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp)  # keeps the schema metadata: datasets' features (Translation, ...)
    os.replace(tmp, out)


def _footer(repo, rel: str, size: Optional[int]) -> pq.FileMetaData:
    try:
        with repo.open(rel, size) as handle:
            return pq.ParquetFile(handle).metadata
    except (pa.ArrowInvalid, OSError) as e:
        if isinstance(e, ConnectionError):
            raise
        raise DataError(f"{repo.name}/{rel} is not a readable Parquet file ({type(e).__name__}: {e}).") from None


def _group_bytes(md: pq.FileMetaData, g: int) -> int:
    group = md.row_group(g)
    return sum(group.column(c).total_compressed_size for c in range(group.num_columns))


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
