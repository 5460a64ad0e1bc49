"""Training and evaluation loops (torchvision-references style plain functions; no Ray in here).

`train_one_epoch` runs one pass with the balancer (GradNorm/fixed/uncertainty), per-step lr, gradient
clipping, EMA, AMP on CUDA, optional mixup and label smoothing; it records each image's loss for hard-example
mining. `evaluate` runs the EMA (or given) model with the usual mAP protocol (NMS at conf 0.001) and returns
the metrics under their reported names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from echotune.balance import FixedBalancer, GradNormBalancer
from echotune.engine.build import prefers_channels_last
from echotune.losses import DETECTION_LOSS_KEYS, VIEW_LOSS_KEY
from echotune.metrics import VAL_PREFIX, EvaluationSet, metrics_dict


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite: the trial must fail with this reason (never report NaN)."""


@dataclass
class EpochResult:
    losses: dict[str, float]  # mean of each named loss over the epoch's steps, plus "loss" (the weighted total)
    per_image_loss: dict[int, float] = field(default_factory=dict)  # dataset index -> loss, for hard mining
    images: int = 0
    seconds: float = 0.0
    steps: int = 0


@dataclass
class StepSettings:
    """What changes between stages, handed to train_one_epoch."""

    lr_at_step: Callable[[int], float]  # step index within the epoch -> lr (before each group's lr_scale)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    grad_clip: float = 10.0
    seed: int = 0  # mixup draws come from this seed (keyed by epoch) so resuming replays them exactly


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, dict]:
    images = batch["images"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = {
        "boxes": [b.to(device) for b in batch["boxes"]],
        "classes": [c.to(device) for c in batch["classes"]],
        "views": batch["views"].to(device),
    }
    return images, targets


def soft_views(views: torch.Tensor, n_views: int, smoothing: float) -> torch.Tensor:
    """(B,) int (-1 = none) -> (B, V) soft targets; unlabelled rows stay all-zero (ignored by the view loss)."""
    labelled = views >= 0
    soft = torch.zeros(len(views), n_views, device=views.device)
    soft[labelled] = nn.functional.one_hot(views[labelled], n_views).float() * (1 - smoothing) + smoothing / n_views
    return soft


def mixup(images: torch.Tensor, targets: dict, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Blend each image with a partner (weight lam vs 1 - lam); boxes of both are kept unless one is faint.

    targets["views"] must already be soft (B, V); they are blended with the same weights.
    """
    mixed = lam * images + (1 - lam) * images[perm]
    keep_own, keep_partner = lam >= 0.2, lam <= 0.8  # a frame at < 20 % opacity shows no usable jet
    boxes, classes = [], []
    for i, j in enumerate(perm.tolist()):
        parts = [(targets["boxes"][i], targets["classes"][i])] if keep_own else []
        parts += [(targets["boxes"][j], targets["classes"][j])] if keep_partner else []
        boxes.append(torch.cat([p[0] for p in parts]))
        classes.append(torch.cat([p[1] for p in parts]))
    soft = targets["views"]
    both = (soft.sum(1) > 0) & (soft[perm].sum(1) > 0)  # a partner without a view label voids the view target
    views = (lam * soft + (1 - lam) * soft[perm]) * both[:, None]
    return mixed, {"boxes": boxes, "classes": classes, "views": views}


def check_finite(losses: dict[str, torch.Tensor], where: str) -> None:
    bad = {k: v.detach().tolist() for k, v in losses.items() if not torch.isfinite(v).all()}
    if bad:
        raise NonFiniteLossError(f"non-finite loss at {where}: {bad} (lower the learning rate, or check the data)")


def train_one_epoch(
    model: nn.Module,
    balancer: FixedBalancer,
    loader,
    optimizer: torch.optim.Optimizer,
    settings: StepSettings,
    epoch: int,
    device: torch.device,
    ema=None,
    scaler: torch.amp.GradScaler | None = None,
    log_every: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> EpochResult:
    """autocast_dtype None: float16 autocast when `scaler` is enabled (CUDA AMP), else float32; a dtype (e.g.
    torch.bfloat16, which needs no scaler) autocasts the forward in it, with or without a scaler."""
    model.train()
    shared = model.gradnorm_shared_weight if isinstance(balancer, GradNormBalancer) else None
    amp = scaler is not None and scaler.is_enabled()
    low_precision = amp or autocast_dtype is not None
    autocast_dtype = autocast_dtype or torch.float16
    rng = np.random.default_rng([settings.seed, epoch, 7])
    sums: dict[str, float] = {}
    result = EpochResult(losses={})
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        lr = settings.lr_at_step(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        images, targets = to_device(batch, device, channels_last=prefers_channels_last(device))
        targets["views"] = soft_views(targets["views"], model.n_views, settings.label_smoothing)
        if settings.mixup_alpha > 0 and len(images) > 1:
            lam = float(rng.beta(settings.mixup_alpha, settings.mixup_alpha))
            perm = torch.from_numpy(rng.permutation(len(images))).to(device)
            images, targets = mixup(images, targets, lam, perm)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=low_precision):
            losses = model(images, targets)
        check_finite(losses, f"epoch {epoch + 1}, step {step + 1}")
        task_losses = torch.stack([sum(losses[k] for k in DETECTION_LOSS_KEYS), losses[VIEW_LOSS_KEY]]).float()
        if shared is not None:  # GradNorm's own task gradients: scaled like the model's backward, unscaled in fp32
            total = balancer.weighted_loss(
                task_losses, shared, grad_scale=scaler.get_scale() if amp else None, low_precision=low_precision
            )
        else:
            total = balancer.weighted_loss(task_losses, shared)
        optimizer.zero_grad(set_to_none=True)
        if amp:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if settings.grad_clip > 0 or (amp and shared is not None):
            with_grad = [p for p in model.parameters() if p.grad is not None]
            grad_norm = nn.utils.get_total_norm([p.grad for p in with_grad])  # non-finite: the scaler skips
        if shared is not None:  # before clipping: GradNorm measures the raw task gradients
            balancer.after_backward(shared, skip_update=amp and not bool(torch.isfinite(grad_norm)))
        if settings.grad_clip > 0:  # = clip_grad_norm_, reusing the norm
            nn.utils.clip_grads_with_norm_(with_grad, settings.grad_clip, grad_norm)
        if amp:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update(model)
        per_image = losses.get("per_image")
        if per_image is not None:
            for index, value in zip(batch["indices"], per_image.tolist()):
                result.per_image_loss[int(index)] = value
        for key, value in {**losses, "loss": total}.items():
            if key != "per_image":
                sums[key] = sums.get(key, 0.0) + float(value.detach())
        result.images += len(images)
        result.steps += 1
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}: loss {float(total):.4f} lr {lr:.2e}", flush=True)
    result.losses = {k: v / max(result.steps, 1) for k, v in sums.items()}
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    nc: int,
    n_views: int,
    score_weights: dict | None = None,
    conf: float | None = None,
    prefix: str = VAL_PREFIX,
) -> tuple[dict[str, float], dict]:
    """Metrics under their reported names (val/map50, ..., val/score, val/conf) plus the raw metric objects.

    `conf`: the P/R/F1 operating confidence; None chooses it on this split (validation), a float applies one
    chosen on val (test). The raw dict holds "detection", "view" and "evaluation" (the EvaluationSet with
    cached per-image matches and each image's source video, for bootstrap CIs).
    """
    model.eval()
    predictions, targets, view_logits, view_targets = [], [], [], []
    for batch in loader:
        images, _ = to_device(batch, device, channels_last=prefers_channels_last(device))
        out = model(images)
        finite = torch.isfinite(out["view_logits"]).all() and all(
            torch.isfinite(d["boxes"]).all() and torch.isfinite(d["scores"]).all() for d in out["detections"]
        )
        if not finite:
            raise NonFiniteLossError("non-finite model outputs during validation (the weights diverged)")
        predictions += [{k: v.float().cpu() for k, v in d.items()} for d in out["detections"]]
        targets += [{"boxes": b, "labels": c} for b, c in zip(batch["boxes"], batch["classes"])]
        view_logits.append(out["view_logits"].float().cpu())
        view_targets.append(batch["views"])
    samples = getattr(loader.dataset, "samples", None)  # EchoDataset: bootstrap groups are source videos
    groups = [s.video for s in samples] if samples is not None and len(samples) == len(predictions) else None
    evaluation = EvaluationSet.build(
        predictions, targets, torch.cat(view_logits), torch.cat(view_targets), nc, n_views, groups=groups
    )
    det, view = evaluation.detection(conf), evaluation.view()
    metrics = metrics_dict(det, view, prefix=prefix, weights=score_weights)
    if not all(math.isfinite(v) for v in metrics.values()):
        raise NonFiniteLossError(f"non-finite validation metric: {metrics}")
    return metrics, {"detection": det, "view": view, "evaluation": evaluation}
