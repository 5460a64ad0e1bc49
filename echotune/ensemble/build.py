"""build_ensemble: leaderboard -> members -> cached predictions -> tuning on val -> evaluation -> manifest.

Order matters for honesty: the tuning split's predictions are computed and the study is run before the
evaluation split is read at all. The best single member (best leaderboard val/score) is evaluated through the
same cached-prediction code path, without TTA, so "best single vs ensemble" compares like with like.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from echotune.data.check import CheckedDataset
from echotune.data.leakage import guard_leakage
from echotune.engine.checkpoint import package_versions
from echotune.ensemble.fusion import FUSIONS, FusionParams
from echotune.ensemble.inference import SplitPredictions, predict_split
from echotune.ensemble.manifest import MANIFEST_FILE, Manifest, ManifestMember, load_manifest, save_manifest
from echotune.ensemble.members import Member, checkpoint_file, load_member, select_members
from echotune.ensemble.predictor import EnsemblePredictor
from echotune.ensemble.result import EnsembleResult, comparison_table, gain, write_metrics
from echotune.ensemble.scoring import evaluation_set, member_metrics, split_metrics
from echotune.ensemble.tta import TTA_MODES
from echotune.ensemble.tuning import DEFAULT_TRIALS, TuneResult, tune_fusion
from echotune.metrics import bootstrap_ci, metrics_dict, paired_bootstrap
from echotune.results.layout import ENSEMBLE_DIR, LEADERBOARD_FILE, METRICS_FILE
from echotune.results.leaderboard import read_leaderboard

N_RESAMPLES = 1000  # bootstrap resamples of source videos for the intervals


def check_split(data: CheckedDataset, split: str) -> None:
    if split not in data.samples or not data.samples[split]:
        raise ValueError(
            f"split={split!r} has no images in {data.config.yaml_path}; valid: "
            f"{', '.join(s for s in data.samples if data.samples[s])}"
        )


def check_options(data: CheckedDataset, tta: str, fusion: str, tune_on: str, split: str) -> None:
    """ValueError listing the valid choices for a bad tta / fusion / split / tune_on."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r} is not valid; choose one of: {', '.join(TTA_MODES)}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion!r} is not valid; choose one of: {', '.join(FUSIONS)}")
    check_split(data, split)
    tunable = [s for s in data.samples if s != "test" and data.samples[s]]
    if tune_on not in tunable:
        raise ValueError(
            f"tune_on={tune_on!r} is not valid; choose one of: {', '.join(tunable)} "
            "(never test: tuning on it would make the test numbers optimistic)"
        )


def _versions() -> dict:
    return package_versions(extra=("ensemble-boxes",))


def _select(experiment_dir: Path, top_k: int, diverse: bool, log: Callable[[str], None]) -> list[Member]:
    board = experiment_dir / LEADERBOARD_FILE
    if not board.is_file():
        raise FileNotFoundError(
            f"{board} does not exist: is {experiment_dir} an experiment folder of a finished "
            "search (echotune search writes the leaderboard at the end; for an interrupted one, "
            f"echotune leaderboard {experiment_dir} --write)?"
        )
    members = select_members(read_leaderboard(board).to_pylist(), top_k, diverse, source=str(board))
    if len(members) < top_k:
        log(f"note: only {len(members)} usable member(s) for top-k {top_k}{' with --diverse' if diverse else ''}")
    log("Members: " + ", ".join(f"{m.trial_id} ({m.arch}, val/score {m.val_score:.4f})" for m in members))
    return members


def _score(
    members: list[Member],
    tune_preds: SplitPredictions,
    preds: SplitPredictions,
    tuned: TuneResult,
    score_weights: dict | None,
    out: Path,
    n_resamples: int,
    seed: int,
) -> EnsembleResult:
    """Every member (plain run), the best single member (members[0]) and the tuned ensemble on both splits.

    Each model's P/R/F1 confidence is chosen on the tuning split and applied unchanged to `split`; the best
    single member and the ensemble get 95 % bootstrap intervals over source videos, and the gain a paired one
    (the same resampled videos for both)."""
    tune_on, split = tune_preds.split, preds.split
    per_member = []
    for i, m in enumerate(members):
        chosen = member_metrics(tune_preds, i, score_weights)
        per_member.append(
            {
                "trial_id": m.trial_id,
                "arch": m.arch,
                "leaderboard_val_score": m.val_score,
                "checkpoint": str(checkpoint_file(m.checkpoint)),
                tune_on: chosen,
                split: member_metrics(preds, i, score_weights, conf=chosen[f"{tune_on}/conf"]),
            }
        )
    single = per_member[0]
    single_conf = single[tune_on][f"{tune_on}/conf"]
    ensemble_val = split_metrics(tune_preds, tuned.weights, tuned.params, score_weights=score_weights)
    ensemble_conf = ensemble_val[f"{tune_on}/conf"]
    ensemble_set = evaluation_set(preds, tuned.weights, tuned.params)
    ensemble = metrics_dict(
        ensemble_set.detection(ensemble_conf), ensemble_set.view(), prefix=f"{split}/", weights=score_weights
    )
    single_set = evaluation_set(preds, [1.0] * len(members), FusionParams(), [0], tta=False)
    ci = {
        "best_single": bootstrap_ci(single_set, single_conf, n_resamples=n_resamples, seed=seed, weights=score_weights),
        "ensemble": bootstrap_ci(
            ensemble_set, ensemble_conf, n_resamples=n_resamples, seed=seed, weights=score_weights
        ),
        "gain": paired_bootstrap(
            ensemble_set,
            single_set,
            ensemble_conf,
            single_conf,
            n_resamples=n_resamples,
            seed=seed,
            weights=score_weights,
        ),
    }
    return EnsembleResult(
        members,
        tuned.weights,
        tuned.params,
        split,
        {"trial_id": single["trial_id"], "val_metrics": single[tune_on], "metrics": single[split]},
        ensemble,
        ensemble_val,
        gain(ensemble, single[split]),
        per_member,
        out / MANIFEST_FILE,
        out / METRICS_FILE,
        ci,
    )


