"""A data cache that does not read back whole is rebuilt, never trusted: a truncated tokenizer, a
truncated tokenized split, a build killed half way. Two processes preparing one empty cache
together build it once and both read the same result."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
from pathlib import Path

import pytest

from data.pipeline import STATS_FILE, cache_folders, prepare
from data.tokenizer import TOKENIZER_FILE
from tests.test_data_pipeline import cfg_for, make_corpus


@pytest.fixture
def built(tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, {"train": 400, "validation": 20, "test": 20})
    cfg = cfg_for(corpus, tmp_path / "cache")
    first = contents(prepare(cfg, corpus))  # copied out: the tests damage the memory-mapped files
    folder, tokenized = cache_folders(cfg, corpus)
    return cfg, corpus, folder, tokenized, first


def contents(data) -> dict:
    return {"tokenizer": data.tokenizer.tokenizer.to_str(),
            **{name: list(ds["src_ids"]) + list(ds["tgt_ids"]) for name, ds in data.splits.items()}}


def same_data(first: dict, data) -> bool:
    return contents(data) == first


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_tokenizer_is_rebuilt(built, caplog):
    cfg, corpus, folder, _, first = built
    truncate(folder / TOKENIZER_FILE)
    with caplog.at_level(logging.WARNING):
        again = prepare(cfg, corpus)
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert again.stats["cache"]["hit"] is False and same_data(first, again)
    assert prepare(cfg, corpus).stats["cache"]["hit"] is True  # and the rebuilt cache is trusted again


def test_a_truncated_split_is_rebuilt(built, caplog):
    cfg, corpus, _, tokenized, first = built
    arrow = max((tokenized / "train").glob("*.arrow"), key=lambda p: p.stat().st_size)
    truncate(arrow, 0.6)
    with caplog.at_level(logging.WARNING):
        again = prepare(cfg, corpus)
    assert "damaged" in caplog.text
    assert again.stats["cache"]["hit"] is False and same_data(first, again)


def test_unreadable_stats_are_rebuilt(built):
    cfg, corpus, _, tokenized, first = built
    (tokenized / STATS_FILE).write_text('{"train": ')  # torn by a kill mid-write
    again = prepare(cfg, corpus)
    assert again.stats["cache"]["hit"] is False and same_data(first, again)


def test_a_killed_build_leaves_nothing_trusted(built):
    cfg, corpus, folder, tokenized, first = built
    # What a kill during the build leaves: a half-written temporary folder, and no finished split
    # folder (the rename that publishes it never happened).
    shutil.copytree(tokenized, folder / f".tmp-{tokenized.name}-12345")
    (folder / f".tmp-{tokenized.name}-12345" / STATS_FILE).unlink()
    shutil.rmtree(tokenized)
    again = prepare(cfg, corpus)
    assert again.stats["cache"]["hit"] is False and same_data(first, again)
    assert json.loads((tokenized / STATS_FILE).read_text())["train"]["kept"] == len(again.splits["train"])


def _prepare_in_child(args: tuple) -> tuple[bool, str]:
    cfg, corpus = args
    data = prepare(cfg, corpus)
    return data.stats["cache"]["hit"], data.tokenizer.tokenizer.to_str()


def test_two_processes_on_an_empty_cache_build_it_once(tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, {"train": 400, "validation": 20, "test": 20})
    cfg = cfg_for(corpus, tmp_path / "cache")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_prepare_in_child, [(cfg, corpus), (cfg, corpus)])
    assert sorted(hit for hit, _ in results) == [False, True]  # one built it, the other waited and reused
    assert results[0][1] == results[1][1]
