"""The saved ensemble: manifest round trip (also after moving the folder), validation errors, the predictor."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from echotune.ensemble import EnsemblePredictor, build_ensemble, evaluate_manifest, load_manifest
from echotune.ensemble.predictor import label_names

QUIET = dict(log=lambda _: None)


@pytest.fixture(scope="module")
def moved(experiment, tmp_path_factory):
    """(result, moved experiment folder): built with soft-NMS and flip TTA, then the folder is moved."""
    result = build_ensemble(
        experiment.path, experiment.data, top_k=2, tta="flip", fusion="soft-nms", tune_trials=4, device="cpu", **QUIET
    )
    target = tmp_path_factory.mktemp("moved") / "exp"
    shutil.copytree(experiment.path, target)
    return result, target


def test_manifest_round_trip_reproduces_the_metrics_after_moving_the_folder(moved, experiment):
    result, folder = moved
    manifest = load_manifest(folder / "ensemble")
    assert [m.trial_id for m in manifest.members] == [m.trial_id for m in result.members]
    assert all(folder in m.checkpoint.parents for m in manifest.members)  # relative paths moved with it
    assert manifest.weights == pytest.approx(result.weights) and manifest.fusion == result.fusion
    assert manifest.tta == "flip" and manifest.names == ["AR", "MR", "PR", "TR"]
    assert manifest.extra["tuned_on"] == "val" and "ensemble-boxes" in manifest.extra["versions"]
    metrics = evaluate_manifest(folder / "ensemble" / "manifest.yaml", experiment.data, "test", "cpu", **QUIET)
    assert metrics == pytest.approx(result.ensemble_metrics, abs=1e-12)


BAD = [  # (change to the manifest, exception, message pattern naming the key and value)
    (lambda d: d.pop("weights"), ValueError, r"missing key\(s\) \['weights'\]; valid keys: version, members"),
    (lambda d: d.update(version=7), ValueError, r"version: this EchoTune reads manifest version 1 \(got 7\)"),
    (lambda d: d.update(weights=[1.0]), ValueError, r"weights: expected 2 positive numbers, one per member"),
    (lambda d: d.update(weights=[1.0, "x"]), ValueError, r"weights: .* \(got \[1.0, 'x'\]\)"),
    (lambda d: d.update(tta="mirror"), ValueError, r"tta: choose one of: none, flip, scales, flip\+scales"),
    (lambda d: d["fusion"].update(iou_thr=1.5), ValueError, r"fusion.iou_thr: expected a number in \[0.0, 1.0\]"),
    (lambda d: d["fusion"].update(method="mean"), ValueError, r"fusion.method: fusion='mean' is not valid; choose one"),
    (lambda d: d.update(colour="red"), ValueError, r"unknown key\(s\) \['colour'\]"),
    (
        lambda d: d["members"][1].update(checkpoint="../nowhere/last.pt"),
        FileNotFoundError,
        r"members\[1\].checkpoint: '../nowhere/last.pt' -> .*/nowhere/last.pt does not exist",
    ),
    (lambda d: d["members"][0].pop("trial_id"), ValueError, r"members\[0\]: expected a mapping with string trial_id"),
    (lambda d: d.update(names="AR"), ValueError, r"names: expected a non-empty list of names \(got 'AR'\)"),
]


@pytest.mark.parametrize("change, error, message", BAD)
def test_bad_manifests_name_the_file_key_and_value(moved, change, error, message):
    folder = moved[1] / "ensemble"
    doc = yaml.safe_load((folder / "manifest.yaml").read_text())
    change(doc)
    path = folder / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(error, match=f"{path}: {message}"):
        load_manifest(path)


def test_unreadable_and_missing_manifests(tmp_path):
    (tmp_path / "manifest.yaml").write_text("members: [unclosed\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'manifest.yaml'}: not valid YAML"):
        load_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"ensemble manifest {tmp_path / 'nope'} does not exist"):
        load_manifest(tmp_path / "nope")


@pytest.mark.parametrize("shape", [(97, 203), (300, 61, 3), (61, 300, 4), (40, 40, 1)])
def test_predictor_handles_any_size_and_channels(moved, shape):
    predictor = EnsemblePredictor.from_manifest(moved[1] / "ensemble", "cpu")
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    out = predictor.predict(image, conf=0.0)
    h, w = shape[:2]
    assert out["image_wh"] == (w, h) and len(out["boxes"]) > 0
    assert np.all(out["boxes"] >= 0) and np.all(out["boxes"][:, [0, 2]] <= w) and np.all(out["boxes"][:, [1, 3]] <= h)
    assert np.all(np.diff(out["scores"]) <= 0) and out["classes"][0] in predictor.names
    assert out["view"] in predictor.view_names and sum(out["view_probs"].values()) == pytest.approx(1.0)
    assert len(predictor.predict(image, conf=1.0)["boxes"]) == 0
    with pytest.raises(ValueError, match=r"expected an \(H, W\[, 1\|3\|4\]\) uint8 image, got shape \(4, 4, 2\)"):
        predictor.predict(np.zeros((4, 4, 2), np.uint8))


def test_bare_checkpoint_names(experiment, capsys):
    yaml_path = experiment.data.config.yaml_path
    assert label_names({}, 4, 3, yaml_path) == (["AR", "MR", "PR", "TR"], ["PSAX", "PLAX", "A4C"])
    notes = []
    assert label_names({}, 2, 3, None, notes.append) == (["class0", "class1"], ["view0", "view1", "view2"])
    assert "using class0.., view0.." in notes[0]
    with pytest.raises(ValueError, match=r"data.yaml: 4 classes / 3 views, but the checkpoint predicts 2 classes"):
        label_names({}, 2, 3, yaml_path)
    predictor = EnsemblePredictor.from_checkpoint(experiment.checkpoints["t_dual"], "cpu")  # a Ray folder
    assert predictor.names == ["AR", "MR", "PR", "TR"] and predictor.view_names == ["PSAX", "PLAX", "A4C"]
