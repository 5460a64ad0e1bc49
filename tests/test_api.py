"""The notebook API, used as a notebook would: `import echotune` and nothing internal (the fixtures only give data
paths). One tiny real search (2 trials x 3 epochs at 64 px, no final round, an ensemble of both) and one tiny
training run feed the result, leaderboard and prediction tests; option errors are checked before anything runs."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

import echotune

TRIALS, EPOCHS = 2, 3


@pytest.fixture(scope="module")
def data_yaml(tiny_synthetic):
    return tiny_synthetic.config.yaml_path


@pytest.fixture(scope="module")
def val_images(tiny_synthetic):
    return [sample.image for sample in tiny_synthetic.samples["val"]]


@pytest.fixture(scope="module")
def view_names(tiny_synthetic):
    return set(tiny_synthetic.view_names)


@pytest.fixture(scope="module")
def searched(data_yaml, tmp_path_factory):
    """A finished 2-trial search (the baseline and the detector recipe) with an ensemble of both."""
    storage = tmp_path_factory.mktemp("api-search")
    return echotune.run_search(
        "gradnorm",
        data=data_yaml,
        name="api",
        storage=str(storage),
        num_samples=TRIALS,
        max_epochs=EPOCHS,
        img_size=64,
        concurrency=2,
        final_top_k=0,
        ensemble_top_k=2,
        status_every=0,
    )


@pytest.fixture(scope="module")
def trained(data_yaml, tmp_path_factory):
    return echotune.train(
        data_yaml,
        out=tmp_path_factory.mktemp("api-train") / "run",
        model_scale="test",
        img_size=64,
        epochs=EPOCHS,
        batch_size=8,
        cpus=1,
        seed=0,
        verbose=False,
    )


def assert_sane(predictions, images, view_names):
    assert len(predictions) == len(images)
    for prediction in predictions:
        w, h = prediction.width, prediction.height
        k = len(prediction.scores)
        assert prediction.boxes.shape == (k, 4) and len(prediction.classes) == len(prediction.labels) == k
        if k:
            x1, y1, x2, y2 = prediction.boxes.T
            assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
            assert (x2 > x1).all() and (y2 > y1).all()
            assert (np.diff(prediction.scores) <= 0).all()
        assert prediction.view in view_names and set(prediction.view_probs) == view_names
        assert sum(prediction.view_probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction.view == max(prediction.view_probs, key=prediction.view_probs.get)


# -------------------------------------------------------------------------------------------- the package itself
def test_import_is_cheap_and_names_load_lazily():
    code = (
        "import sys, echotune\n"
        "before = sorted(m for m in ('ray', 'torch', 'pandas', 'echotune.api') if m in sys.modules)\n"
        "echotune.SearchConfig\n"
        "print(before, 'ray' in sys.modules, sorted(echotune.__all__), 'run_search' in dir(echotune))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    assert out == (
        "[] False ['Prediction', 'SearchConfig', 'SearchResult', 'TrainConfig', 'TrainResult', "
        "'__version__', 'leaderboard', 'predict', 'run_search', 'train'] True"
    )


def test_version_is_the_installed_one_and_unknown_names_fail():
    assert echotune.__version__ == importlib.metadata.version("echotune")
    with pytest.raises(AttributeError, match="no_such_name"):
        echotune.no_such_name  # noqa: B018


# ----------------------------------------------------------------------------- option errors, before any work
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_sample": 4}, "num_sample"),
        ({"max_epochs": 2}, "max_epochs"),
        ({"space": "no_such_space"}, "space"),
        ({"img_size": 100}, "img_size"),
        ({"objectives": "map50,view_acc", "scheduler": "asha"}, "scheduler"),
        ({"objectives": "map50,nope"}, "objectives"),
        ({"storage": "s3://bucket/echotune"}, "storage"),
        ({"pbt_interval": 2}, "pbt_interval"),
        ({"ensemble_top_k": -1}, "ensemble_top_k"),
    ],
)
def test_run_search_names_a_bad_option(options, named, data_yaml, tmp_path):
    options = {"storage": str(tmp_path), **options}
    with pytest.raises(ValueError, match=named):
        echotune.run_search(data=data_yaml, **options)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"epoch": 3}, "epoch"),
        ({"img_size": 100}, "img_size"),
        ({"config": echotune.TrainConfig(model_scale="test"), "lr_stage1": -1.0}, "lr_stage1"),
    ],
)
def test_train_names_a_bad_option(options, named, data_yaml, tmp_path):
    with pytest.raises(ValueError, match=named):
        echotune.train(data_yaml, out=tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


def test_leaderboard_and_predict_refuse_bad_input(tmp_path, val_images):
    with pytest.raises(ValueError, match="no such experiment folder"):
        echotune.leaderboard(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown metric"):
        echotune.leaderboard(tmp_path, by="accuracy")
    with pytest.raises(ValueError, match="conf"):
        echotune.predict(tmp_path / "best.pt", val_images, conf=1.5)
    with pytest.raises(FileNotFoundError, match="best.pt"):
        echotune.predict(tmp_path / "best.pt", val_images)


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_train_returns_one_row_per_epoch_and_its_checkpoints(trained):
    assert isinstance(trained.config, echotune.TrainConfig) and trained.config.epochs == EPOCHS
    metrics = trained.metrics
    assert isinstance(metrics, pd.DataFrame) and metrics["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert list(metrics.columns[:2]) == ["epoch", "stage"]
    best_row = metrics.loc[metrics["val/score"].idxmax()]
    assert trained.best_epoch == best_row["epoch"] and trained.best["val/score"] == best_row["val/score"]
    assert trained.last["epoch"] == EPOCHS and metrics["val/best_score"].iloc[-1] == trained.best["val/score"]
    assert trained.best_checkpoint.is_file() and trained.last_checkpoint.is_file()
    assert trained.best_checkpoint.parent == trained.last_checkpoint.parent == trained.out_dir
    assert len(pd.read_csv(trained.out_dir / "results.csv")) == EPOCHS
    assert trained.leaky_splits is None


@pytest.mark.slow
def test_predict_with_a_trained_checkpoint_on_files_and_arrays(trained, val_images, view_names):
    predictions = echotune.predict(trained, val_images, conf=0.0)
    assert_sane(predictions, val_images, view_names)
    assert [p.image for p in predictions] == val_images
    # an array is the same image as its file; a resized, grey, non-square copy gets boxes in its own pixels
    image = cv2.imread(str(val_images[0]), cv2.IMREAD_COLOR)
    small = cv2.cvtColor(cv2.resize(image, (300, 160)), cv2.COLOR_BGR2GRAY)
    same, resized = echotune.predict(trained.best_checkpoint, [image, small], conf=0.0)
    np.testing.assert_array_equal(same.boxes, predictions[0].boxes)
    assert same.image is None and (resized.width, resized.height) == (300, 160)
    assert_sane([resized], [small], view_names)
    # a higher confidence keeps a subset: the boxes scoring at least it
    strict = echotune.predict(trained.best_checkpoint, val_images[0], conf=0.05)[0]
    assert (strict.scores >= 0.05).all() and len(strict.scores) == int((predictions[0].scores >= 0.05).sum())


# ------------------------------------------------------------------------------------------------------- search
@pytest.mark.ray
def test_search_result_lists_every_trial_and_hands_back_the_best(searched, data_yaml):
    board = searched.leaderboard
    assert len(board) == TRIALS == searched.config.num_samples
    assert searched.data_yaml == data_yaml.resolve() and searched.experiment.name == "api"
    assert set(board["status"]) == {"TERMINATED"} and board["is_baseline"].sum() == 1
    scores = board["best/val/score"].tolist()
    assert scores == sorted(scores, reverse=True) and board["rank"].tolist() == [1, 2]
    # no final round: the trial handed back is the search's best by val/score, its checkpoint a real file
    assert searched.final_round is None
    best_row = board.set_index("trial_id").loc[searched.best_trial_id]  # ties (all 0 after 3 epochs) keep any
    assert best_row["best/val/score"] == scores[0] == pytest.approx(searched.best_val_score)
    assert searched.best_checkpoint.is_file()
    best = json.loads(best_row["config_json"])
    assert isinstance(searched.best_config, echotune.TrainConfig)
    assert (searched.best_config.img_size, searched.best_config.epochs) == (64, EPOCHS)
    assert searched.best_config.head == best["head"] and searched.best_config.lr_stage3 == best["lr_stage3"]
    # test numbers, read after the choice: the held-out file's best model is the trial handed back
    assert searched.held_out["best"]["trial_id"] == searched.best_trial_id
    assert set(searched.test_metrics) >= {"test/map50", "test/map50_95", "test/view_acc", "test/score"}
    assert (searched.ensemble / "manifest.yaml").is_file()


@pytest.mark.ray
def test_leaderboard_reads_the_folder_again(searched):
    board = echotune.leaderboard(searched.experiment, by="view_acc")
    assert sorted(board["trial_id"]) == sorted(searched.leaderboard["trial_id"])
    assert board["best/val/view_acc"].is_monotonic_decreasing
    documented = {
        "rank",
        "trial_id",
        "status",
        "is_baseline",
        "epochs_trained",
        "epochs_planned",
        "best_epoch",
        "best/val/score",
        "final/val/score",
        "checkpoint_path",
        "config_json",
        "hp/lr_stage3",
    }
    assert documented <= set(board.columns)
    again = echotune.SearchResult.from_experiment(searched.experiment)
    assert (again.best_trial_id, again.best_checkpoint) == (searched.best_trial_id, searched.best_checkpoint)


@pytest.mark.ray
def test_predict_with_the_search_checkpoint_and_its_ensemble(searched, val_images, view_names):
    assert_sane(echotune.predict(searched, val_images, conf=0.0), val_images, view_names)
    assert_sane(echotune.predict(searched.ensemble, val_images, conf=0.0), val_images, view_names)


@pytest.mark.ray
def test_a_second_search_into_the_same_folder_is_refused(searched, data_yaml):
    with pytest.raises(FileExistsError, match="resume=True"):
        echotune.run_search(data=data_yaml, name="api", storage=str(searched.experiment.parent))
