"""Leaderboard tables: ranking, the top-N table with the baseline row, gain over the baseline, per-architecture
comparison, and their text / markdown / CSV renderings.

Input everywhere is the leaderboard as a pandas DataFrame (`leaderboard_frame(rows)`; columns of
search.trial_table.SCHEMA), one row per trial, possibly from several experiments.
"""

from __future__ import annotations

import math

import pandas as pd

from echotune.metrics import METRIC_LABELS, SHORT_METRICS
from echotune.metrics import VAL_METRICS as METRICS
from echotune.results.layout import (
    BEST_PREFIX,
    BEST_SCORE_COLUMN,
    FAILED_STATUSES,
    HP_PREFIX,
    INTERRUPTED,
    LIVE_STATUSES,
)

DISPLAY = {SHORT_METRICS[name]: label for name, label in METRIC_LABELS}  # val/map50 -> mAP50, ...
TABLE_FORMATS = ("table", "markdown", "csv", "json")
# Shown first when there is no importance ranking yet: the choices that change a model most.
KEY_PARAMS = (
    "optimizer",
    "lr_stage1",
    "model_scale",
    "gn_alpha",
    "classifier",
    "loss_view",
    "aug_policy",
    "loss_box",
    "loss_obj",
    "weight_decay",
    "lr_stage2",
    "view_level",
    "balance",
)


def metric_column(name: str) -> str:
    """'score', 'val/score' or 'best/val/score' -> the leaderboard column 'best/val/score'."""
    metric = SHORT_METRICS.get(name, name.removeprefix(BEST_PREFIX))
    if metric not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(SHORT_METRICS)}")
    return BEST_PREFIX + metric


def leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["trial_id", "experiment", BEST_SCORE_COLUMN])


