"""Self-contained HTML pages for KFP's HTML artifact viewer: the evaluation report and the drift report.

The KFP UI shows an HTML artifact in a sandboxed iframe, so a page carries everything itself:
inline CSS, no scripts, no external URLs, and plots as base64 PNG data URIs drawn by matplotlib's
Agg renderer (the object API, not pyplot: no display, no global figure state). Every piece of text
that comes from data (a title, a column name, a category) is escaped here: a company called
`<script>` must show as text, not run.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Collection, Sequence
from html import escape
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from slipway.atomic import atomic_output

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
tr.weak td { background: #fde2e1; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.note { color: #666; }
"""


def write_page(path: Path, title: str, sections: Sequence[str]) -> None:
    """Writes one HTML page of `sections` (already HTML) to `path`, whole or not at all."""
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n<h1>{escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    with atomic_output(path) as temp:
        temp.write_text(page, encoding="utf-8")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], highlighted: Collection[int] = ()) -> str:
    """An HTML table, the rows numbered in `highlighted` marked; every cell is escaped here, so no caller can forget."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        ('<tr class="weak">' if i in highlighted else "<tr>") + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(figure: Figure) -> str:
    """The figure as a PNG data URI, for an `<img src=...>`."""
    buffer = io.BytesIO()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
