"""Assemble the leaderboard report of one or more experiments: tables, importance, Pareto front, plots, HTML.

report = build_report(["results/gradnorm"], by="score", top=10)
print(render_text(report, "table"))
plots = write_plots(report, "results/gradnorm/plots")
write_report_html(report, plots, "results/gradnorm/report.html")
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from echotune.data.leakage import flag_text
from echotune.metrics import METRIC_LABELS, Estimate
from echotune.reporting import plots as figures
from echotune.reporting.held_out import held_out_frames, held_out_notes, read_held_out
from echotune.reporting.html_page import Section, write_html
from echotune.reporting.lineage import ARROW, lineage_lines
from echotune.reporting.tables import (
    architecture_comparison,
    baseline_gain,
    format_frame,
    leaderboard_frame,
    metric_column,
    rank,
    top_table,
    varying_params,
)
from echotune.results.layout import BEST_PREFIX, ENSEMBLE_DIR, HP_PREFIX, LEADERBOARD_FILE, METRICS_FILE
from echotune.results.leaderboard import write_leaderboard
from echotune.search.experiment import Experiment, load_experiment
from echotune.search.importance import Importance, importances, pareto_front

TOP_CURVES = 5  # trials drawn in the learning-curve and GradNorm-weight plots


@dataclass
class LeaderboardReport:
    experiments: list[Experiment]
    by: str  # leaderboard column, e.g. best/val/score
    ranked: pd.DataFrame
    table: pd.DataFrame
    gains: list[dict]
    architectures: pd.DataFrame
    importances: list[Importance]
    pareto: pd.DataFrame | None
    params: list[str]  # hp/* columns that vary, most important first
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return "EchoTune leaderboard: " + ", ".join(e.name for e in self.experiments)


def build_report(paths: list[str | Path], by: str = "score", top: int = 10) -> LeaderboardReport:
    """Load every experiment (ValueError naming a bad path before anything is computed) and rank them together."""
    column = metric_column(by)
    experiments = [load_experiment(p) for p in paths]
    names = Counter(e.name for e in experiments)
    if any(n > 1 for n in names.values()):
        raise ValueError(
            f"two experiment folders share a name ({[k for k, n in names.items() if n > 1]}); their "
            f"trials would be confused"
        )
    notes = [n for e in experiments for n in e.notes]
    found: list[Importance] = []
    pareto = None
    if len(experiments) == 1 and experiments[0].study is not None:
        exp = experiments[0]
        found, more = importances(exp.study, exp.objectives)
        notes += more
        if len(exp.objectives) > 1:
            pareto = pareto_front(exp.study, exp.objectives)
    elif len(experiments) > 1:
        notes.append("importance and Pareto front are per study: run the leaderboard on one experiment for them")
    ranked = rank(leaderboard_frame([r for e in experiments for r in e.rows]), by)
    order = list(found[0].values) if found else []
    params = varying_params(ranked, order, limit=6)
    return LeaderboardReport(
        experiments,
        column,
        ranked,
        top_table(ranked, by, top, params),
        baseline_gain(ranked, by),
        architecture_comparison(ranked, by),
        found,
        pareto,
        varying_params(ranked, order, limit=10),
        notes,
    )


def write_parquets(report: LeaderboardReport) -> list[Path]:
    """(Re)write each experiment's leaderboard.parquet from what was just read."""
    return [write_leaderboard(e.rows, e.path / LEADERBOARD_FILE) for e in report.experiments]


def leaky_lines(report: LeaderboardReport) -> list[str]:
    """One warning per experiment that ran on leaky splits (its search.json's flag), for the top of every output."""
    flagged = [e for e in report.experiments if e.leaky_splits]
    return [flag_text(e.leaky_splits) + (f" [{e.name}]" if len(report.experiments) > 1 else "") for e in flagged]


def _status_counts(report: LeaderboardReport) -> str:
    counts = report.ranked["status"].value_counts()
    return ", ".join(f"{n} {s.lower().replace('_', ' ')}" for s, n in counts.items())


def _gain_lines(report: LeaderboardReport) -> list[str]:
    lines = []
    for g in report.gains:
        relative = f" ({g['relative_gain']:+.0%})" if math.isfinite(g["relative_gain"]) else ""
        lines.append(
            f"{g['experiment']}: best trial {g['best_trial']} {g['best']:.4f} vs the original study's baseline "
            f"(trial {g['baseline_trial']}) {g['baseline']:.4f}: gain {g['gain']:+.4f}{relative}, both after "
            f"{g['epochs']} epochs, on val (the selection split: optimistic for the best)"
        )
    return lines or ["no baseline trial that trained every epoch: gain over the baseline not available"]


