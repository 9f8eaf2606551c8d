"""The one way attention weights leave the model: a forward pass that records them.

`forward_with_attention(model, src, tgt_in, ...)` runs the ordinary teacher-forced forward
(deterministic: no dropout) with `record_weights` set on every MultiHeadAttention, so that each
sows its weights, and collects them with `nnx.capture`. The model's own methods never change
their return type, and the training step, which never sets the flag, keeps the fast attention
path. The attention probe, the alignment evaluator and the head tools all read maps through here.

Call it on a merged model inside `jax.jit` (the flag is set on that copy only):

    model = nnx.merge(graphdef, params)
    logits, maps = forward_with_attention(model, src, tgt_in)
    maps["cross"]  # (L, B, H, T, S) float32

Layers with fewer heads than the widest layer of their type (model.head_counts) are padded to
its head count with NaN: a NaN map means "no such head", never a weight (numpy's nan* functions
and the analyses skip them; a real head's map is never NaN, its padding rows are 0).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import MultiHeadAttention
from model.config import ATTENTION_TYPES


def attention_modules(model: nnx.Module) -> dict[str, list[MultiHeadAttention]]:
    """Every attention module of a Transformer, by type, in layer order."""
    return {"encoder_self": [layer.self_attn for layer in model.encoder_layers],
            "decoder_self": [layer.self_attn for layer in model.decoder_layers],
            "cross": [layer.cross_attn for layer in model.decoder_layers]}


def forward_with_attention(model: nnx.Module, src: jax.Array, tgt_in: jax.Array,
                           src_segments: jax.Array | None = None, tgt_segments: jax.Array | None = None,
                           *, head_gates: dict | None = None,
                           types: tuple[str, ...] = ATTENTION_TYPES) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher-forced logits (B, T, V) and the attention weights of `types`:
    {"encoder_self": (Le, B, H, S, S), "decoder_self": (Ld, B, H, T, T), "cross": (Ld, B, H, T, S)},
    float32; rows of padding queries are all zero; H is the type's widest layer, narrower layers
    are NaN-padded (module docstring). Without segments, one example per row (padding = PAD tokens)."""
    unknown = set(types) - set(ATTENTION_TYPES)
    if unknown:
        raise ValueError(f"unknown attention types {sorted(unknown)}; expected {ATTENTION_TYPES}")
    modules = attention_modules(model)
    recorded = [m for kind in types for m in modules[kind]]
    for m in recorded:
        m.record_weights = True
    # Rematerialisation only trades memory in a backward pass, which this forward does not have;
    # nnx.remat would also hide the sown weights from nnx.capture. Same values without it.
    remat, model.cfg = model.cfg, dataclasses.replace(model.cfg, remat=False)
    try:
        logits, sown = nnx.capture(
            lambda m: m(src, tgt_in, src_segments, tgt_segments, dropout_key=None, head_gates=head_gates),
            nnx.Intermediate)(model)
    finally:
        model.cfg = remat
        for m in recorded:
            m.record_weights = False
    # `sown` mirrors the module tree; read it back through the same paths.
    paths = {"encoder_self": ("encoder_layers", "self_attn"), "decoder_self": ("decoder_layers", "self_attn"),
             "cross": ("decoder_layers", "cross_attn")}
    b, s, t = src.shape[0], src.shape[1], tgt_in.shape[1]
    lengths = {"encoder_self": (s, s), "decoder_self": (t, t), "cross": (t, s)}
    maps = {}
    for kind in types:
        layers, name = paths[kind]
        widest = max((m.num_heads for m in modules[kind]), default=0)
        per_layer = []
        for i, m in enumerate(modules[kind]):
            w = (sown[layers][i][name]["attention_weights"].get_value()[-1].astype(jnp.float32) if m.num_heads
                 else jnp.zeros((b, 0) + lengths[kind], jnp.float32))  # (B, H_l, Tq, Tk)
            if m.num_heads < widest:  # NaN = no such head
                w = jnp.concatenate([w, jnp.full((b, widest - m.num_heads) + lengths[kind], jnp.nan)], axis=1)
            per_layer.append(w)
        maps[kind] = jnp.stack(per_layer)  # (L, B, H, Tq, Tk)
    return logits, maps


def call_with_weights(module: MultiHeadAttention, *args, **kwargs) -> tuple[jax.Array, jax.Array]:
    """One call of a single attention module, and its weights (B, H, T, S) float32: for looking
    at one module on its own (tests, notebooks). Takes the module's own arguments."""
    module.record_weights = True
    try:
        out, sown = nnx.capture(lambda m: m(*args, **kwargs), nnx.Intermediate)(module)
    finally:
        module.record_weights = False
    return out, sown["attention_weights"].get_value()[-1]
