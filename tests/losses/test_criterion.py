from __future__ import annotations

import torch
from torch import nn

from echotune.losses import DetectionLoss, MultiTaskCriterion, ViewLoss
from tests.losses.helpers import ANCHORS, NC, NV, STRIDES, make_raw, no_boxes, two_boxes


class FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("anchors", ANCHORS.clone())
        self.register_buffer("strides", STRIDES.clone())


def test_criterion_returns_all_task_losses_and_backpropagates():
    criterion = MultiTaskCriterion(DetectionLoss(NC), ViewLoss(NV))
    for targets in (two_boxes(), no_boxes()):
        raw, view_logits = make_raw(), torch.randn(2, NV, requires_grad=True)
        losses = criterion(raw, view_logits, targets, FakeModel())
        per_image = losses.pop("per_image")
        assert set(losses) == {"loss/box", "loss/obj", "loss/cls_det", "loss/view"}
        assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
        assert per_image.shape == (2,) and not per_image.requires_grad
        # per-image shares average to the detection total; the view part is each image's own loss
        det_total = sum(losses[k] for k in ("loss/box", "loss/obj", "loss/cls_det"))
        torch.testing.assert_close((per_image - criterion.view.last_per_image).mean(), det_total.detach())
        sum(losses.values()).backward()
        assert view_logits.grad is not None and all(r.grad is not None for r in raw)


def test_per_image_loss_ranks_the_badly_predicted_image_first():
    # image 0's raw outputs are pushed far from its targets, image 1's are left neutral
    criterion = MultiTaskCriterion(DetectionLoss(NC), ViewLoss(NV))
    raw = make_raw(grad=False)
    for level in raw:
        level[0] += 5.0  # every cell of image 0 predicts a confident object: many false positives
    losses = criterion(raw, torch.zeros(2, NV), two_boxes(), FakeModel())
    assert losses["per_image"][0] > 2 * losses["per_image"][1]


def test_set_label_smoothing():
    criterion = MultiTaskCriterion(DetectionLoss(NC), ViewLoss(NV))
    criterion.set_label_smoothing(0.1)
    assert criterion.det.eps == 0.1
    import pytest

    with pytest.raises(ValueError, match="label smoothing must be in"):
        criterion.set_label_smoothing(1.0)
