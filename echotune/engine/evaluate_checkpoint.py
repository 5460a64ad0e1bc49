"""Evaluate a saved checkpoint (its EMA weights, as during training) on any split of a checked dataset."""
from __future__ import annotations

from pathlib import Path

from echotune.data.check import DataCheck
from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.build import choose_device, create_network
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.config import TrainConfig
from echotune.engine.steps import evaluate


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


def load_trained_model(path: str | Path, data: DataCheck, device: str = "auto"):
    """(model with the checkpoint's EMA weights in eval mode, its TrainConfig); refuses a mismatching dataset."""
    model, cfg, _ = load_model(path, device, {"nc": data.config.nc, "n_views": len(data.view_names)})
    return model, cfg


def evaluate_checkpoint(path: str | Path, data: DataCheck, split: str = "test", device: str = "auto") -> dict:
    """Metrics named `<split>/map50`, ... for the checkpoint's EMA model on `split`."""
    if split not in data.samples:
        raise ValueError(f"split {split!r} not in the dataset; valid: {', '.join(data.samples)}")
    model, cfg = load_trained_model(path, data, device)
    loader = make_loader(EchoDataset(data.samples[split], cfg.img_size), cfg.batch_size)
    metrics, _ = evaluate(model, loader, next(model.parameters()).device, data.config.nc, len(data.view_names),
                          cfg.score_weights or None)
    return {f"{split}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
