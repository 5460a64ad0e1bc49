"""`python search/predict.py`: `echotune predict` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/predict.py)."""

from functools import partial

from echotune.search.cli import predict as command
from echotune.search.cli.command import run_command, standalone_parser

PROG = "python search/predict.py"
build_parser = partial(standalone_parser, command, PROG)
main = partial(run_command, command, PROG)

if __name__ == "__main__":
    raise SystemExit(main())
