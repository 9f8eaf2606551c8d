"""The attention probe: its weights are the explicit attention path's, and it writes every map."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import datasets
import jax
import numpy as np
import pytest
from flax import nnx
from matplotlib import image as mpimg
from tokenizers import Tokenizer, models

from data.config import BOS_ID, EOS_ID, SPECIAL_TOKENS
from model.attention import MultiHeadAttention
from model.config import ModelConfig
from model.transformer import Transformer
from train.analysis.attention_stats import STATS
from train.evals.attention_forward import attention_maps_fn
from train.evals.probe import (
    ATTENTION_TYPES,
    AttentionProbe,
    choose_examples,
    make_batch,
)

VOCAB = 48


def fake_data(lengths: list[tuple[int, int]], seed: int = 0) -> SimpleNamespace:
    """A validation split of random pairs (ids end with EOS) and a word-level tokenizer."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [f"▁w{i}" for i in range(VOCAB - 4)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rng = np.random.default_rng(seed)
    rows = [{"src_ids": rng.integers(4, VOCAB, s - 1).tolist() + [EOS_ID],
             "tgt_ids": rng.integers(4, VOCAB, t - 1).tolist() + [EOS_ID]} for s, t in lengths]
    return SimpleNamespace(splits=datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}),
                           tokenizer=tokenizer, vocab_size=VOCAB)


@functools.lru_cache(maxsize=None)  # building a model op by op costs seconds on CPU: share it (read-only)
def tiny_model(heads: int = 4, enc: int = 2, dec: int = 2, d_model: int = 32) -> Transformer:
    cfg = ModelConfig(d_model=d_model, num_heads=heads, ffn_dim=64, num_encoder_layers=enc,
                      num_decoder_layers=dec, dropout=0.1, attention_dropout=0.1)
    return Transformer(cfg, VOCAB, rngs=nnx.Rngs(params=0))


def probe_cfg(k: int = 3) -> SimpleNamespace:
    return SimpleNamespace(train=SimpleNamespace(probe_examples=k))


class RecordingLoggers:
    def __init__(self):
        self.scalar_calls, self.image_calls = [], []

    def scalars(self, step, values):
        self.scalar_calls.append((step, values))

    def images(self, step, images):
        self.image_calls.append((step, images))


def test_choose_examples_prefers_the_first_short_pairs_and_is_deterministic():
    src = [[5] * n for n in (40, 6, 30, 8, 7, 50)]
    tgt = [[5] * n for n in (5, 6, 5, 9, 70, 5)]
    assert choose_examples(src, tgt, 2, readable_len=24) == [1, 3]
    assert choose_examples(src, tgt, 4, readable_len=24) == [0, 1, 2, 3]  # + the shortest of the rest (30, 40)


def test_batch_is_teacher_forcing_input_padded_to_fixed_lengths():
    data = fake_data([(4, 3), (6, 5)])
    ds = data.splits["validation"]
    batch = make_batch(ds["src_ids"], ds["tgt_ids"], data.tokenizer)
    assert batch.src.shape == (2, 6) and batch.tgt_in.shape == (2, 5)
    assert batch.tgt_in[0, 0] == BOS_ID and batch.tgt_in[0, 3] == 0  # BOS + target[:-1], then pad
    assert batch.tgt_in[1, 1:].tolist() == ds["tgt_ids"][1][:-1]
    assert batch.src_valid.sum(1).tolist() == [4, 6] and batch.tgt_valid.sum(1).tolist() == [3, 5]
    assert batch.src_tokens[0, 3] == "</s>" and batch.src_tokens[0, 4] == ""
    assert batch.tgt_tokens[0, 0] == "<s>" and batch.tgt_tokens[0, 1].startswith("▁w")


