"""Build what a trial trains from its TrainConfig: device, model with its criterion, optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from echotune.balance import FixedBalancer
from echotune.data.check import CheckedDataset
from echotune.engine.config import TrainConfig
from echotune.losses import AnchorFreeLoss, DetectionLoss, MultiTaskCriterion, ViewLoss


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (valid here: auto, cpu)")
    return device


def prefers_channels_last(device: torch.device) -> bool:
    """NHWC tensors let cuDNN pick its faster (tensor-core) convolutions; on CPU they only add conversions."""
    return device.type == "cuda"


@dataclass(frozen=True)
class DeviceRuntime:
    """How a trial drives its device; everything that differs between CPU and CUDA is decided here."""

    device: torch.device
    amp: bool  # float16 autocast + GradScaler (CUDA only: CPU float16 autocast is slower than float32)
    channels_last: bool  # see prefers_channels_last
    pin_memory: bool  # page-locked batches: the host-to-GPU copy runs asynchronously (pointless without a GPU)
    workers: int  # DataLoader worker processes


def device_runtime(cfg: TrainConfig, device: torch.device | None = None) -> DeviceRuntime:
    """The runtime for `cfg` on `device` (default: `choose_device(cfg.device)`).

    workers=-1 (auto): on CUDA, the trial's CPUs minus the one that drives the GPU, so images are decoded and
    augmented while the GPU computes; on CPU 0, because the training threads already use every CPU the trial has
    and loader processes would only take them away. A workers value >= 0 is used as given."""
    device = device if device is not None else choose_device(cfg.device)
    cuda = device.type == "cuda"
    workers = cfg.workers if cfg.workers >= 0 else (max(0, cfg.cpus - 1) if cuda else 0)
    return DeviceRuntime(
        device=device,
        amp=cfg.amp and cuda,
        channels_last=prefers_channels_last(device),
        pin_memory=cuda,
        workers=workers,
    )


def view_class_counts(data: CheckedDataset) -> list[int]:
    counts = data.stats["train"].views
    return [int(counts.get(i, 0)) for i in range(len(data.view_names))]


def train_box_sizes(data: CheckedDataset, img_size: int) -> np.ndarray:
    """(N, 2) training box widths/heights in letterboxed pixels, for k-means anchors."""
    sizes = [s.labels.boxes[:, 2:] - s.labels.boxes[:, :2] for s in data.samples["train"] if len(s.labels.boxes)]
    scales = [
        img_size / max(s.image_hw) * np.array(s.image_hw[::-1], np.float32)
        for s in data.samples["train"]
        if len(s.labels.boxes)
    ]
    if not sizes:
        return np.zeros((0, 2), np.float32)
    return np.concatenate([wh * scale for wh, scale in zip(sizes, scales)])


def build_criterion(cfg: TrainConfig, data: CheckedDataset) -> MultiTaskCriterion:
    if cfg.head == "anchorfree":  # no objectness: loss_obj does not apply
        det = AnchorFreeLoss(data.config.nc, box=cfg.loss_box, cls=cfg.loss_cls, focal_gamma=cfg.focal_gamma)
    else:
        det = DetectionLoss(
            data.config.nc,
            box=cfg.loss_box,
            obj=cfg.loss_obj,
            cls=cfg.loss_cls,
            focal_gamma=cfg.focal_gamma,
            img_size=cfg.img_size,
        )
    view = ViewLoss(
        len(data.view_names),
        kind=cfg.loss_view,
        smoothing=cfg.view_smoothing,
        class_counts=view_class_counts(data) if cfg.loss_view == "class_balanced" else None,
    )
    return MultiTaskCriterion(det, view)


def build_model(cfg: TrainConfig, data: CheckedDataset) -> nn.Module:
    from echotune.models import kmeans_anchors

    anchors = (
        kmeans_anchors(train_box_sizes(data, cfg.img_size), img_size=cfg.img_size, seed=cfg.seed)
        if cfg.kmeans_anchors
        else None
    )
    return create_network(cfg, data.config.nc, len(data.view_names), anchors, build_criterion(cfg, data))


def create_network(cfg: TrainConfig, nc: int, n_views: int, anchors=None, criterion=None) -> nn.Module:
    """The model of `cfg` for nc classes and n_views views, without a dataset (e.g. to load a checkpoint for
    inference: no criterion, anchors come from the weights)."""
    from echotune.models import create_model

    common = dict(
        scale=cfg.model_scale,
        nc=nc,
        n_views=n_views,
        img_size=cfg.img_size,
        dropout=cfg.view_dropout,
        anchors=anchors,
        criterion=criterion,
        head=cfg.head,
    )
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
    for param in model.parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1
        scale = cfg.lr_cls_factor if id(param) in classifier_ids else 1.0
        groups.setdefault((decay, scale), []).append(param)
    param_groups = [
        {"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), params in groups.items()
    ]
    extra = [p for n, p in balancer.named_parameters() if n == "log_var"]
    if extra:
        param_groups.append({"params": extra, "weight_decay": 0.0, "lr_scale": 1.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr_stage1, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=cfg.lr_stage1, betas=(cfg.momentum, 0.999))
