"""`python search/export.py`: `echotune export` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/export.py)."""

from echotune.search.cli.command import script_entry_point

PROG = "python search/export.py"
build_parser, main = script_entry_point("export", PROG)

if __name__ == "__main__":
    raise SystemExit(main())
