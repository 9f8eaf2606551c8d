"""`python -m train.bench.profile_decode`: where a KV-cached decode of the benchmark model spends
its time, op by op, from XLA:CPU's own trace.

    python -m train.bench.profile_decode                 # greedy, 64 sentences, 32 new tokens
    python -m train.bench.profile_decode --decoder beam --top 25
    python -m train.bench.profile_decode --floor         # and the matmul floor (dot_floor.py)
    python -m train.bench.profile_decode --d-model 512 --decode-batch 16   # any of train.bench's options

The decoder is the one the decode line times (train/bench/decode.py, fixed_length_decoders:
random weights, no EOS, every sentence runs to --tgt-len tokens), with the benchmark's own options
and defaults (train/bench/workload.py; --beam sets the beam width of --decoder beam). It is compiled, run once,
then run --reps times under `jax.profiler` with XLA:CPU's per-thunk trace events on
(`--xla_cpu_enable_xprof_traceme`, set before JAX starts). Each compiled op's time is summed
over the traced calls and divided by --reps. An op that runs once per call (the encoder, the
cross-attention keys and values) is told apart from one that runs at every step by its count.
What each op computes comes from the compiled HLO: its output shape and, for a fusion, the dot
inside it, if it has one. Wall times under a profiler run a little slower than without it; the
shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Optional

def profile(a: argparse.Namespace) -> str:
    import jax

    from model.decoding import make_decode_fn
    from train.bench.decode import best_sentences_per_s, decoder_inputs
    from train.bench.dot_floor import floor_lines, hlo_dots
    from train.bench.op_trace import hlo_ops, traced_op_times

    graphdef, params, kw, src = decoder_inputs(a)
    beam = a.beam if a.decoder == "beam" else 1
    fn = make_decode_fn(graphdef, beam_size=beam, alpha=0.6, eos_id=-1, **kw)
    jax.block_until_ready(fn(params, src))  # compile
    hlo = fn.lower(params, src).compile().as_text()
    shapes = hlo_ops(hlo)
    sentences_per_s = best_sentences_per_s({"decoder": fn}, params, src, a.reps)["decoder"]
    wall_ms = a.decode_batch / sentences_per_s * 1e3  # the best untraced call
    ms, count = traced_op_times(lambda: jax.block_until_ready(fn(params, src)), a.reps, set(shapes) - {"while"})
    steps = a.tgt_len
    per_step = {k: v for k, v in ms.items() if count[k] >= steps}
    once = {k: v for k, v in ms.items() if k not in per_step}
    total = sum(ms.values())
    kind = "greedy" if beam == 1 else f"beam {beam}"
    lines = [f"{kind}, {a.decode_batch} sentences x {a.tgt_len} new tokens: {wall_ms:.1f} ms per call untraced "
             f"(best of {a.reps}); {total:.1f} ms of compiled ops per traced call "
             f"({sum(once.values()):.1f} ms once per call, {sum(per_step.values()):.1f} ms in the {steps} steps)",
             "", "| op | runs per call | ms per call | share | what it computes |", "|---|---:|---:|---:|---|"]
    for name, t in ms.most_common(a.top):
        lines.append(f"| {name} | {count[name]} | {t:.2f} | {t / total:.1%} | {shapes[name]} |")
    by_family = collections.Counter()
    for name, t in per_step.items():
        by_family[re.sub(r"\.\d+$", "", name)] += t
    lines += ["", "Per-step ops by family (ms per call): "
              + ", ".join(f"{n} {t:.1f}" for n, t in by_family.most_common(8))]
    if a.floor:
        lines += [""] + floor_lines(hlo_dots(hlo), ms, count, wall_ms, "call")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from train.bench.op_trace import enable_op_trace
    from train.bench.workload import parse_args

    p = argparse.ArgumentParser(prog="python -m train.bench.profile_decode", add_help=False)
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--reps", type=int, default=2, help="traced calls, after one untimed")
    p.add_argument("--top", type=int, default=20, help="ops listed, slowest first")
    p.add_argument("--floor", action="store_true", help="also time every dot alone (train/bench/dot_floor.py)")
    own, rest = p.parse_known_args(argv)
    a = parse_args(rest, description=__doc__.split("\n\n")[0])  # the benchmark's model and workload
    a.decoder, a.reps, a.top, a.floor = own.decoder, own.reps, own.top, own.floor
    enable_op_trace()
    from train.engine.process_setup import configure_process

    configure_process(host_allocator=not a.no_host_allocator_fix)  # as the decode line runs the decoder
    print(profile(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
