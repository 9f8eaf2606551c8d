"""Hard Concrete head gates (Louizos et al. 2018, "Learning Sparse Neural Networks through L0
Regularization"), as Voita et al. (2019, "Analyzing Multi-Head Self-Attention") put one on every
attention head.

A gate has one parameter, log_alpha. Training draws u ~ U(0, 1) and stretches a binary Concrete
sample onto (gamma, zeta), then clips it to [0, 1], so that exact 0 and exact 1 have mass:

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta),   z = clip(s * (zeta - gamma) + gamma, 0, 1)

with beta = 2/3, gamma = -0.1, zeta = 1.1: one draw per gate per training step, shared by the rows
of the batch (Louizos et al. sample once per minibatch). Evaluation and decoding use the deterministic gate
z = clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1). The expected L0 norm of a gate, its
probability of being non-zero, is

    P(z > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)),

and sum_h P(z_h > 0) is the penalty train.gate_l0 multiplies (train/engine/step.py). The
closed forms for exact zeros and ones (`prob_zero`, `prob_one`) are what the tests check the
sampler against. A gate multiplies its head's output before the output projection, the same
place as model.head_mask (model/attention.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
# Keeps log u and log(1 - u) finite: uniform draws are clipped into (EPS, 1 - EPS).
EPS = 1e-6
# fold_in site of the gate noise under an attention module's dropout key (dropout uses the key itself).
GATE_KEY_SITE = 7


def sample(log_alpha: jax.Array, key: jax.Array) -> jax.Array:
    """One stochastic gate per entry of log_alpha (H,), from `key` -> (H,) float32 in [0, 1]."""
    log_alpha = log_alpha.astype(jnp.float32)
    u = jax.random.uniform(key, log_alpha.shape, jnp.float32, EPS, 1.0 - EPS)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / BETA)
    return jnp.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def deterministic(log_alpha: jax.Array) -> jax.Array:
    """The evaluation gate clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1): (H,) -> (H,)."""
    return jnp.clip(jax.nn.sigmoid(log_alpha.astype(jnp.float32)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def gate_values(log_alpha: jax.Array, key: jax.Array | None) -> jax.Array:
    """Sampled gates when training (a key), deterministic ones otherwise (key None)."""
    return deterministic(log_alpha) if key is None else sample(log_alpha, key)


def expected_l0(log_alpha: jax.Array) -> jax.Array:
    """P(z > 0) = sigmoid(log_alpha - beta log(-gamma / zeta)), elementwise (differentiable)."""
    return jax.nn.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


# ---- closed forms (numpy, host side): what the sampler must reproduce ---------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def prob_zero(log_alpha: np.ndarray) -> np.ndarray:
    """P(z = 0) = P(s <= -gamma / (zeta - gamma)) = sigmoid(beta log(-gamma / zeta) - log_alpha)."""
    return _sigmoid(BETA * math.log(-GAMMA / ZETA) - np.asarray(log_alpha, np.float64))


def prob_one(log_alpha: np.ndarray) -> np.ndarray:
    """P(z = 1) = P(s >= (1 - gamma) / (zeta - gamma)) = sigmoid(log_alpha - beta log((1 - gamma) / (zeta - 1)))."""
    return _sigmoid(np.asarray(log_alpha, np.float64) - BETA * math.log((1.0 - GAMMA) / (ZETA - 1.0)))


def expected_l0_np(log_alpha: np.ndarray) -> np.ndarray:
    """expected_l0 on the host (numpy float64), for logging and pruning."""
    return 1.0 - prob_zero(log_alpha)


def deterministic_np(log_alpha: np.ndarray) -> np.ndarray:
    """deterministic on the host (numpy float64)."""
    return np.clip(_sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
