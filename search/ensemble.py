"""`python search/ensemble.py`: `echotune ensemble` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/ensemble.py)."""

from echotune.search.cli.command import script_entry_point

PROG = "python search/ensemble.py"
build_parser, main = script_entry_point("ensemble", PROG)

if __name__ == "__main__":
    raise SystemExit(main())
