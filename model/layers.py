"""Transformer building blocks: embeddings, positions, feed-forward, encoder and decoder layers.

Dropout randomness comes only from the `dropout_key` argument (None = deterministic); a layer
derives one key per dropout site with `jax.random.fold_in`, so nothing random lives in a module.
Residual stream stays float32; Linear layers compute in `dtype` (bf16 option).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import MultiHeadAttention
from model.config import ModelConfig
from model.dropout import dropout
from model.matmul import dot_general, matmul

_xavier = nnx.initializers.xavier_uniform()


def fold_key(key: jax.Array | None, site: int) -> jax.Array | None:
    """A distinct key per dropout site (or layer), or None when deterministic."""
    return None if key is None else jax.random.fold_in(key, site)


class TokenEmbedding(nnx.Module):
    """Token lookup scaled by sqrt(d_model) (Vaswani et al.); `attend` is the tied output layer."""

    def __init__(self, vocab_size: int, d_model: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        # std d_model**-0.5 so that the scaled embeddings have unit variance.
        self.embedding = nnx.Param(
            nnx.initializers.normal(d_model ** -0.5)(rngs.params(), (vocab_size, d_model)))
        self.scale = math.sqrt(d_model)
        self.dtype = dtype

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.embedding[...][tokens] * self.scale  # (B, T, D) float32

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits against the embedding matrix: (B, T, D) -> (B, T, V) float32."""
        b, t, d = x.shape
        table = self.embedding[...].astype(self.dtype)  # (V, D)
        logits = matmul(x.astype(self.dtype).reshape(b * t, d), table.T,
                        preferred_element_type=jnp.float32)  # (B * T, V)
        return logits.reshape(b, t, -1)

    def attend_vocab_major(self, x: jax.Array) -> jax.Array:
        """`attend` for one position per row, transposed: (B, D) -> (V, B) float32.

        table @ x^T leaves the (V, D) table in the layout it is stored in, and with few rows
        (decoding's) XLA:CPU runs it faster than x @ table^T, the reductions over the
        vocabulary that follow too (down the columns, B lanes wide). Greedy decoding uses it."""
        table = self.embedding[...].astype(self.dtype)  # (V, D)
        return jax.lax.dot_general(table, x.astype(self.dtype), (((1,), (1,)), ((), ())),
                                   preferred_element_type=jnp.float32)  # (V, B)


class SinusoidalPositions(nnx.Module):
    """Fixed sin/cos encodings (Vaswani et al.; sin and cos halves concatenated, as in
    tensor2tensor/fairseq). Computed from explicit positions since packed rows restart them."""

    def __init__(self, d_model: int):
        self.d_model = d_model

    def __call__(self, positions: jax.Array) -> jax.Array:
        half = self.d_model // 2
        # Frequencies 1 / 10000^(i / (half - 1)), i = 0..half-1 (t2t's geometric spacing).
        inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
        angles = positions[..., None].astype(jnp.float32) * inv_freq  # (B, T, D/2)
        enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
        if self.d_model % 2:  # odd d_model: one zero column
            enc = jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, 1)])
        return enc  # (B, T, D)


class LearnedPositions(nnx.Module):
    """A learned vector per position 0..max_len-1."""

    def __init__(self, max_len: int, d_model: int, *, rngs: nnx.Rngs):
        self.embedding = nnx.Param(
            nnx.initializers.normal(d_model ** -0.5)(rngs.params(), (max_len, d_model)))

    def __call__(self, positions: jax.Array) -> jax.Array:
        return self.embedding[...][positions]  # (B, T, D)


