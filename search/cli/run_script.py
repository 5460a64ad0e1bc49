"""`python search/run.py`: the search, the data check and the re-split in one command line, as before `echotune`.

    python search/run.py --space gradnorm                       # = echotune search --space gradnorm
    python search/run.py --data DATA/data.yaml --check-data     # = echotune check --data DATA/data.yaml
    python search/run.py --data DATA/data.yaml --resplit-by-video --ratios 0.7,0.15,0.15 --seed 0
    python search/run.py --data DATA/data.yaml --folds 5 --fold 0       # = echotune resplit ... --folds 5 --fold 0

Every option of `echotune search`, plus --check-data (then `echotune check`) and --resplit-by-video / --folds
(then `echotune resplit`, with --split-out for its --out). See `echotune search --help` for the options.

Exit codes: 0 success (data usable, maybe with warnings); 2 bad input (the data check or arguments failed,
leaky splits were not allowed, the results folder cannot be written, or no node of the Ray cluster can run a
trial).
"""

from __future__ import annotations

import argparse

from echotune.search.cli import check, resplit, search
from echotune.search.cli.command import command_parser

PROG = "python search/run.py"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, __doc__)
    search.add_arguments(parser)
    split = parser.add_argument_group(
        "instead of a search: the data check, or a leak-free re-split (a new data.yaml; no image is copied)"
    )
    split.add_argument("--check-data", action="store_true", help="validate the dataset, print the report, exit")
    split.add_argument(
        "--resplit-by-video",
        action="store_true",
        help="pool all splits and re-split them so no source video is in two splits",
    )
    resplit.add_split_arguments(split)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_data:
        return check.run(args, parser)
    if args.resplit_by_video or args.folds is not None:
        return resplit.run(args, parser)
    return search.run(args, parser)
