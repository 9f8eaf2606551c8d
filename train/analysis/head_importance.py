"""Head importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?") and pruning.

Every attention head's output is multiplied by a gate xi_h (model `head_gates`, 1 = on). The
importance of a head is the expected magnitude of the loss gradient with respect to its gate,

    I_h = sum_x |dL(x)/dxi_h| / (target tokens),   L(x) = summed token NLL of sentence x,

with the absolute value taken per sentence, as in the paper (a per-batch gradient would let
sentences cancel). Per-sentence gradients come from `jax.vmap` over rows of one-example batches;
only the gates are differentiated, so this costs about one batched backward pass. Scores are
then divided by their layer's L2 norm (the paper's per-layer normalisation) and heads are
pruned globally, over encoder self, decoder self and cross attention together, in order of
increasing normalised importance.

Everything jitted takes the gates as an argument: switching heads off recompiles nothing.

Models with per-layer head counts (model.head_counts, a pruned run) use the same (L, H) grids,
H the widest layer of the type: `present_heads` says which entries are heads; the others are NaN
in importance and never enter a pruning order.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data.batch import Batch
from data.config import PAD_ID
from model.config import ATTENTION_TYPES

Gates = dict[str, Any]  # {"encoder_self": (Le, H), "decoder_self": (Ld, H), "cross": (Ld, H)}
Head = tuple[str, int, int]  # (attention type, layer, head)


def gate_shapes(model_cfg: Any) -> dict[str, tuple[int, int]]:
    """(layers, heads) of each attention type, from a ModelConfig; heads = its widest layer."""
    return {kind: (len(counts), max(counts, default=0)) for kind, counts in model_cfg.resolved_head_counts().items()}


def present_heads(model_cfg: Any) -> dict[str, np.ndarray]:
    """{type: (L, H) bool}: which grid entries are heads of the model (all of them without head_counts)."""
    out = {}
    for kind, counts in model_cfg.resolved_head_counts().items():
        width = max(counts, default=0)
        out[kind] = np.arange(width)[None, :] < np.asarray(counts, int).reshape(-1, 1)
    return out


def grid(rows: Sequence[Sequence[float]], width: int, fill: float = np.nan) -> np.ndarray:
    """Ragged per-layer rows -> an (L, width) float array, `fill` past each row's end."""
    out = np.full((len(rows), width), fill, np.float64)
    for layer, row in enumerate(rows):
        out[layer, : len(row)] = row
    return out


def to_lists(values: np.ndarray, present: np.ndarray, digits: Optional[int] = None) -> list[list]:
    """(L, H) -> each layer's row cut to its heads (what heads.json holds): ragged for a pruned model."""
    rows = np.round(values, digits) if digits is not None else values
    return [[v.item() for v, ok in zip(row, keep) if ok] for row, keep in zip(rows, present)]


def all_on(shapes: dict[str, tuple[int, int]]) -> Gates:
    return {k: np.ones(shapes[k], np.float32) for k in ATTENTION_TYPES}


def base_gates(model_cfg: Any) -> Gates:
    """All heads on, except those the run's own model.head_mask switched off: (L, H) per type."""
    gates = all_on(gate_shapes(model_cfg))
    for kind, rows in (model_cfg.head_mask or {}).items():
        gates[kind] = grid(rows, gates[kind].shape[1], fill=1.0).astype(np.float32)
    return gates


# ---- losses and gradients (pure; jit them) ---------------------------------------------------

def _example_nll(logits: jax.Array, tgt_out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed NLL and token count per row: logits (B, T, V), tgt_out (B, T) -> (B,), (B,)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, tgt_out[..., None], axis=-1)[..., 0]  # (B, T)
    mask = (tgt_out != PAD_ID).astype(jnp.float32)
    return jnp.sum(nll * mask, axis=-1), jnp.sum(mask, axis=-1)


def make_loss_fn(graphdef: nnx.GraphDef) -> Callable:
    """Pure (params, gates, batch) -> (nll (B,), tokens (B,)) with one example per row, no dropout."""

    def loss(params: nnx.State, gates: Gates, batch: Batch) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(graphdef, params)
        logits = model(batch.src, batch.tgt_in, head_gates=gates)  # (B, T, V)
        return _example_nll(logits, batch.tgt_out)

    return loss


