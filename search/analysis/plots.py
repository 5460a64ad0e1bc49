"""Figure builders for the trial leaderboard: search progress, learning curves, GradNorm weights, hyperparameters,
importance and the Pareto front.

Only matplotlib's object API is used (``Figure``, never pyplot): no global figure state, no GUI backend, so the
builders are safe in a headless CLI and in tests. Every builder returns a ``Figure`` or raises ``ValueError`` with a
reason when it has nothing to draw; the caller reports that reason as "skipped".
"""
from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from echotune.atomic import atomic_write_bytes

FIGSIZE = (8.0, 4.5)
DPI = 110
BASELINE_LABEL = "original study's baseline (best of its trial)"
NA_LEVEL = -0.08  # parallel coordinates: where a missing value sits, just below each axis
LOG_RATIO = 20.0  # a positive numeric axis spanning at least this factor is drawn in log10 (e.g. learning rates)
_PALETTE = matplotlib.colormaps["tab10"].colors


# ---------------------------------------------------------------- shared styling


def _figure(title: str, ncols: int = 1, figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``ncols`` panels side by side and a figure title (one place for styling)."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, ncols)))
    fig.suptitle(title, fontsize=12)
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9)
    return fig, axes


def _label(ax: Axes, xlabel: str, ylabel: str, title: str = "") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)


def _color(i: int):
    return _PALETTE[i % len(_PALETTE)]


def _legend_outside(fig: Figure, handles: list, labels: list[str], below: bool = False) -> None:
    """Legend outside the axes, so it never hides data: at the right for lists of trials, or below for a few
    entries (vertically centred at the right, because the figure title spans the legend's column too)."""
    loc = "outside lower center" if below else "outside center right"
    fig.legend(handles, labels, loc=loc, ncols=min(len(labels), 3) if below else 1, fontsize=8, frameon=False)


