"""The decode line: greedy and beam-search sentences/s, KV-cached and uncached (the prefix
recomputed at each step), and whether the cache changes what is decoded (it must not)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Callable

from train.bench.compile_timer import CompileTimer
from train.bench.records import log
from train.bench.workload import model_config, synthetic_batch


class _Uncached:
    """A view of the model whose `decode_step` recomputes the whole prefix (no KV cache).

    The "cache" is the token history (B, L) plus nothing else, so beam_search's reordering of
    cache rows reorders histories too; cross "kv" is the encoder memory itself. Used to time
    beam search without the KV cache using model/decoding.py's own beam_search.
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

    def decode_step(self, token, position, cache, cross, src_segments):
        import jax.numpy as jnp

        b, length = cache["tokens"].shape
        position = jnp.broadcast_to(jnp.asarray(position, jnp.int32), (b,))
        tokens = cache["tokens"].at[jnp.arange(b), position].set(token)  # tgt_in[t] = last token
        logits = self.model.decode(tokens, cross["memory"], src_segments, jnp.ones_like(tokens))
        logits = jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]  # (B, V)
        return logits, {"tokens": tokens}


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
        return beam_search(_Uncached(nnx.merge(graphdef, state)), src, beam_size=a.beam, alpha=0.6, **kw)[0]

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
        best = float("inf")
        for _ in range(a.decode_reps):
            t0 = time.perf_counter()
            tokens = jax.block_until_ready(fn(params, src))
            best = min(best, time.perf_counter() - t0)
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

    out = {}
    for kind, fn in fns.items():
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, src))
            best = min(best, time.perf_counter() - t0)
        out[kind] = src.shape[0] / best
    return out
