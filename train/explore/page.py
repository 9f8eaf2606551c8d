"""The explorer page: one HTML file with its data, styles and scripts inline.

The page is opened from disk (file://) and fetches nothing: the data collected by collect.py is
embedded as JSON in a <script type="application/json"> element (the attention maps inside it as
base64 uint8), and the style sheet and scripts under static/ are copied in. Scripts draw on
canvas and small SVGs when a view is shown, so the page opens at once even with many steps.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Optional

STATIC = Path(__file__).parent / "static"
SCRIPTS = ("draw.js", "views.js", "explorer.js")  # in load order: drawing helpers, views, the controls
PAGE_NAME = "explorer.html"

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · attention explorer</title>
<style>
{css}
</style>
</head>
<body>
<header>
  <h1>Attention explorer <span class="sub">{title}</span></h1>
  <p class="note" id="note"></p>
  <ul class="warnings" id="warnings"></ul>
</header>
<section class="controls" id="controls">
  <label id="run-box">run <select id="run"></select></label>
  <label>attention <select id="type"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <label>probe pair <select id="example"></select></label>
  <label class="step">step <input type="range" id="step" min="0" max="0" value="0">
    <output id="step-label"></output></label>
  <button id="play" type="button" title="step through training">play</button>
  <label title="colour each query row relative to its largest weight"><input type="checkbox" id="rowscale"> row contrast</label>
</section>
<main>
  <section class="panel" id="compare-panel"><h2>Across the runs <span class="sub" id="compare-sub"></span></h2>
    <div id="compare"></div></section>
  <section class="panel wide"><h2>Selected head <span class="sub" id="head-sub"></span></h2>
    <div class="pair">
      <figure><canvas id="map"></canvas><figcaption id="map-cap"></figcaption></figure>
      <figure><svg id="headview" xmlns="http://www.w3.org/2000/svg"></svg>
        <figcaption>hover a token: its weights (a row of the map for a query, a column for a key)</figcaption></figure>
    </div>
    <table class="values" id="values"></table>
  </section>
  <section class="panel"><h2>Model view <span class="sub">every layer &times; head at this step; click one</span></h2>
    <div id="model"></div><p class="note" id="badge-note"></p></section>
  <section class="panel"><h2>Head statistics over training
    <span class="sub">one line per head of this attention type; the selected head in colour</span></h2>
    <div id="charts"></div></section>
</main>
<script type="application/json" id="explorer-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""


def embed_json(data: dict) -> str:
    """Compact JSON that cannot close its <script> element early: "<" only occurs inside JSON
    strings (tokens such as "</s>"), where the escape \\u003c reads back as the same character."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c")


def render_page(data: dict) -> str:
    css = (STATIC / "explorer.css").read_text()
    js = "\n".join((STATIC / name).read_text() for name in SCRIPTS)
    shown = {k: v for k, v in data.items() if k != "raw_bytes"}
    return TEMPLATE.format(title=html.escape(data["title"]), css=css, js=js, data=embed_json(shown))


def write_page(run_dir: Path, out: Optional[Path] = None, max_mb: float = 10.0) -> tuple[Path, dict]:
    """Write the page; return its path and the collected data (runs, warnings, raw_bytes)."""
    from train.explore.collect import collect

    run_dir = Path(run_dir)
    data = collect(run_dir, max_mb)
    path = Path(out) if out is not None else run_dir / PAGE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # a kill mid-write leaves the old page or none
    tmp.write_text(render_page(data), encoding="utf-8")
    os.replace(tmp, path)
    return path, data


def write_explorer(run_dir: Path, out: Optional[Path] = None, max_mb: float = 10.0) -> Path:
    """Write the explorer of a run directory or a sweep directory; return the file's path.

    out defaults to run_dir/explorer.html. Raises train.errors.RunError when run_dir holds no
    usable probe; incomplete steps are left out and listed on the page. Past max_mb, the maps of
    fewer (evenly spaced) steps are embedded; the statistics keep every step.
    """
    return write_page(run_dir, out, max_mb)[0]
