"""Multi-head attention against a naive numpy reference; masks; fast path == explicit path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.attention import MultiHeadAttention, causal_mask, padding_mask, segment_mask
from model.attention_maps import call_with_weights

D, H = 32, 2


# Jit every call (one compile is much cheaper on CPU than eager op-by-op dispatch), and trade
# XLA's code quality for compile time: tests compile many tiny programs and run each once.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.partial(jax.jit, static_argnums=0, static_argnames=("return_weights",),
                   compiler_options=FAST_COMPILE)
def _attend(graphdef, state, x, mask, context=None, *, kv=None, head_gates=None,
            dropout_key=None, return_weights=False):
    """return_weights: also the weights, recorded the one way they leave the model."""
    mha = nnx.merge(graphdef, state)
    kwargs = dict(kv=kv, head_gates=head_gates, dropout_key=dropout_key)
    return call_with_weights(mha, x, mask, context, **kwargs) if return_weights else mha(x, mask, context, **kwargs)


def attend(mha, *args, **kwargs):
    return jax.tree.map(np.asarray, _attend(*nnx.split(mha), *args, **kwargs))


def make(self_attention=True, head_dim=None, impl="fast", dropout=0.0, seed=0):
    return MultiHeadAttention(D, H, head_dim, self_attention=self_attention, impl=impl,
                              dropout=dropout, rngs=nnx.Rngs(seed))


def numpy_attention(mha, x, context, mask, gates=None):
    """Textbook multi-head attention, one head at a time, in float64 numpy."""
    x, context = np.asarray(x, np.float64), np.asarray(context, np.float64)
    w = mha.num_heads * mha.head_dim
    if mha.self_attention:
        kernel, bias = np.asarray(mha.qkv.kernel[...]), np.asarray(mha.qkv.bias[...])
        q = x @ kernel[:, :w] + bias[:w]
        k = x @ kernel[:, w:2 * w] + bias[w:2 * w]
        v = x @ kernel[:, 2 * w:] + bias[2 * w:]
    else:
        q = x @ np.asarray(mha.q.kernel[...]) + np.asarray(mha.q.bias[...])
        kernel, bias = np.asarray(mha.kv.kernel[...]), np.asarray(mha.kv.bias[...])
        k = context @ kernel[:, :w] + bias[:w]
        v = context @ kernel[:, w:] + bias[w:]
    mask = np.broadcast_to(np.asarray(mask), (x.shape[0], 1, x.shape[1], context.shape[1]))[:, 0]
    heads = []
    for h in range(mha.num_heads):
        sl = slice(h * mha.head_dim, (h + 1) * mha.head_dim)
        scores = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / np.sqrt(mha.head_dim)  # (B, T, S)
        scores = np.where(mask, scores, -np.inf)
        scores = scores - np.max(np.where(mask, scores, -1e30), axis=-1, keepdims=True)
        p = np.where(mask, np.exp(scores), 0.0)
        p = p / np.maximum(p.sum(-1, keepdims=True), 1e-30)
        out = p @ v[..., sl]
        heads.append(out * (1.0 if gates is None else gates[h]))
    return (np.concatenate(heads, -1) @ np.asarray(mha.out.kernel[...])
            + np.asarray(mha.out.bias[...]))


def inputs(b=2, t=5, s=6, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(b, t, D)), jnp.float32),
            jnp.asarray(rng.normal(size=(b, s, D)), jnp.float32))


def test_mask_helpers():
    seg = jnp.array([[1, 1, 2, 2, 0]])
    np.testing.assert_array_equal(padding_mask(seg)[0, 0, 0], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(causal_mask(3)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert causal_mask(2, 4).shape == (1, 1, 2, 4)
    m = segment_mask(seg, seg)[0, 0]
    np.testing.assert_array_equal(m, [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                                      [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("impl", ["fast", "explicit"])
def test_self_attention_matches_numpy(impl):
    mha = make(impl=impl)
    x, _ = inputs(t=5)
    seg = jnp.array([[1, 1, 1, 1, 0], [1, 1, 2, 2, 2]])
    for mask in (None, padding_mask(seg), segment_mask(seg, seg) & causal_mask(5)):
        ref_mask = np.ones((1, 1, 5, 5), bool) if mask is None else mask
        want = numpy_attention(mha, x, x, ref_mask)
        got = attend(mha, x, mask)
        rows = np.asarray(ref_mask).any(-1)[:, 0]  # (B or 1, T): queries with a key
        rows = np.broadcast_to(rows, got.shape[:2])
        np.testing.assert_allclose(np.asarray(got)[rows], want[rows], atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_numpy():
    mha = make(self_attention=False)
    x, ctx = inputs(t=4, s=6)
    mask = padding_mask(jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]))
    np.testing.assert_allclose(attend(mha, x, mask, ctx), numpy_attention(mha, x, ctx, mask),
                               atol=1e-5, rtol=1e-5)
    kv = mha.project_kv(ctx)  # precomputed keys/values give the same result
    np.testing.assert_allclose(attend(mha, x, mask, kv=kv), attend(mha, x, mask, ctx), atol=1e-6)


def test_fast_equals_explicit_and_weights():
    mha = make()
    x, _ = inputs(t=6)
    seg = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    mask = segment_mask(seg, seg) & causal_mask(6)
    fast = attend(mha, x, mask)
    explicit, weights = attend(mha, x, mask, return_weights=True)
    np.testing.assert_allclose(fast, explicit, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, H, 6, 6) and weights.dtype == jnp.float32
    w = np.asarray(weights)
    assert np.all(w[~np.broadcast_to(np.asarray(mask), w.shape)] == 0.0)
    sums = w.sum(-1)
    np.testing.assert_allclose(sums[0, :, :5], 1.0, atol=1e-6)
    np.testing.assert_allclose(sums[0, :, 5], 0.0)  # padding query: fully masked row
    np.testing.assert_allclose(sums[1], 1.0, atol=1e-6)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _decode_cross(graphdef, state, x, context, mask):
    mha = nnx.merge(graphdef, state)
    return mha.decode_cross(x, mha.cached_kv(context), mask)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _decode_all(graphdef, state, x):
    """Feed x (B, T, D) one position at a time through decode_step's head-major cache."""
    mha = nnx.merge(graphdef, state)
    b, t, _ = x.shape
    cache = {"k": jnp.zeros((b, mha.num_heads, mha.head_dim, t)), "v": jnp.zeros((b, mha.num_heads, t, mha.head_dim))}

    def step(cache, i):
        out, cache = mha.decode_step(jax.lax.dynamic_slice_in_dim(x, i, 1, axis=1), cache, i)
        return cache, out[:, 0]

    return jnp.swapaxes(jax.lax.scan(step, cache, jnp.arange(t))[1], 0, 1)  # (B, T, D)


