"""Predict jets and the echo view on images with a built ensemble or a single checkpoint.

    echotune predict results/gradnorm --source frames/                    # the search's ensemble
    echotune predict results/gradnorm/ensemble --source frames/ --out preds
    echotune predict results/gradnorm/trial_x/checkpoint_000011 --source frame.png
    echotune predict best.pt --data DATA/data.yaml --source frames/ --conf 0.4

MODEL is an ensemble folder or its manifest.yaml, an experiment folder (its ensemble/), or an engine checkpoint
(last.pt / best.pt) or a Ray checkpoint folder holding last.pt; --ensemble DIR and --checkpoint FILE say which
explicitly (the spellings before `echotune`).
Images of any size and aspect ratio (grey, colour or with alpha); a folder is searched recursively. Writes into
--out: <stem>.json per image (boxes in the image's pixels with class names and scores; the view with its
probabilities), <stem>.jpg with the boxes and the view drawn, and predictions.csv (image, class, score, x1, y1,
x2, y2, view, view_prob). Unreadable images are reported and skipped. On a terminal a progress bar (stderr) counts
the images.
Exit codes: 0 success; 2 bad input (no manifest/checkpoint, bad manifest, no readable image, --out cannot be
written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from echotune.ensemble.export import list_images, predict_images
from echotune.ensemble.manifest import MANIFEST_FILE
from echotune.ensemble.predictor import EnsemblePredictor
from echotune.results.layout import ENSEMBLE_DIR
from echotune.search.cli.command import EXIT_OK, add_data, add_device, add_out, cannot_write, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "model",
        nargs="?",
        type=Path,
        metavar="MODEL",
        help="an ensemble folder or manifest.yaml, an experiment folder (its ensemble), or a checkpoint",
    )
    model.add_argument(
        "--ensemble", type=Path, metavar="DIR", help="an ensemble folder (results/<name>/ensemble) or its manifest.yaml"
    )
    model.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="an engine checkpoint (last.pt / best.pt) or a Ray checkpoint folder holding last.pt",
    )
    parser.add_argument("--source", type=Path, required=True, help="an image file or a folder of images")
    add_out(parser, default=Path("predictions"), help="output folder (default ./predictions)")
    parser.add_argument("--conf", type=float, default=0.25, help="keep boxes scoring at least this (0.25)")
    add_data(parser, help="data.yaml for class/view names of a checkpoint that stores none")
    add_device(parser)


def ensemble_of(model: Path) -> Path | None:
    """The ensemble MODEL names (a manifest, a folder holding one, an experiment's ensemble/), else None."""
    if model.suffix in (".yaml", ".yml"):
        return model
    for folder in (model, model / ENSEMBLE_DIR):
        if (folder / MANIFEST_FILE).is_file():
            return folder
    return None


def load_predictor(args: argparse.Namespace, log) -> EnsemblePredictor:
    ensemble = args.ensemble if args.model is None else ensemble_of(args.model)
    if ensemble is not None:
        return EnsemblePredictor.from_manifest(ensemble, args.device)
    return EnsemblePredictor.from_checkpoint(args.checkpoint or args.model, args.device, args.data, log)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not 0.0 <= args.conf <= 1.0:
        parser.error(f"--conf must be in [0, 1], got {args.conf}")
    log = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731 - above the progress bar, if one shows
    try:
        images = list_images(args.source, exclude=args.out)
        if not images:
            raise FileNotFoundError(f"--source {args.source}: no image files found")
        predictor = load_predictor(args, log)
        # a progress bar over the images on stderr, only on a terminal (disable=None); the predictions are the same
        with tqdm(
            images, desc="predicting", unit="image", file=sys.stderr, disable=None, leave=False, dynamic_ncols=True
        ) as bar:
            summary = predict_images(predictor, bar, args.out, args.conf, log)
    except (ValueError, FileNotFoundError) as exc:
        return fail(exc)
    except OSError as exc:  # writing the predictions: e.g. a full disk or a read-only --out
        return cannot_write(args.out, exc)
    print(
        f"Predicted {len(summary.written)} image(s) into {args.out} ({summary.csv_path.name}); "
        f"skipped {len(summary.skipped)} unreadable"
    )
    if not summary.written:
        return fail(f"none of the {len(images)} image(s) under {args.source} could be read")
    return EXIT_OK
