"""data/sources.py: every source and format, and the error message for each kind of bad input."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.config import DataConfig
from data.errors import DataError
from data.pipeline import prepare
from data.sources import corpus_identity, load_splits

datasets.disable_progress_bars()

EN = ["In the beginning was the word.", "He said, \"Let there be light.\"", "And there was light!", "A\u2028line separator stays inside."]
ES = ["En el principio era el verbo.", "Dijo: «Sea la luz».", "¡Y fue la luz!", "Un separador\u2028de línea queda dentro."]


def pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    return [(f"{EN[i % 4]} {i + offset}", f"{ES[i % 4]} {i + offset}") for i in range(n)]


def write_text(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def local_cfg(tmp_path: Path, folder: Path, **kw) -> DataConfig:
    kw.setdefault("source_lang", "en")
    kw.setdefault("target_lang", "es")
    return DataConfig(name="t", source="local", path=str(folder), cache_dir=str(tmp_path / "cache"), **kw)


def make_text_corpus(folder: Path, sizes: dict[str, int], gz: tuple[str, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split, n in sizes.items():
        ps = pairs(n, offset)
        offset += n
        ext = ".gz" if split in gz else ""
        write_text(folder / f"{split}.en{ext}", [p[0] for p in ps])
        write_text(folder / f"{split}.es{ext}", [p[1] for p in ps])


def rows(n: int, offset: int = 0, nested: bool = False) -> list[dict]:
    out = []
    for i, (en, es) in enumerate(pairs(n, offset)):
        row = {"translation": {"en": en, "es": es}} if nested else {"en": en, "es": es}
        out.append({"id": f"ex{i + offset}", **row})
    return out


def write_rows(path: Path, data: list[dict]) -> None:
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data)
        path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(data), path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        cols = list(data[0])
        lines = [sep.join(cols)]
        for r in data:
            vals = [str(r[c]) for c in cols]
            if sep == ",":  # CSV quoting; TSV files carry quotes verbatim
                vals = ['"' + v.replace('"', '""') + '"' for v in vals]
            lines.append(sep.join(vals))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- local formats


@pytest.mark.parametrize("gz", [(), ("train", "validation", "test")])
def test_local_text(tmp_path: Path, gz: tuple) -> None:
    make_text_corpus(tmp_path / "c", {"train": 20, "validation": 5, "test": 4}, gz=gz)
    dd = load_splits(local_cfg(tmp_path, tmp_path / "c", format="text"), tmp_path)
    assert {k: len(v) for k, v in dd.items()} == {"train": 20, "validation": 5, "test": 4}
    assert dd["train"].column_names == ["source", "target"]
    assert dd["train"][3] == {"source": EN[3] + " 3", "target": ES[3] + " 3"}  # U+2028 kept in-line
    assert dd["validation"][0]["source"] == EN[0] + " 20"


@pytest.mark.parametrize("fmt,name", [("jsonl", "jsonl"), ("jsonl", "jsonl.gz"), ("csv", "csv"), ("tsv", "tsv"), ("parquet", "parquet")])
def test_local_tables(tmp_path: Path, fmt: str, name: str) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    for split, (n, off) in {"train": (12, 0), "validation": (3, 12)}.items():
        write_rows(folder / f"{split}.{name}", rows(n, off))
    dd = load_splits(local_cfg(tmp_path, folder, format=fmt), tmp_path)
    assert set(dd) == {"train", "validation"}  # no test files: test is optional
    assert dd["train"][1] == {"source": EN[1] + " 1", "target": ES[1] + " 1", "id": "ex1"}  # quotes intact
    # explicit fields, swapped direction
    dd = load_splits(local_cfg(tmp_path, folder, format=fmt, source_field="es", target_field="en"), tmp_path)
    assert dd["validation"][0]["source"] == ES[0] + " 12"


def test_local_jsonl_translation_dict(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    write_rows(folder / "train.jsonl", rows(12, nested=True))
    write_rows(folder / "validation.jsonl", rows(3, 12, nested=True))
    dd = load_splits(local_cfg(tmp_path, folder, format="jsonl", source_lang="es", target_lang="en"), tmp_path)
    assert dd["train"][0]["source"] == ES[0] + " 0" and dd["train"][0]["target"] == EN[0] + " 0"


def test_missing_validation_is_held_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_text_corpus(tmp_path / "c", {"train": 100})
    cfg = local_cfg(tmp_path, tmp_path / "c", format="text", holdout_size=7)
    with caplog.at_level(logging.WARNING):
        dd = load_splits(cfg, tmp_path)
    assert len(dd["validation"]) == 7 and len(dd["train"]) == 93
    assert not set(dd["train"]["source"]) & set(dd["validation"]["source"])
    assert dd["validation"]["source"] == load_splits(cfg, tmp_path)["validation"]["source"]  # deterministic
    assert "holding out 7" in caplog.text


def test_caps(tmp_path: Path) -> None:
    make_text_corpus(tmp_path / "c", {"train": 50, "validation": 20, "test": 20})
    cfg = local_cfg(tmp_path, tmp_path / "c", format="text", max_train_examples=10, max_eval_examples=5)
    dd = load_splits(cfg, tmp_path)
    assert [len(dd[s]) for s in ("train", "validation", "test")] == [10, 5, 5]
    assert dd["test"]["source"][0] == EN[0] + " 70"  # eval caps keep a prefix


def test_identity_tracks_file_changes(tmp_path: Path) -> None:
    make_text_corpus(tmp_path / "c", {"train": 5, "validation": 2})
    cfg = local_cfg(tmp_path, tmp_path / "c", format="text")
    before = corpus_identity(cfg, tmp_path)
    write_text(tmp_path / "c" / "train.en", ["changed"] * 5)
    assert corpus_identity(cfg, tmp_path) != before


# --------------------------------------------------------------------------- Hub and embedded


def test_hub_like_local_folder(tmp_path: Path) -> None:
    repo = tmp_path / "org_ds"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# A test dataset\n")
    pq.write_table(pa.Table.from_pylist(rows(10, nested=True)), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows(4, 10, nested=True)), repo / "data" / "validation-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows(3, 14, nested=True)), repo / "data" / "test-00000-of-00001.parquet")
    cfg = DataConfig(name="h", source="hub", hub_id=str(repo), cache_dir=str(tmp_path / "cache"))
    dd = load_splits(cfg, tmp_path)
    assert {k: len(v) for k, v in dd.items()} == {"train": 10, "validation": 4, "test": 3}
    assert dd["test"][0] == {"source": EN[0] + " 14", "target": ES[0] + " 14", "id": "ex14"}


def test_hub_summarization_fields(tmp_path: Path) -> None:
    repo = tmp_path / "sum"
    (repo / "data").mkdir(parents=True)
    for split, n in (("train", 8), ("validation", 2)):
        data = [{"article": f"long article {i} " * 5, "highlights": f"summary {i}", "id": str(i)} for i in range(n)]
        write_rows(repo / "data" / f"{split}.jsonl", data)
    cfg = DataConfig(name="s", source="hub", task="summarization", hub_id=str(repo), source_field="article",
                     target_field="highlights", cache_dir=str(tmp_path / "cache"))
    dd = load_splits(cfg, tmp_path)
    assert dd["train"][1]["target"] == "summary 1" and dd["train"][1]["source"].startswith("long article 1")


def test_hub_offline_env_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = DataConfig(name="x", source="hub", hub_id="no-such-org-xyz/no-such-dataset", cache_dir=str(tmp_path / "c"))
    t0 = time.time()
    with pytest.raises(DataError) as e:
        load_splits(cfg, tmp_path)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert "no-such-org-xyz/no-such-dataset" in msg and "_OFFLINE=1 is set" in msg
    assert "data=local" in msg and "network access" in msg


def test_hub_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    cfg = DataConfig(name="x", source="hub", hub_id="no-such-org-xyz/no-such-dataset", cache_dir=str(tmp_path / "c"))
    t0 = time.time()
    with pytest.raises(DataError, match="no-such-org-xyz/no-such-dataset.*unreachable"):
        load_splits(cfg, tmp_path)
    assert time.time() - t0 < 10


def test_embedded_missing_names_rebuild_command(tmp_path: Path) -> None:
    cfg = DataConfig(path=str(tmp_path / "nothing"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"train\.jsonl\.gz.*python -m data\.build_bible_corpus"):
        load_splits(cfg, tmp_path)


# --------------------------------------------------------------------------- bad input


def test_line_count_mismatch(tmp_path: Path) -> None:
    make_text_corpus(tmp_path / "c", {"train": 10, "validation": 3})
    write_text(tmp_path / "c" / "train.es", ["uno"] * 9)
    with pytest.raises(DataError) as e:
        load_splits(local_cfg(tmp_path, tmp_path / "c", format="text"), tmp_path)
    msg = str(e.value)
    assert "train.en has 10 lines" in msg and "train.es has 9" in msg


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_invalid_utf8(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "c"
    if fmt == "text":
        make_text_corpus(folder, {"train": 10, "validation": 3})
        bad = folder / "train.es"
        lines = bad.read_bytes().split(b"\n")
    else:
        folder.mkdir()
        write_rows(folder / "train.jsonl", rows(10))
        write_rows(folder / "validation.jsonl", rows(3))
        bad = folder / "train.jsonl"
        lines = bad.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"e", b"\xe9", 1)  # latin-1 e-acute on line 7
    bad.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{bad.name}: line 7 is not valid UTF-8"):
        load_splits(local_cfg(tmp_path, folder, format=fmt), tmp_path)


def test_missing_column_lists_columns(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    write_rows(folder / "train.csv", rows(5))
    write_rows(folder / "validation.csv", rows(2))
    with pytest.raises(DataError, match=r"no column 'text'.*\['id', 'en', 'es'\].*data\.source_field"):
        load_splits(local_cfg(tmp_path, folder, format="csv", source_field="text"), tmp_path)
    with pytest.raises(DataError, match=r"no column 'fr'.*source_lang"):
        load_splits(local_cfg(tmp_path, folder, format="csv", source_lang="fr"), tmp_path)


def test_missing_train_file(tmp_path: Path) -> None:
    make_text_corpus(tmp_path / "c", {"validation": 3})
    with pytest.raises(DataError, match=r"train split needs train\.en and train\.es"):
        load_splits(local_cfg(tmp_path, tmp_path / "c", format="text"), tmp_path)
    (tmp_path / "c" / "train.en").write_text("x\n")
    with pytest.raises(DataError, match=r"train split needs train\.es"):
        load_splits(local_cfg(tmp_path, tmp_path / "c", format="text"), tmp_path)


def test_empty_after_filtering(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    make_text_corpus(folder, {"train": 30, "validation": 3})
    write_text(folder / "validation.es", ["", "  ", ""])
    cfg = local_cfg(tmp_path, folder, format="text", vocab_size=100)
    with pytest.raises(DataError, match=r"validation split has no pairs left.*empty-line filter"):
        prepare(cfg, tmp_path)
    make_text_corpus(folder, {"train": 30, "validation": 3})
    cfg = local_cfg(tmp_path, folder, format="text", vocab_size=100, max_source_len=3, overlong="drop")
    with pytest.raises(DataError, match=r"train split has no pairs left.*overlong filter.*data\.overlong=truncate"):
        prepare(cfg, tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    write_rows(folder / "train.jsonl", rows(5))
    (folder / "validation.jsonl").write_text("")
    with pytest.raises(DataError, match="validation"):
        load_splits(local_cfg(tmp_path, folder, format="jsonl"), tmp_path)
