"""The training step learns: a tiny model overfits one batch; the same seed gives the same run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data.batch import Batch
from model.config import ModelConfig
from model.transformer import Transformer
from train.config import OptimConfig
from train.engine.optimizer import make_optimizer
from train.engine.step import create_state, make_eval_step, make_train_step

VOCAB = 40


def one_batch(rows: int = 4, length: int = 12, seed: int = 0) -> Batch:
    """A packed-format batch with one random pair per row (tokens 4.. are ordinary words)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(4, VOCAB, (rows, length)).astype(np.int32)
    tgt = rng.integers(4, VOCAB, (rows, length)).astype(np.int32)
    ones = np.ones((rows, length), np.int32)
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy()
    return Batch(
        src=src, src_segments=ones, src_positions=positions,
        tgt_in=np.concatenate([np.ones((rows, 1), np.int32), tgt[:, :-1]], axis=1),
        tgt_out=tgt, tgt_segments=ones, tgt_positions=positions,
    )


def build(seed: int = 0, dropout: float = 0.0):
    cfg = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                      dropout=dropout, max_len=32)
    graphdef, params = nnx.split(Transformer(cfg, VOCAB, rngs=nnx.Rngs(params=seed)))
    tx, _ = make_optimizer(OptimConfig(lr=3e-3, warmup_steps=10, schedule="constant", weight_decay=0.0), 300)
    return graphdef, tx, create_state(params, tx)


def test_tiny_model_overfits_one_batch():
    graphdef, tx, state = build()
    step = jax.jit(make_train_step(graphdef, tx, label_smoothing=0.0), donate_argnums=0)
    batch, key = one_batch(), jax.random.PRNGKey(0)
    for _ in range(250):
        state = step(state, batch, key)
    sums = jax.jit(make_eval_step(graphdef))(state.params, batch)
    nll = float(sums["nll_sum"] / sums["tokens"])
    accuracy = float(sums["correct_sum"] / sums["tokens"])
    assert nll < 0.05, f"did not overfit: per-token NLL {nll:.3f}"
    assert accuracy == 1.0
    assert step._cache_size() == 1  # one batch shape, one compile


def test_same_seed_same_run_and_dropout_from_the_key():
    def run(seed: int, dropout_seed: int):
        graphdef, tx, state = build(seed, dropout=0.1)
        step = jax.jit(make_train_step(graphdef, tx, label_smoothing=0.1), donate_argnums=0)
        for i in range(3):
            state = step(state, one_batch(seed=i), jax.random.PRNGKey(dropout_seed))
        return jax.tree_util.tree_leaves(state.params)

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_nonfinite_update_is_skipped_and_counted():
    graphdef, tx, state = build()
    before = jax.tree_util.tree_leaves(state.params)
    step = jax.jit(make_train_step(graphdef, tx, label_smoothing=0.0))
    poisoned = jax.tree_util.tree_map(lambda p: p * jnp.nan if p.ndim == 2 else p, state.params)
    after = step(state.replace(params=poisoned), one_batch(), jax.random.PRNGKey(0))
    assert int(after.nonfinite_in_row) == 1 and int(after.last_nonfinite_step) == 0
    assert float(after.metrics["nonfinite"]) == 1.0
    assert int(after.step) == 1
    assert len(before) == len(jax.tree_util.tree_leaves(after.params))
