"""The encoder-decoder: shapes, padding and packing invariance, attention maps, dropout keys,
bf16, remat, variants, head gates, FLOP counting.

Models are tiny (d_model 32, 2 heads, FFN 64, vocab 50) and share parameters where their
configs allow; forward passes are jitted and reuse input shapes to keep compiles few (on a CPU
the suite's time is almost all XLA compilation).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model.attention_maps import forward_with_attention
from model.config import ModelConfig
from model.flops import flops_per_token, num_params
from model.transformer import Transformer

V = 50
CFG = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, num_layers=2, dropout=0.1, max_len=32)


# Tests compile many small programs and run each once: trade XLA's code quality for compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def make(**changes) -> Transformer:
    """Seed-0 parameters: configs that differ only in how they compute get the same values.
    (Initialised eagerly: its per-shape kernels are cached across all the tests' models.)"""
    return Transformer(dataclasses.replace(CFG, **changes), V, rngs=nnx.Rngs(0))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("return_attention",),
                   compiler_options=FAST_COMPILE)
def _forward(graphdef, state, *args, dropout_key=None, head_gates=None, return_attention=False):
    """return_attention: also the attention maps, recorded the one way they leave the model."""
    model = nnx.merge(graphdef, state)
    if return_attention:
        return forward_with_attention(model, *args, head_gates=head_gates)
    return model(*args, dropout_key=dropout_key, head_gates=head_gates)


def forward(model, *args, **kwargs):
    """Jitted model(*args, **kwargs) as numpy; split/merge as the training loop does."""
    return jax.tree.map(np.asarray, _forward(*nnx.split(model), *args, **kwargs))


# Two examples: A (src 5, tgt 4) and B (src 3, tgt 3); batch (2, 8) / (2, 7) pads them, and
# packing A then B fills exactly one row of the same shape.
A_SRC, A_TGT = [5, 6, 7, 8, 2], [1, 9, 10, 11]
B_SRC, B_TGT = [12, 13, 2], [1, 14, 15]
S, T = 8, 7
HEAD_MASK = {"encoder_self": [[1.0, 0.0], [1.0, 1.0]], "decoder_self": [[1.0, 1.0], [0.0, 1.0]],
             "cross": [[1.0, 1.0], [1.0, 0.0]]}


def dropout_key(seed: int = 0) -> jax.Array:
    """Any PRNG implementation works; "rbg" compiles much faster on CPU than threefry."""
    return jax.random.key(seed, impl="rbg")


def pad(seqs, length):
    return jnp.array([s + [0] * (length - len(s)) for s in seqs], jnp.int32)


@pytest.fixture(scope="module")
def model():
    return make()


@pytest.fixture(scope="module")
def batch():
    return pad([A_SRC, B_SRC], S), pad([A_TGT, B_TGT], T)


@pytest.fixture(scope="module")
def logits(model, batch):
    return forward(model, *batch)


def test_shapes(model, batch, logits):
    assert logits.shape == (2, T, V) and logits.dtype == jnp.float32
    graphdef, state = nnx.split(model)
    memory = jax.eval_shape(lambda state, src: nnx.merge(graphdef, state).encode(src),
                            state, batch[0])
    assert memory.shape == (2, S, CFG.d_model)


def test_padding_invariance(model, logits):
    more = forward(model, pad([A_SRC, B_SRC], S + 3), pad([A_TGT, B_TGT], T + 3))
    np.testing.assert_allclose(more[0, :len(A_TGT)], logits[0, :len(A_TGT)], atol=1e-5)
    np.testing.assert_allclose(more[1, :len(B_TGT)], logits[1, :len(B_TGT)], atol=1e-5)


