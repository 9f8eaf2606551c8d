"""Word alignments read off cross attention, scored against gold links.

Gold links are (source word, target word) pairs indexing `text.split(" ")` (the embedded
corpus's Strong's-number links; English is the source). A head's alignment of a sentence pair:

  1. Teacher forcing: the decoder reads tgt_in = [BOS] + tgt_ids[:-1]; query row i has input
     tgt_in[i] and predicts tgt_ids[i]. Row i aligns the token it *predicts*, tgt_ids[i]
     (Garg et al. 2019, fairseq's hard alignments): the attention that produced a word is the
     attention used for it. `shift=True` aligns the row's *input* token tgt_in[i] instead
     (Chen et al. 2020, "shift-att"), which often aligns better in a trained model.
  2. Each row's argmax over source subwords that belong to a word: EOS and padding are left out
     (as fairseq does), so attention parked on EOS, a common no-op sink, cannot win.
  3. Subwords to words: the row's target word is linked with the argmax's source word; a word
     pair is linked when any of their subwords are (the usual subword-to-word rule).

Scores are micro-averaged over the corpus (counts summed, then divided): precision
|A∩S|/|A|, recall |A∩S|/|S|, F1, and alignment error rate with sure links only (Och & Ney
2003 with P = S): AER = 1 - 2|A∩S| / (|A| + |S|) = 1 - F1. When a sentence was truncated to the
model's maximum length, gold links to words with no kept subword are left out.

Pure numpy: train/evals/alignment.py runs a model to get the cross attention and feeds it here
(the training loop logs the best head's F1 at every validation as `val/align_f1`, and
`python -m train.heads` scores the whole split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

METRICS = ("precision", "recall", "f1", "aer")


def query_words(tgt_word_ids: Sequence[int], num_rows: int, shift: bool = False) -> np.ndarray:
    """Target word of each query row, -1 where none: (num_rows,) int.

    tgt_word_ids: word index of each target subword (EOS not included). Row i predicts subword
    i (its word), or with shift=True reads subword i - 1 (row 0 reads BOS: no word).
    """
    words = np.asarray(tgt_word_ids, dtype=np.int64).reshape(-1)
    out = np.full(num_rows, -1, dtype=np.int64)
    if shift:
        n = min(len(words), num_rows - 1)
        out[1 : n + 1] = words[:n]
    else:
        n = min(len(words), num_rows)
        out[:n] = words[:n]
    return out


def key_words(src_word_ids: Sequence[int], num_cols: int) -> np.ndarray:
    """Source word of each key column (EOS and padding: -1): (num_cols,) int."""
    words = np.asarray(src_word_ids, dtype=np.int64).reshape(-1)
    out = np.full(num_cols, -1, dtype=np.int64)
    n = min(len(words), num_cols)
    out[:n] = words[:n]
    return out


def argmax_links(weights: np.ndarray, src_words: np.ndarray, tgt_words: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Word-level links of K attention maps of one sentence pair.

    weights: (K, T, S); src_words (S,), tgt_words (T,) from key_words / query_words;
    shape: (number of source words, number of target words).
    Returns (K, Ws, Wt) bool: [k, i, j] = source word i linked with target word j by map k.
    """
    k_maps = weights.shape[0]
    links = np.zeros((k_maps,) + tuple(shape), dtype=bool)
    src_ok = src_words >= 0
    rows = np.flatnonzero(tgt_words >= 0)
    if not src_ok.any() or rows.size == 0:
        return links
    masked = np.where(src_ok[None, None, :], weights[:, rows, :], -np.inf)  # (K, R, S)
    best = np.argmax(masked, axis=-1)  # (K, R)
    k_idx = np.repeat(np.arange(k_maps), rows.size)
    links[k_idx, src_words[best].reshape(-1), np.tile(tgt_words[rows], k_maps)] = True
    return links


def gold_matrix(gold: Sequence[Sequence[int]], shape: tuple[int, int]) -> np.ndarray:
    """(Ws, Wt) bool from [[source word, target word], ...]; links outside `shape` are dropped
    (words cut off by truncation)."""
    out = np.zeros(shape, dtype=bool)
    pairs = np.asarray(gold, dtype=np.int64).reshape(-1, 2)
    keep = (pairs[:, 0] < shape[0]) & (pairs[:, 1] < shape[1]) & (pairs >= 0).all(axis=1)
    out[pairs[keep, 0], pairs[keep, 1]] = True
    return out


