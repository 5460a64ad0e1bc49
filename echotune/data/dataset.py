"""Torch dataset over checked samples: letterbox to a square, optional augmentation, optional RAM cache.

One item: image float32 (3, S, S) in [0, 1] RGB; boxes (N, 4) float32 xyxy in letterboxed pixels; classes (N,)
int64; view (int, -1 = no view label); path (str). `collate` stacks images and keeps boxes per image.
With a mosaic (`set_epoch(mosaic=..., mosaic_p=p)`) an item is, with probability p, a 2x2 mosaic of itself and
three other training images, before the epoch's transform; it carries no view label (view -1: a collage of four
frames has no single view).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from echotune.data.check import Sample

PAD_VALUE = 114  # grey padding, the usual YOLO letterbox colour


@dataclass(frozen=True)
class Letterbox:
    """How an original image maps into the square: pixel_in_square = pixel_in_original * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int

    def to_square(self, boxes_px: np.ndarray) -> np.ndarray:
        return boxes_px * self.scale + np.array([self.pad_x, self.pad_y] * 2, np.float32)

    def to_original(self, boxes_sq: np.ndarray) -> np.ndarray:
        return (boxes_sq - np.array([self.pad_x, self.pad_y] * 2, np.float32)) / self.scale


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio so the long side is `size`, pad to (size, size) centred."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp) if (new_w, new_h) != (w, h) else image
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return out, Letterbox(scale, pad_x, pad_y)


def read_rgb(path) -> np.ndarray:
    """Decode an image file (any size, grey, colour or with alpha) as (H, W, 3) RGB uint8; raises ValueError
    naming the file if it is unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: unreadable or corrupt image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_letterboxed(sample: Sample, size: int) -> tuple[np.ndarray, Letterbox]:
    """Decode one image as RGB uint8 and letterbox it; raises ValueError naming the file if unreadable."""
    return letterbox(read_rgb(sample.image), size)


# transform(image HxWx3 uint8, boxes (N,4) px xyxy, classes (N,), seed) -> same; e.g. echotune.augment.Augmenter.
# The seed is derived from (dataset seed, epoch, index), so an item's augmentation does not depend on the order
# or the worker that loads it, and a resumed run replays it exactly.
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
# mosaic((image, boxes, classes), [three partners' (image, boxes, classes)], seed) -> (image, boxes, classes);
# e.g. echotune.augment.Mosaic.
Item = tuple[np.ndarray, np.ndarray, np.ndarray]
MosaicTransform = Callable[[Item, list[Item], int], Item]


class EchoDataset(Dataset):
    """Samples from `check_dataset`, letterboxed to `img_size`.

    cache=True decodes and letterboxes every image once, in threads, into one (N, S, S, 3) uint8 array: the
    search re-reads the same images every epoch, and forked DataLoader workers share the array copy-on-write.
    Memory: N * S * S * 3 bytes (320 images at 160 px: 25 MB; 5000 at 640 px: 6 GB, so leave it off there).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        img_size: int,
        transform: Transform | None = None,
        cache: bool = False,
        cache_threads: int = 2,
    ):
        if img_size < 32 or img_size % 32:
            raise ValueError(
                f"img_size must be a positive multiple of 32 (the detector's largest stride), got {img_size}"
            )
        self.samples = list(samples)
        self.img_size = img_size
        self.transform = transform
        self._cache: np.ndarray | None = None
        self._letterboxes: list[Letterbox] | None = None
        self.seed, self.epoch = 0, 0
        self.mosaic, self.mosaic_p = None, 0.0
        if cache:
            self._fill_cache(cache_threads)

    def _fill_cache(self, threads: int) -> None:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            loaded = list(pool.map(lambda s: load_letterboxed(s, self.img_size), self.samples))
        self._cache = np.stack([img for img, _ in loaded]) if loaded else None
        self._letterboxes = [lb for _, lb in loaded]

    def set_epoch(
        self,
        epoch: int,
        transform: Transform | None = None,
        seed: int | None = None,
        mosaic: MosaicTransform | None = None,
        mosaic_p: float = 0.0,
    ) -> None:
        """Select the epoch (and optionally a new transform, e.g. a stage's strength, and a mosaic with the
        stage's probability) for the next items."""
        self.epoch, self.transform = epoch, transform
        self.seed = self.seed if seed is None else seed
        self.mosaic, self.mosaic_p = mosaic, float(mosaic_p) if mosaic is not None else 0.0

    def item_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, Letterbox]:
        """Letterboxed RGB image (S, S, 3) uint8 and its boxes (N, 4) in letterboxed pixels, before augmentation."""
        sample = self.samples[index]
        if self._cache is not None:
            image, lb = self._cache[index], self._letterboxes[index]
        else:
            image, lb = load_letterboxed(sample, self.img_size)
        h, w = sample.image_hw
        boxes_px = sample.labels.boxes * np.array([w, h, w, h], np.float32)
        return image, lb.to_square(boxes_px).astype(np.float32), lb

    def _mosaic_or_none(self, index: int, classes: np.ndarray) -> tuple | None:
        """(image, boxes, classes) of item `index` as a mosaic with three other images, or None (probability
        1 - mosaic_p). The draw and the partners are functions of the item's seed, like its augmentation."""
        if self.mosaic_p <= 0 or len(self) < 2:
            return None
        rng = np.random.default_rng([self.item_seed(index), 1])
        if rng.random() >= self.mosaic_p:
            return None
        others = [(index + int(k)) % len(self) for k in rng.integers(1, len(self), size=3)]  # never itself
        image, boxes, _ = self.load(index)
        partners = [(*self.load(i)[:2], self.samples[i].labels.classes) for i in others]
        return self.mosaic((image, boxes, classes), partners, self.item_seed(index))

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        classes, view = sample.labels.classes, int(sample.labels.view)
        mosaic = self._mosaic_or_none(index, classes)
        if mosaic is None:
            image, boxes, _ = self.load(index)
        else:
            (image, boxes, classes), view = mosaic, -1
        if self.transform is not None:
            image, boxes, classes = self.transform(image, boxes, classes, self.item_seed(index))
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        return {
            "image": tensor,
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "classes": torch.from_numpy(np.asarray(classes, np.int64)),
            "view": view,
            "path": str(sample.image),
            "index": index,
        }


