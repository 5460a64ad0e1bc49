"""The command lines, run in-process: exit codes, messages, files written.

Each command is reachable two ways, both tested: `echotune COMMAND` (echotune.search.cli.main) and the script it
was before (issue #17: search/run.py for search, check and resplit; search/train.py, ...), loaded from its file as
`python search/X.py` runs it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.data.export_fixture import default_frames, leaky_export, make_export

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    """search/NAME.py loaded from its file (the old script: `python search/NAME.py` imports it the same way)."""
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "search" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# echotune COMMAND -> the old script that ran it, and what that script needed to run it (run.py did three things)
SCRIPTS = {
    "search": "run",
    "check": "run",
    "resplit": "run",
    "train": "train",
    "leaderboard": "leaderboard",
    "ensemble": "ensemble",
    "predict": "predict",
    "export": "export",
}
SCRIPT_MODES = {"check": ["--check-data"], "resplit": ["--resplit-by-video"]}
INVOCATIONS = ("echotune", "script")


def command(name: str, how: str):
    """`echotune NAME ARGV` (how="echotune") or the old script's main(ARGV) (how="script"), in-process:
    a function ARGV -> exit code (argparse's usage errors raise SystemExit(2))."""
    if how == "echotune":
        from echotune.search.cli import main

        return lambda argv: main([name, *map(str, argv)])
    script = load(SCRIPTS[name])
    return lambda argv: script.main([*map(str, argv), *SCRIPT_MODES.get(name, [])])


def train_argv(data, out, *more) -> list[str]:
    """The smallest `train` command line: the test-scale detector at 64 px, on DATA, into OUT; then MORE (the
    tests' own options, --epochs among them)."""
    return ["--data", str(data), "--scale", "test", "--img-size", "64", "--out", str(out), *map(str, more)]


def prog(name: str, how: str) -> str:
    """What the command's usage errors start with."""
    return f"echotune {name}" if how == "echotune" else f"python search/{SCRIPTS[name]}.py"


@pytest.fixture(params=INVOCATIONS)
def how(request) -> str:
    return request.param


def test_check_data_exit_codes_and_report(how, tmp_path, capsys):
    check = command("check", how)
    assert check(["--data", leaky_export(tmp_path / "good")]) == 0  # leaky: a warning
    out = capsys.readouterr().out
    assert "Leakage: 1 of 4 source videos" in out and "WARNING [leakage] x1" in out
    assert out.splitlines()[-1] == (
        "USABLE: 0 errors, 1 warning(s) (leaky splits: a search, train.py and "
        "ensemble.py refuse them unless given --allow-leaky-splits)."
    )
    frames = default_frames()
    frames["train"]["vidE.mp4-1"] = "7 0.5 0.5 0.2 0.2\n\n0 1 0\n"
    bad = make_export(tmp_path / "bad", frames=frames)
    assert check(["--data", bad]) == 2
    out = capsys.readouterr().out
    assert "vidE.mp4-1.txt:1: class id 7 >= nc=4" in out and "NOT USABLE: 1 error(s)" in out


def test_search_refuses_bad_data_before_anything_runs(how, tmp_path, capsys):
    frames = default_frames()
    frames["valid"]["vidC.mp4-1"] = "1 0.6 0.6 0.2 0.2\n\n0 1 1\n"
    assert command("search", how)(["--data", make_export(tmp_path, frames=frames)]) == 2
    assert "view line is not one-hot" in capsys.readouterr().out


def test_missing_yaml_and_strict(how, tmp_path, capsys):
    check = command("check", how)
    assert check(["--data", tmp_path / "nope.yaml"]) == 2
    assert "data.yaml not found" in capsys.readouterr().err
    frames = default_frames()
    frames["train"]["vidG.mp4-1"] = "0 0.5 0.5 0.2 0.2\n"
    yaml_path = make_export(tmp_path / "d", frames=frames)
    assert check(["--data", yaml_path]) == 0
    assert check(["--data", yaml_path, "--strict"]) == 2
    assert "no view line: an error under --strict" in capsys.readouterr().out


def test_resplit_writes_a_leak_free_dataset(how, tmp_path, capsys):
    yaml_path = leaky_export(tmp_path)
    out = tmp_path / "split"
    out_option = "--out" if how == "echotune" else "--split-out"  # both spellings work in both
    assert command("resplit", how)(["--data", yaml_path, "--ratios", "0.5,0.25,0.25", out_option, out]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert command("check", how)(["--data", out / "data.yaml"]) == 0
    assert "Leakage: none" in capsys.readouterr().out


def test_train_cli_trains_and_writes_metrics(tiny_synthetic, tmp_path, capsys):
    train = load("train")
    out = tmp_path / "run"
    code = train.main(
        train_argv(
            tiny_synthetic.config.yaml_path, out, "--epochs", "1,1,1", "--batch-size", "8", "--set", "loss_box=giou"
        )
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch   3/3 stage 3" in printed and "Best epoch" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"best_val", "test", "wall_s", "best_checkpoint", "held_out"} <= set(metrics)
    held = metrics["held_out"]
    # the final report: every metric on val and test with its 95 % interval, P/R/F1 at the val-chosen confidence
    assert f"P/R/F1 at confidence {held['conf']:.3f} (chosen on val, applied unchanged to test)" in printed
    assert held["conf"] == metrics["best_val"]["val/conf"] == metrics["test"]["test/conf"]
    score = held["ci95"]["test"]["score"]
    assert score["low"] <= score["value"] == metrics["test"]["test/score"] <= score["high"]
    row = next(line.split() for line in printed.splitlines() if line.split()[:1] == ["score"])
    assert row[-3:] == [f"{score['value']:.3f}", f"[{score['low']:.3f},", f"{score['high']:.3f}]"]
    assert "Per class (test):\n  class" in printed and set(held["per_class"]["test"]) <= set(
        tiny_synthetic.config.names
    )
    assert json.loads((out / "run.json").read_text())["config"]["loss_box"] == "giou"
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "3,x,2"], "expected a total like 10"),
        (["--set", "lr_stage9=1"], "unknown config key(s) ['lr_stage9']"),
        (["--set", "loss_view=dice"], "loss_view='dice' is not valid"),
        (["--arch", "dual", "--balance", "gradnorm"], "balance=gradnorm needs a shared layer"),
        (["--img-size", "100"], "img_size must be a multiple of 32"),
    ],
)
def test_train_rejects_bad_arguments(argv, message, how, capsys):
    with pytest.raises(SystemExit) as info:
        command("train", how)(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and f"{prog('train', how)}: error:" in err


def test_baseline_preset_is_the_original_configuration():
    from echotune.engine import TrainConfig
    from echotune.search.cli import train

    cfg = train.config_from_args(load("train").build_parser().parse_args(["--preset", "baseline"]))
    assert (cfg.model_scale, cfg.img_size, cfg.gn_alpha, cfg.batch_size, cfg.epochs) == ("s", 640, 1.5, 8, 100)
    assert (cfg.lr_stage1, cfg.lr_stage2, cfg.lr_stage3) == (1e-2, 1e-3, 1e-4)
    assert cfg.stage_split == (0.3, 0.5, 0.2) and cfg.aug_policy == "none" and cfg.mixup_alpha == 0.0
    # The preset is spaces/original.py's configuration now; it trains exactly what train.py's own copy of the
    # published values (the preset before issue #17) trained: the keys it adds hold TrainConfig's defaults.
    published = {
        "arch": "shared",
        "model_scale": "s",
        "img_size": 640,
        "balance": "gradnorm",
        "gn_alpha": 1.5,
        "lr_stage1": 1e-2,
        "lr_stage2": 1e-3,
        "lr_stage3": 1e-4,
        "epochs": 100,
        "stage_split": (0.3, 0.5, 0.2),
        "batch_size": 8,
        "aug_policy": "none",
        "aug_strength_stage1": 0.0,
        "aug_strength_stage2": 0.0,
        "aug_strength_stage3": 0.0,
        "mixup_alpha": 0.0,
        "view_level": "P3",
        "loss_box": "ciou",
        "loss_obj": "bce",
        "loss_cls": "bce",
        "loss_view": "ce",
    }
    assert cfg == TrainConfig.from_dict(published)


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("resplit", ["--ratios", "0.7,0.3"], "expected three non-negative numbers"),
        ("resplit", ["--ratios", "a,b,c"], "expected three numbers"),
        ("check", ["--max-problems", "-1"], "--max-problems must be >= 0"),
        ("search", ["--max-problems", "-1"], "--max-problems must be >= 0"),
        ("resplit", ["--folds", "3", "--fold", "5"], "--fold must be in 0..2"),
        (
            "search",
            ["--space", "nope"],
            "space='nope' is not valid; choose one of: all, baseline, dual_backbone, gradnorm",
        ),
        (
            "search",
            ["--objectives", "score,auc"],
            "objectives=['auc'] is not valid; choose one or more of: score, map50",
        ),
        ("search", ["--gpus-per-trial", "-1"], "gpus_per_trial must be >= 0"),
        ("search", ["--gpus", "1.5"], "gpus_per_trial above 1 must be a whole number"),
        ("search", ["--cpus-per-trial", "0"], "cpus_per_trial must be > 0"),
        ("search", ["--max-epochs", "2"], "max_epochs must be >= 3"),
        ("search", ["--epochs", "2"], "max_epochs must be >= 3"),
        ("search", ["--max-epochs", "-4"], "expected a positive integer, got -4"),
        ("search", ["--num-samples", "0"], "expected a positive integer, got 0"),
        ("search", ["--img-size", "100"], "img_size must be a multiple of 32"),
        ("search", ["--imgsz", "100"], "img_size must be a multiple of 32"),
        ("search", ["--time-budget-s", "0"], "time_budget_s must be > 0"),
        ("search", ["--ensemble-top-k", "-1"], "--top-k must be >= 0"),
        ("search", ["--profile", "huge"], "invalid choice: 'huge'"),
        (
            "search",
            ["--dashboard", "--address", "auto"],
            "--dashboard starts the dashboard of a local Ray; a cluster has its own",
        ),
        (
            "search",
            ["--resume", "results/a", "--name", "b"],
            "--resume results/a is the experiment 'a', but --name says 'b'",
        ),
        (
            "search",
            ["--pbt-interval", "stages"],
            "--pbt-interval is for --scheduler pbt (this search's scheduler: asha)",
        ),
    ],
)
def test_run_rejects_bad_values_before_anything_starts(name, argv, message, how, capsys):
    with pytest.raises(SystemExit) as info:
        command(name, how)(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and f"{prog(name, how)}: error:" in err


@pytest.mark.parametrize("resume", ["--resume", "--resume={storage}/x"])
def test_search_refuses_to_overwrite_or_resume_nothing(resume, how, tiny_synthetic, tmp_path, capsys):
    search = command("search", how)
    common = ["--data", tiny_synthetic.config.yaml_path, "--storage", tmp_path, "--name", "x"]
    assert search(common + [resume.format(storage=tmp_path)]) == 2
    assert f"--resume: no experiment at {tmp_path / 'x'}" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    assert search(common) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err


# ---------------------------------------------------------------- source-video ids and the leakage guard
def leak_lines(data_yaml) -> list[str]:
    """The refusal of the leaky export (vidA: train 2, val 1), as every command prints it."""
    data_yaml = Path(data_yaml).resolve()
    return [
        f"error: {data_yaml}: leaky splits: 1 of 4 source videos have frames in more than one split (3 frames): "
        f"train+val 1, train+test 0, val+test 0, all three 0. Scores on these splits are optimistic (the model "
        f"is evaluated on frames of videos it trained on).",
        "  vidA: train 2, val 1",
        f"Fix: echotune resplit --data {data_yaml} (or --folds K --fold I for grouped "
        f"K-fold) writes leak-free splits and a new data.yaml; use that one.",
        "Or pass --allow-leaky-splits to go on knowingly: the results are flagged as leaky.",
    ]


def test_search_refuses_leaky_splits_before_ray_starts(how, tmp_path, capsys):
    data_yaml, storage = leaky_export(tmp_path), tmp_path / "results"
    assert command("search", how)(["--data", data_yaml, "--storage", storage]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-4:] == leak_lines(data_yaml)
    assert "Search '" not in captured.out  # refused before the search (and Ray) started
    assert not storage.exists()


def test_resplit_refuses_names_without_a_video_id(how, tmp_path, capsys):
    frames = default_frames()
    frames["train"]["frame_0001"] = frames["train"].pop("vidB.mp4-7")
    data_yaml, out = make_export(tmp_path, frames=frames), tmp_path / "split"
    for extra in ([], ["--folds", "2", "--fold", "0"]):
        assert command("resplit", how)(["--data", data_yaml, "--out", out] + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: {data_yaml}: cannot split by source video: 1 of 6 images have no "
            f"source-video id in their name (e.g. frame_0001.png)"
        )
        assert "Add `video_id_pattern: '<regex>'` to data.yaml (or pass --video-id-pattern '<regex>')" in err
        assert not out.exists()


def test_video_id_pattern_option_is_used_and_recorded_by_a_resplit(how, tmp_path, capsys):
    frames = {"train": {}, "valid": {}, "test": {}}
    views = ("1 0 0", "0 1 0", "0 0 1")
    for v in range(6):  # every video p<v> in train and in valid or test
        for f, split in enumerate(("train", ("valid", "test")[v % 2])):
            frames[split][f"p{v}_frame{f}"] = f"{v % 4} 0.5 0.5 0.2 0.2\n\n{views[v % 3]}\n"
    data_yaml, out = make_export(tmp_path, frames=frames), tmp_path / "split"
    check, resplit = command("check", how), command("resplit", how)
    pattern = r"^(p\d+)_frame"
    assert check(["--data", data_yaml]) == 0
    assert "Leakage: cannot check: no file name gives a source-video id" in capsys.readouterr().out
    assert check(["--data", data_yaml, "--video-id-pattern", pattern]) == 0
    assert "Leakage: 6 of 6 source videos appear in more than one split" in capsys.readouterr().out
    assert resplit(["--data", data_yaml, "--video-id-pattern", pattern, "--out", out]) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {out.resolve() / 'data.yaml'}")
    assert yaml.safe_load((out / "data.yaml").read_text())["video_id_pattern"] == pattern
    assert check(["--data", out / "data.yaml"]) == 0  # the written yaml derives the ids
    assert "Leakage: none; each of 6 source videos sits in one split." in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        check(["--data", data_yaml, "--video-id-pattern", "(p"])
    assert info.value.code == 2
    assert (
        "argument --video-id-pattern: not a valid regular expression: missing ), unterminated subpattern at "
        "position 0; got '(p'"
    ) in capsys.readouterr().err


def test_train_allowed_on_leaky_splits_flags_metrics_json(tmp_path, capsys):
    out = tmp_path / "run"  # (through `echotune train`; test_train_cli_trains_and_writes_metrics runs the script)
    code = command("train", "echotune")(
        train_argv(leaky_export(tmp_path), out, "--epochs", "1", "--batch-size", "8", "--allow-leaky-splits")
    )
    assert code == 0
    assert "WARNING: leaky splits: 1 of 4 source videos" in capsys.readouterr().err
    flag = json.loads((out / "metrics.json").read_text())["leaky_splits"]
    assert (
        flag["videos"] == 1 and flag["pairs"]["train+val"] == 1 and flag["examples"] == {"vidA": {"train": 2, "val": 1}}
    )


def test_run_search_itself_refuses_leaky_splits_before_ray(tmp_path, monkeypatch):
    from echotune.data.check import check_dataset
    from echotune.data.leakage import LeakySplitsError
    from echotune.search import orchestrate
    from echotune.search.search_config import SearchConfig

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(orchestrate, "start_ray", no_ray)
    cfg = SearchConfig(storage=str(tmp_path / "results"))
    with pytest.raises(LeakySplitsError, match="train\\+val 1, train\\+test 0, val\\+test 0, all three 0"):
        orchestrate.run_search(cfg, check_dataset(leaky_export(tmp_path)), resume=False)
    assert not (tmp_path / "results").exists()


def test_run_search_allowed_on_leaky_splits_records_the_flag_in_search_json(tmp_path, monkeypatch):
    from echotune.data.check import check_dataset
    from echotune.search import orchestrate
    from echotune.search.search_config import SearchConfig
    from echotune.trainables.node import NodeInfo

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(orchestrate, "start_ray", lambda address, **options: None)
    monkeypatch.setattr(orchestrate.ray, "shutdown", lambda: None)
    monkeypatch.setattr(orchestrate, "alive_nodes", lambda: [NodeInfo("n1", "127.0.0.1", "head", {"CPU": 2.0})])
    monkeypatch.setattr(orchestrate, "build_tuner", stop)  # the step after search.json is written
    cfg = SearchConfig(storage=str(tmp_path / "results"), allow_leaky_splits=True)
    with pytest.raises(Stop):
        orchestrate.run_search(cfg, check_dataset(leaky_export(tmp_path)), resume=False)
    record = json.loads((tmp_path / "results" / "gradnorm" / "search.json").read_text())
    assert record["config"]["allow_leaky_splits"] is True
    assert record["leaky_splits"]["videos"] == 1 and record["leaky_splits"]["pairs"] == {
        "train+val": 1,
        "train+test": 0,
        "val+test": 0,
        "train+val+test": 0,
    }


def test_resume_keeps_the_leakage_settings_and_search_json_records_the_flag(tmp_path):
    import dataclasses

    from echotune.results.search_record import read_search_record, resumed_config, write_search_record
    from echotune.search.search_config import SearchConfig

    started = SearchConfig(name="x", storage=str(tmp_path), allow_leaky_splits=True, video_id_pattern=r"^(v\d+)")
    flag = {"videos": 2, "pairs": {"train+val": 2}}
    write_search_record(started, tmp_path / "data.yaml", leaky_splits=flag)
    record = read_search_record(tmp_path / "x")
    assert record["leaky_splits"] == flag
    resumed = resumed_config(SearchConfig(name="x", storage=str(tmp_path)), record)  # `--name x --resume`
    assert (resumed.allow_leaky_splits, resumed.video_id_pattern) == (True, r"^(v\d+)")
    assert dataclasses.asdict(resumed) == dataclasses.asdict(started)


# ---------------------------------------------------------------- one command, one set of option names (issue #17)
def test_echotune_help_lists_every_subcommand(capsys):
    from echotune.search.cli import COMMANDS, main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: echotune")
    block = out[out.index("commands:") :].split("\n\n")[0].splitlines()[2:]  # under the COMMAND line
    listed = [line.split()[0] for line in block if line[4:5].strip()]  # a name, not a wrapped description
    assert listed == ["search", "train", "check", "resplit", "leaderboard", "ensemble", "predict", "export"]
    assert list(COMMANDS) == listed
    with pytest.raises(SystemExit) as info:
        main([])  # no command: a usage error
    assert info.value.code == 2 and "required: COMMAND" in capsys.readouterr().err


def test_the_console_script_is_installed_and_runs_a_subcommand(tmp_path):
    """pyproject's [project.scripts] echotune (after `pip install -e .`): a real process, a cheap command."""
    import shutil
    import subprocess

    script = shutil.which("echotune")
    if script is None:
        pytest.skip("the echotune console script is not on PATH (pip install -e . puts it there)")
    done = subprocess.run(
        [script, "check", "--data", str(leaky_export(tmp_path))], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("USABLE: 0 errors, 1 warning(s) (leaky splits")


def parse(name: str, how: str, argv: list[str]):
    """The options `echotune NAME ARGV` or the old script would run with (parse only)."""
    if how == "echotune":
        from echotune.search.cli import build_parser

        return build_parser().parse_args([name, *argv])
    return load(SCRIPTS[name]).build_parser().parse_args(argv)


@pytest.mark.parametrize("name, extra", [("search", []), ("train", []), ("export", ["best.pt"])])
def test_imgsz_is_img_size(name, extra, how):
    for option in ("--imgsz", "--img-size"):
        assert parse(name, how, [*extra, option, "96"]).img_size == 96


@pytest.mark.parametrize(
    "name, old, new, value, dest",
    [
        ("search", "--max-epochs", "--epochs", "12", ("max_epochs", 12)),
        ("search", "--cpus-per-trial", "--cpus", "4", ("cpus_per_trial", 4.0)),
        ("search", "--gpus-per-trial", "--gpus", "0.5", ("gpus_per_trial", 0.5)),
        ("search", "--ensemble-top-k", "--top-k", "5", ("top_k", 5)),
        ("leaderboard", "--top", "--top-k", "5", ("top_k", 5)),
        ("resplit", "--split-out", "--out", "split", ("out", Path("split"))),
    ],
)
def test_old_option_spellings_are_aliases(name, old, new, value, dest, how):
    extra = ["results/x"] if name == "leaderboard" else []
    for option in (old, new):
        assert getattr(parse(name, how, [*extra, option, value]), dest[0]) == dest[1]


def test_shared_options_have_one_spelling_in_every_subcommand():
    """Where two subcommands have the same concept, they spell it the same (and --help lists it so)."""
    from echotune.search.cli import COMMANDS, build_parser

    parser = build_parser()
    options = {
        name: {s for a in parser._subparsers._group_actions[0].choices[name]._actions for s in a.option_strings}
        for name in COMMANDS
    }
    shared = {
        "--data": ("search", "train", "check", "resplit", "ensemble", "predict", "export"),
        "--seed": ("search", "train", "resplit", "ensemble"),
        "--device": ("train", "ensemble", "predict"),
        "--epochs": ("search", "train"),
        "--img-size": ("search", "train", "export"),
        "--imgsz": ("search", "train", "export"),
        "--out": ("train", "resplit", "ensemble", "predict", "export"),
        "--top-k": ("search", "leaderboard", "ensemble"),
        "--cache-dir": ("search", "train", "check", "resplit", "ensemble", "export"),
        "--video-id-pattern": ("search", "train", "check", "resplit", "ensemble"),
        "--allow-leaky-splits": ("search", "train", "ensemble"),
        "--strict": ("search", "train", "check", "resplit"),
        "--resume": ("search", "train"),
        "--name": ("search", "train"),
        "--batch-size": ("train",),
    }
    for option, commands in shared.items():
        assert {name for name in COMMANDS if option in options[name]} == set(commands), option
    for retired in ("--max-epochs", "--cpus-per-trial", "--ensemble-top-k", "--top", "--split-out"):  # aliases only
        assert not any(
            retired == a.option_strings[0]
            for sub in parser._subparsers._group_actions[0].choices.values()
            for a in sub._actions
            if a.option_strings
        ), retired


def test_search_options_default_to_search_config_and_the_default_search_is_the_readme_command(how, monkeypatch):
    import dataclasses

    from echotune.search.cli.search import search_config_from_args
    from echotune.search.search_config import SearchConfig

    monkeypatch.delenv("ECHOTUNE_STORAGE", raising=False)
    parser = load("run").build_parser()
    if how == "echotune":
        from echotune.search.cli import build_parser

        parser = build_parser()._subparsers._group_actions[0].choices["search"]
    args = parser.parse_args([])
    fields = {f.name: f for f in dataclasses.fields(SearchConfig)}
    defaults = {a.dest: a.default for a in parser._actions if a.dest in fields}
    assert defaults and all(defaults[k] == SearchConfig().__dict__[k] or fields[k].default is None for k in defaults)
    cfg = search_config_from_args(parser, args)
    assert dataclasses.asdict(cfg) == dataclasses.asdict(SearchConfig())
    # `python search/run.py --space gradnorm` as the README measured it: 8 trials x 10 epochs, quick, 2 at a time,
    # ASHA + TPE, the final round of the top 3 and the baseline with one seed, the recipe point, 1 CPU per trial
    assert (
        cfg.space,
        cfg.profile,
        cfg.name,
        cfg.num_samples,
        cfg.max_epochs,
        cfg.concurrency,
        cfg.scheduler,
        cfg.searcher,
        cfg.final_top_k,
        cfg.final_seeds,
        cfg.recipe_point,
        cfg.cpus_per_trial,
        cfg.img_size,
    ) == ("gradnorm", "quick", "gradnorm", 8, 10, 2, "asha", "tpe", 3, 1, True, 1.0, None)
    assert args.top_k == 3  # the ensemble of the top 3 at the end


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_epochs": 2}, "max_epochs must be >= 3 (one per training stage), got 2"),
        ({"space": "nope"}, "space='nope' is not valid; choose one of: all, baseline"),
        ({"profile": "huge"}, "profile='huge' is not valid; choose one of: quick, quick-all, full"),
        ({"objectives": ["auc"]}, "objectives=['auc'] is not valid"),
        ({"objectives": ["map50", "view_acc"], "scheduler": "asha"}, "scheduler='asha' with several objectives"),
        ({"cpus_per_trial": 0}, "cpus_per_trial must be > 0, got 0"),
        ({"gpus_per_trial": 2.5}, "gpus_per_trial above 1 must be a whole number, got 2.5"),
        ({"img_size": 100}, "img_size must be a multiple of 32 and >= 64, got 100"),
        ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
        ({"final_top_k": -1}, "final_top_k must be >= 0, got -1"),
        ({"time_budget_s": 0}, "time_budget_s must be > 0 (None: no limit), got 0"),
        ({"shared_storage": True, "storage": "s3://b/x"}, "shared_storage is for a local path"),
        ({"video_id_pattern": "(p"}, "video_id_pattern='(p': not a valid regular expression"),
        ({"scheduler": "pbt", "max_epochs": 4, "pbt_interval": 4}, "no perturbation before the last epoch"),
    ],
)
def test_search_config_refuses_what_a_search_cannot_run_with(values, message):
    from echotune.search.search_config import SearchConfig

    with pytest.raises(ValueError) as info:
        SearchConfig(**values)
    assert message in str(info.value)


