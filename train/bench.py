"""`python -m train.bench`: the benchmark workload of DESIGN.md, one JSON object per line.

    python -m train.bench                       # train + decode + data, ~2 min on 2 CPU cores
    python -m train.bench --only train          # one part (train | decode | data, comma-separated)
    python -m train.bench --short               # CI: small model, few steps, same lines and keys
    python -m train.bench --preset gpu512       # d_model 512, 8 heads, 6+6 layers, bfloat16 (for GPUs)
    python -m train.bench --batch 128 --dtype bfloat16 --fsdp --steps 20 ...
    python -m train.bench --only train --torch-python VENV/bin/python   # + interleaved PyTorch rounds

Lines (each has "name"):
  train   ms_per_step, tokens_per_s (source + target tokens), compile_s, flops_per_step,
          peak_flops_per_s, mfu = flops_per_step / (s per step) / peak_flops_per_s, from the
          median of --timing-rounds alternations of peak and step timing (all under "rounds")
  decode  greedy and beam-4 sentences/s, KV-cached and uncached (prefix recomputed each step)
  data    packing pipeline tokens/s and padding efficiency on the embedded corpus's training
          split, and the number of distinct train-step batch shapes over one epoch
  compare (with --torch-python) per round: project_ms, torch_eager_ms, torch_compile_ms and
          their ratios vs_torch_eager / vs_torch_compile; then a round="median" summary

The train workload is the peer PyTorch script's (../shared/bench/torch_reference.py): 64
pairs of 32 source + 32 target tokens, one pair per row (no padding), vocab 8000, AdamW,
label smoothing 0.1, dropout 0.1 (on the attention weights too, as nn.Transformer applies it,
so the step takes the explicit attention path), float32, d_model 256 / 4 heads / FFN 1024 /
3+3 layers (`model=small`). Run both in one session and compare ratios.

FLOP counting (model/flops.py has the formula per part): matmul FLOPs of forward plus
backward only. Every dense weight of P parameters costs 6 FLOPs per parameter per token it
is applied to (2 forward, 4 backward: input and weight gradients); that covers q/k/v/out,
the FFNs, cross-attention k/v (applied to the source tokens) and the output projection
(D x V, applied to the target tokens). Attention adds Q K^T and weights x V, 2 * Tq * Tk * W
each, x 3 for forward + backward, on the full (unmasked) square. Embedding lookups,
LayerNorms, biases, softmax, the loss and the optimizer are not counted. The peak is the
best FLOP/s of a large matmul in the compute dtype, on the same devices, in this process.

Everything here builds the step the way train/engine/trainer.py does (train/engine/step.py's step jitted by
train/engine/sharding.py, state donated, synthetic batches placed with the batch sharding), so
the numbers describe the real training path, not a special benchmark path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from train.peer_compare import DEFAULT_SCRIPT, PeerError, check_peer, compare_rounds

PRESETS: dict[str, dict[str, Any]] = {
    # DESIGN.md's benchmark workload (also the project's default model shape).
    "default": dict(d_model=256, heads=4, ffn=1024, layers=3, vocab=8000, batch=64, src_len=32,
                    tgt_len=32, dtype="float32", steps=10, warmup=3),
    # A GPU-sized model: Transformer-base widths in bfloat16 with a GPU-sized batch. It runs
    # on the CPU with small --batch/--steps, but its MFU only means something on a GPU.
    "gpu512": dict(d_model=512, heads=8, ffn=2048, layers=6, vocab=32000, batch=256, src_len=64,
                   tgt_len=64, dtype="bfloat16", steps=20, warmup=3),
}
GENERAL = dict(decode_batch=64, decode_reps=2, data_batches=0, peak_n=0, timing_rounds=3)
# CI: a small model and a few steps, so the whole run takes seconds; same lines and keys,
# but the figures are not the workload's.
SHORT = dict(batch=8, src_len=16, tgt_len=16, steps=2, warmup=1, timing_rounds=1, decode_batch=4,
             decode_reps=1, data_batches=20, peak_n=512)
SHORT_MODEL = {"default": dict(d_model=64, heads=4, ffn=256, layers=2, vocab=1000),
               "gpu512": dict(vocab=1000)}  # gpu512 keeps its widths and depth: that is its point


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def rounded(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if isinstance(x, float) and math.isfinite(x) else x


# ---- set-up ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--only", default="train,decode,data", help="comma-separated: train, decode, data")
    p.add_argument("--short", action="store_true", help="CI mode: a few steps, tiny decode and data runs")
    g = p.add_argument_group("model (defaults from the preset)")
    g.add_argument("--d-model", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--ffn", type=int)
    g.add_argument("--layers", type=int, help="encoder and decoder layers each")
    g.add_argument("--vocab", type=int)
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--attention-dropout", type=float, default=None,
                   help="dropout on the attention weights (default: --dropout, as nn.Transformer does)")
    g.add_argument("--attention-impl", choices=["fast", "explicit"], default="fast")
    g.add_argument("--remat", action="store_true", help="model.remat: recompute layer activations")
    g.add_argument("--torch-like", action="store_true",
                   help="learned positions and an untied output layer, as in the PyTorch reference")
    g = p.add_argument_group("workload")
    g.add_argument("--batch", type=int, help="sentence pairs per step (global, over all devices)")
    g.add_argument("--src-len", type=int)
    g.add_argument("--tgt-len", type=int)
    g.add_argument("--steps", type=int, help="timed train steps")
    g.add_argument("--warmup", type=int, help="untimed steps after compiling")
    g.add_argument("--timing-rounds", type=int, help="alternations of the matmul peak and --steps "
                   "timed steps; the median-MFU round is reported (default 3)")
    g.add_argument("--grad-accum", type=int, default=1, help="optim.grad_accum (optax.MultiSteps)")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g = p.add_argument_group("scale")
    g.add_argument("--mesh-data", type=int, default=-1, help="devices on the data axis (-1: all)")
    g.add_argument("--fsdp", action="store_true", help="train.fsdp: shard params and optimizer state")
    g.add_argument("--compilation-cache", default=None, help="persistent XLA cache dir (off by default)")
    g = p.add_argument_group("against PyTorch (train.peer_compare; needs --only train)")
    g.add_argument("--torch-python", help="an interpreter with torch installed: after the train line, "
                   "run interleaved rounds of this project, torch eager and torch.compile")
    g.add_argument("--torch-script", default=str(DEFAULT_SCRIPT), help="the peer script (default: %(default)s)")
    g.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    g = p.add_argument_group("decode and data")
    g.add_argument("--decode-batch", type=int, help="sentences per decode call (default 64)")
    g.add_argument("--decode-reps", type=int, help="timed decode calls, best kept (default 2)")
    g.add_argument("--beam", type=int, default=4)
    g.add_argument("--data-batches", type=int, help="batches to time (default 0: one whole epoch)")
    g.add_argument("--peak-n", type=int, help="matmul size for the peak (default: by platform)")
    g.add_argument("--no-host-allocator-fix", action="store_true",
                   help="skip train.engine.host_allocator.configure_host_allocator (to measure what it buys)")
    a = p.parse_args(argv)
    # Precedence: explicit flags, then --short, then the preset, then the general defaults.
    short = {**SHORT, **SHORT_MODEL[a.preset]} if a.short else {}
    fill = {**GENERAL, **PRESETS[a.preset], **short}
    for key, value in fill.items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    a.parts = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(a.parts) - {"train", "decode", "data"}
    if unknown:
        p.error(f"--only: unknown part(s) {sorted(unknown)}; choose from train, decode, data")
    if a.torch_python and "train" not in a.parts:
        p.error("--torch-python compares train steps: add train to --only")
    for flag in ("rounds", "timing_rounds"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(a, flag)}: give at least 1")
    return a


def attention_dropout(a: argparse.Namespace) -> float:
    return a.dropout if a.attention_dropout is None else a.attention_dropout


def model_config(a: argparse.Namespace):
    from model.config import ModelConfig

    return ModelConfig(
        d_model=a.d_model, num_heads=a.heads, ffn_dim=a.ffn, num_encoder_layers=a.layers,
        num_decoder_layers=a.layers, dropout=a.dropout, attention_dropout=attention_dropout(a),
        dtype=a.dtype, attention_impl=a.attention_impl,
        remat=a.remat, max_len=max(512, a.src_len, a.tgt_len),
        **(dict(positions="learned", tie_embeddings=False) if a.torch_like else {}),
    ).validate()


def environment(mesh) -> dict:
    import jax

    dev = jax.devices()[0]
    return {
        "platform": dev.platform, "device_kind": dev.device_kind, "devices": int(mesh.size),
        "processes": jax.process_count(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
    }


def synthetic_batch(rows: int, src_len: int, tgt_len: int, vocab: int, seed: int = 0) -> dict:
    """One pair per row, no padding: exactly the PyTorch reference's batch (random ids >= 4)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tgt = rng.integers(4, vocab, (rows, tgt_len + 1), dtype=np.int32)
    return {
        "src": rng.integers(4, vocab, (rows, src_len), dtype=np.int32),
        "src_segments": np.ones((rows, src_len), np.int32),
        "src_positions": np.broadcast_to(np.arange(src_len, dtype=np.int32), (rows, src_len)).copy(),
        "tgt_in": tgt[:, :-1].copy(),
        "tgt_out": tgt[:, 1:].copy(),
        "tgt_segments": np.ones((rows, tgt_len), np.int32),
        "tgt_positions": np.broadcast_to(np.arange(tgt_len, dtype=np.int32), (rows, tgt_len)).copy(),
    }


