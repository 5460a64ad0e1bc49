"""Embedded synthetic colour-Doppler echo dataset, so EchoTune runs end to end without real data.

Image model (one square uint8 BGR frame, drawing helpers in :mod:`echotune.data.synthetic_draw`):

* **Fan**: black background; a sector with its apex at the top centre, random width and depth.
* **B-mode**: textured grey tissue; view-specific chambers (echo-free blood pools inside bright walls)
  and valve leaflets (PSAX: round aortic root in the middle, RV outflow arching to the pulmonic valve
  upper right, RA left, LA below; PLAX: long LV, aortic root, LA, aortic + mitral valves; A4C: four
  chambers with mitral and tricuspid valves in a cross). Views are made as confusable as real ones: per
  video the whole heart is rotated (+-20 deg), zoomed (0.8-1.25) and shifted inside the sector, every
  chamber is jittered in position, size, aspect and angle, and a quarter of the videos are off-axis cuts
  whose layout is pulled 15-45 % of the way towards another view's (shared chambers move, that view's
  extra chambers appear partially). Image quality varies per video: tissue contrast, wall brightness,
  lateral wall dropout and patchy walls (poor acoustic window), reverberation haze in the pools, rib
  shadows, near-field clutter, electronic noise, a depth-gain curve, gain and gamma; plus multiplicative
  Rayleigh speckle, depth attenuation and dimmer fan edges. The view label is always the planned view.
* **Colour Doppler**: regurgitant jets are turbulent mosaics (aliased red/blue + yellow/cyan + green
  variance) that start at their valve and widen into the receiving chamber; unlabelled distractors are
  smooth laminar red/blue blobs in chambers or over valves. Jets only sit at valves of the planned view
  (VIEW_JETS). Jet boxes are the tight bounding boxes of the drawn jet pixels; a jet too small, or too
  thin/ragged to fill MIN_FILL of its box, is neither drawn nor labelled. A colour bar, depth ticks,
  text-like labels and an ECG trace are overlaid.
* **Videos**: all frames of a video share view, anatomy and settings; each frame is a point of the
  cardiac cycle (chambers move, valves open and close, MR/TR show in systole, AR/PR in diastole) with
  fresh speckle and flow noise.

On disk (like real exports): ``data.yaml`` plus ``{train,val,test}/{images,labels}/<video>.mp4-<frame>``;
a label file holds ``cls cx cy w h`` lines, a blank line, then the one-hot view line. Generation is
deterministic: every video and frame draws from its own generator seeded by (seed, split, video, frame).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from echotune.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from echotune.data import synthetic_draw as draw
from echotune.data.config import DATA_YAML, EXPORT_VIEW_NAMES, SPLITS

CLASS_NAMES = ("AR", "MR", "PR", "TR")
VIEW_NAMES = EXPORT_VIEW_NAMES  # the real export's views, in its order
VIEW_JETS = {"PSAX": ("AR", "PR", "TR"), "PLAX": ("AR", "MR"), "A4C": ("MR", "TR")}
GENERATOR_VERSION = 2  # bump when the images change, so cached datasets (keyed by spec.key()) regenerate
# Stratified per split: views are round-robin (video i shows VIEW_NAMES[i % 3]) and the first jet of video i
# cycles through PRIMARY_JETS[view][i // 3] (weighted so that classes seen in fewer views are not too rare);
# videos i < 4 (PR, AR, MR, TR) show theirs in every frame, so any split with >= 4 videos has every class
# (and >= 3 every view); video NORMAL_VIDEO has no jets at all.
PRIMARY_JETS = {"PSAX": ("PR", "TR", "PR", "PR", "AR", "PR"), "PLAX": ("AR", "MR", "AR"), "A4C": ("MR", "TR", "TR")}
ALWAYS_VISIBLE = 4
NORMAL_VIDEO = 5
MIN_FILL = 0.35  # a labelled jet covers at least this share of its box
Box = tuple[float, float, float, float]  # (cx, cy, w, h), normalised to [0, 1]


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; validated on construction. The default's val and test hold 256 images from 64 videos
    each (train 192 from 48), so a ranking of models on them means something: 16 videos (64 images) gave
    intervals as wide as the differences between trials."""

    train_videos: int = 48
    val_videos: int = 64
    test_videos: int = 64
    frames_per_video: int = 4
    img_size: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name == "seed" else 64 if f.name == "img_size" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SyntheticSpec.{f.name} must be an integer >= {low}, got {value!r}")

    def key(self) -> str:
        """Short stable hash of all fields (and the generator version), for cache folder names."""
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def videos(self, split: str) -> int:
        return getattr(self, f"{split}_videos")