def rank(frame: pd.DataFrame, by: str = "score") -> pd.DataFrame:
    """Scored trials by `by` (descending), then trials without a score yet (running, pending, failed early).
    Adds a 1-based `rank` column (null for unscored trials)."""
    column = metric_column(by)
    ranked = frame.sort_values(column, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    scored = ranked[column].notna()
    ranked.insert(0, "rank", pd.array([i + 1 if s else None for i, s in enumerate(scored)], dtype="Int64"))
    return ranked


def arch_label(row) -> str:
    """shared/gradnorm, dual/fixed, ...: architecture and loss balancer, the comparison the study cares about."""
    balance = row.get(HP_PREFIX + "balance")
    return f"{row.get('arch')}/{balance}" if isinstance(balance, str) else str(row.get("arch"))


def varying_params(frame: pd.DataFrame, order: list[str] | None = None, limit: int = 6) -> list[str]:
    """hp/* columns whose value differs between trials, most important first (`order`: names by importance;
    then KEY_PARAMS, then alphabetical)."""
    columns = [c for c in frame.columns if c.startswith(HP_PREFIX) and frame[c].astype(str).nunique(dropna=False) > 1]
    preferred = list(order or []) + [p for p in KEY_PARAMS if p not in (order or [])]
    rank_of = {HP_PREFIX + name: i for i, name in enumerate(preferred)}
    return sorted(columns, key=lambda c: (rank_of.get(c, len(rank_of)), c))[:limit]


def top_table(ranked: pd.DataFrame, by: str = "score", top: int = 10, params: list[str] | None = None) -> pd.DataFrame:
    """Display table: the top-N rows, plus every baseline row outside the top-N (always shown)."""
    shown = ranked.head(top)
    baseline = ranked[ranked["is_baseline"].fillna(False).astype(bool) & ~ranked.index.isin(shown.index)]
    shown = pd.concat([shown, baseline])
    table = pd.DataFrame({"rank": shown["rank"], "trial": shown["trial_id"]})
    if ranked["experiment"].nunique() > 1:
        table["experiment"] = shown["experiment"]
    table["arch"] = [arch_label(r) for _, r in shown.iterrows()]
    retries = shown["retries"] if "retries" in shown else [0] * len(shown)  # parquets written before the column
    table["status"] = [
        s + (" (baseline)" if b else "") + (f" (retried {int(n)}x)" if n and n == n else "")
        for s, b, n in zip(shown["status"], shown["is_baseline"].fillna(False), retries)
    ]
    table["epochs"] = [f"{t}/{p}" for t, p in zip(shown["epochs_trained"], shown["epochs_planned"])]
    for metric, label in DISPLAY.items():
        if BEST_PREFIX + metric in shown:  # parquets written before a metric existed (view_kappa) lack its column
            table[label] = shown[BEST_PREFIX + metric]
    for column in params or []:
        table[column.removeprefix(HP_PREFIX)] = shown[column]
    return table.reset_index(drop=True)


def baseline_gain(ranked: pd.DataFrame, by: str = "score") -> list[dict]:
    """Per experiment: the best trial that trained the full budget vs the baseline trial on `by`, both after the
    same `epochs` (each at its best epoch on val). Trials stopped early or failed are left out: their scores come
    from less training, which is not a gain at equal budget. Empty when an experiment has no scored baseline that
    trained the full budget (unknown space, the baseline still running, or a search in which it was stopped)."""
    column = metric_column(by)
    gains = []
    for experiment, group in ranked.groupby("experiment", sort=False):
        full = group[
            group[column].notna()
            & (group["epochs_trained"] >= group["epochs_planned"])
            & ~group["status"].isin(FAILED_STATUSES)
        ]
        baseline = full[full["is_baseline"].fillna(False).astype(bool)]
        if baseline.empty:
            continue
        best, base = full.iloc[0], baseline.iloc[0]
        gain = float(best[column] - base[column])
        gains.append(
            {
                "experiment": experiment,
                "metric": column,
                "epochs": int(base["epochs_trained"]),
                "best_trial": best["trial_id"],
                "best": float(best[column]),
                "baseline_trial": base["trial_id"],
                "baseline": float(base[column]),
                "gain": gain,
                "relative_gain": gain / base[column] if base[column] else math.nan,
            }
        )
    return gains


def architecture_comparison(ranked: pd.DataFrame, by: str = "score") -> pd.DataFrame:
    """One row per architecture/balancer: trials by outcome, best and median `by`, compute spent."""
    column = metric_column(by)
    metric = DISPLAY[column.removeprefix(BEST_PREFIX)]
    frame = ranked.assign(architecture=[arch_label(r) for _, r in ranked.iterrows()])
    out = []
    for label, group in frame.groupby("architecture", sort=True):
        scores = group[column].dropna()
        best = group.loc[scores.idxmax()] if len(scores) else None
        out.append(
            {
                "architecture": label,
                "trials": len(group),
                "finished": int((group["status"] == "TERMINATED").sum()),
                "stopped_early": int((group["status"] == "STOPPED_EARLY").sum()),
                "failed": int(group["status"].isin(FAILED_STATUSES).sum()),
                "unfinished": int(group["status"].isin((*LIVE_STATUSES, INTERRUPTED)).sum()),
                f"best {metric}": scores.max() if len(scores) else None,
                f"median {metric}": scores.median() if len(scores) else None,
                "best trial": best["trial_id"] if best is not None else None,
                "trial-epochs": int(group["epochs_trained"].fillna(0).sum()),
                "compute h": group["wall_time_s"].fillna(0).sum() / 3600,
            }
        )
    return pd.DataFrame(out)


def _is_metric(column: str) -> bool:
    """Scores in [0, 1] get fixed 3 decimals (0.000 is honest for an unlearned mAP); other floats 3 digits."""
    return column in DISPLAY.values() or column.split(" ")[0] in ("best", "median") or column == "importance"


def _cell(value, metric: bool) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if metric else f"{value:.3g}"
    return str(value)


def format_frame(frame: pd.DataFrame, fmt: str = "table") -> str:
    """Render a display table as aligned text, GitHub markdown or CSV."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    metric = [_is_metric(str(c)) for c in frame.columns]
    cells = [[_cell(v, m) for v, m in zip(row, metric)] for row in frame.itertuples(index=False)]
    header = [str(c) for c in frame.columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    if fmt != "table":
        raise ValueError(f"unknown table format {fmt!r}; valid: table, markdown, csv")
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]

    def line(values):  # numbers right-aligned, text left-aligned
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(header), *(line(r) for r in cells)])