# ---- peak ------------------------------------------------------------------------------------

def matmul_peak(mesh, dtype: str, n: int, reps: int = 5) -> tuple[Callable[[], float], str]:
    """A function that measures the best FLOP/s (over `reps` runs) of an (n, n) @ (n, n) matmul
    per device, on all devices of the mesh at once; and a label saying what it multiplies."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    k = mesh.size
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    dt = jnp.dtype(dtype)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a, b = (jax.device_put(jax.random.normal(key, (k, n, n), jnp.float32).astype(dt), sharding) for key in keys)
    f = jax.jit(lambda a, b: jnp.einsum("kij,kjl->kil", a, b, preferred_element_type=dt),
                out_shardings=sharding)
    f(a, b).block_until_ready()

    def measure() -> float:
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        return 2.0 * k * n**3 / best

    return measure, f"{k}x({n}x{n})@({n}x{n}) {dtype}"


# ---- train -------------------------------------------------------------------------------------

class CompileTimer:
    """Sums JAX's own tracing/lowering/compiling durations (jax.monitoring events)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self) -> None:
        import jax.monitoring

        self.total, self.compiles = 0.0, 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_: Any) -> None:
        if event in self.EVENTS:
            self.total += duration
            self.compiles += event == "/jax/core/compile/backend_compile_duration"

    def reset(self) -> None:
        self.total, self.compiles = 0.0, 0


