from __future__ import annotations

import numpy as np
import pytest

from echotune.data.labels import NO_VIEW, parse_label_file


def parse(tmp_path, text, nc=4, n_views=3):
    path = tmp_path / "x.txt"
    path.write_text(text)
    labels, problems = parse_label_file(path, nc, n_views)
    return labels, problems, path


def test_yolo_line_becomes_xyxy(tmp_path):
    labels, problems, _ = parse(tmp_path, "2 0.5 0.4 0.2 0.1\n0 1 0\n")
    assert problems == []
    np.testing.assert_allclose(labels.boxes, [[0.4, 0.35, 0.6, 0.45]], atol=1e-6)
    assert labels.classes.tolist() == [2] and labels.view == 1


def test_polygon_becomes_enclosing_box(tmp_path):
    labels, problems, _ = parse(tmp_path, "1 0.1 0.2 0.3 0.25 0.35 0.4 0.05 0.45\n\n0 0 1\n")
    assert problems == []
    np.testing.assert_allclose(labels.boxes, [[0.05, 0.2, 0.35, 0.45]], atol=1e-6)
    assert labels.classes.tolist() == [1] and labels.view == 2


def test_blank_lines_skipped_and_several_boxes(tmp_path):
    labels, problems, _ = parse(tmp_path, "\n0 0.5 0.5 0.2 0.2\n\n\n3 0.1 0.1 0.2 0.2 0.2 0.2 0.1 0.2\n\n\n1 0 0\n\n")
    assert problems == []
    assert labels.classes.tolist() == [0, 3] and labels.view == 0


def test_view_only_and_empty_file(tmp_path):
    labels, problems, _ = parse(tmp_path, "0 0 1\n")
    assert problems == [] and labels.boxes.shape == (0, 4) and labels.view == 2
    labels, problems, _ = parse(tmp_path, "")
    assert problems == [] and labels.boxes.shape == (0, 4) and labels.view == NO_VIEW


def test_missing_view_line_is_detection_only(tmp_path):
    labels, problems, _ = parse(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    assert problems == [] and labels.view == NO_VIEW and len(labels.boxes) == 1


@pytest.mark.parametrize(
    "text, line, kind, message, value",
    [
        ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n0 1 0\n", 2, "class-id", "class id 7 >= nc=4 (valid: 0..3)", "7"),
        ("x 0.5 0.5 0.2 0.2\n", 1, "class-id", "class id is not a non-negative integer", "x"),
        ("1.5 0.5 0.5 0.2 0.2\n", 1, "class-id", "class id is not a non-negative integer", "1.5"),
        ("0 0.5 1.2 0.2 0.2\n", 1, "range", "cy is outside [0, 1]", "1.2"),
        ("0 0.1 0.2 0.3 0.2 0.35 -0.4 0.1 0.4\n", 1, "range", "y3 is outside [0, 1]", "-0.4"),
        ("0 0.5 0.5 nan 0.2\n", 1, "range", "w is outside [0, 1]", "nan"),
        ("0 0.5 0.5 abc 0.2\n", 1, "number", "w is not a number", "abc"),
        ("\n\n0 0.5 0.5 0.2\n", 3, "token-count", "got 4 tokens", "0 0.5 0.5 0.2"),
        ("0 0.5 0.5 0.0 0.2\n", 1, "box-size", "zero width or height", "0 0.5 0.5 0.0 0.2"),
        ("0 0.5 0.5 0.2 0.2\n0 1 1\n", 2, "view-line", "not one-hot (2 entries are 1", "0 1 1"),
        ("0 0.5 0.5 0.2 0.2\n0 0 0\n", 2, "view-line", "not one-hot (0 entries are 1", "0 0 0"),
        ("0 0.5 0.5 0.2 0.2\n\n0 1 0 0\n", 3, "view-line", "view line has 4 entries, expected 3", "0 1 0 0"),
        ("0 1 0\n0 0.5 0.5 0.2 0.2\n", 1, "view-line", "must be the last non-blank line", "0 1 0"),
    ],
)
def test_errors_name_file_line_and_value(tmp_path, text, line, kind, message, value):
    _, problems, path = parse(tmp_path, text)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.is_error and problem.kind == kind and problem.path == path and problem.line == line
    assert message in problem.message and problem.value == value
    assert str(problem).startswith(f"{path}:{line}: ") and repr(value) in str(problem)


def test_all_problems_of_a_file_are_collected(tmp_path):
    _, problems, _ = parse(tmp_path, "9 0.5 0.5 0.2 0.2\n0 2 0.5 0.2 0.2\n0 0.5\n0 1 0\n")
    assert [p.line for p in problems] == [1, 2, 3]


def test_non_utf8_label_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    labels, problems = parse_label_file(path, 4, 3)
    assert len(problems) == 1 and "not UTF-8" in problems[0].message and labels.view == NO_VIEW
