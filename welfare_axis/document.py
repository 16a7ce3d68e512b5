"""A tiny document model rendered to both Markdown and self-contained HTML.

The report is built once as blocks, then written as report.md (figures linked) and
report.html (figures embedded as base64), so the two never drift apart.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Code:
    text: str


Block = Heading | Para | Table | Figure | Code


def _cell(v) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:.3g}"
    return "—" if v is None else str(v)


def to_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            if b.caption:
                out.append(f"*{b.caption}*\n")
            cols = [str(c) for c in b.frame.columns]
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            for row in b.frame.itertuples(index=False):
                out.append("| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |")
            out.append("")
        elif isinstance(b, Figure):
            rel = os.path.relpath(Path(b.path).resolve(), base.resolve())  # the report folder moves with its run
            out.append(f"![{b.caption}]({rel})\n")
            if b.caption:
                out.append(f"*{b.caption}*\n")
        elif isinstance(b, Code):
            out.append("```\n" + b.text.rstrip() + "\n```\n")
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1em;"
        "overflow-x:auto}figcaption{color:#555;font-size:0.9em}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b.frame.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                for row in b.frame.itertuples(index=False)
            )
            parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            p = Path(b.path)
            if p.exists():
                data = base64.b64encode(p.read_bytes()).decode()
                parts.append(
                    f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
            else:
                parts.append(f"<p><em>figure missing: {html.escape(str(p))}</em></p>")
        elif isinstance(b, Code):
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` (all the Markdown our report paragraphs use)."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t.replace("\n", "<br>")