def _rng(seed: int, split: str, video: int, frame: int | None = None) -> np.random.Generator:
    """Independent generator per video (frame=None: its plan) or per frame, so order never matters."""
    tag = (0, 0) if frame is None else (1, frame)
    return np.random.default_rng([seed, SPLITS.index(split), video, *tag])


def render_frame(
    rng: np.random.Generator, view: str, img_size: int, video: draw.VideoPlan | None = None, phase: float | None = None
) -> tuple[np.ndarray, list[tuple[int, Box]]]:
    """One frame: (image (S, S, 3) uint8 BGR, [(class index, (cx, cy, w, h) normalised)]).

    ``video`` fixes anatomy/settings/jets across frames (a random one is drawn when omitted); ``phase`` is
    the cardiac phase in radians (0 = end-systole, random when omitted).
    """
    if view not in VIEW_NAMES:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    plan = video or draw.plan_video(rng, view, img_size, VIEW_JETS[view])
    if plan.view != view or plan.size != img_size:
        raise ValueError(f"video plan is for {plan.view} at {plan.size} px, not {view} at {img_size} px")
    phase = rng.uniform(0, 2 * math.pi) if phase is None else phase
    systole = 0.5 * (1 + math.cos(phase))  # 1 at end-systole, 0 at end-diastole
    S = img_size
    grid = draw.pixel_grid(S)
    fan = draw.fan_coords(plan, *grid)
    chambers = [draw.moved(c, systole) for c in plan.chambers]
    grey, blood = draw.bmode(rng, plan, chambers, systole, grid, fan)
    region = cv2.dilate(blood.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, S // 60)) > 0
    overlay = draw.overlays(plan, phase)
    covered = overlay.any(axis=2)

    colour = np.zeros((S, S, 3), np.float32)
    alpha = np.zeros((S, S), np.float32)
    specks = blood & (rng.random((S, S)) < 0.0015)  # colour noise: isolated flashes in the blood pools
    colour[specks] = draw.doppler_bgr(rng.uniform(-0.6, 0.6, int(specks.sum())).astype(np.float32))
    alpha[specks] = 1.0
    for mask, bgr in draw.laminar_blobs(rng, plan, chambers, region, grid):
        colour[mask], alpha[mask] = bgr[mask] * plan.colour_gain, rng.uniform(0.6, 1.0)

    labels: list[tuple[int, Box]] = []
    min_pixels = max(6, round(10 * (S / 160) ** 2))
    for jet in plan.jets:  # drawn last, so nothing covers them and the box matches the visible pixels
        weight = systole if jet.cls in draw.SYSTOLIC_JETS else 1 - systole
        if not jet.always and rng.random() > 0.4 + 0.6 * weight:
            continue  # this valve does not leak in this frame
        mask, bgr = draw.jet_layer(rng, plan, jet, weight, region, grid)
        ys, xs = np.nonzero(mask & ~covered)
        box_area = (np.ptp(xs) + 1) * (np.ptp(ys) + 1) if len(xs) else 0
        if len(xs) < min_pixels or np.ptp(xs) < 2 or np.ptp(ys) < 2 or len(xs) < MIN_FILL * box_area:
            continue  # too small (or too thin/ragged for its box) to label, so do not draw it either
        colour[mask], alpha[mask] = bgr[mask], jet.alpha
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1  # pixel edges
        labels.append(
            (CLASS_NAMES.index(jet.cls), ((x0 + x1) / 2 / S, (y0 + y1) / 2 / S, (x1 - x0) / S, (y1 - y0) / S))
        )

    alpha = (alpha * fan[0])[..., None]
    image = np.clip((grey[..., None] * (1 - alpha) + colour * alpha) * 255 + 0.5, 0, 255).astype(np.uint8)
    image[covered] = overlay[covered]
    return image, labels


def format_label(labels: list[tuple[int, Box]], view: str) -> str:
    """Label text: one ``cls cx cy w h`` line per jet, a blank line, then the one-hot view line."""
    boxes = "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, (cx, cy, w, h) in labels)
    onehot = " ".join("1" if v == view else "0" for v in VIEW_NAMES) + "\n"
    return boxes + "\n" + onehot if boxes else onehot


def parse_label(text: str) -> tuple[list[tuple[int, Box]], str | None]:
    """Inverse of :func:`format_label` (for our own files): (jets, view name or None)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    view = None
    if lines and len(lines[-1]) == len(VIEW_NAMES):
        view = VIEW_NAMES[[int(float(x)) for x in lines.pop()].index(1)]
    return [(int(p[0]), tuple(float(x) for x in p[1:5])) for p in lines], view


def _write_split(root: Path, split: str, spec: SyntheticSpec) -> tuple[int, int]:
    """Render and write one split; returns (images, boxes)."""
    images, labels_dir = root / split / "images", root / split / "labels"
    images.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    n_images = n_boxes = 0
    for v in range(spec.videos(split)):
        view = VIEW_NAMES[v % len(VIEW_NAMES)]
        primary = PRIMARY_JETS[view][(v // len(VIEW_NAMES)) % len(PRIMARY_JETS[view])]
        plan = draw.plan_video(
            _rng(spec.seed, split, v),
            view,
            spec.img_size,
            VIEW_JETS[view],
            primary=primary,
            always=v < ALWAYS_VISIBLE,
            normal=v == NORMAL_VIDEO,
        )
        for f in range(spec.frames_per_video):
            phase = plan.phase0 + 2 * math.pi * f / spec.frames_per_video
            image, labels = render_frame(_rng(spec.seed, split, v, f), view, spec.img_size, plan, phase)
            stem = f"synth-{split}-v{v:04d}.mp4-{f}"
            if not cv2.imwrite(str(images / f"{stem}.png"), image):
                raise OSError(f"could not write {images / f'{stem}.png'}")
            (labels_dir / f"{stem}.txt").write_text(format_label(labels, view), encoding="utf-8")
            n_images, n_boxes = n_images + 1, n_boxes + len(labels)
    return n_images, n_boxes


def _data_yaml(spec: SyntheticSpec) -> str:
    doc = {
        "train": "train/images",
        "val": "val/images",
        "test": "test/images",
        "nc": len(CLASS_NAMES),
        "names": list(CLASS_NAMES),
        "view_names": list(VIEW_NAMES),
    }
    header = (
        f"# EchoTune synthetic colour-Doppler echo dataset (generator v{GENERATOR_VERSION}, key {spec.key()})\n"
        f"# spec: {json.dumps(dataclasses.asdict(spec))}\n# split paths are relative to this file's folder\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def generate(out_dir, spec: SyntheticSpec = SyntheticSpec(), progress: bool = False) -> Path:
    """Write the dataset into ``out_dir`` (must not exist; it appears complete or not at all); returns data.yaml."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(
            f"synthetic dataset folder {out_dir} already exists; remove it first "
            "(the CLI's --force does) or pick another --out"
        )
    start = time.perf_counter()
    with atomic_directory(out_dir) as tmp:
        for split in SPLITS:
            n_images, n_boxes = _write_split(tmp, split, spec)
            if progress:
                print(
                    f"[synthetic] {split}: {spec.videos(split)} videos, {n_images} images, {n_boxes} jets "
                    f"({time.perf_counter() - start:.1f}s)",
                    file=sys.stderr,
                )
        atomic_write_text(tmp / DATA_YAML, _data_yaml(spec))
    if progress:
        print(f"[synthetic] wrote {out_dir}", file=sys.stderr)
    return out_dir / DATA_YAML