def bench_train(a: argparse.Namespace, mesh, timer: CompileTimer,
                peak: Callable[[], float]) -> tuple[dict, Callable[[], float]]:
    """The train line, and a function that times the same compiled step again (for --torch-python).

    A shared VM's speed drifts within a minute, so the step and the matmul peak are timed in
    alternation, a.timing_rounds times; the line reports the round with the median MFU (its
    ms_per_step and peak), and every round's figures under "rounds".
    """
    import jax
    import numpy as np
    from flax import nnx

    from model.flops import flops_per_token
    from model.transformer import Transformer
    from train.config import OptimConfig
    from train.engine.optimizer import make_optimizer
    from train.engine.sharding import batch_sharding, jit_train_step, put_batch, state_sharding
    from train.engine.step import create_state, make_train_step

    cfg = model_config(a)
    model = Transformer(cfg, a.vocab, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    num_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
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
    key = jax.random.PRNGKey(0)

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
    sharded = batch["src"].sharding.shard_shape(batch["src"].shape)
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


# ---- decode ------------------------------------------------------------------------------------

class _Uncached:
    """A view of the model whose `decode_step` recomputes the whole prefix (no KV cache).

    The "cache" is the token history (B, L) plus nothing else, so beam_search's reordering of
    cache rows reorders histories too; cross "kv" is the encoder memory itself. Used to time
    beam search without the KV cache using model/decoding.py's own beam_search.
    """

    def __init__(self, model, bos_id: int = 1):
        self.model, self.bos_id = model, bos_id

    def encode(self, src, src_segments):
        return self.model.encode(src, src_segments)

    def precompute_cross(self, memory):
        return {"memory": memory}

    def init_cache(self, batch_size: int, max_len: int):
        import jax.numpy as jnp

        return {"tokens": jnp.full((batch_size, max_len), self.bos_id, jnp.int32)}

    def decode_step(self, token, position, cache, cross, src_segments):
        import jax
        import jax.numpy as jnp

        b, length = cache["tokens"].shape
        position = jnp.broadcast_to(jnp.asarray(position, jnp.int32), (b,))
        tokens = cache["tokens"].at[jnp.arange(b), position].set(token)  # tgt_in[t] = last token
        logits = self.model.decode(tokens, cross["memory"], src_segments, jnp.ones_like(tokens))
        logits = jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]  # (B, V)
        return logits, {"tokens": tokens}


