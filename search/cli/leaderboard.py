"""Rank a search's trials: which configuration won, by how much over the baseline, which architecture wins, which
hyperparameters mattered. Works on finished, running and interrupted searches.

    echotune leaderboard results/gradnorm
    echotune leaderboard results/gradnorm --plots results/gradnorm/plots --html results/gradnorm/report.html
    echotune leaderboard results/gradnorm results/dual_backbone --top-k 5 --by map50
    echotune leaderboard results/gradnorm --format markdown > leaderboard.md
    echotune leaderboard results/gradnorm --write      # also refresh results/gradnorm/leaderboard.parquet

A read command: the table comes from Ray's and Optuna's files and nothing in the experiment folders changes,
unless --write asks to (re)write each experiment's leaderboard.parquet (what the ensemble builder reads; the
search writes it when it ends, so --write is for a search still running or interrupted). --plots and --html
write where they are told. Exit codes: 0 ok; 2 bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echotune.reporting.tables import SHORT_METRICS, TABLE_FORMATS
from echotune.search.cli.command import EXIT_OK, add_top_k, fail, note


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiments",
        nargs="+",
        type=Path,
        metavar="EXPERIMENT_DIR",
        help="experiment folders (results/<name>); several are ranked together",
    )
    add_top_k(parser, "--top", default=10, help="rows in the table (the baseline row is always added)")
    parser.add_argument(
        "--by",
        default="score",
        metavar="METRIC",
        help=f"rank by this validation metric at each trial's best epoch: {', '.join(SHORT_METRICS)} (default score)",
    )
    parser.add_argument("--format", default="table", choices=TABLE_FORMATS, help="output format (default table)")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write the PNG plots into DIR")
    parser.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write a self-contained HTML report "
        "(plots embedded; with no --plots they go to a plots/ folder beside FILE)",
    )
    parser.add_argument(
        "--write", action="store_true", help="(re)write each experiment's leaderboard.parquet (default: read only)"
    )
    parser.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # the old opt-out, now the default


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.write and args.no_write:
        parser.error("--write and --no-write contradict each other")
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    if args.by not in SHORT_METRICS and args.by.removeprefix("best/") not in SHORT_METRICS.values():
        parser.error(f"unknown --by {args.by!r}; valid: {', '.join(SHORT_METRICS)}")
    from echotune.search.leaderboard_report import (
        build_report,
        render_text,
        write_parquets,
        write_plots,
        write_report_html,
    )

    try:
        report = build_report(args.experiments, by=args.by, top=args.top_k)
        if args.write:
            for path in write_parquets(report):
                note(f"wrote {path}")
        print(render_text(report, args.format))  # stdout is the table alone, for pipes
        plots_dir = args.plots or (args.html.parent / "plots" if args.html else None)
        plots = write_plots(report, plots_dir, note) if plots_dir else {}
        if plots:
            note(f"wrote {len(plots)} plots into {plots_dir}: {', '.join(sorted(plots))}")
        if args.html:
            note(f"wrote {write_report_html(report, plots, args.html)}")
    except (ValueError, OSError) as exc:
        return fail(exc)
    return EXIT_OK
