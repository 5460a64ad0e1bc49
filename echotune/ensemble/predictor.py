"""Predict on single images of any size with an ensemble manifest or one checkpoint.

    predictor = EnsemblePredictor.from_manifest("results/gradnorm/ensemble")
    result = predictor.predict(cv2.imread("frame.png"))  # BGR (or grey, or BGRA) uint8, any size

The image is letterboxed per member and TTA variant exactly as in evaluation; boxes come back in the image's own
pixels (clipped to it), after fusion, keeping those scoring at least `conf`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from echotune.data.config import EXPORT_VIEW_NAMES, load_data_config
from echotune.engine.evaluate_checkpoint import load_model
from echotune.ensemble.fusion import FusionParams, fuse_detections, fuse_views
from echotune.ensemble.inference import LoadedMember, run_variant
from echotune.ensemble.manifest import load_manifest
from echotune.ensemble.members import checkpoint_file
from echotune.ensemble.tta import tta_variants

_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA uint8 -> (H, W, 3) RGB uint8."""
    image = np.asarray(image)
    channels = 1 if image.ndim == 2 else image.shape[-1] if image.ndim == 3 else 0
    if image.dtype != np.uint8 or channels not in _TO_RGB or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W[, 1|3|4]) uint8 image, got shape {image.shape} dtype {image.dtype}")
    return cv2.cvtColor(image, _TO_RGB[channels])


def label_names(
    state: dict, nc: int, n_views: int, data_yaml: str | Path | None, log: Callable[[str], None] = print
) -> tuple[list[str], list[str]]:
    """Class and view names of a bare checkpoint: its own, else the data.yaml's, else generic (said so)."""
    names, views = state.get("names"), state.get("view_names")
    if names is not None and views is not None and len(names) == nc and len(views) == n_views:
        return list(names), list(views)
    if data_yaml is not None:
        config = load_data_config(data_yaml)
        views = config.view_names or (EXPORT_VIEW_NAMES if n_views == len(EXPORT_VIEW_NAMES) else None)
        if len(config.names) != nc or views is None or len(views) != n_views:
            raise ValueError(
                f"{data_yaml}: {len(config.names)} classes / {len(views or ())} views, but the "
                f"checkpoint predicts {nc} classes / {n_views} views"
            )
        return list(config.names), list(views)
    log("note: the checkpoint stores no class/view names and no --data was given: using class0.., view0..")
    return [f"class{i}" for i in range(nc)], [f"view{i}" for i in range(n_views)]


class EnsemblePredictor:
    def __init__(
        self,
        members: Sequence[LoadedMember],
        weights: Sequence[float],
        tta: str,
        params: FusionParams,
        names: Sequence[str],
        view_names: Sequence[str],
    ):
        for model, _ in members:
            if model.nc != len(names) or model.n_views != len(view_names):
                raise ValueError(
                    f"a member predicts {model.nc} classes / {model.n_views} views, but "
                    f"{len(names)} class names / {len(view_names)} view names were given"
                )
        if len(weights) != len(members):
            raise ValueError(f"{len(weights)} weights for {len(members)} members")
        self.members, self.weights, self.tta, self.params = list(members), list(weights), tta, params
        self.names, self.view_names = list(names), list(view_names)
        self.variants = [tta_variants(tta, cfg.img_size) for _, cfg in self.members]

    @classmethod
    def from_manifest(cls, path: str | Path, device: str = "auto") -> EnsemblePredictor:
        manifest = load_manifest(path)
        members = []
        for i, member in enumerate(manifest.members):
            expect = {
                "nc": len(manifest.names),
                "n_views": len(manifest.view_names),
                **({"arch": member.arch} if member.arch else {}),
            }
            try:
                model, cfg, _ = load_model(member.checkpoint, device, expect)
            except ValueError as exc:
                raise ValueError(f"{path}: members[{i}] (trial {member.trial_id}): {exc}") from exc
            members.append((model, cfg))
        return cls(members, manifest.weights, manifest.tta, manifest.fusion, manifest.names, manifest.view_names)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        data_yaml: str | Path | None = None,
        log: Callable[[str], None] = print,
    ) -> EnsemblePredictor:
        """One engine checkpoint (last.pt / best.pt) or a Ray checkpoint folder holding last.pt."""
        model, cfg, state = load_model(checkpoint_file(path), device)
        names, views = label_names(state, model.nc, model.n_views, data_yaml, log)
        return cls([(model, cfg)], [1.0], "none", FusionParams(), names, views)

    def predict(self, image: np.ndarray, conf: float = 0.25) -> dict:
        """{image_wh, boxes (K, 4) xyxy px, scores (K,), labels (K,), classes [K names], view, view_index,
        view_probs {name: p}} for a BGR/grey/BGRA uint8 image; boxes sorted by decreasing score."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        sets, probs, weights, squares = [], [], [], {}
        for (model, _), variants, weight in zip(self.members, self.variants, self.weights):
            for variant in variants:
                detections, view = run_variant(model, [rgb], variant, squares)
                sets.append(detections[0])
                probs.append(view[0])
                weights.append(weight)
        fused = fuse_detections(sets, weights, (w, h), self.params)
        boxes = np.clip(fused["boxes"], 0, [w, h, w, h]).astype(np.float32)  # boxes reaching into the padding
        keep = (fused["scores"] >= conf) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        view_probs = fuse_views(np.stack(probs), weights)
        view = int(view_probs.argmax())
        labels = fused["labels"][keep].astype(np.int64)
        return {
            "image_wh": (w, h),
            "boxes": boxes[keep],
            "scores": fused["scores"][keep],
            "labels": labels,
            "classes": [self.names[i] for i in labels],
            "view": self.view_names[view],
            "view_index": view,
            "view_probs": {name: float(p) for name, p in zip(self.view_names, view_probs)},
        }
