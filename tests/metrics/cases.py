"""Random test cases for the metric tests: generic detection cases and a video-structured echo-like generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_case(
    seed: int, num_images: int = 20, num_classes: int = 4, extra_class: bool = False, crowded_image: bool = True
) -> tuple[list[dict], list[dict]]:
    """Random GT and jittered predictions with random scores and false positives; every 5th image has no GT,
    every 7th (from 3) no predictions; image 1 has > 100 class-0 predictions (maxDets) when ``crowded_image``;
    ``extra_class``: predictions of class ``num_classes`` too, which has no GT (pass num_classes + 1)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        n = 0 if i % 5 == 0 else int(rng.integers(1, 5))
        xy = rng.uniform(0, 400, (n, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (n, 2))], axis=1)
        gt_labels = rng.integers(0, num_classes, n)
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
        if i % 7 == 3:
            preds.append({"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)})
            continue
        k_tp = 3 * n
        src = rng.integers(0, max(n, 1), k_tp)
        jitter = gt_boxes[src] + rng.normal(0, 6, (k_tp, 4)) if n else np.zeros((0, 4))
        tp_labels = np.where(rng.random(k_tp) < 0.85, gt_labels[src] if n else 0, rng.integers(0, num_classes, k_tp))
        crowd = 120 if (i == 1 and crowded_image) else 0
        k_fp = int(rng.integers(0, 15)) + crowd
        fxy = rng.uniform(0, 400, (k_fp, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(5, 120, (k_fp, 2))], axis=1)
        boxes = np.concatenate([jitter, fp]).clip(0, 600)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([tp_labels, rng.integers(0, num_classes + extra_class, k_fp)]).astype(np.int64)
        if crowd:
            labels[-crowd:] = 0
        preds.append({"boxes": boxes, "scores": rng.random(len(boxes)), "labels": labels})
    return preds, targets


@dataclass
class VideoCase:
    """An echo-like evaluation pass: per-image predictions/targets, (N, V) view logits, view ids, video ids."""

    predictions: list[dict]
    targets: list[dict]
    view_logits: np.ndarray
    view_targets: np.ndarray
    groups: list[str]


def video_case(
    n_videos: int,
    frames_per_video: int = 5,
    seed: int = 0,
    dets_per_image: int = 10,
    num_classes: int = 4,
    num_views: int = 3,
) -> VideoCase:
    """Videos with one jet class and one view each, 1-2 GT boxes per frame, a per-video model skill (so frames
    of one video are correlated), jittered true detections and low-scored false positives up to
    ``dets_per_image`` per frame, and view logits right with a per-video probability (0.97 for most videos,
    0.15 for a quarter); some views unlabelled."""
    rng = np.random.default_rng(seed)
    preds, targets, logits, views, groups = [], [], [], [], []
    for v in range(n_videos):
        jet, view = int(rng.integers(num_classes)), int(rng.integers(num_views))
        skill, view_skill = rng.uniform(0.2, 0.95), (0.97 if rng.random() < 0.75 else 0.15)
        centre, size = rng.uniform(100, 300, 2), rng.uniform(40, 110, 2)
        for _ in range(frames_per_video):
            n_gt = 1 + int(rng.random() < 0.3)
            c = centre + rng.normal(0, 8, (n_gt, 2)) + np.array([[0, 0], [150, 60]])[:n_gt]
            s = size * rng.uniform(0.8, 1.2, (n_gt, 2))
            gt = np.concatenate([c - s / 2, c + s / 2], axis=1)
            gt_labels = np.array([jet, int(rng.integers(num_classes))])[:n_gt]
            good = rng.random(n_gt) < skill
            tp_boxes = gt + rng.normal(0, 1, (n_gt, 4)) * np.where(good, 3.0, 25.0)[:, None]
            tp_scores = np.where(good, rng.uniform(0.4, 1.0, n_gt), rng.uniform(0.05, 0.6, n_gt))
            tp_labels = np.where(rng.random(n_gt) < 0.9, gt_labels, rng.integers(0, num_classes, n_gt))
            k_fp = max(dets_per_image - n_gt, 0)
            fxy = rng.uniform(0, 450, (k_fp, 2))
            fp = np.concatenate([fxy, fxy + rng.uniform(10, 120, (k_fp, 2))], axis=1)
            boxes = np.concatenate([tp_boxes, fp])
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
            preds.append(
                {
                    "boxes": boxes,
                    "scores": np.concatenate([tp_scores, rng.beta(1, 6, k_fp)]),
                    "labels": np.concatenate([tp_labels, rng.integers(0, num_classes, k_fp)]),
                }
            )
            targets.append({"boxes": gt, "labels": gt_labels})
            predicted = view if rng.random() < view_skill else int(rng.integers(num_views))
            logits.append(np.eye(num_views)[predicted] * 2 + rng.normal(0, 0.1, num_views))
            views.append(view if rng.random() > 0.05 else -1)
            groups.append(f"video{v:03d}.mp4")
    return VideoCase(preds, targets, np.array(logits), np.array(views), groups)