def make_gate_grad_fn(graphdef: nnx.GraphDef) -> Callable:
    """Pure (params, gates, batch) -> (nll (B,), tokens (B,), {type: (B, L, H)} per-example
    gradients of each sentence's summed NLL with respect to the gates)."""

    def grads(params: nnx.State, gates: Gates, batch: Batch):
        model = nnx.merge(graphdef, params)

        def sentence_nll(g: Gates, src: jax.Array, tgt_in: jax.Array, tgt_out: jax.Array):
            logits = model(src[None], tgt_in[None], head_gates=g)  # (1, T, V)
            nll, tokens = _example_nll(logits, tgt_out[None])
            return nll[0], tokens[0]

        value_and_grad = jax.value_and_grad(sentence_nll, has_aux=True)
        (nll, tokens), g = jax.vmap(value_and_grad, in_axes=(None, 0, 0, 0))(
            gates, batch.src, batch.tgt_in, batch.tgt_out)
        return nll, tokens, g

    return grads


# ---- importance ------------------------------------------------------------------------------

def normalize_per_layer(importance: np.ndarray) -> np.ndarray:
    """Divide each layer's row (L, H) by its L2 norm (Michel et al.); an all-zero layer stays 0.
    NaN entries (no such head) stay NaN and do not count in the norm."""
    norm = np.sqrt(np.nansum(np.square(importance), axis=-1, keepdims=True))
    return importance / np.where(norm > 0, norm, 1.0)


def head_importance(grad_fn: Callable, params: Any, gates: Gates, batches: Iterable[Batch],
                    present: Optional[dict[str, np.ndarray]] = None) -> dict:
    """Accumulate |per-sentence gate gradients| over batches.

    Returns {"raw": {type: (L, H)} per target token, "normalized": {type: (L, H)},
    "loss": mean token NLL at these gates, "tokens": int, "sentences": int}; entries that
    `present` (present_heads) marks as no head are NaN.
    """
    total = {k: np.zeros(np.shape(gates[k]), np.float64) for k in gates}
    nll_sum, tokens, sentences = 0.0, 0.0, 0
    for batch in batches:
        nll, tok, g = jax.device_get(grad_fn(params, gates, batch))
        for k in total:
            total[k] += np.abs(np.asarray(g[k], np.float64)).sum(axis=0)  # |.| per sentence, then sum
        nll_sum += float(np.sum(nll))
        tokens += float(np.sum(tok))
        sentences += int(np.sum(np.asarray(tok) > 0))
    raw = {k: v / max(tokens, 1.0) for k, v in total.items()}
    if present is not None:
        raw = {k: np.where(present[k], v, np.nan) for k, v in raw.items()}
    return {"raw": raw, "normalized": {k: normalize_per_layer(v) for k, v in raw.items()},
            "loss": nll_sum / max(tokens, 1.0), "tokens": int(tokens), "sentences": sentences}


# ---- pruning ---------------------------------------------------------------------------------

def pruning_order(normalized: dict[str, np.ndarray]) -> list[Head]:
    """All heads, least important first (ties broken by type, layer, head: deterministic); NaN
    entries (no such head) are left out."""
    heads = [(k, l, h) for k in ATTENTION_TYPES if k in normalized
             for l in range(normalized[k].shape[0]) for h in range(normalized[k].shape[1])
             if np.isfinite(normalized[k][l, h])]
    return sorted(heads, key=lambda x: (float(normalized[x[0]][x[1], x[2]]), ATTENTION_TYPES.index(x[0]), x[1], x[2]))


def gates_without(shapes: dict[str, tuple[int, int]], removed: Sequence[Head]) -> Gates:
    """All gates on except the `removed` heads (0)."""
    gates = all_on(shapes)
    for kind, layer, head in removed:
        gates[kind][layer, head] = 0.0
    return gates


def pruning_steps(num_heads: int, step: float = 0.1) -> list[int]:
    """Heads switched off at each step: round(k * step * N) for k = 0 .. 1/step (0 and N included)."""
    n_steps = int(round(1.0 / step))
    return sorted({int(round(k * step * num_heads)) for k in range(n_steps + 1)})


def prunable_share(curve: Sequence[dict], max_drop: float = 1.0, metric: str = "bleu") -> float:
    """The largest share of heads switched off such that this and every smaller step lost less
    than `max_drop` of `metric` from the unpruned model (a noisy dip does not get skipped over)."""
    base = curve[0][metric]
    share = 0.0
    for point in curve:
        if base - point[metric] >= max_drop:
            break
        share = point["share"]
    return share
