"""Named albumentations policies for colour-Doppler echo frames, scaled by one ``strength``.

``build_augmentation(policy, strength, seed)`` returns an ``A.Compose`` whose transform
probabilities AND magnitudes grow linearly with ``strength`` in [0, 1]; ``strength == 0`` is the
exact identity for every policy.  ``apply_augmentation`` runs it on one image plus its pascal_voc
(pixel xyxy) boxes and class ids and returns the same types back.

Boxes: clipped to the image, and dropped together with their class when pushed out, mostly
covered by dropout (< ``MIN_VISIBILITY`` of their area left), or smaller than ``MIN_BOX_AREA`` px^2
/ ``MIN_BOX_SIDE`` px a side (even at strength 0).  Outputs always satisfy 0 <= x1 < x2 <= W,
0 <= y1 < y2 <= H.  Albumentations 2.x snaps every box to whole pixels when CoarseDropout or
ElasticTransform fires (the latter via per-box masks, so a box at x2 == W comes back at W - 1).

``seed`` seeds the Compose's own generator (albumentations 2.x ``Compose(seed=...)``): two
pipelines built with the same seed give identical outputs for the same call sequence; the global
``random``/``numpy`` state is neither used nor changed.  ``seed=None`` draws fresh entropy.

Cost (this 2-core CPU, 160x160 RGB, 3 boxes, 2000 calls): ``medical`` at strength 1 about
2.1 ms median / 2.4 ms mean per image (``medical+flip`` +0.1 ms); strength 0 or ``none`` about
0.55 ms, which is albumentations' per-call Compose/box bookkeeping.  When they fire, ElasticTransform
costs ~1.9 ms (its box remap rasterises one mask per box), Affine ~0.6 ms, CLAHE ~0.5 ms.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

POLICIES = ("none", "medical", "medical+flip")
# Letterbox grey for exposed borders.  A tuple on purpose: ElasticTransform passes a scalar fill
# to cv2.remap, which then pads with (114, 0, 0), i.e. dark red.
PAD_VALUE = (114, 114, 114)
MIN_VISIBILITY = 0.3
MIN_BOX_AREA = 0.5
MIN_BOX_SIDE = 0.5


def _bbox_params() -> A.BboxParams:
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["classes"],
        clip=True,
        filter_invalid_bboxes=True,
        min_visibility=MIN_VISIBILITY,
        min_area=MIN_BOX_AREA,
        min_width=MIN_BOX_SIDE,
        min_height=MIN_BOX_SIDE,
    )


def _medical(s: float) -> list[A.BasicTransform]:
    """Ultrasound-physics augmentations; every p and magnitude is proportional to ``s``.

    - CLAHE: machines/presets differ in dynamic-range compression (log compression map).
    - RandomGamma + RandomBrightnessContrast: overall gain and time-gain compensation (TGC)
      settings change with operator and depth; gamma mimics a different compression curve.
    - Gaussian/motion blur (3-5 px kernels): focal-zone / lateral-resolution differences and
      probe or cardiac motion during the frame.
    - MultiplicativeNoise (per pixel): speckle is multiplicative interference noise.
    - Affine (rot <= 10 deg, scale +-10 %, shift +-5 %) and a small ElasticTransform: probe
      position/angle and tissue deformation between acquisitions; exposed border = letterbox grey.
    - CoarseDropout with small black holes: acoustic shadowing / drop-out behind ribs, lungs or
      calcification.  Boxes mostly hidden by a hole are dropped.
    """
    big_blur = 5 if s >= 0.5 else 3
    return [
        A.CLAHE(clip_limit=(1.0, 1.0 + 3.0 * s), tile_grid_size=(8, 8), p=0.3 * s),
        A.RandomGamma(gamma_limit=(100 - 30 * s, 100 + 30 * s), p=0.5 * s),
        A.RandomBrightnessContrast(brightness_limit=0.2 * s, contrast_limit=0.2 * s, p=0.5 * s),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=(3, big_blur), sigma_limit=(0.1, 0.1 + 0.9 * s), p=1.0),
                A.MotionBlur(blur_limit=(3, big_blur), p=1.0),
            ],
            p=0.3 * s,
        ),
        A.MultiplicativeNoise(multiplier=(1 - 0.25 * s, 1 + 0.25 * s), elementwise=True, p=0.5 * s),
        A.Affine(
            rotate=(-10 * s, 10 * s),
            scale=(1 - 0.1 * s, 1 + 0.1 * s),
            translate_percent=(-0.05 * s, 0.05 * s),
            rotate_method="ellipse",
            border_mode=cv2.BORDER_CONSTANT,
            fill=PAD_VALUE,
            p=0.5 * s,
        ),
        A.ElasticTransform(
            alpha=30.0 * s,
            sigma=8.0,
            approximate=True,  # ~0.5 px rms, ~1.5 px max inside
            border_mode=cv2.BORDER_CONSTANT,
            fill=PAD_VALUE,
            p=0.2 * s,
        ),
        A.CoarseDropout(
            num_holes_range=(1, max(1, round(4 * s))),
            hole_height_range=(0.02, 0.02 + 0.08 * s),
            hole_width_range=(0.02, 0.02 + 0.08 * s),
            fill=0,
            p=0.3 * s,
        ),
    ]


def build_augmentation(policy: str, strength: float, seed: int | None = None) -> A.Compose:
    """Build the named policy at ``strength`` in [0, 1].

    Policies:
    - ``none``: identity, but still a Compose with the same box handling as the others.
    - ``medical``: see ``_medical`` (photometric + speckle + small geometric + shadowing).
    - ``medical+flip``: ``medical`` plus a horizontal flip with p = 0.5 * strength.  Opt-in only:
      mirroring swaps the left/right anatomy of a standard view (e.g. apical 4-chamber: LV on the
      screen's right), so a flipped frame is not a realistic image of the same view label.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:  # also rejects NaN
        raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
    # NoOp, not an empty list: a Compose with bbox_params but no transform warns in 2.x.
    transforms: list[A.BasicTransform] = [A.NoOp(p=1.0)]
    if policy != "none" and strength > 0:
        transforms = _medical(strength)
        if policy == "medical+flip":
            transforms.append(A.HorizontalFlip(p=0.5 * strength))
    return A.Compose(transforms, bbox_params=_bbox_params(), seed=seed)


def apply_augmentation(
    transform: A.Compose, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``transform`` on an HxWx3 uint8 image, (N,4) pixel-xyxy boxes and (N,) class ids.

    Returns (image uint8 of the same shape, boxes float32 (M,4), classes int64 (M,)), M <= N.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
    # CoarseDropout divides by integer-truncated box areas (0 for sub-pixel boxes, which it then
    # drops): silence that numpy RuntimeWarning; outputs are validated below anyway.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = transform(image=image, bboxes=boxes, classes=classes)
    out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    out_classes = np.asarray(out["classes"], dtype=np.int64).reshape(-1)
    if len(out_boxes) and len(boxes):
        # Albumentations round-trips coords through float32 [0,1]: undo that ulp-level jitter
        # (< 1e-3 px) so boxes no transform moved come back bit-identical.
        dist = np.abs(out_boxes[:, None, :] - boxes[None, :, :]).max(-1)
        near = dist.min(1) < 1e-3
        out_boxes[near] = boxes[dist.argmin(1)[near]]
    h, w = image.shape[:2]
    # Belt and braces against float rounding: clip, then keep only strictly positive extents.
    out_boxes[:, 0::2] = np.clip(out_boxes[:, 0::2], 0, w)
    out_boxes[:, 1::2] = np.clip(out_boxes[:, 1::2], 0, h)
    x1, y1, x2, y2 = out_boxes.T
    keep = np.isfinite(out_boxes).all(1) & (x2 > x1) & (y2 > y1)
    return np.ascontiguousarray(out["image"]), out_boxes[keep], out_classes[keep]


class Augmenter:
    """A policy at a strength as a dataset transform: `(image, boxes, classes, seed) -> (image, boxes, classes)`.

    Re-seeding per call makes each item's augmentation a function of its seed alone (the dataset derives it
    from seed, epoch and index), independent of loading order and DataLoader workers, so resumed runs replay
    exactly.
    """

    def __init__(self, policy: str, strength: float):
        self.policy, self.strength = policy, strength
        self.transform = build_augmentation(policy, strength, seed=0)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _reseed(self.transform, seed)
        return apply_augmentation(self.transform, image, boxes, classes)


def _reseed(transform, seed: int) -> None:
    """Seed a pipeline and give every child its own derived seed.

    albumentations' `set_random_seed` hands the same seed to every child, so each transform's first draw
    ("do I fire?") would be the same number: all would fire or skip together. Distinct seeds decorrelate them.
    """
    transform.set_random_seed(seed)
    for i, child in enumerate(getattr(transform, "transforms", [])):
        _reseed(child, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))


class Mosaic:
    """YOLOv4's mosaic as a dataset transform: `(primary, others, seed) -> (image, boxes, classes)`.

    Four letterboxed S x S frames (the primary and three `others`, each `(image, boxes, classes)`) are tiled 2 x 2
    at full scale and an S x S window is cut around a centre drawn in the middle 40 % of the 2S x 2S canvas
    (albumentations' `A.Mosaic`). Each jet keeps its size (the jets are small: ~24 x 12 px at 160 px) while the
    image holds up to four frames' jets against new surroundings. A box cut by the window is kept, clipped, only
    if at least MIN_VISIBILITY of its area is left: A.Mosaic's own filter measures the primary frame's boxes
    only, so every box carries an id back to its original area. Seeded per call like `Augmenter`.
    """

    def __init__(self, size: int):
        self.size = size
        mosaic = A.Mosaic(
            grid_yx=(2, 2),
            target_size=(size, size),
            cell_shape=(size, size),
            center_range=(0.3, 0.7),
            fit_mode="cover",
            fill=PAD_VALUE,
            p=1.0,
        )
        params = A.BboxParams(
            format="pascal_voc",
            label_fields=["classes", "box_ids"],
            clip=True,
            filter_invalid_bboxes=True,
            min_area=MIN_BOX_AREA,
            min_width=MIN_BOX_SIDE,
            min_height=MIN_BOX_SIDE,
        )
        self.transform = A.Compose([mosaic], bbox_params=params, seed=0)

    def __call__(
        self,
        primary: tuple[np.ndarray, np.ndarray, np.ndarray],
        others: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frames = [primary, *others]
        boxes = [np.asarray(b, np.float32).reshape(-1, 4) for _, b, _ in frames]
        first_id = np.cumsum([0] + [len(b) for b in boxes])  # frame k's boxes have ids first_id[k] + 0, 1, ...
        areas = np.concatenate([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes])
        items = [
            {
                "image": image,
                "bboxes": b,
                "classes": np.asarray(c, np.int64).reshape(-1),
                "box_ids": np.arange(first_id[k], first_id[k + 1]),
            }
            for k, ((image, _, c), b) in enumerate(zip(frames, boxes))
        ]
        _reseed(self.transform, seed)
        # A.Mosaic draws its three extra cells from `mosaic_metadata` with its own seeded generator.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.transform(**items[0], mosaic_metadata=items[1:])
        out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        out_classes = np.asarray(out["classes"], np.int64).reshape(-1)
        ids = np.asarray(out["box_ids"], np.int64).reshape(-1)
        x1, y1, x2, y2 = out_boxes.T
        visible = (x2 - x1) * (y2 - y1) >= MIN_VISIBILITY * areas[ids] if len(ids) else np.zeros(0, bool)
        keep = np.isfinite(out_boxes).all(1) & (x2 > x1) & (y2 > y1) & visible
        return np.ascontiguousarray(out["image"]), out_boxes[keep], out_classes[keep]
