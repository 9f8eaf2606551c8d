"""XLA:CPU's per-op trace, shared by the profilers (profile_decode.py, profile_train.py): the
trace flag (set before JAX starts), each compiled op's description from the HLO, and each op's
time over traced calls."""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def computations(hlo: str) -> dict[str, str]:
    """{computation name: its body} of a compiled module's text (the entry computation under
    its own name; its header starts with ENTRY)."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"\n(?:ENTRY )?%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S)}


def hlo_ops(hlo: str) -> dict[str, str]:
    """{instruction name: "output shape [dot lhs x rhs]"} for the ops of a compiled module."""
    bodies = computations(hlo)
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


def enable_op_trace() -> None:
    """Turn on XLA:CPU's per-op trace events; must run before JAX is imported."""
    if "jax" in sys.modules:
        raise SystemExit("error: JAX was imported before the trace flag could be set; run this as its own process")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TRACE_FLAG}".strip()


def traced_op_times(run: Callable[[], object], reps: int, ops: set[str]) -> tuple[collections.Counter, collections.Counter]:
    """Call `run` (which blocks until its result is ready) reps times under jax.profiler:
    op_times' (ms per call, executions per call) of the compiled `ops`."""
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(reps):
            run()
        jax.profiler.stop_trace()
        return op_times(Path(tmp), reps, ops)
