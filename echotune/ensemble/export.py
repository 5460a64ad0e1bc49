"""Write predictions for image files: `<stem>.json` and a drawn `<stem>.jpg` per image, one `predictions.csv`.

Unreadable files are reported and skipped; every file is written atomically. An image without detections still
gets its JSON, its drawing and one CSV row (empty class and box) carrying its view.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from echotune.atomic import atomic_write_bytes, atomic_write_text
from echotune.data.config import IMAGE_SUFFIXES

CSV_FILE = "predictions.csv"
CSV_COLUMNS = ("image", "class", "score", "x1", "y1", "x2", "y2", "view", "view_prob")
_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72))


@dataclass
class PredictSummary:
    written: list[Path] = field(default_factory=list)  # the JSON files
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (image, why)
    csv_path: Path | None = None


def list_images(source: str | Path, exclude: Path | None = None) -> list[Path]:
    """`source` itself, or the image files under a folder (recursively, sorted), outside `exclude`."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"--source {source} does not exist")
    if source.is_file():
        return [source]
    excluded = exclude.resolve() if exclude else None
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and (excluded is None or excluded not in p.resolve().parents)
    )


def record(path: Path, pred: dict, conf: float) -> dict:
    """JSON-ready prediction of one image: boxes in its pixels with class names and scores, view and probs."""
    w, h = pred["image_wh"]
    detections = [
        {
            "class": name,
            "class_id": int(label),
            "score": round(float(score), 5),
            "box": [round(float(v), 2) for v in box],
        }
        for name, label, score, box in zip(pred["classes"], pred["labels"], pred["scores"], pred["boxes"])
    ]
    return {
        "image": str(path),
        "width": int(w),
        "height": int(h),
        "conf": conf,
        "view": pred["view"],
        "view_prob": round(pred["view_probs"][pred["view"]], 5),
        "view_probs": {k: round(v, 5) for k, v in pred["view_probs"].items()},
        "detections": detections,
    }


def draw(image_bgr: np.ndarray, rec: dict) -> np.ndarray:
    """A BGR copy of the image with each box (class + score) and the view (name + probability) drawn."""
    canvas = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR) if image_bgr.ndim == 2 else image_bgr[..., :3].copy()
    side = min(canvas.shape[:2])
    scale, thick = max(0.3, side / 500), max(1, round(side / 250))
    for det in rec["detections"]:
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        colour = _PALETTE[det["class_id"] % len(_PALETTE)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(
            canvas,
            f"{det['class']} {det['score']:.2f}",
            (x1, max(y1 - 3, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            colour,
            thick,
            cv2.LINE_AA,
        )
    text = f"{rec['view']} {rec['view_prob']:.2f}"
    cv2.putText(
        canvas, text, (3, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA
    )
    return canvas


def _csv_rows(rec: dict) -> list[list]:
    view = [rec["view"], rec["view_prob"]]
    if not rec["detections"]:
        return [[rec["image"], "", "", "", "", "", ""] + view]
    return [[rec["image"], d["class"], d["score"], *d["box"]] + view for d in rec["detections"]]


def predict_images(
    predictor, images: Iterable[Path], out_dir: str | Path, conf: float = 0.25, log: Callable[[str], None] = print
) -> PredictSummary:
    """Predict every image with `predictor` (an EnsemblePredictor) and write the outputs into `out_dir`."""
    out_dir, summary, rows, used = Path(out_dir), PredictSummary(), [], set()
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            summary.skipped.append((path, "unreadable or not an image"))
            log(f"skipped {path}: unreadable or not an image")
            continue
        stem, n = path.stem, 1
        while stem in used:  # two images with one stem (a.png, sub/a.jpg): keep both
            n += 1
            stem = f"{path.stem}_{n}"
        used.add(stem)
        rec = record(path, predictor.predict(image, conf), conf)
        summary.written.append(atomic_write_text(out_dir / f"{stem}.json", json.dumps(rec, indent=2) + "\n"))
        ok, jpg = cv2.imencode(".jpg", draw(image, rec))
        if ok:
            atomic_write_bytes(out_dir / f"{stem}.jpg", jpg.tobytes())
        rows += _csv_rows(rec)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    summary.csv_path = atomic_write_text(out_dir / CSV_FILE, buffer.getvalue())
    return summary
