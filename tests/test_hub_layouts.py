"""Every Hub config of configs/data/ loads the data its header names, from a folder laid out
exactly as the Hub serves it: the same file names and folders, column names and types (with
the `huggingface` schema metadata datasets writes), read through the same code path as the Hub
(`hub_id` naming the folder instead of a repository). A layout the config does not match fails
here, not for the user. Then: the Hub-side calls (repository, revision, file names), a capped
training split read in part, and offline behaviour.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import data.hub
from data import hub_files
from data.config import DataConfig
from data.errors import DataError
from data.sources import load_splits
from tests.conftest import REPO_ROOT

datasets.disable_progress_bars()


def config(name: str, **overrides) -> DataConfig:
    """The shipped configs/data/{name}.yaml as the trainer sees it."""
    fields = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "configs" / "data" / f"{name}.yaml"))
    return dataclasses.replace(DataConfig(**fields), **overrides).validate()


def translation_table(rows: list[tuple[str, str]], langs=("de", "en")) -> pa.Table:
    """A `translation` column as datasets' Translation feature writes it: a struct of strings,
    with the feature recorded in the schema's `huggingface` metadata."""
    struct = pa.struct([(lang, pa.string()) for lang in langs])
    features = {"translation": {"languages": list(langs), "_type": "Translation"}}
    schema = pa.schema([("translation", struct)],
                       metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    return pa.table({"translation": pa.array([dict(zip(langs, r)) for r in rows], type=struct)}, schema=schema)


def string_table(columns: dict[str, list[str]]) -> pa.Table:
    features = {c: {"dtype": "string", "_type": "Value"} for c in columns}
    schema = pa.schema([(c, pa.string()) for c in columns],
                       metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    return pa.table(columns, schema=schema)


def pairs(tag: str, n: int) -> list[tuple[str, str]]:
    return [(f"{tag} Satz {i}.", f"{tag} sentence {i}.") for i in range(n)]


def docs(tag: str, n: int, article: str, summary: str) -> pa.Table:
    return string_table({article: [f"{tag} article {i}. It rained." for i in range(n)],
                         summary: [f"{tag} summary {i}." for i in range(n)], "id": [f"{tag}{i}" for i in range(n)]})


SIZES = {"train": 30, "validation": 4, "test": 5}

# The Hub layout of each config: path in the repository -> table. Each also holds a decoy
# (another config or language pair of the same repository) that must never be read.
LAYOUTS = {
    # IWSLT/iwslt2017, branch refs/convert/parquet
    "iwslt2017_de_en": lambda: {
        **{f"iwslt2017-de-en/{s}/0000.parquet": translation_table(pairs(s, n)) for s, n in SIZES.items()},
        **{f"iwslt2017-en-de/{s}/0000.parquet": translation_table(pairs("decoy", 3), ("en", "de")) for s in SIZES},
    },
    # EdinburghNLP/xsum, branch refs/convert/parquet
    "xsum": lambda: {f"default/{s}/0000.parquet": docs(s, n, "document", "summary") for s, n in SIZES.items()},
    # wmt/wmt14, main
    "wmt14_de_en": lambda: {
        **{f"de-en/train-0000{i}-of-00003.parquet": translation_table(pairs(f"train{i}", 10)) for i in range(3)},
        "de-en/validation-00000-of-00001.parquet": translation_table(pairs("validation", 4)),
        "de-en/test-00000-of-00001.parquet": translation_table(pairs("test", 5)),
        "fr-en/train-00000-of-00030.parquet": translation_table(pairs("decoy", 3), ("fr", "en")),
    },
    # abisee/cnn_dailymail, main
    "cnn_dailymail": lambda: {
        **{f"3.0.0/train-0000{i}-of-00003.parquet": docs(f"train{i}", 10, "article", "highlights") for i in range(3)},
        "3.0.0/validation-00000-of-00001.parquet": docs("validation", 4, "article", "highlights"),
        "3.0.0/test-00000-of-00001.parquet": docs("test", 5, "article", "highlights"),
        "1.0.0/train-00000-of-00003.parquet": docs("decoy", 3, "article", "highlights"),
    },
}


def build(folder: Path, layout: dict[str, pa.Table], row_group_size: int | None = None) -> Path:
    for rel, table in layout.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / rel, row_group_size=row_group_size)
    return folder


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_config_loads_its_hub_layout(tmp_path: Path, name: str) -> None:
    repo = build(tmp_path / "repo", LAYOUTS[name]())
    cfg = config(name, hub_id=str(repo), cache_dir=str(tmp_path / "cache"), max_train_examples=None)
    dd = load_splits(cfg, tmp_path)
    assert {k: len(v) for k, v in dd.items()} == SIZES
    everything = [t for split in dd.values() for t in list(split["source"]) + list(split["target"])]
    assert not any("decoy" in t for t in everything)
    if cfg.task == "translation":  # German source, English target, from translation{de, en}
        assert dd["test"][0]["source"].endswith("Satz 0.") and dd["test"][0]["target"].endswith("sentence 0.")
    else:
        assert dd["test"][0]["source"] == "test article 0. It rained." and dd["test"][0]["target"] == "test summary 0."
        assert dd["test"][0]["id"] == "test0"


def test_multi30k_layout(tmp_path: Path) -> None:
    """bentrevett/multi30k is three JSON Lines files on main; val.jsonl is the validation split."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for split, n in (("train", 30), ("val", 4), ("test", 5)):
        rows = [{"en": f"{split} sentence {i}.", "de": f"{split} Satz {i}."} for i in range(n)]
        (repo / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dd = load_splits(config("multi30k_de_en", hub_id=str(repo), cache_dir=str(tmp_path / "cache")), tmp_path)
    assert {k: len(v) for k, v in dd.items()} == SIZES
    assert dd["validation"][0] == {"source": "val Satz 0.", "target": "val sentence 0."}


def test_a_layout_mismatch_names_the_files_there(tmp_path: Path) -> None:
    """An earlier layout of the branch (iwslt2017-de-en/iwslt2017-train.parquet) does not match."""
    layout = {f"iwslt2017-de-en/iwslt2017-{s}.parquet": translation_table(pairs(s, 3)) for s in SIZES}
    repo = build(tmp_path / "repo", layout)
    expected = (r"no file matching data\.hub_data_files\.train='iwslt2017-de-en/train/\*\.parquet'"
                r".*iwslt2017-de-en/iwslt2017-train\.parquet")
    with pytest.raises(DataError, match=expected):
        load_splits(config("iwslt2017_de_en", hub_id=str(repo), cache_dir=str(tmp_path / "cache")), tmp_path)


# --------------------------------------------------------------------------- the Hub side


class FakeHub:
    """The three Hub calls of data/hub_files.py, served from a folder and recorded."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch, offline: bool = False):
        self.folder, self.calls = folder, []
        monkeypatch.setattr(data.hub, "_offline_reason", lambda: "HF_HUB_OFFLINE=1 is set" if offline else None)
        monkeypatch.setattr(hub_files, "_hub_list_files", self.list_files)
        monkeypatch.setattr(hub_files, "_hub_download", self.download)
        monkeypatch.setattr(hub_files, "_hub_open", self.open)

    def list_files(self, repo_id, revision):
        self.calls.append(("list", repo_id, revision))
        return hub_files.LocalRepo(self.folder).list_files()

    def download(self, repo_id, filename, revision, local_only=False):
        self.calls.append(("download", repo_id, revision, filename) + (("cache only",) if local_only else ()))
        return str(self.folder / filename)

    def open(self, repo_id, filename, revision, size):
        self.calls.append(("open", repo_id, revision, filename))
        assert size == (self.folder / filename).stat().st_size
        return open(self.folder / filename, "rb")


def test_hub_calls_name_the_repository_revision_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub(build(tmp_path / "hub", LAYOUTS["iwslt2017_de_en"]()), monkeypatch)
    cfg = config("iwslt2017_de_en", cache_dir=str(tmp_path / "cache"))
    dd = load_splits(cfg, tmp_path)
    assert {k: len(v) for k, v in dd.items()} == SIZES
    assert hub.calls == [("list", "IWSLT/iwslt2017", "refs/convert/parquet")] + [
        ("download", "IWSLT/iwslt2017", "refs/convert/parquet", f"iwslt2017-de-en/{s}/0000.parquet")
        for s in ("train", "validation", "test")]


def test_capped_train_split_reads_only_the_row_groups_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wmt14's layout with 6 files of 5 row groups of 20 rows: 50 examples need 3 row groups.
    Rows carry ~10 KB of incompressible text, so that a file (~1 MB) outweighs the 64 KB pyarrow
    reads at its end for the footer, as on the Hub (files of ~270 MB)."""
    rng = random.Random(0)

    def long_pairs(tag: str) -> list[tuple[str, str]]:
        noise = lambda: base64.b64encode(rng.randbytes(3750)).decode()
        return [(f"{tag} Satz {i}. {noise()}", f"{tag} sentence {i}. {noise()}") for i in range(100)]

    layout = {f"de-en/train-0000{i}-of-00006.parquet": translation_table(long_pairs(f"f{i}")) for i in range(6)}
    layout["de-en/validation-00000-of-00001.parquet"] = translation_table(pairs("validation", 4))
    layout["de-en/test-00000-of-00001.parquet"] = translation_table(pairs("test", 5))
    repo = build(tmp_path / "hub", layout, row_group_size=20)
    hub = FakeHub(repo, monkeypatch)
    read: dict[str, int] = {}
    real_open = hub.open

    def counting_open(repo_id, filename, revision, size):
        handle = real_open(repo_id, filename, revision, size)
        inner = handle.read

        def read_counted(n=-1):
            out = inner(n)
            read[filename] = read.get(filename, 0) + len(out)
            return out

        handle.read = read_counted
        return handle

    monkeypatch.setattr(hub_files, "_hub_open", counting_open)
    cfg = config("wmt14_de_en", cache_dir=str(tmp_path / "cache"), max_train_examples=50)
    dd = load_splits(cfg, tmp_path)
    assert {k: len(v) for k, v in dd.items()} == {"train": 50, "validation": 4, "test": 5}
    downloads = [c[3] for c in hub.calls if c[0] == "download"]
    assert downloads == ["de-en/validation-00000-of-00001.parquet", "de-en/test-00000-of-00001.parquet"]
    opens = [c[3] for c in hub.calls if c[0] == "open"]
    assert len(opens) == 6 + 3  # every footer once, then the 3 chosen row groups
    train_bytes = sum((repo / rel).stat().st_size for rel in layout if "train" in rel)  # none downloaded whole
    assert sum(read.values()) < 0.2 * train_bytes, (read, train_bytes)  # 3 of 30 row groups + 6 footers
    sources = {s.split()[0] for s in dd["train"]["source"]}
    assert len(sources) >= 2  # row groups from more than one file: a sample of the whole split

    # A rerun reads the sample from the cache: nothing is opened or downloaded from the Hub.
    hub.calls.clear()
    again = load_splits(cfg, tmp_path)
    assert list(again["train"]["source"]) == list(dd["train"]["source"])
    assert [c for c in hub.calls if c[0] != "download"] == [("list", "wmt/wmt14", "main")]


def test_choose_row_groups_is_seeded_and_covers_the_cap() -> None:
    counts = [[20] * 5 for _ in range(6)]
    chosen = hub_files.choose_row_groups(counts, 50)
    assert chosen == sorted(chosen) and len(chosen) == 3 == len(set(chosen))
    assert chosen == hub_files.choose_row_groups(counts, 50)
    assert len(hub_files.choose_row_groups(counts, 10**6)) == 30


def test_offline_after_an_online_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = build(tmp_path / "hub", LAYOUTS["xsum"](), row_group_size=5)
    cfg = config("xsum", cache_dir=str(tmp_path / "cache"), max_train_examples=12)
    online = load_splits(cfg, tmp_path) if FakeHub(repo, monkeypatch) else None
    hub = FakeHub(repo, monkeypatch, offline=True)
    monkeypatch.setattr(hub_files, "_hub_list_files", lambda *a: pytest.fail("listed the Hub offline"))
    monkeypatch.setattr(hub_files, "_hub_open", lambda *a: pytest.fail("opened a Hub file offline"))
    offline = load_splits(cfg, tmp_path)
    assert list(offline["train"]["source"]) == list(online["train"]["source"]) and len(offline["train"]) == 12
    assert {c[0] for c in hub.calls} == {"download"}  # found in the HF cache (hf_hub_download, offline)
    assert all(c[-1] == "cache only" for c in hub.calls)


@pytest.mark.parametrize("name", ["iwslt2017_de_en", "xsum", "wmt14_de_en"])
def test_offline_without_a_cache_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_files, "_hub_list_files", lambda *a: pytest.fail("listed the Hub offline"))
    cfg = config(name, cache_dir=str(tmp_path / "cache"))
    t0 = time.time()
    with pytest.raises(DataError) as e:
        load_splits(cfg, tmp_path)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert repr(cfg.hub_id) in msg and "_OFFLINE=1 is set" in msg
    assert f"python -m train.prepare data={name}" in msg and "data=local" in msg
