"""`python search/leaderboard.py`: `echotune leaderboard` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/leaderboard.py)."""

from functools import partial

from echotune.search.cli import leaderboard as command
from echotune.search.cli.command import run_command, standalone_parser

PROG = "python search/leaderboard.py"
build_parser = partial(standalone_parser, command, PROG)
main = partial(run_command, command, PROG)

if __name__ == "__main__":
    raise SystemExit(main())
