"""Check a dataset: print the data report (images, source videos, boxes and views per split, leakage, every problem
with file, line and value) and exit.

    echotune check --data DATA/data.yaml
    echotune check --data DATA/data.yaml --strict --max-problems 0
    echotune check --data DATA/data.yaml --video-id-pattern '^(?P<video>.+)_f\\d+'

Every search, training and ensemble runs the same check first and refuses bad data. Here leaky splits (a source
video with frames in more than one split) are a warning; fix them with `echotune resplit`.
Exit codes: 0 the data is usable (maybe with warnings); 2 it is not (errors), or bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echotune.data.check import CheckedDataset, check_dataset
from echotune.data.check_report import format_report
from echotune.data.prepare import resolve_data_yaml
from echotune.data.problems import DataError
from echotune.search.cli.command import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    add_cache_dir,
    add_data,
    add_max_problems,
    add_strict,
    add_video_id_pattern,
    fail,
    note,
)


def add_arguments(parser) -> None:
    """The data check's options (a parser or an argument group): search and resplit run the check first too."""
    add_data(parser)
    add_cache_dir(parser)
    add_strict(parser)
    add_max_problems(parser)
    add_video_id_pattern(parser)


def validate_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_problems < 0:
        parser.error(f"--max-problems must be >= 0, got {args.max_problems}")


def load_dataset(
    data: str | None, cache_dir: Path | None, strict: bool, video_id_pattern: str | None
) -> CheckedDataset:
    """--data (else the synthetic set, generated on first use), checked; DataError for an unusable data.yaml."""
    return check_dataset(resolve_data_yaml(data, cache_dir, log=note), strict=strict, video_id_pattern=video_id_pattern)


def load_usable_dataset(args: argparse.Namespace, video_id_pattern: str | None) -> CheckedDataset | int:
    """The dataset the check's options name, checked (check, resplit and search start with it); when it is not
    usable, the bad-input exit code instead, after printing why (the DataError, or the data report's problems)."""
    try:
        check = load_dataset(args.data, args.cache_dir, args.strict, video_id_pattern)
    except DataError as exc:
        return fail(exc)
    if not check.ok:
        print(format_report(check, args.max_problems))
        return EXIT_BAD_INPUT
    return check


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    validate_arguments(parser, args)
    check = load_usable_dataset(args, args.video_id_pattern)
    if isinstance(check, int):
        return check
    print(format_report(check, args.max_problems))
    return EXIT_OK