def alignment_scores(hits: np.ndarray, predicted: np.ndarray, gold: np.ndarray | float) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and AER (sure links only) from link counts (any matching shapes).

    An aligner that predicts nothing gets precision 0 (not NaN), so it ranks last.
    """
    hits, predicted = np.asarray(hits, np.float64), np.asarray(predicted, np.float64)
    gold = np.asarray(gold, np.float64)
    precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
    recall = np.where(gold > 0, hits / np.maximum(gold, 1), 0.0)
    total = predicted + gold
    f1 = np.where(total > 0, 2 * hits / np.maximum(total, 1), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "aer": 1.0 - f1}


@dataclass
class AlignmentCounts:
    """Corpus sums for a grid of aligners: hits |A∩S| and predicted |A| per aligner, gold |S|."""

    hits: np.ndarray
    predicted: np.ndarray
    gold: int = 0
    sentences: int = 0

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> "AlignmentCounts":
        return cls(np.zeros(shape, np.int64), np.zeros(shape, np.int64))

    def add_sentence(self, links: np.ndarray, gold: np.ndarray) -> None:
        """links: (*shape, Ws, Wt) bool; gold: (Ws, Wt) bool."""
        self.hits += np.sum(links & gold, axis=(-2, -1))
        self.predicted += np.sum(links, axis=(-2, -1))
        self.gold += int(gold.sum())
        self.sentences += 1

    def scores(self) -> dict[str, np.ndarray]:
        return alignment_scores(self.hits, self.predicted, self.gold)


def score_cross_attention(cross: np.ndarray, src_word_ids: Sequence[Sequence[int]],
                          tgt_word_ids: Sequence[Sequence[int]], gold: Sequence[Sequence[Sequence[int]]],
                          counts: Optional[AlignmentCounts] = None, shift: bool = False) -> AlignmentCounts:
    """Add a batch of sentence pairs to the counts of every head and every layer average.

    cross: (L, B, H, T, S) cross-attention weights; src_word_ids[b] / tgt_word_ids[b]: word of
    each kept subword (tokenizer.word_ids cut to the tokens the model saw, EOS not included);
    gold[b]: [[src word, tgt word], ...].
    Returns counts of shape (L, H + 1): column H is the layer's head-averaged attention.
    A layer with fewer heads (a pruned model) has NaN maps for the missing ones
    (model/attention_maps.py): they predict no link, and the layer average is over its real heads.
    """
    num_layers, batch, num_heads, t_len, s_len = cross.shape
    counts = counts or AlignmentCounts.zeros((num_layers, num_heads + 1))
    absent = np.isnan(cross[:, 0, :, 0, 0]) if batch else np.zeros((num_layers, num_heads), bool)  # (L, H)
    silent = np.concatenate([absent, absent.all(axis=1, keepdims=True)], axis=1)  # (L, H + 1): no links
    real = (~absent).astype(np.float64)[:, :, None, None]  # (L, H, 1, 1)
    for b in range(batch):
        src_w = key_words(src_word_ids[b], s_len)
        tgt_w = query_words(tgt_word_ids[b], t_len, shift)
        # Words with a kept subword define the grid (truncation cuts the rest off).
        shape = (int(np.max(src_word_ids[b], initial=-1)) + 1, int(np.max(tgt_word_ids[b], initial=-1)) + 1)
        maps = np.where(real > 0, cross[:, b], 0.0)  # (L, H, T, S)
        average = maps.sum(axis=1, keepdims=True) / np.maximum(real.sum(axis=1, keepdims=True), 1.0)
        maps = np.concatenate([maps, average], axis=1)  # (L, H + 1, T, S)
        links = argmax_links(maps.reshape(-1, t_len, s_len), src_w, tgt_w, shape)
        links = links.reshape(num_layers, num_heads + 1, *shape) & ~silent[:, :, None, None]
        counts.add_sentence(links, gold_matrix(gold[b], shape))
    return counts


def diagonal_counts(src_word_ids: Sequence[Sequence[int]], tgt_word_ids: Sequence[Sequence[int]],
                    gold: Sequence[Sequence[Sequence[int]]]) -> AlignmentCounts:
    """A reference aligner that needs no model: target word j of Wt links source word
    floor((j + 0.5) * Ws / Wt), the length-scaled diagonal. Heads must beat it to show they learned
    more than word order."""
    counts = AlignmentCounts.zeros(())
    for src_w, tgt_w, g in zip(src_word_ids, tgt_word_ids, gold):
        shape = (int(np.max(src_w, initial=-1)) + 1, int(np.max(tgt_w, initial=-1)) + 1)
        links = np.zeros(shape, dtype=bool)
        if min(shape) > 0:
            j = np.arange(shape[1])
            links[np.minimum(((j + 0.5) * shape[0] / shape[1]).astype(int), shape[0] - 1), j] = True
        counts.add_sentence(links, gold_matrix(g, shape))
    return counts


def oracle_counts(src_word_ids: Sequence[Sequence[int]], tgt_word_ids: Sequence[Sequence[int]],
                  gold: Sequence[Sequence[Sequence[int]]]) -> AlignmentCounts:
    """A ceiling for argmax aligners, which give each target subword one source word: subword k
    of target word j picks its gold source words in turn (the k-th, cycling); a word without gold
    links still gets one (wrong) link, as an argmax must. Gold links are many-to-many, so even this
    recalls only part of them."""
    counts = AlignmentCounts.zeros(())
    for src_w, tgt_w, g in zip(src_word_ids, tgt_word_ids, gold):
        shape = (int(np.max(src_w, initial=-1)) + 1, int(np.max(tgt_w, initial=-1)) + 1)
        gold_m = gold_matrix(g, shape)
        links = np.zeros(shape, dtype=bool)
        seen: dict[int, int] = {}
        for w in tgt_w:
            if w < 0 or shape[0] == 0:
                continue
            k = seen[w] = seen.get(w, -1) + 1
            sources = np.flatnonzero(gold_m[:, w])
            links[sources[k % sources.size] if sources.size else 0, w] = True
        counts.add_sentence(links, gold_m)
    return counts


def best_aligner(scores: dict[str, np.ndarray], heads_only: bool = True) -> dict[str, Any]:
    """The (layer, head) with the highest F1 in an (L, H + 1) grid; head == "avg" for the last column."""
    f1 = scores["f1"][:, :-1] if heads_only else scores["f1"]
    layer, head = np.unravel_index(int(np.argmax(f1)), f1.shape)
    num_heads = scores["f1"].shape[1] - 1
    out: dict[str, Any] = {"layer": int(layer), "head": int(head) if head < num_heads else "avg"}
    out.update({m: float(scores[m][layer, head]) for m in METRICS})
    return out
