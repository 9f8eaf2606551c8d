"""The decode line: greedy and beam-search sentences/s, KV-cached and uncached (the prefix
recomputed at each step), and whether the cache changes what is decoded (it must not)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from train.bench.compile_timer import CompileTimer
from train.bench.records import log
from train.bench.timing import best_seconds
from train.bench.workload import model_config, synthetic_batch


class PrefixRecomputingModel:
    """A view of the model whose `decode_step` recomputes the whole prefix (no KV cache), for
    model/decoding.py's own beam_search.

    Its "cache" is the token history, laid out as the model's cache is for beam search: per
    sentence, K places of L tokens, beam j writing position t in place j, with `ancestors`
    (B, K, L) saying in which place each beam's prefix lies. The cross-attention "kv" is the
    encoder memory itself.
    """

    def __init__(self, model, bos_id: int = 1):
        self.model, self.bos_id = model, bos_id

    def encode(self, src, src_segments):
        return self.model.encode(src, src_segments)

    def precompute_cross(self, memory):
        return {"memory": memory}

    def init_cache(self, batch_size: int, max_len: int):
        import jax.numpy as jnp

        return {"tokens": jnp.full((batch_size, max_len), self.bos_id, jnp.int32)}

    def decode_step(self, token, position, cache, cross, src_segments, *, ancestors):
        import jax
        import jax.numpy as jnp

        b, beams, length = ancestors.shape
        places = cache["tokens"].reshape(b, beams, length)
        places = jax.lax.dynamic_update_slice_in_dim(places, token.reshape(b, beams, 1), position, axis=2)
        # Each beam's history: position s from the place its prefix lies in; tgt_in[t] = last token.
        history = jnp.take_along_axis(places, ancestors, axis=1).reshape(b * beams, length)
        memory, segments = (jnp.repeat(x, beams, axis=0) for x in (cross["memory"], src_segments))
        logits = self.model.decode(history, memory, segments, jnp.ones_like(history))
        logits = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False)  # (B * K, V)
        return logits, {"tokens": places.reshape(b, beams * length)}


def decoder_inputs(a: argparse.Namespace):
    """The benchmark model (random weights, no dropout) split for jit, the length limits and
    the source batch."""
    from flax import nnx

    from model.transformer import Transformer

    cfg = dataclasses.replace(model_config(a), dropout=0.0)
    graphdef, params = nnx.split(Transformer(cfg, a.vocab, rngs=nnx.Rngs(params=0)))
    # Every sentence may run to tgt_len tokens: limit = 0 * src_len + tgt_len.
    kw = dict(max_len=a.tgt_len, max_len_a=0.0, max_len_b=a.tgt_len)
    src = synthetic_batch(a.decode_batch, a.src_len, a.tgt_len, a.vocab, seed=1).src
    return graphdef, params, kw, src


def bench_decode(a: argparse.Namespace, timer: CompileTimer) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from model.decoding import beam_search, greedy_decode, make_decode_fn

    graphdef, params, kw, src = decoder_inputs(a)

    def greedy_uncached(state, src):
        return greedy_decode(nnx.merge(graphdef, state), src, use_cache=False, **kw)

    def beam_uncached(state, src):
        return beam_search(PrefixRecomputingModel(nnx.merge(graphdef, state)), src, beam_size=a.beam, alpha=0.6, **kw)[0]

    fns: dict[str, Callable] = {
        "greedy_cached": make_decode_fn(graphdef, beam_size=1, alpha=0.6, **kw),
        "greedy_uncached": jax.jit(greedy_uncached),
        f"beam{a.beam}_cached": make_decode_fn(graphdef, beam_size=a.beam, alpha=0.6, **kw),
        f"beam{a.beam}_uncached": jax.jit(beam_uncached),
    }
    out: dict[str, Any] = {"name": "decode", "batch": a.decode_batch, "src_len": a.src_len,
                           "max_len": a.tgt_len, "beam": a.beam, "dtype": a.dtype}
    outputs = {}
    for name, fn in fns.items():
        timer.reset()
        tokens = fn(params, src)
        jax.block_until_ready(tokens)
        compile_s = timer.total
        best = best_seconds(lambda: jax.block_until_ready(fn(params, src)), a.decode_reps)
        outputs[name] = np.asarray(tokens)
        out[f"{name}_sentences_per_s"] = round(a.decode_batch / best, 2)
        out[f"{name}_compile_s"] = round(compile_s, 2)
        log(f"decode {name}: {a.decode_batch / best:.1f} sentences/s")
    for kind in ("greedy", f"beam{a.beam}"):
        out[f"{kind}_cache_speedup"] = round(out[f"{kind}_cached_sentences_per_s"]
                                             / out[f"{kind}_uncached_sentences_per_s"], 2)
        # The cache is an optimisation: it must not change what is decoded.
        out[f"{kind}_cached_equals_uncached"] = bool(np.array_equal(outputs[f"{kind}_cached"],
                                                                    outputs[f"{kind}_uncached"]))
    return out


def fixed_length_decoders(a: argparse.Namespace) -> Callable[[], dict[str, float]]:
    """The KV-cached greedy and beam decoders with no EOS id, so that every sentence produces
    exactly tgt_len tokens, as the Hugging Face peer is made to (min_new_tokens = max_new_tokens);
    for --torch-python's decode rounds. Compiled and checked here; returns a function that
    times both now: {"greedy": sentences/s, "beam<K>": sentences/s}, the best of decode_reps
    calls each."""
    import jax
    import numpy as np

    from model.decoding import make_decode_fn

    graphdef, params, kw, src = decoder_inputs(a)
    # eos_id -1 is no token: nothing ends a sentence before its limit (pad and BOS stay masked).
    fns = {kind: make_decode_fn(graphdef, beam_size=k, alpha=0.6, eos_id=-1, **kw)
           for kind, k in (("greedy", 1), (f"beam{a.beam}", a.beam))}
    for kind, fn in fns.items():
        tokens = np.asarray(jax.block_until_ready(fn(params, src)))  # compiles
        lengths = np.count_nonzero(tokens, axis=1)  # pad is 0 and never generated
        if tokens.shape[1] != a.tgt_len or not np.all(lengths == a.tgt_len):
            raise RuntimeError(f"{kind}: expected {a.tgt_len} tokens per sentence, got lengths "
                               f"{sorted(set(lengths.tolist()))}")

    return lambda: best_sentences_per_s(fns, params, src, a.decode_reps)


def best_sentences_per_s(fns: dict[str, Callable], params: Any, src: Any, reps: int) -> dict[str, float]:
    """{kind: sentences/s} of each compiled decoder on `src`, the best of `reps` calls."""
    import jax

    return {kind: src.shape[0] / best_seconds(lambda: jax.block_until_ready(fn(params, src)), reps)
            for kind, fn in fns.items()}
