"""Multi-head attention and the boolean masks it takes.

Shapes: B batch, T queries, S keys, H heads, K head_dim, D d_model, W = H * K (attention width).
Masks are boolean, True = may attend, broadcastable to (B, H, T, S); the helpers below return
(B, 1, T, S) (or (1, 1, T, S)) so that they broadcast over heads. Combine them with `&`.

Two code paths give the same outputs:
  - fast: `jax.nn.dot_product_attention` (XLA today; cuDNN flash attention on GPU once JAX picks
    it by itself); used whenever the weights are not recorded and attention dropout is off.
  - explicit: einsum + float32 softmax; applies attention dropout, and when `record_weights` is
    set it sows the weights (B, H, T, S) as an `nnx.Intermediate` named "attention_weights".
    That flag is how attention maps leave the model, and only through model/attention_maps.py,
    which sets it on a merged copy for a probe forward; training never sets it, so the training
    step keeps the fast path and sows nothing.
A query row with no key to attend to (a padding query) gets zero output in both paths, never NaN.

Decoding (one new query per row) has a third path, `_one_query`, on keys and values kept head-major,
keys transposed: k (B, H, K, L) and v (B, H, L, K), in the KV cache (`decode_step`) and in the
cross-attention keys/values computed once per source (`cached_kv`, used by `decode_cross`). Both
products are then plain batched matmuls, (B, H) leading and no operand transposed, which XLA:CPU
runs on the cache where it lies; with the (B, L, H, K) layout of the other paths it copies the
whole cache into that form at every step.

Heads can be removed for real: a module built with num_heads=0 has no q/k/v or output kernel, only
the output bias (`out_bias`), and returns it at every position, which is what the full module
returns with every head gated off (model.head_counts, `python -m train.prune`). Orbax cannot
store zero-size arrays, hence the separate parameter. With gates="concrete" every head has a
Hard Concrete gate (model/gates.py): its `gate_log_alpha` (H,) is a parameter, the gate is sampled
from the module's dropout key in training and deterministic otherwise, and it multiplies the
head's output together with the `head_gates` argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model import gates as hard_concrete
from model.dropout import dropout as apply_dropout
from model.matmul import dot_general

# Finite stand-in for -inf: a fully masked row then softmaxes to finite values instead of NaN.
_MASK_VALUE = -1e9


def padding_mask(segments: jax.Array) -> jax.Array:
    """Key padding mask from segment ids (0 = padding): (B, S) -> (B, 1, 1, S)."""
    return (segments != 0)[:, None, None, :]


def causal_mask(q_len: int, k_len: int | None = None) -> jax.Array:
    """Query i may see keys j <= i: -> (1, 1, T, S)."""
    k_len = q_len if k_len is None else k_len
    return jnp.tril(jnp.ones((q_len, k_len), dtype=bool))[None, None]


def segment_mask(q_segments: jax.Array, k_segments: jax.Array) -> jax.Array:
    """Packed rows: attend only within the same segment id; segment 0 (padding) sees nothing.

    (B, T), (B, S) -> (B, 1, T, S). Padding queries get fully masked rows.
    """
    same = q_segments[:, :, None] == k_segments[:, None, :]  # (B, T, S)
    return (same & (k_segments != 0)[:, None, :])[:, None]


def _masked_softmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the last axis (the keys) of float32 scores where `mask` allows; masked keys get
    weight 0, and a fully masked row is all zero, not uniform."""
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    weights = jax.nn.softmax(jnp.where(mask, logits, _MASK_VALUE), axis=-1)
    return jnp.where(mask, weights, 0.0)


