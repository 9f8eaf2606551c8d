"""Length buckets: one-example-per-row batches padded to a few fixed lengths, for generation and
for the teacher-forced analyses (alignment scoring, head importance).

Examples are sorted by length and padded to the smallest bucket that holds them, so a jitted
consumer compiles once per bucket used; every batch has exactly `rows` rows, filler rows being
all padding with index -1. `index[i]` is the dataset row of batch row i, to put outputs back in
corpus order.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import datasets
import numpy as np

from data.batch import Batch
from data.config import PAD_ID
from data.errors import DataError


def length_groups(lengths: np.ndarray, sizes: Sequence[int], rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(padded length, up to `rows` example indices) chunks, shortest examples first; the padded
    length is the smallest of `sizes` that holds every member. lengths must not exceed max(sizes)."""
    sizes = np.asarray(sorted(sizes))
    order = np.argsort(lengths, kind="stable")
    bucket = np.searchsorted(sizes, lengths[order], side="left")  # smallest bucket >= length
    for b in np.unique(bucket):
        members = order[bucket == b]
        for start in range(0, len(members), rows):
            yield int(sizes[b]), members[start : start + rows]


def _row_index(chunk: np.ndarray, rows: int) -> np.ndarray:
    index = np.full(rows, -1, dtype=np.int64)
    index[: len(chunk)] = chunk
    return index


def decode_batches(dataset: datasets.Dataset, batch_size: int,
                   buckets: Sequence[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(index (batch_size,), src (batch_size, L) int32) for generation, L a bucket."""
    src_ids = dataset["src_ids"]
    lengths = np.array([len(s) for s in src_ids], dtype=np.int64)
    if lengths.size and lengths.max() > max(buckets):
        raise DataError(f"Sources of up to {lengths.max()} tokens exceed the largest decoding bucket "
                        f"({max(buckets)}); prepare the data with data.max_source_len <= {max(buckets)}.")
    for size, chunk in length_groups(lengths, buckets, batch_size):
        src = np.full((batch_size, size), PAD_ID, dtype=np.int32)
        for r, ex in enumerate(chunk.tolist()):
            src[r, : len(src_ids[ex])] = src_ids[ex]
        yield _row_index(chunk, batch_size), src


class IndexedBatch(NamedTuple):
    """A one-example-per-row Batch and the dataset row of each of its rows (-1 for filler)."""

    batch: Batch
    index: np.ndarray  # (R,) int64


def example_batches(dataset: datasets.Dataset, rows: int, buckets: Sequence[int]) -> Iterator[IndexedBatch]:
    """Teacher-forced pairs, S = T = the smallest bucket >= the longer side (a longer pair than
    every bucket gets a bucket of its own length)."""
    src_ids, tgt_ids = dataset["src_ids"], dataset["tgt_ids"]
    lengths = np.array([max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)], dtype=np.int64)
    sizes = sorted(buckets)
    if lengths.size and lengths.max() > sizes[-1]:
        sizes.append(int(lengths.max()))
    for size, chunk in length_groups(lengths, sizes, rows):
        members = chunk.tolist()
        batch = Batch.one_per_row([src_ids[e] for e in members], [tgt_ids[e] for e in members],
                                  S=size, T=size, rows=rows)
        yield IndexedBatch(batch, _row_index(chunk, rows))