def bench_decode(a: argparse.Namespace, timer: CompileTimer) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from model.decoding import beam_search, greedy_decode, make_decode_fn
    from model.transformer import Transformer

    cfg = dataclasses.replace(model_config(a), dropout=0.0)
    model = Transformer(cfg, a.vocab, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    # Every sentence may run to tgt_len tokens: limit = 0 * src_len + tgt_len.
    kw = dict(max_len=a.tgt_len, max_len_a=0.0, max_len_b=a.tgt_len)
    src = synthetic_batch(a.decode_batch, a.src_len, a.tgt_len, a.vocab, seed=1)["src"]

    def greedy_uncached(state, src):
        return greedy_decode(nnx.merge(graphdef, state), src, use_cache=False, **kw)

    def beam_uncached(state, src):
        return beam_search(_Uncached(nnx.merge(graphdef, state)), src, beam_size=a.beam, alpha=0.6, **kw)[0]

    fns: dict[str, Callable] = {
        "greedy_cached": make_decode_fn(graphdef, beam_size=1, alpha=0.6, **kw),
        "greedy_uncached": jax.jit(greedy_uncached),
        f"beam{a.beam}_cached": make_decode_fn(graphdef, beam_size=a.beam, alpha=0.6, **kw),
        f"beam{a.beam}_uncached": jax.jit(beam_uncached),
    }
    out: dict[str, Any] = {"name": "decode", "batch": a.decode_batch, "src_len": a.src_len,
                           "max_len": a.tgt_len, "beam": a.beam, "dtype": a.dtype}
    outputs = {}
    for name, fn in fns.items():
        timer.reset()
        tokens = fn(params, src)
        jax.block_until_ready(tokens)
        compile_s = timer.total
        best = float("inf")
        for _ in range(a.decode_reps):
            t0 = time.perf_counter()
            tokens = jax.block_until_ready(fn(params, src))
            best = min(best, time.perf_counter() - t0)
        outputs[name] = np.asarray(tokens)
        out[f"{name}_sentences_per_s"] = round(a.decode_batch / best, 2)
        out[f"{name}_compile_s"] = round(compile_s, 2)
        log(f"decode {name}: {a.decode_batch / best:.1f} sentences/s")
    for kind in ("greedy", f"beam{a.beam}"):
        out[f"{kind}_cache_speedup"] = round(out[f"{kind}_cached_sentences_per_s"]
                                             / out[f"{kind}_uncached_sentences_per_s"], 2)
        # The cache is an optimisation: it must not change what is decoded.
        out[f"{kind}_cached_equals_uncached"] = bool(np.array_equal(outputs[f"{kind}_cached"],
                                                                    outputs[f"{kind}_uncached"]))
    return out


# ---- data --------------------------------------------------------------------------------------

def bench_data(a: argparse.Namespace) -> dict:
    import numpy as np

    from data.config import DataConfig
    from data.packing import PackedBatches
    from data.pipeline import prepare
    from train.config import REPO_ROOT

    cfg = DataConfig()  # the embedded corpus with the project's default lengths and batch size
    t0 = time.perf_counter()
    data = prepare(cfg, REPO_ROOT)
    prepare_s = time.perf_counter() - t0
    batches = PackedBatches(data.splits["train"], cfg, seed=0)
    t0 = time.perf_counter()
    plan = batches.plan(0)
    plan_s = time.perf_counter() - t0
    limit = a.data_batches or len(plan)
    shapes: set = set()
    real = padded = n = 0
    t0 = time.perf_counter()
    for batch in batches.iter_epoch(0):
        shapes.add(tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items())))
        real += int(np.count_nonzero(batch["src_segments"])) + int(np.count_nonzero(batch["tgt_segments"]))
        padded += batch["src"].size + batch["tgt_in"].size
        n += 1
        if n >= limit:
            break
    build_s = time.perf_counter() - t0
    eff = batches.efficiency
    return {
        "name": "data", "dataset": cfg.name, "split": "train", "examples": len(data.splits["train"]),
        "tokens_per_s": round(real / (build_s + plan_s * n / len(plan)), 1),  # plan cost pro rata
        "padded_tokens_per_s": round(padded / (build_s + plan_s * n / len(plan)), 1),
        "padding_efficiency": round(eff["tokens"], 4),
        "src_efficiency": round(eff["src"], 4), "tgt_efficiency": round(eff["tgt"], 4),
        "pairs_per_batch": round(eff["pairs_per_batch"], 2),
        "batches_per_epoch": len(plan), "batches_timed": n,
        "distinct_shapes": len(shapes), "full_epoch": n == len(plan),
        "rows": batches.rows, "max_source_len": cfg.max_source_len, "max_target_len": cfg.max_target_len,
        "plan_s": round(plan_s, 3), "prepare_s": round(prepare_s, 2),
        "cache_hit": bool(data.stats.get("cache", {}).get("hit")),
    }


