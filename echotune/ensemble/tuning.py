"""Tune member weights and fusion thresholds on cached validation predictions (a small Optuna TPE study).

Only the validation predictions are passed in, so the test split cannot leak into the choice; `tune_fusion`
also refuses predictions of a split named "test". The first trial is the untuned default (equal weights,
ensemble-boxes' usual thresholds), so tuning never returns something worse than the default on val.
A progress bar (stderr, only on a terminal) counts the study's trials while it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import optuna
from tqdm import tqdm

from echotune.ensemble.fusion import FusionParams
from echotune.ensemble.inference import SplitPredictions, progress_bar
from echotune.ensemble.scoring import split_metrics

DEFAULT_TRIALS = 30
WEIGHT_RANGE = (0.1, 1.0)
IOU_RANGE = (0.4, 0.75)
SKIP_RANGE = (0.0, 0.05)
SIGMA_RANGE = (0.1, 1.0)  # soft-nms only


@dataclass
class TuneResult:
    weights: list[float]  # one per member
    params: FusionParams
    val_score: float  # the objective at the chosen point
    default_score: float  # the objective of the untuned default
    trials: int  # 0 when there was nothing to tune


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _advance(bar: tqdm) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback moving `bar` one trial on, with the best score so far (it changes nothing else)."""

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if not bar.disable and trial.value is not None:
            bar.set_postfix_str(f"best {study.best_value:.4f}", refresh=False)

    return advance


def tune_fusion(
    val: SplitPredictions,
    method: str = "wbf",
    n_trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    score_weights: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Maximise `{split}/score` of the fused `val` predictions over weights, iou_thr, skip_box_thr (and sigma)."""
    if val.split == "test":
        raise ValueError(
            "refusing to tune the ensemble on the test split (its numbers would be optimistic); tune on val"
        )
    if n_trials < 1:
        raise ValueError(f"tune_trials must be >= 1, got {n_trials}")
    k = val.n_members
    key = f"{val.split}/score"

    def score(weights: list[float], params: FusionParams) -> float:
        return split_metrics(val, weights, params, score_weights=score_weights)[key]

    default_weights, default_params = [1.0] * k, FusionParams(method)
    if k == 1 and val.n_variants(0) == 1:
        log("  one member without TTA: nothing to fuse, nothing to tune")
        default = score(default_weights, default_params)
        return TuneResult(default_weights, default_params, default, default, 0)

    def suggest(trial: optuna.Trial) -> tuple[list[float], FusionParams]:
        weights = [trial.suggest_float(f"w{m}", *WEIGHT_RANGE) for m in range(k)] if k > 1 else [1.0]
        if method == "soft-nms":  # Gaussian soft-NMS has no IoU threshold
            return weights, FusionParams(
                method,
                default_params.iou_thr,
                trial.suggest_float("skip_box_thr", *SKIP_RANGE),
                trial.suggest_float("sigma", *SIGMA_RANGE),
            )
        return weights, FusionParams(
            method, trial.suggest_float("iou_thr", *IOU_RANGE), trial.suggest_float("skip_box_thr", *SKIP_RANGE)
        )

    with _quiet_optuna(), progress_bar(n_trials, f"tuning {method} on {val.split}", "trial") as bar:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.enqueue_trial(
            {
                **{f"w{m}": 1.0 for m in range(k) if k > 1},
                "skip_box_thr": default_params.skip_box_thr,
                **({"sigma": default_params.sigma} if method == "soft-nms" else {"iou_thr": default_params.iou_thr}),
            }
        )
        study.optimize(lambda trial: score(*suggest(trial)), n_trials=n_trials, callbacks=[_advance(bar)])
    weights, params = suggest(optuna.trial.FixedTrial(study.best_trial.params))
    default = float(study.trials[0].value)  # the enqueued default
    log(
        f"  tuned {method} on {val.split} ({n_trials} trials): {key} {default:.4f} (default) -> "
        f"{study.best_value:.4f}; weights {[round(w, 3) for w in weights]}, "
        + ", ".join(f"{name} {value:.4f}" for name, value in study.best_trial.params.items() if name[0] != "w")
    )
    return TuneResult(weights, params, float(study.best_value), default, n_trials)
