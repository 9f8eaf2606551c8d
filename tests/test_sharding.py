"""Data parallelism and FSDP through jax.sharding, on 4 CPU devices forced by XLA_FLAGS.

The runs happen in a subprocess because the device count is fixed when JAX starts. Each run
trains a few steps of a small model on the same packed batches (padding, two pairs per row,
dropout on) with the one train step of train/engine/step.py jitted by train/engine/sharding.py:
1 device, 4 devices with replicated parameters, 4 devices with FSDP-sharded parameters and
optimizer state. The losses and the final parameters must agree within float tolerance,
and the batch and (under FSDP) the state must really be split across the devices.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli

SCRIPT = r"""
import json
import jax
import numpy as np
from flax import nnx
from data.batch import Batch
from model.config import ModelConfig
from model.transformer import Transformer
from train.config import OptimConfig, TrainConfig
from train.engine.optimizer import make_optimizer
from train.engine.sharding import batch_sharding, jit_train_step, make_mesh, put_batch, state_sharding
from train.engine.step import create_state, make_train_step

assert jax.device_count() == 4, jax.devices()
CFG = ModelConfig(d_model=64, num_heads=4, ffn_dim=128, num_encoder_layers=2, num_decoder_layers=2,
                  dropout=0.1, max_len=64)
V, R, S, T, STEPS = 101, 8, 12, 10, 3


def packed_batch(rng):
    # Two pairs per row, positions restarting per pair, padding (segment 0) at the end.
    b = {k: np.zeros((R, S), np.int32) for k in ("src", "src_segments", "src_positions")}
    b.update({k: np.zeros((R, T), np.int32) for k in ("tgt_in", "tgt_out", "tgt_segments", "tgt_positions")})
    for r in range(R):
        so = to = 0
        for seg in (1, 2):
            n, m = int(rng.integers(2, S // 2)), int(rng.integers(2, T // 2))
            b["src"][r, so:so + n] = rng.integers(4, V, n)
            b["src_segments"][r, so:so + n] = seg
            b["src_positions"][r, so:so + n] = np.arange(n)
            out = rng.integers(4, V, m)
            b["tgt_out"][r, to:to + m] = out
            b["tgt_in"][r, to] = 1
            b["tgt_in"][r, to + 1:to + m] = out[:-1]
            b["tgt_segments"][r, to:to + m] = seg
            b["tgt_positions"][r, to:to + m] = np.arange(m)
            so, to = so + n, to + m
    return Batch(**b)


def run(mesh_data, fsdp):
    mesh = make_mesh(TrainConfig(mesh_data=mesh_data, fsdp=fsdp))
    graphdef, params = nnx.split(Transformer(CFG, V, rngs=nnx.Rngs(params=0)))
    tx, _ = make_optimizer(OptimConfig(lr=3e-3, warmup_steps=1), STEPS)
    state = create_state(params, tx)
    shardings = state_sharding(state, mesh, fsdp)
    state = jax.device_put(state, shardings)
    bsh = batch_sharding(mesh)
    step = jit_train_step(make_train_step(graphdef, tx, 0.1), shardings, bsh)
    rng, key, losses = np.random.default_rng(0), jax.random.PRNGKey(0), []
    for _ in range(STEPS):
        batch = put_batch(packed_batch(rng), bsh)
        before = float(state.metrics["loss_sum"])
        state = step(state, batch, key)
        losses.append(float(state.metrics["loss_sum"]) - before)
    src = batch.src
    leaves = jax.tree_util.tree_leaves(state.params)
    moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if getattr(x, "ndim", 0) >= 2]
    def split(x):
        return any(s is not None for s in x.sharding.spec)
    return {
        "losses": losses,
        "grad_norm_sum": float(state.metrics["grad_norm_sum"]),
        # Biases left out: the key part of q/k/v biases has an exactly-zero gradient (softmax
        # ignores a constant shift of the scores), and AdamW (eps 1e-9) turns that gradient's
        # rounding noise into full-size steps whose sign differs between reduction orders.
        "params": [np.asarray(x).ravel()[:64].tolist() for path, x in
                   jax.tree_util.tree_leaves_with_path(state.params) if "bias" not in jax.tree_util.keystr(path)],
        "batch_shards": sorted(tuple(s.data.shape) for s in src.addressable_shards),
        "batch_devices": len({s.device for s in src.addressable_shards}),
        "params_split": sum(split(x) for x in leaves),
        "params_total": len(leaves),
        "moments_split": sum(split(x) for x in moments),
        "param_shard_rows": sorted({tuple(s.data.shape) for x in leaves if split(x)
                                    for s in x.addressable_shards})[:3],
        "compiles": step._cache_size(),
    }


print(json.dumps({"one": run(1, False), "dp": run(4, False), "fsdp": run(4, True)}))
"""


@pytest.fixture(scope="module")
def runs() -> dict:
    result = run_cli(["-c", SCRIPT], env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                                          "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_same_losses_as_one_device(runs, name):
    np.testing.assert_allclose(runs[name]["losses"], runs["one"]["losses"], rtol=2e-5)
    np.testing.assert_allclose(runs[name]["grad_norm_sum"], runs["one"]["grad_norm_sum"], rtol=1e-4)
    for got, want in zip(runs[name]["params"], runs["one"]["params"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_losses_move(runs):
    losses = runs["one"]["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["dp", "fsdp"])
def test_batch_is_split_across_devices(runs, name):
    assert runs["one"]["batch_shards"] == [[8, 12]]
    assert runs[name]["batch_devices"] == 4
    assert runs[name]["batch_shards"] == [[2, 12]] * 4  # 8 rows / 4 devices
    assert runs[name]["compiles"] == 1


def test_fsdp_shards_parameters_and_moments(runs):
    assert runs["dp"]["params_split"] == 0 and runs["dp"]["moments_split"] == 0
    fsdp = runs["fsdp"]
    # Every matrix above the size threshold is split (embeddings, projections, FFNs), small
    # vectors stay replicated; the AdamW moments follow their parameters.
    assert fsdp["params_split"] >= 10 and fsdp["params_split"] < fsdp["params_total"]
    assert fsdp["moments_split"] == 2 * fsdp["params_split"]
