"""`python search/predict.py`: `echotune predict` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/predict.py)."""

from echotune.search.cli.command import script_entry_point

PROG = "python search/predict.py"
build_parser, main = script_entry_point("predict", PROG)

if __name__ == "__main__":
    raise SystemExit(main())
