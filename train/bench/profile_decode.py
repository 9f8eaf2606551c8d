"""`python -m train.bench.profile_decode`: where a KV-cached decode of the benchmark model spends
its time, op by op, from XLA:CPU's own trace.

    python -m train.bench.profile_decode                 # greedy, 64 sentences, 32 new tokens
    python -m train.bench.profile_decode --decoder beam --top 25
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
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def hlo_ops(hlo: str) -> dict[str, str]:
    """{instruction name: "output shape [dot lhs x rhs]"} for the ops of a compiled module."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S)}
    out = {}
    for m in re.finditer(r"%([\w.\-]+) = (\S+) (\w[\w\-]*)\(([^\n]*)", hlo):
        name, shape, op, rest = m.groups()
        text = f"{op} -> {shape.split('{')[0]}"
        called = re.search(r"calls=%([\w.\-]+)", rest)
        if called:
            dot = re.search(r"= (\S+) dot\(", bodies.get(called.group(1), ""))
            if dot:
                text += f" (dot -> {dot.group(1).split('{')[0]})"
        out[name] = text
    return out


def op_times(trace_dir: Path, reps: int, ops: set[str]) -> tuple[collections.Counter, collections.Counter]:
    """(ms per call, executions per call) of the compiled `ops` in the newest trace under trace_dir
    (the runtime's own events, such as argument handling, are left out)."""
    path = sorted(trace_dir.rglob("*.trace.json.gz"))[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    ms, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in ops:
            ms[e["name"]] += e["dur"] / 1e3 / reps
            count[e["name"]] += 1
    return ms, collections.Counter({k: v // reps for k, v in count.items()})


def profile(a: argparse.Namespace) -> str:
    import jax

    from model.decoding import make_decode_fn
    from train.bench.decode import decoder_inputs

    graphdef, params, kw, src = decoder_inputs(a)
    beam = a.beam if a.decoder == "beam" else 1
    fn = make_decode_fn(graphdef, beam_size=beam, alpha=0.6, eos_id=-1, **kw)
    jax.block_until_ready(fn(params, src))  # compile
    shapes = hlo_ops(fn.lower(params, src).compile().as_text())
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(a.reps):
            jax.block_until_ready(fn(params, src))
        jax.profiler.stop_trace()
        ms, count = op_times(Path(tmp), a.reps, set(shapes) - {"while"})
    steps = a.tgt_len
    per_step = {k: v for k, v in ms.items() if count[k] >= steps}
    once = {k: v for k, v in ms.items() if k not in per_step}
    total = sum(ms.values())
    kind = "greedy" if beam == 1 else f"beam {beam}"
    lines = [f"{kind}, {a.decode_batch} sentences x {a.tgt_len} new tokens: {total:.1f} ms of compiled ops per call "
             f"({sum(once.values()):.1f} ms once per call, {sum(per_step.values()):.1f} ms in the {steps} steps)",
             "", "| op | runs per call | ms per call | share | what it computes |", "|---|---:|---:|---:|---|"]
    for name, t in ms.most_common(a.top):
        lines.append(f"| {name} | {count[name]} | {t:.2f} | {t / total:.1%} | {shapes[name]} |")
    by_family = collections.Counter()
    for name, t in per_step.items():
        by_family[re.sub(r"\.\d+$", "", name)] += t
    lines += ["", "Per-step ops by family (ms per call): "
              + ", ".join(f"{n} {t:.1f}" for n, t in by_family.most_common(8))]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from train.bench.workload import parse_args

    p = argparse.ArgumentParser(prog="python -m train.bench.profile_decode", add_help=False)
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--reps", type=int, default=2, help="traced calls, after one untimed")
    p.add_argument("--top", type=int, default=20, help="ops listed, slowest first")
    own, rest = p.parse_known_args(argv)
    a = parse_args(rest, description=__doc__.split("\n\n")[0])  # the benchmark's model and workload
    a.decoder, a.reps, a.top = own.decoder, own.reps, own.top
    if "jax" in sys.modules:
        raise SystemExit("error: JAX was imported before the trace flag could be set; run this as its own process")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TRACE_FLAG}".strip()
    print(profile(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
