"""Evaluate a saved checkpoint (its EMA weights, as during training) on any split of a checked dataset."""
from __future__ import annotations

from pathlib import Path

from echotune.data.check import DataCheck
from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.build import build_model, choose_device
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.config import TrainConfig
from echotune.engine.steps import evaluate


def load_trained_model(path: str | Path, data: DataCheck, device: str = "auto"):
    """(model with the checkpoint's EMA weights in eval mode, its TrainConfig); refuses a mismatching dataset."""
    state = load_checkpoint(path)
    saved = dict(state["config"])
    nc, n_views = saved.pop("nc"), saved.pop("n_views")
    check_compatible(state, {**saved, "nc": data.config.nc, "n_views": len(data.view_names)}, path)
    cfg = TrainConfig.from_dict({**saved, "device": device, "kmeans_anchors": False})
    model = build_model(cfg, data)
    try:
        model.load_state_dict(state["ema"]["module"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the {cfg.arch} model of its config: {exc}") from exc
    return model.to(choose_device(device)).eval(), cfg


def evaluate_checkpoint(path: str | Path, data: DataCheck, split: str = "test", device: str = "auto") -> dict:
    """Metrics named `<split>/map50`, ... for the checkpoint's EMA model on `split`."""
    if split not in data.samples:
        raise ValueError(f"split {split!r} not in the dataset; valid: {', '.join(data.samples)}")
    model, cfg = load_trained_model(path, data, device)
    loader = make_loader(EchoDataset(data.samples[split], cfg.img_size), cfg.batch_size)
    metrics, _ = evaluate(model, loader, next(model.parameters()).device, data.config.nc, len(data.view_names),
                          cfg.score_weights or None)
    return {f"{split}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}
