"""`python search/train.py`: `echotune train` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/train.py)."""

from echotune.search.cli.command import script_entry_point

# benchmarks/vs_ultralytics.py imports --set's parser from here
from echotune.search.cli.train import parse_assignment  # noqa: F401

PROG = "python search/train.py"
build_parser, main = script_entry_point("train", PROG)

if __name__ == "__main__":
    raise SystemExit(main())
