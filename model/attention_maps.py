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
    float32; rows of padding queries are all zero. Without segments, one example per row
    (padding = PAD tokens)."""
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
    maps = {}
    for kind in types:
        layers, name = paths[kind]
        per_layer = [sown[layers][i][name]["attention_weights"].get_value()[-1] for i in range(len(modules[kind]))]
        maps[kind] = jnp.stack(per_layer).astype(jnp.float32)  # (L, B, H, Tq, Tk)
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
