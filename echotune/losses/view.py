"""View-classification loss: cross-entropy, label smoothing, softmax focal loss or class-balanced cross-entropy.

Every kind works on soft targets q (B, V), so hard labels and mixup rows share one code path. Images without a view
label (int -1, or an all-zero soft row) are ignored; the loss is the mean over labelled images. Soft rows are used as
given (not renormalised): a mixup of a labelled and an unlabelled image, q = lam * onehot, counts with weight lam.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import check_choice, graph_zero

VIEW_LOSSES = ("ce", "label_smoothing", "focal", "class_balanced")  # order: as the search spaces offer them


def class_balanced_weights(class_counts: Sequence[int], beta: float = 0.999) -> Tensor:
    """Effective-number class weights (Cui et al., CVPR 2019): w_c = (1 - beta) / (1 - beta^n_c), sum(w) = V.

    A class with no training examples has an infinite raw weight; it gets the largest finite one instead.
    """
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    if n.dim() != 1 or (n < 0).any():
        raise ValueError(f"class_counts must be a 1-D list of non-negative counts, got {class_counts}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"cb_beta must be in [0, 1), got {beta}")
    seen = n > 0
    w = torch.ones_like(n)
    if seen.any():
        w[seen] = (1 - beta) / (1 - beta ** n[seen])
        w[~seen] = w[seen].max()
    return (w * len(n) / w.sum()).float()


def soft_view_targets(views: Tensor, n_views: int) -> tuple[Tensor, Tensor]:
    """views (B,) int64 with -1 = none, or (B, V) float soft rows -> (q (B, V) float, labelled (B,) bool)."""
    if views.dim() == 1 and not views.is_floating_point():
        labelled = views >= 0
        return F.one_hot(views.clamp(min=0), n_views).float() * labelled[:, None], labelled
    if views.dim() == 2 and views.shape[1] == n_views:
        q = views.float()
        return q, q.sum(1) > 0
    raise ValueError(f"views must be (B,) int64 or (B, {n_views}) float, got {views.dtype} {tuple(views.shape)}")


class ViewLoss:
    """`loss(view_logits (B, V), views)` -> scalar tensor."""

    def __init__(
        self,
        n_views: int,
        kind: str = "ce",
        smoothing: float = 0.1,
        focal_gamma: float = 2.0,
        class_counts: Sequence[int] | None = None,
        cb_beta: float = 0.999,
    ):
        self.n_views = n_views
        self.kind = check_choice("kind", kind, VIEW_LOSSES)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing if kind == "label_smoothing" else 0.0
        self.gamma = focal_gamma
        self.weight: Tensor | None = None
        if kind == "class_balanced":
            if class_counts is None:
                raise ValueError("kind='class_balanced' needs class_counts (per-view counts of the training split)")
            if len(class_counts) != n_views:
                raise ValueError(f"class_counts has {len(class_counts)} entries for n_views={n_views}")
            self.weight = class_balanced_weights(class_counts, cb_beta)

    def __call__(self, view_logits: Tensor, views: Tensor) -> Tensor:
        q, labelled = soft_view_targets(views.to(view_logits.device), self.n_views)
        self.last_per_image = view_logits.new_zeros(len(view_logits)).float()  # (B,) detached, 0 if unlabelled
        if not labelled.any():
            return graph_zero(view_logits)
        logits, q = view_logits[labelled].float(), q[labelled]  # (N, V)
        weight = None if self.weight is None else self.weight.to(logits.device)
        # Per-image -sum_c w_c q_c log p_c, with q smoothed towards uniform for "label_smoothing".
        loss = F.cross_entropy(logits, q, weight=weight, label_smoothing=self.smoothing, reduction="none")
        if self.kind == "focal":  # (1 - p_t)^gamma with p_t = sum_c q_c p_c: the hard-label formula for soft rows
            p_t = (q * logits.softmax(1)).sum(1)
            loss = (1 - p_t).clamp(min=0).pow(self.gamma) * loss
        self.last_per_image[labelled] = loss.detach()
        return loss.mean()
