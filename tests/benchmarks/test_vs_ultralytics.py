"""The EchoTune-vs-Ultralytics benchmark: the frame conversion of Ultralytics' predictions on a hand-made box, the
variant configs, the seed-mean/ratio/goal arithmetic on hand-made numbers, and its quick mode end to end with the
real Ultralytics virtualenv (schema and sanity only; never a quality threshold)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import vs_ultralytics as vs  # benchmarks/ is on sys.path (conftest.py)

from echotune.data.check import check_dataset
from echotune.engine import TrainConfig
from tests.data.export_fixture import write_image

NAMES = "names: [AR, MR, PR, TR]\nview_names: [PSAX, PLAX, A4C]\n"


def echo_like_dataset(tmp_path: Path) -> Path:
    """Frames of 430 x 320 px (the real export's size: letterboxing to 160 px scales by 0.372 and pads 20 px at the
    top), one jet box each, two frames per video. Returns data.yaml."""
    boxes = {
        "train": ["2 0.50 0.50 0.20 0.20"],
        "val": ["1 0.40 0.55 0.18 0.20", "0 0.62 0.30 0.10 0.24"],
        "test": ["3 0.30 0.35 0.17 0.21"],
    }
    for split, lines in boxes.items():
        for i, line in enumerate(lines):
            for frame in (1, 2):
                stem = f"vid{split}{i}.mp4-{frame}"
                write_image(tmp_path / split / "images" / f"{stem}.png", h=320, w=430, seed=i + frame)
                label = tmp_path / split / "labels" / f"{stem}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(f"{line}\n\n0 1 0\n")
    (tmp_path / "data.yaml").write_text(f"train: train/images\nval: val/images\ntest: test/images\n{NAMES}")
    return tmp_path / "data.yaml"


def gt_in_original_pixels(sample) -> np.ndarray:
    h, w = sample.image_hw
    return sample.labels.boxes * np.array([w, h, w, h], np.float32)


def ultralytics_like(samples, shift_px: float = 0.0) -> list[dict]:
    """What ultralytics_runner writes: per image, boxes xyxy in original pixels (here the GT, optionally shifted)."""
    return [
        {
            "image": str(s.image),
            "shape_hw": list(s.image_hw),
            "scores": [0.9],
            "labels": s.labels.classes.tolist(),
            "boxes": (gt_in_original_pixels(s) + shift_px).tolist(),
        }
        for s in samples
    ]


# ---------------------------------------------------------------- the coordinate frame


def test_a_hand_made_box_lands_where_echotune_puts_its_target(tmp_path):
    data = check_dataset(echo_like_dataset(tmp_path))
    targets, letterboxes, views = vs.split_targets(data, "val", 160)
    lb = letterboxes[0]
    assert lb.scale == pytest.approx(160 / 430) and (lb.pad_x, lb.pad_y) == (0, 20)
    # MR box cx 0.40 cy 0.55 w 0.18 h 0.20 on 430 x 320: x 133.3..210.7, y 144..208 px in the original image
    original = {"boxes": [[133.3, 144.0, 210.7, 208.0]], "scores": [0.5], "labels": [1]}
    converted = vs.to_echotune_frame(original, lb)
    expected = np.array([[133.3, 144.0, 210.7, 208.0]]) * 160 / 430 + [0, 20, 0, 20]
    np.testing.assert_allclose(converted["boxes"], expected, rtol=1e-5)
    np.testing.assert_allclose(converted["boxes"], targets[0]["boxes"], atol=1e-3)  # = EchoDataset's target
    assert converted["boxes"].dtype == np.float32 and converted["labels"].dtype == np.int64
    assert views.tolist() == [1, 1, 1, 1]


def test_predictions_equal_to_the_ground_truth_score_a_perfect_map(tmp_path):
    data = check_dataset(echo_like_dataset(tmp_path))
    perfect = vs.ultralytics_evaluation(ultralytics_like(data.samples["test"]), data, "test", 160)
    assert perfect.detection().map50_95 == pytest.approx(1.0)
    assert perfect.group_names == ("vidtest0",)  # bootstrap groups are the source videos
    shifted = vs.ultralytics_evaluation(ultralytics_like(data.samples["test"], shift_px=12.0), data, "test", 160)
    assert 0 < shifted.detection().map50_95 < 1.0


def test_predictions_for_other_images_or_order_are_refused(tmp_path):
    data = check_dataset(echo_like_dataset(tmp_path))
    with pytest.raises(ValueError, match="order"):
        vs.ultralytics_evaluation(ultralytics_like(data.samples["val"])[::-1], data, "val", 160)
    resized = ultralytics_like(data.samples["val"])
    resized[0]["shape_hw"] = [160, 215]
    with pytest.raises(ValueError, match="other sizes"):
        vs.ultralytics_evaluation(resized, data, "val", 160)


def test_the_runner_refuses_every_non_loopback_connection_at_once(monkeypatch):
    import socket

    import ultralytics_runner as runner

    for name in ("connect", "connect_ex"):  # restored after the test
        monkeypatch.setattr(socket.socket, name, getattr(socket.socket, name))
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
    monkeypatch.setattr(runner, "NETWORK_ATTEMPTS", [])
    runner.block_network()
    with socket.socket() as sock, pytest.raises(OSError, match="blocked"):
        sock.settimeout(30)
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: unanswered, it would hang until the time-out
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("github.com", 443), timeout=30)  # refused at the name lookup
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname(), timeout=5):  # loopback still works
        pass
    assert runner.NETWORK_ATTEMPTS == ["connect ('192.0.2.1', 443)", "getaddrinfo 'github.com'"]


# ---------------------------------------------------------------- variants


def test_variants_apply_their_overrides_then_the_set_options():
    base = {"epochs": 3, "img_size": 64, "batch_size": 8, "cpus": 1, "workers": 0, "device": "cpu", "seed": 1}
    shared = vs.variant_config("shared-gradnorm", base, {"view_dropout": 0.1})
    only_det = vs.variant_config("detection-only", base, {"view_dropout": 0.1})
    assert (shared.arch, shared.balance, shared.model_scale) == ("shared", "gradnorm", "n")
    assert shared.view_loss_weight == 1.0
    assert (only_det.balance, only_det.view_loss_weight) == ("fixed", 0.0)
    assert shared.view_dropout == only_det.view_dropout == 0.1 and only_det.seed == 1
    with pytest.raises(ValueError, match="unknown config key"):
        vs.variant_config("shared-gradnorm", base, {"no_such_key": 1})


def test_parse_assignment_reads_literals_and_bare_strings():
    assert vs.parse_assignment("head=anchorfree") == ("head", "anchorfree")
    assert vs.parse_assignment("view_loss_weight=0.5") == ("view_loss_weight", 0.5)
    assert vs.parse_assignment("stage_split=(0.2,0.6,0.2)") == ("stage_split", (0.2, 0.6, 0.2))


def test_view_loss_weight_is_for_the_fixed_balance_only():
    assert TrainConfig.from_dict({"balance": "fixed", "view_loss_weight": 0.0}).view_loss_weight == 0.0
    with pytest.raises(ValueError, match="balance=fixed only"):
        TrainConfig.from_dict({"balance": "gradnorm", "view_loss_weight": 0.0})
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig.from_dict({"balance": "fixed", "view_loss_weight": -1.0})


def test_detection_only_trains_with_a_zero_view_weight(tiny_synthetic):
    from echotune.engine import fit

    cfg = vs.variant_config(
        "detection-only",
        {"epochs": 1, "img_size": 64, "batch_size": 8, "cpus": 1, "model_scale": "test", "workers": 0},
        {},
    )
    result = fit(cfg, tiny_synthetic, log=lambda _: None)
    assert result.last["gradnorm/w_view"] == 0.0 and result.last["gradnorm/w_det"] == 1.0


# ---------------------------------------------------------------- arithmetic on hand-made numbers


def test_timing_leaves_out_the_first_epoch_unless_it_is_the_only_one():
    epochs = [
        {"epoch_s": 9.0, "train_s": 5.0, "images": 100},
        {"epoch_s": 4.0, "train_s": 2.0, "images": 100},
        {"epoch_s": 6.0, "train_s": 3.0, "images": 100},
    ]
    assert vs.timing(epochs) == {"s_per_epoch": 5.0, "images_per_s": 40.0, "epochs_timed": 2}
    assert vs.timing(epochs[:1]) == {"s_per_epoch": 9.0, "images_per_s": 20.0, "epochs_timed": 1}


def row(
    model: str, kind: str, seed: int, val: float, test: float, s_per_epoch: float = 10.0, spread: float = 0.05
) -> dict:
    """A scored row with hand-made mAP50-95 (other detection metrics = it) and 4 'video resamples' around it."""
    offsets = np.array([-spread, -spread / 2, spread / 2, spread])
    metrics = vs.DETECTION_METRICS + (vs.VIEW_METRICS if kind == "echotune" else ())

    def split(value):
        return {m: {"value": value, "low": value - spread, "high": value + spread} for m in metrics}

    return {
        "model": model,
        "kind": kind,
        "seed": seed,
        "conf": 0.3,
        "val": split(val),
        "test": split(test),
        "timing": {"s_per_epoch": s_per_epoch, "images_per_s": 100.0 / s_per_epoch},
        "_draws": {s: {m: v + offsets for m in metrics} for s, v in (("val", val), ("test", test))},
        "_evaluations": {},
    }


def hand_made_rows() -> list[dict]:
    # yolov8n 0.20/0.20 (mean of seeds 0.2, 0.2); shared 0.30 val, 0.24 test; detection-only 0.25 val, 0.30 test:
    # the best variant is shared (named on val), although detection-only is better on test.
    return [
        row("yolov8n", "ultralytics", 0, 0.18, 0.22, 10.0),
        row("yolov8n", "ultralytics", 1, 0.22, 0.18, 10.0),
        row("shared-gradnorm", "echotune", 0, 0.28, 0.26, 11.0),
        row("shared-gradnorm", "echotune", 1, 0.32, 0.22, 13.0),
        row("detection-only", "echotune", 0, 0.25, 0.30, 8.0),
        row("detection-only", "echotune", 1, 0.25, 0.30, 8.0),
    ]


def test_summary_means_over_seeds_best_named_on_val_and_ratios():
    summary = vs.summarise(hand_made_rows(), ("val", "test"))
    assert summary["best_variant"] == "shared-gradnorm"
    yolo = summary["models"]["yolov8n"]
    assert yolo["test"]["map50_95"]["value"] == pytest.approx(0.20) and "view_acc" not in yolo["test"]
    assert yolo["test"]["map50_95"]["low"] < 0.20 < yolo["test"]["map50_95"]["high"]
    assert summary["models"]["shared-gradnorm"]["s_per_epoch"] == pytest.approx(12.0)
    c = summary["comparisons"]
    assert c["best_over_reference_val"]["value"] == pytest.approx(0.30 / 0.20)
    assert c["best_over_reference_test"]["value"] == pytest.approx(0.24 / 0.20)
    # per resample: (0.24 + o) / (0.20 + o), o in -0.05..0.05: 0.19/0.15 = 1.267 down to 0.29/0.25 = 1.16
    assert 1.16 - 1e-9 <= c["best_over_reference_test"]["low"] < 1.2 < c["best_over_reference_test"]["high"] <= 1.267
    assert c["time_ratio"] == pytest.approx(1.2)
    assert c["shared_over_detection_only_test"]["value"] == pytest.approx(0.24 / 0.30)
    diff = c["minus_reference_test"]["detection-only"]["map50_95"]
    assert diff == pytest.approx({"value": 0.10, "low": 0.10, "high": 0.10})  # paired: the same offsets cancel


def test_goal_lines_say_met_missed_and_not_measurable():
    summary = vs.summarise(hand_made_rows(), ("val", "test"))
    lines = "\n".join(vs.goals(summary))
    assert "test mAP50-95: 1.20 [" in lines and "(goal >= 1.2: met)" in lines  # 0.24 / 0.20 on test
    assert "val mAP50-95: 1.50" in lines
    assert "time per epoch, shared-gradnorm / yolov8n: 1.20 (goal <= 1.2: met)" in lines
    assert "detection-only, test mAP50-95: 0.80" in lines and "(goal >= 1.0: **missed**)" in lines
    summary["comparisons"]["time_ratio"] = None
    assert "time per epoch, shared-gradnorm / yolov8n: n/a (goal <= 1.2: not measurable)" in "\n".join(
        vs.goals(summary)
    )


def test_ratio_without_a_positive_reference_is_not_a_number():
    zero = (0.0, np.zeros(4))
    assert vs.ratio_estimate((0.3, np.full(4, 0.3)), zero) == {"value": None, "low": None, "high": None}


def test_markdown_table_has_the_issue_columns():
    rows = hand_made_rows()
    result = {
        "date": "2026-01-01",
        "machine": "2 cores",
        "versions": {"python": "3.11"},
        "command": "python x",
        "settings": {
            "seeds": [0, 1],
            "epochs": 20,
            "img_size": 160,
            "batch_size": 16,
            "threads": 1,
            "model_scale": None,
            "set": {"head": "anchorfree"},
            "data": "data.yaml",
        },
        "ultralytics": {"version": "8.4.190"},
        "splits": ["val", "test"],
        "summary": vs.summarise(rows, ("val", "test")),
        "runs": rows,
    }
    text = vs.markdown(result)
    assert "| model | val mAP50 | val mAP50-95 | test mAP50 | test mAP50-95 | test P / R | s/epoch | img/s |" in text
    assert "| shared-gradnorm (best, named on val) | 0.300 [" in text and "not concurrently" in text
    assert "--set head=anchorfree" in text and "Goals:" in text and "| detection-only | +0.100" in text


# ---------------------------------------------------------------- end to end, with the real Ultralytics venv


@pytest.fixture(scope="session")
def ultralytics_python():
    """The cached Ultralytics venv (ECHOTUNE_CACHE, else ~/.cache/echotune); created on the first run ever (about
    4 minutes and 6 GB), reused afterwards. The benchmark run gets it by --ultralytics-python, because
    run_benchmark gives each run a fresh private cache folder."""
    from ultralytics_env import ensure_venv

    return ensure_venv()


@pytest.mark.slow
def test_quick_mode_end_to_end(tiny_synthetic, tmp_path, run_benchmark, ultralytics_python):
    done = run_benchmark(
        "vs_ultralytics.py",
        "--quick",
        "--data",
        str(tiny_synthetic.config.yaml_path),
        "--ultralytics-python",
        str(ultralytics_python),
        "--out",
        str(tmp_path),
        timeout=300,
    )
    result = json.loads((tmp_path / "vs_ultralytics-quick.json").read_text())
    markdown = (tmp_path / "vs_ultralytics-quick.md").read_text()
    assert result["ultralytics"]["version"] == "8.4.190" and result["splits"] == ["val", "test"]
    assert [r["model"] for r in result["runs"]] == ["yolov8n", "shared-gradnorm", "detection-only"]
    for run in result["runs"]:
        assert len(run["epochs"]) == 2 and run["timing"]["s_per_epoch"] > 0 and run["timing"]["images_per_s"] > 0
        assert Path(run["checkpoint"]).is_file() and 0.0 <= run["conf"] <= 1.0
        for split in ("val", "test"):
            for metric in vs.DETECTION_METRICS:
                e = run[split][metric]
                assert 0.0 <= e["low"] <= e["value"] <= e["high"] <= 1.0, (run["model"], split, metric, e)
    yolo, shared, only_det = result["runs"]
    assert yolo["network_attempts"] == [] and yolo["settings"]["sync"] is False
    assert all(e["torch_threads"] == 1 and e["images"] == len(tiny_synthetic.samples["train"]) for e in yolo["epochs"])
    assert "view_acc" not in yolo["test"] and "view_acc" in shared["test"]
    assert shared["config"]["model_scale"] == "test" and only_det["config"]["view_loss_weight"] == 0.0
    assert set(shared["minus_yolov8n_test_paired"]) == set(vs.DETECTION_METRICS)
    assert set(result["summary"]["models"]) == {"yolov8n", "shared-gradnorm", "detection-only"}
    assert "| model | val mAP50 | val mAP50-95 | test mAP50 | test mAP50-95 | test P / R | s/epoch | img/s |" in (
        markdown
    )
    assert markdown.count("\n- ") == 4 and "Goals:" in done.stdout
    assert yolo["own_val_map50_95"] is not None and "Ultralytics' own validator" in markdown
