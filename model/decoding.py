"""Batched greedy and beam-search decoding with the KV cache, inside `jax.lax.while_loop`.

Outputs are (B, max_len) int32 target tokens without BOS, EOS kept, pad after EOS. Each sentence
may produce at most `max_len_a * src_len + max_len_b` tokens (clipped to [1, max_len]); a
hypothesis that reaches its limit without EOS ends there (truncated, no EOS added).
Padding and BOS are never generated (their logits are masked, as in fairseq), and
`sequence_log_prob` scores under that same distribution, so its numbers match beam scores.

Everything here is pure and jit-compilable; `make_decode_fn` is the entry point for training
and evaluation loops (jit once over (state, src), merge the model inside).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model.transformer import Transformer

# Finite "minus infinity" for scores: keeps arithmetic NaN-free (no inf - inf).
NEG_INF = -1.0e7


def _length_limits(src_segments: jax.Array, max_len: int, a: float, b: int) -> jax.Array:
    """Per-sentence output length limit a * src_len + b, clipped to [1, max_len]: (B,) int32."""
    src_len = jnp.sum(src_segments != 0, axis=-1)
    limit = jnp.floor(a * src_len + b).astype(jnp.int32)
    return jnp.clip(limit, 1, max_len)


def _log_probs(logits: jax.Array, pad_id: int, bos_id: int) -> jax.Array:
    """float32 log-softmax over the vocabulary with pad and BOS excluded."""
    logits = logits.astype(jnp.float32)
    logits = logits.at[..., pad_id].set(-1e9).at[..., bos_id].set(-1e9)
    return jax.nn.log_softmax(logits, axis=-1)


def _greedy_tokens(logits: jax.Array, pad_id: int, bos_id: int) -> jax.Array:
    """argmax over the vocabulary with pad and BOS excluded: vocabulary-major logits (V, B) ->
    (B,) int32.

    The log-softmax does not move the argmax, so it is skipped. XLA:CPU's argmax is a (value,
    index) reduction several times slower than two plain ones: the largest logit, then the
    smallest index that holds it (argmax's tie-break)."""
    logits = logits.astype(jnp.float32).at[pad_id].set(-1e9).at[bos_id].set(-1e9)
    top = jnp.max(logits, axis=0, keepdims=True)  # (1, B)
    vocab = jnp.arange(logits.shape[0], dtype=jnp.int32)[:, None]  # (V, 1)
    return jnp.min(jnp.where(logits >= top, vocab, logits.shape[0]), axis=0).astype(jnp.int32)


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + len) / 6) ** alpha (Wu et al. 2016); alpha=0 gives 1."""
    return ((5.0 + length) / 6.0) ** alpha


def greedy_decode(model: Transformer, src: jax.Array, *, max_len: int, max_len_a: float = 1.2,
                  max_len_b: int = 10, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0,
                  use_cache: bool = True) -> jax.Array:
    """Greedy decoding: src (B, S) -> tokens (B, max_len) int32.

    use_cache=False recomputes the whole prefix with the full decoder each step (slow; the
    reference for the KV-cache benchmark) and yields the same tokens.
    """
    b = src.shape[0]
    src_segments = (src != pad_id).astype(jnp.int32)
    limits = _length_limits(src_segments, max_len, max_len_a, max_len_b)  # (B,)
    memory = model.encode(src, src_segments)  # (B, S, D)
    cross_kv = model.precompute_cross(memory) if use_cache else None
    cache = model.init_cache(b, max_len) if use_cache else None

    def next_logits(t, tokens, last, cache):
        """Logits of position t, vocabulary-major: (V, B)."""
        if use_cache:
            return model.decode_step(last, t, cache, cross_kv, src_segments, vocab_major=True)
        # Full recompute on a fixed (B, max_len) shape; causal masking hides the pads after t.
        tgt_in = jnp.concatenate([jnp.full((b, 1), bos_id, jnp.int32), tokens[:, :-1]], axis=1)
        logits = model.decode(tgt_in, memory, src_segments, jnp.ones_like(tgt_in))
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False).T, cache

    def cond(state):
        t, _, _, finished, _ = state
        return (t < max_len) & ~jnp.all(finished)

    def body(state):
        t, tokens, last, finished, cache = state
        logits, cache = next_logits(t, tokens, last, cache)  # (V, B)
        token = _greedy_tokens(logits, pad_id, bos_id)  # (B,)
        token = jnp.where(finished, pad_id, token)
        tokens = tokens.at[:, t].set(token)
        finished = finished | (token == eos_id) | (t + 1 >= limits)
        return t + 1, tokens, token, finished, cache

    state = (jnp.array(0, jnp.int32), jnp.full((b, max_len), pad_id, jnp.int32),
             jnp.full((b,), bos_id, jnp.int32), jnp.zeros((b,), bool), cache)
    return jax.lax.while_loop(cond, body, state)[1]


def beam_search(model: Transformer, src: jax.Array, *, beam_size: int, alpha: float = 0.6,
                max_len: int, max_len_a: float = 1.2, max_len_b: int = 10, bos_id: int = 1,
                eos_id: int = 2, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Beam search: src (B, S) -> (tokens (B, max_len) int32, scores (B,) float32).

    Score = sum of log-probs (EOS included) / GNMT length penalty of the length with EOS.
    As in Flax's WMT example and T5: each step expands the K alive beams into the 2K best
    candidates; those ending (EOS or length limit) among the best K go to a separate finished
    set (top K kept), and the K best non-ending ones stay alive, so ending never starves the
    beam. A sentence stops when its best finished score beats what any alive beam could still
    reach: log-probs only fall, so an alive beam's best is log-prob / penalty(length limit)
    (for alpha >= 0). Beam search is not monotone in K: a wider beam usually, not always,
    finds a better-scoring hypothesis than greedy.

    The KV cache is never reordered: beam j writes its keys and values in its own place, and
    `ancestors` (B, K, L) records in which place each beam's prefix lies at each position;
    reordering the beams gathers that small index (model/attention.py, decode_step).
    """
    bsz, k = src.shape[0], beam_size
    src_segments = (src != pad_id).astype(jnp.int32)
    limits = _length_limits(src_segments, max_len, max_len_a, max_len_b)  # (B,)
    memory = model.encode(src, src_segments)  # (B, S, D)
    # Beams ride along the batch axis (row b * K + j is beam j of sentence b); the source's
    # cross-attention keys and values are kept once per sentence.
    cross_kv = model.precompute_cross(memory)
    places = jnp.arange(k, dtype=jnp.int32)

    def cond(state):
        t, _, alive_lp, _, fin_scores, fin_flags, _ = state
        best_alive = alive_lp[:, 0] / length_penalty(limits, alpha)  # alive_lp sorted desc
        done = (alive_lp[:, 0] < NEG_INF / 2) | (fin_flags[:, 0] & (fin_scores[:, 0] >= best_alive))
        return (t < max_len) & ~jnp.all(done)

    def body(state):
        t, alive_seqs, alive_lp, fin_seqs, fin_scores, fin_flags, (cache, ancestors) = state
        last = jnp.where(t == 0, bos_id, alive_seqs[:, :, jnp.maximum(t - 1, 0)])  # (B, K)
        ancestors = ancestors.at[:, :, t].set(places)  # each beam writes position t in its own place
        logits, cache = model.decode_step(last.reshape(-1), t, cache, cross_kv, src_segments, ancestors=ancestors)
        logp = _log_probs(logits, pad_id, bos_id).reshape(bsz, k, -1)  # (B, K, V)
        vocab = logp.shape[-1]

        # 2K best continuations over all (beam, token) pairs.
        cand_lp, flat = jax.lax.top_k((alive_lp[:, :, None] + logp).reshape(bsz, -1), 2 * k)
        cand_beam, cand_tok = flat // vocab, (flat % vocab).astype(jnp.int32)  # (B, 2K)
        cand_seqs = jnp.take_along_axis(alive_seqs, cand_beam[:, :, None], axis=1)
        cand_seqs = cand_seqs.at[:, :, t].set(cand_tok)  # (B, 2K, L)
        valid = cand_lp > NEG_INF / 2  # not descended from a dead beam
        ended = (cand_tok == eos_id) | (t + 1 >= limits)[:, None]

        # Alive: the K best candidates that did not end.
        alive_lp, pick = jax.lax.top_k(jnp.where(ended, NEG_INF, cand_lp), k)
        alive_seqs = jnp.take_along_axis(cand_seqs, pick[:, :, None], axis=1)
        parents = jnp.take_along_axis(cand_beam, pick, axis=1)  # (B, K): the beam each new one extends
        ancestors = jnp.take_along_axis(ancestors, parents[:, :, None], axis=1)

        # Finished: ended candidates ranked within the top K (as fairseq: an ending must beat
        # the beam, which makes beam 1 exactly greedy), merged into the K best so far.
        finishing = ended & valid & (jnp.arange(2 * k) < k)[None, :]
        new_scores = jnp.where(finishing, cand_lp / length_penalty(t + 1.0, alpha), NEG_INF)
        scores = jnp.concatenate([fin_scores, new_scores], axis=1)  # (B, 3K)
        flags = jnp.concatenate([fin_flags, finishing], axis=1)
        seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)
        fin_scores, pick = jax.lax.top_k(scores, k)
        fin_flags = jnp.take_along_axis(flags, pick, axis=1)
        fin_seqs = jnp.take_along_axis(seqs, pick[:, :, None], axis=1)
        return t + 1, alive_seqs, alive_lp, fin_seqs, fin_scores, fin_flags, (cache, ancestors)

    seqs0 = jnp.full((bsz, k, max_len), pad_id, jnp.int32)
    alive_lp0 = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (bsz, 1))
    state = (jnp.array(0, jnp.int32), seqs0, alive_lp0, seqs0,
             jnp.full((bsz, k), NEG_INF, jnp.float32), jnp.zeros((bsz, k), bool),
             # the cache: per sentence, K places of max_len slots; ancestors (B, K, L)
             (model.init_cache(bsz, k * max_len), jnp.zeros((bsz, k, max_len), jnp.int32)))
    t, alive_seqs, alive_lp, fin_seqs, fin_scores, fin_flags, _ = jax.lax.while_loop(
        cond, body, state)

    # Every sentence finishes by its length limit; the alive fallback is for safety only.
    has_fin = fin_flags[:, 0]
    tokens = jnp.where(has_fin[:, None], fin_seqs[:, 0], alive_seqs[:, 0])
    scores = jnp.where(has_fin, fin_scores[:, 0], alive_lp[:, 0] / length_penalty(t, alpha))
    return tokens, scores


