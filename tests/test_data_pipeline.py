"""Tokenizer, cached preparation, packing, resume, prefetching and generation batches."""

from __future__ import annotations

import gzip
import json
import time
import unicodedata
from pathlib import Path

import datasets
import numpy as np
import pytest

from data.batch import Batch
from data.buckets import decode_batches
from data.config import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, DataConfig
from data.packing import PackedBatches
from data.pipeline import prepare
from data.prefetch import Prefetcher
from data.sources import load_splits
from data.tokenizer import train_tokenizer

datasets.disable_progress_bars()

REPO_ROOT = Path(__file__).resolve().parent.parent
BIBLE = REPO_ROOT / "data" / "corpora" / "bible_en_es"

EN_WORDS = ("in the beginning god created heavens and earth was without form void darkness upon face of "
            "deep spirit moved waters said let there be light saw that it good divided from").split()
ES_WORDS = ("en el principio creó dios los cielos y la tierra estaba desordenada vacía tinieblas sobre "
            "faz del abismo espíritu se movía aguas dijo sea luz fue vio que era buena apartó de").split()


def sentence(rng: np.random.Generator, words: list[str], n: int) -> str:
    text = " ".join(rng.choice(words, n))
    return text[0].upper() + text[1:] + rng.choice([".", "!", "?", ";"])