def test_search_config_derives_name_and_scheduler():
    from echotune.search.search_config import SearchConfig

    assert SearchConfig(space="dual_backbone").name == "dual_backbone"
    assert SearchConfig(objectives=["map50", "view_acc"]).scheduler == "fifo"
    assert SearchConfig().scheduler == "asha"


def test_resume_names_a_run_alone_or_by_its_folder(how, tmp_path):
    from echotune.search.cli.search import search_config_from_args
    from echotune.search.cli.train import resume_checkpoint

    for argv, where in (
        (["--name", "x", "--storage", "elsewhere", "--resume"], ("elsewhere", "x")),
        (["--resume", "results/gradnorm"], ("results", "gradnorm")),
        (["--resume", "s3://bucket/echo/x"], ("s3://bucket/echo", "x")),
    ):
        parser = load("run").build_parser()
        cfg = search_config_from_args(parser, parse("search", how, argv))
        assert (cfg.storage, cfg.name) == where
    parser = load("train").build_parser()
    run = tmp_path / "run"
    run.mkdir()
    for argv, checkpoint in (
        (["--out", str(run), "--resume"], run / "last.pt"),
        (["--name", "r1", "--resume"], Path("results") / "r1" / "last.pt"),
        (["--resume", str(run)], run / "last.pt"),
        (["--resume", str(run / "best.pt")], run / "best.pt"),
    ):
        assert resume_checkpoint(parse("train", how, argv), parser) == checkpoint
    with pytest.raises(SystemExit):
        resume_checkpoint(parse("train", how, ["--resume"]), parser)  # which run?


