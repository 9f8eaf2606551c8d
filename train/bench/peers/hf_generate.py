"""Hugging Face `generate` on the benchmark's encoder-decoder shape: the decoding peer that
`python -m train.bench --only decode --torch-python PYTHON` times in the same rounds as the
project's KV-cached greedy and beam search.

A plain script for an interpreter with torch and transformers
(`pip install torch==2.13.0 transformers`); it never imports jax or this project.

The model: `MarianMTModel` from a `MarianConfig` of the benchmark's shape (d_model 256, 4 heads,
FFN 1024, 3 + 3 layers, ReLU, vocabulary 8000, one embedding table shared by encoder, decoder
and output, scaled by sqrt(d_model), sinusoidal positions), random weights, float32, eval mode,
PyTorch eager, under `torch.no_grad()`; ids 0 / 1 / 2 are pad / decoder start / EOS, as in the
project. Marian is a post-LN Transformer; the project's model is pre-LN: the same matmuls, one
LayerNorm per sublayer either way.

The work is fixed on both sides: every sentence gets exactly --new-tokens new tokens here
(min_new_tokens = max_new_tokens, so EOS is masked until the end; no forced EOS; pad and the
start token suppressed, as the project masks them), and the
project's side decodes with no EOS id (train/bench/decode.py, fixed_length_decoders), so neither
stops early. The source: --batch rows of --src-len random ids >= 4, no padding.

Protocol (train/bench/peer_compare.py): sizes as flags (--d-model, --heads, --layers, --ffn,
--vocab, --batch, --src-len, --new-tokens, --beam, --reps, --warmup) and --modes greedy,beam;
each mode prints one JSON line on stdout with "mode", "sentences_per_s" (batch / the best of
--reps timed calls, after --warmup untimed ones) and "new_tokens" (what was generated per
sentence, checked by the caller); progress goes to stderr.

    python train/bench/peers/hf_generate.py --batch 64 --src-len 32 --new-tokens 32 --modes greedy,beam
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import transformers
from transformers import MarianConfig, MarianMTModel

PAD, START, EOS, FIRST_ID = 0, 1, 2, 4


def build_model(o: argparse.Namespace) -> MarianMTModel:
    config = MarianConfig(
        vocab_size=o.vocab, d_model=o.d_model, encoder_layers=o.layers, decoder_layers=o.layers,
        encoder_attention_heads=o.heads, decoder_attention_heads=o.heads, encoder_ffn_dim=o.ffn,
        decoder_ffn_dim=o.ffn, activation_function="relu", scale_embedding=True,
        max_position_embeddings=max(512, o.src_len, o.new_tokens + 1),
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=PAD, decoder_start_token_id=START, eos_token_id=EOS, forced_eos_token_id=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(o.seed)
    kw = {"attn_implementation": o.attn} if o.attn else {}
    return MarianMTModel(config, **kw).eval()


def time_mode(o: argparse.Namespace, model: MarianMTModel, src: torch.Tensor, mode: str) -> dict:
    beams = 1 if mode == "greedy" else o.beam
    kwargs = dict(input_ids=src, attention_mask=torch.ones_like(src), num_beams=beams,
                  do_sample=False, max_new_tokens=o.new_tokens, min_new_tokens=o.new_tokens,
                  suppress_tokens=[PAD, START], num_return_sequences=1, use_cache=True)
    with torch.no_grad():
        for _ in range(o.warmup):
            model.generate(**kwargs)
        best = float("inf")
        for _ in range(o.reps):
            t0 = time.perf_counter()
            out = model.generate(**kwargs)
            best = min(best, time.perf_counter() - t0)
    generated = out[:, 1:]  # the decoder start token comes first
    lengths = ((generated != PAD) & (generated != EOS)).sum(dim=1)  # tokens before any end
    return {"impl": "hf", "mode": mode, "beam": beams, "sentences_per_s": round(o.batch / best, 2),
            "seconds": round(best, 4), "new_tokens": int(generated.shape[1]),
            "all_full_length": bool((lengths == o.new_tokens).all()), "batch": o.batch,
            "src_len": o.src_len, "d_model": o.d_model, "heads": o.heads, "ffn": o.ffn,
            "layers": o.layers, "vocab": o.vocab, "reps": o.reps,
            "attn_implementation": model.config._attn_implementation,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--d-model", 256), ("--heads", 4), ("--layers", 3), ("--ffn", 1024),
                          ("--vocab", 8000), ("--batch", 64), ("--src-len", 32), ("--new-tokens", 32),
                          ("--beam", 4), ("--reps", 2), ("--warmup", 1), ("--seed", 0), ("--threads", 0)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--modes", default="greedy,beam", help="comma-separated: greedy, beam (default both)")
    p.add_argument("--attn", default=None, help="attn_implementation (default: transformers' own, sdpa)")
    o = p.parse_args(argv)
    o.modes = [m.strip() for m in o.modes.split(",") if m.strip()]
    if not o.modes or set(o.modes) - {"greedy", "beam"}:
        p.error(f"--modes {','.join(o.modes)}: choose from greedy, beam")
    if o.reps < 1 or o.warmup < 0 or o.new_tokens < 1 or o.beam < 1:
        p.error("--reps and --new-tokens must be at least 1, --beam at least 1, --warmup at least 0")
    if o.vocab <= FIRST_ID:
        p.error(f"--vocab must exceed {FIRST_ID}: ids below it are special")
    return o


def main(argv: list[str] | None = None) -> None:
    o = parse_args(argv)
    if o.threads:
        torch.set_num_threads(o.threads)
    model = build_model(o)
    g = torch.Generator().manual_seed(o.seed + 1)
    src = torch.randint(FIRST_ID, o.vocab, (o.batch, o.src_len), generator=g)
    for mode in o.modes:
        print(f"[hf_generate] {mode}: {o.warmup} warmup + {o.reps} timed calls", file=sys.stderr, flush=True)
        print(json.dumps(time_mode(o, model, src, mode)), flush=True)


if __name__ == "__main__":
    main()
