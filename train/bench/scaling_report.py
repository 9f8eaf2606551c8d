"""The `--scaling` report: one Markdown table and one plot per study, from the points' JSON lines
(train/bench/scaling.py measures them)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

TABLES = ("heads", "length", "width", "decode")  # the studies, in report order

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
