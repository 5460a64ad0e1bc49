"""The `echotune` command: one entry point with a subcommand per task.

    echotune search      run a hyperparameter search (then the final round, leaderboard, ensemble, report)
    echotune train       train one configuration
    echotune check       check a dataset and print its report
    echotune resplit     re-split a dataset by source video (leak-free splits, a new data.yaml)
    echotune leaderboard rank a search's trials (tables, importance, plots, HTML report)
    echotune ensemble    build an ensemble of a search's best trials
    echotune predict     predict jets and views on images with an ensemble or a checkpoint
    echotune export      export a model to ONNX / TorchScript and check the files against PyTorch

`echotune SUBCOMMAND --help` lists a subcommand's options. The options share one spelling across subcommands
(search/cli/command.py); the scripts search/run.py, train.py, leaderboard.py, ensemble.py, predict.py and
export.py are the same commands under their old names, with their old options.

Only this package parses command lines; the Ray machinery it drives lives beside it in search/ (orchestrate,
tuner, scheduler, pbt, final_round, ...), the training engine in echotune/.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from echotune.search.cli import check, ensemble, export, leaderboard, predict, resplit, search, train
from echotune.search.cli.command import add_command

PROG = "echotune"
# In the order `echotune --help` lists them: a workflow's order.
COMMANDS = {
    "search": search,
    "train": train,
    "check": check,
    "resplit": resplit,
    "leaderboard": leaderboard,
    "ensemble": ensemble,
    "predict": predict,
    "export": export,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EchoTune: hyperparameter search for multi-task echocardiography models "
        "(regurgitation-jet detection + view classification).",
        epilog=f"`{PROG} COMMAND --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {metadata.version('echotune')}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        add_command(commands, name, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`echotune ARGV`; returns the exit code (argparse's usage errors exit with 2 through SystemExit)."""
    args = build_parser().parse_args(argv)
    return args.run(args, args.parser)
