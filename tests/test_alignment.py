"""The alignment scorer on hand-made attention and gold links (train/analysis/alignment.py) and
the evaluator that feeds it (train/evals/alignment.py)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from data.buckets import example_batches
from data.config import BOS_ID, EOS_ID, PAD_ID
from data.tokenizer import SubwordTokenizer, build_tokenizer
from train.analysis.alignment import (
    AlignmentCounts,
    alignment_scores,
    argmax_links,
    best_aligner,
    diagonal_counts,
    gold_matrix,
    key_words,
    oracle_counts,
    query_words,
    score_cross_attention,
)
from train.evals.alignment import AlignmentEvaluator


def one_hot_rows(cols: list[int], s_len: int) -> np.ndarray:
    """(T, S) attention with row t peaked (0.7) on column cols[t], the rest spread evenly."""
    w = np.full((len(cols), s_len), 0.3 / (s_len - 1))
    w[np.arange(len(cols)), cols] = 0.7
    return w


def test_rows_align_the_predicted_token_or_with_shift_the_input_token():
    # Target subwords belong to words 0, 0, 1; tgt_in = BOS x0 x1 x2, rows 0..3 (row 3 predicts EOS).
    np.testing.assert_array_equal(query_words([0, 0, 1], 5), [0, 0, 1, -1, -1])
    np.testing.assert_array_equal(query_words([0, 0, 1], 5, shift=True), [-1, 0, 0, 1, -1])
    np.testing.assert_array_equal(key_words([0, 1, 1], 5), [0, 1, 1, -1, -1])  # EOS, pad: no word


def test_argmax_maps_subwords_to_words_and_skips_eos_and_padding():
    src_words = key_words([0, 0, 1], 5)  # source: word 0 in two pieces, word 1, EOS, pad
    tgt_words = query_words([0, 1], 4)  # rows: word 0, word 1, EOS row, pad row
    w = one_hot_rows([1, 3, 0, 0], 5)  # row 1 peaks on EOS (column 3): its runner-up must win
    w[1, 2] = 0.2
    links = argmax_links(w[None], src_words, tgt_words, (2, 2))[0]
    np.testing.assert_array_equal(links, [[True, False], [False, True]])


def test_scores_by_hand():
    links = np.zeros((3, 3), bool)
    links[0, 0] = links[1, 1] = links[2, 1] = True  # A = {(0,0), (1,1), (2,1)}
    gold = gold_matrix([[0, 0], [1, 1], [1, 2], [7, 0]], (3, 3))  # (7, 0): out of range, dropped
    assert gold.sum() == 3
    counts = AlignmentCounts.zeros(())
    counts.add_sentence(links, gold)
    s = counts.scores()
    assert (counts.hits, counts.predicted, counts.gold) == (2, 3, 3)
    np.testing.assert_allclose([s["precision"], s["recall"], s["f1"], s["aer"]], [2 / 3, 2 / 3, 2 / 3, 1 / 3])
    # Och & Ney with P = S: AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|)
    np.testing.assert_allclose(s["aer"], 1 - (2 + 2) / (3 + 3))
    empty = alignment_scores(0, 0, 5)
    assert empty["precision"] == 0 and empty["recall"] == 0 and empty["aer"] == 1


def test_micro_average_over_sentences_and_layer_average_column():
    """Two sentences, 1 layer x 2 heads: head 0 is right everywhere, head 1 only on sentence 0."""
    L, H, T, S = 1, 2, 4, 4
    src_words = [[0, 1, 1], [0, 1]]  # sentence 0: word 1 in two pieces
    tgt_words = [[0, 1], [1, 0]]
    gold = [[[0, 0], [1, 1]], [[0, 1], [1, 0]]]
    cross = np.zeros((L, 2, H, T, S))
    cross[0, 0, 0] = one_hot_rows([0, 2, 3, 3], S)  # row 1 -> subword 2 = word 1: right
    cross[0, 0, 1] = one_hot_rows([0, 1, 3, 3], S)  # subword 1 is word 1 too: right
    cross[0, 1, 0] = one_hot_rows([0, 1, 2, 2], S)  # tgt word 1 -> src 0, tgt word 0 -> src 1: right
    cross[0, 1, 1] = one_hot_rows([0, 0, 2, 2], S)  # both rows -> src word 0: one right, one wrong
    counts = score_cross_attention(cross, src_words, tgt_words, gold)
    assert counts.hits.shape == (L, H + 1) and counts.gold == 4 and counts.sentences == 2
    np.testing.assert_array_equal(counts.hits[0, :2], [4, 3])
    np.testing.assert_array_equal(counts.predicted[0, :2], [4, 4])
    s = counts.scores()
    np.testing.assert_allclose(s["f1"][0, :2], [1.0, 2 * 3 / 8])
    # Head average of sentence 1: row 1 ties (0.35 + 0.05) on cols 0 and 1 -> first (word 0): wrong.
    assert counts.predicted[0, 2] == 4 and counts.hits[0, 2] == 3
    best = best_aligner(s)
    assert (best["layer"], best["head"], best["f1"]) == (0, 0, 1.0)
    # Counts accumulate across calls exactly like one call over both sentences.
    again = score_cross_attention(cross[:, :1], src_words[:1], tgt_words[:1], gold[:1])
    again = score_cross_attention(cross[:, 1:], src_words[1:], tgt_words[1:], gold[1:], again)
    np.testing.assert_array_equal(again.hits, counts.hits)


def test_diagonal_reference():
    # 2 source words, 4 target words: target words 0, 1 -> source 0; 2, 3 -> source 1.
    counts = diagonal_counts([[0, 1]], [[0, 1, 2, 3]], [[[0, 0], [1, 1], [1, 3]]])
    assert (int(counts.hits), int(counts.predicted), counts.gold) == (2, 4, 3)


def test_oracle_ceiling():
    # Target word 0 has two subwords and two gold sources: both found; word 1 has none: one wrong link.
    counts = oracle_counts([[0, 1, 2]], [[0, 0, 1]], [[[0, 0], [2, 0]]])
    assert (int(counts.hits), int(counts.predicted), counts.gold) == (2, 3, 2)


def test_truncated_words_are_left_out_of_gold():
    # The model saw two target subwords (words 0, 1) of a longer sentence: the gold link to
    # target word 5 cannot be predicted and is not counted.
    cross = np.zeros((1, 1, 1, 3, 2))
    cross[0, 0, 0] = one_hot_rows([0, 0, 1], 2)
    counts = score_cross_attention(cross, [[0]], [[0, 1]], [[[0, 0], [0, 5]]])
    assert counts.gold == 1 and counts.hits[0, 0] == 1 and counts.predicted[0, 0] == 2


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    tok, trainer = build_tokenizer("bpe")
    trainer.vocab_size = 60  # small: longer words split into pieces
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran to the cat", "red mats"] * 20,
                            trainer=trainer)
    return SubwordTokenizer(tok)


def split(tokenizer: SubwordTokenizer, pairs: list[tuple[str, str, list]]) -> datasets.Dataset:
    rows = [{"source": s, "target": t, "alignment": g,
             "src_ids": tokenizer.encode([s])[0] + [EOS_ID], "tgt_ids": tokenizer.encode([t])[0] + [EOS_ID]}
            for s, t, g in pairs]
    return datasets.Dataset.from_list(rows)


def test_example_batches_one_example_per_row(tokenizer):
    ds = split(tokenizer, [("the cat", "the cat", [[0, 0]]), ("a dog ran to the mat", "red", [[0, 0]])])
    batches = list(example_batches(ds, rows=4, buckets=(4, 8)))
    assert [b.batch.src.shape for b in batches] == [(4, 4), (4, 8)]
    first, index = batches[0]
    assert index.tolist() == [0, -1, -1, -1]
    t = ds[0]["tgt_ids"]
    assert first.tgt_in[0, : len(t)].tolist() == [BOS_ID] + t[:-1]
    assert first.tgt_out[0, : len(t)].tolist() == t and first.tgt_out[0, len(t):].tolist() == [PAD_ID] * (4 - len(t))


def test_evaluator_scores_planted_attention(tokenizer):
    """Source = target sentence, attention on the same subword position: every word aligns to
    itself, so F1 = 1 against identity gold; shifted rows are off by one subword."""
    sentences = ["the cat sat on the mat", "cats sat on dogs", "a dog"]
    pairs = [(s, s, [[i, i] for i in range(len(s.split(" ")))]) for s in sentences]
    pairs.append(("the cat", "the cat", []))  # no gold links: left out
    ds = split(tokenizer, pairs)
    assert any(len(tokenizer.word_ids(s)) > len(s.split(" ")) for s in sentences)  # pieces exist

    ev = AlignmentEvaluator.build(None, ds, tokenizer, rows=2, buckets=(8, 16))
    assert ev.examples == 3

    def planted(params, src, tgt_in):  # (L=2, B, H=2, T, S): layer 1 head 1 diagonal
        b, t = tgt_in.shape
        cross = np.full((2, b, 2, t, src.shape[1]), 0.01, np.float32)
        cross[1, :, 1] += np.eye(t, src.shape[1], dtype=np.float32)
        return cross

    ev.fn = planted
    out = ev.run(params=None)
    assert out["val/align_f1"] == 1.0 and out["val/align_aer"] == 0.0
    assert ev.last["best"]["layer"] == 1 and ev.last["best"]["head"] == 1
    counts = ev.counts(None, (False, True))
    assert counts[True].scores()["f1"][1, 1] < 1.0
    assert ev.diagonal().gold == ev.oracle().gold == counts[False].gold  # references: the same pairs
    assert ev.oracle().scores()["f1"] == 1.0  # identity gold, one word per link: reachable
    assert AlignmentEvaluator.build(None, ds.remove_columns("alignment"), tokenizer) is None
