"""Head roles (train/analysis/head_roles.py) on hand-made attention maps whose answer is known."""

from __future__ import annotations

import numpy as np

from data.config import BOS_ID, EOS_ID
from train.analysis.head_roles import RoleCounts, classify, roles_json

V = 60
LENGTHS = [20, 16, 24]
S = max(LENGTHS)


def keys(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source-like key ids (distinct words, EOS last), their validity, and distinct frequencies."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), S), np.int64)
    for b, n in enumerate(LENGTHS):
        ids[b, : n - 1] = rng.choice(np.arange(4, V), n - 1, replace=False)
        ids[b, n - 1] = EOS_ID
    valid = ids != 0
    frequencies = rng.permutation(V).astype(float) * 10 + 1  # every id its own count
    return ids, valid, frequencies


def encoder_maps(ids: np.ndarray, valid: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """(1, B, 5, S, S): +1 offset, rarest token, EOS sink, uniform, and a NaN (pruned) head."""
    w = np.zeros((1, len(LENGTHS), 5, S, S))
    for b, n in enumerate(LENGTHS):
        words = [j for j in range(n) if ids[b, j] != EOS_ID]
        rarest = min(words, key=lambda j: frequencies[ids[b, j]])
        for i in range(n):
            w[0, b, 0, i, i + 1 if i + 1 < n else i - 1] = 1.0  # the last row cannot look ahead
            w[0, b, 1, i, rarest] = 1.0
            w[0, b, 2, i, n - 1] = 0.8  # mostly the EOS key
            w[0, b, 2, i, 0] += 0.2
            w[0, b, 3, i, :n] = 1.0 / n
    w[:, :, 4] = np.nan
    return w


def test_roles_of_hand_made_encoder_heads():
    ids, valid, freq = keys()
    counts = RoleCounts.zeros(1, 5, max_offset=S - 1).add(encoder_maps(ids, valid, freq), valid, valid, ids,
                                                          "encoder_self", freq)
    ev = counts.evidence()
    roles = classify(ev)[0]
    assert roles[0] == ["positional"] and ev["positional_offset"][0, 0] == 1
    assert ev["positional_share"][0, 0] == (19 + 15 + 23) / 60  # every row but each sentence's last
    assert roles[1] == ["rare_token"] and ev["rare_share"][0, 1] == 1.0
    np.testing.assert_allclose(ev["rare_chance"][0, 1], np.mean([1 / n for n in LENGTHS for _ in range(n)]))
    assert roles[2] == ["sink"] and ev["sink_mass"][0, 2] == 0.8
    assert roles[3] == []  # uniform: every share at chance
    np.testing.assert_allclose(ev["rare_share"][0, 3], ev["rare_chance"][0, 3])
    assert ev["positional_share"][0, 3] < 0.1 and ev["sink_mass"][0, 3] < 0.1
    assert roles[4] == [] and all(np.isnan(v[0, 4]) for v in ev.values())
    # Without token frequencies there is no rare-token evidence, and the other roles stand.
    plain = RoleCounts.zeros(1, 5, S - 1).add(encoder_maps(ids, valid, freq), valid, valid, ids, "encoder_self")
    assert np.isnan(plain.evidence()["rare_share"]).all()
    assert [list(r) for r in classify(plain.evidence())[0]] == [["positional"], [], ["sink"], [], []]
    heads = roles_json(ev, classify(ev), np.array([[True] * 4 + [False]]))[0]
    assert len(heads) == 4 and heads[0]["positional_offset"] == 1 and heads[2]["roles"] == ["sink"]


def test_previous_token_head_in_the_decoder_and_batches_add_up():
    """Causal self-attention: a -1 head is positional with offset -1; the BOS sink counts only rows
    that can see something else; two batches give the sums of one."""
    t = 10
    tgt = np.full((2, t), 7)
    tgt[:, 0] = BOS_ID
    tgt[1, 8:] = 0
    valid = tgt != 0
    w = np.zeros((1, 2, 2, t, t))
    for b in range(2):
        n = int(valid[b].sum())
        for i in range(n):
            w[0, b, 0, i, max(i - 1, 0)] = 1.0
            w[0, b, 1, i, 0] = 1.0  # everything on BOS
    one = RoleCounts.zeros(1, 2, t - 1).add(w, valid, valid, tgt, "decoder_self")
    ev = one.evidence()
    assert classify(ev)[0, 0] == ["positional"] and ev["positional_offset"][0, 0] == -1 and ev["positional_share"][0, 0] == 1
    assert "sink" in classify(ev)[0, 1] and ev["sink_mass"][0, 1] == 1.0
    assert one.rows[0, 0] == (t - 1) + (8 - 1)  # query 0 sees only BOS: no choice, not counted
    twice = RoleCounts.zeros(1, 2, t - 1).add(w, valid, valid, tgt, "decoder_self").add(w, valid, valid, tgt, "decoder_self")
    np.testing.assert_allclose(twice.offset_hits, 2 * one.offset_hits)
    np.testing.assert_allclose(twice.evidence()["positional_share"], ev["positional_share"])


def test_cross_heads_get_alignment_not_position():
    ids, valid, freq = keys(1)
    t = 6
    q_valid = np.ones((len(LENGTHS), t), bool)
    w = np.zeros((1, len(LENGTHS), 2, t, S))
    for b, n in enumerate(LENGTHS):
        for i in range(t):
            w[0, b, 0, i, i + 1] = 1.0  # a diagonal-ish cross head: offsets mean nothing across sequences
            w[0, b, 1, i, :n] = 1.0 / n
    ev = RoleCounts.zeros(1, 2, S - 1).add(w, q_valid, valid, ids, "cross", freq).evidence()
    assert np.isnan(ev["positional_share"]).all()
    roles = classify(ev, alignment_f1=np.array([[0.4, 0.1]]), baseline_f1=0.2)
    assert roles[0, 0] == ["alignment"] and roles[0, 1] == []


def test_explorer_badges_from_heads_json():
    """The explorer's head view reads roles (short labels) and gate P(open) from heads.json."""
    from train.explore.collect import head_results

    roles = {"encoder_self": [[{"roles": ["positional"], "positional_offset": -1}, {"roles": ["sink", "rare_token"]}]],
             "cross": [[{"roles": ["alignment"]}]], "thresholds": {}, "counts": {}}
    heads = {"step": 5, "split": "validation", "model": {"heads_total": 3},
             "importance": {"encoder_self": {"normalized": [[0.1, 0.9]], "pruning_rank": [[1, 2]]}},
             "roles": roles, "gates": {"open_probability": {"encoder_self": [[0.25, 0.99]]}}}
    result = head_results(heads)
    assert result["roles"] == {"encoder_self": [[["pos -1"], ["sink", "rare"]]], "cross": [[["align"]]]}
    assert result["gate"] == {"encoder_self": [[0.25, 0.99]]}
    assert head_results({**heads, "roles": None, "gates": None})["roles"] is None


def test_token_frequencies_count_each_side_in_chunks():
    import datasets

    from train.evals.head_roles import token_frequencies

    ds = datasets.Dataset.from_dict({"src_ids": [[4, 5, 2], [5, 2], [6, 6, 6, 2]], "tgt_ids": [[7, 2], [7, 7, 2], [2]]})
    freq = token_frequencies(ds, 10, chunk=2)
    np.testing.assert_array_equal(freq["source"], [0, 0, 3, 0, 1, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(freq["target"], [0, 0, 3, 0, 0, 0, 0, 3, 0, 0])
