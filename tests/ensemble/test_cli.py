"""`echotune ensemble` and `echotune predict` (and their old scripts), run in-process: exit codes, messages, files
written."""

from __future__ import annotations

import csv
import json

import cv2
import pytest

from tests.ensemble.conftest import ranked, write_image
from tests.search.test_cli import command, load


@pytest.fixture(scope="module")
def cli_run(experiment, tmp_path_factory):
    """The ensemble CLI run once on a copy of the experiment, written with --out into the copy's `ensemble/`
    (the default folder, named explicitly; test_ensemble_out_writes_elsewhere checks another):
    (exit code, stdout, stderr, experiment folder)."""
    import contextlib
    import io
    import shutil

    folder = tmp_path_factory.mktemp("cli") / "exp"
    shutil.copytree(experiment.path, folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load("ensemble").main(
            [str(folder), "--top-k", "2", "--tune-trials", "3", "--device", "cpu", "--out", str(folder / "ensemble")]
        )
    return code, out.getvalue(), err.getvalue(), folder


def test_ensemble_cli_builds_prints_the_comparison_and_finds_the_dataset(experiment, cli_run):
    code, out, err, folder = cli_run
    assert code == 0
    assert f"Dataset (from {folder / 'search.json'}): {experiment.data.config.yaml_path}" in err
    table = out[out.index("split test") :].splitlines()
    assert "bootstrap over source videos; gain: paired" in table[0]
    assert table[1].split() == ["metric", "best", "single", f"({ranked(experiment)[0]})", "ensemble", "(k=2)", "gain"]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:11]}
    assert list(rows) == ["mAP50", "mAP50-95", "P", "R", "F1", "view_acc", "view_f1", "kappa", "score"]
    saved = json.loads((folder / "ensemble" / "metrics.json").read_text())
    for cells in rows.values():  # value [low, high] for the single member, the ensemble, and the signed gain
        assert len(cells) == 9 and cells[6][0] in "+-" and cells[7].startswith(("[+", "[-"))
    score = saved["ci95"]["gain"]["score"]
    assert rows["score"][6:] == [f"{score['value']:+.3f}", f"[{score['low']:+.3f},", f"{score['high']:+.3f}]"]
    assert (folder / "ensemble" / "manifest.yaml").is_file()
    assert json.loads((folder / "ensemble" / "metrics.json").read_text())["arguments"]["top_k"] == 2


def test_ensemble_cli_bad_input_exits_2_with_a_message(experiment, tmp_path, capsys):
    ensemble = load("ensemble")
    assert ensemble.main([str(experiment.path), "--split", "holdout"]) == 2
    assert "error: split='holdout' has no images" in capsys.readouterr().err
    assert ensemble.main([str(tmp_path / "nope")]) == 2
    assert f"error: {tmp_path / 'nope'}: no such experiment folder" in capsys.readouterr().err
    assert ensemble.main([str(tmp_path), "--data", str(experiment.data.config.yaml_path)]) == 2
    assert f"error: {tmp_path / 'leaderboard.parquet'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        ensemble.main([str(experiment.path), "--tta", "mirror"])
    assert exit_info.value.code == 2 and "invalid choice: 'mirror'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        ensemble.main(["--help"])
    assert exit_info.value.code == 0 and "--diverse" in capsys.readouterr().out


def test_predict_cli_writes_json_csv_and_drawings_for_odd_images(experiment, tmp_path, capsys):
    source = tmp_path / "frames"
    grey = write_image(source / "grey.png", (97, 203))
    bgr = write_image(source / "sub" / "wide.jpg", (61, 300, 3), seed=1)
    (source / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "preds"
    predict = load("predict")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(experiment.checkpoints["t_shared0"]),
                "--source",
                str(source),
                "--out",
                str(out),
                "--conf",
                "0.05",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.png: unreadable or not an image" in captured.err
    assert "Predicted 2 image(s)" in captured.out
    for image, (h, w) in ((grey, (97, 203)), (bgr, (61, 300))):
        record = json.loads((out / f"{image.stem}.json").read_text())
        assert (record["width"], record["height"]) == (w, h) and record["view"] in ("PSAX", "PLAX", "A4C")
        assert record["view_prob"] == max(record["view_probs"].values())
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and det["score"] >= 0.05
            assert det["class"] in ("AR", "MR", "PR", "TR")
        assert cv2.imread(str(out / f"{image.stem}.jpg")).shape == (h, w, 3)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "class", "score", "x1", "y1", "x2", "y2", "view", "view_prob"]
    assert {r["image"] for r in rows} == {str(grey), str(bgr)}


def test_predict_cli_with_an_ensemble_and_its_errors(experiment, cli_run, tmp_path, capsys):
    predict = load("predict")
    ensemble_dir = cli_run[3] / "ensemble"
    image = write_image(tmp_path / "one.png", (50, 70, 3))
    assert predict.main(["--ensemble", str(ensemble_dir), "--source", str(image), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "one.json").read_text())["image"] == str(image)
    # `echotune predict MODEL`: the experiment folder names its ensemble
    assert command("predict", "echotune")([cli_run[3], "--source", image, "--out", tmp_path / "o3"]) == 0
    assert (tmp_path / "o3" / "one.json").read_bytes() == (tmp_path / "o" / "one.json").read_bytes()
    capsys.readouterr()
    assert predict.main(["--ensemble", str(tmp_path / "none"), "--source", str(image)]) == 2
    assert f"error: ensemble manifest {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(tmp_path / "x.pt"), "--source", str(image)]) == 2
    assert f"error: checkpoint {tmp_path / 'x.pt'} does not exist" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(image), "--source", str(tmp_path / "nothing")]) == 2
    assert "error: --source" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.png").write_bytes(b"")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(experiment.checkpoints["t_dual"]),
                "--source",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    assert "none of the 1 image(s)" in capsys.readouterr().err


def test_ensemble_out_writes_elsewhere_and_leaves_the_experiment_alone(experiment, tmp_path, capsys):
    """`echotune ensemble EXP --out DIR`: the manifest and metrics land in DIR, nothing in EXP/ensemble."""
    from echotune.search.cli import main

    out = tmp_path / "deploy"
    before = sorted(p.relative_to(experiment.path) for p in experiment.path.rglob("*"))
    assert (
        main(
            [
                "ensemble",
                str(experiment.path),
                "--top-k",
                "2",
                "--tune-trials",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "manifest.yaml").is_file() and (out / "metrics.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["arguments"]["top_k"] == 2
    assert sorted(p.relative_to(experiment.path) for p in experiment.path.rglob("*")) == before
