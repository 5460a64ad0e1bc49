"""EchoTune trial leaderboard: which configuration won, by how much over the baseline, which architecture wins,
which hyperparameters mattered. Works on finished, running and interrupted searches.

    python search/leaderboard.py results/gradnorm
    python search/leaderboard.py results/gradnorm --plots results/gradnorm/plots --html results/gradnorm/report.html
    python search/leaderboard.py results/gradnorm results/dual_backbone --top 5 --by map50
    python search/leaderboard.py results/gradnorm --format markdown > leaderboard.md
    python search/leaderboard.py results/gradnorm --write      # also refresh results/gradnorm/leaderboard.parquet

A read command: the table comes from Ray's and Optuna's files and nothing in the experiment folders changes,
unless --write asks to (re)write each experiment's leaderboard.parquet (what the ensemble builder reads; the
search writes it when it ends, so --write is for a search still running or interrupted). --plots and --html
write where they are told. Exit codes: 0 ok; 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echotune.reporting.tables import SHORT_METRICS, TABLE_FORMATS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python search/leaderboard.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("experiments", nargs="+", type=Path, metavar="EXPERIMENT_DIR",
                        help="experiment folders (results/<name>); several are ranked together")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="rows in the table (default 10; the "
                        "baseline row is always added)")
    parser.add_argument("--by", default="score", metavar="METRIC",
                        help=f"rank by this validation metric at each trial's best epoch: {', '.join(SHORT_METRICS)} "
                             f"(default score)")
    parser.add_argument("--format", default="table", choices=TABLE_FORMATS, help="output format (default table)")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write the PNG plots into DIR")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report "
                        "(plots embedded; with no --plots they go to a plots/ folder beside FILE)")
    parser.add_argument("--write", action="store_true",
                        help="(re)write each experiment's leaderboard.parquet (default: read only)")
    parser.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # the old opt-out, now the default
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.write and args.no_write:
        parser.error("--write and --no-write contradict each other")
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if args.by not in SHORT_METRICS and args.by.removeprefix("best/") not in SHORT_METRICS.values():
        parser.error(f"unknown --by {args.by!r}; valid: {', '.join(SHORT_METRICS)}")
    from echotune.search.leaderboard_report import build_report, render_text, write_parquets, write_plots, write_report_html

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731  (stdout stays the table, for pipes)
    try:
        report = build_report(args.experiments, by=args.by, top=args.top)
        if args.write:
            for path in write_parquets(report):
                log(f"wrote {path}")
        print(render_text(report, args.format))
        plots_dir = args.plots or (args.html.parent / "plots" if args.html else None)
        plots = write_plots(report, plots_dir, log) if plots_dir else {}
        if plots:
            log(f"wrote {len(plots)} plots into {plots_dir}: {', '.join(sorted(plots))}")
        if args.html:
            log(f"wrote {write_report_html(report, plots, args.html)}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
