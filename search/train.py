"""`python search/train.py`: `echotune train` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/train.py)."""

from functools import partial

from echotune.search.cli import train as command
from echotune.search.cli.command import run_command, standalone_parser

# benchmarks/vs_ultralytics.py imports --set's parser from here
from echotune.search.cli.train import parse_assignment  # noqa: F401

PROG = "python search/train.py"
build_parser = partial(standalone_parser, command, PROG)
main = partial(run_command, command, PROG)

if __name__ == "__main__":
    raise SystemExit(main())
