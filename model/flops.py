"""Parameter and FLOP counts, for MFU and for comparing model sizes."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from model.config import ModelConfig


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (an nnx.State of parameters, say)."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def num_params(model: nnx.Module) -> int:
    """Number of trainable parameters (nnx.Param leaves) of a module."""
    return count_params(nnx.state(model, nnx.Param))


def flops_per_token(cfg: ModelConfig, vocab_size: int, src_len: int, tgt_len: int) -> dict:
    """Training matmul FLOPs (forward + backward) for one example of src_len + tgt_len tokens.

    How it counts (Kaplan et al. 2020 / PaLM's MFU convention):
      - A dense weight of P parameters costs 2P FLOPs per token forward and 4P backward
        (gradients w.r.t. inputs and weights): 6P per token it sees.
          encoder layer:  q/k/v/out (4 D W) + FFN (2 D F)          x source tokens
          decoder layer:  self q/k/v/out (4 D W) + cross q/out (2 D W) + FFN (2 D F)
                                                                   x target tokens
                          cross k/v (2 D W), applied to the memory x source tokens
          output layer:   D V (tied or not; it is a matmul)        x target tokens
        The embedding lookup is a gather, not a matmul: not counted. Biases and LayerNorms
        are elementwise: not counted.
      - Attention per layer: scores Q K^T and weights x V, each 2 * T_q * T_k * W forward,
        times 3 for forward + backward. Encoder self S x S, decoder self T x T (the full
        square: the causal half is computed and masked, not skipped), cross T x S.
    src_len / tgt_len are the lengths actually computed (padded lengths for padded batches).
    With per-layer head counts (model.head_counts) each layer's W is its own heads * head_dim.

    Returns a dict of per-example FLOPs by part, "per_example" (the sum) and "per_token"
    (per_example / (src_len + tgt_len)), so flops_per_step = per_token * tokens in the step.
    """
    d, f, v, s, t = cfg.d_model, cfg.ffn_dim, vocab_size, src_len, tgt_len
    widths = {kind: [h * cfg.resolved_head_dim for h in counts] for kind, counts in cfg.resolved_head_counts().items()}
    enc, dec, cross = widths["encoder_self"], widths["decoder_self"], widths["cross"]
    parts = {
        "encoder_dense": 6 * sum(4 * d * w + 2 * d * f for w in enc) * s,
        "decoder_dense": 6 * sum((4 * d * ws + 2 * d * wc + 2 * d * f) * t + 2 * d * wc * s
                                 for ws, wc in zip(dec, cross)),
        "output": 6 * d * v * t,
        "attention": 3 * 2 * 2 * (sum(enc) * s * s + sum(dec) * t * t + sum(cross) * t * s),
    }
    total = sum(parts.values())
    return {**parts, "per_example": total, "per_token": total / (s + t)}