def test_packing_invariance(model, logits):
    def segs_and_positions(lengths, total):
        seg = sum(([i + 1] * n for i, n in enumerate(lengths)), [])
        pos = sum((list(range(n)) for n in lengths), [])
        return seg + [0] * (total - len(seg)), pos + [0] * (total - len(pos))

    src = jnp.array([A_SRC + B_SRC, B_SRC + [0] * (S - 3)])
    tgt = jnp.array([A_TGT + B_TGT, B_TGT + [0] * (T - 3)])
    (ss0, sp0), (ss1, sp1) = segs_and_positions([5, 3], S), segs_and_positions([3], S)
    (ts0, tp0), (ts1, tp1) = segs_and_positions([4, 3], T), segs_and_positions([3], T)
    packed = forward(model, src, tgt, jnp.array([ss0, ss1]), jnp.array([ts0, ts1]),
                     jnp.array([sp0, sp1]), jnp.array([tp0, tp1]))
    np.testing.assert_allclose(packed[0, :4], logits[0, :4], atol=1e-5)  # A
    np.testing.assert_allclose(packed[0, 4:7], logits[1, :3], atol=1e-5)  # B, packed after A
    np.testing.assert_allclose(packed[1, :3], logits[1, :3], atol=1e-5)  # B alone


def test_attention_weights(model, batch, logits):
    out, attn = forward(model, *batch, return_attention=True)
    np.testing.assert_allclose(out, logits, atol=1e-5)  # explicit path == fast path
    L, H = CFG.encoder_layers, CFG.num_heads
    assert attn["encoder_self"].shape == (L, 2, H, S, S)
    assert attn["decoder_self"].shape == (L, 2, H, T, T)
    assert attn["cross"].shape == (L, 2, H, T, S)
    src_valid = np.asarray(batch[0]) != 0  # (B, S)
    tgt_valid = np.asarray(batch[1]) != 0
    for name, q_valid, k_valid in [("encoder_self", src_valid, src_valid),
                                   ("decoder_self", tgt_valid, tgt_valid),
                                   ("cross", tgt_valid, src_valid)]:
        w = np.asarray(attn[name])
        sums = w.sum(-1)  # (L, B, H, T)
        np.testing.assert_allclose(sums[:, q_valid.nonzero()[0], :, q_valid.nonzero()[1]], 1.0,
                                   atol=1e-5, err_msg=name)
        masked_keys = np.broadcast_to(~k_valid[None, :, None, None, :], w.shape)
        assert np.all(w[masked_keys] == 0.0), name
    future = np.triu(np.ones((T, T), bool), 1)  # decoder queries never see later tokens
    assert np.all(np.asarray(attn["decoder_self"])[..., future] == 0.0)


def test_dropout_only_from_key(model, batch, logits):
    np.testing.assert_array_equal(forward(model, *batch), logits)  # no key: deterministic
    k1, k2 = dropout_key(1), dropout_key(2)
    a = forward(model, *batch, dropout_key=k1)
    np.testing.assert_array_equal(a, forward(model, *batch, dropout_key=k1))
    assert not np.allclose(a, forward(model, *batch, dropout_key=k2))
    assert not np.allclose(a, logits)


def test_bfloat16(batch, logits):
    out = forward(make(dtype="bfloat16"), *batch)  # same parameters (same seed), bf16 matmuls
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out, logits, atol=0.15)


def test_variants_run(batch):
    model = make(norm="post", positions="learned", tie_embeddings=False, activation="gelu",
                 head_dim=16, attention_impl="explicit")
    out = forward(model, *batch)
    assert out.shape == (2, T, V) and np.isfinite(np.asarray(out)).all()


def test_head_gates(model, batch, logits):
    gates = {k: jnp.array(v) for k, v in HEAD_MASK.items()}
    gated = forward(model, *batch, head_gates=gates)
    assert not np.allclose(gated, logits)
    np.testing.assert_array_equal(gated, forward(model, *batch, head_gates=gates))


