"""Physical head pruning: a smaller model that computes what the full one computes with some heads
gated off.

A head h of an attention module owns, for head_dim K and width W = H * K:
    self-attention  qkv kernel (D, 3W) and bias (3W,), laid out [q | k | v], each [head 0 | head 1 | ...]
    cross-attention q kernel (D, W) and bias (W,); kv kernel (D, 2W) and bias (2W,), [k | v]
    both            rows h*K .. (h+1)*K - 1 of the output kernel (W, D); gate_log_alpha[h] if gated
(the layout `MultiHeadAttention._heads` reads). Keeping a set of heads slices each part and leaves
the output bias whole; keeping none leaves only the output bias (`out_bias`, see model/attention.py).
Gating a head off zeroes its output before the output projection, so its rows of the output
kernel are all it ever touched there: the pruned model's outputs equal the gated full model's.

`prune_tree` fills any tree built for the pruned model (its parameters, or a whole training state
whose Adam moments mirror them) from the same tree of the full model, so optimizer state is pruned
exactly like the parameters it belongs to.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from model.config import ATTENTION_TYPES, ModelConfig

Keep = dict[str, Sequence[Sequence[int]]]  # {type: [kept head indices of each layer]}

# Parameter name -> number of [head 0 | head 1 | ...] blocks along its head axis (the kernel's last
# axis, the bias's only one), for the input projections.
_PROJECTIONS = {"qkv": 3, "q": 1, "kv": 2}


def pruned_config(cfg: ModelConfig, keep: Keep) -> ModelConfig:
    """The config of the pruned model: per-layer head_counts at the same head_dim, and the run's
    head_mask (if any) cut to the kept heads (dropped when what is left is all ones)."""
    counts = cfg.resolved_head_counts()
    for kind in ATTENTION_TYPES:
        for layer, heads in enumerate(keep[kind]):
            if sorted(set(heads)) != list(heads) or any(not 0 <= h < counts[kind][layer] for h in heads):
                raise ValueError(f"keep[{kind!r}][{layer}] = {list(heads)} must be increasing head indices "
                                 f"below {counts[kind][layer]}")
    mask = None
    if cfg.head_mask:
        mask = {kind: [[float(rows[layer][h]) for h in keep[kind][layer]] for layer in range(len(rows))]
                for kind, rows in dict(cfg.head_mask).items()}
        if all(g == 1.0 for rows in mask.values() for row in rows for g in row):
            mask = None
    # num_heads and head_dim stay: they fix head_dim, which every kept head still has.
    return dataclasses.replace(cfg, head_mask=mask,
                               head_counts={kind: [len(h) for h in keep[kind]] for kind in ATTENTION_TYPES})


def _name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _take_heads(x: jax.Array, heads: Sequence[int], head_dim: int, blocks: int, axis: int) -> jax.Array:
    """Keep `heads` of each of the `blocks` [head 0 | head 1 | ...] groups along `axis` of x."""
    shape = x.shape
    split = shape[:axis] + (blocks, shape[axis] // (blocks * head_dim), head_dim) + shape[axis + 1:]
    kept = jnp.take(x.reshape(split), jnp.asarray(heads, jnp.int32), axis=axis + 1)
    return kept.reshape(shape[:axis] + (blocks * len(heads) * head_dim,) + shape[axis + 1:])


def _source(names: tuple[str, ...], keep: Keep, head_dim: int) -> tuple[tuple[str, ...], Callable]:
    """Where a leaf of the pruned tree comes from in the full tree, and how it is cut."""
    for i in range(len(names) - 3):
        stack, module = names[i], names[i + 2]
        if stack not in ("encoder_layers", "decoder_layers") or module not in ("self_attn", "cross_attn"):
            continue
        kind = "cross" if module == "cross_attn" else ("encoder_self" if stack == "encoder_layers" else "decoder_self")
        heads = keep[kind][int(names[i + 1])]
        param, rest = names[i + 3], names[i + 4:]
        here = names[: i + 3]
        if param == "out_bias":  # a module left without heads keeps the full one's output bias
            return here + ("out", "bias") + rest, lambda x: x
        if param == "gate_log_alpha":
            return names, lambda x: jnp.take(x, jnp.asarray(heads, jnp.int32), axis=0)
        if param == "out" and rest[:1] == ("kernel",):
            return names, lambda x: _take_heads(x, heads, head_dim, 1, axis=0)
        if param in _PROJECTIONS:
            blocks = _PROJECTIONS[param]
            return names, lambda x: _take_heads(x, heads, head_dim, blocks, axis=x.ndim - 1)
        return names, lambda x: x
    return names, lambda x: x


def prune_tree(target: Any, full: Any, keep: Keep, head_dim: int) -> Any:
    """`target` (a tree of the pruned model's shapes: arrays or ShapeDtypeStructs) filled from
    `full`, the same tree of the full model: every attention leaf cut to the kept heads, every
    other leaf copied. Raises ValueError when a leaf's cut shape is not the target's."""
    flat, _ = jax.tree_util.tree_flatten_with_path(full)
    source = {tuple(_name(k) for k in path): leaf for path, leaf in flat}

    def fill(path, leaf):
        names = tuple(_name(k) for k in path)
        where, cut = _source(names, keep, head_dim)
        if where not in source:
            raise ValueError(f"{'.'.join(names)}: the full tree has no {'.'.join(where)}")
        value = cut(jnp.asarray(source[where]))
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(f"{'.'.join(names)}: cut to {tuple(value.shape)}, the pruned model has {tuple(leaf.shape)}")
        return value.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, target)
