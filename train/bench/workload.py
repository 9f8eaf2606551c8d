"""The benchmark workload: presets, the command's options, the model config and the batch.

The default workload (preset "default", the project's default model shape, `model=small`):
64 pairs of 32 source + 32 target tokens, one pair per row (no padding), vocab 8000, AdamW,
label smoothing 0.1, dropout 0.1 (on the attention weights too, as nn.Transformer applies it,
so the step takes the explicit attention path), float32, d_model 256 / 4 heads / FFN 1024 /
3+3 layers. The PyTorch peer that --torch-python runs (peers/torch_train.py, the same workload
written with nn.Transformer) gets these sizes on its command line (peer_compare.peer_command),
and the Hugging Face decoding peer (peers/hf_generate.py) the decode line's; run both sides in
one session and compare ratios.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Optional

from train.bench.peer_compare import DECODE_SCRIPT, TRAIN_SCRIPT
from train.bench.scaling_report import TABLES

if TYPE_CHECKING:
    from data.batch import Batch

PRESETS: dict[str, dict[str, Any]] = {
    # The benchmark workload (also the project's default model shape).
    "default": dict(d_model=256, heads=4, ffn=1024, layers=3, vocab=8000, batch=64, src_len=32,
                    tgt_len=32, dtype="float32", steps=10, warmup=3),
    # A GPU-sized model: Transformer-base widths in bfloat16 with a GPU-sized batch. It runs
    # on the CPU with small --batch/--steps, but its MFU only means something on a GPU.
    "gpu512": dict(d_model=512, heads=8, ffn=2048, layers=6, vocab=32000, batch=256, src_len=64,
                   tgt_len=64, dtype="bfloat16", steps=20, warmup=3),
}
GENERAL = dict(decode_batch=64, decode_reps=2, data_batches=0, peak_n=0, timing_rounds=3, scaling_jobs=1)
# CI: a small model and a few steps, so the whole run takes seconds; same lines and keys,
# but the figures are not the workload's.
SHORT = dict(batch=8, src_len=16, tgt_len=16, steps=2, warmup=1, timing_rounds=1, decode_batch=4,
             decode_reps=1, data_batches=20, peak_n=512)
SHORT_MODEL = {"default": dict(d_model=64, heads=4, ffn=256, layers=2, vocab=1000),
               "gpu512": dict(vocab=1000)}  # gpu512 keeps its widths and depth: that is its point
# --scaling --short runs a dozen subprocesses, each compiling its own step (about 10 s of one CPU
# core even at this size, most of it XLA compiling): one layer, 1 step, two points at a time.
SHORT_SCALING = dict(d_model=32, heads=2, ffn=64, layers=1, vocab=100, batch=4, src_len=8, tgt_len=8,
                     steps=1, warmup=0, decode_batch=4, decode_reps=2, peak_n=256, scaling_jobs=2)
PARTS = ("train", "decode", "data")


def parse_args(argv: Optional[list[str]] = None, description: Optional[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=description,
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
                   help="learned positions and an untied output layer (the PyTorch peer gets the same)")
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
    g = p.add_argument_group("against PyTorch and Hugging Face (train.bench.peer_compare; needs "
                             "train or decode in --only)")
    g.add_argument("--torch-python", help="an interpreter with torch (and transformers, for decode) "
                   "installed, never the project's: after the train line, interleaved rounds of this "
                   "project, torch eager and torch.compile; after the decode line, of the project's "
                   "KV-cached greedy and beam search and transformers' generate")
    g.add_argument("--torch-script", default=str(TRAIN_SCRIPT),
                   help="the train peer (default: the project's peers/torch_train.py)")
    g.add_argument("--hf-script", default=str(DECODE_SCRIPT),
                   help="the decode peer (default: the project's peers/hf_generate.py)")
    g.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    g = p.add_argument_group("decode and data")
    g.add_argument("--decode-batch", type=int, help="sentences per decode call (default 64)")
    g.add_argument("--decode-reps", type=int, help="timed decode calls, best kept (default 2)")
    g.add_argument("--beam", type=int, default=4)
    g.add_argument("--run-dir", action="append", default=[], metavar="DIR",
                   help="decode with this trained run's model instead of the workload's (repeat to compare "
                        "runs in alternating rounds, e.g. a pruned run against its source; train.bench.run_decode)")
    g.add_argument("--data-batches", type=int, help="batches to time (default 0: one whole epoch)")
    g.add_argument("--peak-n", type=int, help="matmul size for the peak (default: by platform)")
    g.add_argument("--no-host-allocator-fix", action="store_true",
                   help="skip train.engine.host_allocator.configure_host_allocator (to measure what it buys)")
    g.add_argument("--peak-memory", action="store_true",
                   help="add the process's peak memory to the train and decode lines (peak RSS on the CPU, "
                        "the device's peak_bytes_in_use where it has one); a process's peak only grows, so "
                        "it describes one part only with one part in --only")
    g = p.add_argument_group("scaling (train.bench.scaling; one subprocess per point)")
    g.add_argument("--scaling", action="store_true",
                   help="how the cost grows: heads at fixed width, sequence length (fast vs explicit "
                        "attention), width x depth, decode output length; JSON lines name=scaling (--only does "
                        "not apply: each study runs the part it needs)")
    g.add_argument("--scaling-tables", default=",".join(TABLES),
                   help=f"comma-separated subset of {', '.join(TABLES)} (default: all)")
    g.add_argument("--scaling-out", metavar="DIR", default=None,
                   help="also write DIR/scaling.md (one table per study) and DIR/scaling_<table>.png")
    g.add_argument("--scaling-jobs", type=int, help="points measured at once (default 1; 2 with --short, "
                   "whose timings mean nothing anyway: concurrent points slow each other down)")
    a = p.parse_args(argv)
    # Precedence: explicit flags, then --short, then the preset, then the general defaults.
    short = {**SHORT, **SHORT_MODEL[a.preset], **(SHORT_SCALING if a.scaling else {})} if a.short else {}
    fill = {**GENERAL, **PRESETS[a.preset], **short}
    for key, value in fill.items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    a.parts = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(a.parts) - set(PARTS)
    if unknown:
        p.error(f"--only: unknown part(s) {sorted(unknown)}; choose from train, decode, data")
    if a.torch_python and not {"train", "decode"} & set(a.parts):
        p.error("--torch-python compares train steps and decoding: add train or decode to --only")
    if a.run_dir and a.parts != ["decode"]:
        p.error("--run-dir times decoding with a trained run's model: use it with --only decode")
    if a.run_dir and a.torch_python:
        p.error("--run-dir and --torch-python: the Hugging Face peer decodes the workload's shape, not a run's; "
                "run them separately")
    a.scaling_tables = [s.strip() for s in a.scaling_tables.split(",") if s.strip()]
    if set(a.scaling_tables) - set(TABLES) or not a.scaling_tables:
        p.error(f"--scaling-tables {','.join(a.scaling_tables)}: choose from {', '.join(TABLES)}")
    if a.scaling and (a.torch_python or a.run_dir):
        p.error("--scaling measures the project alone: leave out --torch-python and --run-dir")
    if a.scaling_out and not a.scaling:
        p.error("--scaling-out writes the --scaling tables: add --scaling")
    if len(set(a.run_dir)) != len(a.run_dir):
        p.error(f"--run-dir: {a.run_dir} names a run twice")
    for flag in ("rounds", "timing_rounds", "scaling_jobs"):
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


def synthetic_batch(rows: int, src_len: int, tgt_len: int, vocab: int, seed: int = 0) -> "Batch":
    """One pair per row, no padding, drawn as the PyTorch peer draws its own (peers/torch_train.py,
    make_batch): random ids >= 4, a (rows, tgt_len + 1) target split into tgt_in and tgt_out."""
    import numpy as np

    from data.batch import Batch

    rng = np.random.default_rng(seed)
    tgt = rng.integers(4, vocab, (rows, tgt_len + 1), dtype=np.int32)
    return Batch(
        src=rng.integers(4, vocab, (rows, src_len), dtype=np.int32),
        src_segments=np.ones((rows, src_len), np.int32),
        src_positions=np.broadcast_to(np.arange(src_len, dtype=np.int32), (rows, src_len)).copy(),
        tgt_in=tgt[:, :-1].copy(),
        tgt_out=tgt[:, 1:].copy(),
        tgt_segments=np.ones((rows, tgt_len), np.int32),
        tgt_positions=np.broadcast_to(np.arange(tgt_len, dtype=np.int32), (rows, tgt_len)).copy(),
    )
