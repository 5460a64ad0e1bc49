"""One self-contained HTML report page: sections of text, tables (from DataFrames) and PNG figures.

Self-contained means one file to copy or attach: no external CSS, scripts or fonts, and images are embedded as
``data:image/png;base64`` URIs. All text goes through ``html.escape`` (trial names and hyperparameter values are
data, not markup). The module is not called ``html.py`` so that it never shadows the standard library's ``html``.
"""

from __future__ import annotations

import base64
import html
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from echotune.atomic import atomic_write_text

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a; margin: 0 auto;
       max-width: 1150px; padding: 1.5em; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } .subtitle { color: #5a6570; margin-top: 0; }
h2 { border-bottom: 1px solid #d5dbe1; padding-bottom: 0.2em; margin-top: 1.8em; }
nav ol { columns: 2; color: #5a6570; }
.table-wrap { overflow-x: auto; margin: 0.8em 0 1.4em; }
table { border-collapse: collapse; font-size: 0.85em; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e3e7eb; white-space: nowrap; }
th { background: #eef1f4; text-align: left; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #f7f9fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #eef1f4; }
figcaption { color: #5a6570; font-size: 0.9em; }
.banner { background: #fff3cd; border: 2px solid #d39e00; color: #6b4e00; padding: 0.6em 1em; font-weight: 600; }
"""


@dataclass
class Section:
    """A titled part of the page: paragraphs of ``text`` (blank-line separated), then tables, then images."""

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, path to a PNG file)


def format_cell(value) -> str:
    """Text of one table cell: blank for missing, floats to 3 decimals (3 significant digits below 0.01, so a
    learning rate of 0.00055 does not print as 0.001), everything else as ``str``."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # bools are Integral
        value = float(value)
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def _is_numeric_column(values: pd.Series) -> bool:
    """Judged by value, not dtype: a hyperparameter column holding floats and None has dtype object."""
    present = values.dropna()
    return len(present) > 0 and all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present)


def _cells(tag: str, texts: list[str], numeric: list[bool]) -> str:
    attrs = [' class="num"' if n else "" for n in numeric]
    return "".join(f"<{tag}{a}>{html.escape(text)}</{tag}>" for text, a in zip(texts, attrs))


def _table(caption: str, frame: pd.DataFrame) -> str:
    """A table with numeric columns right-aligned and every cell escaped."""
    numeric = [_is_numeric_column(frame.iloc[:, i]) for i in range(frame.shape[1])]
    head = _cells("th", [str(c) for c in frame.columns], numeric)
    rows = "\n".join(
        f"<tr>{_cells('td', [format_cell(v) for v in row], numeric)}</tr>"
        for row in frame.itertuples(index=False, name=None)
    )
    return (
        f'<div class="table-wrap"><table>\n<caption>{html.escape(caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>"
    )


def _image(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    text = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _paragraphs(text: str) -> str:
    return "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _section(index: int, section: Section) -> str:
    parts = [f'<section id="s{index}"><h2>{html.escape(section.title)}</h2>', _paragraphs(section.text)]
    parts += [_table(caption, frame) for caption, frame in section.tables]
    parts += [_image(caption, path) for caption, path in section.images]
    return "\n".join(p for p in parts if p) + "\n</section>"


def render_html(title: str, subtitle: str, sections: list[Section], banner: str = "") -> str:
    """The whole page as one string (a missing image file raises ``FileNotFoundError``). ``banner``: a warning
    shown in a box under the title, one paragraph per line (e.g. the leaky-splits flag); none when empty."""
    contents = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    body = "\n".join(_section(i, s) for i, s in enumerate(sections))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="subtitle">{html.escape(subtitle)}</p>\n'
        + "".join(
            f'<p class="banner" role="alert">{html.escape(line)}</p>\n' for line in banner.splitlines() if line.strip()
        )
        + f"<nav><ol>{contents}</ol></nav>\n{body}\n</body></html>\n"
    )


def write_html(path: str | Path, title: str, subtitle: str, sections: list[Section], banner: str = "") -> Path:
    """Render the page and write it atomically; returns the path."""
    return atomic_write_text(path, render_html(title, subtitle, sections, banner))