def test_probe_weights_equal_the_explicit_attention_path(monkeypatch, tmp_path):
    """Run an ordinary forward (nothing recorded: the fast path) in which every attention call
    also computes its weights on its own (the explicit path, recorded for that call only), and
    compare those with what the probe returns. This checks the probe and the model's stacking of
    layers and types."""
    model = tiny_model()
    data = fake_data([(7, 5), (4, 6), (9, 9)])
    graphdef, params = nnx.split(model)
    probe = AttentionProbe(graphdef, data, probe_cfg(3), tmp_path)
    probe_weights = probe.weights(params)
    b = probe.batch

    original = MultiHeadAttention.__call__

    def reference(params, src, tgt_in, src_seg, tgt_seg):
        m = nnx.merge(graphdef, params)
        where = {id(layer.self_attn): ("encoder_self", i) for i, layer in enumerate(m.encoder_layers)}
        for i, layer in enumerate(m.decoder_layers):
            where[id(layer.self_attn)], where[id(layer.cross_attn)] = ("decoder_self", i), ("cross", i)
        recorded = {}

        def recording(self, x, mask, context=None, **kwargs):
            self.record_weights = True  # this call alone, outside the model's own forward
            _, sown = nnx.capture(lambda m: original(m, x, mask, context), nnx.Intermediate)(self)
            self.record_weights = False
            weights = sown["attention_weights"].get_value()[-1]  # explicit path
            recorded[where[id(self)]] = weights
            if where[id(self)] == ("encoder_self", 0):
                recorded["x"] = x  # (K, S, D): this layer's input, for the reference below
            return original(self, x, mask, context, **kwargs)  # what the forward really uses

        monkeypatch.setattr(MultiHeadAttention, "__call__", recording)
        try:
            m(src, tgt_in, src_seg, tgt_seg)
        finally:
            monkeypatch.setattr(MultiHeadAttention, "__call__", original)
        x = recorded.pop("x")
        return x, {f"{kind}/{layer}": w for (kind, layer), w in recorded.items()}

    # jit: one compile instead of op-by-op dispatch of the eager forward (much faster on CPU)
    x, explicit = jax.jit(reference)(params, b.src, b.tgt_in, b.src_valid.astype(np.int32),
                                  b.tgt_valid.astype(np.int32))
    assert set(explicit) == {f"{k}/{i}" for k in ATTENTION_TYPES for i in range(2)}
    for key, weights in explicit.items():
        kind, layer = key.split("/")
        np.testing.assert_allclose(probe_weights[kind][int(layer)], np.asarray(weights), atol=1e-6)

    # And against a reference written from the definition: softmax(q k^T / sqrt(d)) on real keys.
    module = model.encoder_layers[0].self_attn
    qkv = np.asarray(x) @ np.asarray(module.qkv.kernel[...]) + np.asarray(module.qkv.bias[...])
    q, k, _ = np.split(qkv.reshape(*qkv.shape[:2], 3, module.num_heads, module.head_dim), 3, axis=2)
    logits = np.einsum("bthd,bshd->bhts", q[:, :, 0], k[:, :, 0]) / np.sqrt(module.head_dim)
    logits = np.where(b.src_valid[:, None, None, :], logits, -np.inf)
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    real = b.src_valid[:, None, :, None] & b.src_valid[:, None, None, :]  # (K, 1, S, S)
    np.testing.assert_allclose(np.where(real, probe_weights["encoder_self"][0], 0), np.where(real, ref, 0),
                               atol=1e-5)

    # Rows of real queries are distributions over real (and, for the decoder, earlier) keys.
    dec = probe_weights["decoder_self"][1]  # (K, H, T, T)
    np.testing.assert_allclose(dec.sum(-1)[b.tgt_valid[:, None, :].repeat(4, 1)], 1.0, atol=1e-5)
    assert np.all(np.triu(dec, k=1) == 0)  # causal
    cross = probe_weights["cross"][:, 0]  # (L, H, T, S) of example 0
    assert np.all(cross[..., ~b.src_valid[0]] == 0)  # no weight on its pad keys


@pytest.mark.parametrize("heads", [1, 16])
def test_probe_writes_every_type_and_layer(tmp_path, heads):
    model = tiny_model(heads=heads, enc=2, dec=1)
    data = fake_data([(30, 32), (5, 4), (8, 7), (6, 9)])
    graphdef, params = nnx.split(model)
    probe = AttentionProbe(graphdef, data, probe_cfg(2), tmp_path)
    loggers = RecordingLoggers()
    scalars = probe.run(100, params, loggers)

    out = tmp_path / "attention" / "step_100"
    names = {"encoder_self_layer0", "encoder_self_layer1", "decoder_self_layer0", "cross_layer0"}
    assert {p.stem for p in out.glob("*.png")} == names
    assert {p.stem for p in out.glob("*.npz")} == names
    with np.load(out / "cross_layer0.npz") as npz:  # no pickle needed to read it back
        assert npz["weights"].dtype == np.float16
        assert npz["weights"].shape == (2, heads, 7, 8)  # (K, H, T, S): pairs 1 and 2, padded
        assert npz["query_tokens"][0, 0] == "<s>" and npz["key_tokens"][0, 4] == "</s>"
        assert npz["query_valid"].sum() == 4 + 7  # tgt_in lengths 4 and 7
    for name in names:
        png = mpimg.imread(out / f"{name}.png")
        assert max(png.shape[:2]) <= 1024
    assert len(list((out / "stats").glob("*.png"))) == len(ATTENTION_TYPES) * len(STATS)

    # Scalars: the same keys whatever the head count; finite; logged at the probe's step.
    assert "attn/cross/layer0/entropy_mean" in scalars
    assert len(scalars) == (2 + 1 + 1) * len(STATS) * 3
    assert all(np.isfinite(v) for v in scalars.values())
    (step, logged), = loggers.scalar_calls
    assert step == 100 and logged == scalars
    (_, images), = loggers.image_calls
    assert "attention/cross/layer0" in images and "attention_stats/cross/entropy" in images
    assert all(path.is_file() and path.suffix == ".png" for path in images.values())  # logged as they are


def test_probe_compiles_once_and_ignores_dropout(tmp_path):
    model = tiny_model()
    data = fake_data([(5, 5), (6, 4)])
    graphdef, params = nnx.split(model)
    attention_maps_fn.cache_clear()  # the compiled forward is shared per model structure: start afresh
    probe = AttentionProbe(graphdef, data, probe_cfg(2), tmp_path)
    first = probe.weights(params)
    params = jax.tree_util.tree_map(lambda p: p * 1.01, params)  # a later step: new values, same shapes
    second = probe.weights(params)
    assert probe.fn._cache_size() == 1
    again = probe.weights(params)
    for kind in ATTENTION_TYPES:  # deterministic: dropout (0.1 in this model) is off
        np.testing.assert_array_equal(second[kind], again[kind])
    assert not np.allclose(first["cross"], second["cross"])


def test_probe_off_without_examples(tmp_path):
    model = tiny_model()
    graphdef, params = nnx.split(model)
    probe = AttentionProbe(graphdef, fake_data([(5, 5)]), probe_cfg(0), tmp_path)
    assert not probe.enabled and probe.run(1, params, RecordingLoggers()) == {}
    assert not (tmp_path / "attention").exists()
