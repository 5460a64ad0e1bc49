"""`python search/leaderboard.py`: `echotune leaderboard` under its name from before `echotune` (issue #17), kept
so that every existing command line works (search/cli/leaderboard.py)."""

from echotune.search.cli.command import script_entry_point

PROG = "python search/leaderboard.py"
build_parser, main = script_entry_point("leaderboard", PROG)

if __name__ == "__main__":
    raise SystemExit(main())