def sequence_log_prob(model: Transformer, src: jax.Array, tokens: jax.Array, *,
                      bos_id: int = 1, eos_id: int = 2, pad_id: int = 0) -> jax.Array:
    """Teacher-forced sum of log-probs of tokens (B, T) (no BOS, pad after EOS) up to and
    including the first EOS, under the decoding distribution (pad and BOS excluded): (B,)."""
    b = tokens.shape[0]
    tgt_in = jnp.concatenate([jnp.full((b, 1), bos_id, tokens.dtype), tokens[:, :-1]], axis=1)
    src_segments = (src != pad_id).astype(jnp.int32)
    logits = model(src, tgt_in, src_segments, jnp.ones_like(tgt_in))  # (B, T, V)
    logp = _log_probs(logits, pad_id, bos_id)
    token_lp = jnp.take_along_axis(logp, tokens[:, :, None], axis=-1)[:, :, 0]  # (B, T)
    is_eos = tokens == eos_id
    upto_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) == 0  # no EOS strictly before
    return jnp.sum(jnp.where(upto_eos & (tokens != pad_id), token_lp, 0.0), axis=1)


class GatedModel:
    """A merged Transformer whose forward passes all use fixed `head_gates`: hands the decoders
    above a model with heads switched off, without changing them."""

    def __init__(self, model: Any, head_gates: dict):
        self._model, self._gates = model, head_gates

    def __getattr__(self, name: str) -> Any:  # init_cache, precompute_cross, cfg, ...
        return getattr(self._model, name)

    def encode(self, *args, **kwargs):
        return self._model.encode(*args, head_gates=self._gates, **kwargs)

    def decode(self, *args, **kwargs):
        return self._model.decode(*args, head_gates=self._gates, **kwargs)

    def decode_step(self, *args, **kwargs):
        return self._model.decode_step(*args, head_gates=self._gates, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._model(*args, head_gates=self._gates, **kwargs)


def make_decode_fn(graphdef: nnx.GraphDef, *, beam_size: int, alpha: float, max_len: int,
                   max_len_a: float, max_len_b: int, bos_id: int = 1, eos_id: int = 2,
                   pad_id: int = 0, gated: bool = False) -> Callable[[Any, jax.Array], jax.Array]:
    """A jitted fn(state, src (B, S)) -> tokens (B, max_len): greedy when beam_size == 1.

    The model is merged inside the pure function, so the caller splits once
    (`graphdef, state = nnx.split(model)`) and passes the current state each time.
    gated=True: the first argument is (state, head_gates) instead; the gates are traced, so one
    compile per source shape serves every set of heads switched off.
    """
    kw = dict(max_len=max_len, max_len_a=max_len_a, max_len_b=max_len_b, bos_id=bos_id,
              eos_id=eos_id, pad_id=pad_id)

    def decode(state: Any, src: jax.Array) -> jax.Array:
        if gated:
            state, head_gates = state
            model = GatedModel(nnx.merge(graphdef, state), head_gates)
        else:
            model = nnx.merge(graphdef, state)
        if beam_size == 1:
            return greedy_decode(model, src, **kw)
        return beam_search(model, src, beam_size=beam_size, alpha=alpha, **kw)[0]

    return jax.jit(decode)
