"""model/dropout.py: the realised rate, the expectation, and masks as a pure function of the key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.dropout import drop_threshold, dropout


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_rate_and_expectation(rate):
    x = jnp.ones((256, 1024), jnp.float32)
    y = np.asarray(dropout(x, rate, jax.random.PRNGKey(0)))
    dropped = (y == 0).mean()
    realised = drop_threshold(rate) / 256  # the rate rounded to 1/256
    assert abs(realised - rate) <= 1 / 512
    assert abs(dropped - realised) < 4e-3  # 262k draws: ~5 standard errors
    assert abs(y.mean() - 1.0) < 1e-2  # survivors rescaled: the expectation is kept
    assert np.allclose(np.unique(y), [0.0, 256 / (256 - drop_threshold(rate))])


def test_same_key_same_mask_other_key_other_mask():
    x = jnp.arange(4096, dtype=jnp.float32).reshape(64, 64) + 1
    a = dropout(x, 0.1, jax.random.PRNGKey(1))
    assert np.array_equal(a, dropout(x, 0.1, jax.random.PRNGKey(1)))
    assert not np.array_equal(a == 0, dropout(x, 0.1, jax.random.PRNGKey(2)) == 0)
    assert not np.array_equal(a == 0, dropout(x, 0.1, jax.random.fold_in(jax.random.PRNGKey(1), 1)) == 0)
    # Typed keys (jax.random.key) work too.
    assert dropout(x, 0.1, jax.random.key(1)).shape == x.shape


def test_identity_without_key_or_rate_and_zero_at_rate_one():
    x = jnp.ones((8, 8), jnp.bfloat16)
    assert dropout(x, 0.1, None) is x
    assert dropout(x, 0.0, jax.random.PRNGKey(0)) is x
    assert not np.asarray(dropout(x, 1.0, jax.random.PRNGKey(0)), np.float32).any()
    assert dropout(x, 0.1, jax.random.PRNGKey(0)).dtype == jnp.bfloat16


def test_gradient_is_the_mask_times_the_scale():
    x = jnp.linspace(1.0, 2.0, 512)
    key = jax.random.PRNGKey(3)
    grad = jax.grad(lambda x: dropout(x, 0.25, key).sum())(x)
    y = dropout(x, 0.25, key)
    assert np.allclose(grad, np.where(np.asarray(y) == 0, 0.0, 256 / (256 - 64)))
