"""Detection loss for the YOLOv5-style head: IoU box loss, IoU-target objectness, per-class sigmoid classification.

Raw head output per level: (B, na, H, W, 5 + nc) logits, last dim (tx, ty, tw, th, obj, cls_0..cls_{nc-1}).
Decoding (grid units): xy = sigmoid(txy) * 2 - 0.5 + cell, wh = (sigmoid(twh) * 2)^2 * anchor_wh.
Per level: box loss = mean IoU-variant loss over matches; objectness target = that match's detached IoU-variant
value clamped to [0, 1] (the detector learns to predict localisation quality), mean over all cells, weighted by
level_balance; class loss = mean over matched cells' (M, nc) logits. Levels are summed, then scaled by the gains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert

from .assign import LevelTargets, build_targets
from .functional import BOX_LOSS_FNS, DETECTION_LOSS_KEYS, binary_loss, check_detection_args, graph_zero, smooth_one_hot

# Added to decoded sizes (grid units): saturated logits (< about -50) decode to w = h = 0 exactly, and CIoU's
# atan(w / h) would then be NaN. Negligible against real sizes (>= ~0.1 cells); keeps the gradient, unlike a clamp.
_MIN_WH = 1e-7


def decode_matched(ps: Tensor, anchor_wh: Tensor) -> Tensor:
    """ps (M, >=4) raw logits of matched cells, anchor_wh (M, 2) -> (M, 4) cx, cy (relative to the cell), w, h."""
    xy = ps[:, :2].sigmoid() * 2 - 0.5
    wh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh + _MIN_WH
    return torch.cat([xy, wh], 1)


class DetectionLoss:
    """`loss(raw, targets, anchors, strides)` -> {"loss/box", "loss/obj", "loss/cls_det"} scalar tensors."""

    head = "anchor"  # the detection head this loss trains (models.heads.DETECT_HEADS)

    def __init__(
        self,
        nc: int,
        box: str = "ciou",
        obj: str = "bce",
        cls: str = "bce",
        focal_gamma: float = 1.5,
        focal_alpha: float = 0.25,
        label_smoothing: float = 0.0,
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.5,
        level_balance: Sequence[float] = (4.0, 1.0, 0.4),
        img_size: int = 640,
        anchor_t: float = 4.0,
    ):
        self.box, self.obj, self.cls = check_detection_args(nc, label_smoothing, box, obj=obj, cls=cls)
        self.nc = nc
        self.gamma, self.alpha, self.eps = focal_gamma, focal_alpha, label_smoothing
        self.level_balance = tuple(float(b) for b in level_balance)
        self.anchor_t = anchor_t
        # Published YOLOv5 hyperparameter scaling (the 3 / num_levels factor is applied per call).
        self.box_gain = box_gain
        self.obj_gain = obj_gain * (img_size / 640) ** 2
        self.cls_gain = cls_gain * nc / 80

    def __call__(self, raw: Sequence[Tensor], targets: dict, anchors: Tensor, strides: Tensor) -> dict[str, Tensor]:
        self._check(raw, anchors)
        matches = build_targets(raw, targets, anchors, strides, self.anchor_t)
        level_scale = 3 / len(raw)
        gains = torch.tensor([self.box_gain, self.obj_gain, self.cls_gain]) * level_scale
        totals, per_image = [], []
        for p, t, balance in zip(raw, matches, self.level_balance):
            means, images = self._level(p, t)  # (3,), (3, B)
            level_weight = torch.tensor([1.0, balance, 1.0], device=p.device)
            totals.append(means * level_weight)
            per_image.append(images * level_weight[:, None])
        # x batch size, as the published recipe returns it: its gains and SGD lr 0.01 assume a batch-summed loss
        gains = gains.to(totals[0].device) * raw[0].shape[0]
        box, obj, cls = torch.stack(totals).sum(0) * gains
        self.last_per_image = (torch.stack(per_image).sum(0) * gains[:, None]).sum(0)
        return dict(zip(DETECTION_LOSS_KEYS, (box, obj, cls)))

    def _check(self, raw: Sequence[Tensor], anchors: Tensor) -> None:
        if len(raw) != len(self.level_balance):
            raise ValueError(f"{len(raw)} detector levels but level_balance has {len(self.level_balance)} entries")
        for i, p in enumerate(raw):
            if p.dim() != 5 or p.shape[1] != anchors.shape[1] or p.shape[-1] != 5 + self.nc:
                raise ValueError(
                    f"level {i}: raw output shape {tuple(p.shape)} is not (B, na={anchors.shape[1]}, "
                    f"H, W, 5 + nc={5 + self.nc})"
                )

    def _level(self, p: Tensor, t: LevelTargets) -> tuple[Tensor, Tensor]:
        """p (B, na, H, W, 5 + nc) -> ((box, obj, cls) losses of one level before gains, (3, B) detached per-image
        shares). Each share row averages over images to the loss it belongs to (obj: the image's own cell mean;
        box/cls: the image's matches' sum over all matches, times B), so hard-example mining can rank images."""
        batch = p.shape[0]
        obj_logits = p[..., 4].float()  # (B, na, H, W)
        obj_target = torch.zeros_like(obj_logits)
        zero, zeros = graph_zero(p), p.new_zeros(batch)
        if len(t) == 0:
            obj = binary_loss(self.obj, obj_logits, obj_target, self.alpha, self.gamma, reduction="none")
            return torch.stack([zero, obj.mean(), zero]), torch.stack([zeros, _image_means(obj), zeros])

        ps = p[t.img, t.anchor, t.gy, t.gx].float()  # (M, 5 + nc)
        pred = box_convert(decode_matched(ps, t.anchor_wh), "cxcywh", "xyxy")
        box_loss = BOX_LOSS_FNS[self.box](pred, box_convert(t.box, "cxcywh", "xyxy"))  # (M,)
        iou = (1.0 - box_loss.detach()).clamp(0.0, 1.0)  # the IoU variant's value

        # Several GTs can land in the same (img, anchor, cell): keep the best IoU, deterministically.
        b, na, h, w = obj_target.shape
        flat = ((t.img * na + t.anchor) * h + t.gy) * w + t.gx
        obj_target.view(-1).scatter_reduce_(0, flat, iou, reduce="amax")
        obj = binary_loss(self.obj, obj_logits, obj_target, self.alpha, self.gamma, reduction="none")
        box_share = _match_shares(box_loss, t.img, batch)

        if self.nc == 1:
            return (
                torch.stack([box_loss.mean(), obj.mean(), zero]),
                torch.stack([box_share, _image_means(obj), zeros]),
            )
        cls_target = smooth_one_hot(t.cls, self.nc, self.eps)  # (M, nc)
        pos = cls_target > 0.5
        if self.cls == "varifocal":  # IoU-aware target on the true class (VarifocalNet)
            cls_target = torch.where(pos, cls_target * iou[:, None], cls_target)
        cls = binary_loss(self.cls, ps[:, 5:], cls_target, self.alpha, self.gamma, pos=pos, reduction="none")
        cls_share = _match_shares(cls.mean(1), t.img, batch)
        return (
            torch.stack([box_loss.mean(), obj.mean(), cls.mean()]),
            torch.stack([box_share, _image_means(obj), cls_share]),
        )


def _image_means(elementwise: Tensor) -> Tensor:
    """(B, ...) -> (B,) detached per-image mean."""
    return elementwise.detach().flatten(1).mean(1)


def _match_shares(per_match: Tensor, img: Tensor, batch: int) -> Tensor:
    """(M,) per-match losses -> (B,) detached: each image's sum / M * B, so the mean over images is the batch mean."""
    shares = per_match.new_zeros(batch).index_add_(0, img, per_match.detach())
    return shares / len(per_match) * batch
