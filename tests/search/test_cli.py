"""The command lines, run in-process: exit codes, messages, files written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.data.export_fixture import default_frames, leaky_export, make_export

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "search" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_data_exit_codes_and_report(tmp_path, capsys):
    run = load("run")
    assert run.main(["--data", str(leaky_export(tmp_path / "good")), "--check-data"]) == 0  # leaky: a warning
    out = capsys.readouterr().out
    assert "Leakage: 1 of 4 source videos" in out and "WARNING [leakage] x1" in out
    assert out.splitlines()[-1] == ("USABLE: 0 errors, 1 warning(s) (leaky splits: a search, train.py and "
                                    "ensemble.py refuse them unless given --allow-leaky-splits).")
    frames = default_frames()
    frames["train"]["vidE.mp4-1"] = "7 0.5 0.5 0.2 0.2\n\n0 1 0\n"
    bad = make_export(tmp_path / "bad", frames=frames)
    assert run.main(["--data", str(bad), "--check-data"]) == 2
    out = capsys.readouterr().out
    assert "vidE.mp4-1.txt:1: class id 7 >= nc=4" in out and "NOT USABLE: 1 error(s)" in out


def test_search_refuses_bad_data_before_anything_runs(tmp_path, capsys):
    frames = default_frames()
    frames["valid"]["vidC.mp4-1"] = "1 0.6 0.6 0.2 0.2\n\n0 1 1\n"
    assert load("run").main(["--data", str(make_export(tmp_path, frames=frames))]) == 2
    assert "view line is not one-hot" in capsys.readouterr().out


def test_missing_yaml_and_strict(tmp_path, capsys):
    run = load("run")
    assert run.main(["--data", str(tmp_path / "nope.yaml"), "--check-data"]) == 2
    assert "data.yaml not found" in capsys.readouterr().err
    frames = default_frames()
    frames["train"]["vidG.mp4-1"] = "0 0.5 0.5 0.2 0.2\n"
    yaml_path = make_export(tmp_path / "d", frames=frames)
    assert run.main(["--data", str(yaml_path), "--check-data"]) == 0
    assert run.main(["--data", str(yaml_path), "--check-data", "--strict"]) == 2
    assert "no view line: an error under --strict" in capsys.readouterr().out


def test_resplit_writes_a_leak_free_dataset(tmp_path, capsys):
    run = load("run")
    yaml_path = leaky_export(tmp_path)
    out = tmp_path / "split"
    assert run.main(["--data", str(yaml_path), "--resplit-by-video", "--ratios", "0.5,0.25,0.25",
                     "--split-out", str(out)]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert run.main(["--data", str(out / "data.yaml"), "--check-data"]) == 0
    assert "Leakage: none" in capsys.readouterr().out


def test_train_cli_trains_and_writes_metrics(tiny_synthetic, tmp_path, capsys):
    train = load("train")
    out = tmp_path / "run"
    code = train.main(["--data", str(tiny_synthetic.config.yaml_path), "--scale", "test", "--img-size", "64",
                       "--epochs", "1,1,1", "--batch-size", "8", "--out", str(out), "--set", "loss_box=giou"])
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
    assert "Per class (test):\n  class" in printed and set(held["per_class"]["test"]) <= set(tiny_synthetic.config.names)
    assert json.loads((out / "run.json").read_text())["config"]["loss_box"] == "giou"
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "3,x,2"], "expected a total like 10"),
    (["--set", "lr_stage9=1"], "unknown config key(s) ['lr_stage9']"),
    (["--set", "loss_view=dice"], "loss_view='dice' is not valid"),
    (["--arch", "dual", "--balance", "gradnorm"], "balance=gradnorm needs a shared layer"),
    (["--img-size", "100"], "img_size must be a multiple of 32"),
])
def test_train_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        load("train").main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_baseline_preset_is_the_original_configuration():
    train = load("train")
    cfg = train.config_from_args(train.build_parser().parse_args(["--preset", "baseline"]))
    assert (cfg.model_scale, cfg.img_size, cfg.gn_alpha, cfg.batch_size, cfg.epochs) == ("s", 640, 1.5, 8, 100)
    assert (cfg.lr_stage1, cfg.lr_stage2, cfg.lr_stage3) == (1e-2, 1e-3, 1e-4)
    assert cfg.stage_split == (0.3, 0.5, 0.2) and cfg.aug_policy == "none" and cfg.mixup_alpha == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--ratios", "0.7,0.3"], "expected three non-negative numbers"),
    (["--ratios", "a,b,c"], "expected three numbers"),
    (["--max-problems", "-1"], "--max-problems must be >= 0"),
    (["--folds", "3", "--fold", "5"], "--fold must be in 0..2"),
    (["--space", "nope"], "unknown --space 'nope'; valid: all, baseline, dual_backbone, gradnorm"),
    (["--objectives", "score,auc"], "unknown --objectives ['auc']; valid: score, map50"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial must be >= 0"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial above 1 must be a whole number"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    (["--max-epochs", "2"], "--max-epochs must be >= 3"),
    (["--max-epochs", "-4"], "expected a positive integer, got -4"),
    (["--num-samples", "0"], "expected a positive integer, got 0"),
    (["--img-size", "100"], "--img-size must be a multiple of 32"),
    (["--time-budget-s", "0"], "--time-budget-s must be > 0"),
    (["--ensemble-top-k", "-1"], "--ensemble-top-k must be >= 0"),
    (["--profile", "huge"], "invalid choice: 'huge'"),
    (["--dashboard", "--address", "auto"], "--dashboard starts the dashboard of a local Ray; a cluster has its own"),
])
def test_run_rejects_bad_values_before_anything_starts(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        load("run").main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_search_refuses_to_overwrite_or_resume_nothing(tiny_synthetic, tmp_path, capsys):
    run = load("run")
    common = ["--data", str(tiny_synthetic.config.yaml_path), "--storage", str(tmp_path), "--name", "x"]
    assert run.main(common + ["--resume"]) == 2
    assert "--resume: no experiment at" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    assert run.main(common) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err


# ---------------------------------------------------------------- source-video ids and the leakage guard
def leak_lines(data_yaml) -> list[str]:
    """The refusal of the leaky export (vidA: train 2, val 1), as every command prints it."""
    data_yaml = Path(data_yaml).resolve()
    return [f"error: {data_yaml}: leaky splits: 1 of 4 source videos have frames in more than one split (3 frames): "
            f"train+val 1, train+test 0, val+test 0, all three 0. Scores on these splits are optimistic (the model "
            f"is evaluated on frames of videos it trained on).",
            "  vidA: train 2, val 1",
            f"Fix: python search/run.py --data {data_yaml} --resplit-by-video (or --folds K --fold I for grouped "
            f"K-fold) writes leak-free splits and a new data.yaml; use that one.",
            "Or pass --allow-leaky-splits to go on knowingly: the results are flagged as leaky."]


def test_search_refuses_leaky_splits_before_ray_starts(tmp_path, capsys):
    data_yaml, storage = leaky_export(tmp_path), tmp_path / "results"
    assert load("run").main(["--data", str(data_yaml), "--storage", str(storage)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-4:] == leak_lines(data_yaml)
    assert "Search '" not in captured.out  # refused before the search (and Ray) started
    assert not storage.exists()


def test_resplit_refuses_names_without_a_video_id(tmp_path, capsys):
    frames = default_frames()
    frames["train"]["frame_0001"] = frames["train"].pop("vidB.mp4-7")
    data_yaml, out = make_export(tmp_path, frames=frames), tmp_path / "split"
    for extra in (["--resplit-by-video"], ["--folds", "2", "--fold", "0"]):
        assert load("run").main(["--data", str(data_yaml), "--split-out", str(out)] + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {data_yaml}: cannot split by source video: 1 of 6 images have no "
                              f"source-video id in their name (e.g. frame_0001.png)")
        assert "Add `video_id_pattern: '<regex>'` to data.yaml (or pass --video-id-pattern '<regex>')" in err
        assert not out.exists()


def test_video_id_pattern_option_is_used_and_recorded_by_a_resplit(tmp_path, capsys):
    frames = {"train": {}, "valid": {}, "test": {}}
    views = ("1 0 0", "0 1 0", "0 0 1")
    for v in range(6):  # every video p<v> in train and in valid or test
        for f, split in enumerate(("train", ("valid", "test")[v % 2])):
            frames[split][f"p{v}_frame{f}"] = f"{v % 4} 0.5 0.5 0.2 0.2\n\n{views[v % 3]}\n"
    data_yaml, out = make_export(tmp_path, frames=frames), tmp_path / "split"
    run = load("run")
    pattern = r"^(p\d+)_frame"
    assert run.main(["--data", str(data_yaml), "--check-data"]) == 0
    assert "Leakage: cannot check: no file name gives a source-video id" in capsys.readouterr().out
    assert run.main(["--data", str(data_yaml), "--check-data", "--video-id-pattern", pattern]) == 0
    assert "Leakage: 6 of 6 source videos appear in more than one split" in capsys.readouterr().out
    assert run.main(["--data", str(data_yaml), "--video-id-pattern", pattern, "--resplit-by-video",
                     "--split-out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {out.resolve() / 'data.yaml'}")
    assert yaml.safe_load((out / "data.yaml").read_text())["video_id_pattern"] == pattern
    assert run.main(["--data", str(out / "data.yaml"), "--check-data"]) == 0  # the written yaml derives the ids
    assert "Leakage: none; each of 6 source videos sits in one split." in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        run.main(["--data", str(data_yaml), "--check-data", "--video-id-pattern", "(p"])
    assert info.value.code == 2
    assert ("argument --video-id-pattern: not a valid regular expression: missing ), unterminated subpattern at "
            "position 0; got '(p'") in capsys.readouterr().err


def test_train_allowed_on_leaky_splits_flags_metrics_json(tmp_path, capsys):
    out = tmp_path / "run"
    code = load("train").main(["--data", str(leaky_export(tmp_path)), "--scale", "test", "--img-size", "64",
                               "--epochs", "1", "--batch-size", "8", "--out", str(out), "--allow-leaky-splits"])
    assert code == 0
    assert "WARNING: leaky splits: 1 of 4 source videos" in capsys.readouterr().err
    flag = json.loads((out / "metrics.json").read_text())["leaky_splits"]
    assert flag["videos"] == 1 and flag["pairs"]["train+val"] == 1 and flag["examples"] == {"vidA": {"train": 2,
                                                                                                      "val": 1}}


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
    from echotune.trainables.node import NodeInfo
    from echotune.search.search_config import SearchConfig

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
        "train+val": 1, "train+test": 0, "val+test": 0, "train+val+test": 0}


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
