"""Shared look of the leaderboard figures: size, palette, titles, labels, outside legends, atomic PNG saving.

Only matplotlib's object API is used (``Figure``, never pyplot): no global figure state, no GUI backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from echotune.atomic import atomic_write_bytes
from echotune.results.layout import HP_PREFIX

__all__ = [
    "DPI",
    "FIGSIZE",
    "display_name",
    "label_axes",
    "legend_outside",
    "new_figure",
    "palette_color",
    "require_columns",
    "save_figure",
]

FIGSIZE = (8.0, 4.5)
DPI = 110
_PALETTE = matplotlib.colormaps["tab10"].colors


def new_figure(title: str, ncols: int = 1, figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``ncols`` panels side by side and a figure title (one place for styling)."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, ncols)))
    fig.suptitle(title, fontsize=12)
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9)
    return fig, axes


def label_axes(ax: Axes, xlabel: str, ylabel: str, title: str = "") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)


def palette_color(i: int):
    """The i-th colour of the palette (it repeats after 10): one per trial, experiment or series."""
    return _PALETTE[i % len(_PALETTE)]


def legend_outside(fig: Figure, handles: list, labels: list[str], below: bool = False) -> None:
    """Legend outside the axes, so it never hides data: at the right for lists of trials, or below for a few
    entries (vertically centred at the right, because the figure title spans the legend's column too)."""
    loc = "outside lower center" if below else "outside center right"
    fig.legend(handles, labels, loc=loc, ncols=min(len(labels), 3) if below else 1, fontsize=8, frameon=False)


def display_name(column: str) -> str:
    """A leaderboard column as a figure shows it: hp/lr_stage1 -> lr_stage1."""
    return column.removeprefix(HP_PREFIX)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """ValueError naming the figure (`what`) and the missing columns: the caller reports it as "skipped"."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (a reader never sees half an image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())
