"""`python -m train.bench.profile_train`: where the benchmark's train step spends its time, op by
op, from XLA:CPU's own trace.

    python -m train.bench.profile_train                       # the benchmark workload
    python -m train.bench.profile_train --top 40 --d-model 128 --ffn 512   # any of train.bench's options
    python -m train.bench.profile_train --floor               # and the matmul floor (dot_floor.py)

The step is the train line's (train_step.build_train_step: the Trainer's step on the synthetic
batch), compiled, run --warmup times, timed untraced for --steps steps, then run --reps times under
`jax.profiler` with XLA:CPU's per-thunk trace events on (op_trace.py; the flag is set
before JAX starts). Each compiled op's time is summed over the traced steps and divided by --reps,
then put in one of these groups by what the compiled HLO says it computes:

  dense matmuls         dots whose output has rank 2 or 3 (projections, FFN, output layer, their gradients)
  attention products    dots with a rank-4 output (batch, heads, queries, keys or head_dim)
  vocabulary softmax    other ops whose output ends in the vocabulary (softmax, loss and their gradients)
  copies                copies and transposes (layout changes, buffers XLA copies to keep them live)
  parameter updates     other ops with a parameter's shape (AdamW, clipping, gradient sums)
  other                 LayerNorm, dropout, activations, residuals, broadcasts, reductions

XLA:CPU runs independent ops of the step at the same time on its thread pool, so the ops' summed
time exceeds the step's wall time; the shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from typing import Optional

GROUPS = ("dense matmuls", "attention products", "vocabulary softmax", "copies", "parameter updates", "other")


def output_dims(text: str) -> list[int]:
    """The dims of an op's output from hlo_ops' description ("fusion -> f32[64,32,8000] ...")."""
    m = re.search(r"-> \w+\[([\d,]*)\]", text)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def group(name: str, text: str, vocab: int, param_shapes: set[str]) -> str:
    """Which of GROUPS a compiled op belongs to (its name and hlo_ops description)."""
    dot = re.search(r"dot -> \w+\[([\d,]*)\]", text)
    if dot:
        return "attention products" if len(dot.group(1).split(",")) >= 4 else "dense matmuls"
    dims = output_dims(text)
    if dims and dims[-1] == vocab and len(dims) >= 2 and dims[0] != vocab:  # (B, T, V), not the (V, D) table
        return "vocabulary softmax"
    family = re.sub(r"\.\d+$", "", name)
    if "copy" in family or "transpose" in family:
        return "copies"
    shape = re.search(r"-> (\w+\[[\d,]*\])", text)
    if shape and shape.group(1) in param_shapes and dims and max(dims) > 1:
        return "parameter updates"
    return "other"


def profile(a: argparse.Namespace) -> str:
    import jax

    from train.bench.dot_floor import floor_lines, hlo_dots
    from train.bench.op_trace import hlo_ops, traced_op_times
    from train.bench.train_step import build_train_step
    from train.engine.sharding import make_mesh

    _, step, state, batch, key, _ = build_train_step(a, make_mesh())
    param_shapes = {f"{x.dtype.name.replace('float', 'f')}[{','.join(map(str, x.shape))}]"
                    for x in jax.tree.leaves(state.params)}
    hlo = step.lower(state, batch, key).compile().as_text()
    shapes = hlo_ops(hlo)
    for _ in range(1 + a.warmup):
        state = step(state, batch, key)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        state = step(state, batch, key)
    jax.block_until_ready(state)
    wall_ms = (time.perf_counter() - t0) / a.steps * 1e3

    def one_step() -> None:
        nonlocal state
        state = jax.block_until_ready(step(state, batch, key))

    ms, count = traced_op_times(one_step, a.reps, set(shapes))
    total = sum(ms.values())
    by_group, ops_in = collections.Counter(), collections.Counter()
    for name, t in ms.items():
        g = group(name, shapes[name], a.vocab, param_shapes)
        by_group[g] += t
        ops_in[g] += count[name]
    lines = [f"train step, {a.batch} pairs x ({a.src_len} + {a.tgt_len}) tokens, d_model {a.d_model}: "
             f"{wall_ms:.1f} ms per step untraced ({a.steps} steps); {total:.1f} ms of compiled ops per traced step",
             "", "| group | ops | ms per step | share |", "|---|---:|---:|---:|"]
    lines += [f"| {g} | {ops_in[g]} | {by_group[g]:.1f} | {by_group[g] / total:.1%} |" for g in GROUPS]
    lines += ["", "| op | group | ms per step | share | what it computes |", "|---|---|---:|---:|---|"]
    for name, t in ms.most_common(a.top):
        lines.append(f"| {name} | {group(name, shapes[name], a.vocab, param_shapes)} | {t:.2f} | {t / total:.1%} "
                     f"| {shapes[name]} |")
    if a.floor:
        lines += [""] + floor_lines(hlo_dots(hlo), ms, count, wall_ms, "step")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from train.bench.op_trace import enable_op_trace
    from train.bench.workload import parse_args

    p = argparse.ArgumentParser(prog="python -m train.bench.profile_train", add_help=False)
    p.add_argument("--reps", type=int, default=3, help="traced steps, after the untraced ones")
    p.add_argument("--top", type=int, default=20, help="ops listed, slowest first")
    p.add_argument("--floor", action="store_true", help="also time every dot alone (train/bench/dot_floor.py)")
    own, rest = p.parse_known_args(argv)
    a = parse_args(["--only", "train", *rest], description=__doc__.split("\n\n")[0])
    a.reps, a.top, a.floor = own.reps, own.top, own.floor
    enable_op_trace()
    from train.engine.process_setup import configure_process

    configure_process(host_allocator=not a.no_host_allocator_fix)  # as training and the train line run the step
    print(profile(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