# ---- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.torch_python:
        try:  # before anything is compiled
            log(f"peer: torch {check_peer(a.torch_python, Path(a.torch_script))} ({a.torch_python})")
        except PeerError as e:
            raise SystemExit(f"error: {e}") from None
    if not a.no_host_allocator_fix:
        from train.engine.host_allocator import configure_host_allocator

        configure_host_allocator()  # before JAX starts its threads
    import jax

    if a.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", a.compilation_cache)
    from train.engine.sharding import initialize_distributed, make_mesh

    initialize_distributed()
    mesh = make_mesh(argparse.Namespace(mesh_data=a.mesh_data))
    timer = CompileTimer()
    env = environment(mesh)
    log(f"{env['devices']} x {env['platform']} ({env['device_kind']}), preset {a.preset}, parts {a.parts}")
    if "train" in a.parts:
        n = a.peak_n or (2048 if env["platform"] == "cpu" else 8192)
        peak, peak_label = matmul_peak(mesh, a.dtype, n)
        rec, seconds_per_step = bench_train(a, mesh, timer, peak)
        rec["peak_matmul"] = peak_label
        if env["platform"] == "cpu" and a.preset == "gpu512":
            rec["note"] = "gpu512 is a GPU config; its CPU MFU is not meaningful"
        emit({**rec, **env, "preset": a.preset, "short": a.short})
        if a.torch_python:
            for record in compare_rounds(a, seconds_per_step, a.torch_python, Path(a.torch_script),
                                         a.rounds):
                log(f"compare {record['round']}: project {record['project_ms']} ms/step, torch eager "
                    f"{record['torch_eager_ms']} ({record['vs_torch_eager']}x), torch.compile "
                    f"{record['torch_compile_ms']} ({record['vs_torch_compile']}x)")
                emit({**record, **env, "preset": a.preset, "short": a.short})
    if "decode" in a.parts:
        emit({**bench_decode(a, timer), **env, "preset": a.preset, "short": a.short})
    if "data" in a.parts and jax.process_index() == 0:
        emit({**bench_data(a), "short": a.short})


if __name__ == "__main__":
    main()
