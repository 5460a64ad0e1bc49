"""Issue #18 item 2: a single run's per-epoch results.csv and TensorBoard events (echotune.engine.run_log), alone
and through search/train.py, including a resume.

The events are read back from the bytes on disk (TFRecord framing, tensorboardX's Event proto) with TensorBoard's
purge rule applied: a SessionLog START at step s hides every earlier value at a step >= s. That is what
TensorBoard's EventAccumulator shows, without needing the tensorboard package installed.
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from echotune.engine.run_log import CSV_NAME, TENSORBOARD_DIR, RunLog, render_csv
from tests.conftest import TINY_TRAIN
from tests.search.test_cli import command, load, train_argv


def read_records(path: Path) -> list[bytes]:
    """The payloads of a TFRecord file: u64 length, u32 crc of it, payload, u32 crc of it (crcs not checked)."""
    data, records, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        records.append(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
    assert at == len(data), f"{path} ends in a torn record"
    return records


def visible_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] as TensorBoard shows them: files in name order, purges applied."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        for record in read_records(path):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def epoch_metrics(epoch: int, **extra) -> dict:
    return {
        "val/map50": 0.1 * epoch,
        "val/score": 0.05 * epoch,
        "train/loss": 3.0 / epoch,
        "gradnorm/w_det": 1.0,
        "gradnorm/w_view": 1.0 + epoch / 10,
        "stage": 1 + (epoch > 2),
        "epoch": epoch,
        **extra,
    }


def test_csv_has_a_stable_header_and_one_row_per_epoch(tmp_path):
    with RunLog(tmp_path, tensorboard=False) as log:
        for epoch in (1, 2, 3):
            log(epoch_metrics(epoch), None)
    header, rows = read_csv(tmp_path / CSV_NAME)
    assert header[:2] == ["epoch", "stage"]  # then the metrics in the engine's order
    assert set(header) == set(epoch_metrics(1))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["val/map50"]) == pytest.approx(0.3) and float(rows[1]["gradnorm/w_view"]) == 1.2
    assert not (tmp_path / TENSORBOARD_DIR).exists()  # tensorboard=False writes the CSV only


def test_a_metric_that_appears_later_gets_a_column_and_empty_cells_before():
    text = render_csv([epoch_metrics(1), epoch_metrics(2, lr=0.01)])
    header, *lines = text.splitlines()
    assert header.split(",")[-1] == "lr" and lines[0].endswith(",") and lines[1].endswith(",0.01")


def test_events_hold_one_tag_per_metric_at_step_epoch(tmp_path):
    with RunLog(tmp_path) as log:
        for epoch in (1, 2):
            log(epoch_metrics(epoch, name="not a number", diverged=True), None)  # neither is a scalar tag
    scalars = visible_scalars(tmp_path / TENSORBOARD_DIR)
    assert set(scalars) == set(epoch_metrics(1)) - {"epoch"}  # the epoch is the step
    assert scalars["val/map50"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2))]
    assert scalars["gradnorm/w_view"] == [(1, pytest.approx(1.1)), (2, pytest.approx(1.2))]


def test_events_are_on_disk_after_each_epoch_without_close(tmp_path):
    log = RunLog(tmp_path)  # as when the process is killed: never closed
    log(epoch_metrics(1), None)
    assert visible_scalars(tmp_path / TENSORBOARD_DIR)["val/score"] == [(1, pytest.approx(0.05))]
    log.close()


def test_a_resume_continues_without_duplicated_epochs(tmp_path):
    """A killed run logged epochs 1-4 but its last checkpoint holds 3; the resume continues from 3 to 5."""
    with RunLog(tmp_path) as log:
        for epoch in (1, 2, 3, 4):
            log(epoch_metrics(epoch, **{"val/map50": 9.0} if epoch == 4 else {}), None)
    history = [epoch_metrics(epoch) for epoch in (1, 2, 3)]
    with RunLog(tmp_path, history=history) as log:  # same folder, immediately: same second, other file
        for epoch in (4, 5):
            log(epoch_metrics(epoch), None)
    _, rows = read_csv(tmp_path / CSV_NAME)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[3]["val/map50"]) == pytest.approx(0.4)  # the resumed epoch 4, not the killed run's
    assert len(list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    scalars = visible_scalars(tmp_path / TENSORBOARD_DIR)
    assert [s for s, _ in scalars["val/map50"]] == [1, 2, 3, 4, 5]
    assert scalars["val/map50"][3] == (4, pytest.approx(0.4))


def test_a_resume_into_a_new_folder_gets_the_whole_curve(tmp_path):
    with RunLog(tmp_path / "b", history=[epoch_metrics(1), epoch_metrics(2)]) as log:
        log(epoch_metrics(3), None)
    _, rows = read_csv(tmp_path / "b" / CSV_NAME)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [s for s, _ in visible_scalars(tmp_path / "b" / TENSORBOARD_DIR)["train/loss"]] == [1, 2, 3]


def test_train_cli_writes_csv_and_events_and_resumes_them(tiny_synthetic, tmp_path, capsys):
    """search/train.py end to end: 2 epochs, then `echotune train --resume` to 3 (1,0,1 then 1,1,1 per stage)."""
    train = load("train")
    out = tmp_path / "run"
    common = train_argv(tiny_synthetic.config.yaml_path, out, "--batch-size", TINY_TRAIN["batch_size"])
    assert train.main([*common, "--epochs", "1,0,1"]) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {out / TENSORBOARD_DIR}" in printed and str(out / CSV_NAME) in printed
    header, rows = read_csv(out / CSV_NAME)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"val/map50", "val/score", "train/loss", "gradnorm/w_det", "gradnorm/w_view", "stage", "lr"} <= set(header)
    first_map50 = [float(r["val/map50"]) for r in rows]

    # `echotune train --out OUT --resume`: --resume alone continues OUT's last.pt (the script's form, a path, is
    # tests/reliability/test_bad_input.py's)
    assert command("train", "echotune")([*common, "--epochs", "1,1,1", "--resume"]) == 0
    header, rows = read_csv(out / CSV_NAME)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val/map50"]) for r in rows[:2]] == first_map50  # the first run's epochs, kept
    scalars = visible_scalars(out / TENSORBOARD_DIR)
    assert set(scalars) == set(header) - {"epoch"}  # the same names as the CSV's columns
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [1, 2, 3], tag
    assert [v for _, v in scalars["val/map50"]] == pytest.approx([float(r["val/map50"]) for r in rows])


def test_train_cli_no_tensorboard_writes_the_csv_only(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        load("train").main(train_argv(tiny_synthetic.config.yaml_path, out, "--epochs", "1", "--no-tensorboard")) == 0
    )
    assert "tensorboard --logdir" not in capsys.readouterr().out
    assert (out / CSV_NAME).is_file() and not (out / TENSORBOARD_DIR).exists()
