"""Datasets from the Hugging Face Hub (or a Hub-like folder on disk).

Two ways in: `datasets.load_dataset(hub_id, hub_config)` for repositories of data files, and,
when `data.hub_data_files` names them, the Parquet files themselves (data/hub_files.py: the
Parquet conversion of script-based repositories, and capped training splits read in part).
An unreachable Hub is detected up front (a TCP probe of a few seconds), and the load then
runs in offline mode so that it reads the cache or fails at once instead of retrying.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import datasets

from data.config import DataConfig
from data.errors import DataError
from data.splits import RawSplits, split_names

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0  # a reachable Hub answers a TCP connect well within this


def local_hub_dir(cfg: DataConfig, root: Path) -> Optional[Path]:
    """A hub_id naming a folder (absolute, or relative to the repo root) is a Hub-like dataset on
    disk: load_dataset takes it through the same code path, without any network access."""
    path = Path(cfg.hub_id or "").expanduser()
    path = path if path.is_absolute() else Path(root) / path
    return path if cfg.hub_id and path.is_dir() else None


def load_hub(cfg: DataConfig, root: Path) -> RawSplits:
    """The splits `cfg` names; a missing validation split is left for ensure_validation."""
    local = local_hub_dir(cfg, root)
    target = str(local) if local is not None else cfg.hub_id
    offline_reason = None
    if local is None:
        offline_reason = _offline_reason()
    what = f"{cfg.hub_id!r}" + (
        f" (revision {cfg.hub_revision!r})" if cfg.hub_data_files and cfg.hub_revision
        else f" (config {cfg.hub_config!r})" if cfg.hub_config else "")
    try:
        with _forced_offline(offline_reason is not None):
            if cfg.hub_data_files:
                from data.hub_files import load_hub_files

                return load_hub_files(cfg, root, local, offline=offline_reason is not None)
            loaded = datasets.load_dataset(target, cfg.hub_config, revision=cfg.hub_revision)
    except (ConnectionError, TimeoutError) as e:
        reason = offline_reason or f"the Hub could not be reached ({type(e).__name__})"
        raise DataError(
            f"Cannot load the Hugging Face dataset {what}: {reason}, and it is not in the local "
            f"cache ({datasets.config.HF_DATASETS_CACHE}). Run `python -m train.prepare "
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
                f"Read its Parquet conversion instead: data.hub_revision=refs/convert/parquet and "
                f"data.hub_data_files naming its files (configs/data/iwslt2017_de_en.yaml shows how)."
            ) from None
        raise
    if isinstance(loaded, datasets.Dataset):  # a single-split folder
        loaded = datasets.DatasetDict({"train": loaded})
    out = {}
    for canon, name in split_names(cfg).items():
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
    rather than the environment; without this an unreachable Hub costs many seconds of retries.
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
