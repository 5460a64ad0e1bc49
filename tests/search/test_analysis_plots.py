"""Leaderboard figures and the HTML page, on hand-built DataFrames (no Ray, nothing rendered but two PNGs)."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from echotune.reporting.html_page import Section, format_cell, render_html, write_html
from echotune.reporting.plots import (
    BASELINE_LABEL,
    NA_LEVEL,
    best_so_far_figure,
    gradnorm_weights_figure,
    importance_figure,
    learning_curves_figure,
    parallel_coordinates_figure,
    pareto_figure,
    save_figure,
)


def _trial(experiment, trial_id, arch, balance, stages, scores, start, w_det=None):
    """Rows of one trial; timestamps every 10 s from ``start``."""
    n = len(scores)
    return pd.DataFrame(
        {
            "experiment": experiment,
            "trial_id": trial_id,
            "arch": arch,
            "balance": balance,
            "epoch": range(1, n + 1),
            "stage": stages,
            "timestamp": [start + 10.0 * i for i in range(n)],
            "val/score": scores,
            "train/loss": [3.0 - 0.2 * i for i in range(n)],
            "gradnorm/w_det": w_det if w_det is not None else [math.nan] * n,
            "gradnorm/w_view": [2 - w for w in w_det] if w_det is not None else [math.nan] * n,
        }
    )


@pytest.fixture
def history():
    return pd.concat(
        [
            # t1 and t2 interleave in time, so best-so-far must follow timestamps, not row order.
            _trial(
                "exp-a",
                "t1",
                "shared",
                "gradnorm",
                [1, 1, 2, 2, 3, 3],
                [0.10, 0.30, 0.25, 0.40, 0.38, 0.45],
                start=0,
                w_det=[1.0, 1.1, 1.2, 1.15, 1.1, 1.05],
            ),
            _trial("exp-a", "t2", "dual", "fixed", [1, 2, 2, 3], [0.20, 0.35, math.nan, 0.50], start=5),
            _trial("exp-b", "t3", "shared", "uncertainty", [1, 1, 1], [0.05, 0.15, 0.12], start=100),
        ],
        ignore_index=True,
    )


@pytest.fixture
def leaderboard():
    return pd.DataFrame(
        {
            "trial_id": ["t1", "t2", "t3", "t4"],
            "arch": ["shared", "dual", "shared", "shared"],
            "best/val/score": [0.45, 0.50, 0.15, math.nan],  # t4 never scored: left out
            "hp/lr": [1e-4, 1e-3, 1e-2, 5e-3],  # a factor 100: log axis
            "hp/optimizer": ["sgd", "adamw", "adamw", "sgd"],
            "hp/gn_alpha": [0.5, None, 2.0, 1.0],  # dual trials have no GradNorm: "n/a"
            "hp/ema": [True, False, True, None],
        }
    )


def _line(ax, label):
    (line,) = [line for line in ax.lines if line.get_label() == label]
    return line


def _vertical_lines(ax) -> list:
    """Dotted vertical lines (axvline) on ``ax`` as (x, colour)."""
    return [
        (line.get_xdata()[0], line.get_color())
        for line in ax.lines
        if line.get_linestyle() == ":" and line.get_xdata()[0] == line.get_xdata()[1]
    ]


def _legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_best_so_far_follows_time_and_ends_at_the_max(history):
    fig = best_so_far_figure(history, baseline_score=0.33)
    (ax,) = fig.axes
    assert fig.get_suptitle() == "Search progress: best val/score vs compute"
    assert ax.get_xlabel() == "cumulative trial-epochs"
    a = _line(ax, "exp-a")
    # exp-a by time: t1 .10, t2 .20, t1 .30, t2 .35, t1 .25, t2 nan, t1 .40, t2 .50, t1 .38, t1 .45
    assert list(a.get_xdata()) == list(range(1, 11))
    assert list(a.get_ydata()) == pytest.approx([0.10, 0.20, 0.30, 0.35, 0.35, 0.35, 0.40, 0.50, 0.50, 0.50])
    b = _line(ax, "exp-b").get_ydata()
    assert np.all(np.diff(b) >= 0) and b[-1] == pytest.approx(0.15)
    assert list(_line(ax, BASELINE_LABEL).get_ydata()) == [0.33, 0.33]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [9, 3]  # the NaN result is not scattered
    assert BASELINE_LABEL in _legend_texts(fig)


def test_best_so_far_without_baseline_and_without_scores(history):
    (ax,) = best_so_far_figure(history).axes
    assert BASELINE_LABEL not in [line.get_label() for line in ax.lines]
    with pytest.raises(ValueError, match="no epoch result"):
        best_so_far_figure(history.assign(**{"val/score": math.nan}))


def test_learning_curves_mark_each_trials_stage_boundaries(history):
    fig = learning_curves_figure(history, ["t1", "t2", "missing"])
    left, right = fig.axes
    assert left.get_ylabel() == "val/score" and right.get_ylabel() == "train/loss"
    assert left.get_xlabel() == right.get_xlabel() == "epoch"
    labels = _legend_texts(fig)
    assert "t1 (shared)" in labels and "t2 (dual)" in labels and "stage boundaries (dotted)" in labels
    for ax in (left, right):
        t1, t2 = [line for line in ax.lines if line.get_linestyle() == "-"]  # plotted in the order asked
        assert t1.get_color() != t2.get_color()
        expected = [(3, t1.get_color()), (5, t1.get_color()), (2, t2.get_color()), (4, t2.get_color())]
        assert sorted(_vertical_lines(ax)) == sorted(expected)
    t2_score = [line for line in left.lines if line.get_linestyle() == "-"][1]
    assert list(t2_score.get_xdata()) == [1, 2, 4]  # the NaN score is skipped, the line joins its neighbours


def test_learning_curves_single_panel_and_errors(history):
    fig = learning_curves_figure(history.drop(columns="train/loss"), ["t3"])
    assert len(fig.axes) == 1 and _vertical_lines(fig.axes[0]) == []  # t3 never leaves stage 1
    with pytest.raises(ValueError, match="none of the trials"):
        learning_curves_figure(history, ["nope"])


def test_gradnorm_weights(history):
    fig = gradnorm_weights_figure(history, ["t1", "t2"])
    (ax,) = fig.axes
    assert ax.get_ylabel() == "task weight"
    styles = sorted(line.get_linestyle() for line in ax.lines)
    assert styles == ["-", "--"]  # t2 (fixed, all NaN) has nothing to draw
    assert list(_line_with_style(ax, "-").get_ydata()) == [1.0, 1.1, 1.2, 1.15, 1.1, 1.05]
    assert "t1 (shared, gradnorm)" in _legend_texts(fig)
    with pytest.raises(ValueError, match="reports task weights"):
        gradnorm_weights_figure(history, ["t2", "t3"])


def _line_with_style(ax, style):
    (line,) = [line for line in ax.lines if line.get_linestyle() == style]
    return line


def test_parallel_coordinates(leaderboard):
    params = ["hp/lr", "hp/optimizer", "hp/gn_alpha", "hp/ema"]
    fig = parallel_coordinates_figure(leaderboard, params)
    ax, colorbar = fig.axes
    assert fig.get_suptitle() == "Hyperparameters of all scored trials, coloured by best/val/score"
    assert colorbar.get_ylabel() == "best/val/score"
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "lr (log)",
        "optimizer",
        "gn_alpha",
        "ema",
        "best/val/score",
    ]
    assert len(ax.lines) == 5  # one vertical axis each
    (polylines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = polylines.get_segments()
    assert len(segments) == 3  # t4 has no score
    # Drawn worst first: t3 (.15), t1 (.45), t2 (.50); columns: lr, optimizer, gn_alpha, ema, score.
    ys = np.array([segment[:, 1] for segment in segments])
    assert ys[:, 0] == pytest.approx([1.0, 0.0, 0.5])  # 1e-2, 1e-4, 1e-3 on a log axis
    assert ys[:, 1] == pytest.approx([0.0, 1.0, 0.0])  # adamw < sgd
    assert ys[:, 2] == pytest.approx([1.0, 0.0, NA_LEVEL])  # dual trial t2: n/a, line unbroken
    assert ys[:, 3] == pytest.approx([1.0, 1.0, 0.0])  # False < True
    assert ys[:, 4] == pytest.approx([0.0, (0.45 - 0.15) / 0.35, 1.0])
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("n/a") == 1 and {"adamw", "sgd", "0.0001", "0.01", "0.5", "2"} <= set(texts)


def test_parallel_coordinates_linear_axis_and_errors(leaderboard):
    fig = parallel_coordinates_figure(leaderboard.assign(**{"hp/lr": [1e-3, 2e-3, 3e-3, 4e-3]}), ["hp/lr"])
    assert fig.axes[0].get_xticklabels()[0].get_text() == "lr"  # a factor 3: linear
    with pytest.raises(ValueError, match="no trial has"):
        parallel_coordinates_figure(leaderboard.assign(**{"best/val/score": math.nan}), ["hp/lr"])
    with pytest.raises(ValueError, match="missing column"):
        parallel_coordinates_figure(leaderboard, ["hp/nope"])
    with pytest.raises(ValueError, match="no hyperparameter"):
        parallel_coordinates_figure(leaderboard, [])


def test_importance_bars_largest_on_top():
    fig = importance_figure({"hp/lr": 0.6, "hp/optimizer": 0.1, "hp/gn_alpha": 0.3}, "Importance for val/score")
    (ax,) = fig.axes
    assert fig.get_suptitle() == "Importance for val/score"
    assert ax.get_xlabel() == "importance (fraction of variance explained)"
    bars = sorted(ax.patches, key=lambda bar: bar.get_y(), reverse=True)  # top first
    assert [bar.get_width() for bar in bars] == [0.6, 0.3, 0.1]
    assert [t.get_text() for t in ax.get_yticklabels()][::-1] == ["lr", "gn_alpha", "optimizer"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.100", "0.300", "0.600"]
    with pytest.raises(ValueError, match="no importance"):
        importance_figure({}, "empty")


def test_pareto_front():
    points = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "val/map50": [0.1, 0.5, 0.3, 0.2],
            "val/view_acc": [0.9, 0.4, 0.7, 0.5],
            "pareto": [True, True, True, False],
        }
    )
    fig = pareto_figure(points, "val/map50", "val/view_acc")
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("val/map50", "val/view_acc")
    assert [len(c.get_offsets()) for c in ax.collections] == [4, 3]
    (front,) = ax.lines
    assert np.all(np.diff(front.get_xdata()) >= 0)  # steps in order of x
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no trial has both"):
        pareto_figure(points.assign(**{"val/map50": math.nan}), "val/map50", "val/view_acc")


def test_save_figure_writes_a_png(tmp_path, history):
    path = save_figure(best_so_far_figure(history), tmp_path / "new" / "progress.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["progress.png"]  # no temporary file left


def test_format_cell():
    assert [format_cell(v) for v in (None, math.nan, 0.12345, 0.00055, 0.0, 3, True, "x")] == [
        "",
        "",
        "0.123",
        "0.00055",
        "0.000",
        "3",
        "True",
        "x",
    ]


def test_render_html_is_self_contained_and_escaped(tmp_path, history):
    png = save_figure(importance_figure({"lr": 1.0}, "one"), tmp_path / "imp.png")
    table = pd.DataFrame({"trial_id": ["<script>alert(1)</script>", "t2"], "score": [0.45678, None]})
    sections = [
        Section(
            "Top <trials>",
            text="first <script>bad()</script>\n\nsecond",
            tables=[("top", table)],
            images=[("importance", png)],
        )
    ]
    page = render_html("Leaderboard", "exp-a & exp-b", sections)
    assert f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "first &lt;script&gt;bad()&lt;/script&gt;" in page and "Top &lt;trials&gt;" in page
    assert "exp-a &amp; exp-b" in page and "0.457" in page and ">t2<" in page
    assert "http" not in page and "<link" not in page  # nothing fetched from outside
    written = write_html(tmp_path / "out" / "index.html", "Leaderboard", "", sections)
    assert written.read_text(encoding="utf-8").count("<img ") == 1


def test_render_html_banner_is_escaped_and_only_there_when_given():
    page = render_html("Leaderboard", "", [Section("Top")], banner="WARNING: leaky <splits>\nsecond line")
    assert (
        '<p class="banner" role="alert">WARNING: leaky &lt;splits&gt;</p>\n'
        '<p class="banner" role="alert">second line</p>'
    ) in page
    assert 'class="banner"' not in render_html("Leaderboard", "", [Section("Top")])
