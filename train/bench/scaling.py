"""`python -m train.bench --scaling`: how the cost of a train step and of decoding grows.

Four studies around the benchmark shape (workload.py; every option not varied is the command's
own, so `--scaling --dtype bfloat16` studies bfloat16). Each point is measured by the project's
own benchmark, `python -m train.bench --only train` (train_step.bench_train) or `--only decode`
(decode.bench_decode), run as a fresh subprocess with that point's options and --peak-memory, so
every point has its own memory peak (a process's peak RSS only grows) and its own compile:

  heads   heads 1, 2, 4, 8, 16, 32 at the preset's d_model (256: head_dim 256 down to 8). Train
          tokens/s, MFU, peak memory. FLOPs do not depend on the head count (W = H * K is fixed),
          so any change in tokens/s is the cost of splitting the same width into more heads.
  length  src_len = tgt_len 32, 64, 128, 256, 512, batch = batch * src_len / length (at least 1),
          so the tokens per step stay about the same and the growing attention share shows up;
          attention dropout 0 (the fast path needs it off, model/attention.py), --attention-impl
          fast against explicit. Tokens/s, MFU, peak memory of each.
  width   d_model 128, 256, 512 (ffn 4 * d_model, heads d_model / 64) x layers 3 and 6 (each of
          encoder and decoder): tokens/s, MFU, peak memory.
  decode  output length (tgt_len) 16, 32, 64, 128 at src_len 32: greedy and beam sentences/s,
          KV-cached and uncached (the uncached decoders recompute the prefix at every step), and
          peak memory. The decode part counts sentences, not tokens (a sentence may end at EOS
          before its limit), and has no FLOP count, so this study has no tokens/s or MFU.

Points are measured one at a time (--scaling-jobs 1), since concurrent processes slow each other
down. With --short: a one-layer model of width 32, two values per axis (2 x 2 for width x depth),
1 step, two points at a time, and (SHORT_ENV) XLA's backend optimisation off plus a compilation
cache shared by the points, because each point is a process that mostly compiles: the whole mode
then takes about a minute and a half on 2 busy CPU cores (less on idle ones). Same tables and
keys, but the figures are not the workload's.

Peak memory (memory_source on every line): the device's memory_stats()["peak_bytes_in_use"]
where it reports one (GPU; the largest over local devices), else the process's peak RSS
(resource.getrusage ru_maxrss), which includes the Python and JAX runtime, XLA's compiler and,
for train points, the matmul-peak arrays; start_peak_memory_bytes is the same peak taken just
before the part built its model, so the difference is what the part itself added.

Output: one JSON line per point (records.emit) with "name": "scaling", "table", "varied" (the
keys that table varies) and the point's figures; with --scaling-out DIR also DIR/scaling.md (one
Markdown table per study) and one plot per study, DIR/scaling_<table>.png (scaling_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from train.bench.records import emit, log
from train.bench.scaling_report import write_report



@dataclass(frozen=True)
class Grid:
    """The values each study varies."""

    heads: tuple[int, ...]
    lengths: tuple[int, ...]
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    width_head_dim: int  # the width study's heads = d_model / width_head_dim
    decode_lengths: tuple[int, ...]
    decode_src_len: int


FULL = Grid(heads=(1, 2, 4, 8, 16, 32), lengths=(32, 64, 128, 256, 512), widths=(128, 256, 512),
            depths=(3, 6), width_head_dim=64, decode_lengths=(16, 32, 64, 128), decode_src_len=32)
# Two values per axis: enough for the tables' shape and for the test to see each value used.
SHORT = Grid(heads=(1, 4), lengths=(8, 16), widths=(16, 32), depths=(1, 2), width_head_dim=16,
             decode_lengths=(4, 16), decode_src_len=8)


# --short only: what makes a dozen compiling processes fit in CI. Optimisation level 0 takes about
# a third off XLA's CPU compile (and slows the compiled steps, which --short's figures may be); the
# cache, a temporary folder, serves the small eager-op compiles of model init that points with the
# same parameter shapes share. The same functions run either way.
SHORT_ENV = {"XLA_FLAGS": "--xla_backend_optimization_level=0",
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


@dataclass
class Point:
    table: str
    part: str  # "train" or "decode": the --only of its subprocess
    args: argparse.Namespace  # a modified copy of the command's own
    varied: dict[str, Any]


def _with(a: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(a), **changes})


def plan(a: argparse.Namespace) -> list[Point]:
    """Every point of the chosen studies, in the order they are measured."""
    grid = SHORT if a.short else FULL
    points: list[Point] = []
    if "heads" in a.scaling_tables:
        for h in grid.heads:
            if a.d_model % h:  # another preset's width: only the head counts that divide it
                continue
            points.append(Point("heads", "train", _with(a, heads=h), {"heads": h, "head_dim": a.d_model // h}))
    if "length" in a.scaling_tables:
        tokens = a.batch * a.src_len  # source tokens per step at the benchmark shape, kept
        for length in grid.lengths:
            batch = max(1, round(tokens / length))
            for impl in ("fast", "explicit"):
                points.append(Point("length", "train",
                                    _with(a, src_len=length, tgt_len=length, batch=batch,
                                          attention_impl=impl, attention_dropout=0.0),
                                    {"length": length, "attention_impl": impl}))
    if "width" in a.scaling_tables:
        for d in grid.widths:
            for layers in grid.depths:
                heads = max(1, d // grid.width_head_dim)
                points.append(Point("width", "train", _with(a, d_model=d, ffn=4 * d, heads=heads, layers=layers),
                                    {"d_model": d, "layers": layers}))
    if "decode" in a.scaling_tables:
        for length in grid.decode_lengths:
            points.append(Point("decode", "decode", _with(a, src_len=grid.decode_src_len, tgt_len=length),
                                {"max_len": length}))
    return points


# The options a point's subprocess gets, all of them explicit, so that neither the preset nor
# --short of the subprocess fills anything the study set.
_VALUE_FLAGS = ("preset", "d_model", "heads", "ffn", "layers", "vocab", "dtype", "dropout",
                "attention_dropout", "attention_impl", "batch", "src_len", "tgt_len", "steps", "warmup",
                "timing_rounds", "grad_accum", "label_smoothing", "mesh_data", "compilation_cache",
                "decode_batch", "decode_reps", "beam", "peak_n")
_SWITCHES = ("short", "remat", "torch_like", "fsdp", "no_host_allocator_fix")


def point_argv(p: Point) -> list[str]:
    argv = ["-m", "train.bench", "--only", p.part, "--peak-memory"]
    for key in _VALUE_FLAGS:
        value = getattr(p.args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + [f"--{key.replace('_', '-')}" for key in _SWITCHES if getattr(p.args, key)]


def peak_memory() -> dict[str, Any]:
    """This process's peak memory so far: the devices' peak_bytes_in_use where they report it
    (GPU), else the peak RSS. Called by `python -m train.bench --peak-memory` around a part."""
    import resource

    import jax

    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    if stats and all("peak_bytes_in_use" in s for s in stats):
        return {"peak_memory_bytes": max(int(s["peak_bytes_in_use"]) for s in stats),
                "memory_source": f"peak_bytes_in_use (largest of {len(stats)} {jax.devices()[0].platform} devices)"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024),  # Linux: KiB
            "memory_source": "ru_maxrss (process peak RSS)"}


_TRAIN_KEYS = ("d_model", "heads", "ffn", "layers", "vocab", "batch", "src_len", "tgt_len", "dtype",
               "dropout", "attention_dropout", "attention_impl", "ms_per_step", "tokens_per_s", "mfu",
               "flops_per_step", "peak_flops_per_s", "params", "compile_s", "loss", "steps")
_DECODE_KINDS = ("greedy_cached", "greedy_uncached", "beam{beam}_cached", "beam{beam}_uncached")
_COMMON_KEYS = ("peak_memory_bytes", "start_peak_memory_bytes", "memory_source", "platform", "device_kind",
                "devices", "cpu_count", "jax", "preset", "short")


def _record(p: Point, line: dict, seconds: float, argv: list[str], env: dict[str, str]) -> dict:
    """The scaling line of one point, from its subprocess's train or decode line."""
    rec: dict[str, Any] = {"name": "scaling", "table": p.table, "varied": list(p.varied), **p.varied}
    if p.part == "train":
        rec.update({k: line[k] for k in _TRAIN_KEYS})
        rec["head_dim"] = line["d_model"] // line["heads"]  # what the subprocess built, not what was asked
        rec["tokens_per_step"] = line["batch"] * (line["src_len"] + line["tgt_len"])
        # model/attention.py takes the explicit path when asked to or when attention dropout is on.
        explicit = line["attention_impl"] == "explicit" or line["attention_dropout"] > 0
        rec["attention_path"] = "explicit" if explicit else "fast"
        if p.table == "length":
            rec["length"] = line["src_len"]
    else:
        kinds = [k.format(beam=line["beam"]) for k in _DECODE_KINDS]
        rec.update({k: getattr(p.args, k) for k in ("d_model", "heads", "ffn", "layers", "vocab")})
        rec.update({k: line[k] for k in ("batch", "src_len", "max_len", "beam", "dtype")})
        rec.update({f"{k}_sentences_per_s": line[f"{k}_sentences_per_s"] for k in kinds})
        rec.update({f"{k}_compile_s": line[f"{k}_compile_s"] for k in kinds})
        for kind in ("greedy", f"beam{line['beam']}"):
            rec[f"{kind}_cache_speedup"] = line[f"{kind}_cache_speedup"]
            rec[f"{kind}_cached_equals_uncached"] = line[f"{kind}_cached_equals_uncached"]
    rec.update({k: line[k] for k in _COMMON_KEYS})
    rec["point_s"] = round(seconds, 1)
    rec["env"] = env
    rec["command"] = " ".join([*(f"{k}={v}" for k, v in env.items()), "python", *argv])
    return rec


