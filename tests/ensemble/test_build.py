"""build_ensemble end to end on three really trained members: selection, reproduction, val-only tuning."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.evaluate_checkpoint import evaluate_checkpoint, load_trained_model
from echotune.ensemble import build_ensemble, select_members
from echotune.ensemble.fusion import FusionParams
from echotune.ensemble.inference import predict_split
from echotune.ensemble.scoring import member_metrics, split_metrics
from tests.ensemble.conftest import MEMBER_TRAIN, leaderboard_row, ranked

QUIET = dict(log=lambda _: None)


def test_selection_ranks_skips_unusable_rows_and_diversifies(experiment):
    from echotune.results.leaderboard import read_leaderboard

    rows = read_leaderboard(experiment.path / "leaderboard.parquet").to_pylist()
    best = ranked(experiment)
    assert [m.trial_id for m in select_members(rows, top_k=3)] == best  # diverged/error/no-checkpoint skipped
    diverse = select_members(rows, top_k=3, diverse=True)
    assert sorted(m.arch for m in diverse) == ["dual", "shared"] and diverse[0].trial_id == best[0]
    twin = leaderboard_row("t_twin", {**MEMBER_TRAIN, "arch": "dual", "seed": 5}, 0.5, experiment.checkpoints["t_dual"])
    picked = select_members(rows + [twin], top_k=2, diverse=True)
    assert [m.trial_id for m in picked][0] == "t_twin" and picked[1].arch == "shared"
    with pytest.raises(
        ValueError,
        match=r"no usable trial to ensemble \(3 trial\(s\): 2 diverged/errored, "
        r"1 without a checkpoint",
    ):
        select_members([r for r in rows if r["trial_id"] in ("t_diverged", "t_error", "t_nockpt")])


def test_cached_predictions_are_the_engine_predictions_in_original_pixels(experiment):
    data, trial = experiment.data, ranked(experiment)[0]
    model, cfg = load_trained_model(experiment.checkpoints[trial] / "last.pt", data, "cpu")
    preds = predict_split([(model, cfg)], data.samples["val"], "val", data.config.nc, "none", **QUIET)
    dataset = EchoDataset(data.samples["val"], cfg.img_size)
    with torch.no_grad():  # batched as evaluate() batches (batch composition changes the last float bits)
        engine = [d for batch in make_loader(dataset, cfg.batch_size) for d in model(batch["images"])["detections"]]
    assert len(engine) == len(dataset) == len(preds.detections[0][0])
    for i, det in enumerate(engine):
        lb = dataset.load(i)[2]
        assert lb.pad_x or lb.pad_y  # the val images are not square: the padding is really undone
        cached = preds.detections[0][0][i]
        np.testing.assert_allclose(lb.to_square(cached["boxes"]), det["boxes"].numpy(), atol=1e-3)
        np.testing.assert_array_equal(cached["scores"], det["scores"].numpy())
        np.testing.assert_array_equal(cached["labels"], det["labels"].numpy())


def test_k_identical_members_give_the_single_members_metrics(experiment):
    data, trial = experiment.data, ranked(experiment)[0]
    loaded = load_trained_model(experiment.checkpoints[trial] / "last.pt", data, "cpu")
    preds = predict_split([loaded] * 3, data.samples["val"], "val", data.config.nc, "none", **QUIET)
    single = member_metrics(preds, 0)
    assert single["val/recall"] > 0  # not a vacuous all-zero comparison
    fused = split_metrics(preds, [1.0, 0.5, 0.8], FusionParams("wbf", iou_thr=0.6))
    assert fused == pytest.approx(single, abs=1e-9)


def test_ensemble_of_one_reproduces_the_member(experiment, tmp_path):
    trial = ranked(experiment)[0]
    result = build_ensemble(experiment.path, experiment.data, top_k=1, tune_trials=3, device="cpu", **QUIET)
    checkpoint = experiment.checkpoints[trial] / "last.pt"
    for split, metrics in (("test", result.ensemble_metrics), ("val", result.val_metrics)):
        assert metrics == pytest.approx(evaluate_checkpoint(checkpoint, experiment.data, split, "cpu"), abs=1e-9)
    assert result.single_best["trial_id"] == trial and result.single_best["metrics"] == result.ensemble_metrics
    assert result.val_metrics["val/score"] == pytest.approx(experiment.scores[trial], abs=1e-9)
    assert all(v == 0 for v in result.gain.values())
    # the paired interval of a model against itself is exactly zero; test is read at the confidence val chose
    assert all((e.value, e.low, e.high) == (0, 0, 0) for e in result.ci["gain"].values())
    assert result.ensemble_metrics["test/conf"] == result.val_metrics["val/conf"]
    interval = result.ci["ensemble"]["score"]
    assert interval.low <= result.ensemble_metrics["test/score"] <= interval.high


def test_tuning_never_reads_the_test_split(experiment, monkeypatch):
    events = []
    imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda path, *a: events.append(("read", str(path))) or imread(path, *a))
    result = build_ensemble(
        experiment.path,
        experiment.data,
        top_k=2,
        tta="flip",
        tune_trials=4,
        device="cpu",
        log=lambda message: events.append(("log", message)),
    )
    tuned = next(i for i, (kind, text) in enumerate(events) if kind == "log" and "tuned wbf on val" in text)
    test_images = {str(s.image) for s in experiment.data.samples["test"]}
    val_images = {str(s.image) for s in experiment.data.samples["val"]}
    before = {path for kind, path in events[:tuned] if kind == "read"}
    after = {path for kind, path in events[tuned:] if kind == "read"}
    assert before == val_images and after == test_images  # tuning saw val only; test was read afterwards
    assert len(result.weights) == 2 and all(0.1 <= w <= 1.0 for w in result.weights)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["tuning"]["best_score"] >= saved["tuning"]["default_score"]
    assert saved["ensemble"]["metrics"] == result.ensemble_metrics and saved["arguments"]["tta"] == "flip"
    assert {m["trial_id"] for m in saved["members"]} == set(ranked(experiment)[:2])
    assert all(set(m) >= {"val", "test"} for m in saved["members"])
    assert math.isclose(
        result.gain["test/score"], result.ensemble_metrics["test/score"] - result.single_best["metrics"]["test/score"]
    )


def test_tuning_refuses_the_test_split_and_bad_options_list_the_valid_ones(experiment):
    from echotune.ensemble.tuning import tune_fusion

    data = experiment.data
    loaded = load_trained_model(experiment.checkpoints["t_shared0"] / "last.pt", data, "cpu")
    test_preds = predict_split([loaded, loaded], data.samples["test"], "test", data.config.nc, **QUIET)
    with pytest.raises(ValueError, match="refusing to tune the ensemble on the test split"):
        tune_fusion(test_preds, **QUIET)
    bad = [
        ({"tta": "mirror"}, "choose one of: none, flip, scales, flip\\+scales"),
        ({"fusion": "mean"}, "choose one of: wbf, soft-nms, nms"),
        ({"split": "holdout"}, "split='holdout' has no images .*; valid: train, val, test"),
        ({"tune_on": "test"}, "tune_on='test' is not valid; choose one of: train, val \\(never test"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            build_ensemble(experiment.path, data, **kwargs, **QUIET)


def test_missing_and_mismatching_checkpoints_are_named(experiment, tmp_path):
    from echotune.results.leaderboard import write_leaderboard

    config = {**MEMBER_TRAIN, "arch": "shared"}
    (tmp_path / "gone").mkdir()
    write_leaderboard(
        [leaderboard_row("t_gone", config, 0.9, tmp_path / "missing" / "checkpoint_000003")],
        tmp_path / "gone" / "leaderboard.parquet",
    )
    with pytest.raises(FileNotFoundError, match=r"trial t_gone: checkpoint .*missing/checkpoint_000003 does not exist"):
        build_ensemble(tmp_path / "gone", experiment.data, **QUIET)
    (tmp_path / "wrong").mkdir()
    wrong = leaderboard_row("t_wrong", {**config, "img_size": 96}, 0.9, experiment.checkpoints["t_shared0"])
    write_leaderboard([wrong], tmp_path / "wrong" / "leaderboard.parquet")
    with pytest.raises(
        ValueError,
        match=r"trial t_wrong: .*last.pt: checkpoint does not match the config "
        r"\(img_size: checkpoint 64 vs config 96\)",
    ):
        build_ensemble(tmp_path / "wrong", experiment.data, **QUIET)
    with pytest.raises(FileNotFoundError, match=r"nowhere/leaderboard.parquet does not exist"):
        build_ensemble(tmp_path / "nowhere", experiment.data, **QUIET)


def test_scales_and_flip_tta_keep_the_best_single_member_untouched(experiment):
    result = build_ensemble(
        experiment.path, experiment.data, top_k=2, tta="flip+scales", fusion="nms", tune_trials=2, device="cpu", **QUIET
    )
    best = experiment.checkpoints[ranked(experiment)[0]] / "last.pt"
    assert result.single_best["metrics"] == pytest.approx(
        evaluate_checkpoint(best, experiment.data, "test", "cpu"), abs=1e-9
    )
    assert 0 <= result.ensemble_metrics["test/score"] <= 1 and result.fusion.method == "nms"


def test_members_of_different_sizes_get_their_own_scale_variants(experiment):
    import dataclasses

    data = experiment.data
    model, cfg = load_trained_model(experiment.checkpoints["t_shared0"] / "last.pt", data, "cpu")
    members = [(model, cfg), (model, dataclasses.replace(cfg, img_size=96))]  # as if trained at 96 px
    preds = predict_split(members, data.samples["val"], "val", data.config.nc, "scales", **QUIET)
    assert [preds.n_variants(m) for m in (0, 1)] == [2, 3] and preds.view_probs[1].shape == (3, 8, 3)
    metrics = split_metrics(preds, [1.0, 1.0], FusionParams())
    assert set(metrics) == {
        f"val/{k}"
        for k in (
            "map50",
            "map50_95",
            "precision",
            "recall",
            "f1",
            "view_acc",
            "view_f1",
            "view_kappa",
            "score",
            "conf",
        )
    }
