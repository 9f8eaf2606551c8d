"""Gradient accumulation (optim.grad_accum): k micro-batches make the update of one batch k times
their size, and the learning-rate schedule advances once per update, as `train/lr` logs it."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from tests.test_training import build, one_batch
from train.config import OptimConfig, compose, to_config
from train.engine.optimizer import learning_rate_schedule, make_optimizer
from train.engine.step import create_state, make_train_step

CFG = OptimConfig(lr=3e-3, warmup_steps=2, schedule="cosine", weight_decay=0.01)


def half(batch, part: int):
    return jax.tree_util.tree_map(lambda x: x[part * 2:(part + 1) * 2], batch)


def test_two_half_batches_make_the_update_of_one_batch():
    graphdef, _, state = build()
    params = state.params
    batch, key = one_batch(rows=4), jax.random.PRNGKey(0)  # no padding: every row has the same tokens

    tx1, _ = make_optimizer(CFG, 8)
    one = jax.jit(make_train_step(graphdef, tx1, 0.1))(create_state(params, tx1), batch, key)

    tx2, _ = make_optimizer(dataclasses.replace(CFG, grad_accum=2), 16)
    step = jax.jit(make_train_step(graphdef, tx2, 0.1))
    two = create_state(params, tx2)
    two = step(two, half(batch, 0), key)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(two.params),
                                                    jax.tree_util.tree_leaves(params)))  # nothing applied yet
    two = step(two, half(batch, 1), key)
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(two.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7)


def test_the_schedule_counts_updates():
    k, steps = 4, 40
    tx, lr_at_step = make_optimizer(dataclasses.replace(CFG, grad_accum=k), steps)
    schedule = learning_rate_schedule(CFG, steps // k)  # laid out over the 10 updates
    graphdef, _, state = build()
    state = create_state(state.params, tx)
    step = jax.jit(make_train_step(graphdef, tx, 0.1))
    for i in range(12):
        state = step(state, one_batch(seed=i), jax.random.PRNGKey(0))
    counts = [int(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state.inner_opt_state)[0]
              if "count" in jax.tree_util.keystr(path)]
    assert counts and set(counts) == {3}  # 12 micro-batches = 3 updates: adam and the schedule moved 3 times
    assert float(lr_at_step(12)) == pytest.approx(float(schedule(3)))
    assert float(lr_at_step(steps)) == pytest.approx(CFG.lr * CFG.min_lr_ratio, abs=1e-9)  # decay completes
    assert float(lr_at_step(2 * k)) == pytest.approx(CFG.lr)  # warmup_steps=2 updates


def test_accumulation_needs_whole_updates():
    with pytest.raises(ValueError, match="multiple of optim.grad_accum"):
        to_config(compose(["optim.grad_accum=3", "train.max_steps=10"]))

