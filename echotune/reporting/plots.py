"""Figure builders for the trial leaderboard: search progress, learning curves, GradNorm weights, hyperparameters
(parallel_plot.py), importance and the Pareto front.

Every builder returns a ``Figure`` (matplotlib's object API only, see figure_style.py) or raises ``ValueError``
with a reason when it has nothing to draw; the caller reports that reason as "skipped".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from echotune.metrics.score import SCORE_METRIC, TASK_WEIGHT_METRICS, TRAIN_LOSS
from echotune.reporting.figure_style import (
    FIGSIZE,
    display_name,
    label_axes,
    legend_outside,
    new_figure,
    palette_color,
    require_columns,
    save_figure,
)
from echotune.reporting.parallel_plot import NA_LEVEL, parallel_coordinates_figure

BASELINE_LABEL = "original study's baseline (best of its trial)"
__all__ = [
    "BASELINE_LABEL",
    "NA_LEVEL",
    "best_so_far_figure",
    "gradnorm_weights_figure",
    "importance_figure",
    "learning_curves_figure",
    "parallel_coordinates_figure",
    "pareto_figure",
    "save_figure",
]


# ---------------------------------------------------------------- search progress


def best_so_far_figure(
    history: pd.DataFrame, baseline_score: float | None = None, metric: str = SCORE_METRIC
) -> Figure:
    """Best ``metric`` so far against cumulative trial-epochs (all trials of an experiment in report order).

    The x axis counts every epoch result, scored or not, because each one cost compute.
    """
    require_columns(history, ["experiment", "timestamp", metric], "search progress")
    if not history[metric].notna().any():
        raise ValueError(f"search progress: no epoch result has {metric}")
    fig, (ax,) = new_figure(f"Search progress: best {metric} vs compute")
    for i, (name, rows) in enumerate(history.groupby("experiment", sort=True)):
        # Reports of parallel trials can share a timestamp (whole seconds): break ties deterministically.
        tie_break = [c for c in ("trial_id", "epoch") if c in rows.columns]
        rows = rows.sort_values(["timestamp", *tie_break], kind="stable")
        values = rows[metric].to_numpy(dtype=float)
        x = np.arange(1, len(values) + 1)
        best = pd.Series(values).cummax().ffill().to_numpy()
        ax.step(x, best, where="post", color=palette_color(i), linewidth=2, label=str(name))
        scored = ~np.isnan(values)
        ax.scatter(x[scored], values[scored], color=palette_color(i), alpha=0.25, s=14, linewidths=0)
    if baseline_score is not None:
        ax.axhline(baseline_score, color="0.25", linestyle="--", linewidth=1.2, label=BASELINE_LABEL)
    label_axes(ax, "cumulative trial-epochs", f"best {metric} so far")
    legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return fig


# ---------------------------------------------------------------- per-trial curves


def _trials(history: pd.DataFrame, trial_ids: Sequence[str], what: str) -> list[tuple[str, pd.DataFrame]]:
    """The requested trials' rows, sorted by epoch, in the requested order; ids absent from ``history`` are dropped."""
    require_columns(history, ["trial_id", "epoch"], what)
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
    label_axes(ax, "epoch", ylabel, title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves_figure(history: pd.DataFrame, trial_ids: Sequence[str], metric: str = SCORE_METRIC) -> Figure:
    """``metric`` (and the training loss when reported) per epoch, one colour per trial, stage boundaries dotted."""
    what = "learning curves"
    require_columns(history, [metric], what)
    trials = _trials(history, trial_ids, what)
    selected = pd.concat([rows for _, rows in trials])
    if not selected[metric].notna().any():
        raise ValueError(f"{what}: trials {', '.join(t for t, _ in trials)} report no {metric}")
    has_loss = TRAIN_LOSS in selected.columns and selected[TRAIN_LOSS].notna().any()
    panels = [metric, TRAIN_LOSS] if has_loss else [metric]
    fig, axes = new_figure(f"Learning curves of {len(trials)} trial(s)", ncols=len(panels))
    handles, labels = [], []
    for i, (trial_id, rows) in enumerate(trials):
        boundaries = _stage_boundaries(rows)
        for ax, column in zip(axes, panels):
            _plot_series(ax, rows, column, color=palette_color(i), marker="o", markersize=3, linewidth=1.5)
            for epoch in boundaries:  # schedules differ per trial, so each trial marks its own
                ax.axvline(epoch, color=palette_color(i), linestyle=":", linewidth=1.2, alpha=0.9)
        handles.append(Line2D([], [], color=palette_color(i), marker="o", markersize=3))
        labels.append(_trial_label(trial_id, rows))
    for ax, column in zip(axes, panels):
        _epoch_axis(ax, column, title=f"{column} per epoch")
    handles.append(Line2D([], [], color="0.3", linestyle=":"))
    labels.append("stage boundaries (dotted)")
    legend_outside(fig, handles, labels)
    return fig


def gradnorm_weights_figure(history: pd.DataFrame, trial_ids: Sequence[str]) -> Figure:
    """Task-loss weights per epoch: ``gradnorm/w_det`` solid, ``gradnorm/w_view`` dashed, one colour per trial.

    Every balancer reports these columns (fixed balancing reports constant 1.0), so the legend names the balance.
    """
    what = "task weights"
    columns = [TASK_WEIGHT_METRICS["det"], TASK_WEIGHT_METRICS["view"]]
    require_columns(history, columns, what)
    trials = [(t, rows) for t, rows in _trials(history, trial_ids, what) if rows[columns].notna().to_numpy().any()]
    if not trials:
        raise ValueError(f"{what}: none of the trials {', '.join(map(str, trial_ids))} reports task weights")
    fig, (ax,) = new_figure(f"Task-loss weights per epoch ({', '.join(columns)})")
    handles, labels = [], []
    for i, (trial_id, rows) in enumerate(trials):
        for column, linestyle in zip(columns, ("-", "--")):
            _plot_series(ax, rows, column, color=palette_color(i), linestyle=linestyle, marker="o", markersize=3)
        handles.append(Line2D([], [], color=palette_color(i), marker="o", markersize=3))
        labels.append(_trial_label(trial_id, rows, ("arch", "balance")))
    handles += [Line2D([], [], color="0.3", linestyle="-"), Line2D([], [], color="0.3", linestyle="--")]
    labels += ["w_det (solid)", "w_view (dashed)"]
    _epoch_axis(ax, "task weight")
    legend_outside(fig, handles, labels)
    return fig


# ---------------------------------------------------------------- importance and trade-offs


def importance_figure(importances: Mapping[str, float], title: str) -> Figure:
    """Horizontal bars, most important at the top, each bar labelled with its value."""
    items = [(name, float(v)) for name, v in importances.items() if v is not None and math.isfinite(float(v))]
    if not items:
        raise ValueError("importance: no importance values to draw")
    items.sort(key=lambda item: item[1])  # barh stacks bottom-up, so ascending puts the largest on top
    names, values = [display_name(n) for n, _ in items], [v for _, v in items]
    fig, (ax,) = new_figure(title, figsize=(FIGSIZE[0], max(3.0, 0.35 * len(items) + 1.5)))
    bars = ax.barh(names, values, color=palette_color(0), height=0.6)
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_xlim(min(0.0, min(values)), max(values) * 1.15 or 1.0)  # room for the value labels
    ax.grid(axis="y", visible=False)
    label_axes(ax, "importance (fraction of variance explained)", "hyperparameter")
    return fig


def pareto_figure(points: pd.DataFrame, x: str, y: str) -> Figure:
    """Every trial as a grey dot; Pareto-optimal ones (``points["pareto"]``) highlighted, joined and named.

    The front's staircase assumes both objectives are maximised, as all of this project's objectives are.
    """
    what = "Pareto front"
    require_columns(points, [x, y], what)
    usable = points.dropna(subset=[x, y])
    if usable.empty:
        raise ValueError(f"{what}: no trial has both {x} and {y}")
    on_front = usable["pareto"].fillna(False).astype(bool) if "pareto" in usable.columns else False
    front = usable[on_front].sort_values(x, kind="stable")
    fig, (ax,) = new_figure(f"Trade-off: {y} vs {x} (Pareto front highlighted)")
    ax.scatter(usable[x], usable[y], color="0.65", s=20, label=f"all trials ({len(usable)})")
    if len(front):
        # 'pre': between two front points the boundary is set by the one further right (it dominates that span).
        ax.step(front[x], front[y], where="pre", color=palette_color(3), linewidth=1.5)
        ax.scatter(front[x], front[y], color=palette_color(3), s=45, zorder=3, label=f"Pareto front ({len(front)})")
        for _, row in front.iterrows():
            if "trial_id" in front.columns and pd.notna(row["trial_id"]):
                ax.annotate(
                    str(row["trial_id"]), (row[x], row[y]), xytext=(4, 4), textcoords="offset points", fontsize=8
                )
    label_axes(ax, x, y)
    legend_outside(fig, *ax.get_legend_handles_labels(), below=True)
    return fig
