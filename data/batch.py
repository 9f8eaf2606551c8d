"""The batch: one typed pytree of fixed-shape int32 arrays, the only thing that reaches a step.

Every producer builds it here: packed training batches (`Batch.packed`, several pairs per row)
and one-example-per-row batches for probes, alignment scoring, head importance and the
benchmark (`Batch.one_per_row`). Every consumer reads fields, never string keys.

Layout (R rows, S = source length, T = target length):
    src, src_segments, src_positions             (R, S)
    tgt_in, tgt_out, tgt_segments, tgt_positions (R, T)
Pair k of a row (1-based) has segment id k on both sides and positions restarting at 0;
padding is PAD_ID with segment 0. tgt_in = [BOS] + tgt_ids[:-1] within each segment and
tgt_out = tgt_ids (which end in EOS).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from data.config import BOS_ID, PAD_ID


class Batch(NamedTuple):
    src: np.ndarray  # (R, S) int32 token ids
    src_segments: np.ndarray  # (R, S) int32, 0 = padding
    src_positions: np.ndarray  # (R, S) int32, restart at 0 in each segment
    tgt_in: np.ndarray  # (R, T) int32, BOS-shifted target (teacher forcing input)
    tgt_out: np.ndarray  # (R, T) int32, the tokens to predict
    tgt_segments: np.ndarray  # (R, T) int32
    tgt_positions: np.ndarray  # (R, T) int32

    @classmethod
    def packed(cls, src_values: np.ndarray, src_offsets: np.ndarray, tgt_values: np.ndarray,
               tgt_offsets: np.ndarray, placed: np.ndarray, rows: int, S: int, T: int) -> "Batch":
        """Pack examples into rows. Example e's tokens are values[offsets[e]:offsets[e + 1]];
        placed: (n, 2) [example, row] in placement order (which fixes each pair's segment id)."""
        src, src_seg, src_pos = (np.zeros((rows, S), np.int32) for _ in range(3))
        tgt_in, tgt_out, tgt_seg, tgt_pos = (np.zeros((rows, T), np.int32) for _ in range(4))
        ar = np.arange(max(S, T), dtype=np.int32)
        nseg, s_used, t_used = [0] * rows, [0] * rows, [0] * rows
        for ex, r in placed.tolist():
            nseg[r] += 1
            a, b = src_offsets[ex], src_offsets[ex + 1]
            o, n = s_used[r], b - a
            src[r, o : o + n] = src_values[a:b]
            src_seg[r, o : o + n] = nseg[r]
            src_pos[r, o : o + n] = ar[:n]
            s_used[r] += n
            a, b = tgt_offsets[ex], tgt_offsets[ex + 1]
            o, n = t_used[r], b - a
            tgt_out[r, o : o + n] = tgt_values[a:b]
            tgt_in[r, o] = BOS_ID  # teacher forcing: shift right within the segment
            tgt_in[r, o + 1 : o + n] = tgt_values[a : b - 1]
            tgt_seg[r, o : o + n] = nseg[r]
            tgt_pos[r, o : o + n] = ar[:n]
            t_used[r] += n
        return cls(src, src_seg, src_pos, tgt_in, tgt_out, tgt_seg, tgt_pos)

    @classmethod
    def one_per_row(cls, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
                    S: int | None = None, T: int | None = None, rows: int | None = None) -> "Batch":
        """One pair per row, padded to S / T (default: the longest) and to `rows` rows (filler
        rows are all padding, which the model leaves at zero output and zero loss).
        tgt_ids end in EOS; tgt_in = [BOS] + tgt_ids[:-1]."""
        rows = len(src_ids) if rows is None else rows
        S = max((len(s) for s in src_ids), default=1) if S is None else S
        T = max((len(t) for t in tgt_ids), default=1) if T is None else T
        src, src_seg, src_pos = (np.zeros((rows, S), np.int32) for _ in range(3))
        tgt_in, tgt_out, tgt_seg, tgt_pos = (np.zeros((rows, T), np.int32) for _ in range(4))
        for r, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            src[r, : len(s)] = s
            src_seg[r, : len(s)] = 1
            src_pos[r, : len(s)] = np.arange(len(s))
            tgt_out[r, : len(t)] = t
            tgt_in[r, : len(t)] = [BOS_ID] + list(t[:-1])
            tgt_seg[r, : len(t)] = 1
            tgt_pos[r, : len(t)] = np.arange(len(t))
        return cls(src, src_seg, src_pos, tgt_in, tgt_out, tgt_seg, tgt_pos)

    @property
    def rows(self) -> int:
        return int(self.src.shape[0])

    @property
    def src_valid(self) -> np.ndarray:
        """(R, S) bool: real source tokens."""
        return np.asarray(self.src_segments) != 0

    @property
    def tgt_valid(self) -> np.ndarray:
        """(R, T) bool: real target tokens."""
        return np.asarray(self.tgt_segments) != 0


assert PAD_ID == 0  # zeros above are padding
