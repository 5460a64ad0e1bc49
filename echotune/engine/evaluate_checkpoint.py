"""Evaluate a saved checkpoint (its EMA weights, as during training) on any split of a checked dataset.

Selection on val, reporting on test: the P/R/F1 operating confidence is chosen on val (the checkpoint's own
epoch recorded it as `val/conf`) and applied unchanged to every other split. `evaluate_held_out` adds 95 %
bootstrap intervals over source videos and per-class metrics for the final report of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from echotune.data.check import CheckedDataset
from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.build import choose_device, create_network
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.config import TrainConfig
from echotune.engine.steps import evaluate
from echotune.metrics import METRIC_LABELS, Estimate, EvaluationSet, bootstrap_ci, paired_bootstrap, per_class_metrics

N_RESAMPLES = 1000  # bootstrap resamples of source videos for the reported 95 % intervals


def load_model(path: str | Path, device: str = "auto", expect: dict | None = None):
    """(model with the checkpoint's EMA weights in eval mode, its TrainConfig, the checkpoint dict), built from
    the checkpoint's own config: no dataset needed. `expect` (e.g. {"nc": 4, "n_views": 3, "arch": "dual"})
    refuses a checkpoint that differs in any of check_compatible's keys, naming the file and the differences."""
    state = load_checkpoint(path)
    saved = dict(state["config"])
    nc, n_views = saved.pop("nc"), saved.pop("n_views")
    if expect:
        check_compatible(state, {**saved, "nc": nc, "n_views": n_views, **expect}, path)
    # classifier_weights (a pretrained file) is only an initialisation: the checkpoint's weights replace it.
    cfg = TrainConfig.from_dict({**saved, "device": device, "kmeans_anchors": False, "classifier_weights": None})
    model = create_network(cfg, nc, n_views)
    try:
        model.load_state_dict(state["ema"]["module"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the {cfg.arch} model of its config: {exc}") from exc
    return model.to(choose_device(device)).eval(), cfg, state


def load_trained_model(path: str | Path, data: CheckedDataset, device: str = "auto"):
    """(model with the checkpoint's EMA weights in eval mode, its TrainConfig); refuses a mismatching dataset."""
    model, cfg, _ = load_model(path, device, {"nc": data.config.nc, "n_views": len(data.view_names)})
    return model, cfg


def recorded_val_conf(state: dict) -> float | None:
    """The operating confidence the checkpoint's own epoch chose on val (None: saved by an older version)."""
    history = state.get("history") or []
    return history[-1].get("val/conf") if history else None


def _split_loader(data: CheckedDataset, split: str, cfg: TrainConfig):
    if split not in data.samples or not data.samples[split]:
        raise ValueError(
            f"split {split!r} has no images in {data.config.yaml_path}; valid: "
            f"{', '.join(s for s in data.samples if data.samples[s])}"
        )
    return make_loader(EchoDataset(data.samples[split], cfg.img_size), cfg.batch_size)


def _evaluate_split(model, cfg: TrainConfig, data: CheckedDataset, split: str, conf: float | None):
    metrics, raw = evaluate(
        model,
        _split_loader(data, split, cfg),
        next(model.parameters()).device,
        data.config.nc,
        len(data.view_names),
        cfg.score_weights or None,
        conf=conf,
        prefix=f"{split}/",
    )
    return metrics, raw


def evaluate_checkpoint(
    path: str | Path, data: CheckedDataset, split: str = "test", device: str = "auto", conf: float | None = None
) -> dict:
    """Metrics named `<split>/map50`, ..., `<split>/conf` for the checkpoint's EMA model on `split`.

    P/R/F1 are read at `conf`; by default, on val the confidence is chosen there, on any other split it is the
    one val chose for this checkpoint (recorded at its epoch, else measured on val now)."""
    model, cfg, state = load_model(path, device, {"nc": data.config.nc, "n_views": len(data.view_names)})
    if conf is None and split != "val":
        conf = recorded_val_conf(state)
        if conf is None:
            conf = _evaluate_split(model, cfg, data, "val", None)[0]["val/conf"]
    return _evaluate_split(model, cfg, data, split, conf)[0]


@dataclass
class HeldOutEvaluation:
    """One checkpoint on val and the held-out splits, with the confidence chosen on val applied to all of them.

    `metrics[split]`: `{split}/map50`, ...; `ci[split]`: metric name (map50, ..., score) -> Estimate (95 %
    bootstrap over source videos); `per_class[split]`: class name -> ap50, ap50_95, precision, recall, f1, gt.
    """

    checkpoint: str
    epoch: int
    conf: float
    metrics: dict[str, dict[str, float]]
    ci: dict[str, dict[str, Estimate]]
    per_class: dict[str, dict[str, dict]]
    score_weights: dict | None = None
    evaluations: dict[str, EvaluationSet] = field(default_factory=dict, repr=False)  # for paired comparisons

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "conf_chosen_on": "val",
            "conf": self.conf,
            "metrics": self.metrics,
            "ci95": {split: {k: e.to_dict() for k, e in ci.items()} for split, ci in self.ci.items()},
            "per_class": self.per_class,
        }


def evaluate_held_out(
    path: str | Path,
    data: CheckedDataset,
    splits: tuple[str, ...] = ("val", "test"),
    device: str = "auto",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> HeldOutEvaluation:
    """Evaluate `path` on val (choosing the P/R/F1 confidence there) and then on the other `splits` that have
    images (applying it), each with bootstrap CIs over source videos and per-class metrics."""
    model, cfg, state = load_model(path, device, {"nc": data.config.nc, "n_views": len(data.view_names)})
    weights = cfg.score_weights or None
    splits = ("val", *(s for s in splits if s != "val" and data.samples.get(s)))
    conf = None
    result = HeldOutEvaluation(str(path), int(state.get("epoch", 0)), 0.0, {}, {}, {}, weights)
    for split in splits:
        metrics, raw = _evaluate_split(model, cfg, data, split, conf)
        conf = result.conf = raw["detection"].conf if conf is None else conf
        result.metrics[split] = metrics
        result.ci[split] = bootstrap_ci(raw["evaluation"], conf, n_resamples=n_resamples, seed=seed, weights=weights)
        result.per_class[split] = per_class_metrics(raw["detection"], data.config.names)
        result.evaluations[split] = raw["evaluation"]
    return result


def paired_difference(
    a: HeldOutEvaluation, b: HeldOutEvaluation, split: str, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, Estimate]:
    """a - b on `split` with a paired bootstrap (the same resampled videos for both), each at its own val conf."""
    return paired_bootstrap(
        a.evaluations[split],
        b.evaluations[split],
        a.conf,
        b.conf,
        n_resamples=n_resamples,
        seed=seed,
        weights=a.score_weights,
    )


def held_out_table(held: HeldOutEvaluation, names: tuple[str, ...] | list[str]) -> str:
    """Point estimates with 95 % intervals, one row per metric and one column per split, then per-class rows.

    metric     val                    test
    mAP50      0.412 [0.351, 0.470]   0.301 [0.240, 0.366]
    """
    splits = list(held.metrics)
    rows = [("metric", *splits)]
    rows += [(label, *(f"{held.ci[split][key]:.3f}" for split in splits)) for key, label in METRIC_LABELS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"P/R/F1 at confidence {held.conf:.3f} (chosen on val, applied unchanged to "
        f"{', '.join(s for s in splits if s != 'val') or 'no other split'}); 95 % CIs: bootstrap over source "
        f"videos"
    ]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    split = splits[-1]
    lines += [
        f"Per class ({split}):",
        f"  {'class':<16}{'AP50':>6}  {'AP50-95':>7}  {'P':>5}  {'R':>5}  {'F1':>5}  boxes",
    ]
    lines += [
        f"  {name:<16}{m['ap50']:6.3f}  {m['ap50_95']:7.3f}  {m['precision']:5.3f}  {m['recall']:5.3f}  "
        f"{m['f1']:5.3f}  {m['gt']:5d}"
        for name, m in held.per_class[split].items()
    ]
    return "\n".join(lines)