def _check(p: Point, rec: dict) -> None:
    """The subprocess must have measured what the study asked for (its line says what it built)."""
    wanted = {"train": ("d_model", "heads", "ffn", "layers", "batch", "src_len", "tgt_len", "attention_impl"),
              "decode": ("src_len",)}[p.part]
    wrong = {k: (rec[k], getattr(p.args, k)) for k in wanted if rec[k] != getattr(p.args, k)}
    if p.part == "decode" and rec["max_len"] != p.args.tgt_len:
        wrong["max_len"] = (rec["max_len"], p.args.tgt_len)
    if wrong:
        raise RuntimeError(f"scaling {p.table} {p.varied}: the subprocess measured {wrong} (got, asked)")


def measure(p: Point, env: Optional[dict[str, str]] = None) -> dict:
    """Run one point in a fresh process (with `env` added to this one's) and return its line."""
    env = env or {}
    argv = point_argv(p)
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    if "XLA_FLAGS" in env and os.environ.get("XLA_FLAGS"):  # add to the caller's flags, not instead
        full_env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {env['XLA_FLAGS']}"
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=full_env)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"`python {' '.join(argv)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
    lines = [json.loads(s) for s in result.stdout.splitlines() if s.startswith("{")]
    found = [r for r in lines if r.get("name") == p.part]
    if len(found) != 1:
        raise RuntimeError(f"`python {' '.join(argv)}` printed {len(found)} {p.part} lines, not 1")
    rec = _record(p, found[0], seconds, argv, {k: v for k, v in env.items() if k != "JAX_COMPILATION_CACHE_DIR"})
    _check(p, rec)
    return rec


