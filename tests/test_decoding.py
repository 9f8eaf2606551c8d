"""Incremental decoding, greedy and beam search.

A random-init model rarely says EOS, so the output bias of EOS is raised: hypotheses then end
at different steps, some by EOS and some by their length limit, which exercises both. (Seeds and
bias are fixed; beam search is not monotone in its width in general, but on these sources the
4-beam finds better hypotheses than greedy.)
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.config import ModelConfig
from model.decoding import (
    beam_search,
    greedy_decode,
    length_penalty,
    make_decode_fn,
    sequence_log_prob,
)
from model.transformer import Transformer

V, PAD, BOS, EOS = 50, 0, 1, 2
MAX_LEN, A, B = 12, 1.0, 2  # limits: src_len + 2
CFG = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, num_layers=2, dropout=0.1,
                  tie_embeddings=False, max_len=32)
SRC_LENS = [3, 8, 5, 6, 4]
# Tests compile many small programs and run each once: trade XLA's code quality for compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def setup():
    model = Transformer(CFG, V, rngs=nnx.Rngs(1))
    model.output.bias[...] = model.output.bias[...].at[EOS].set(1.0)
    rng = np.random.default_rng(0)
    src = np.zeros((len(SRC_LENS), max(SRC_LENS)), np.int32)
    for i, n in enumerate(SRC_LENS):
        src[i, :n - 1] = rng.integers(4, V, n - 1)
        src[i, n - 1] = EOS
    graphdef, state = nnx.split(model)
    return graphdef, state, jnp.asarray(src)


def jit_with_model(graphdef, fn, **static):
    """jax.jit a fn(model, *args) over (state, *args), merging inside (as the train loop does)."""
    return jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args, **static),
                   compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def greedy(setup):
    graphdef, state, src = setup
    decode = make_decode_fn(graphdef, beam_size=1, alpha=0.6, max_len=MAX_LEN, max_len_a=A,
                            max_len_b=B)
    compiled = decode.lower(state, src).compile(FAST_COMPILE)  # what decode(state, src) runs
    return np.asarray(compiled(state, src))


@pytest.fixture(scope="module")
def log_prob(setup):
    graphdef, state, src = setup
    score = jit_with_model(graphdef, sequence_log_prob)
    return lambda tokens: np.asarray(score(state, src, jnp.asarray(tokens)))


def test_incremental_decoding_equals_full_forward(setup):
    graphdef, state, src = setup

    def both(model, src, tgt_in):
        src_seg = (src != PAD).astype(jnp.int32)
        memory = model.encode(src, src_seg)
        full = model.decode(tgt_in, memory, src_seg)  # (B, T, V)
        cross_kv = model.precompute_cross(memory)

        def step(cache, t):
            logits, cache = model.decode_step(tgt_in[:, t], t, cache, cross_kv, src_seg)
            return cache, logits
        _, steps = jax.lax.scan(step, model.init_cache(src.shape[0], MAX_LEN),
                                jnp.arange(tgt_in.shape[1]))
        return full, jnp.swapaxes(steps, 0, 1)  # (B, T, V) each

    tgt_in = jnp.asarray(np.random.default_rng(1).integers(3, V, (src.shape[0], MAX_LEN)))
    tgt_in = tgt_in.at[:, 0].set(BOS)
    full, incremental = jit_with_model(graphdef, both)(state, src, tgt_in)
    np.testing.assert_allclose(incremental, full, atol=1e-5, rtol=1e-5)


def test_cache_write_by_shared_position_equals_per_row_positions(setup):
    """A scalar position updates the cache with one slice; (B,) positions scatter: same result."""
    graphdef, state, src = setup

    def both(model, src):
        src_seg = (src != PAD).astype(jnp.int32)
        cross_kv = model.precompute_cross(model.encode(src, src_seg))
        cache = model.init_cache(src.shape[0], MAX_LEN)
        token = jnp.full((src.shape[0],), BOS, jnp.int32)
        shared = model.decode_step(token, 3, cache, cross_kv, src_seg)
        per_row = model.decode_step(token, jnp.full((src.shape[0],), 3), cache, cross_kv, src_seg)
        return shared, per_row

    shared, per_row = jit_with_model(graphdef, both)(state, src)
    for a, b in zip(jax.tree_util.tree_leaves(shared), jax.tree_util.tree_leaves(per_row)):
        np.testing.assert_array_equal(a, b)
    keys, values = (np.asarray(shared[1][0][n]) for n in ("k", "v"))  # (B, H, K, L), (B, H, L, K)
    assert np.abs(keys[..., 3]).sum() > 0 and np.abs(values[:, :, 3]).sum() > 0  # slot 3 was written
    assert not keys[..., 4:].any() and not values[:, :, 4:].any()  # and no later one


def test_greedy_cached_equals_uncached(setup, greedy):
    graphdef, state, src = setup
    uncached = jit_with_model(graphdef, greedy_decode, max_len=MAX_LEN, max_len_a=A,
                              max_len_b=B, use_cache=False)(state, src)
    np.testing.assert_array_equal(uncached, greedy)


def test_output_format_and_length_limits(greedy):
    assert greedy.shape == (len(SRC_LENS), MAX_LEN) and greedy.dtype == np.int32
    ended_by_eos = 0
    for row, n in zip(greedy, SRC_LENS):
        limit = min(int(A * n + B), MAX_LEN)
        length = int(np.sum(row != PAD))
        assert np.all(row[:length] != PAD) and np.all(row[length:] == PAD)
        assert length <= limit
        assert BOS not in row
        if EOS in row:
            assert list(row).index(EOS) == length - 1  # EOS kept, pad after it
            ended_by_eos += 1
        else:
            assert length == limit  # truncated by its limit
    assert 0 < ended_by_eos < len(SRC_LENS)  # both ways of ending are exercised


@pytest.fixture(scope="module")
def beam(setup):
    """beam_search jitted once per beam size; alpha is traced, so both alphas share a compile."""
    graphdef, state, src = setup

    @functools.cache
    def compiled(beam_size):
        return jit_with_model(
            graphdef, lambda m, s, a: beam_search(m, s, beam_size=beam_size, alpha=a,
                                                  max_len=MAX_LEN, max_len_a=A, max_len_b=B))

    def run(beam_size, alpha):
        tokens, scores = compiled(beam_size)(state, src, jnp.float32(alpha))
        return np.asarray(tokens), np.asarray(scores)
    return run


def test_beam_one_is_greedy(beam, greedy, log_prob):
    tokens, scores = beam(1, 0.0)
    np.testing.assert_array_equal(tokens, greedy)
    np.testing.assert_allclose(scores, log_prob(greedy), atol=1e-4)


def test_beam_four_beats_greedy(setup, beam, greedy, log_prob):
    tokens, scores = beam(4, 0.0)
    np.testing.assert_allclose(scores, log_prob(tokens), atol=1e-4)  # alpha 0: score = log-prob
    assert np.all(log_prob(tokens) >= log_prob(greedy) - 1e-5)
    assert np.any(log_prob(tokens) > log_prob(greedy) + 1e-3)  # the beam found something better
    # With the length penalty the score is log-prob / ((5 + len) / 6) ** alpha.
    tokens, scores = beam(4, 0.6)
    lengths = np.sum(tokens != PAD, axis=1)
    np.testing.assert_allclose(scores, log_prob(tokens) / length_penalty(lengths, 0.6),
                               atol=1e-4)
    limits = np.minimum(A * np.array(SRC_LENS) + B, MAX_LEN)
    assert np.all(lengths <= limits)


def test_beam_cache_equals_recomputing_every_prefix(setup):
    """Beam search never reorders its KV cache (each beam reads its prefix through `ancestors`):
    the same tokens and scores as recomputing every beam's whole prefix at every step."""
    from train.bench.decode import PrefixRecomputingModel

    graphdef, state, src = setup
    kw = dict(beam_size=4, alpha=0.6, max_len=MAX_LEN, max_len_a=A, max_len_b=B)
    cached = jit_with_model(graphdef, beam_search, **kw)(state, src)
    recomputed = jax.jit(lambda state, src: beam_search(PrefixRecomputingModel(nnx.merge(graphdef, state)), src, **kw),
                         compiler_options=FAST_COMPILE)(state, src)
    np.testing.assert_array_equal(cached[0], recomputed[0])
    np.testing.assert_allclose(cached[1], recomputed[1], atol=1e-5)


