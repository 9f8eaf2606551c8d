"""One jitted attention forward shared by every evaluator that reads attention maps.

The attention probe, the alignment evaluator and the head tools all call
`attention_maps_fn(graphdef, types)`; the function is cached per (model structure, types), so
evaluators that ask for the same maps share one compiled program (one compile per input shape).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from flax import nnx

from model.attention_maps import forward_with_attention
from model.config import ATTENTION_TYPES


@functools.lru_cache(maxsize=None)
def attention_maps_fn(graphdef: nnx.GraphDef, types: tuple[str, ...] = ATTENTION_TYPES) -> Callable:
    """Jitted (params, src (B, S), tgt_in (B, T)) -> {type: (L, B, H, Tq, Tk) float32}: one
    example per row (segments from padding), no dropout, no gradient."""

    def maps(params: nnx.State, src: jax.Array, tgt_in: jax.Array) -> dict[str, jax.Array]:
        _, weights = forward_with_attention(nnx.merge(graphdef, params), src, tgt_in, types=types)
        return weights

    return jax.jit(maps)
