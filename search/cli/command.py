"""What every `echotune` subcommand shares: exit codes, its parser, the option names, error and log lines.

One spelling per concept across the subcommands (`--data`, `--epochs`, `--img-size`, `--batch-size`, `--device`,
`--seed`, `--name`, `--out`, `--top-k`, `--cache-dir`, `--video-id-pattern`, `--allow-leaky-splits`, `--strict`,
`--resume`), each defined once here. The spellings of the scripts before `echotune` stay accepted as aliases
(`--max-epochs`, `--cpus-per-trial`, `--ensemble-top-k`, `--top`, ...), so no existing command line breaks;
`--imgsz` is what Ultralytics users type.

A subcommand module has a docstring (first paragraph: the summary; the rest: the help's epilog),
`add_arguments(parser)` and `run(args, parser) -> int`; `echotune` (search/cli/__init__.py) and the old scripts
(search/*.py) both build their parsers from those.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from functools import partial
from pathlib import Path

from echotune.data.config import compile_video_id_pattern
from echotune.data.prepare import default_cache_dir

# 2 is also argparse's exit code for a usage error, so "bad input" is one code whatever found it.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # EXIT_FAILED: it ran, the result failed (diverged, mismatched)

# `--resume` with no value: continue the run this command line names (--name / --out); with a value, that one.
RESUME_NAMED = True


# ---------------------------------------------------------------- parsers
def summary(doc: str) -> str:
    """A module docstring's first paragraph: the one-line description of its command."""
    return doc.split("\n\n")[0]


def epilog(doc: str) -> str:
    """The rest of a module docstring: examples and exit codes, shown under the options."""
    return doc.split("\n\n", 1)[1] if "\n\n" in doc else ""


def command_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A stand-alone parser for one command (an old script, or a subcommand called on its own)."""
    return argparse.ArgumentParser(
        prog=prog, description=summary(doc), epilog=epilog(doc), formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_command(subparsers, name: str, module) -> argparse.ArgumentParser:
    """`echotune NAME`: the subcommand's parser from its module's docstring and add_arguments; parsing it sets
    args.run to the module's run."""
    parser = subparsers.add_parser(
        name,
        help=summary(module.__doc__),
        description=summary(module.__doc__),
        epilog=epilog(module.__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.set_defaults(run=module.run, parser=parser)
    return parser


def standalone_parser(module, prog: str) -> argparse.ArgumentParser:
    """A subcommand's parser on its own, named `prog` (an old script: `python search/train.py`)."""
    parser = command_parser(prog, module.__doc__)
    module.add_arguments(parser)
    return parser


def run_command(module, prog: str, argv: list[str] | None = None) -> int:
    """Parse `argv` with the module's options under `prog` and run it: an old script's main."""
    parser = standalone_parser(module, prog)
    return module.run(parser.parse_args(argv), parser)


def script_entry_point(command_name: str, prog: str):
    """An old script's (build_parser, main): `echotune COMMAND_NAME` (search/cli/COMMAND_NAME.py) under `prog`
    (`python search/train.py`); build_parser() -> its parser, main(argv=None) -> its exit code."""
    module = importlib.import_module(f"echotune.search.cli.{command_name}")
    return partial(standalone_parser, module, prog), partial(run_command, module, prog)


# ---------------------------------------------------------------- defaults from the code they configure
def field_defaults(cls) -> dict:
    """{field: default} of a dataclass (default factories called): a CLI's defaults are the config's own."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def parameter_defaults(function) -> dict:
    """{parameter: default} of a function's keyword parameters: a CLI's defaults are the function's own."""
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# ---------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 (0 = off), got {text}")
    return value


def regex(text: str) -> str:
    try:
        compile_video_id_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; got {text!r}") from None
    return text


# ---------------------------------------------------------------- the shared options
def add_data(parser, help: str = "data.yaml (default: the embedded synthetic echo set, generated on first use)"):
    parser.add_argument("--data", metavar="DATA_YAML", help=help)


def add_cache_dir(parser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the synthetic set is cached (default: $ECHOTUNE_CACHE or {default_cache_dir()})",
    )


def add_strict(parser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="images without a view line (or without a label file) are errors, not warnings",
    )


def add_max_problems(parser) -> None:
    parser.add_argument(
        "--max-problems",
        type=int,
        default=25,
        metavar="N",
        help="problems listed per kind in the data report (0 = all; counts are always complete)",
    )


def add_video_id_pattern(
    parser,
    default_help: str = "data.yaml's video_id_pattern, else the built-in names "
    "<video>.mp4-<frame>.png and Roboflow's <video>_mp4-<frame>_png.rf.<hash>.jpg",
) -> None:
    parser.add_argument(
        "--video-id-pattern",
        type=regex,
        metavar="REGEX",
        help="source-video id of a frame for this command, replacing data.yaml's video_id_pattern: "
        "re.search on the file name, the group named video, else group 1, else the whole "
        f"match (default: {default_help})",
    )


def add_allow_leaky_splits(parser, what: str) -> None:
    parser.add_argument(
        "--allow-leaky-splits",
        action="store_true",
        help=f"{what} even though a source video has frames in more than one split (refused by "
        "default: the scores would be optimistic); the results are flagged as leaky",
    )


def add_seed(parser, default: int | None, help: str = "random seed") -> None:
    parser.add_argument(
        "--seed", type=int, default=default, help=help if default is None else f"{help} (default {default})"
    )


def add_device(parser, default: str | None = "auto") -> None:
    parser.add_argument("--device", default=default, help=f"auto, cpu, cuda or cuda:N (default {default or 'auto'})")


def add_img_size(parser, help: str, type=int) -> None:
    parser.add_argument("--img-size", "--imgsz", dest="img_size", type=type, metavar="PX", help=help)


def add_epochs(parser, *aliases: str, type, default, help: str, dest: str = "epochs") -> None:
    parser.add_argument("--epochs", *aliases, dest=dest, type=type, default=default, metavar="N", help=help)


def add_batch_size(parser, help: str) -> None:
    parser.add_argument("--batch-size", type=int, metavar="N", help=help)


def add_name(parser, help: str) -> None:
    parser.add_argument("--name", help=help)


def add_out(parser, *aliases: str, help: str, default: Path | None = None) -> None:
    parser.add_argument("--out", *aliases, dest="out", type=Path, default=default, metavar="DIR", help=help)


def add_top_k(parser, *aliases: str, default: int, help: str) -> None:
    parser.add_argument(
        "--top-k", *aliases, dest="top_k", type=int, default=default, metavar="K", help=f"{help} (default {default})"
    )


def add_resume(parser, named: str, given: str, metavar: str) -> None:
    """`--resume` [PATH]: alone, continue the run this command line names (`named`); with PATH, that run."""
    parser.add_argument(
        "--resume",
        nargs="?",
        const=RESUME_NAMED,
        default=None,
        metavar=metavar,
        help=f"continue an interrupted run: alone, {named}; with {metavar}, {given}",
    )


# ---------------------------------------------------------------- what a command prints
def note(message: str) -> None:
    """A progress or diagnostic line on stderr (stdout stays the command's result, for pipes)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: object) -> int:
    """Print `error: MESSAGE` on stderr; the bad-input exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def cannot_write(what: object, exc: OSError) -> int:
    """A write that failed (a full disk, a read-only folder), naming what was being written and the file."""
    where = f" ({exc.filename})" if exc.filename else ""  # a write into an open file names none
    return fail(f"cannot write {what}: {exc.strerror or exc}{where}")
