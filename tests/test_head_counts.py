"""Per-layer head counts (model.head_counts) and physical pruning (model/pruning.py): a pruned model
computes what the full model computes with the pruned heads gated off, in the teacher-forced
forward, in KV-cached greedy and beam decoding, and in the recorded attention maps."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.attention_maps import forward_with_attention
from model.config import ConfigError, ModelConfig
from model.decoding import beam_search, greedy_decode
from model.flops import flops_per_token
from model.pruning import prune_tree, pruned_config
from model.transformer import Transformer
from train.engine.checkpoint import config_hash

V, EOS = 40, 2
CFG = ModelConfig(d_model=32, num_heads=4, ffn_dim=64, num_encoder_layers=2, num_decoder_layers=2,
                  dropout=0.1, max_len=32, tie_embeddings=False)
# Every type pruned; a layer left with one head (encoder 1, cross 0) and one with none (decoder self 1).
KEEP = {"encoder_self": [[0, 2, 3], [1]], "decoder_self": [[0, 3], []], "cross": [[2], [0, 1, 3]]}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def mask_of(keep, counts):
    """model.head_mask with 1 on the kept heads and 0 on the others."""
    return {kind: [[1.0 if h in keep[kind][layer] else 0.0 for h in range(n)] for layer, n in enumerate(rows)]
            for kind, rows in counts.items()}


def build(cfg: ModelConfig, seed: int = 0):
    model = Transformer(cfg, V, rngs=nnx.Rngs(seed))
    if not cfg.tie_embeddings:  # random models rarely end: make EOS likely so hypotheses differ in length
        model.output.bias[...] = model.output.bias[...].at[EOS].set(1.5)
    return nnx.split(model)


def pruned(graphdef_full, params_full, cfg: ModelConfig, keep):
    """(graphdef, params, config) of the physically pruned model."""
    small_cfg = pruned_config(cfg, keep)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(small_cfg, V, rngs=nnx.Rngs(0))))
    return graphdef, prune_tree(abstract, params_full, keep, cfg.resolved_head_dim), small_cfg


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    src = rng.integers(4, V, (3, 9)).astype(np.int32)
    tgt = rng.integers(4, V, (3, 7)).astype(np.int32)
    src[0, 6:], tgt[0, 5:] = 0, 0  # padding in one row
    src[:, 5] = EOS
    tgt[:, 0] = 1
    return jnp.asarray(src), jnp.asarray(tgt)


@pytest.fixture(scope="module", params=["none", "concrete"])
def models(request):
    """The full model (with its masked twin) and the pruned one, without and with head gates."""
    cfg = dataclasses.replace(CFG, head_gates=request.param)
    graphdef, params = build(cfg)
    if request.param == "concrete":  # gates that differ per head, some partly closed
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: jnp.linspace(-0.5, 2.0, x.shape[0]) if "gate_log_alpha" in jax.tree_util.keystr(p) else x,
            params)
    masked_cfg = dataclasses.replace(cfg, head_mask=mask_of(KEEP, cfg.resolved_head_counts()))
    masked_graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(masked_cfg, V, rngs=nnx.Rngs(0))))
    small_graphdef, small_params, small_cfg = pruned(graphdef, params, cfg, KEEP)
    return dict(cfg=cfg, full=(graphdef, params), masked=(masked_graphdef, params),
                pruned=(small_graphdef, small_params), small_cfg=small_cfg)


def run(pair, fn):
    graphdef, params = pair
    return jax.tree.map(np.asarray, jax.jit(lambda p: fn(nnx.merge(graphdef, p)), compiler_options=FAST_COMPILE)(params))


def test_pruned_config_and_shapes(models):
    small = models["small_cfg"]
    assert small.resolved_head_counts() == {"encoder_self": (3, 1), "decoder_self": (2, 0), "cross": (1, 3)}
    assert small.resolved_head_dim == CFG.resolved_head_dim == 8 and small.head_mask is None
    graphdef, params = models["pruned"]
    model = nnx.merge(graphdef, params)
    assert model.encoder_layers[1].self_attn.qkv.kernel.shape == (32, 3 * 8)  # one head
    assert model.encoder_layers[1].self_attn.out.kernel.shape == (8, 32)
    assert model.decoder_layers[0].cross_attn.q.kernel.shape == (32, 8)
    assert model.decoder_layers[0].cross_attn.kv.kernel.shape == (32, 2 * 8)
    empty = model.decoder_layers[1].self_attn
    assert empty.num_heads == 0 and not hasattr(empty, "qkv") and empty.out_bias.shape == (32,)
    full = nnx.merge(*models["full"])
    np.testing.assert_array_equal(empty.out_bias[...], full.decoder_layers[1].self_attn.out.bias[...])
    if models["cfg"].head_gates == "concrete":
        np.testing.assert_array_equal(model.decoder_layers[1].cross_attn.gate_log_alpha[...],
                                      full.decoder_layers[1].cross_attn.gate_log_alpha[...][np.array([0, 1, 3])])


def test_pruned_logits_equal_masked_full_model(models):
    src, tgt = batch()
    forward = lambda m: m(src, tgt)
    full, masked, small = run(models["full"], forward), run(models["masked"], forward), run(models["pruned"], forward)
    assert small.dtype == np.float32
    np.testing.assert_allclose(small, masked, atol=1e-5, rtol=0)  # every position of every row
    assert np.abs(full - masked).max() > 1e-2  # the pruned heads did contribute


def test_each_type_alone_is_pruned_exactly(models):
    """Pruning one attention type at a time (the rest whole), so that no type's error hides behind another's."""
    graphdef, params = models["full"]
    cfg = models["cfg"]
    counts = cfg.resolved_head_counts()
    src, tgt = batch(1)
    for kind in KEEP:
        keep = {k: (KEEP[k] if k == kind else [list(range(n)) for n in counts[k]]) for k in counts}
        small_graphdef, small_params, _ = pruned(graphdef, params, cfg, keep)
        masked = run((graphdef, params), lambda m: m(src, tgt, head_gates={kind: mask_of(keep, counts)[kind]}))
        np.testing.assert_allclose(run((small_graphdef, small_params), lambda m: m(src, tgt)), masked,
                                   atol=1e-5, rtol=0, err_msg=kind)


def test_kv_cached_decoding_of_pruned_model(models):
    src, _ = batch()
    kw = dict(max_len=8, max_len_a=1.0, max_len_b=3)
    greedy = lambda m: greedy_decode(m, src, **kw)
    tokens = run(models["pruned"], greedy)
    np.testing.assert_array_equal(tokens, run(models["masked"], greedy))
    np.testing.assert_array_equal(tokens, run(models["pruned"], lambda m: greedy_decode(m, src, use_cache=False, **kw)))
    assert not np.array_equal(tokens, run(models["full"], greedy))
    beam = lambda m: beam_search(m, src, beam_size=3, **kw)
    (small_tokens, small_scores), (masked_tokens, masked_scores) = run(models["pruned"], beam), run(models["masked"], beam)
    np.testing.assert_array_equal(small_tokens, masked_tokens)
    np.testing.assert_allclose(small_scores, masked_scores, atol=1e-5)


def test_attention_maps_pad_missing_heads_with_nan(models):
    src, tgt = batch()
    logits, maps = run(models["pruned"], lambda m: forward_with_attention(m, src, tgt))
    _, full_maps = run(models["masked"], lambda m: forward_with_attention(m, src, tgt))
    assert maps["encoder_self"].shape == (2, 3, 3, 9, 9) and maps["decoder_self"].shape == (2, 3, 2, 7, 7)
    assert maps["cross"].shape == (2, 3, 3, 7, 9)
    assert np.isnan(maps["encoder_self"][1, :, 1:]).all() and not np.isnan(maps["encoder_self"][1, :, :1]).any()
    assert np.isnan(maps["decoder_self"][1]).all() and np.isnan(maps["cross"][0, :, 1:]).all()
    # A kept head's map is the same head's map in the full model (gating changes only later layers' inputs).
    np.testing.assert_allclose(maps["encoder_self"][0], full_maps["encoder_self"][0][:, [0, 2, 3]], atol=1e-5)


def test_config_checks_and_hash():
    with pytest.raises(ConfigError, match="head_counts.cross must be 2 non-negative ints"):
        dataclasses.replace(CFG, head_counts={"cross": [1]}).validate()
    with pytest.raises(ConfigError, match="head_counts.encoder_self"):
        dataclasses.replace(CFG, head_counts={"encoder_self": [2, -1]}).validate()
    with pytest.raises(ConfigError, match="head_counts has key 'decoder'"):
        dataclasses.replace(CFG, head_counts={"decoder": [2, 2]}).validate()
    with pytest.raises(ConfigError, match=r"head_mask.cross must be 2 lists .*heads per layer: \[1, 3\]"):
        dataclasses.replace(CFG, head_counts={"cross": [1, 3]}, head_mask={"cross": [[1, 1, 1, 1], [1, 1, 1, 1]]}).validate()
    with pytest.raises(ConfigError, match="head_gates"):
        dataclasses.replace(CFG, head_gates="l0").validate()
    # A model without head counts or gates keeps the hash it had before they existed; uniform counts equal none.
    assert "head_counts" not in CFG.defining_fields() and "head_gates" not in CFG.defining_fields()
    uniform = dataclasses.replace(CFG, head_counts={"cross": [4, 4]})
    assert config_hash(uniform.defining_fields()) == config_hash(CFG.defining_fields())
    small = pruned_config(CFG, KEEP)
    assert small.defining_fields()["head_counts"]["decoder_self"] == [2, 0]
    assert config_hash(small.defining_fields()) != config_hash(CFG.defining_fields())


def test_flops_count_each_layers_width():
    small = pruned_config(CFG, KEEP)
    full, part = flops_per_token(CFG, V, 10, 10), flops_per_token(small, V, 10, 10)
    d, f, k = 32, 64, 8
    assert part["encoder_dense"] == 6 * ((4 * d * 3 * k + 2 * d * f) + (4 * d * 1 * k + 2 * d * f)) * 10
    assert part["attention"] == 12 * k * ((3 + 1) * 100 + (2 + 0) * 100 + (1 + 3) * 100)
    assert part["output"] == full["output"] and part["per_example"] < full["per_example"]


def test_analyses_skip_heads_a_layer_lacks():
    """NaN maps (a head a pruned layer lacks) predict no alignment link, leave the layer average
    to the real heads, and give NaN statistics; importance grids are NaN there and out of the order."""
    from train.analysis.alignment import score_cross_attention
    from train.analysis.attention_stats import real_heads, stack_layers, stats_of_kind
    from train.analysis.head_importance import normalize_per_layer, pruning_order, to_lists

    rng = np.random.default_rng(0)
    maps = rng.random((1, 2, 3, 4, 5))
    maps /= maps.sum(-1, keepdims=True)
    gaps = maps.copy()
    gaps[:, :, 2] = np.nan  # layer 0 has 2 heads of 3
    words = [[0, 1, 2, 3, 4]] * 2
    gold = [[[0, 0], [1, 1]]] * 2
    full = score_cross_attention(maps[:, :, :2], words, words[:1] * 2, gold)
    part = score_cross_attention(gaps, words, words[:1] * 2, gold)
    np.testing.assert_array_equal(part.predicted[:, :2], full.predicted[:, :2])
    assert part.predicted[0, 2] == 0  # the missing head
    np.testing.assert_array_equal(part.hits[:, 3], full.hits[:, 2])  # average over the two real heads
    assert real_heads(gaps[0]) == 2 and real_heads(maps[0]) == 3
    stats = stats_of_kind(gaps[0], np.full((2, 5), 7), np.ones((2, 4), bool), np.ones((2, 5), bool), "cross")
    assert np.isnan(stats["entropy"][2]) and np.isfinite(stats["entropy"][:2]).all()
    grid = stack_layers([{"entropy": np.array([1.0, 2.0])}, {"entropy": np.array([3.0])}])["entropy"]
    assert np.isnan(grid[1, 1]) and grid.shape == (2, 2)
    imp = normalize_per_layer(np.array([[3.0, 4.0, np.nan]]))
    np.testing.assert_allclose(imp[0, :2], [0.6, 0.8])
    assert pruning_order({"cross": imp}) == [("cross", 0, 0), ("cross", 0, 1)]
    assert to_lists(imp, np.array([[True, True, False]]), 2) == [[0.6, 0.8]]