def make_corpus(folder: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """A small corpus laid out like the embedded one (verse-like lengths)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(n):
                k = int(np.clip(rng.gamma(3.0, 4.0), 1, 40))
                row = {"id": f"{split} {i}", "translation": {"en": sentence(rng, EN_WORDS, k),
                       "es": sentence(rng, ES_WORDS, k + int(rng.integers(0, 3)))}, "alignment": [[0, 0]]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "bible_like"
    make_corpus(folder, {"train": 2000, "validation": 100, "test": 100})
    return folder


def cfg_for(folder: Path, cache: Path, **kw) -> DataConfig:
    kw = {"vocab_size": 300, "max_source_len": 48, "max_target_len": 48, "max_tokens": 768, **kw}
    return DataConfig(name="t", path=str(folder), cache_dir=str(cache), **kw).validate()


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = cfg_for(corpus, tmp_path_factory.mktemp("cache"))
    return cfg, prepare(cfg, corpus)


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_tokenizer_round_trip(corpus: Path, tmp_path: Path, kind: str) -> None:
    cfg = cfg_for(corpus, tmp_path, tokenizer=kind)
    splits = load_splits(cfg, corpus)
    tok = train_tokenizer(cfg, splits["train"])
    assert [tok.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tok.vocab_size <= cfg.vocab_size
    texts = splits["test"]["source"][:20] + splits["test"]["target"][:20] + ["Dios  dijo ﬁn!"]  # double space, NFKC ligature
    for text, ids in zip(texts, tok.encode(texts)):
        # BOS/PAD are dropped and decoding stops at EOS
        assert tok.decode([BOS_ID] + ids + [EOS_ID, 7, 8, PAD_ID]) == unicodedata.normalize("NFKC", text)
        words = tok.word_ids(text)
        assert len(words) == len(ids)
        real = [w for w in words if w >= 0]
        assert real == sorted(real) and set(real) <= set(range(len(text.split(" "))))
    assert tok.decode(np.array([5, EOS_ID, 9])) == tok.decode([5])


def test_word_ids_map_subwords_to_words(prepared) -> None:
    _, data = prepared
    text = "Dios creó los cielos"
    words = data.tokenizer.word_ids(text)
    pieces = [data.tokenizer.tokenizer.id_to_token(i) for i in data.tokenizer.encode([text])[0]]
    rebuilt = {}
    for w, piece in zip(words, pieces):
        rebuilt[w] = rebuilt.get(w, "") + piece.replace("▁", "")
    assert [rebuilt[i] for i in range(4)] == text.split(" ")


# --------------------------------------------------------------------------- prepare and its cache


def test_prepare_outputs(prepared) -> None:
    cfg, data = prepared
    assert set(data.splits) == {"train", "validation", "test"}
    train = data.splits["train"]
    assert {"src_ids", "tgt_ids", "src_len", "tgt_len", "source", "target", "id", "alignment"} <= set(train.column_names)
    for row in train.select(range(50)):
        assert row["src_ids"][-1] == EOS_ID and row["tgt_ids"][-1] == EOS_ID
        assert len(row["src_ids"]) == row["src_len"] <= cfg.max_source_len
        assert len(row["tgt_ids"]) == row["tgt_len"] <= cfg.max_target_len
    st = data.stats["train"]
    assert st["kept"] == len(train) == st["examples"] - st["empty_dropped"]
    assert data.vocab_size == data.tokenizer.vocab_size
    # the splits keep their ids apart
    assert not set(train["id"]) & set(data.splits["test"]["id"])


def test_cache_reuse(corpus: Path, tmp_path: Path) -> None:
    cfg = cfg_for(corpus, tmp_path)
    first = prepare(cfg, corpus)
    tok_file = first.cache_dir.parent / "tokenizer.json"
    mtime = tok_file.stat().st_mtime_ns
    assert first.stats["tokenizer"]["trained"] and not first.stats["cache"]["hit"]
    t0 = time.time()
    second = prepare(cfg, corpus)
    assert time.time() - t0 < 2
    assert second.stats["cache"]["hit"] and not second.stats["tokenizer"]["trained"]
    assert tok_file.stat().st_mtime_ns == mtime
    assert second.splits["train"]["src_ids"][:5] == first.splits["train"]["src_ids"][:5]
    # new lengths: re-tokenize, but keep the tokenizer
    third = prepare(cfg_for(corpus, tmp_path, max_source_len=32), corpus)
    assert not third.stats["cache"]["hit"] and not third.stats["tokenizer"]["trained"]
    assert third.stats["train"]["src_truncated"] >= first.stats["train"]["src_truncated"]
    # a new vocabulary size is a new tokenizer
    fourth = prepare(cfg_for(corpus, tmp_path, vocab_size=200), corpus)
    assert fourth.stats["tokenizer"]["trained"]


def test_overlong_truncate_or_drop(corpus: Path, tmp_path: Path) -> None:
    short = cfg_for(corpus, tmp_path, max_source_len=12, max_target_len=12)
    trunc = prepare(short, corpus)
    st = trunc.stats["train"]
    assert st["src_truncated"] > 0 and st["overlong_dropped"] == 0 and st["kept"] == st["examples"]
    assert max(trunc.splits["train"]["src_len"]) == 12
    dropped = prepare(cfg_for(corpus, tmp_path, max_source_len=12, max_target_len=12, overlong="drop"), corpus)
    st = dropped.stats["train"]
    assert st["overlong_dropped"] > 0 and st["kept"] == st["examples"] - st["overlong_dropped"]
    # evaluation splits are never dropped from
    assert dropped.stats["test"]["kept"] == dropped.stats["test"]["examples"]


# --------------------------------------------------------------------------- packing


def segments_of(batch: dict, side: str, r: int) -> list[np.ndarray]:
    seg = batch[f"{side}_segments"][r]
    return [np.flatnonzero(seg == k) for k in range(1, seg.max() + 1)]


def test_packing_layout(prepared) -> None:
    cfg, data = prepared
    train = data.splits["train"]
    it = PackedBatches(train, cfg, seed=3)
    R = cfg.max_tokens // (cfg.max_source_len + cfg.max_target_len)
    src_ids, tgt_ids = train["src_ids"], train["tgt_ids"]
    plan = it.plan(0)
    for b in range(3):
        batch = next(it)
        assert isinstance(batch, Batch)
        batch = batch._asdict()
        assert {k: v.shape for k, v in batch.items()} == {
            **{k: (R, cfg.max_source_len) for k in ("src", "src_segments", "src_positions")},
            **{k: (R, cfg.max_target_len) for k in ("tgt_in", "tgt_out", "tgt_segments", "tgt_positions")},
        }
        assert all(v.dtype == np.int32 for v in batch.values())
        seen = {}
        for ex, r in plan[b].tolist():
            seen.setdefault(r, []).append(ex)
        for r in range(R):
            src_segs, tgt_segs = segments_of(batch, "src", r), segments_of(batch, "tgt", r)
            assert len(src_segs) == len(tgt_segs) == len(seen.get(r, []))
            for k, ex in enumerate(seen.get(r, [])):
                s, t = src_segs[k], tgt_segs[k]
                assert np.all(np.diff(s) == 1) and np.all(np.diff(t) == 1)  # contiguous
                assert batch["src"][r, s].tolist() == src_ids[ex]
                assert batch["src_positions"][r, s].tolist() == list(range(len(s)))
                assert batch["tgt_out"][r, t].tolist() == tgt_ids[ex]
                assert batch["tgt_in"][r, t].tolist() == [BOS_ID] + tgt_ids[ex][:-1]
                assert batch["tgt_positions"][r, t].tolist() == list(range(len(t)))
            # padding: id 0, segment 0, after the real tokens
            for side, ids in (("src", batch["src"]), ("tgt", batch["tgt_out"])):
                pad = batch[f"{side}_segments"][r] == 0
                assert np.all(ids[r][pad] == PAD_ID)
                assert not np.any(np.diff(pad.astype(int)) < 0)


def test_each_example_once_per_epoch(prepared) -> None:
    cfg, data = prepared
    n = len(data.splits["train"])
    it = PackedBatches(data.splits["train"], cfg, seed=1)
    orders = []
    for epoch in range(2):
        ex = np.concatenate([b[:, 0] for b in it.plan(epoch)])
        assert sorted(ex.tolist()) == list(range(n))
        orders.append(ex)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    # shuffle=False keeps corpus order apart from the few pairs that wait for room
    val = PackedBatches(data.splits["validation"], cfg, shuffle=False)
    batches = list(val)
    assert len(batches) == len(val.plan(0)) and list(val) == []  # repeat=False: one pass
    counted = sum(int((b.src_segments > 0).sum()) for b in batches)
    assert counted == sum(data.splits["validation"]["src_len"])


def test_packing_efficiency_realistic_lengths() -> None:
    # Bible-like verse lengths: subword counts ~ gamma (mean ~36, long tail), the target ~8% longer.
    rng = np.random.default_rng(0)
    n = 20000
    src = np.clip(rng.gamma(4.0, 9.0, n), 3, 128).astype(int)
    tgt = np.clip(src * rng.normal(1.08, 0.12, n), 3, 128).astype(int)
    ds = datasets.Dataset.from_dict({"src_ids": [[5] * int(a - 1) + [EOS_ID] for a in src],
                                     "tgt_ids": [[6] * int(b - 1) + [EOS_ID] for b in tgt]})
    cfg = DataConfig(max_source_len=128, max_target_len=128, max_tokens=4096)
    eff = PackedBatches(ds, cfg, seed=0).efficiency
    assert eff["tokens"] >= 0.9, eff


def test_resume_reproduces_batches(prepared) -> None:
    cfg, data = prepared
    train = data.splits["train"]
    ref = PackedBatches(train, cfg, seed=7)
    per_epoch = len(ref.plan(0))
    total = per_epoch + 5  # crosses an epoch boundary
    stream, states = [], []
    for _ in range(total):
        states.append(ref.state())
        stream.append(next(ref))
    for k in (0, 3, per_epoch - 1, per_epoch + 2):
        resumed = PackedBatches(train, cfg, seed=7)
        resumed.restore(json.loads(json.dumps(states[k])))  # states survive a JSON checkpoint
        for expected in stream[k : k + 3]:
            got = next(resumed)
            assert all(np.array_equal(g, e) for g, e in zip(got, expected))


def test_prefetch_state_tracks_consumption(prepared) -> None:
    cfg, data = prepared
    train = data.splits["train"]
    plain = PackedBatches(train, cfg, seed=5)
    expected = [next(plain) for _ in range(8)]
    with Prefetcher(PackedBatches(train, cfg, seed=5), size=3) as pf:
        for b in expected[:4]:
            got = next(pf)
            assert np.array_equal(got.src, b.src)
        time.sleep(0.1)  # let the worker run ahead
        state = pf.state()
        assert state["batch"] == 4 and state["epoch"] == 0
        got = next(pf)
        assert np.array_equal(got.tgt_out, expected[4].tgt_out)
        pf.restore(state)  # rewind: the prefetched batches are dropped
        assert np.array_equal(next(pf).tgt_out, expected[4].tgt_out)
    with Prefetcher(PackedBatches(train, cfg, seed=5), size=2) as pf2:
        pf2.restore(state)
        assert [np.array_equal(next(pf2).src, b.src) for b in expected[4:8]] == [True] * 4


class Failing:
    """An iterator that breaks after two items."""

    def __init__(self) -> None:
        self.i = 0

    def __next__(self) -> int:
        self.i += 1
        if self.i > 2:
            raise OSError("disk gone")
        return self.i

    def state(self) -> dict:
        return {"i": self.i}

    def restore(self, state: dict) -> None:
        self.i = state["i"]


def test_prefetch_propagates_errors_and_end() -> None:
    pf = Prefetcher(Failing(), size=4)
    assert [next(pf), next(pf)] == [1, 2] and pf.state() == {"i": 2}
    with pytest.raises(OSError, match="disk gone"):
        next(pf)
    pf.close()
    with Prefetcher(iter_with_state([1, 2, 3]), size=2) as pf:
        assert list(pf) == [1, 2, 3]


class iter_with_state:
    def __init__(self, items: list) -> None:
        self.items, self.i = items, 0

    def __next__(self):
        if self.i >= len(self.items):
            raise StopIteration
        self.i += 1
        return self.items[self.i - 1]

    def state(self) -> dict:
        return {"i": self.i}

    def restore(self, state: dict) -> None:
        self.i = state["i"]


# --------------------------------------------------------------------------- generation batches


def test_decode_batches(prepared) -> None:
    _, data = prepared
    buckets = [8, 16, 32, 48]  # the last one fits max_source_len=48 (cfg_for)
    test = data.splits["test"]
    src_ids = test["src_ids"]
    seen, shapes = [], set()
    for indices, src in decode_batches(test, batch_size=16, buckets=buckets):
        assert src.shape[0] == 16 and src.shape[1] in buckets and src.dtype == np.int32
        shapes.add(src.shape)
        for i, ex in enumerate(indices.tolist()):
            if ex < 0:
                assert np.all(src[i] == PAD_ID)
                continue
            n = len(src_ids[ex])
            assert src[i, :n].tolist() == src_ids[ex] and np.all(src[i, n:] == PAD_ID)
            assert n > ([0] + sorted(buckets))[sorted(buckets).index(src.shape[1])]
            seen.append(ex)
    assert sorted(seen) == list(range(len(test)))
    assert len(shapes) <= len(buckets)


# --------------------------------------------------------------------------- the embedded corpus


@pytest.mark.skipif(not (BIBLE / "train.jsonl.gz").exists(), reason="embedded corpus not built yet")
def test_embedded_corpus_splits_are_disjoint(tmp_path: Path) -> None:
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    dd = load_splits(cfg, REPO_ROOT)
    assert set(dd) >= {"train", "validation"} and len(dd["train"]) > 10 * len(dd["validation"])
    ids = {name: set(ds["id"]) for name, ds in dd.items()}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    row = dd["validation"][0]
    en, es = row["source"].split(" "), row["target"].split(" ")
    assert all(0 <= i < len(en) and 0 <= j < len(es) for i, j in row["alignment"])


def test_prefetch_device_put(prepared) -> None:
    jax = pytest.importorskip("jax")
    cfg, data = prepared
    with Prefetcher(PackedBatches(data.splits["train"], cfg, seed=0), size=2, device_put=True) as pf:
        batch = next(pf)
    assert isinstance(batch.src, jax.Array) and batch.src.dtype == np.int32


# --------------------------------------------------------------------------- the command


def test_prepare_command(tmp_path: Path) -> None:
    from conftest import run_cli

    make_corpus(tmp_path / "c", {"train": 300, "validation": 20})
    args = ["-m", "train.prepare", "data=local", f"data.path={tmp_path / 'c'}", "data.format=jsonl",
            "data.source_lang=en", "data.target_lang=es", f"data.cache_dir={tmp_path / 'cache'}",
            "data.vocab_size=100"]
    result = run_cli(args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "real tokens; cache " + str(tmp_path / "cache") in result.stdout
    bad = run_cli(["-m", "train.prepare", "data=local", f"data.path={tmp_path / 'nowhere'}"], timeout=120)
    assert bad.returncode == 1 and "not a folder" in bad.stderr and "Traceback" not in bad.stderr