def _measure_or_error(p: Point, env: dict[str, str]) -> dict | RuntimeError:
    try:
        return measure(p, env)
    except RuntimeError as e:  # reported with the point, after the points before it
        return e


def _summary(p: Point, rec: dict) -> str:
    if p.part == "train":
        return f"{rec['tokens_per_s']:.0f} tokens/s, MFU {rec['mfu']:.1%}"
    return (f"greedy {rec['greedy_cached_sentences_per_s']} / {rec['greedy_uncached_sentences_per_s']} "
            "sentences/s cached / uncached")


def run_scaling(a: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Measure every point (a.scaling_jobs at a time), emitting the lines in plan order as they
    come; a point that fails gets a line with "error" and the rest still run (then exit 1)."""
    points = plan(a)
    log(f"scaling: {len(points)} points ({', '.join(a.scaling_tables)}), one subprocess each, "
        f"{a.scaling_jobs} at a time" + (", --short" if a.short else ""))
    if a.scaling_jobs > 1 and not a.short:
        log("scaling: --scaling-jobs > 1: concurrent points slow each other down; the timings are not clean")
    records: list[dict] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="scaling_cache_") as cache, \
            ThreadPoolExecutor(max_workers=a.scaling_jobs) as pool:  # the threads only wait on subprocesses
        env = {**SHORT_ENV, "JAX_COMPILATION_CACHE_DIR": cache} if a.short and not a.compilation_cache else {}
        results = pool.map(lambda p: _measure_or_error(p, env), points)
        for i, (p, rec) in enumerate(zip(points, results), 1):
            if isinstance(rec, RuntimeError):
                log(f"scaling {i}/{len(points)} {p.table} {p.varied}: FAILED: {rec}")
                emit({"name": "scaling", "table": p.table, "varied": list(p.varied), **p.varied,
                      "error": str(rec)[-2000:]})
                failed += 1
                continue
            rec["jobs"] = a.scaling_jobs
            records.append(rec)
            emit(rec)
            log(f"scaling {i}/{len(points)} {p.table} {p.varied}: {_summary(p, rec)}, peak "
                f"{rec['peak_memory_bytes'] / 2**20:.0f} MiB ({rec['point_s']} s)")
    if a.scaling_out:
        path = write_report(records, Path(a.scaling_out), a, argv)
        log(f"scaling: wrote {path} and its plots")
    if failed:
        raise SystemExit(f"error: {failed} of {len(points)} scaling points failed (their lines have 'error')")
    return records