def test_remat_and_default_head_mask(batch):
    """Remat leaves values and gradients unchanged (dropout on, so its keys must match too), and
    cfg.head_mask acts as the default head_gates; gate gradients exist (head importance).
    The encoder alone keeps this compile small; decoder layers go through the same wrapper."""
    def loss(state, graphdef, gates):
        memory = nnx.merge(graphdef, state).encode(batch[0], dropout_key=dropout_key(),
                                                     head_gates=gates)
        return jnp.mean(jnp.sin(memory))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)), static_argnums=1,
                   compiler_options=FAST_COMPILE)
    mask = {"encoder_self": [[0.0, 1.0]]}
    graphdef, state = nnx.split(make(num_layers=1))
    plain_loss, (plain_grads, gate_grads) = grad(state, graphdef,
                                                 {k: jnp.array(v) for k, v in mask.items()})
    graphdef, state = nnx.split(make(num_layers=1, remat=True, head_mask=mask))
    remat_loss, (remat_grads, _) = grad(state, graphdef, None)
    np.testing.assert_allclose(plain_loss, remat_loss, atol=1e-6)
    for a, b in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(remat_grads)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    g = gate_grads["encoder_self"]
    assert g.shape == (1, CFG.num_heads) and np.isfinite(g).all() and np.all(g != 0)


def test_params_and_flops(model):
    n = num_params(model)
    d, f = CFG.d_model, CFG.ffn_dim
    matmul = lambda layer: sum(x.size for path, x in nnx.state(layer, nnx.Param).flat_state()
                               if path[-1] == "kernel")
    enc = sum(matmul(layer) for layer in model.encoder_layers)
    dec = sum(matmul(layer) for layer in model.decoder_layers)
    assert enc == 2 * (4 * d * d + 2 * d * f)
    counts = flops_per_token(CFG, V, src_len=10, tgt_len=12)
    cross_kv = 2 * 2 * d * d  # decoder cross k/v kernels see source tokens
    assert counts["encoder_dense"] == 6 * enc * 10
    assert counts["decoder_dense"] == 6 * ((dec - cross_kv) * 12 + cross_kv * 10)
    assert counts["output"] == 6 * V * d * 12
    assert counts["attention"] == 3 * 4 * d * 2 * (10 * 10 + 12 * 12 + 12 * 10)
    assert counts["per_token"] == pytest.approx(counts["per_example"] / 22)
    # Parameters = kernels + embedding + biases + norms; the dense ones dominate here.
    assert n > enc + dec + V * d



@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("d_in, d_out", [(16, 100), (100, 16)])  # either operand transposed
def test_matmul_gradient_equals_autodiff(dtype, tol, d_in, d_out):
    """model.matmul's custom gradient (chosen for its memory layout) has autodiff's values."""
    from model.matmul import matmul

    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (48, d_in)).astype(dtype)
    w = jax.random.normal(kw, (d_in, d_out)).astype(dtype)
    weights = jax.random.normal(kg, (48, d_out))  # a loss that weighs every output differently
    reference = lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32)
    ours = lambda x, w: matmul(x, w, preferred_element_type=jnp.float32)
    loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * weights))
    got = jax.grad(loss(ours), argnums=(0, 1))(x, w)
    want = jax.grad(loss(reference), argnums=(0, 1))(x, w)
    assert np.allclose(ours(x, w), reference(x, w))
    for g, r in zip(got, want):
        assert g.dtype == r.dtype == dtype
        scale = float(jnp.max(jnp.abs(r.astype(jnp.float32))))
        assert np.allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), atol=tol * scale)


def test_linear_layers_use_matmul():
    """nnx.Linear with model.matmul.dot_general: same outputs and gradients as nnx.Linear's own
    dot (leading batch axes flattened and restored)."""
    from model.matmul import dot_general

    ours = nnx.Linear(8, 12, dot_general=dot_general, rngs=nnx.Rngs(0))
    plain = nnx.Linear(8, 12, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 8))
    assert np.allclose(ours(x), plain(x), atol=1e-6)
    grad = lambda m: nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x))))(m, x)
    for (path, a), (_, b) in zip(nnx.to_flat_state(grad(ours)), nnx.to_flat_state(grad(plain))):
        assert np.allclose(a[...], b[...], atol=1e-5), path
