"""The benchmark's train step in PyTorch: the peer that `python -m train.bench --torch-python`
times in the same rounds as the project's own step.

A plain script for an interpreter that has torch (`pip install torch==2.13.0`); it never
imports jax or this project. The workload mirrors train/bench/workload.py:

    nn.Transformer encoder-decoder, pre-LN (norm_first=True), batch_first, ReLU FFN
    d_model 256, 4 heads, FFN 1024, 3 encoder + 3 decoder layers
    one embedding table (vocabulary 8000) for source and target, scaled by sqrt(d_model),
    tied to the output layer; sinusoidal positions (sin half, cos half, as the project)
    dropout 0.1 on embeddings, sublayer outputs and attention weights (nn.Transformer's)
    AdamW (betas 0.9/0.98, eps 1e-9, weight decay 0.01 on matrices), gradient-norm clip 1.0
    cross entropy with label smoothing 0.1, float32
    64 pairs of 32 source + 32 target tokens: random ids >= 4, a (64, 33) target draw
    split into tgt_in = tgt[:, :-1] and tgt_out = tgt[:, 1:]; no padding, causal target mask

The learning rate is constant (the project's schedule is one scalar per step, nothing to time).

Protocol (train/bench/peer_compare.py): the workload's sizes as flags (--d-model, --heads,
--layers, --ffn, --vocab, --batch, --src-len, --tgt-len, --steps, --warmup, and with the
project's --torch-like also --positions learned --untied); `--compile` runs the step under
`torch.compile` instead of eagerly, or `--modes eager,compile` runs both in turn. Each mode
prints one JSON line on stdout with "ms_per_step" (the mean over --steps timed steps, after
--warmup untimed ones, the first of which compiles in compile mode); progress goes to stderr.

    python train/bench/peers/torch_train.py --steps 10 --warmup 3 --modes eager,compile
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

# nn.Transformer builds its encoder with nested tensors on, which pre-LN layers cannot use anyway.
warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
FIRST_ID = 4  # ids 0-3 are the special tokens (pad, BOS, EOS, unknown): the batch never holds them


def sinusoids(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model): sines then cosines at geometric frequencies 1 / 10000^(i / (half - 1))."""
    half = d_model // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    return F.pad(table, (0, d_model - 2 * half))


class EncoderDecoder(nn.Module):
    def __init__(self, o: argparse.Namespace):
        super().__init__()
        self.scale = math.sqrt(o.d_model)
        self.tokens = nn.Embedding(o.vocab, o.d_model)
        nn.init.normal_(self.tokens.weight, std=o.d_model ** -0.5)  # unit variance once scaled
        max_len = max(512, o.src_len, o.tgt_len)
        if o.positions == "learned":
            self.learned = nn.Embedding(max_len, o.d_model)
        else:
            self.register_buffer("table", sinusoids(max_len, o.d_model), persistent=False)
        self.drop = nn.Dropout(o.dropout)
        self.core = nn.Transformer(
            d_model=o.d_model, nhead=o.heads, num_encoder_layers=o.layers, num_decoder_layers=o.layers,
            dim_feedforward=o.ffn, dropout=o.dropout, activation="relu", batch_first=True,
            norm_first=True)  # nn.Transformer adds the final encoder and decoder LayerNorms
        self.untied = nn.Linear(o.d_model, o.vocab, bias=False) if o.untied else None
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(o.tgt_len),
                             persistent=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        pos = self.learned.weight[:n] if hasattr(self, "learned") else self.table[:n]
        return self.drop(self.tokens(ids) * self.scale + pos)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        h = self.core(self.embed(src), self.embed(tgt_in), tgt_mask=self.causal, tgt_is_causal=True)
        return self.untied(h) if self.untied is not None else h @ self.tokens.weight.t()


def make_batch(o: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(o.seed)
    src = torch.randint(FIRST_ID, o.vocab, (o.batch, o.src_len), generator=g)
    tgt = torch.randint(FIRST_ID, o.vocab, (o.batch, o.tgt_len + 1), generator=g)
    return src, tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()


def time_mode(o: argparse.Namespace, mode: str) -> dict:
    torch.manual_seed(o.seed)
    model = EncoderDecoder(o).train()
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.01},
                             {"params": others, "weight_decay": 0.0}],
                            lr=o.lr, betas=(0.9, 0.98), eps=1e-9)
    src, tgt_in, tgt_out = make_batch(o)

    def loss_of(src, tgt_in, tgt_out):
        logits = model(src, tgt_in)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                               label_smoothing=o.label_smoothing)

    forward = torch.compile(loss_of) if mode == "compile" else loss_of

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = forward(src, tgt_in, tgt_out)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    t0 = time.perf_counter()
    step()  # the first step: compiles in compile mode
    first_s = time.perf_counter() - t0
    for _ in range(o.warmup - 1):
        step()
    t0 = time.perf_counter()
    for _ in range(o.steps):
        loss = step()
    loss_value = float(loss)  # CPU kernels run synchronously; this is the only host read
    seconds = (time.perf_counter() - t0) / o.steps
    tokens = o.batch * (o.src_len + o.tgt_len)
    return {"impl": "torch", "mode": mode, "ms_per_step": round(seconds * 1e3, 2),
            "tokens_per_s": round(tokens / seconds, 1), "first_step_s": round(first_s, 2),
            "loss": round(loss_value, 4), "steps": o.steps, "warmup": o.warmup, "batch": o.batch,
            "src_len": o.src_len, "tgt_len": o.tgt_len, "d_model": o.d_model, "heads": o.heads,
            "ffn": o.ffn, "layers": o.layers, "vocab": o.vocab, "positions": o.positions,
            "tied": not o.untied, "params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--d-model", 256), ("--heads", 4), ("--layers", 3), ("--ffn", 1024),
                          ("--vocab", 8000), ("--batch", 64), ("--src-len", 32), ("--tgt-len", 32),
                          ("--steps", 10), ("--warmup", 3), ("--seed", 0), ("--threads", 0)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--positions", choices=["sinusoidal", "learned"], default="sinusoidal")
    p.add_argument("--untied", action="store_true",
                   help="a separate output layer instead of the tied embedding")
    p.add_argument("--compile", action="store_true", help="the same as --modes compile")
    p.add_argument("--modes", default="eager", help="comma-separated: eager, compile (default eager)")
    o = p.parse_args(argv)
    o.modes = ["compile"] if o.compile else [m.strip() for m in o.modes.split(",") if m.strip()]
    if not o.modes or set(o.modes) - {"eager", "compile"}:
        p.error(f"--modes {','.join(o.modes)}: choose from eager, compile")
    if o.steps < 1 or o.warmup < 1:
        p.error("--steps and --warmup must be at least 1 (the first warmup step compiles)")
    if o.vocab <= FIRST_ID:
        p.error(f"--vocab must exceed {FIRST_ID}: ids below it are special")
    return o


def main(argv: list[str] | None = None) -> None:
    o = parse_args(argv)
    if o.threads:
        torch.set_num_threads(o.threads)
    for mode in o.modes:
        print(f"[torch_train] {mode}: {o.warmup} warmup + {o.steps} timed steps", file=sys.stderr, flush=True)
        print(json.dumps(time_mode(o, mode)), flush=True)


if __name__ == "__main__":
    main()