def _xavier_uniform_per_projection(num: int) -> nnx.initializers.Initializer:
    """Xavier-uniform for a fused kernel (D, num * W): each of the `num` projections is
    initialised as if it were its own (D, W) matrix, like separate q/k/v Linears."""
    per_projection = jax.nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=0, out_axis=2, batch_axis=(1,))

    def init(key, shape, dtype=jnp.float32):
        d_in, d_out = shape
        return per_projection(key, (d_in, num, d_out // num), dtype).reshape(shape)

    return init


class MultiHeadAttention(nnx.Module):
    """Multi-head attention: q/k/v projections D -> W, per-head scaled dot product, W -> D.

    Self-attention fuses q, k and v into one (D, 3W) projection (one matmul instead of three);
    cross-attention has q (D, W) and a fused k/v (D, 2W), so that k/v of the encoder memory can be
    computed once per source (`project_kv`) and reused at every decoding step.
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, *,
                 self_attention: bool = True, dropout: float = 0.0, impl: str = "fast",
                 dtype=jnp.float32, gates: str = "none", gate_init: float = 3.0, rngs: nnx.Rngs):
        self.num_heads = num_heads
        if head_dim is None and num_heads == 0:
            raise ValueError("a module without heads needs an explicit head_dim")
        self.head_dim = head_dim if head_dim is not None else d_model // num_heads
        self.self_attention = self_attention
        self.impl = impl
        self.dropout_rate = dropout
        self.dtype = dtype
        self.record_weights = False  # set only by model/attention_maps.py (see the module docstring)
        width = num_heads * self.head_dim

        def linear(d_in: int, d_out: int, num: int = 1) -> nnx.Linear:
            return nnx.Linear(d_in, d_out, dtype=dtype, dot_general=dot_general, rngs=rngs,
                              kernel_init=_xavier_uniform_per_projection(num))

        if num_heads == 0:  # only the output bias is left (nnx.Linear's bias init: zeros)
            self.out_bias = nnx.Param(jnp.zeros((d_model,), jnp.float32))
            return
        if self_attention:
            self.qkv = linear(d_model, 3 * width, 3)
        else:
            self.q = linear(d_model, width)
            self.kv = linear(d_model, 2 * width, 2)
        self.out = linear(width, d_model)
        if gates == "concrete":
            self.gate_log_alpha = nnx.Param(jnp.full((num_heads,), gate_init, jnp.float32))  # (H,)

    def _heads(self, x: jax.Array, num: int) -> list[jax.Array]:
        """(B, T, num * W) -> num arrays (B, T, H, K)."""
        b, t, _ = x.shape
        x = x.reshape(b, t, num, self.num_heads, self.head_dim)
        return [x[:, :, i] for i in range(num)]

    @property
    def gated(self) -> bool:
        """Whether this module has Hard Concrete gates (a `gate_log_alpha` parameter)."""
        return hasattr(self, "gate_log_alpha")

    def project_kv(self, context: jax.Array) -> dict[str, jax.Array]:
        """Keys and values of a cross-attention context: (B, S, D) -> {"k", "v"}: (B, S, H, K)."""
        if self.num_heads == 0:
            empty = jnp.zeros(context.shape[:2] + (0, self.head_dim), self.dtype)
            return {"k": empty, "v": empty}
        k, v = self._heads(self.kv(context), 2)
        return {"k": k, "v": v}

    def _bias_only(self, x: jax.Array) -> jax.Array:
        """The output of a module without heads: its output bias at every position, (B, T, D).
        It records no attention weights (model/attention_maps.py fills in its empty layer)."""
        bias = self.out_bias[...].astype(self.dtype)
        return jnp.broadcast_to(bias, x.shape[:2] + bias.shape)

    def __call__(self, x: jax.Array, mask: jax.Array | None, context: jax.Array | None = None, *,
                 kv: dict[str, jax.Array] | None = None, dropout_key: jax.Array | None = None,
                 head_gates: jax.Array | None = None) -> jax.Array:
        """Attend from x (B, T, D) to itself, or to `context` (B, S, D) / precomputed `kv`.

        mask: boolean, broadcastable to (B, H, T, S). head_gates: (H,) multiplies each head's
        output before the output projection (0 removes the head; differentiable).
        Returns (B, T, D).
        """
        if self.num_heads == 0:
            return self._bias_only(x)
        if self.self_attention:
            q, k, v = self._heads(self.qkv(x), 3)  # each (B, T, H, K)
        else:
            (q,) = self._heads(self.q(x), 1)
            kv = self.project_kv(context) if kv is None else kv
            k, v = kv["k"], kv["v"]  # (B, S, H, K)
        return self._attend(q, k, v, mask, dropout_key, head_gates)

    def cached_kv(self, context: jax.Array) -> dict[str, jax.Array]:
        """Cross-attention keys and values for decoding, once per source, in the decoding layout:
        (B, S, D) -> {"k": (B, H, K, S), "v": (B, H, S, K)}."""
        kv = self.project_kv(context)  # (B, S, H, K) each
        return {"k": kv["k"].transpose(0, 2, 3, 1), "v": kv["v"].transpose(0, 2, 1, 3)}

    def decode_cross(self, x: jax.Array, kv: dict[str, jax.Array], mask: jax.Array | None, *,
                     head_gates: jax.Array | None = None, beams: int = 1) -> jax.Array:
        """Cross-attention of one new token per row to `cached_kv`'s keys and values.

        x: (B * beams, 1, D), row b * beams + j the j-th hypothesis of source b (beam search
        reads each source's keys and values once for all its beams); mask broadcastable to
        (B, H, beams, S). Returns (B * beams, 1, D)."""
        if self.num_heads == 0:
            return self._bias_only(x)
        (q,) = self._heads(self.q(x), 1)  # (B * beams, 1, H, K)
        return self._project_out(self._one_query(q, kv["k"], kv["v"], mask, beams), head_gates, None)

    def decode_step(self, x: jax.Array, cache: dict[str, jax.Array], position: jax.Array, *,
                    head_gates: jax.Array | None = None, ancestors: jax.Array | None = None):
        """One step of cached causal self-attention.

        x: (B, 1, D) the new token; cache: {"k": (B, H, K, L), "v": (B, H, L, K)} for slots < position;
        position: the slot to write, an int scalar shared by all rows (what greedy and beam
        search use: one slice update) or (B,) per row (a scatter, much slower on the CPU).
        Returns ((B, 1, D), new cache).

        Beam search (ancestors (B, beams, L) int32, position a scalar): x is (B * beams, 1, D),
        row b * beams + j the j-th hypothesis of sentence b, and the cache (L replaced by beams * L)
        holds in slot i * L + s what the hypothesis in place i wrote at position s. Hypothesis j's
        prefix at position s is in place ancestors[b, j, s], so reordering the beams reorders
        this small index instead of the cache; attention reads the beams' slots together and
        masks all but the ancestors'.
        """
        if self.num_heads == 0:
            return self._bias_only(x), cache
        q, k, v = self._heads(self.qkv(x), 3)  # each (B * beams, 1, H, K)
        position = jnp.asarray(position, jnp.int32)
        if ancestors is not None:
            return self._decode_step_beams(q, k, v, cache, position, ancestors, head_gates)
        new = {"k": k.transpose(0, 2, 3, 1), "v": v.transpose(0, 2, 1, 3)}  # (B, H, K, 1), (B, H, 1, K)
        axis = {"k": 3, "v": 2}  # the position axis
        if position.ndim == 0:
            cache = {name: jax.lax.dynamic_update_slice_in_dim(cache[name], new[name].astype(cache[name].dtype),
                                                               position, axis=axis[name])
                     for name in ("k", "v")}
        else:
            rows = jnp.arange(x.shape[0])
            cache = {"k": cache["k"].at[rows, :, :, position].set(new["k"][..., 0].astype(cache["k"].dtype)),
                     "v": cache["v"].at[rows, :, position].set(new["v"][:, :, 0].astype(cache["v"].dtype))}
        slots = jnp.arange(cache["v"].shape[2])
        visible = slots[None, :] <= jnp.broadcast_to(position, (x.shape[0],))[:, None]  # (B, L)
        out = self._one_query(q, cache["k"], cache["v"], visible[:, None, None, :])
        return self._project_out(out, head_gates, None), cache

    def _decode_step_beams(self, q, k, v, cache, position, ancestors, head_gates):
        """decode_step for beam search (see there): q, k, v (B * beams, 1, H, K)."""
        b, beams, length = ancestors.shape
        h, d = self.num_heads, self.head_dim

        def write(slots: jax.Array, new: jax.Array, axis: int) -> jax.Array:
            """new (B * beams, 1, H, K) into `slots`, whose `axis` runs over beams * L."""
            new = new.reshape(b, beams, h, d).transpose(0, 2, 1, 3)  # (B, H, beams, K)
            if axis == 3:  # keys (B, H, K, beams * L)
                new, view = new.transpose(0, 1, 3, 2)[..., None], (b, h, d, beams, length)
            else:  # values (B, H, beams * L, K)
                new, view = new[:, :, :, None], (b, h, beams, length, d)
            slots = jax.lax.dynamic_update_slice_in_dim(slots.reshape(view), new.astype(slots.dtype), position,
                                                        axis=axis + 1)
            return slots.reshape(slots.shape[:axis] + (beams * length,) + slots.shape[axis + 2:])

        cache = {"k": write(cache["k"], k, 3), "v": write(cache["v"], v, 2)}
        place = jnp.arange(beams, dtype=ancestors.dtype)
        is_ancestor = ancestors[:, :, None, :] == place[None, None, :, None]  # (B, beams j, beams i, L)
        written = jnp.arange(length) <= position  # (L,)
        visible = (is_ancestor & written).reshape(b, 1, beams, beams * length)  # key i * L + s
        out = self._one_query(q, cache["k"], cache["v"], visible, beams)
        return self._project_out(out, head_gates, None), cache

    def _attend(self, q, k, v, mask, dropout_key, head_gates):
        dropout_on = dropout_key is not None and self.dropout_rate > 0.0
        if self.record_weights or dropout_on or self.impl == "explicit":
            out, weights = self._explicit(q, k, v, mask, dropout_key)  # (B, T, H, K)
            if self.record_weights:
                self.sow(nnx.Intermediate, "attention_weights", weights)  # (B, H, T, S) float32
        else:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=None)
            if mask is not None:
                # Rows with no visible key: XLA gives the mean of v; zero them to match the
                # explicit path (their result is never used, but both paths should agree).
                has_key = jnp.any(mask, axis=-1)  # (B or 1, H or 1, T)
                out = out * jnp.swapaxes(has_key, 1, 2)[..., None].astype(out.dtype)
        return self._project_out(out, head_gates, dropout_key)

    def _project_out(self, out: jax.Array, head_gates: jax.Array | None, dropout_key: jax.Array | None) -> jax.Array:
        """Each head's output (B, T, H, K) times its gate, then W -> D: (B, T, D)."""
        gates = self._gates(head_gates, dropout_key)
        if gates is not None:
            out = out * gates.astype(out.dtype)[None, None, :, None]
        b, t = out.shape[:2]
        return self.out(out.reshape(b, t, -1))  # (B, T, D)

    def _gates(self, head_gates: jax.Array | None, dropout_key: jax.Array | None) -> jax.Array | None:
        """The (H,) factor on each head's output: head_gates times the Hard Concrete gates, if any.
        The gate noise has its own key, folded from the dropout key (training); no key, no noise."""
        if not self.gated:
            return head_gates
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, hard_concrete.GATE_KEY_SITE)
        z = hard_concrete.gate_values(self.gate_log_alpha[...], key)  # (H,) float32
        return z if head_gates is None else z * head_gates.astype(jnp.float32)

    def _one_query(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                   beams: int = 1) -> jax.Array:
        """Attention of one query per row in the decoding layout: q (B * beams, 1, H, K), k
        (B, H, K, S) and v (B, H, S, K) shared by each source's `beams` rows, mask broadcastable to
        (B, H, beams, S) -> (B * beams, 1, H, K). Scores and softmax in float32, as on the
        explicit path; a row with no visible key gets zero output."""
        rows, _, h, d = q.shape
        queries = q.reshape(rows // beams, beams, h, d).transpose(0, 2, 1, 3)  # (B, H, beams, K)
        logits = jnp.einsum("bhjk,bhks->bhjs", queries, k,
                            preferred_element_type=jnp.float32) * self.head_dim ** -0.5  # (B, H, beams, S)
        weights = _masked_softmax(logits, mask)
        out = jnp.einsum("bhjs,bhsk->bhjk", weights.astype(v.dtype), v)  # (B, H, beams, K)
        return out.transpose(0, 2, 1, 3).reshape(rows, 1, h, d)

    def _explicit(self, q, k, v, mask, dropout_key):
        scale = self.head_dim ** -0.5
        logits = jnp.einsum("bthk,bshk->bhts", q, k,
                            preferred_element_type=jnp.float32) * scale  # (B, H, T, S)
        weights = _masked_softmax(logits, mask)
        dropped = apply_dropout(weights, self.dropout_rate, dropout_key)
        out = jnp.einsum("bhts,bshk->bthk", dropped.astype(v.dtype), v)  # (B, T, H, K)
        return out, weights
