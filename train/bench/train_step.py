"""The train line: the real training step, timed, with its FLOPs per step and MFU.

The step is built the way train/engine/trainer.py builds it (train/engine/step.py's step jitted
by train/engine/sharding.py, state donated, synthetic batches placed with the batch sharding),
so the numbers describe the real training path, not a special benchmark path.

FLOP counting (model/flops.py has the formula per part): matmul FLOPs of forward plus
backward only. Every dense weight of P parameters costs 6 FLOPs per parameter per token it
is applied to (2 forward, 4 backward: input and weight gradients); that covers q/k/v/out,
the FFNs, cross-attention k/v (applied to the source tokens) and the output projection
(D x V, applied to the target tokens). Attention adds Q K^T and weights x V, 2 * Tq * Tk * W
each, x 3 for forward + backward, on the full (unmasked) square. Embedding lookups,
LayerNorms, biases, softmax, the loss and the optimizer are not counted. The peak is the
best FLOP/s of a large matmul in the compute dtype, on the same devices, in this process
(peak.py); mfu = flops_per_step / (s per step) / peak_flops_per_s.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from train.bench.compile_timer import CompileTimer
from train.bench.records import log, rounded
from train.bench.workload import attention_dropout, model_config, synthetic_batch


def build_train_step(a: argparse.Namespace, mesh) -> tuple:
    """The benchmark's train step, built as the Trainer builds it: (model config, jitted step,
    sharded state, the synthetic batch on the batch sharding, dropout key, parameter count)."""
    import jax
    from flax import nnx

    from model.flops import count_params
    from model.transformer import Transformer
    from train.config import OptimConfig
    from train.engine.optimizer import make_optimizer
    from train.engine.sharding import (
        batch_sharding,
        jit_train_step,
        put_batch,
        state_sharding,
    )
    from train.engine.step import create_state, make_train_step

    cfg = model_config(a)
    model = Transformer(cfg, a.vocab, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    num_params = count_params(params)
    total_steps = a.warmup + a.steps + 1
    tx, _ = make_optimizer(OptimConfig(grad_accum=a.grad_accum), total_steps)
    state = create_state(params, tx)
    shardings = state_sharding(state, mesh, a.fsdp)
    state = jax.device_put(state, shardings)
    bsh = batch_sharding(mesh)
    if a.batch % mesh.size:
        raise SystemExit(f"error: --batch {a.batch} does not split over {mesh.size} devices")
    step = jit_train_step(make_train_step(graphdef, tx, a.label_smoothing), shardings, bsh)
    batch = put_batch(synthetic_batch(a.batch, a.src_len, a.tgt_len, a.vocab), bsh)
    return cfg, step, state, batch, jax.random.PRNGKey(0), num_params


def bench_train(a: argparse.Namespace, mesh, timer: CompileTimer,
                peak: Callable[[], float]) -> tuple[dict, Callable[[], float]]:
    """The train line, and a function that times the same compiled step again (for --torch-python).

    A shared VM's speed drifts within a minute, so the step and the matmul peak are timed in
    alternation, a.timing_rounds times; the line reports the round with the median MFU (its
    ms_per_step and peak), and every round's figures under "rounds".
    """
    import jax

    from model.flops import flops_per_token

    cfg, step, state, batch, key, num_params = build_train_step(a, mesh)

    timer.reset()
    t0 = time.perf_counter()
    state = step(state, batch, key)  # trace + compile + one step
    jax.block_until_ready(state)
    first_s = time.perf_counter() - t0
    compile_s = timer.total
    for _ in range(a.warmup):
        state = step(state, batch, key)
    jax.block_until_ready(state)

    def seconds_per_step() -> float:
        """Time a.steps steps: no host sync inside (metrics stay on device), one at the end."""
        nonlocal state
        t0 = time.perf_counter()
        for _ in range(a.steps):
            state = step(state, batch, key)
        jax.block_until_ready(state)
        return (time.perf_counter() - t0) / a.steps

    flops = flops_per_token(cfg, a.vocab, a.src_len, a.tgt_len)
    flops_per_step = float(flops["per_example"]) * a.batch
    rounds = []
    for _ in range(a.timing_rounds):
        peak_flops = peak()
        sec = seconds_per_step()
        rounds.append({"ms_per_step": round(sec * 1e3, 2), "peak_flops_per_s": rounded(peak_flops),
                       "mfu": round(flops_per_step / sec / peak_flops, 4)})
        log(f"train: {sec * 1e3:.1f} ms/step, matmul peak {peak_flops / 1e9:.1f} GFLOP/s, "
            f"MFU {rounds[-1]['mfu']:.1%}")
    median = sorted(rounds, key=lambda r: r["mfu"])[(len(rounds) - 1) // 2]
    sec = median["ms_per_step"] / 1e3
    metrics = jax.device_get(state.metrics)
    loss = float(metrics["loss_sum"] / max(metrics["tokens"], 1.0))

    tokens = a.batch * (a.src_len + a.tgt_len)
    sharded = batch.src.sharding.shard_shape(batch.src.shape)
    return {
        "name": "train", "impl": "jax",
        "ms_per_step": median["ms_per_step"],
        "tokens_per_s": round(tokens / sec, 1),
        "peak_flops_per_s": median["peak_flops_per_s"],
        "mfu": median["mfu"],
        "rounds": rounds,
        "compile_s": round(compile_s, 2),
        "first_step_s": round(first_s, 2),
        "compiles": timer.compiles + (step._cache_size() - 1),  # more than 1 would be a retrace
        "flops_per_step": flops_per_step,
        "model_flops_per_s": rounded(flops_per_step / sec),
        "flops_breakdown": {k: float(v) * a.batch for k, v in flops.items()
                            if k not in ("per_example", "per_token")},
        "params": num_params,
        "loss": round(loss, 4),
        "steps": a.steps, "batch": a.batch, "src_len": a.src_len, "tgt_len": a.tgt_len,
        "rows_per_device": int(sharded[0]),
        "d_model": a.d_model, "heads": a.heads, "ffn": a.ffn, "layers": a.layers, "vocab": a.vocab,
        "dtype": a.dtype, "dropout": a.dropout,
        "attention_dropout": attention_dropout(a), "fsdp": a.fsdp, "remat": a.remat,
        "grad_accum": a.grad_accum, "attention_impl": a.attention_impl, "torch_like": a.torch_like,
    }, seconds_per_step
