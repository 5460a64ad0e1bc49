"""Parallel coordinates of the trials' hyperparameters, coloured by score (numeric, log and categorical axes)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from echotune.reporting.figure_style import FIGSIZE, display_name, label_axes, new_figure, require_columns
from echotune.results.layout import BEST_SCORE_COLUMN

NA_LEVEL = -0.08  # where a missing value sits, just below each axis
LOG_RATIO = 20.0  # a positive numeric axis spanning at least this factor is drawn in log10 (e.g. learning rates)

# ---------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class _ParallelAxis:
    label: str
    y: np.ndarray  # one position per trial: [0, 1] on the axis, NA_LEVEL where the value is missing
    ticks: list[tuple[float, str]]  # (position, text) written beside the axis


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _numeric_positions(values: np.ndarray, allow_log: bool) -> tuple[np.ndarray, list[tuple[float, str]], bool]:
    """Min/max-normalised positions (log10 for a wide positive range), ticks at min and max, and whether log."""
    lo, hi = float(values.min()), float(values.max())
    log = allow_log and lo > 0 and hi / lo >= LOG_RATIO
    scaled = np.log10(values) if log else values
    a, b = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
    if b == a:  # one distinct value: mid-axis
        return np.full(len(values), 0.5), [(0.5, f"{lo:.3g}")], log
    return (scaled - a) / (b - a), [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")], log


def _categorical_positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Evenly spaced levels in sorted order (by text, so bools and strings sort alike)."""
    levels = sorted(set(values), key=str)
    step = 1.0 / (len(levels) - 1) if len(levels) > 1 else 0.0
    position = {level: (i * step if len(levels) > 1 else 0.5) for i, level in enumerate(levels)}
    return np.array([position[v] for v in values], dtype=float), [(position[lv], str(lv)) for lv in levels]


def _parallel_axis(values: pd.Series, name: str, allow_log: bool = True) -> _ParallelAxis:
    missing = values.isna().to_numpy()
    present = values[~missing]
    y = np.full(len(values), NA_LEVEL)
    ticks: list[tuple[float, str]] = []
    label = name
    if len(present) and all(_is_number(v) for v in present):
        y[~missing], ticks, log = _numeric_positions(present.to_numpy(dtype=float), allow_log)
        label = f"{name} (log)" if log else name
    elif len(present):
        y[~missing], ticks = _categorical_positions(present)
    if missing.any():  # e.g. a GradNorm parameter of a dual-backbone trial: drawn below the axis, line unbroken
        ticks.append((NA_LEVEL, "n/a"))
    return _ParallelAxis(label, y, ticks)


def parallel_coordinates_figure(
    leaderboard: pd.DataFrame, params: Sequence[str], metric: str = BEST_SCORE_COLUMN
) -> Figure:
    """One vertical axis per hyperparameter column plus ``metric``; one polyline per scored trial, coloured by it."""
    what = "parallel coordinates"
    params = list(params)
    if not params:
        raise ValueError(f"{what}: no hyperparameter columns given")
    require_columns(leaderboard, [*params, metric], what)
    # Ascending, so the best trials are drawn last and stay visible on top.
    scored = leaderboard[leaderboard[metric].notna()].sort_values(metric, kind="stable")
    if scored.empty:
        raise ValueError(f"{what}: no trial has {metric}")
    axes = [_parallel_axis(scored[p], display_name(p)) for p in params]
    axes.append(_parallel_axis(scored[metric].astype(float), metric, allow_log=False))
    xs = np.arange(len(axes))
    positions = np.column_stack([axis.y for axis in axes])  # (trials, axes)

    width = min(16.0, max(FIGSIZE[0], 1.3 * len(axes) + 2))  # keep room for each axis' tick texts
    fig, (ax,) = new_figure(f"Hyperparameters of all scored trials, coloured by {metric}", figsize=(width, FIGSIZE[1]))
    scores = scored[metric].to_numpy(dtype=float)
    lo, hi = scores.min(), scores.max()
    lines = LineCollection(
        [np.column_stack([xs, row]) for row in positions],
        cmap="viridis",
        norm=Normalize(lo, hi if hi > lo else lo + 1e-12),
        linewidths=1.6,
        alpha=0.85,
    )
    lines.set_array(scores)
    ax.add_collection(lines)
    for x, axis in zip(xs, axes):
        ax.axvline(x, color="0.2", linewidth=1)
        for y, text in axis.ticks:
            ax.text(
                x + 0.04,
                y,
                text,
                fontsize=8,
                ha="left",
                va="center",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8),
            )
    ax.set_xticks(
        xs,
        [axis.label for axis in axes],
        rotation=25 if len(axes) > 6 else 0,
        ha="right" if len(axes) > 6 else "center",
    )
    ax.set_xlim(-0.2, xs[-1] + 0.6)
    ax.set_ylim(NA_LEVEL - 0.07, 1.07)
    ax.set_yticks([])
    ax.grid(False)
    ax.spines[["left", "bottom"]].set_visible(False)
    label_axes(ax, "", "position on each axis (min → max)")
    fig.colorbar(lines, ax=ax, label=metric, pad=0.01)
    return fig
