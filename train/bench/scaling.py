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
Markdown table per study) and one plot per study, DIR/scaling_<table>.png.
"""

from __future__ import annotations

import argparse
import json
import math
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

TABLES = ("heads", "length", "width", "decode")


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


# ----- the report: one Markdown table and one plot per study -----

def _mib(x: Optional[float]) -> str:
    return "" if x is None else f"{x / 2**20:,.0f}"


def _num(x: Optional[float], fmt: str = "{:,.0f}") -> str:
    return "" if x is None or not math.isfinite(x) else fmt.format(x)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _table(table: str, rows: list[dict]) -> list[str]:
    """The study's Markdown section: a heading, what is fixed, and one row per point (the length
    study: one row per length, fast and explicit side by side)."""
    out: list[str] = []
    r0 = rows[0]
    if table == "heads":
        out += [f"## Heads at d_model {r0['d_model']}", "",
                f"Train step, {r0['layers']}+{r0['layers']} layers, ffn {r0['ffn']}, batch {r0['batch']} x "
                f"{r0['src_len']}+{r0['tgt_len']} tokens, {r0['attention_path']} attention path. FLOPs per step "
                "do not change with the head count.", ""]
        out += _markdown_table(
            ["heads", "head_dim", "ms/step", "tokens/s", "MFU", "peak MiB", "start MiB"],
            [[str(r["heads"]), str(r["head_dim"]), _num(r["ms_per_step"], "{:,.1f}"), _num(r["tokens_per_s"]),
              _num(r["mfu"], "{:.1%}"), _mib(r["peak_memory_bytes"]), _mib(r["start_peak_memory_bytes"])]
             for r in rows])
    elif table == "length":
        out += ["## Sequence length: fast against explicit attention", "",
                f"src_len = tgt_len, batch scaled to keep about {r0['tokens_per_step']:,} tokens per step, "
                f"d_model {r0['d_model']}, {r0['heads']} heads, attention dropout 0.", ""]
        table = []
        for length in sorted({r["length"] for r in rows}):
            by_impl = {r["attention_impl"]: r for r in rows if r["length"] == length}
            f, e = by_impl.get("fast", {}), by_impl.get("explicit", {})
            ratio = (f["tokens_per_s"] / e["tokens_per_s"]) if f and e else None
            table.append([str(length), str((f or e)["batch"]),
                          _num(f.get("tokens_per_s")), _num(e.get("tokens_per_s")), _num(ratio, "{:.2f}x"),
                          _num(f.get("mfu"), "{:.1%}"), _num(e.get("mfu"), "{:.1%}"),
                          _mib(f.get("peak_memory_bytes")), _mib(e.get("peak_memory_bytes"))])
        out += _markdown_table(["length", "batch", "fast tokens/s", "explicit tokens/s", "fast / explicit",
                                "fast MFU", "explicit MFU", "fast peak MiB", "explicit peak MiB"], table)
    elif table == "width":
        out += ["## Width x depth", "", "ffn = 4 x d_model; layers = encoder and decoder layers each.", ""]
        out += _markdown_table(
            ["d_model", "layers", "heads", "ffn", "params", "ms/step", "tokens/s", "MFU", "peak MiB"],
            [[str(r["d_model"]), str(r["layers"]), str(r["heads"]), str(r["ffn"]), _num(r["params"]),
              _num(r["ms_per_step"], "{:,.1f}"), _num(r["tokens_per_s"]), _num(r["mfu"], "{:.1%}"),
              _mib(r["peak_memory_bytes"])] for r in rows])
    else:
        beam = f"beam{r0['beam']}"
        out += ["## Decoding: output length", "",
                f"Sentences/s, {r0['batch']} sentences of {r0['src_len']} source tokens per call, up to "
                "max_len output tokens; uncached recomputes the whole prefix at every step.", ""]
        out += _markdown_table(
            ["max_len", "greedy cached", "greedy uncached", "greedy speedup", f"{beam} cached",
             f"{beam} uncached", f"{beam} speedup", "peak MiB"],
            [[str(r["max_len"]), _num(r["greedy_cached_sentences_per_s"], "{:,.1f}"),
              _num(r["greedy_uncached_sentences_per_s"], "{:,.1f}"), _num(r["greedy_cache_speedup"], "{:.1f}x"),
              _num(r[f"{beam}_cached_sentences_per_s"], "{:,.1f}"),
              _num(r[f"{beam}_uncached_sentences_per_s"], "{:,.1f}"), _num(r[f"{beam}_cache_speedup"], "{:.1f}x"),
              _mib(r["peak_memory_bytes"])] for r in rows])
    return out


def _log_x(ax, xs: list[int], label: str) -> None:
    """A log x axis labelled at the measured values only (they are powers of 2 or close)."""
    from matplotlib.ticker import NullLocator

    ax.set(xscale="log", xlabel=label)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())


def _figure(table: str, rows: list[dict]):
    """The study's figures against its varied value, one line per series."""
    from matplotlib.figure import Figure

    if table == "decode":
        beam = f"beam{rows[0]['beam']}"
        x_key, x_label = "max_len", "output length (max_len)"
        panels = [(f"{k}_sentences_per_s", f"{k.replace('_', ' ')}") for k in
                  ("greedy_cached", "greedy_uncached", f"{beam}_cached", f"{beam}_uncached")]
        fig = Figure(figsize=(10, 3.8), layout="constrained")
        ax, mem = fig.subplots(1, 2)
        xs = [r[x_key] for r in rows]
        for key, label in panels:
            ax.plot(xs, [r[key] for r in rows], "o-", label=label)
        ax.set(yscale="log", ylabel="sentences/s", title="decoding speed")
        ax.legend(fontsize=8)
        mem.plot(xs, [r["peak_memory_bytes"] / 2**20 for r in rows], "o-")
        mem.set(ylabel="peak MiB", title="peak memory")
        for each in (ax, mem):
            _log_x(each, xs, x_label)
        fig.suptitle(f"Decoding against output length ({rows[0]['memory_source']})", fontsize=10)
        return fig
    x_key, split, x_label, title = {
        "heads": ("heads", None, "heads (d_model fixed)", f"Heads at d_model {rows[0]['d_model']}"),
        "length": ("length", "attention_impl", "src_len = tgt_len (tokens per step ~fixed)",
                   "Sequence length: fast vs explicit attention"),
        "width": ("d_model", "layers", "d_model (ffn 4 x d_model)", "Width x depth"),
    }[table]
    series: dict[str, list[dict]] = {}
    for r in rows:
        label = "" if split is None else f"{split.replace('attention_impl', 'attention')} {r[split]}"
        series.setdefault(label, []).append(r)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (key, ylabel, scale) in zip(axes, (("tokens_per_s", "train tokens/s", 1.0), ("mfu", "MFU (%)", 100.0),
                                              ("peak_memory_bytes", "peak MiB", 1 / 2**20))):
        for label, rs in series.items():
            rs = sorted(rs, key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in rs], [r[key] * scale for r in rs], "o-", label=label or None)
        ax.set(ylabel=ylabel)
        _log_x(ax, sorted({r[x_key] for r in rows}), x_label)
        if split is not None:
            ax.legend(fontsize=8)
    fig.suptitle(f"{title} ({rows[0]['memory_source']})", fontsize=10)
    return fig


