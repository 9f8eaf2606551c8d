"""The matmul floor of a compiled step: every dot in its HLO timed alone, at its own operand
shapes and dimension numbers, and summed over how often the step runs it.

The profilers (profile_train.py, profile_decode.py) print it with --floor. It answers "how fast
could this step be with the same matmul library?": a step cannot take less than its dots take
one at a time on the same devices, so its wall time minus the floor is what everything else
(attention reads, LayerNorm, softmax, the optimizer, the runtime) costs at best. A dot alone
runs on freshly made operands in the default layout, without the fusion's other work, so the
floor is a little optimistic.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping

from train.bench.op_trace import computations
from train.bench.timing import best_seconds


@dataclasses.dataclass(frozen=True)
class Dot:
    """One dot_general of a compiled module: operand shapes, element type, dimension numbers."""

    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    dtype: str  # operand element type, as HLO spells it (f32, bf16)
    out_dtype: str
    lhs_contract: tuple[int, ...]
    rhs_contract: tuple[int, ...]
    lhs_batch: tuple[int, ...] = ()
    rhs_batch: tuple[int, ...] = ()

    @property
    def flops(self) -> int:
        """2 x (output elements) x (contracted length)."""
        free_l = [n for i, n in enumerate(self.lhs) if i not in self.lhs_contract]
        free_r = [n for i, n in enumerate(self.rhs) if i not in self.rhs_contract + self.rhs_batch]
        return 2 * math.prod(free_l) * math.prod(free_r) * math.prod(self.lhs[i] for i in self.lhs_contract)

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.lhs)} x {list(self.rhs)}"


_SHAPE = r"(\w+)\[([\d,]*)\]"


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def hlo_dots(hlo: str) -> dict[str, list[Dot]]:
    """{name of the op that runs them: its dots} for a compiled module's text. The op is the
    dot itself, or the fusion that calls the computation holding it (what the trace names)."""
    shapes = {m.group(1): (m.group(2), _dims(m.group(3)))
              for m in re.finditer(rf"%([\w.\-]+) = {_SHAPE}", hlo)}
    dots_in: dict[str, list[tuple[str, Dot]]] = {}
    for computation, body in computations(hlo).items():
        for m in re.finditer(rf"%([\w.\-]+) = {_SHAPE}\S* dot\(%([\w.\-]+), %([\w.\-]+)\)([^\n]*)", body):
            name, out_dtype, _, lhs, rhs, attrs = m.groups()
            nums = {k: _dims(v) for k, v in re.findall(r"(\w+_dims)=\{([\d,]*)\}", attrs)}
            dot = Dot(lhs=shapes[lhs][1], rhs=shapes[rhs][1], dtype=shapes[lhs][0], out_dtype=out_dtype,
                      lhs_contract=nums.get("lhs_contracting_dims", ()),
                      rhs_contract=nums.get("rhs_contracting_dims", ()),
                      lhs_batch=nums.get("lhs_batch_dims", ()), rhs_batch=nums.get("rhs_batch_dims", ()))
            dots_in.setdefault(computation, []).append((name, dot))
    out: dict[str, list[Dot]] = {}
    called = set()
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?calls=%([\w.\-]+)", hlo):
        if m.group(2) in dots_in:
            out[m.group(1)] = [d for _, d in dots_in[m.group(2)]]
            called.add(m.group(2))
    for comp, dots in dots_in.items():
        if comp not in called:  # dots run as ops of their own (in the entry or a loop body)
            out.update({name: [d] for name, d in dots})
    return out


_JAX_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64", "s32": "int32"}


def _best_seconds(f, *args, reps: int) -> float:
    f(*args).block_until_ready()  # compiles
    return best_seconds(lambda: f(*args).block_until_ready(), reps)


def call_overhead(reps: int = 200) -> float:
    """Best seconds of a jitted call that does next to nothing (adds 1 to a scalar): the dispatch
    cost that time_alone takes off, since ops inside a compiled step do not pay it."""
    import jax
    import jax.numpy as jnp

    return _best_seconds(jax.jit(lambda x: x + 1), jnp.zeros(()), reps=reps)


def time_alone(dot: Dot, overhead: float, reps: int = 20) -> float:
    """Best seconds, over `reps` calls, of this dot alone (one jitted dot_general on random
    operands), less the call's `overhead`."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    dtype = jnp.dtype(_JAX_DTYPES[dot.dtype])
    lhs = jax.random.normal(k1, dot.lhs, jnp.float32).astype(dtype)
    rhs = jax.random.normal(k2, dot.rhs, jnp.float32).astype(dtype)
    numbers = ((dot.lhs_contract, dot.rhs_contract), (dot.lhs_batch, dot.rhs_batch))
    out_dtype = jnp.dtype(_JAX_DTYPES[dot.out_dtype])
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, numbers, preferred_element_type=out_dtype))
    return max(_best_seconds(f, lhs, rhs, reps=reps) - overhead, 1e-7)


def floor_lines(dots: Mapping[str, list[Dot]], ms: Mapping[str, float], count: Mapping[str, int],
                wall_ms: float, unit: str, reps: int = 20) -> list[str]:
    """The floor report: one row per distinct dot (its runs per `unit`, time alone, GFLOP/s alone,
    time in the traced step), then the floor against the measured wall time.
    ms / count: the traced ms per unit and runs per unit of each op (op_trace.traced_op_times)."""
    runs: dict[Dot, int] = {}
    in_step: dict[Dot, float] = {}
    for name, op_dots in dots.items():
        if count.get(name, 0) == 0:
            continue
        for dot in op_dots:
            runs[dot] = runs.get(dot, 0) + count[name]
            in_step[dot] = in_step.get(dot, 0.0) + ms.get(name, 0.0) / len(op_dots)
    if not runs:
        return [f"Matmul floor: the compiled {unit} has no dots."]
    overhead = call_overhead()
    alone = {dot: time_alone(dot, overhead, reps) * 1e3 for dot in runs}
    floor_ms = sum(alone[d] * runs[d] for d in runs)
    flops = sum(d.flops * runs[d] for d in runs)
    lines = [f"Matmul floor: the {sum(runs.values())} dots per {unit} ({len(runs)} distinct), each timed "
             f"alone (best of {reps}, less {overhead * 1e6:.0f} us of call dispatch): {floor_ms:.1f} ms per {unit}, "
             f"{flops / floor_ms / 1e6:.0f} GFLOP/s; in the traced {unit} they took {sum(in_step.values()):.1f} ms. Wall {wall_ms:.1f} ms: "
             f"{wall_ms - floor_ms:.1f} ms ({1 - floor_ms / wall_ms:.0%}) above the floor.", "",
             f"| dot (lhs x rhs) | runs per {unit} | ms alone, each | GFLOP/s alone | ms alone x runs "
             f"| ms in the traced {unit} |", "|---|---:|---:|---:|---:|---:|"]
    for dot in sorted(runs, key=lambda d: -alone[d] * runs[d]):
        lines.append(f"| {dot} | {runs[dot]} | {alone[dot]:.3f} | {dot.flops / alone[dot] / 1e6:.0f} "
                     f"| {alone[dot] * runs[dot]:.2f} | {in_step[dot]:.2f} |")
    return lines
