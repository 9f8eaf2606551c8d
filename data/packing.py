"""Packed training batches: several pairs per row (T5-style), one fixed shape, exact resume.

Every batch is a data.batch.Batch of R rows, S = cfg.max_source_len source and T =
cfg.max_target_len target tokens, R = cfg.max_tokens // (S + T), so the train step compiles
once. The model masks attention to equal segment ids (encoder self, decoder self and cross
attention), causally on the decoder.

The epoch's batch plan is a pure function of (seed, epoch, lengths): examples in the order
of a numpy Generator seeded with [seed, epoch], placed first-fit into the R open rows of
the current batch; an example that fits no row waits for the next batch, and a batch
closes after LOOKAHEAD consecutive examples failed to fit. Resuming recomputes the plan
and jumps to the batch index, so a restored iterator yields what an unbroken one would.
"""

from __future__ import annotations

import collections
from typing import Iterator, Optional

import datasets
import numpy as np

from data.batch import Batch
from data.config import DataConfig
from data.errors import DataError

LOOKAHEAD = 256  # consecutive misfits before a batch closes: more fills rows better, at a little host time


def _flat_lists(ds: datasets.Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of an int list column: row i is values[offsets[i]:offsets[i + 1]]."""
    table = ds.select_columns([column]).with_format("arrow")[:]  # respects any indices mapping
    arr = table.column(0).combine_chunks()
    # offsets index the (unsliced) child array, so take both from the same array
    return arr.values.to_numpy(zero_copy_only=False).astype(np.int32), arr.offsets.to_numpy().astype(np.int64)


def pack_plan(
    src_len: np.ndarray, tgt_len: np.ndarray, order: np.ndarray, S: int, T: int, rows: int,
    lookahead: int = LOOKAHEAD,
) -> list[np.ndarray]:
    """First-fit packing of examples (in `order`) into batches of `rows` rows.

    Returns one (n, 2) int64 array per batch: [example, row] in placement order, which also
    fixes each pair's segment id (its rank within its row).
    """
    src_len, tgt_len = src_len.tolist(), tgt_len.tolist()  # Python ints: this loop is scalar
    stream = iter(order.tolist())
    waiting: collections.deque = collections.deque()  # examples that fit no row of an earlier batch
    batches = []
    while True:
        src_free, tgt_free = [S] * rows, [T] * rows
        placed, skipped, misses = [], [], 0
        while misses < lookahead:
            ex = waiting.popleft() if waiting else next(stream, None)
            if ex is None:
                break
            s, t = src_len[ex], tgt_len[ex]
            for r in range(rows):
                if src_free[r] >= s and tgt_free[r] >= t:
                    src_free[r] -= s
                    tgt_free[r] -= t
                    placed.append((ex, r))
                    break
            else:
                skipped.append(ex)
                misses += 1
        waiting.extendleft(reversed(skipped))  # first in line for the next batch, order kept
        if not placed:
            return batches
        batches.append(np.asarray(placed, dtype=np.int64))


class PackedBatches:
    """Iterator of packed training (or validation-loss) batches with exact resume.

    shuffle=True, repeat=True: infinite, reshuffled every epoch (training).
    shuffle=False, repeat=False: one pass in corpus order (validation loss); `iter_epoch()`
    gives a fresh pass without touching the iterator's state.
    With several processes (multi-host data parallelism) every process computes the same
    global plan (cfg.max_tokens is the global batch) and materialises only its own block of
    rows of each batch: process p of P gets rows [p * R/P, (p + 1) * R/P). A run on P
    processes therefore trains on exactly the batches of a single-process run, and a resume
    may change the process count.
    """

    def __init__(
        self, dataset: datasets.Dataset, cfg: DataConfig, seed: int = 0, shuffle: bool = True,
        repeat: Optional[bool] = None, process_index: int = 0, process_count: int = 1,
    ):
        self.S, self.T = cfg.max_source_len, cfg.max_target_len
        self.rows = cfg.max_tokens // (self.S + self.T)  # of the global batch
        self.seed, self.shuffle = seed, shuffle
        self.repeat = shuffle if repeat is None else repeat
        self.process_index, self.process_count = process_index, process_count
        if self.rows % process_count:
            raise DataError(f"{self.rows} rows per batch (data.max_tokens // (max_source_len + max_target_len)) "
                            f"do not split over {process_count} processes; adjust data.max_tokens.")
        self.local_rows = self.rows // process_count
        if len(dataset) == 0:
            raise DataError("Cannot batch an empty split; see the prepare stats for what was dropped.")
        self._src, self._src_off = _flat_lists(dataset, "src_ids")
        self._tgt, self._tgt_off = _flat_lists(dataset, "tgt_ids")
        self.src_len, self.tgt_len = np.diff(self._src_off), np.diff(self._tgt_off)  # (N,)
        if self.src_len.max() > self.S or self.tgt_len.max() > self.T:
            raise DataError(
                f"Examples up to {self.src_len.max()}/{self.tgt_len.max()} tokens do not fit "
                f"max_source_len/max_target_len={self.S}/{self.T}: the split was prepared with other "
                f"lengths; prepare it again with this config."
            )
        self._epoch, self._batch = 0, 0
        self._plan_epoch, self._plan = -1, []

    # ---------------------------------------------------------------- plan

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The global batches of `epoch`: (n, 2) [example, row] arrays (cached per epoch)."""
        if epoch != self._plan_epoch:
            n = len(self.src_len)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._plan = pack_plan(self.src_len, self.tgt_len, order, self.S, self.T, self.rows)
            self._plan_epoch = epoch
        return self._plan

    @property
    def efficiency(self) -> dict:
        """Share of real (non-pad) tokens in the current epoch's global plan."""
        plan = self.plan(self._epoch)
        ex = np.concatenate([b[:, 0] for b in plan])
        n = len(plan)
        src, tgt = int(self.src_len[ex].sum()), int(self.tgt_len[ex].sum())
        return {
            "tokens": (src + tgt) / (n * self.rows * (self.S + self.T)),
            "src": src / (n * self.rows * self.S),
            "tgt": tgt / (n * self.rows * self.T),
            "batches_per_epoch": len(plan),
            "pairs_per_batch": len(ex) / n,
            "rows": self.rows,
        }

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> "PackedBatches":
        return self

    def __next__(self) -> Batch:
        while self._batch >= len(self.plan(self._epoch)):
            if not self.repeat:
                raise StopIteration
            self._epoch, self._batch = self._epoch + 1, 0
        batch = self.build(self.plan(self._epoch)[self._batch])
        self._batch += 1
        return batch

    def iter_epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """One pass over `epoch`'s batches, independent of the iterator state."""
        for placed in list(self.plan(epoch)):
            yield self.build(placed)

    def state(self) -> dict:
        """Position of the next batch; JSON-serialisable, for checkpoints."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed, "examples": len(self.src_len)}

    def restore(self, state: dict) -> None:
        if state.get("examples", len(self.src_len)) != len(self.src_len) or state.get("seed", self.seed) != self.seed:
            raise DataError(
                f"The data position in the checkpoint ({state}) was saved for another dataset or "
                f"seed ({len(self.src_len)} examples, seed {self.seed} now); resume with the same data config."
            )
        self._epoch, self._batch = int(state["epoch"]), int(state["batch"])

    # ---------------------------------------------------------------- assembly

    def build(self, placed: np.ndarray) -> Batch:
        """Materialise this process's rows of one batch from its [example, row] placements."""
        if self.process_count > 1:
            first = self.process_index * self.local_rows
            mine = (placed[:, 1] >= first) & (placed[:, 1] < first + self.local_rows)
            placed = placed[mine] - np.array([0, first])  # placement order (segment ids) kept
        return Batch.packed(self._src, self._src_off, self._tgt, self._tgt_off, placed, self.local_rows,
                            self.S, self.T)
