"""Ensembles of a search's best trials: selection, test-time augmentation, box fusion, tuning, prediction.

Command lines: ``echotune ensemble results/<name>`` builds one; ``echotune predict`` uses it.

    from echotune.ensemble import build_ensemble, evaluate_manifest, EnsemblePredictor
    result = build_ensemble("results/gradnorm", data, top_k=3, tta="flip", fusion="wbf")
    print(result.gain["test/map50"])
    predictor = EnsemblePredictor.from_manifest(result.manifest_path)
    prediction = predictor.predict(cv2.imread("frame.png"))  # boxes in the frame's pixels, view + probabilities

How it works (one module per step):

1. members.py - the top-k usable trials of ``leaderboard.parquet`` by best val/score (skipping DIVERGED/ERROR
   rows and trials without a checkpoint); ``diverse`` keeps one per architecture and drops configs identical
   apart from the seed. Each trial's best checkpoint (``last.pt`` in its Ray checkpoint folder) is loaded with
   ``weights_only=True``; a checkpoint whose architecture/size/classes differ from its trial's config or the
   dataset is refused, naming the trial and the file.
2. tta.py - variants a member sees: ``none``; ``flip`` (horizontal flip of the letterboxed square, undone
   exactly as x1' = S - x2, x2' = S - x1); ``scales`` (img_size x 0.83 / 1.17, rounded outward to multiples of
   32, >= 64); ``flip+scales``. Variant 0 is always the plain, validation-identical run.
3. inference.py - every member x variant runs over a split once; predictions are cached in original-image
   pixels (members keep the validation protocol: conf 0.001, NMS 0.6, 300 boxes) with softmax view probs.
4. fusion.py - per image, the sets are fused with ensemble-boxes (weighted box fusion; soft-NMS or NMS as
   options) on boxes normalised by the image size; view probabilities are averaged with the same weights.
   One set passes through unchanged, so an ensemble of one member reproduces that member's metrics.
5. tuning.py - a small Optuna TPE study (seeded; default 30 trials, the first being the untuned default) picks
   member weights in [0.1, 1], iou_thr in [0.4, 0.75], skip_box_thr in [0, 0.05] (and soft-NMS sigma) to
   maximise val/score on the cached *validation* predictions only; the test split is read after tuning.
6. scoring.py / report.py - metrics with the project's own code (COCO mAPs, P/R/F1, view accuracy/F1, score)
   for each member, the best single member (no TTA, same code path) and the ensemble, and the gain.
7. manifest.py - ``results/<name>/ensemble/manifest.yaml`` (members, checkpoint paths relative to it, weights,
   fusion thresholds, TTA, class and view names, package versions) and ``metrics.json``, written atomically;
   ``load_manifest`` validates every key and names the file, key and value in its errors.
8. predictor.py / export.py - ``EnsemblePredictor`` (from a manifest or one checkpoint) predicts on images of
   any size and aspect ratio; ``predict_images`` writes JSON, CSV and drawn images, skipping unreadable files.

Cost: tuning re-fuses the cached predictions (no model runs) once per trial. ensemble-boxes' WBF loops over
boxes in Python: measured on the 2-core CPU box, 3 sets x 300 boxes take ~35 ms per image and 6 x 300 ~70 ms
(NMS ~5 ms; soft-NMS like WBF), so 30 trials over 240 val images with k=3 and flip TTA take ~9 minutes; the
first NMS call also compiles ensemble-boxes' numba kernel (~5 s). Use fewer --tune-trials or no TTA on big
validation sets.
"""

from echotune.ensemble.build import build_ensemble, evaluate_manifest
from echotune.ensemble.export import predict_images
from echotune.ensemble.fusion import FUSIONS, FusionParams, fuse_detections, fuse_views
from echotune.ensemble.manifest import Manifest, load_manifest, save_manifest
from echotune.ensemble.members import Member, select_members
from echotune.ensemble.predictor import EnsemblePredictor
from echotune.ensemble.result import EnsembleResult, comparison_table
from echotune.ensemble.tta import TTA_MODES, flip_boxes, tta_variants

__all__ = [
    "FUSIONS",
    "TTA_MODES",
    "EnsemblePredictor",
    "EnsembleResult",
    "FusionParams",
    "Manifest",
    "Member",
    "build_ensemble",
    "comparison_table",
    "evaluate_manifest",
    "flip_boxes",
    "fuse_detections",
    "fuse_views",
    "load_manifest",
    "predict_images",
    "save_manifest",
    "select_members",
    "tta_variants",
]