def test_decoding_paths_match_numpy():
    """Decoding's one-query attention on head-major keys and values: cross-attention to cached_kv
    (a row that sees no key gets only the output bias) and cached causal self-attention, fed one
    position at a time, against the textbook reference."""
    x1, ctx = inputs(t=1, s=6)  # one query per row
    mask = padding_mask(jnp.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]]))
    mha = make(self_attention=False, seed=3)
    got = np.asarray(_decode_cross(*nnx.split(mha), x1, ctx, mask))
    np.testing.assert_allclose(got[0], numpy_attention(mha, x1, ctx, mask)[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got[1], np.broadcast_to(mha.out.bias[...], got[1].shape), atol=1e-6)

    mha = make(seed=4)
    x, _ = inputs(t=5)
    got = np.asarray(_decode_all(*nnx.split(mha), x))
    np.testing.assert_allclose(got, numpy_attention(mha, x, x, causal_mask(5)), atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_are_finite():
    x, ctx = inputs()
    mask = jnp.zeros((2, 1, 5, 6), bool).at[0, 0, :2, :3].set(True)  # most rows see nothing
    for impl in ("fast", "explicit"):
        mha = make(self_attention=False, impl=impl)
        out = attend(mha, x, mask, ctx)
        assert np.isfinite(np.asarray(out)).all()
        np.testing.assert_allclose(out[1], np.broadcast_to(mha.out.bias[...], out[1].shape),
                                   atol=1e-6)  # no key -> zero attention, only the output bias

        def loss(state, x, graphdef):
            return jnp.sum(nnx.merge(graphdef, state)(x, mask, ctx) ** 2)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2,
                        compiler_options=FAST_COMPILE)(nnx.state(mha), x, nnx.graphdef(mha))
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("head_dim", [None, 8])
def test_head_dim_shapes(head_dim):
    mha = make(head_dim=head_dim)
    k = head_dim or D // H
    assert mha.qkv.kernel.shape == (D, 3 * H * k)
    assert mha.out.kernel.shape == (H * k, D)
    x, _ = inputs(t=5)
    out, w = attend(mha, x, causal_mask(5), return_weights=True)
    assert out.shape == (2, 5, D) and w.shape == (2, H, 5, 5)
    np.testing.assert_allclose(out, numpy_attention(mha, x, x, causal_mask(5)), atol=1e-5,
                               rtol=1e-5)


def test_head_gate_removes_exactly_one_head():
    mha = make()
    x, _ = inputs(t=5)
    mask = causal_mask(5)
    for gates in ([1.0, 0.0], [0.0, 1.0], [0.3, 1.0]):
        g = jnp.array(gates)
        want = numpy_attention(mha, x, x, mask, gates=np.array(gates))
        np.testing.assert_allclose(attend(mha, x, mask, head_gates=g), want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(attend(mha, x, mask, head_gates=g, return_weights=True)[0], want,
                                   atol=1e-5, rtol=1e-5)
    # Linearity in the gates: head 0 alone + head 1 alone - none == both.
    both = attend(mha, x, mask, head_gates=jnp.array([1.0, 1.0]))
    parts = (attend(mha, x, mask, head_gates=jnp.array([1.0, 0.0]))
             + attend(mha, x, mask, head_gates=jnp.array([0.0, 1.0]))
             - attend(mha, x, mask, head_gates=jnp.array([0.0, 0.0])))
    np.testing.assert_allclose(both, parts, atol=1e-5)
    # Differentiable w.r.t. the gates (head-importance scores).
    def loss(gates, state, graphdef):
        return jnp.sum(nnx.merge(graphdef, state)(x, mask, head_gates=gates) ** 2)
    grad = jax.jit(jax.grad(loss), static_argnums=2, compiler_options=FAST_COMPILE)(
        jnp.ones(H), nnx.state(mha), nnx.graphdef(mha))
    assert grad.shape == (H,) and np.all(np.isfinite(grad)) and np.all(grad != 0)


def test_attention_dropout_uses_only_the_key():
    mha = make(dropout=0.5)
    x, _ = inputs(t=5)
    mask = causal_mask(5)
    key = jax.random.key(3)
    a, b = attend(mha, x, mask, dropout_key=key), attend(mha, x, mask, dropout_key=key)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, attend(mha, x, mask, dropout_key=jax.random.key(4)))
    # No key: no dropout, the same as a module without dropout.
    np.testing.assert_allclose(attend(mha, x, mask), attend(make(), x, mask), atol=1e-6)
