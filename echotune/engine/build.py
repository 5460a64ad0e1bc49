"""Build what a trial trains from its TrainConfig: device, model with its criterion, optimizer."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from echotune.balance import FixedBalancer
from echotune.data.check import DataCheck
from echotune.engine.config import TrainConfig
from echotune.losses import DetectionLoss, MultiTaskCriterion, ViewLoss


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (valid here: auto, cpu)")
    return device


def view_class_counts(data: DataCheck) -> list[int]:
    counts = data.stats["train"].views
    return [int(counts.get(i, 0)) for i in range(len(data.view_names))]


def train_box_sizes(data: DataCheck, img_size: int) -> np.ndarray:
    """(N, 2) training box widths/heights in letterboxed pixels, for k-means anchors."""
    sizes = [s.labels.boxes[:, 2:] - s.labels.boxes[:, :2] for s in data.samples["train"] if len(s.labels.boxes)]
    scales = [img_size / max(s.image_hw) * np.array(s.image_hw[::-1], np.float32)
              for s in data.samples["train"] if len(s.labels.boxes)]
    if not sizes:
        return np.zeros((0, 2), np.float32)
    return np.concatenate([wh * scale for wh, scale in zip(sizes, scales)])


def build_criterion(cfg: TrainConfig, data: DataCheck) -> MultiTaskCriterion:
    det = DetectionLoss(data.config.nc, box=cfg.loss_box, obj=cfg.loss_obj, cls=cfg.loss_cls,
                        focal_gamma=cfg.focal_gamma, img_size=cfg.img_size)
    view = ViewLoss(len(data.view_names), kind=cfg.loss_view, smoothing=cfg.view_smoothing,
                    class_counts=view_class_counts(data) if cfg.loss_view == "class_balanced" else None)
    return MultiTaskCriterion(det, view)


def build_model(cfg: TrainConfig, data: DataCheck) -> nn.Module:
    from models import kmeans_anchors

    anchors = kmeans_anchors(train_box_sizes(data, cfg.img_size), img_size=cfg.img_size,
                             seed=cfg.seed) if cfg.kmeans_anchors else None
    return create_network(cfg, data.config.nc, len(data.view_names), anchors, build_criterion(cfg, data))


def create_network(cfg: TrainConfig, nc: int, n_views: int, anchors=None, criterion=None) -> nn.Module:
    """The model of `cfg` for nc classes and n_views views, without a dataset (e.g. to load a checkpoint for
    inference: no criterion, anchors come from the weights)."""
    from models import create_model

    common = dict(scale=cfg.model_scale, nc=nc, n_views=n_views, img_size=cfg.img_size,
                  dropout=cfg.view_dropout, anchors=anchors, criterion=criterion)
    if cfg.arch == "shared":
        return create_model("shared", view_level=cfg.view_level, **common)
    return create_model("dual", classifier=cfg.classifier, classifier_weights=cfg.classifier_weights, **common)


def build_optimizer(cfg: TrainConfig, model: nn.Module, balancer: FixedBalancer) -> torch.optim.Optimizer:
    """Param groups: weights with decay; biases and norm parameters without (the usual detector recipe).
    The dual model's classifier gets lr * lr_cls_factor. Uncertainty log-variances train here too; GradNorm's
    weights have their own optimizer inside the balancer. Each group's `lr_scale` multiplies the schedule's lr."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    classifier = getattr(model, "classifier", None)
    classifier_ids = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1
        scale = cfg.lr_cls_factor if id(param) in classifier_ids else 1.0
        groups.setdefault((decay, scale), []).append(param)
    param_groups = [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), params in groups.items()]
    extra = [p for n, p in balancer.named_parameters() if n == "log_var"]
    if extra:
        param_groups.append({"params": extra, "weight_decay": 0.0, "lr_scale": 1.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr_stage1, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=cfg.lr_stage1, betas=(cfg.momentum, 0.999))
