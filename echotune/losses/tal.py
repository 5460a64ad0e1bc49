"""Task-aligned assignment for the anchor-free head (TOOD, Feng et al. ICCV 2021), written from the paper.

For each ground truth (GT): the candidates are the anchor points whose centres lie strictly inside its box; each
candidate's alignment metric is t = s^alpha * u^beta, with s the predicted score of the GT's class and u the IoU
of the predicted box with the GT; the top-k candidates by t become positives. A point claimed by several GTs keeps
the one whose box its prediction overlaps most (highest IoU). Each positive's class target is the normalised
alignment t / max_t(GT) * max_IoU(GT): the GT's best-aligned point gets its best IoU as target, the others less,
so the class score learns localisation quality (it is the detection score: this head has no objectness).

Vectorised over the batch: GTs are padded per image to the batch's largest count M, with a mask. Shapes: B images,
N anchor points, M GT slots, nc classes. Everything here is a target: it runs without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# alpha = 0.5, beta = 6 (rather than TOOD's alpha = 1): the scores start at the bias prior (~0.003-0.05) and move
# far less than the IoUs in the first epochs; the square root compresses the score range so that the
# localisation term u^6 decides more of the early ranking, while the score still breaks ties between equally
# well-placed points. Both settings are in common use; both are constructor arguments.
DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TOPK = 0.5, 6.0, 10
_EPS = 1e-9


@dataclass
class AlignedTargets:
    """Per anchor point of each image (B, N): fg (bool), gt_index (int64 GT slot, 0 where not fg), labels (int64),
    boxes (B, N, 4) xyxy px, and score (B, N) float, the normalised alignment (0 where not fg)."""

    fg: Tensor
    gt_index: Tensor
    labels: Tensor
    boxes: Tensor
    score: Tensor

    @property
    def num_fg(self) -> int:
        return int(self.fg.sum())


def pad_targets(targets: dict, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image box lists -> (boxes (B, M, 4) xyxy px, labels (B, M) int64, mask (B, M) bool), M = the largest
    count in the batch; boxes without area are masked out (as the anchor head's assignment drops them)."""
    boxes = [b.reshape(-1, 4).to(device, torch.float32) for b in targets["boxes"]]
    classes = [c.reshape(-1).to(device, torch.int64) for c in targets["classes"]]
    m = max((len(b) for b in boxes), default=0)
    out_boxes = torch.zeros(len(boxes), m, 4, device=device)
    out_labels = torch.zeros(len(boxes), m, dtype=torch.int64, device=device)
    mask = torch.zeros(len(boxes), m, dtype=torch.bool, device=device)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        out_boxes[i, : len(b)], out_labels[i, : len(b)] = b, c
        mask[i, : len(b)] = ((b[:, 2:] - b[:, :2]) > 0).all(1)
    return out_boxes, out_labels, mask


def pairwise_iou(gt: Tensor, pred: Tensor) -> Tensor:
    """gt (B, M, 4), pred (B, N, 4) xyxy -> (B, M, N) IoU."""
    lt = torch.maximum(gt[:, :, None, :2], pred[:, None, :, :2])
    rb = torch.minimum(gt[:, :, None, 2:], pred[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_gt = (gt[..., 2:] - gt[..., :2]).clamp(min=0).prod(-1)
    area_pred = (pred[..., 2:] - pred[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_gt[:, :, None] + area_pred[:, None, :] - inter + _EPS)


def points_inside(points: Tensor, gt: Tensor) -> Tensor:
    """points (N, 2), gt (B, M, 4) xyxy -> (B, M, N) bool: the point lies strictly inside the box."""
    lt = points[None, None] - gt[:, :, None, :2]
    rb = gt[:, :, None, 2:] - points[None, None]
    return torch.cat((lt, rb), -1).amin(-1) > _EPS


@torch.no_grad()
def task_aligned_assign(
    scores: Tensor,
    pred_boxes: Tensor,
    points: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    topk: int = DEFAULT_TOPK,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
) -> AlignedTargets:
    """scores (B, N, nc) sigmoid probabilities, pred_boxes (B, N, 4) xyxy px, points (N, 2) px; gt_* from
    pad_targets. Returns the per-point targets (see the module docstring)."""
    b, n, _ = scores.shape
    m = gt_boxes.shape[1]
    if m == 0 or not bool(gt_mask.any()):
        zeros = torch.zeros(b, n, dtype=torch.int64, device=scores.device)
        return AlignedTargets(zeros.bool(), zeros, zeros, scores.new_zeros(b, n, 4), scores.new_zeros(b, n))
    scores, pred_boxes = scores.float(), pred_boxes.float()
    candidate = points_inside(points, gt_boxes) & gt_mask[:, :, None]  # (B, M, N)
    iou = pairwise_iou(gt_boxes, pred_boxes) * candidate  # (B, M, N)
    cls_score = scores.gather(2, gt_labels[:, None, :].expand(b, n, m)).transpose(1, 2)  # (B, M, N)
    align = cls_score.pow(alpha) * iou.pow(beta) * candidate

    # top-k by the metric; non-candidates rank below every candidate (also below candidates with t = 0)
    k = min(topk, n)
    ranked = torch.where(candidate, align, torch.full_like(align, -1.0))
    top = ranked.topk(k, dim=-1).indices  # (B, M, k)
    pos = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate  # (B, M, N)

    # a point claimed by several GTs keeps the one with the highest IoU
    claimed = pos.sum(1, keepdim=True) > 1  # (B, 1, N)
    best = torch.where(pos, iou, torch.full_like(iou, -1.0)).argmax(1)  # (B, N)
    best_only = torch.nn.functional.one_hot(best, m).transpose(1, 2).bool()  # (B, M, N)
    pos = torch.where(claimed, best_only & pos, pos)

    fg = pos.any(1)  # (B, N)
    gt_index = pos.float().argmax(1)  # (B, N), 0 if not fg
    labels = gt_labels.gather(1, gt_index)
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(b, n, 4))

    align = align * pos
    align_max = align.amax(-1, keepdim=True)  # (B, M, 1)
    iou_max = (iou * pos).amax(-1, keepdim=True)  # (B, M, 1)
    score = (align * iou_max / (align_max + _EPS)).amax(1)  # (B, N)
    return AlignedTargets(fg, gt_index * fg, labels * fg, boxes * fg[..., None], score)