def write_report(records: list[dict], out: Path, a: argparse.Namespace, argv: list[str]) -> Path:
    """DIR/scaling.md and DIR/scaling_<table>.png for the studies that have points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out.mkdir(parents=True, exist_ok=True)
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["table"], []).append(r)
    r0 = records[0] if records else {}
    lines = ["# How the cost grows (`python -m train.bench --scaling`)", "",
             f"`python -m train.bench {' '.join(argv)}`; each JSON line's `command` reruns its point.", "",
             f"{r0.get('devices', '?')} x {r0.get('platform', '?')} ({r0.get('device_kind', '?')}), "
             f"{r0.get('cpu_count', '?')} CPU cores, jax {r0.get('jax', '?')}, {a.dtype}; each point in its own "
             f"process; peak memory: {r0.get('memory_source', '?')} (start MiB: the same peak just before "
             "the part built its model).", ""]
    if a.short:
        lines += ["**--short**: a tiny model and 1 step; the figures are not the workload's.", ""]
    for table in TABLES:
        if by.get(table):
            lines += _table(table, by[table])
            fig = _figure(table, by[table])
            FigureCanvasAgg(fig)
            fig.savefig(out / f"scaling_{table}.png", dpi=100)
            lines += [f"![{table}](scaling_{table}.png)", ""]
    path = out / "scaling.md"
    path.write_text("\n".join(lines))
    return path
