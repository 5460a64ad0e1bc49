"""The command lines, run in-process: exit codes, messages, files written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.data.export_fixture import default_frames, make_export

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "search" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_data_exit_codes_and_report(tmp_path, capsys):
    run = load("run")
    assert run.main(["--data", str(make_export(tmp_path / "good")), "--check-data"]) == 0
    out = capsys.readouterr().out
    assert "USABLE: 0 errors" in out and "Leakage: 1 of 4 source videos" in out
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
    yaml_path = make_export(tmp_path)
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
    assert "epoch   3/3 stage 3" in printed and "Best epoch" in printed and "test " in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"best_val", "test", "wall_s", "best_checkpoint"} <= set(metrics)
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
