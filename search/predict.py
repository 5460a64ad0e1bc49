"""Predict jets and the echo view on images with a built ensemble or a single checkpoint.

    python search/predict.py --ensemble results/gradnorm/ensemble --source frames/
    python search/predict.py --checkpoint results/gradnorm/trial_x/checkpoint_000011 --source frame.png
    python search/predict.py --checkpoint best.pt --data DATA/data.yaml --source frames/ --out preds --conf 0.4

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
from echotune.ensemble.predictor import EnsemblePredictor

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python search/predict.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ensemble", type=Path, help="an ensemble folder (results/<name>/ensemble) or its "
                       "manifest.yaml")
    model.add_argument("--checkpoint", type=Path, help="an engine checkpoint (last.pt / best.pt) or a Ray "
                       "checkpoint folder holding last.pt")
    parser.add_argument("--source", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default ./predictions)")
    parser.add_argument("--conf", type=float, default=0.25, help="keep boxes scoring at least this (0.25)")
    parser.add_argument("--data", help="data.yaml for class/view names of a --checkpoint that stores none")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.conf <= 1.0:
        parser.error(f"--conf must be in [0, 1], got {args.conf}")
    log = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731 - above the progress bar, if one shows
    try:
        images = list_images(args.source, exclude=args.out)
        if not images:
            raise FileNotFoundError(f"--source {args.source}: no image files found")
        if args.ensemble is not None:
            predictor = EnsemblePredictor.from_manifest(args.ensemble, args.device)
        else:
            predictor = EnsemblePredictor.from_checkpoint(args.checkpoint, args.device, args.data, log)
        # a progress bar over the images on stderr, only on a terminal (disable=None); the predictions are the same
        with tqdm(images, desc="predicting", unit="image", file=sys.stderr, disable=None, leave=False,
                  dynamic_ncols=True) as bar:
            summary = predict_images(predictor, bar, args.out, args.conf, log)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # writing the predictions: e.g. a full disk or a read-only --out
        where = f" ({exc.filename})" if exc.filename else ""  # a write into an open file names none
        print(f"error: cannot write {args.out}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"Predicted {len(summary.written)} image(s) into {args.out} ({summary.csv_path.name}); "
          f"skipped {len(summary.skipped)} unreadable")
    if not summary.written:
        print(f"error: none of the {len(images)} image(s) under {args.source} could be read", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
