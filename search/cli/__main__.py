"""`python -m echotune.search.cli`: the `echotune` command where the console script is not on PATH."""

from echotune.search.cli import main

raise SystemExit(main())