def ensemble_frame(experiment: Experiment) -> pd.DataFrame | None:
    """Best single member vs the ensemble (and the gain) from results/<name>/ensemble/metrics.json, if built."""
    path = experiment.path / ENSEMBLE_DIR / METRICS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        split, single, ensemble = doc["split"], doc["best_single"], doc["ensemble"]["metrics"]
        rows = [
            (f"best single ({single['trial_id']})", single["metrics"]),
            (f"ensemble (k={len(doc['members'])})", ensemble),
            ("gain", doc["gain"]),
        ]
        return pd.DataFrame(
            [
                {
                    "experiment": experiment.name,
                    "split": split,
                    "model": name,
                    **{label: values[f"{split}/{key}"] for key, label in METRIC_LABELS},
                }
                for name, values in rows
            ]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an ensemble metrics file of this EchoTune version ({exc!r})") from exc


def ensembles(report: LeaderboardReport) -> pd.DataFrame | None:
    """Read at render time, so a report built before the ensemble (run.py) still shows it."""
    frames = [f for f in (ensemble_frame(e) for e in report.experiments) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def ensemble_ci_lines(experiment: Experiment) -> list[str]:
    """The ensemble's 95 % intervals (bootstrap over source videos; the gain paired) from its metrics.json."""
    path = experiment.path / ENSEMBLE_DIR / METRICS_FILE
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if "ci95" not in doc:
        return []
    lines = [f"95 % CIs on {doc['split']} (bootstrap over source videos; the gain paired):"]
    for key, label in METRIC_LABELS:
        cells = [
            f"{name} {Estimate(**doc['ci95'][name][key]):{'+.3f' if name == 'gain' else '.3f'}}"
            for name in ("best_single", "ensemble", "gain")
        ]
        lines.append(f"  {label}: " + ", ".join(cells))
    return lines


def held_out(report: LeaderboardReport) -> list[tuple[Experiment, dict]]:
    """Each experiment's held_out.json (the best trial and the baseline on val and test), read at render time."""
    return [(e, doc) for e in report.experiments if (doc := read_held_out(e.path)) is not None]


def _importance_frame(item: Importance) -> pd.DataFrame:
    return pd.DataFrame({"parameter": list(item.values), "importance": list(item.values.values())})


def render_text(report: LeaderboardReport, fmt: str = "table") -> str:
    """The whole report as aligned text, markdown, CSV (top table only) or JSON."""
    if fmt == "csv":
        return format_frame(report.table, "csv")
    if fmt == "json":
        return json.dumps(_as_json(report), indent=2, default=str)
    heading = (lambda t: f"\n### {t}\n") if fmt == "markdown" else (lambda t: f"\n{t}:")
    parts = [
        *leaky_lines(report),
        f"{report.title} ({len(report.ranked)} trials: {_status_counts(report)}), ranked by {report.by}",
        format_frame(report.table, fmt),
        heading("Best vs baseline"),
        *_gain_lines(report),
        heading("Per architecture (all trials)"),
        format_frame(report.architectures, fmt),
    ]
    if lineage := lineage_lines(report.ranked):  # a PBT search: who continued from whom, the schedules they ended with
        parts += [
            heading(
                f"PBT lineage (epoch{ARROW}donor: continued from that member's checkpoint; then the "
                f"per-stage schedule each member ended with)"
            ),
            *lineage,
        ]
    for experiment, doc in held_out(report):
        parts += [heading(f"{experiment.name}: best trial and baseline on held-out data"), *held_out_notes(doc)]
        for caption, frame in held_out_frames(doc):
            parts += [f"{caption}:", format_frame(frame, fmt)]
    ensemble = ensembles(report)
    if ensemble is not None:
        parts += [
            heading("Ensemble of the top trials vs the best single trial (held-out split)"),
            format_frame(ensemble, fmt),
            *(line for e in report.experiments for line in ensemble_ci_lines(e)),
        ]
    for item in report.importances:
        parts += [
            heading(
                f"Hyperparameter importance for {item.objective} ({item.evaluator} over "
                f"{item.n_trials} completed trials)"
            ),
            format_frame(_importance_frame(item).head(10), fmt),
        ]
    if report.pareto is not None:
        parts += [heading("Pareto front"), format_frame(report.pareto[report.pareto["pareto"]], fmt)]
    if report.notes:
        parts += [heading("Notes"), *(f"- {n}" for n in report.notes)]
    return "\n".join(parts)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _as_json(report: LeaderboardReport) -> dict:
    return {
        "experiments": [str(e.path) for e in report.experiments],
        "ranked_by": report.by,
        "leaky_splits": {e.name: e.leaky_splits for e in report.experiments if e.leaky_splits},
        "top": _records(report.table),
        "baseline_gain": report.gains,
        "architectures": _records(report.architectures),
        "ensemble": _records(ensembles(report)) if ensembles(report) is not None else None,
        "held_out": {e.name: doc for e, doc in held_out(report)},
        "importance": [vars(i) for i in report.importances],
        "pareto": _records(report.pareto) if report.pareto is not None else None,
        "notes": report.notes,
    }


def figure_builders(report: LeaderboardReport) -> dict:
    """name -> zero-argument figure builder; each may raise ValueError when it has nothing to draw."""
    history = pd.concat([e.history for e in report.experiments], ignore_index=True)
    scored = report.ranked[report.ranked[report.by].notna()]
    top_ids = list(scored["trial_id"].head(TOP_CURVES))
    gradnorm_ids = list(scored[scored.get(HP_PREFIX + "balance") == "gradnorm"]["trial_id"].head(TOP_CURVES))
    baseline = report.gains[0]["baseline"] if report.gains else None
    metric = report.by.removeprefix(BEST_PREFIX)
    plan = {
        "best_so_far": lambda: figures.best_so_far_figure(history, baseline, metric),
        "learning_curves": lambda: figures.learning_curves_figure(history, top_ids, metric),
        "gradnorm_weights": lambda: figures.gradnorm_weights_figure(history, gradnorm_ids),
        "parallel_coordinates": lambda: figures.parallel_coordinates_figure(report.ranked, report.params, report.by),
    }
    for item in report.importances:
        suffix = "" if len(report.importances) == 1 else "_" + item.objective.replace("/", "_")
        plan[f"importance{suffix}"] = lambda i=item: figures.importance_figure(
            i.values, f"Importance for {i.objective} ({i.evaluator}, {i.n_trials} completed trials)"
        )
    if report.pareto is not None:
        x, y = report.experiments[0].objectives[:2]
        plan["pareto_front"] = lambda: figures.pareto_figure(report.pareto, x, y)
    return plan


def write_plots(report: LeaderboardReport, out_dir: str | Path, log=print) -> dict[str, Path]:
    """Every plot that has data, as out_dir/<name>.png; the skipped ones are logged with the reason."""
    written = {}
    for name, build in figure_builders(report).items():
        try:
            figure = build()
        except ValueError as exc:
            log(f"plot {name} skipped: {exc}")
            continue
        written[name] = figures.save_figure(figure, Path(out_dir) / f"{name}.png")
    return written


def write_report_html(report: LeaderboardReport, plots: dict[str, Path], path: str | Path) -> Path:
    """One self-contained page: the tables, the gain, importance, and every plot embedded."""
    image = lambda name, caption: [(caption, plots[name])] if name in plots else []  # noqa: E731
    ensemble = ensembles(report)
    sections = [
        Section(
            "Top trials",
            text="\n".join(_gain_lines(report)),
            tables=[(f"ranked by {report.by}", report.table)],
            images=image("best_so_far", "Best score so far against compute"),
        ),
        Section("Per architecture", tables=[("all trials", report.architectures)]),
        *[
            Section(
                f"Held-out evaluation ({e.name})", text="\n\n".join(held_out_notes(doc)), tables=held_out_frames(doc)
            )
            for e, doc in held_out(report)
        ],
        *(
            [
                Section(
                    "Ensemble",
                    text="\n\n".join(
                        ["Top trials fused (tuned on val only) vs the best single trial, on a held-out split"]
                        + [line for e in report.experiments for line in ensemble_ci_lines(e)]
                    ),
                    tables=[("best single vs ensemble", ensemble)],
                )
            ]
            if ensemble is not None
            else []
        ),
        Section(
            "Training curves",
            images=image("learning_curves", "Top trials")
            + image("gradnorm_weights", "GradNorm task weights of the top GradNorm trials"),
        ),
        Section(
            "Hyperparameters",
            text="\n".join(report.notes),
            tables=[
                (f"{i.objective}: {i.evaluator} over {i.n_trials} completed trials", _importance_frame(i))
                for i in report.importances
            ],
            images=image("parallel_coordinates", "All scored trials")
            + [(f"Importance ({n})", p) for n, p in plots.items() if n.startswith("importance")],
        ),
    ]
    if report.pareto is not None:
        sections.append(
            Section(
                "Pareto front",
                tables=[("completed trials", report.pareto)],
                images=image("pareto_front", "Pareto front"),
            )
        )
    subtitle = f"{len(report.ranked)} trials: {_status_counts(report)}"
    return write_html(path, report.title, subtitle, sections, banner="\n".join(leaky_lines(report)))