def synthetic_dir(cache_root, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Where ``ensure_synthetic`` keeps the set of `spec`: ``cache_root/synthetic-<key>``, one folder per spec."""
    return Path(cache_root) / f"synthetic-{spec.key()}"


def ensure_synthetic(cache_root, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """``synthetic_dir(cache_root, spec)/data.yaml``, generated on first use; safe when processes race."""
    target = synthetic_dir(cache_root, spec)
    data_yaml = target / DATA_YAML
    if data_yaml.is_file():
        return data_yaml
    try:
        return generate(target, spec)
    except OSError:  # FileExistsError, or the final rename found the folder already there (ENOTEMPTY)
        if data_yaml.is_file():  # another process won the race: its copy is complete (atomic rename)
            return data_yaml
        raise


def contact_sheet(data_yaml, out_png, n: int = 16, split: str = "train", tile: int = 256) -> Path:
    """Grid of ``n`` sample frames (``tile`` px each) with boxes, class names and the view drawn on them.

    The sheet is ``ceil(n / cols)`` by ``cols = ceil(sqrt(n))`` tiles (n capped at the split's size).
    """
    data_yaml = Path(data_yaml)
    doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = data_yaml.parent / str(doc.get("path") or ".")
    paths = sorted((root / doc[split]).glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no images for split {split!r} under {root / doc[split]}")
    n = min(n, len(paths))
    picks = sorted(np.random.default_rng(0).choice(len(paths), n, replace=False))  # varied, reproducible
    cols = math.ceil(math.sqrt(n))
    sheet = np.zeros((math.ceil(n / cols) * tile, cols * tile, 3), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k, i in enumerate(picks):
        img = cv2.resize(cv2.imread(str(paths[i])), (tile, tile), interpolation=cv2.INTER_LINEAR)
        label = paths[i].parent.parent / "labels" / f"{paths[i].stem}.txt"
        jets, view = parse_label(label.read_text(encoding="utf-8")) if label.is_file() else ([], None)
        for c, (cx, cy, w, h) in jets:
            p0 = (int((cx - w / 2) * tile), int((cy - h / 2) * tile))
            cv2.rectangle(img, p0, (int((cx + w / 2) * tile), int((cy + h / 2) * tile)), (255, 255, 255), 1)
            cv2.putText(img, CLASS_NAMES[c], (p0[0], max(10, p0[1] - 3)), font, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        caption = f"{view or '?'}  {paths[i].stem.removeprefix('synth-')}"
        cv2.putText(img, caption, (4, tile - 6), font, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(img, (0, 0), (tile - 1, tile - 1), (90, 90, 90), 1)
        r, c = divmod(k, cols)
        sheet[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = img
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise OSError(f"could not encode contact sheet {out_png}")
    return atomic_write_bytes(out_png, png.tobytes())


def main(argv: list[str] | None = None) -> int:
    """CLI: generate a synthetic dataset (and optionally its contact sheet)."""
    d = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="echotune-synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    for name in ("train_videos", "val_videos", "test_videos", "frames_per_video", "img_size", "seed"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(d, name), help=f"(default {getattr(d, name)})"
        )
    parser.add_argument("--contact-sheet", type=Path, metavar="PNG", help="also write a grid of samples here")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --out if it exists (only an empty folder or an earlier dataset with data.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        spec = SyntheticSpec(
            args.train_videos, args.val_videos, args.test_videos, args.frames_per_video, args.img_size, args.seed
        )
    except ValueError as exc:
        print(f"echotune-synth: {exc}", file=sys.stderr)
        return 2
    if args.force and args.out.exists():
        if not args.out.is_dir() or not ((args.out / DATA_YAML).is_file() or not any(args.out.iterdir())):
            print(
                f"echotune-synth: refusing to --force remove {args.out}: not a dataset folder (no data.yaml)",
                file=sys.stderr,
            )
            return 1
        shutil.rmtree(args.out)
    start = time.perf_counter()
    try:
        data_yaml = generate(args.out, spec, progress=True)
    except FileExistsError as exc:
        print(f"echotune-synth: {exc}", file=sys.stderr)
        return 1
    print(f"[synthetic] generated in {time.perf_counter() - start:.1f}s: {data_yaml}", file=sys.stderr)
    if args.contact_sheet:
        print(f"[synthetic] contact sheet: {contact_sheet(data_yaml, args.contact_sheet)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
