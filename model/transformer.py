"""The encoder-decoder Transformer (Vaswani et al. 2017), with packing and incremental decoding.

Shapes: B batch, S source length, T target length, D d_model, V vocab, L layers, H heads.

Packed rows: segment ids 1, 2, 3, ... mark the examples of a row, 0 marks padding; positions
restart at 0 in each segment. Without segments, they are derived as `tokens != pad_id`; without
positions, each row counts 0, 1, 2, ...

Randomness: `dropout_key=None` is deterministic (eval); otherwise every dropout mask is derived
from that key with `jax.random.fold_in` (encoder/decoder -> layer -> sublayer); nothing random
is stored in the module.

Head gates: {"encoder_self": (Le, H), "decoder_self": (Ld, H), "cross": (Ld, H)}, any subset;
each gate multiplies one head's output (1 = on, 0 = removed). Defaults to cfg.head_mask. With
per-layer head counts (cfg.head_counts) a type's gates are either one row per layer of that
layer's length, or an (L, Hmax) array whose row l is read up to layer l's count (Hmax = the
most heads of any layer of the type; the entries past a layer's count are not read).

Attention weights are not a return value: model/attention_maps.py records them from the same
forward (the one way they leave the model).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import causal_mask, padding_mask, segment_mask
from model.config import ATTENTION_TYPES, ModelConfig
from model.dropout import dropout
from model.layers import (
    DecoderLayer,
    EncoderLayer,
    LearnedPositions,
    SinusoidalPositions,
    TokenEmbedding,
    fold_key,
)
from model.matmul import dot_general


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, *, rngs: nnx.Rngs, pad_id: int = 0):
        cfg.validate()
        # Static attributes end up in the graphdef, which must stay hashable (jit caches on it):
        # keep cfg.head_mask (nested lists) as nested tuples in `default_gates` instead, and
        # cfg.head_counts as (type, counts) pairs.
        self.default_gates = (None if cfg.head_mask is None else tuple(
            (name, tuple(tuple(float(g) for g in row) for row in rows))
            for name, rows in dict(cfg.head_mask).items()))
        counts = cfg.head_counts
        self.cfg = dataclasses.replace(cfg, head_mask=None, head_counts=None if counts is None else tuple(
            (name, tuple(int(c) for c in row)) for name, row in dict(counts).items()))
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.dtype = jnp.dtype(cfg.dtype)

        # One embedding for source and target (joint vocabulary).
        self.embed = TokenEmbedding(vocab_size, cfg.d_model, dtype=self.dtype, rngs=rngs)
        if cfg.positions == "learned":
            self.positions = LearnedPositions(cfg.max_len, cfg.d_model, rngs=rngs)
        else:
            self.positions = SinusoidalPositions(cfg.d_model)
        self.dropout_rate = cfg.dropout
        self.encoder_layers = nnx.List([EncoderLayer(cfg, i, rngs=rngs)
                                        for i in range(cfg.encoder_layers)])
        self.decoder_layers = nnx.List([DecoderLayer(cfg, i, rngs=rngs)
                                        for i in range(cfg.decoder_layers)])
        if cfg.norm == "pre":  # pre-LN leaves the residual stream unnormalised: normalise at end
            self.encoder_norm = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
            self.decoder_norm = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
        if not cfg.tie_embeddings:
            self.output = nnx.Linear(cfg.d_model, vocab_size, dtype=self.dtype,
                                     preferred_element_type=jnp.float32, dot_general=dot_general,
                                     kernel_init=nnx.initializers.xavier_uniform(), rngs=rngs)

    # ---- helpers -------------------------------------------------------------------------

    def _segments(self, tokens: jax.Array, segments: jax.Array | None) -> jax.Array:
        return (tokens != self.pad_id).astype(jnp.int32) if segments is None else segments

    @staticmethod
    def _positions(tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
        if positions is not None:
            return positions
        return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)

    @property
    def head_counts(self) -> dict[str, tuple[int, ...]]:
        """{type: (L,)}: the heads of every layer (cfg.head_counts, else num_heads)."""
        return self.cfg.resolved_head_counts()

    def _gates(self, head_gates: dict | None) -> dict[str, list[jax.Array]]:
        """{type: one (H_l,) float32 row per layer}, each cut to its layer's head count."""
        gates = head_gates
        if gates is None and self.default_gates is not None:
            gates = dict(self.default_gates)
        gates = gates or {}
        unknown = set(gates) - set(ATTENTION_TYPES)
        if unknown:  # a typo would otherwise silently leave every head on
            raise ValueError(f"unknown head_gates keys {sorted(unknown)}; expected {ATTENTION_TYPES}")
        out = {}
        for kind, rows in gates.items():
            counts = self.head_counts[kind]
            if not isinstance(rows, (list, tuple)):
                rows = jnp.asarray(rows, jnp.float32)  # (L, Hmax)
            if len(rows) != len(counts):
                raise ValueError(f"head_gates[{kind!r}] has {len(rows)} layers; the model has {len(counts)}")
            out[kind] = []
            for layer, (row, n) in enumerate(zip(rows, counts)):
                row = jnp.asarray(row, jnp.float32).reshape(-1)
                if row.shape[0] < n:  # a short row would broadcast or fail deep inside attention
                    raise ValueError(f"head_gates[{kind!r}] layer {layer} has {row.shape[0]} gates; "
                                     f"the layer has {n} heads")
                out[kind].append(row[:n])
        return out

    @staticmethod
    def _decoder_gates(gates: dict, i: int) -> dict:
        """Layer i's {"self": (H,), "cross": (H,)} gates (None where not given)."""
        return {"self": gates["decoder_self"][i] if "decoder_self" in gates else None,
                "cross": gates["cross"][i] if "cross" in gates else None}

    def _embed(self, tokens: jax.Array, positions: jax.Array, key: jax.Array | None) -> jax.Array:
        x = self.embed(tokens) + self.positions(positions)  # (B, T, D) float32
        return dropout(x, self.dropout_rate, key)

    def _logits(self, x: jax.Array) -> jax.Array:
        if self.cfg.tie_embeddings:
            return self.embed.attend(x)  # (B, T, V) float32
        return self.output(x).astype(jnp.float32)

    def _apply(self, layer: nnx.Module, args: tuple, key, gates) -> jax.Array:
        """Call a layer, through nnx.remat when cfg.remat (recompute activations in backward)."""
        def run(layer, args, key, gates):
            return layer(*args, dropout_key=key, head_gates=gates)
        if self.cfg.remat:
            run = nnx.remat(run)
        return run(layer, args, key, gates)

    # ---- forward ---------------------------------------------------------------------------

    def encode(self, src: jax.Array, src_segments: jax.Array | None = None,
               src_positions: jax.Array | None = None, *, dropout_key: jax.Array | None = None,
               head_gates: dict | None = None) -> jax.Array:
        """src: (B, S) int -> memory (B, S, D)."""
        src_segments = self._segments(src, src_segments)
        mask = segment_mask(src_segments, src_segments)  # (B, 1, S, S)
        gates = self._gates(head_gates).get("encoder_self")
        x = self._embed(src, self._positions(src, src_positions), fold_key(dropout_key, 0))
        for i, layer in enumerate(self.encoder_layers):
            x = self._apply(layer, (x, mask), fold_key(dropout_key, i + 1),
                            None if gates is None else gates[i])
        if self.cfg.norm == "pre":
            x = self.encoder_norm(x)
        return x

    def decode(self, tgt_in: jax.Array, memory: jax.Array, src_segments: jax.Array | None,
               tgt_segments: jax.Array | None = None, tgt_positions: jax.Array | None = None, *,
               dropout_key: jax.Array | None = None, head_gates: dict | None = None) -> jax.Array:
        """tgt_in: (B, T) int (BOS-shifted), memory: (B, S, D), src_segments: (B, S)
        -> logits (B, T, V) float32."""
        if src_segments is None:
            src_segments = jnp.ones(memory.shape[:2], jnp.int32)
        tgt_segments = self._segments(tgt_in, tgt_segments)
        self_mask = segment_mask(tgt_segments, tgt_segments) & causal_mask(tgt_in.shape[1])
        cross_mask = segment_mask(tgt_segments, src_segments)  # (B, 1, T, S)
        gates = self._gates(head_gates)
        x = self._embed(tgt_in, self._positions(tgt_in, tgt_positions), fold_key(dropout_key, 0))
        for i, layer in enumerate(self.decoder_layers):
            x = self._apply(layer, (x, memory, self_mask, cross_mask),
                            fold_key(dropout_key, i + 1), self._decoder_gates(gates, i))
        if self.cfg.norm == "pre":
            x = self.decoder_norm(x)
        return self._logits(x)

    def __call__(self, src: jax.Array, tgt_in: jax.Array, src_segments: jax.Array | None = None,
                 tgt_segments: jax.Array | None = None, src_positions: jax.Array | None = None,
                 tgt_positions: jax.Array | None = None, *, dropout_key: jax.Array | None = None,
                 head_gates: dict | None = None) -> jax.Array:
        """(B, S), (B, T) -> logits (B, T, V) float32."""
        src_segments = self._segments(src, src_segments)
        memory = self.encode(src, src_segments, src_positions,
                             dropout_key=fold_key(dropout_key, 0), head_gates=head_gates)
        return self.decode(tgt_in, memory, src_segments, tgt_segments, tgt_positions,
                           dropout_key=fold_key(dropout_key, 1), head_gates=head_gates)

    # ---- incremental decoding -------------------------------------------------------------
    # The cache is explicit: a list with one dict per decoder layer, k (B, H_l, head_dim, max_len)
    # and v (B, H_l, max_len, head_dim) in the compute dtype (H_l: that layer's self-attention
    # heads), the layout in which model/attention.py's one-query products read it in place; slot
    # i holds the token at position i.

    def init_cache(self, batch_size: int, max_len: int) -> list[dict[str, jax.Array]]:
        d = self.cfg.resolved_head_dim
        return [{"k": jnp.zeros((batch_size, h, d, max_len), self.dtype),
                 "v": jnp.zeros((batch_size, h, max_len, d), self.dtype)} for h in self.head_counts["decoder_self"]]

    def precompute_cross(self, memory: jax.Array) -> list[dict[str, jax.Array]]:
        """Cross-attention keys/values per decoder layer, once per source, laid out like the
        cache: memory (B, S, D) -> [{"k": (B, H, K, S), "v": (B, H, S, K)}] * L."""
        return [layer.cross_attn.cached_kv(memory) for layer in self.decoder_layers]

    def decode_step(self, token: jax.Array, position: jax.Array | int, cache: list,
                    cross_kv: list, src_segments: jax.Array, *, head_gates: dict | None = None,
                    ancestors: jax.Array | None = None, vocab_major: bool = False):
        """Feed one target token per row: token (B,) at position (scalar or (B,)).

        Returns (logits (B, V) float32, new cache). vocab_major gives them transposed, (V, B): with
        tied embeddings that product is faster (TokenEmbedding.attend_vocab_major), as are the
        reductions over the vocabulary after it (greedy decoding). Deterministic (no dropout).
        The target is one sequence per row: it attends to every non-padding source token
        (src_segments != 0).

        Beam search: ancestors (B, beams, L) int32 and a scalar position; token (B * beams,),
        row b * beams + j the j-th hypothesis of source b; the cache from init_cache(B, beams * L);
        cross_kv and src_segments one per source (B rows). See MultiHeadAttention.decode_step.
        """
        b = token.shape[0]
        position = jnp.asarray(position, jnp.int32)  # a scalar stays one: a slice update of the cache
        positions = jnp.broadcast_to(position, (b,))[:, None]  # (B, 1)
        x = self._embed(token[:, None], positions, None)  # (B, 1, D)
        cross_mask = padding_mask(src_segments)  # (B, 1, 1, S)
        gates = self._gates(head_gates)
        new_cache = []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_cache = layer.decode_step(x, cache[i], position, cross_kv[i], cross_mask,
                                               head_gates=self._decoder_gates(gates, i), ancestors=ancestors)
            new_cache.append(layer_cache)
        if self.cfg.norm == "pre":
            x = self.decoder_norm(x)
        if vocab_major:
            if self.cfg.tie_embeddings:
                return self.embed.attend_vocab_major(x[:, 0]), new_cache
            return self._logits(x)[:, 0].T, new_cache
        return self._logits(x)[:, 0], new_cache
