"""Attention statistics on hand-made matrices whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from train.analysis.attention_stats import (
    STATS,
    head_stats,
    layer_summary,
    stack_layers,
)


def valid(n: int, pad: int = 0) -> np.ndarray:
    """(1, n + pad) bool: n real tokens then pad padding positions."""
    return np.array([[True] * n + [False] * pad])


def uniform(t: int, s: int, causal: bool = False) -> np.ndarray:
    """(1, 1, t, s): each query spreads its weight evenly over the keys it may see."""
    allowed = np.tril(np.ones((t, s))) if causal else np.ones((t, s))
    return (allowed / allowed.sum(-1, keepdims=True))[None, None]


def test_uniform_self_attention():
    n = 5
    stats = head_stats(uniform(n, n), valid(n), valid(n))
    assert stats["entropy"] == pytest.approx([np.log(n)])
    assert stats["entropy_normalized"] == pytest.approx([1.0])
    assert stats["confidence"] == pytest.approx([1 / n])
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    assert stats["distance"] == pytest.approx([np.abs(i - j).mean()])  # 1.6 for n = 5
    assert stats["bos_eos_mass"] == pytest.approx([0.0])


def test_one_hot_attention():
    t, s = 4, 6
    w = np.zeros((1, 1, t, s))
    w[0, 0, :, 2] = 1.0  # every query looks at key 2
    special = np.zeros((1, s), bool)
    special[0, 2] = True  # ... which is the EOS
    stats = head_stats(w, valid(t), valid(s), special_keys=special)
    assert stats["entropy"] == pytest.approx([0.0])
    assert stats["entropy_normalized"] == pytest.approx([0.0])
    assert stats["confidence"] == pytest.approx([1.0])
    assert stats["distance"] == pytest.approx([np.mean([2, 1, 0, 1])])
    assert stats["bos_eos_mass"] == pytest.approx([1.0])


def test_diagonal_has_zero_distance_and_shift_counts_tokens():
    n = 6
    stats = head_stats(np.eye(n)[None, None], valid(n), valid(n))
    assert stats["distance"] == pytest.approx([0.0])
    assert stats["confidence"] == pytest.approx([1.0])
    assert stats["entropy"] == pytest.approx([0.0])
    previous = np.eye(n, k=-1)  # query i looks at key i - 1 ("previous token" head) ...
    previous[0, 0] = 1.0  # ... except the first, which has no previous token
    stats = head_stats(previous[None, None], valid(n), valid(n), causal=True)
    assert stats["distance"] == pytest.approx([(n - 1) / n])


def test_cross_attention_distance_is_from_the_length_scaled_diagonal():
    t, s = 3, 6  # the source is twice as long: query i aligns with keys 2i and 2i + 1
    w = np.zeros((1, 1, t, s))
    for i in range(t):
        w[0, 0, i, 2 * i: 2 * i + 2] = 0.5
    stats = head_stats(w, valid(t), valid(s), cross=True)
    assert stats["distance"] == pytest.approx([0.5])  # each key is half a token off the diagonal
    square = head_stats(np.eye(4)[None, None], valid(4), valid(4), cross=True)
    assert square["distance"] == pytest.approx([0.0])
    self_view = head_stats(w, valid(t), valid(s), cross=False)  # without scaling it would look far
    assert self_view["distance"][0] > 1.0


def test_padding_is_ignored():
    n, pad = 4, 3
    w = np.random.default_rng(0).random((1, 2, n + pad, n + pad))  # garbage everywhere ...
    w[:, :, :n, :n] = uniform(n, n)[0]  # ... except the real block
    w[:, :, :n, n:] = 0.0  # real queries give pad keys no weight (what the masked softmax does)
    stats = head_stats(w, valid(n, pad), valid(n, pad))
    clean = head_stats(uniform(n, n).repeat(2, axis=1), valid(n), valid(n))
    for name in STATS:
        np.testing.assert_allclose(stats[name], clean[name])


def test_causal_uniform_is_normalised_to_one_and_skips_the_single_key_row():
    n = 5
    stats = head_stats(uniform(n, n, causal=True), valid(n), valid(n), causal=True)
    assert stats["entropy_normalized"] == pytest.approx([1.0])  # rows 1..4; row 0 sees one key
    assert stats["entropy"] == pytest.approx([np.mean(np.log(np.arange(1, n + 1)))])
    assert stats["confidence"] == pytest.approx([np.mean(1 / np.arange(1, n + 1))])


def test_per_head_and_per_example_averaging():
    """Two heads (uniform, one-hot) and two examples of different lengths: rows are pooled."""
    t = 4
    w = np.zeros((2, 2, t, t))
    w[:, 0] = 1.0 / 4
    w[1, 0, :, :2] = 1.0 / 2  # example 1 has 2 real tokens
    w[1, 0, :, 2:] = 0.0
    w[:, 1, :, 0] = 1.0
    q_valid = np.array([[True] * 4, [True, True, False, False]])
    stats = head_stats(w, q_valid, q_valid)
    expected = (4 * np.log(4) + 2 * np.log(2)) / 6  # 6 real query rows
    assert stats["entropy"] == pytest.approx([expected, 0.0])
    assert stats["entropy_normalized"] == pytest.approx([1.0, 0.0])


def test_bos_eos_mass():
    n = 4
    special = np.array([[True, False, False, True]])  # BOS first, EOS last
    stats = head_stats(uniform(n, n), valid(n), valid(n), special_keys=special)
    assert stats["bos_eos_mass"] == pytest.approx([0.5])


@pytest.mark.parametrize("heads", [1, 16])
def test_layer_summary_keys_do_not_depend_on_the_head_count(heads):
    per_layer = [{name: np.linspace(0.0, 1.0, heads) for name in STATS} for _ in range(2)]
    out = layer_summary(per_layer, "cross")
    assert len(out) == 2 * len(STATS) * 3
    assert out["attn/cross/layer1/entropy_mean"] == pytest.approx(0.5 if heads > 1 else 0.0)
    assert out["attn/cross/layer1/entropy_min"] == pytest.approx(0.0)
    assert out["attn/cross/layer1/entropy_max"] == pytest.approx(1.0 if heads > 1 else 0.0)
    assert stack_layers(per_layer)["distance"].shape == (2, heads)


def test_no_nan_when_no_query_has_more_than_one_key():
    stats = head_stats(np.ones((1, 1, 1, 1)), valid(1), valid(1))
    assert np.isnan(stats["entropy_normalized"][0])  # undefined, reported as NaN ...
    out = layer_summary([stats], "decoder_self")
    assert "attn/decoder_self/layer0/entropy_normalized_mean" not in out  # ... and never logged
    assert out["attn/decoder_self/layer0/entropy_mean"] == 0.0
