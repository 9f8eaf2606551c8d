"""report.html: the sweep report as one self-contained page (figures inlined as data: URLs, no
script and nothing fetched), with a link to each run's explorer.html where the run wrote one."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Optional

from train.report.runs import Run

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.failed td { color: #b00020; } tr.unfinished td, tr.not-started td { color: #777; }
.significant { font-weight: 600; } .note { color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 8px 0; }
"""


def _cell(value: str, numeric: bool) -> str:
    return f'<td{"" if numeric else " class=text"}>{html.escape(value)}</td>'


def _table(rows: list[dict[str, str]], links: Optional[list[Optional[str]]] = None,
           classes: Optional[list[str]] = None) -> str:
    if not rows:
        return "<p class=note>no rows</p>"
    cols = list(rows[0])
    numeric = {c for c in cols if all(_looks_numeric(r.get(c, "")) for r in rows)}
    head = "".join(f'<th{"" if c in numeric else " class=text"}>{html.escape(c)}</th>' for c in cols)
    if links:
        head += "<th class=text>explorer</th>"
    body = []
    for i, row in enumerate(rows):
        cells = "".join(_cell(row.get(c, ""), c in numeric) for c in cols)
        if links:
            link = links[i]
            cells += f'<td class=text><a href="{html.escape(link)}">open</a></td>' if link else "<td class=text>–</td>"
        css = classes[i] if classes else ""
        body.append(f'<tr class="{css}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("%kMG")
    try:
        float(head)
        return True
    except ValueError:
        return text in ("–", "")


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def explorer_link(run: Run, out_dir: Path) -> Optional[str]:
    """The run's explorer page relative to the report folder, when it exists."""
    if run.path is None or not (run.path / "explorer.html").exists():
        return None
    return Path(os.path.relpath(run.path / "explorer.html", out_dir)).as_posix()


def render_page(title: str, intro: list[str], points: list[dict[str, str]], tests: list[tuple[str, bool]],
                rows: list[dict[str, str]], runs: list[Run], figures: list[Path], out_dir: Path) -> str:
    """tests: (sentence, significant) per comparison with the baseline point."""
    parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(line)}</p>" for line in intro if line)]
    if points:
        parts += ["<h2>Points, over seeds</h2>",
                  "<p class=note>mean ± sd [95% confidence interval of the mean, Student's t] over the "
                  "finished seeds of each point; runs that failed or did not finish are counted, not "
                  "averaged.</p>", _table(points)]
    if tests:
        parts += ["<h2>Significance</h2>",
                  "<p class=note>Paired bootstrap resampling of the test sentences (1000 resamples, all seeds "
                  "of both points), two-sided.</p><ul>"]
        parts += [f'<li class="{"significant" if sig else ""}">{html.escape(s)}</li>' for s, sig in tests]
        parts.append("</ul>")
    parts += ["<h2>Runs</h2>",
              _table(rows, [explorer_link(r, out_dir) for r in runs],
                     [r.status.replace(" ", "-") for r in runs])]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_image(f) for f in figures if f.exists()]
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body data-ready=1>"
            + "\n".join(parts) + "</body></html>\n")
