"""model.dtype=bfloat16 is real: the train step's matrix products run in bfloat16 (read off the
lowered program, so an ignored dtype fails here), and a short bfloat16 run learns."""

from __future__ import annotations

import re

import jax
import pytest
from flax import nnx

from model.config import ConfigError, ModelConfig
from model.transformer import Transformer
from tests.test_training import VOCAB, one_batch
from train.config import OptimConfig
from train.engine.optimizer import make_optimizer
from train.engine.step import create_state, make_eval_step, make_train_step


def build(dtype: str):
    cfg = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1,
                      max_len=32, dropout=0.0, dtype=dtype)
    graphdef, params = nnx.split(Transformer(cfg, VOCAB, rngs=nnx.Rngs(params=0)))
    tx, _ = make_optimizer(OptimConfig(lr=3e-3, warmup_steps=10, schedule="constant", weight_decay=0.0), 300)
    return graphdef, tx, create_state(params, tx)


def dot_operand_types(dtype: str) -> list[tuple[str, str]]:
    graphdef, tx, state = build(dtype)
    text = jax.jit(make_train_step(graphdef, tx, 0.1)).lower(state, one_batch(), jax.random.PRNGKey(0)).as_text()
    dots = re.findall(r"stablehlo\.dot_general[^\n]*: \(tensor<[0-9x]*x(\w+)>, tensor<[0-9x]*x(\w+)>\)", text)
    return dots


def test_every_matmul_of_the_step_runs_in_bfloat16():
    bf16, f32 = dot_operand_types("bfloat16"), dot_operand_types("float32")
    assert len(bf16) == len(f32) > 20  # forward and backward: every projection, attention and the output layer
    assert set(f32) == {("f32", "f32")}
    # Every product reads bfloat16; the only float32 operand is the attention probabilities that XLA's
    # fused attention keeps in float32 in its backward pass (softmax precision).
    assert ("f32", "f32") not in bf16
    assert sum(pair == ("bf16", "bf16") for pair in bf16) >= 0.8 * len(bf16)


def test_a_short_bfloat16_run_learns():
    graphdef, tx, state = build("bfloat16")
    step = jax.jit(make_train_step(graphdef, tx, label_smoothing=0.0), donate_argnums=0)
    evaluate = jax.jit(make_eval_step(graphdef))
    batch, key = one_batch(), jax.random.PRNGKey(0)
    first = evaluate(state.params, batch)
    for _ in range(80):
        state = step(state, batch, key)
    last = evaluate(state.params, batch)
    before, after = float(first["nll_sum"] / first["tokens"]), float(last["nll_sum"] / last["tokens"])
    assert after < 0.5 * before, (before, after)
    assert all(p.dtype == jax.numpy.float32 for p in jax.tree_util.tree_leaves(state.params))  # master weights


def test_float16_is_refused_with_the_way_out():
    with pytest.raises(ConfigError, match="bfloat16"):
        ModelConfig(dtype="float16").validate()