def test_greedy_token_is_the_first_argmax_without_pad_and_bos():
    from model.decoding import _greedy_tokens

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, V)).astype(np.float32)
    logits[0, [7, 9]] = 5.0  # a tie: argmax takes the lower index
    logits[1, PAD] = logits[2, BOS] = 50.0  # never generated
    logits[3, [PAD, BOS, 11]] = 9.0
    got = np.asarray(jax.jit(_greedy_tokens, static_argnums=(1, 2))(jnp.asarray(logits.T), PAD, BOS))  # (V, B)
    masked = logits.copy()
    masked[:, [PAD, BOS]] = -np.inf
    np.testing.assert_array_equal(got, np.argmax(masked, axis=-1))
    assert got[0] == 7 and got[3] == 11 and got.dtype == np.int32


@pytest.mark.parametrize("tied", [True, False])
def test_vocab_major_logits_are_the_transposed_logits(setup, tied):
    """decode_step(vocab_major=True), which greedy decoding reads, gives the (V, B) transpose of
    the (B, V) logits: table @ x^T with tied embeddings, the output layer's logits transposed
    without; and greedy decoding of a tied model matches the uncached decoder."""
    _, _, src = setup
    model = Transformer(dataclasses.replace(CFG, tie_embeddings=tied), V, rngs=nnx.Rngs(2))
    graphdef, state = nnx.split(model)

    def both(model, src):
        src_seg = (src != PAD).astype(jnp.int32)
        cross_kv = model.precompute_cross(model.encode(src, src_seg))
        cache = model.init_cache(src.shape[0], MAX_LEN)
        token = jnp.full((src.shape[0],), BOS, jnp.int32)
        return (model.decode_step(token, 0, cache, cross_kv, src_seg)[0],
                model.decode_step(token, 0, cache, cross_kv, src_seg, vocab_major=True)[0])

    batch_major, vocab_major = jit_with_model(graphdef, both)(state, src)
    assert vocab_major.shape == (V, src.shape[0])
    np.testing.assert_allclose(vocab_major, batch_major.T, atol=1e-5, rtol=1e-5)
    kw = dict(max_len=MAX_LEN, max_len_a=A, max_len_b=B)
    cached = jit_with_model(graphdef, functools.partial(greedy_decode, **kw))(state, src)
    uncached = jit_with_model(graphdef, functools.partial(greedy_decode, use_cache=False, **kw))(state, src)
    np.testing.assert_array_equal(cached, uncached)