class FeedForward(nnx.Module):
    """Position-wise D -> F -> D with ReLU or GELU."""

    def __init__(self, d_model: int, ffn_dim: int, activation: str = "relu", *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.up = nnx.Linear(d_model, ffn_dim, kernel_init=_xavier, dtype=dtype,
                             dot_general=dot_general, rngs=rngs)
        self.down = nnx.Linear(ffn_dim, d_model, kernel_init=_xavier, dtype=dtype,
                               dot_general=dot_general, rngs=rngs)
        self.activation = jax.nn.relu if activation == "relu" else jax.nn.gelu

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(self.activation(self.up(x)))  # (B, T, D)


class _Sublayers(nnx.Module):
    """Residual wiring shared by encoder and decoder layers.

    pre-LN:  x + dropout(f(norm(x)))   (stable without warmup tricks; needs a final norm)
    post-LN: norm(x + dropout(f(x)))   (Vaswani et al.)
    """

    def _init_common(self, cfg: ModelConfig, num_norms: int, rngs: nnx.Rngs):
        self.pre_norm = cfg.norm == "pre"
        self.norms = nnx.List([nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
                               for _ in range(num_norms)])
        self.dropout_rate = cfg.dropout

    def _input(self, x: jax.Array, i: int) -> jax.Array:
        return self.norms[i](x) if self.pre_norm else x

    def _residual(self, x: jax.Array, y: jax.Array, i: int, key: jax.Array | None) -> jax.Array:
        y = dropout(y, self.dropout_rate, key).astype(x.dtype)
        return x + y if self.pre_norm else self.norms[i](x + y)


def attention_module(cfg: ModelConfig, kind: str, layer: int, *, rngs: nnx.Rngs) -> MultiHeadAttention:
    """Layer `layer`'s attention of type `kind`, with that layer's head count (model.head_counts)
    at the model's head_dim."""
    return MultiHeadAttention(
        cfg.d_model, cfg.resolved_head_counts()[kind][layer], cfg.resolved_head_dim,
        self_attention=kind != "cross", dropout=cfg.attention_dropout, impl=cfg.attention_impl,
        dtype=jnp.dtype(cfg.dtype), gates=cfg.head_gates, gate_init=cfg.gate_init, rngs=rngs)


class EncoderLayer(_Sublayers):
    def __init__(self, cfg: ModelConfig, layer: int = 0, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.self_attn = attention_module(cfg, "encoder_self", layer, rngs=rngs)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, dtype=dtype, rngs=rngs)
        self._init_common(cfg, 2, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, *, dropout_key: jax.Array | None = None,
                 head_gates: jax.Array | None = None) -> jax.Array:
        """x: (B, S, D), mask: (B, 1, S, S). Returns (B, S, D)."""
        h = self.self_attn(self._input(x, 0), mask, dropout_key=fold_key(dropout_key, 0),
                           head_gates=head_gates)
        x = self._residual(x, h, 0, fold_key(dropout_key, 1))
        return self._residual(x, self.ffn(self._input(x, 1)), 1, fold_key(dropout_key, 2))


class DecoderLayer(_Sublayers):
    def __init__(self, cfg: ModelConfig, layer: int = 0, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.self_attn = attention_module(cfg, "decoder_self", layer, rngs=rngs)
        self.cross_attn = attention_module(cfg, "cross", layer, rngs=rngs)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, dtype=dtype, rngs=rngs)
        self._init_common(cfg, 3, rngs)

    def __call__(self, x: jax.Array, memory: jax.Array, self_mask: jax.Array,
                 cross_mask: jax.Array, *, dropout_key: jax.Array | None = None,
                 head_gates: dict | None = None) -> jax.Array:
        """x: (B, T, D), memory: (B, S, D), masks (B, 1, T, T) and (B, 1, T, S).

        head_gates: {"self": (H,), "cross": (H,)} or None. Returns (B, T, D).
        """
        gates = head_gates or {}
        h = self.self_attn(self._input(x, 0), self_mask, dropout_key=fold_key(dropout_key, 0),
                           head_gates=gates.get("self"))
        x = self._residual(x, h, 0, fold_key(dropout_key, 1))
        h = self.cross_attn(self._input(x, 1), cross_mask, memory,
                            dropout_key=fold_key(dropout_key, 2), head_gates=gates.get("cross"))
        x = self._residual(x, h, 1, fold_key(dropout_key, 3))
        return self._residual(x, self.ffn(self._input(x, 2)), 2, fold_key(dropout_key, 4))

    def decode_step(self, x: jax.Array, cache: dict, position: jax.Array, cross_kv: dict,
                    cross_mask: jax.Array, *, head_gates: dict | None = None,
                    ancestors: jax.Array | None = None):
        """Incremental version of __call__ for one new token (no dropout).

        x: (B, 1, D); cache: {"k": (B, H, K, L), "v": (B, H, L, K)}, H this layer's self-attention
        heads; position: () or (B,); cross_kv: the same layout over the source (S for L);
        cross_mask: (B, 1, 1, S). Returns ((B, 1, D), new cache).
        Beam search: ancestors (B, beams, L), x (B * beams, 1, D), the cache's L is beams * L,
        cross_kv and cross_mask one per source (MultiHeadAttention.decode_step).
        """
        gates = head_gates or {}
        beams = 1 if ancestors is None else ancestors.shape[1]
        h, cache = self.self_attn.decode_step(self._input(x, 0), cache, position,
                                              head_gates=gates.get("self"), ancestors=ancestors)
        x = self._residual(x, h, 0, None)
        h = self.cross_attn.decode_cross(self._input(x, 1), cross_kv, cross_mask, head_gates=gates.get("cross"),
                                         beams=beams)
        x = self._residual(x, h, 1, None)
        x = self._residual(x, self.ffn(self._input(x, 2)), 2, None)
        return x, cache
