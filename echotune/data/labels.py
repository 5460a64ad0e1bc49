"""Label files: detection lines plus one one-hot view line.

Detection line: `cls cx cy w h` (YOLO) or `cls x1 y1 x2 y2 x3 y3 x4 y4` (4-corner polygon, turned into its
enclosing box); values normalised to [0, 1]. The view line is the last non-blank line, `len(view_names)`
entries of 0/1 summing to 1 (e.g. `0 1 0`). Blank lines are skipped (real exports put one between the boxes
and the view line). No boxes is valid; no view line means "detection only" (view = -1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echotune.data.problems import ERROR, WARNING, Problem

NO_VIEW = -1
YOLO_TOKENS = 5
POLYGON_TOKENS = 9
_YOLO_FIELDS = ("cx", "cy", "w", "h")
_POLYGON_FIELDS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


@dataclass(frozen=True)
class ImageLabels:
    boxes: np.ndarray  # (N, 4) float32, normalised xyxy in [0, 1]
    classes: np.ndarray  # (N,) int64 class ids into `names`
    view: int  # index into `view_names`, or NO_VIEW

    @classmethod
    def empty(cls) -> ImageLabels:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), NO_VIEW)


def is_view_candidate(tokens: list[str]) -> bool:
    """A line of 0/1 integers whose length cannot be a detection line: a view line (maybe malformed)."""
    return len(tokens) not in (YOLO_TOKENS, POLYGON_TOKENS) and all(t in ("0", "1") for t in tokens)


def last_content_line(path: Path) -> list[str] | None:
    """Tokens of the last non-blank line of a label file (None when the file has none or can't be read)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for text in reversed(lines):
        if text.strip():
            return text.split()
    return None


def parse_label_file(path: Path, nc: int, n_views: int) -> tuple[ImageLabels, list[Problem]]:
    """Parse one label file; every problem names this file, the 1-based line and the offending value."""
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return ImageLabels.empty(), [Problem(ERROR, "label-file", path, f"not UTF-8 text ({exc.reason})")]
    except OSError as exc:
        return ImageLabels.empty(), [Problem(ERROR, "label-file", path, f"cannot read label file: {exc.strerror}")]

    numbered = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    view = NO_VIEW
    if numbered and is_view_candidate(numbered[-1][1]):
        number, tokens = numbered.pop()
        view = _parse_view(path, number, tokens, n_views, problems)

    boxes, classes = [], []
    for number, tokens in numbered:
        if is_view_candidate(tokens):
            problems.append(
                Problem(
                    ERROR, "view-line", path, "a view line must be the last non-blank line", number, " ".join(tokens)
                )
            )
            continue
        parsed = _parse_detection(path, number, tokens, nc, problems)
        if parsed is not None:
            classes.append(parsed[0])
            boxes.append(parsed[1])
    labels = ImageLabels(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64), view)
    return labels, problems


def _parse_view(path: Path, number: int, tokens: list[str], n_views: int, problems: list[Problem]) -> int:
    value = " ".join(tokens)
    if len(tokens) != n_views:
        problems.append(
            Problem(
                ERROR,
                "view-line",
                path,
                f"view line has {len(tokens)} entries, expected {n_views} (one per view name)",
                number,
                value,
            )
        )
        return NO_VIEW
    ones = [i for i, t in enumerate(tokens) if t == "1"]
    if len(ones) != 1:
        problems.append(
            Problem(
                ERROR,
                "view-line",
                path,
                f"view line is not one-hot ({len(ones)} entries are 1, expected exactly one)",
                number,
                value,
            )
        )
        return NO_VIEW
    return ones[0]


def _parse_detection(
    path: Path, number: int, tokens: list[str], nc: int, problems: list[Problem]
) -> tuple[int, list[float]] | None:
    line_text = " ".join(tokens)

    def error(kind: str, message: str, value: str = line_text) -> None:
        problems.append(Problem(ERROR, kind, path, message, number, value))

    if len(tokens) not in (YOLO_TOKENS, POLYGON_TOKENS):
        error(
            "token-count",
            f"expected {YOLO_TOKENS} tokens (cls cx cy w h), {POLYGON_TOKENS} (cls x1 y1 .. x4 y4) "
            f"or a one-hot view line as the last line; got {len(tokens)} tokens",
        )
        return None
    cls = _parse_class(tokens[0])
    if cls is None:
        error("class-id", "class id is not a non-negative integer", tokens[0])
        return None
    if cls >= nc:
        error("class-id", f"class id {cls} >= nc={nc} (valid: 0..{nc - 1})", tokens[0])
        return None
    fields = _YOLO_FIELDS if len(tokens) == YOLO_TOKENS else _POLYGON_FIELDS
    values = []
    for name, token in zip(fields, tokens[1:]):
        try:
            value = float(token)
        except ValueError:
            error("number", f"{name} is not a number", token)
            return None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            error("range", f"{name} is outside [0, 1] (labels must be normalised)", token)
            return None
        values.append(value)

    if len(tokens) == YOLO_TOKENS:
        cx, cy, w, h = values
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    else:
        xs, ys = values[0::2], values[1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    box = [min(max(v, 0.0), 1.0) for v in box]  # a YOLO box may poke past the border by rounding: clip
    if box[2] <= box[0] or box[3] <= box[1]:
        error("box-size", "box has zero width or height")
        return None
    return cls, box


def _parse_class(token: str) -> int | None:
    try:
        value = float(token)
    except ValueError:
        return None
    if not value.is_integer() or value < 0:
        return None
    return int(value)


def missing_view_problem(path: Path, strict: bool) -> Problem:
    consequence = "an error under --strict" if strict else "the image counts for detection only"
    return Problem(ERROR if strict else WARNING, "no-view", path, f"no view line: {consequence}")