def _display_name(column: str) -> str:
    return column.removeprefix("hp/")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (a reader never sees half an image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- search progress


def best_so_far_figure(history: pd.DataFrame, baseline_score: float | None = None,
                       metric: str = "val/score") -> Figure:
    """Best ``metric`` so far against cumulative trial-epochs (all trials of an experiment in report order).

    The x axis counts every epoch result, scored or not, because each one cost compute.
    """
    _require_columns(history, ["experiment", "timestamp", metric], "search progress")
    if not history[metric].notna().any():
        raise ValueError(f"search progress: no epoch result has {metric}")
    fig, (ax,) = _figure(f"Search progress: best {metric} vs compute")
    for i, (name, rows) in enumerate(history.groupby("experiment", sort=True)):
        # Reports of parallel trials can share a timestamp (whole seconds): break ties deterministically.
        tie_break = [c for c in ("trial_id", "epoch") if c in rows.columns]
        rows = rows.sort_values(["timestamp", *tie_break], kind="stable")
        values = rows[metric].to_numpy(dtype=float)
        x = np.arange(1, len(values) + 1)
        best = pd.Series(values).cummax().ffill().to_numpy()
        ax.step(x, best, where="post", color=_color(i), linewidth=2, label=str(name))
        scored = ~np.isnan(values)
        ax.scatter(x[scored], values[scored], color=_color(i), alpha=0.25, s=14, linewidths=0)
    if baseline_score is not None:
        ax.axhline(baseline_score, color="0.25", linestyle="--", linewidth=1.2, label=BASELINE_LABEL)
    _label(ax, "cumulative trial-epochs", f"best {metric} so far")
    _legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return fig


# ---------------------------------------------------------------- per-trial curves


def _trials(history: pd.DataFrame, trial_ids: Sequence[str], what: str) -> list[tuple[str, pd.DataFrame]]:
    """The requested trials' rows, sorted by epoch, in the requested order; ids absent from ``history`` are dropped."""
    _require_columns(history, ["trial_id", "epoch"], what)
    ids = history["trial_id"].astype(str)
    wanted = list(dict.fromkeys(str(t) for t in trial_ids))
    found = [(t, history[ids == t].sort_values("epoch", kind="stable")) for t in wanted]
    found = [(t, rows) for t, rows in found if len(rows)]
    if not found:
        raise ValueError(f"{what}: none of the trials {', '.join(wanted) or '(none given)'} is in the history")
    return found


def _trial_label(trial_id: str, rows: pd.DataFrame, columns: Sequence[str] = ("arch",)) -> str:
    """``trial_id (arch[, balance])`` from the first known value of each column."""
    parts = [str(rows[c].dropna().iloc[0]) for c in columns if c in rows.columns and rows[c].notna().any()]
    return f"{trial_id} ({', '.join(parts)})" if parts else trial_id


def _stage_boundaries(rows: pd.DataFrame) -> list[int]:
    """Epochs that start a new stage: the stage is higher than at the trial's previous reported epoch."""
    if "stage" not in rows.columns:
        return []
    staged = rows.dropna(subset=["stage"])
    stages, epochs = staged["stage"].to_numpy(), staged["epoch"].to_numpy()
    return [int(e) for e, before, now in zip(epochs[1:], stages[:-1], stages[1:]) if now > before]


def _plot_series(ax: Axes, rows: pd.DataFrame, column: str, **style) -> None:
    # Drop the gaps rather than plot NaN: a NaN would break the line into invisible single points.
    points = rows[["epoch", column]].dropna()
    ax.plot(points["epoch"], points[column], **style)


def _epoch_axis(ax: Axes, ylabel: str, title: str = "") -> None:
    _label(ax, "epoch", ylabel, title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves_figure(history: pd.DataFrame, trial_ids: Sequence[str], metric: str = "val/score") -> Figure:
    """``metric`` (and ``train/loss`` when reported) per epoch, one colour per trial, stage boundaries dotted."""
    what = "learning curves"
    _require_columns(history, [metric], what)
    trials = _trials(history, trial_ids, what)
    selected = pd.concat([rows for _, rows in trials])
    if not selected[metric].notna().any():
        raise ValueError(f"{what}: trials {', '.join(t for t, _ in trials)} report no {metric}")
    has_loss = "train/loss" in selected.columns and selected["train/loss"].notna().any()
    panels = [metric, "train/loss"] if has_loss else [metric]
    fig, axes = _figure(f"Learning curves of {len(trials)} trial(s)", ncols=len(panels))
    handles, labels = [], []
    for i, (trial_id, rows) in enumerate(trials):
        boundaries = _stage_boundaries(rows)
        for ax, column in zip(axes, panels):
            _plot_series(ax, rows, column, color=_color(i), marker="o", markersize=3, linewidth=1.5)
            for epoch in boundaries:  # schedules differ per trial, so each trial marks its own
                ax.axvline(epoch, color=_color(i), linestyle=":", linewidth=1.2, alpha=0.9)
        handles.append(Line2D([], [], color=_color(i), marker="o", markersize=3))
        labels.append(_trial_label(trial_id, rows))
    for ax, column in zip(axes, panels):
        _epoch_axis(ax, column, title=f"{column} per epoch")
    handles.append(Line2D([], [], color="0.3", linestyle=":"))
    labels.append("stage boundaries (dotted)")
    _legend_outside(fig, handles, labels)
    return fig


def gradnorm_weights_figure(history: pd.DataFrame, trial_ids: Sequence[str]) -> Figure:
    """Task-loss weights per epoch: ``gradnorm/w_det`` solid, ``gradnorm/w_view`` dashed, one colour per trial.

    Every balancer reports these columns (fixed balancing reports constant 1.0), so the legend names the balance.
    """
    what = "task weights"
    columns = ["gradnorm/w_det", "gradnorm/w_view"]
    _require_columns(history, columns, what)
    trials = [(t, rows) for t, rows in _trials(history, trial_ids, what) if rows[columns].notna().to_numpy().any()]
    if not trials:
        raise ValueError(f"{what}: none of the trials {', '.join(map(str, trial_ids))} reports task weights")
    fig, (ax,) = _figure("Task-loss weights per epoch (gradnorm/w_det, gradnorm/w_view)")
    handles, labels = [], []
    for i, (trial_id, rows) in enumerate(trials):
        for column, linestyle in zip(columns, ("-", "--")):
            _plot_series(ax, rows, column, color=_color(i), linestyle=linestyle, marker="o", markersize=3)
        handles.append(Line2D([], [], color=_color(i), marker="o", markersize=3))
        labels.append(_trial_label(trial_id, rows, ("arch", "balance")))
    handles += [Line2D([], [], color="0.3", linestyle="-"), Line2D([], [], color="0.3", linestyle="--")]
    labels += ["w_det (solid)", "w_view (dashed)"]
    _epoch_axis(ax, "task weight")
    _legend_outside(fig, handles, labels)
    return fig


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


def parallel_coordinates_figure(leaderboard: pd.DataFrame, params: Sequence[str],
                                metric: str = "best/val/score") -> Figure:
    """One vertical axis per hyperparameter column plus ``metric``; one polyline per scored trial, coloured by it."""
    what = "parallel coordinates"
    params = list(params)
    if not params:
        raise ValueError(f"{what}: no hyperparameter columns given")
    _require_columns(leaderboard, [*params, metric], what)
    # Ascending, so the best trials are drawn last and stay visible on top.
    scored = leaderboard[leaderboard[metric].notna()].sort_values(metric, kind="stable")
    if scored.empty:
        raise ValueError(f"{what}: no trial has {metric}")
    axes = [_parallel_axis(scored[p], _display_name(p)) for p in params]
    axes.append(_parallel_axis(scored[metric].astype(float), metric, allow_log=False))
    xs = np.arange(len(axes))
    positions = np.column_stack([axis.y for axis in axes])  # (trials, axes)

    width = min(16.0, max(FIGSIZE[0], 1.3 * len(axes) + 2))  # keep room for each axis' tick texts
    fig, (ax,) = _figure(f"Hyperparameters of all scored trials, coloured by {metric}", figsize=(width, FIGSIZE[1]))
    scores = scored[metric].to_numpy(dtype=float)
    lo, hi = scores.min(), scores.max()
    lines = LineCollection([np.column_stack([xs, row]) for row in positions], cmap="viridis",
                           norm=Normalize(lo, hi if hi > lo else lo + 1e-12), linewidths=1.6, alpha=0.85)
    lines.set_array(scores)
    ax.add_collection(lines)
    for x, axis in zip(xs, axes):
        ax.axvline(x, color="0.2", linewidth=1)
        for y, text in axis.ticks:
            ax.text(x + 0.04, y, text, fontsize=8, ha="left", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
    ax.set_xticks(xs, [axis.label for axis in axes], rotation=25 if len(axes) > 6 else 0,
                  ha="right" if len(axes) > 6 else "center")
    ax.set_xlim(-0.2, xs[-1] + 0.6)
    ax.set_ylim(NA_LEVEL - 0.07, 1.07)
    ax.set_yticks([])
    ax.grid(False)
    ax.spines[["left", "bottom"]].set_visible(False)
    _label(ax, "", "position on each axis (min → max)")
    fig.colorbar(lines, ax=ax, label=metric, pad=0.01)
    return fig


# ---------------------------------------------------------------- importance and trade-offs


def importance_figure(importances: Mapping[str, float], title: str) -> Figure:
    """Horizontal bars, most important at the top, each bar labelled with its value."""
    items = [(name, float(v)) for name, v in importances.items() if v is not None and math.isfinite(float(v))]
    if not items:
        raise ValueError("importance: no importance values to draw")
    items.sort(key=lambda item: item[1])  # barh stacks bottom-up, so ascending puts the largest on top
    names, values = [_display_name(n) for n, _ in items], [v for _, v in items]
    fig, (ax,) = _figure(title, figsize=(FIGSIZE[0], max(3.0, 0.35 * len(items) + 1.5)))
    bars = ax.barh(names, values, color=_color(0), height=0.6)
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_xlim(min(0.0, min(values)), max(values) * 1.15 or 1.0)  # room for the value labels
    ax.grid(axis="y", visible=False)
    _label(ax, "importance (fraction of variance explained)", "hyperparameter")
    return fig


def pareto_figure(points: pd.DataFrame, x: str, y: str) -> Figure:
    """Every trial as a grey dot; Pareto-optimal ones (``points["pareto"]``) highlighted, joined and named.

    The front's staircase assumes both objectives are maximised, as all of this project's objectives are.
    """
    what = "Pareto front"
    _require_columns(points, [x, y], what)
    usable = points.dropna(subset=[x, y])
    if usable.empty:
        raise ValueError(f"{what}: no trial has both {x} and {y}")
    on_front = usable["pareto"].fillna(False).astype(bool) if "pareto" in usable.columns else False
    front = usable[on_front].sort_values(x, kind="stable")
    fig, (ax,) = _figure(f"Trade-off: {y} vs {x} (Pareto front highlighted)")
    ax.scatter(usable[x], usable[y], color="0.65", s=20, label=f"all trials ({len(usable)})")
    if len(front):
        # 'pre': between two front points the boundary is set by the one further right (it dominates that span).
        ax.step(front[x], front[y], where="pre", color=_color(3), linewidth=1.5)
        ax.scatter(front[x], front[y], color=_color(3), s=45, zorder=3, label=f"Pareto front ({len(front)})")
        for _, row in front.iterrows():
            if "trial_id" in front.columns and pd.notna(row["trial_id"]):
                ax.annotate(str(row["trial_id"]), (row[x], row[y]), xytext=(4, 4), textcoords="offset points",
                            fontsize=8)
    _label(ax, x, y)
    _legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return fig