def test_predict_takes_the_model_as_a_path_or_by_its_old_options(how, tmp_path):
    from echotune.search.cli.predict import ensemble_of

    experiment = tmp_path / "exp"
    (experiment / "ensemble").mkdir(parents=True)
    (experiment / "ensemble" / "manifest.yaml").write_text("members: []\n")
    assert ensemble_of(experiment) == experiment / "ensemble"  # an experiment folder: its ensemble
    assert ensemble_of(experiment / "ensemble") == experiment / "ensemble"
    assert ensemble_of(experiment / "ensemble" / "manifest.yaml") == experiment / "ensemble" / "manifest.yaml"
    assert ensemble_of(tmp_path / "best.pt") is None  # a checkpoint
    args = parse("predict", how, ["--ensemble", "e", "--source", "x"])
    assert (args.model, args.ensemble, args.checkpoint) == (None, Path("e"), None)
    assert parse("predict", how, ["e", "--source", "x"]).model == Path("e")


def test_ensemble_out_is_where_the_ensemble_is_written(how, tmp_path, monkeypatch):
    from echotune.search.cli import ensemble

    built = []
    monkeypatch.setattr(ensemble, "build_ensemble", lambda experiment, data, **options: built.append(options))
    experiment = tmp_path / "exp"
    experiment.mkdir()
    data = make_export(tmp_path)
    assert command("ensemble", how)([experiment, "--data", data, "--out", tmp_path / "elsewhere"]) == 0
    assert command("ensemble", how)([experiment, "--data", data]) == 0
    assert built[0]["out_dir"] == tmp_path / "elsewhere"
    assert built[1]["out_dir"] == experiment / "ensemble"  # the default: EXPERIMENT_DIR/ensemble