def collate(batch: list[dict]) -> dict:
    """images (B, 3, S, S); boxes/classes: lists of (N_i, 4)/(N_i,); views (B,) int64 (-1 = none); paths;
    indices (B,) dataset indices (hard-example mining keys its per-image losses by them)."""
    return {
        "images": torch.stack([item["image"] for item in batch]),
        "boxes": [item["boxes"] for item in batch],
        "classes": [item["classes"] for item in batch],
        "views": torch.tensor([item["view"] for item in batch], dtype=torch.int64),
        "paths": [item["path"] for item in batch],
        "indices": torch.tensor([item["index"] for item in batch], dtype=torch.int64),
    }


def set_thread_budget(cpus: int) -> None:
    """Make torch and OpenCV use `cpus` threads (Ray sets OMP threads per trial; these libraries need telling)."""
    if cpus < 1:
        raise ValueError(f"cpus must be >= 1, got {cpus}")
    torch.set_num_threads(cpus)
    cv2.setNumThreads(cpus)


def _one_thread_per_worker(_: int) -> None:
    """In a loader worker: one OpenCV thread (torch sets its own to 1). The workers are already one process per
    CPU of the trial; the parent's thread budget, inherited through fork, would multiply them."""
    cv2.setNumThreads(1)


def make_loader(
    dataset: EchoDataset,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    indices: Sequence[int] | None = None,
) -> torch.utils.data.DataLoader:
    """DataLoader with our collate. `seed` fixes the shuffle order; `indices` (e.g. a hard-mining epoch plan)
    replaces the dataset order and is used as given."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and indices is None,
        sampler=list(indices) if indices is not None else None,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=False,
        worker_init_fn=_one_thread_per_worker if workers > 0 else None,
    )
