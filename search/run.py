"""`python search/run.py`: the README's search command from before `echotune` (issue #17), kept so that every
existing command line works: `echotune search`, with --check-data for `echotune check` and --resplit-by-video /
--folds for `echotune resplit` (search/cli/run_script.py).
"""

from echotune.search.cli.run_script import build_parser, main  # noqa: F401 (build_parser: this script's parser)

if __name__ == "__main__":
    raise SystemExit(main())
