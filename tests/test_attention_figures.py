"""The head choices behind docs/attention.md's pictures, on hand-made attention weights."""

from __future__ import annotations

import numpy as np

from train.attention_figures import OFFSETS, offset_mass, sharpness


def test_offset_mass_finds_a_previous_token_head():
    t = 6
    weights = np.full((2, 3, t, t), 1.0 / t)  # (K, H, T, S): heads 0 and 2 uniform
    weights[:, 1] = np.eye(t, k=-1)  # head 1: query i looks at key i - 1
    weights[:, 1, 0, 0] = 1.0  # the first query has no previous token: it looks at itself
    valid = np.ones((2, t), bool)
    mass = offset_mass(weights, valid, valid)  # (H, offsets)
    assert mass.shape == (3, len(OFFSETS))
    assert mass[1, OFFSETS.index(-1)] == (t - 1) / t and mass[1, OFFSETS.index(0)] == 1 / t
    assert np.allclose(mass[0, OFFSETS.index(0)], 1 / t)


def test_offset_mass_ignores_padding_queries_and_keys():
    t = 4
    weights = np.zeros((1, 1, t, t))
    weights[0, 0, :, :] = np.eye(t)  # attends to itself
    q_valid = np.array([[True, True, False, False]])
    k_valid = np.array([[True, True, True, False]])
    mass = offset_mass(weights, q_valid, k_valid)
    assert mass[0, OFFSETS.index(0)] == 1.0  # averaged over the two real queries only


def test_sharpness_is_the_mean_largest_weight_over_real_queries():
    weights = np.array([[[[0.5, 0.5], [1.0, 0.0]]]])  # (1, 1, 2, 2)
    assert sharpness(weights, np.array([[True, True]]))[0] == 0.75
    assert sharpness(weights, np.array([[True, False]]))[0] == 0.5


def test_alignment_score_prefers_a_diagonal_head_to_a_sink():
    from train.attention_figures import alignment_score, sink_share

    t = 5
    weights = np.zeros((1, 2, t, t))
    weights[0, 0] = np.eye(t)  # head 0: each query its own key, an alignment
    weights[0, 1, :, 2] = 1.0  # head 1: every query on key 2, a sink
    valid = np.ones((1, t), bool)
    assert np.allclose(sink_share(weights, valid), [1 / t, 1.0])
    score = alignment_score(weights, valid)
    assert score[0] > 0.7 and score[1] == 0.0