def build_ensemble(
    experiment_dir: str | Path,
    data: CheckedDataset,
    top_k: int = 3,
    diverse: bool = False,
    tta: str = "none",
    fusion: str = "wbf",
    tune_on: str = "val",
    split: str = "test",
    tune_trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = print,
    n_resamples: int = N_RESAMPLES,
    allow_leaky_splits: bool = False,
    out_dir: str | Path | None = None,
) -> EnsembleResult:
    """Build, tune (on `tune_on` only), evaluate (on `split`) and save the ensemble of an experiment folder
    (into `out_dir`, default EXPERIMENT_DIR/ensemble).

    Leaky splits (a source video in more than one split) raise echotune.data.leakage.LeakySplitsError before
    anything is read or written, unless `allow_leaky_splits`: then metrics.json carries "leaky_splits"."""
    experiment_dir = Path(experiment_dir)
    out = Path(out_dir) if out_dir is not None else experiment_dir / ENSEMBLE_DIR
    leaky_splits = guard_leakage(data, allow_leaky_splits, log)
    arguments = {
        "experiment_dir": str(experiment_dir),
        "data_yaml": str(data.config.yaml_path),
        "top_k": top_k,
        "diverse": diverse,
        "tta": tta,
        "fusion": fusion,
        "tune_on": tune_on,
        "split": split,
        "tune_trials": tune_trials,
        "seed": seed,
        "device": device,
        "n_resamples": n_resamples,
        "argv": sys.argv,
    }
    check_options(data, tta, fusion, tune_on, split)
    if tune_on == split:
        log(f"warning: tuning and evaluating on the same split ({split}): its ensemble numbers are optimistic")
    members = _select(experiment_dir, top_k, diverse, log)
    loaded = [load_member(m, data, device) for m in members]
    score_weights = loaded[0][1].score_weights or None
    log(f"Predicting (tta {tta}) ...")
    tune_preds = predict_split(loaded, data.samples[tune_on], tune_on, data.config.nc, tta, log)
    tuned = tune_fusion(tune_preds, fusion, tune_trials, seed, score_weights, log)
    # only now is the evaluation split read
    preds = (
        tune_preds if split == tune_on else predict_split(loaded, data.samples[split], split, data.config.nc, tta, log)
    )
    result = _score(members, tune_preds, preds, tuned, score_weights, out, n_resamples, seed)
    write_metrics(
        result,
        result.metrics_path,
        arguments,
        {"trials": tuned.trials, "default_score": tuned.default_score, "best_score": tuned.val_score},
        leaky_splits=leaky_splits,
    )
    manifest = Manifest(
        [
            ManifestMember(m.trial_id, Path(p["checkpoint"]), m.arch, m.val_score)
            for m, p in zip(members, result.member_metrics)
        ],
        tuned.weights,
        tta,
        tuned.params,
        list(data.config.names),
        list(data.view_names),
        {
            "tuned_on": tune_on,
            "conf": result.val_metrics[f"{tune_on}/conf"],
            "data_yaml": str(data.config.yaml_path),
            "experiment": experiment_dir.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": _versions(),
        },
    )
    save_manifest(manifest, result.manifest_path)
    log(comparison_table(result))
    log(f"Wrote {result.manifest_path} and {result.metrics_path}")
    return result


def evaluate_manifest(
    path: str | Path,
    data: CheckedDataset,
    split: str = "test",
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Metrics (`<split>/map50`, ...) of a saved ensemble on `split`: rebuilds it from the manifest alone. P/R/F1
    are read at the confidence chosen on the tuning split (the manifest's `conf`; chosen on `split` itself for a
    manifest without one)."""
    predictor = EnsemblePredictor.from_manifest(path, device)
    conf = load_manifest(path).extra.get("conf")
    if predictor.names != list(data.config.names) or predictor.view_names != list(data.view_names):
        raise ValueError(
            f"{path}: the ensemble predicts classes {predictor.names} / views {predictor.view_names}, "
            f"the dataset has {list(data.config.names)} / {list(data.view_names)}"
        )
    check_split(data, split)
    preds = predict_split(predictor.members, data.samples[split], split, data.config.nc, predictor.tta, log)
    return split_metrics(
        preds,
        predictor.weights,
        predictor.params,
        score_weights=predictor.members[0][1].score_weights or None,
        conf=conf,
    )
