"""Detection loss of the anchor-free head: task-aligned targets, IoU box loss, Distribution Focal Loss, class BCE.

Raw head output per level: (B, H, W, 4 * reg_max + nc) logits (models.anchorfree). Per batch, with the
task-aligned targets of ``echotune.losses.tal`` (positives' class targets = normalised alignment q):
  cls = sum over all points and classes of BCE(logit, q) / max(sum q, 1)     (negatives have q = 0)
  box = sum over positives of (1 - CIoU) * w / max(sum q, 1)                (w = the positive's q)
  dfl = sum over positives of DFL(4 sides, mean) * w / max(sum q, 1)
Dividing by the targets' sum (not the positive count) keeps the scale independent of how many points share a
GT and of how large the early, small q are (TOOD / GFL practice). Each term is times its gain and the batch size:
the engine's SGD lr 0.01 assumes a batch-summed loss (as the anchor loss does); see AnchorFreeLoss for the gains.

The engine's loss contract is {"loss/box", "loss/obj", "loss/cls_det"} whichever the head: "loss/box" holds
both localisation terms (gain_box * IoU + gain_dfl * DFL; the split is in ``last_parts``), "loss/obj" is a
graph-connected zero (there is no objectness), so GradNorm's detection task (the sum of the three) and every
reported metric name stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from echotune.models.anchorfree import (
    REG_MAX,
    anchor_points,
    box_to_distance,
    distance_to_box,
    expected_distance,
    flatten_levels,
)

from .functional import BOX_LOSS_FNS, DETECTION_LOSS_KEYS, binary_loss, check_detection_args, graph_zero, smooth_one_hot
from .tal import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TOPK, pad_targets, task_aligned_assign

# Multiplies the three published gains (see AnchorFreeLoss): a per-image scale at the default batch of 16.
GAIN_SCALE = 1 / 16
# Added to predicted side distances (px) before the IoU loss: saturated bin logits give an exact 0 distance on
# both sides, and CIoU's atan(w / h) would then be NaN (0 / 0). Negligible against real sizes; keeps the gradient.
_MIN_DIST = 1e-7


def distribution_focal_loss(bin_logits: Tensor, target: Tensor) -> Tensor:
    """DFL (GFL, Li et al. 2020): bin_logits (..., R), target (...) continuous in [0, R - 1) -> (...) loss.

    Cross-entropy towards the two bins around the target, weighted by closeness: with y_l = floor(y),
    y_r = y_l + 1, loss = (y_r - y) CE(y_l) + (y - y_l) CE(y_r). Minimal (equal to the entropy of the two
    weights) when softmax puts mass y_r - y on y_l and y - y_l on y_r, whose expectation is exactly y."""
    left = target.floor().long()
    w_left = left.float() + 1 - target
    log_p = bin_logits.float().log_softmax(-1)
    return -(
        log_p.gather(-1, left[..., None]).squeeze(-1) * w_left
        + log_p.gather(-1, (left + 1)[..., None]).squeeze(-1) * (1 - w_left)
    )


class AnchorFreeLoss:
    """`loss(raw, targets, strides)` -> {"loss/box", "loss/obj", "loss/cls_det"} scalar tensors.

    Gains: box 7.5, cls 0.5, dfl 1.5 (the published defaults of YOLOv8-style setups with this loss), all times
    gain_scale = 1/16. Unscaled, the batch-16 detection loss is ~60x the anchor head's (box ~110 + cls ~90 vs
    ~3.4 after the first epoch): measured on the shared model (n, 160 px), GradNorm's task-gradient ratio
    G_det / G_view on the shared layer was 40-340 in the first steps (anchor head: 0.5-1.7), and GradNorm pinned
    the detection weight at its floor (0.00-0.02) within 4 epochs. 12-epoch runs (seed 0, read on val): with
    AdamW (lr 0.003 / 0.001 / 0.0003) scale 1/16 reached val mAP50 0.157 and val/score 0.226 vs 0.111 and 0.116
    unscaled; with the default SGD recipe val/score was 0.039 for both (mAP50 0.000 vs 0.043 at the epochs
    chosen). 1/16 = the published gains on per-image losses at the default batch of 16, still batch-summed.

    cls: any of BINARY_LOSSES on the soft targets (BCE by default; "varifocal" weights positives by q).
    label_smoothing (stage 3) smooths positives' class rows only: negatives keep target 0, or every background
    point would be pushed to a score floor of eps / 2. alpha, beta, topk: the task-aligned assignment
    (echotune.losses.tal).
    """

    head = "anchorfree"

    def __init__(
        self,
        nc: int,
        box: str = "ciou",
        cls: str = "bce",
        focal_gamma: float = 1.5,
        focal_alpha: float = 0.25,
        label_smoothing: float = 0.0,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        gain_scale: float = GAIN_SCALE,
        reg_max: int = REG_MAX,
        topk: int = DEFAULT_TOPK,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
    ):
        self.box, self.cls = check_detection_args(nc, label_smoothing, box, cls=cls)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.nc, self.reg_max = nc, reg_max
        self.gamma, self.focal_alpha, self.eps = focal_gamma, focal_alpha, label_smoothing
        self.box_gain, self.cls_gain, self.dfl_gain = (g * gain_scale for g in (box_gain, cls_gain, dfl_gain))
        self.topk, self.alpha, self.beta = topk, alpha, beta

    def __call__(self, raw: Sequence[Tensor], targets: dict, strides: Tensor) -> dict[str, Tensor]:
        self._check(raw)
        batch, device = raw[0].shape[0], raw[0].device
        flat = flatten_levels(raw).float()  # (B, N, 4R + nc)
        bins = flat[..., : 4 * self.reg_max].reshape(batch, -1, 4, self.reg_max)  # (B, N, 4, R)
        cls_logits = flat[..., 4 * self.reg_max :]  # (B, N, nc)
        points, point_strides = anchor_points([tuple(r.shape[1:3]) for r in raw], strides, device)
        dist = expected_distance(bins) * point_strides[:, None]  # (B, N, 4) px
        pred_boxes = distance_to_box(points, dist + _MIN_DIST)

        gt_boxes, gt_labels, gt_mask = pad_targets(targets, device)
        t = task_aligned_assign(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach(),
            points,
            gt_boxes,
            gt_labels,
            gt_mask,
            self.topk,
            self.alpha,
            self.beta,
        )
        cls_target = smooth_one_hot(t.labels, self.nc, self.eps) * t.score[..., None]  # (B, N, nc), 0 off fg
        norm = cls_target.sum().clamp(min=1.0)

        pos = F.one_hot(t.labels, self.nc).bool() & t.fg[..., None]
        cls = binary_loss(
            self.cls, cls_logits, cls_target, self.focal_alpha, self.gamma, pos=pos, reduction="none"
        ).sum((1, 2))  # (B,)
        zeros = graph_zero(flat) + flat.new_zeros(batch)  # (B,), in the graph
        box, dfl = zeros, zeros
        if t.num_fg:
            img = t.fg.nonzero()[:, 0]  # (P,) image of each positive
            weight = cls_target[t.fg].sum(-1)  # (P,)
            iou_loss = BOX_LOSS_FNS[self.box](pred_boxes[t.fg], t.boxes[t.fg]) * weight
            target_bins = (box_to_distance(points, t.boxes) / point_strides[:, None])[t.fg]  # (P, 4) strides
            target_bins = target_bins.clamp(0, self.reg_max - 1 - 0.01)
            dfl_loss = distribution_focal_loss(bins[t.fg], target_bins).mean(-1) * weight
            box = zeros.index_add(0, img, iou_loss)
            dfl = zeros.index_add(0, img, dfl_loss)

        # per image: (B,) numerators over the batch's common denominator; x batch (batch-summed convention)
        box, dfl, cls = (x / norm * batch for x in (box, dfl, cls))
        loc = self.box_gain * box + self.dfl_gain * dfl
        cls = self.cls_gain * cls
        self.last_parts = {
            "iou": (self.box_gain * box).sum().detach(),
            "dfl": (self.dfl_gain * dfl).sum().detach(),
            "num_fg": t.num_fg,
        }
        # each image's share, averaging over images to the total (what hard-example mining ranks)
        self.last_per_image = ((loc + cls) * batch).detach()
        # (+ 0.0 turns graph_zero's -0.0, from a negative first logit, into 0.0 for the logs)
        return dict(zip(DETECTION_LOSS_KEYS, (loc.sum(), graph_zero(flat) + 0.0, cls.sum())))

    def _check(self, raw: Sequence[Tensor]) -> None:
        for i, p in enumerate(raw):
            if p.dim() != 4 or p.shape[-1] != 4 * self.reg_max + self.nc:
                raise ValueError(
                    f"level {i}: raw output shape {tuple(p.shape)} is not (B, H, W, 4 * reg_max="
                    f"{4 * self.reg_max} + nc={self.nc}) (an anchor-free head's output)"
                )
