"""Run every member x TTA variant over a split once; keep per-image predictions in original-image pixels.

Tuning then re-fuses these cached predictions for every candidate (weights, thresholds) without running a
model again. Members keep their validation post-processing (conf 0.001, NMS 0.6, 300 boxes): a low threshold
keeps the whole precision/recall curve, as mAP needs.

Memory: per image, members x variants x at most 300 boxes (~9 kB each at 300 boxes), plus the view
probabilities; 1000 images x 3 members x 6 variants is ~160 MB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from echotune.data.check import Sample
from echotune.data.dataset import letterbox, read_rgb
from echotune.engine.config import TrainConfig
from echotune.ensemble.tta import Variant, boxes_to_original, to_tensor, tta_variants

EVAL_CONF = 0.001  # the validation protocol's confidence threshold

LoadedMember = tuple[nn.Module, TrainConfig]  # (EMA model in eval mode, its config)


@dataclass
class SplitPredictions:
    """Every member x variant's predictions on one split; variant 0 of each member is its plain (no-TTA) run."""

    split: str
    nc: int
    paths: list[str]
    image_wh: list[tuple[int, int]]  # original width, height
    detections: list[list[list[dict]]]  # [member][variant][image] -> {boxes (K,4) px, scores (K,), labels (K,)}
    view_probs: list[np.ndarray]  # [member] -> (its variants, images, views) softmax probabilities
    targets: list[dict]  # [image] -> {boxes (N,4) original px, labels (N,)}
    view_targets: np.ndarray  # (images,) int64, -1 = no view label
    groups: list[str] | None = None  # [image] -> source video id: the bootstrap resamples whole videos

    @property
    def n_members(self) -> int:
        return len(self.detections)

    def n_variants(self, member: int) -> int:
        """Members trained at different sizes may get different numbers of scale variants."""
        return len(self.detections[member])


@torch.no_grad()
def run_variant(
    model: nn.Module, images: Sequence[np.ndarray], variant: Variant, squares: dict | None = None
) -> tuple[list[dict], np.ndarray]:
    """Predictions of `model` on RGB uint8 images of any sizes seen through `variant`: per image
    {boxes (K,4) original px, scores, labels}, and (B, V) view probabilities. `squares` caches letterboxes
    per size across members."""
    squares = {} if squares is None else squares
    if variant.size not in squares:
        squares[variant.size] = list(zip(*(letterbox(image, variant.size) for image in images)))
    boxed, letterboxes = squares[variant.size]
    device = next(model.parameters()).device
    out = model(to_tensor(np.stack(boxed), variant).to(device))
    detections = [
        {
            "boxes": boxes_to_original(d["boxes"].float().cpu().numpy(), variant, lb),
            "scores": d["scores"].float().cpu().numpy(),
            "labels": d["labels"].cpu().numpy(),
        }
        for d, lb in zip(out["detections"], letterboxes)
    ]
    return detections, out["view_logits"].float().softmax(-1).cpu().numpy()


def targets_of(samples: Sequence[Sample]) -> tuple[list[dict], np.ndarray]:
    """Ground truth in original-image pixels (the frame the cached predictions live in)."""
    targets = []
    for s in samples:
        h, w = s.image_hw
        targets.append({"boxes": s.labels.boxes * np.array([w, h, w, h], np.float32), "labels": s.labels.classes})
    return targets, np.array([s.labels.view for s in samples], np.int64)


def progress_bar(total: int, desc: str, unit: str, file: TextIO | None = None) -> tqdm:
    """A tqdm bar on stderr that shows only on a terminal (disable=None: off when the stream is not a TTY, as
    in CI logs and tests), and goes away when done (the caller logs the outcome)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=file if file is not None else sys.stderr,
        disable=None,
        leave=False,
        dynamic_ncols=True,
    )


def predict_split(
    members: Sequence[LoadedMember],
    samples: Sequence[Sample],
    split: str,
    nc: int,
    tta: str = "none",
    log: Callable[[str], None] = print,
) -> SplitPredictions:
    """Run all members and their TTA variants over `samples` (each image read once), in batches of the
    smallest member batch size (so a member's plain run batches as its own validation did)."""
    if not samples:
        raise ValueError(f"split {split!r} has no images")
    variants = [tta_variants(tta, cfg.img_size) for _, cfg in members]
    for model, _ in members:
        model.conf_thres = EVAL_CONF
    batch = min(cfg.batch_size for _, cfg in members)
    detections = [[[] for _ in v] for v in variants]
    probs = [[[] for _ in v] for v in variants]
    with progress_bar(len(samples), f"predicting {split}", "image") as bar:
        for start in range(0, len(samples), batch):
            images = [read_rgb(s.image) for s in samples[start : start + batch]]
            squares: dict = {}
            for m, (model, _) in enumerate(members):
                for t, variant in enumerate(variants[m]):
                    dets, view = run_variant(model, images, variant, squares)
                    detections[m][t] += dets
                    probs[m][t].append(view)
            bar.update(len(images))
    log(f"  {split}: {len(samples)} images x {len(members)} member(s) x {len(variants[0])} TTA variant(s)")
    targets, view_targets = targets_of(samples)
    return SplitPredictions(
        split,
        nc,
        [str(s.image) for s in samples],
        [(s.image_hw[1], s.image_hw[0]) for s in samples],
        detections,
        [np.stack([np.concatenate(p) for p in member]) for member in probs],
        targets,
        view_targets,
        [s.video for s in samples],
    )
