"""Hard Concrete head gates (model/gates.py): the sampler against its closed forms, where the gate
noise comes from, and the L0 penalty closing gates in a short training run (train/engine/step.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data.batch import Batch
from data.config import EOS_ID
from model import gates
from model.config import ConfigError, ModelConfig
from model.gate_params import expected_open_heads, gate_metrics, log_alphas
from model.transformer import Transformer
from train.config import OptimConfig, compose, to_config
from train.engine.optimizer import make_optimizer
from train.engine.step import create_state, make_train_step

LOG_ALPHAS = np.array([-4.0, -1.0, 0.0, 0.7, 2.5, 5.0])
N = 200_000
V = 24


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    """N independent samples of each gate: (N, 6)."""
    keys = jax.random.split(jax.random.PRNGKey(0), N)
    sample = jax.jit(jax.vmap(lambda k: gates.sample(jnp.asarray(LOG_ALPHAS, jnp.float32), k)))
    return np.asarray(sample(keys), np.float64)


def survival_mean(log_alpha: float) -> float:
    """E[z] = integral over t in (0, 1) of P(z > t) = P(s > (t - gamma) / (zeta - gamma)), where s is
    binary Concrete: P(s > c) = sigmoid(log_alpha - beta logit(c)). Quadrature on a fine grid."""
    t = np.linspace(0.0, 1.0, 200_001)
    c = (t - gates.GAMMA) / (gates.ZETA - gates.GAMMA)
    survival = 1.0 / (1.0 + np.exp(-(log_alpha - gates.BETA * np.log(c / (1.0 - c)))))
    return float(np.trapezoid(survival, t))


def test_sampler_matches_closed_forms(draws):
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    se = lambda p: 5 * np.sqrt(p * (1 - p) / N) + 1e-4  # five standard errors of a share
    zeros, ones = (draws == 0.0).mean(0), (draws == 1.0).mean(0)
    np.testing.assert_array_less(np.abs(zeros - gates.prob_zero(LOG_ALPHAS)), se(gates.prob_zero(LOG_ALPHAS)))
    np.testing.assert_array_less(np.abs(ones - gates.prob_one(LOG_ALPHAS)), se(gates.prob_one(LOG_ALPHAS)))
    means = np.array([survival_mean(a) for a in LOG_ALPHAS])
    np.testing.assert_array_less(np.abs(draws.mean(0) - means), 5 * draws.std(0) / np.sqrt(N) + 1e-4)
    # Expected L0 = P(z > 0), the Monte Carlo share of non-zero gates, in both precisions.
    l0 = np.asarray(gates.expected_l0(jnp.asarray(LOG_ALPHAS, jnp.float32)))
    np.testing.assert_allclose(l0, gates.expected_l0_np(LOG_ALPHAS), rtol=1e-6)
    np.testing.assert_array_less(np.abs((draws > 0).mean(0) - l0), se(l0))
    # Both ends have real mass for moderate log_alpha: the clip is what makes exact 0/1 possible.
    assert zeros[2] > 0.05 and ones[2] > 0.05


def test_deterministic_gate_is_the_formula():
    a = jnp.asarray(LOG_ALPHAS, jnp.float32)
    want = np.clip(1 / (1 + np.exp(-LOG_ALPHAS)) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(gates.deterministic(a), want, rtol=1e-6)
    np.testing.assert_allclose(gates.deterministic_np(LOG_ALPHAS), want, rtol=1e-12)
    assert float(gates.deterministic(jnp.float32(-3.0))) == 0.0 and float(gates.deterministic(jnp.float32(3.0))) == 1.0
    np.testing.assert_array_equal(gates.gate_values(a, None), gates.deterministic(a))


CFG = ModelConfig(d_model=16, num_heads=2, ffn_dim=32, num_layers=1, dropout=0.0, max_len=16,
                  head_gates="concrete", gate_init=2.0)


def copy_batch(seed: int, rows: int = 16, length: int = 6) -> Batch:
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(4, V, length - 1)) + [EOS_ID] for _ in range(rows)]
    return Batch.one_per_row(seqs, seqs)


def test_gate_noise_comes_from_the_dropout_key():
    """dropout=0: a key changes the output only through the sampled gates; no key = the
    deterministic gates, the same as an ungated model given them as head_gates."""
    model = Transformer(dataclasses.replace(CFG, gate_init=0.0), V, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    b = copy_batch(0)
    fwd = jax.jit(lambda p, key: nnx.merge(graphdef, p)(b.src, b.tgt_in, dropout_key=key))
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    np.testing.assert_array_equal(fwd(params, k1), fwd(params, k1))
    assert np.abs(np.asarray(fwd(params, k1)) - np.asarray(fwd(params, k2))).max() > 1e-3
    # The same seed without gates: the same weights (gates draw no random numbers at init).
    plain_graphdef, plain_params = nnx.split(Transformer(dataclasses.replace(CFG, head_gates="none"), V,
                                                         rngs=nnx.Rngs(0)))
    z = float(gates.deterministic(jnp.float32(0.0)))  # 0.5
    det = jax.jit(lambda p: nnx.merge(graphdef, p)(b.src, b.tgt_in))(params)
    gated = jax.jit(lambda p: nnx.merge(plain_graphdef, p)(b.src, b.tgt_in, head_gates={
        k: np.full((1, 2), z, np.float32) for k in ("encoder_self", "decoder_self", "cross")}))(plain_params)
    np.testing.assert_allclose(det, gated, atol=1e-5)


def train_gates(gate_l0: float, steps: int = 40) -> dict[str, list]:
    """A tiny gated model trained on a copy task; returns its gate table's open probabilities."""
    model = Transformer(CFG, V, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx, _ = make_optimizer(OptimConfig(lr=0.2, warmup_steps=0, schedule="constant", weight_decay=0.0), steps)
    step = jax.jit(make_train_step(graphdef, tx, 0.0, gate_l0))
    state = create_state(params, tx)
    batches = [copy_batch(s) for s in range(4)]
    for i in range(steps):
        state = step(state, batches[i % 4], jax.random.PRNGKey(7))
    model = nnx.merge(graphdef, state.params)
    alphas = jax.device_get(log_alphas(model))
    assert float(expected_open_heads(model)) == pytest.approx(
        sum(gates.expected_l0_np(a).sum() for layers in alphas.values() for a in layers), rel=1e-5)
    return alphas


def test_a_large_l0_penalty_closes_the_gates_and_none_keeps_them_open():
    closed, open_ = train_gates(5.0), train_gates(0.0)
    p_closed = np.concatenate([gates.expected_l0_np(a) for layers in closed.values() for a in layers])
    p_open = np.concatenate([gates.expected_l0_np(a) for layers in open_.values() for a in layers])
    assert p_closed.size == p_open.size == 6  # 2 heads x (encoder self, decoder self, cross)
    assert (p_closed < 0.2).mean() >= 5 / 6, p_closed
    assert (p_open > 0.8).all(), p_open
    metrics = gate_metrics(closed)
    assert set(metrics) >= {"gates/encoder_self/layer0/open", "gates/cross/layer0/open", "gates/open", "gates/eval_open"}
    assert metrics["gates/open"] == pytest.approx(p_closed.sum()) and metrics["gates/eval_open"] <= 1
    assert gate_metrics(open_)["gates/eval_open"] == 6


def test_gate_config_checks():
    with pytest.raises(ConfigError, match="model.head_gates=concrete"):
        to_config(compose(["model=tiny", "train.gate_l0=0.1"]))
    with pytest.raises(ConfigError, match="train.gate_l0=-1.0 must be >= 0"):
        to_config(compose(["model=tiny", "model.head_gates=concrete", "train.gate_l0=-1"]))
    cfg = to_config(compose(["model=tiny", "model.head_gates=concrete", "train.gate_l0=0.05"]))
    assert cfg.train.gate_l0 == 0.05 and cfg.model.defining_fields()["head_gates"] == "concrete"


def test_gate_lr_scale_speeds_up_the_gates_only():
    """optim.gate_lr_scale multiplies the log_alpha updates and leaves every other update alone."""
    model = Transformer(CFG, V, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    moved = {}
    for scale in (1.0, 10.0):
        tx, _ = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant", gate_lr_scale=scale), 1)
        step, state = jax.jit(make_train_step(graphdef, tx, 0.0, 0.5)), create_state(params, tx)
        for _ in range(2):  # the schedule's first rate is 0 (a 1-step warmup)
            state = step(state, copy_batch(0), jax.random.PRNGKey(7))
        delta = jax.tree_util.tree_map(lambda a, b: np.asarray(a - b), state.params, params)
        flat, _ = jax.tree_util.tree_flatten_with_path(delta)
        moved[scale] = {jax.tree_util.keystr(p): d for p, d in flat}
    gate_keys = [k for k in moved[1.0] if "gate_log_alpha" in k]
    assert len(gate_keys) == 3  # one per attention type of the 1-layer model
    for k, d in moved[1.0].items():
        if k in gate_keys:
            assert np.abs(d).max() > 0
            np.testing.assert_allclose(moved[10.0][k], 10 * d, rtol=1e-3)
        else:
            np.testing.assert_array_equal(moved[10.0][k], d)
    with pytest.raises(ConfigError, match="optim.gate_lr_scale=0.0 must be positive"):
        OptimConfig(gate_lr_scale=0.0).validate()
