"""The notebook API: run a search, train one configuration, read a leaderboard and predict, with no internal import.

    import echotune

    result = echotune.run_search(name="nb", num_samples=4, max_epochs=3, img_size=96)  # embedded synthetic set
    result.leaderboard.head()            # one row per trial, best first
    result.best_checkpoint               # the checkpoint the search hands back
    run = echotune.train(epochs=3, img_size=96, out="results/nb-train")
    run.metrics                          # one row per epoch
    echotune.predict(run.best_checkpoint, "frames/")[0].view

Every function validates its options before it reads data or starts Ray (ValueError naming the option) and
returns a frozen dataclass, a DataFrame or a list of dataclasses. `import echotune` stays cheap: the package
exposes these names lazily (echotune/__init__.py), and Ray is imported only when a search runs or a leaderboard
is read. The search and training behave as the command line's: same defaults, same files, same checks.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echotune.engine.config import TrainConfig
from echotune.search.search_config import SearchConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from echotune.data.check import CheckedDataset
    from echotune.ensemble.predictor import EnsemblePredictor

__all__ = [
    "Prediction",
    "SearchConfig",
    "SearchResult",
    "TrainConfig",
    "TrainResult",
    "leaderboard",
    "predict",
    "run_search",
    "train",
]

# How a notebook turns leaky splits on (the command line's --allow-leaky-splits): named in the refusal's message.
ALLOW_LEAKY = "allow_leaky_splits=True"


# ----------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)  # eq=False: DataFrame and array fields have no single truth value
class SearchResult:
    """What a finished search left in its experiment folder.

    Attributes:
        experiment: the experiment folder, `<storage>/<name>`.
        config: the search's settings (search.json's SearchConfig; None for a folder from an older version).
        data_yaml: the dataset it searched on (the embedded synthetic set's data.yaml when data was None).
        leaderboard: one row per trial, best first (columns: see `leaderboard`).
        best_trial_id: the search trial the search hands back: the final round's winner when that round ran,
            else the trial with the best val/score; None when no trial was scored.
        best_config: that trial's full TrainConfig as `best_config.yaml` holds it (with the final round: the
            winning run's seed and epochs): `echotune.train(config=result.best_config)` trains it again.
        best_checkpoint: its checkpoint file: the final round's winning run (the one measured on test), else the
            best epoch of the search trial. None when there is none.
        best_val_score: val/score of that checkpoint's run (val: where it was selected, so optimistic).
        held_out: `held_out.json`: the best model and the original study's baseline on val and test, each metric
            with its 95 % bootstrap interval over source videos, and their paired difference; None if not written.
        test_metrics: the best model's point estimates on the test split (`test/map50`, ..., `test/score`), read
            once after every choice was made on val; None when the dataset has no test split.
        final_round: `final.json` (candidates, seeds, per-run scores, winner, final fit); None when the round was off.
        ensemble: the ensemble folder (`manifest.yaml`, usable with `predict`), None when none was built.
    """

    experiment: Path
    config: SearchConfig | None
    data_yaml: Path | None
    leaderboard: pd.DataFrame
    best_trial_id: str | None
    best_config: TrainConfig | None
    best_checkpoint: Path | None
    best_val_score: float | None
    held_out: dict | None
    test_metrics: dict[str, float] | None
    final_round: dict | None
    ensemble: Path | None

    @classmethod
    def from_experiment(cls, experiment: str | os.PathLike) -> SearchResult:
        """Read the result of a search run earlier (by `run_search` or the command line) from its folder.

        Example:
            >>> result = echotune.SearchResult.from_experiment("results/gradnorm")  # doctest: +SKIP
        """
        from echotune.ensemble.manifest import MANIFEST_FILE
        from echotune.reporting.held_out import read_held_out
        from echotune.results.documents import read_json_document
        from echotune.results.layout import ENSEMBLE_DIR, FINAL_FILE
        from echotune.results.search_record import read_search_record

        experiment = Path(experiment).expanduser().resolve()
        board = leaderboard(experiment)  # ValueError when the folder is not an experiment
        held_out = read_held_out(experiment)
        trial_id, config, checkpoint, val_score = _handed_back(experiment)
        record = read_search_record(experiment)
        ensemble = experiment / ENSEMBLE_DIR
        return cls(
            experiment=experiment,
            config=_recorded_search_config(record),
            data_yaml=Path(record["data_yaml"]) if record.get("data_yaml") else None,
            leaderboard=board,
            best_trial_id=trial_id,
            best_config=config,
            best_checkpoint=checkpoint,
            best_val_score=val_score,
            held_out=held_out,
            test_metrics=_test_metrics(held_out),
            final_round=read_json_document(experiment / FINAL_FILE),
            ensemble=ensemble if (ensemble / MANIFEST_FILE).is_file() else None,
        )


@dataclass(frozen=True, eq=False)
class TrainResult:
    """One configuration trained over the three stages.

    Attributes:
        out_dir: the run's folder: last.pt, best.pt, run.json, results.csv (and tensorboard/ when asked).
        config: the TrainConfig it trained.
        metrics: one row per epoch: `epoch`, `stage`, `val/map50`, `val/map50_95`, `val/precision`, `val/recall`,
            `val/f1`, `val/view_acc`, `val/view_f1`, `val/view_kappa`, `val/score`, `val/best_score`, `train/loss`
            and its parts, `gradnorm/w_*`, `lr`, `stage/*` settings and timings (results.csv's columns).
        best: the metrics of the epoch with the highest val/score (the epoch best.pt holds).
        last: the metrics of the last epoch (last.pt).
        best_checkpoint, last_checkpoint: those checkpoint files.
        leaky_splits: None when no source video has frames in two splits, else the counts (allowed runs only).
    """

    out_dir: Path
    config: TrainConfig
    metrics: pd.DataFrame
    best: dict[str, float]
    last: dict[str, float]
    best_checkpoint: Path
    last_checkpoint: Path
    leaky_splits: dict | None = None

    @property
    def best_epoch(self) -> int:
        return int(self.best["epoch"])


@dataclass(frozen=True, eq=False)
class Prediction:
    """One image's jets and view.

    Attributes:
        image: the image file, None for an array passed in.
        width, height: the image's size in pixels.
        boxes: (K, 4) float32, x1 y1 x2 y2 in the image's own pixels (clipped to it), by decreasing score.
        scores: (K,) confidences, all at least `conf`.
        labels: (K,) class ids; classes: their names (e.g. "MR").
        view: the predicted echo view's name; view_probs: every view name -> probability (they sum to 1).
    """

    image: Path | None
    width: int
    height: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    view: str
    view_probs: dict[str, float]


# ------------------------------------------------------------------------------------------------------ search
def run_search(
    space: str = "gradnorm",
    data: str | os.PathLike | CheckedDataset | None = None,
    *,
    resume: bool = False,
    ensemble_top_k: int = 3,
    address: str | None = None,
    status_every: float | None = None,
    **search_options: Any,
) -> SearchResult:
    """Run a hyperparameter search end to end, as `echotune search` does, and return what it found.

    Ray Tune runs the trials and Optuna's TPE proposes them; then the final round retrains the top candidates and
    the baseline with fresh seeds, the winner is measured on test, the leaderboard, plots and report are written
    into `<storage>/<name>/`, and the top `ensemble_top_k` trials are fused into an ensemble. Progress is printed.

    Args:
        space: search space: gradnorm, dual_backbone, all or baseline.
        data: a data.yaml path, a checked dataset, or None for the embedded synthetic echo set (generated once
            into $ECHOTUNE_CACHE, default ~/.cache/echotune). Leaky splits are refused unless
            `allow_leaky_splits=True`.
        resume: continue the interrupted search `name` in `storage` with the settings its search.json recorded
            (other options are then ignored; `data` defaults to the recorded dataset).
        ensemble_top_k: fuse the top K trials into an ensemble at the end (0: none).
        address: an existing Ray cluster (auto, HOST:PORT or ray://HOST:10001); None starts Ray locally.
        status_every: seconds between status lines (0: none; None: the command line's default).
        **search_options: SearchConfig fields, with its defaults (the command line's): name (the space),
            storage ($ECHOTUNE_STORAGE or "results"), profile (quick; quick-all, full), num_samples (8),
            max_epochs (10, at least 3), img_size (the profile's; a multiple of 32), concurrency (2),
            cpus_per_trial, gpus_per_trial, seed, objectives (["score"], or e.g. "map50,view_acc"), scheduler
            (asha; fifo with several objectives; pbt), searcher (tpe, random), time_budget_s, final_top_k (3;
            0: no final round), final_seeds, recipe_point, allow_leaky_splits, video_id_pattern.

    Returns:
        SearchResult: the experiment folder, leaderboard, the trial handed back (id, TrainConfig, checkpoint,
        val score) and the held-out test numbers.

    Raises:
        ValueError: an unknown or invalid option (the message names it), or an unusable dataset (DataError,
            listing each problem's file and line); FileExistsError: the experiment folder exists (pass
            resume=True or another name).

    Example:
        >>> result = echotune.run_search(name="nb", num_samples=4, max_epochs=3, img_size=96)  # doctest: +SKIP
        >>> result.leaderboard[["trial_id", "status", "best/val/score"]]  # doctest: +SKIP
    """
    from echotune.data.leakage import guard_leakage
    from echotune.results.search_record import read_search_record, resumed_config

    if ensemble_top_k < 0:
        raise ValueError(f"ensemble_top_k must be >= 0 (0: no ensemble), got {ensemble_top_k}")
    cfg = search_config(space, **search_options)
    experiment = Path(cfg.experiment_dir)
    if resume:
        if not experiment.is_dir():
            raise FileNotFoundError(f"resume=True: no experiment at {experiment}")
        record = read_search_record(experiment)
        if record:  # the search continues as it was started, whatever else was passed
            cfg = resumed_config(cfg, record)
            data = record.get("data_yaml") if data is None else data
    elif experiment.exists():
        raise FileExistsError(f"{experiment} already exists; continue it with resume=True or choose another name")
    checked = _dataset(data, cfg.video_id_pattern)
    # before Ray starts, with the notebook's spelling of the option in the refusal
    guard_leakage(checked, cfg.allow_leaky_splits, log=print, allow_hint=ALLOW_LEAKY)

    from echotune.search.orchestrate import run_search as run_search_end_to_end  # imports Ray: only now

    timing = {} if status_every is None else {"status_every": status_every}
    run_search_end_to_end(cfg, checked, resume=resume, address=address, ensemble_top_k=ensemble_top_k, **timing)
    return SearchResult.from_experiment(experiment)


def search_config(space: str = "gradnorm", **options: Any) -> SearchConfig:
    """A SearchConfig from keyword options, validated by SearchConfig itself (ValueError naming the field), with
    its defaults: name = the space, FIFO instead of ASHA when several objectives are given. The notebook adds the
    checks a keyword call needs: unknown option names, `objectives` as "map50,view_acc", a filesystem storage."""
    from echotune.results.layout import is_object_store

    valid = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown search option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")
    if isinstance(options.get("objectives"), str):  # "map50,view_acc", as on the command line
        options["objectives"] = [o.strip() for o in options["objectives"].split(",") if o.strip()]
    cfg = SearchConfig(space=space, **options)
    if cfg.pbt_interval is not None and cfg.scheduler != "pbt":  # it would be ignored without a word
        raise ValueError(f"pbt_interval is for scheduler='pbt' (this search's scheduler: {cfg.scheduler!r})")
    if is_object_store(cfg.storage):  # the summary, the final round and SearchResult read a filesystem
        raise ValueError(
            f"storage={cfg.storage!r}: the notebook API reads results from a filesystem; run searches "
            f"into object stores from the command line and read a synced copy with echotune.leaderboard"
        )
    return cfg


def _recorded_search_config(record: dict) -> SearchConfig | None:
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    values = {k: v for k, v in record.get("config", {}).items() if k in known}
    return SearchConfig(**values) if values else None


def _handed_back(experiment: Path) -> tuple[str | None, TrainConfig | None, Path | None, float | None]:
    """(trial id, TrainConfig, checkpoint file, val/score) of best_config.yaml: the one record of what the search
    hands back, written by its summary with or without a final round. All None before it exists."""
    import yaml

    from echotune.results.layout import BEST_CONFIG_FILE, CHECKPOINT_FILE
    from echotune.search.best_config import read_config_file

    path = experiment / BEST_CONFIG_FILE
    if not path.is_file():
        return None, None, None, None
    meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(read_config_file(path))
    checkpoint = Path(meta["checkpoint"]) if meta.get("checkpoint") else None
    if checkpoint is not None and checkpoint.is_dir():  # a Ray checkpoint folder: the engine's file inside
        checkpoint = checkpoint / CHECKPOINT_FILE
    return meta.get("trial_id"), config, checkpoint, meta.get("val/score")


def _test_metrics(held_out: dict | None) -> dict[str, float] | None:
    if not held_out or held_out.get("split") != "test":
        return None
    return dict(held_out["best"]["metrics"]["test"])


# ----------------------------------------------------------------------------------------------------- training
def train(
    data: str | os.PathLike | CheckedDataset | None = None,
    *,
    out: str | os.PathLike | None = None,
    config: TrainConfig | Mapping[str, Any] | None = None,
    allow_leaky_splits: bool = False,
    tensorboard: bool = False,
    verbose: bool = True,
    **train_options: Any,
) -> TrainResult:
    """Train one configuration with the three-stage schedule, as `echotune train` does (without its final
    evaluation on test).

    Args:
        data: a data.yaml path, a checked dataset, or None for the embedded synthetic echo set.
        out: the run's folder (default `results/train-<arch>-<time>`): last.pt, best.pt, run.json, results.csv.
        config: a TrainConfig (e.g. a SearchResult's best_config) or a mapping of its fields to start from;
            `train_options` override it.
        allow_leaky_splits: train even though a source video has frames in two splits (scores are optimistic).
        tensorboard: also write TensorBoard scalars into `out/tensorboard/`.
        verbose: print one line per epoch.
        **train_options: TrainConfig fields, e.g. arch ("shared", "dual"), model_scale ("test", "n", ... "l"),
            img_size, epochs (total over the three stages), stage_split, batch_size, lr_stage1..3, optimizer,
            balance (default gradnorm; fixed for arch="dual"), head, seed, device.

    Returns:
        TrainResult: per-epoch metrics (DataFrame), the best and last epochs' metrics and checkpoints, the config.

    Raises:
        ValueError: an unknown option or an invalid value (named), an unusable dataset, refused leaky splits, or
            a loss that became NaN (NonFiniteLossError).

    Example:
        >>> run = echotune.train(epochs=3, model_scale="test", img_size=96, out="results/nb-train")  # doctest: +SKIP
        >>> run.metrics[["epoch", "val/score"]], run.best_checkpoint  # doctest: +SKIP
    """
    from echotune.data.leakage import guard_leakage
    from echotune.engine import fit
    from echotune.engine.run_log import RunLog

    cfg = train_config(config, **train_options)
    log = print if verbose else _quiet
    checked = _dataset(data, log=log)
    leaky_splits = guard_leakage(checked, allow_leaky_splits, log=log, allow_hint=ALLOW_LEAKY)
    out = Path(out) if out is not None else Path("results") / f"train-{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_log = RunLog(out, tensorboard=tensorboard)  # results.csv, as the command line writes it
    try:
        fitted = fit(cfg, checked, report=run_log, out_dir=out, log=log)
    finally:
        run_log.close()
    return TrainResult(
        out_dir=out,
        config=cfg,
        metrics=_epoch_frame(fitted.history),
        best=dict(fitted.best),
        last=dict(fitted.last),
        best_checkpoint=fitted.best_checkpoint,
        last_checkpoint=fitted.last_checkpoint,
        leaky_splits=leaky_splits,
    )


def train_config(config: TrainConfig | Mapping[str, Any] | None = None, **options: Any) -> TrainConfig:
    """`config`'s fields (a TrainConfig or a mapping) with `options` over them, validated (ValueError names an
    unknown field or a bad value). As on the command line, arch="dual" without a balance gets balance="fixed"
    (GradNorm needs a shared layer)."""
    base = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    values = {**base, **options}
    if values.get("arch") == "dual" and "balance" not in options and "balance" not in base:
        values["balance"] = "fixed"
    return TrainConfig.from_dict(values)


def _epoch_frame(history: list[dict]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(history)
    first = [c for c in ("epoch", "stage") if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


# -------------------------------------------------------------------------------------------------- leaderboard
def leaderboard(experiment: str | os.PathLike, by: str = "score") -> pd.DataFrame:
    """The trials of a search folder, finished, running or interrupted, ranked by a validation metric.

    Read from Ray's and Optuna's own files (nothing is written), so every trial is listed: running, pending,
    stopped-early, errored and diverged ones too.

    Args:
        experiment: the experiment folder, `<storage>/<name>` (e.g. SearchResult.experiment).
        by: rank by this metric at each trial's best epoch: score (default), map50, map50_95, precision, recall,
            f1, view_acc, view_f1, kappa.

    Returns:
        pandas.DataFrame, one row per trial, scored trials best first (then those without a score). Columns:
        `rank` (1-based; null without a score), `trial_id`, `experiment`, `space`, `arch`, `is_baseline` (the
        original study's configuration), `status` (TERMINATED, STOPPED_EARLY, DIVERGED, ERROR, RUNNING, PENDING,
        INTERRUPTED, ...), `stopped_early`, `error`, `retries`, `epochs_trained`, `epochs_planned`, `wall_time_s`,
        `best_epoch`, `best/val/<metric>` (at the best epoch by val/score) and `final/val/<metric>` (last epoch)
        for map50, map50_95, precision, recall, f1, view_acc, view_f1, view_kappa and score, `checkpoint_path`
        (the trial's best checkpoint folder), `config_json`, `pbt_lineage`, `pbt_final_config` (PBT only) and
        `hp/<field>` for every TrainConfig field (null where the space does not set it).

    Raises:
        ValueError: not an experiment folder, or an unknown `by`.

    Example:
        >>> board = echotune.leaderboard("results/gradnorm")  # doctest: +SKIP
        >>> board.loc[board["status"] == "TERMINATED", ["trial_id", "best/val/score", "hp/lr_stage3"]]  # doctest: +SKIP
    """
    from echotune.reporting.tables import leaderboard_frame, metric_column, rank
    from echotune.search.experiment import load_experiment

    metric_column(by)  # an unknown metric fails before the folder is read
    return rank(leaderboard_frame(load_experiment(experiment).rows), by)


# ---------------------------------------------------------------------------------------------------- predict
def predict(
    weights: str | os.PathLike | TrainResult | SearchResult,
    images: str | os.PathLike | np.ndarray | Iterable[str | os.PathLike | np.ndarray],
    *,
    conf: float = 0.25,
    device: str = "auto",
    data: str | os.PathLike | None = None,
) -> list[Prediction]:
    """Detect jets and classify the view on images with one checkpoint or an ensemble.

    Images of any size and aspect ratio are letterboxed as in evaluation; boxes come back in their own pixels.

    Args:
        weights: a checkpoint file (best.pt / last.pt), a search trial's checkpoint folder (holding last.pt), an
            ensemble folder (holding manifest.yaml) or its manifest, or a TrainResult / SearchResult (its
            best_checkpoint).
        images: an image file, a folder (searched recursively, sorted), a BGR or grey uint8 array (as
            cv2.imread returns it), or a list of these.
        conf: keep boxes scoring at least this, in [0, 1].
        device: auto, cpu, cuda or cuda:N.
        data: a data.yaml for the class and view names of a checkpoint that stores none.

    Returns:
        One Prediction per image, in the order given: boxes (K, 4) xyxy in the image's pixels, scores, labels,
        class names, the view and every view's probability.

    Raises:
        FileNotFoundError: missing weights or images; ValueError: an unreadable image (named), a bad manifest or
        checkpoint, `conf` outside [0, 1].

    Example:
        >>> [p.view for p in echotune.predict("results/gradnorm/ensemble", "frames/")]  # doctest: +SKIP
    """
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf must be in [0, 1], got {conf}")
    sources = _image_sources(images)
    predictor = _predictor(weights, device, data)
    return [_predict_one(predictor, source, conf) for source in sources]


def _predictor(weights, device: str, data) -> EnsemblePredictor:
    from echotune.ensemble.manifest import MANIFEST_FILE
    from echotune.ensemble.predictor import EnsemblePredictor

    if isinstance(weights, (TrainResult, SearchResult)):
        if weights.best_checkpoint is None:
            raise ValueError("this search result has no checkpoint to predict with (no trial was scored)")
        weights = weights.best_checkpoint
    path = Path(weights).expanduser()
    if (path.is_dir() and (path / MANIFEST_FILE).is_file()) or path.suffix in (".yaml", ".yml"):
        return EnsemblePredictor.from_manifest(path, device)
    return EnsemblePredictor.from_checkpoint(path, device, data)


def _image_sources(images) -> list:
    """A flat list of image paths and arrays; a folder becomes its image files."""
    import numpy as np

    from echotune.ensemble.export import list_images

    if isinstance(images, np.ndarray):
        return [images]
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    sources = []
    for item in items:
        if isinstance(item, np.ndarray):
            sources.append(item)
            continue
        found = list_images(Path(item).expanduser())  # FileNotFoundError when it does not exist
        if not found:
            raise FileNotFoundError(f"{item}: no image files found")
        sources += found
    return sources


def _predict_one(predictor: EnsemblePredictor, source, conf: float) -> Prediction:
    import cv2

    path = None if not isinstance(source, Path) else source
    image = source if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: unreadable or not an image")
    found = predictor.predict(image, conf)
    width, height = found["image_wh"]
    return Prediction(
        image=path,
        width=int(width),
        height=int(height),
        boxes=found["boxes"],
        scores=found["scores"],
        labels=found["labels"],
        classes=tuple(found["classes"]),
        view=found["view"],
        view_probs=dict(found["view_probs"]),
    )


# ------------------------------------------------------------------------------------------------------ helpers
def _dataset(data, video_id_pattern: str | None = None, log: Callable[[str], None] = print) -> CheckedDataset:
    """None: the embedded synthetic set (generated once into the cache, as the command line does); a path: that
    data.yaml, checked; a CheckedDataset: used as it is. DataError (a ValueError) lists every error."""
    from echotune.data.check import CheckedDataset, check_dataset
    from echotune.data.prepare import resolve_data_yaml

    if isinstance(data, CheckedDataset):
        checked = data
    else:
        checked = check_dataset(resolve_data_yaml(data, log=log), video_id_pattern=video_id_pattern)
    checked.raise_if_errors()
    return checked


def _quiet(message: str) -> None:
    pass
