"""The anchor-free head's loss: Distribution Focal Loss, the integral decode, the loss contract, and learning."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from echotune.losses import (
    BINARY_LOSSES,
    BOX_LOSSES,
    AnchorFreeLoss,
    DetectionLoss,
    MultiTaskCriterion,
    ViewLoss,
    distribution_focal_loss,
)
from echotune.models import REG_MAX, create_model
from echotune.models.anchorfree import anchor_points, box_to_distance, expected_distance
from tests.losses.helpers import NC, NV, STRIDES, no_boxes, two_boxes

KEYS = {"loss/box", "loss/obj", "loss/cls_det"}


def make_raw(fill: float | None = None, grad: bool = True) -> list[torch.Tensor]:
    """Per level (2, S, S, 4 * REG_MAX + NC) logits of a 64 px input: random (fill=None) or constant."""
    shapes = [(2, s, s, 4 * REG_MAX + NC) for s in (8, 4, 2)]
    return [(torch.randn(sh) if fill is None else torch.full(sh, fill)).requires_grad_(grad) for sh in shapes]


class FakeModel(nn.Module):
    head_kind = "anchorfree"

    def __init__(self):
        super().__init__()
        self.register_buffer("strides", STRIDES.clone())


# ---------------------------------------------------------------- DFL and the integral representation
def test_dfl_is_minimal_on_the_two_neighbouring_bins_with_linear_weights():
    target = torch.tensor([3.3])
    best = torch.full((1, REG_MAX), 1e-6)
    best[0, 3], best[0, 4] = 0.7, 0.3
    best_logits = best.log().requires_grad_()
    loss = distribution_focal_loss(best_logits, target)
    entropy = -(0.7 * torch.log(torch.tensor(0.7)) + 0.3 * torch.log(torch.tensor(0.3)))
    torch.testing.assert_close(loss, entropy[None], atol=1e-4, rtol=0)  # the minimum is the weights' entropy
    loss.sum().backward()
    assert best_logits.grad.abs().max() < 1e-4  # a stationary point
    torch.testing.assert_close(expected_distance(best_logits.detach()[:, None]), target[:, None], atol=1e-3, rtol=0)
    for probs in ({3: 1.0}, {4: 1.0}, {3: 0.5, 4: 0.5}, {3: 0.3, 4: 0.7}, {2: 0.7, 3: 0.3}):
        other = torch.full((1, REG_MAX), 1e-6)
        for k, v in probs.items():
            other[0, k] = v
        assert distribution_focal_loss(other.log(), target) > loss.detach() + 0.01, probs
    assert distribution_focal_loss(torch.zeros(1, REG_MAX), target) > loss.detach() + 1.0  # uniform


def test_dfl_integer_target_and_upper_clamp():
    one_hot = torch.full((2, REG_MAX), -30.0)
    one_hot[0, 5] = one_hot[1, REG_MAX - 1] = 30.0
    # an integer target puts all weight on its own bin: a one-hot there costs nothing
    assert distribution_focal_loss(one_hot[:1], torch.tensor([5.0])) < 1e-6
    # the largest target the loss accepts (reg_max - 1 - 0.01) stays within the bins
    assert torch.isfinite(distribution_focal_loss(one_hot[1:], torch.tensor([REG_MAX - 1 - 0.01]))).all()


@pytest.mark.parametrize("k", [0, 1, 7, REG_MAX - 1])
def test_decode_of_a_one_hot_distribution_is_the_bin_value(k):
    logits = torch.full((3, 4, REG_MAX), -50.0)
    logits[..., k] = 50.0
    torch.testing.assert_close(expected_distance(logits), torch.full((3, 4), float(k)))
    assert expected_distance(torch.zeros(1, 4, REG_MAX)).allclose(torch.tensor((REG_MAX - 1) / 2))  # uniform


# ---------------------------------------------------------------- the loss contract
@pytest.mark.parametrize("box,cls", list(itertools.product(BOX_LOSSES, BINARY_LOSSES)))
@pytest.mark.parametrize("targets", [two_boxes, no_boxes], ids=["boxes", "empty"])
def test_every_option_gives_finite_scalars_and_gradients(box, cls, targets):
    raw = make_raw()
    loss = AnchorFreeLoss(NC, box=box, cls=cls, label_smoothing=0.1)
    losses = loss(raw, targets(), STRIDES)
    assert set(losses) == KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(r.grad is not None and torch.isfinite(r.grad).all() for r in raw)
    assert losses["loss/obj"] == 0 and losses["loss/obj"].requires_grad  # no objectness, still in the graph
    if targets is no_boxes:  # no GT: zero positives, only the class loss (every point a negative)
        assert loss.last_parts["num_fg"] == 0
        assert losses["loss/box"] == 0 and losses["loss/cls_det"] > 0
    else:
        assert loss.last_parts["num_fg"] > 0 and losses["loss/box"] > 0


@pytest.mark.parametrize("value", [-100.0, 100.0])
def test_saturated_logits_stay_finite(value):
    raw = make_raw(value)
    losses = AnchorFreeLoss(NC)(raw, two_boxes(), STRIDES)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()) and all(torch.isfinite(r.grad).all() for r in raw)


def test_box_part_is_the_sum_of_the_iou_and_dfl_terms_and_gains_scale_them():
    raw = make_raw(grad=False)
    base = AnchorFreeLoss(NC)
    losses = base(raw, two_boxes(), STRIDES)
    torch.testing.assert_close(losses["loss/box"], base.last_parts["iou"] + base.last_parts["dfl"])
    doubled = AnchorFreeLoss(NC, box_gain=15.0, dfl_gain=3.0, cls_gain=1.0)(raw, two_boxes(), STRIDES)
    torch.testing.assert_close(doubled["loss/box"], 2 * losses["loss/box"])
    torch.testing.assert_close(doubled["loss/cls_det"], 2 * losses["loss/cls_det"])


def test_exact_distributions_beat_shifted_ones():
    """Bins that put each positive's expected distances on its GT: IoU term ~0, DFL at its floor."""
    targets = {
        "boxes": [torch.tensor([[10.0, 10.0, 30.0, 25.0]]), torch.tensor([[34.0, 20.0, 50.0, 52.0]])],
        "classes": [torch.tensor([2]), torch.tensor([0])],
        "views": torch.tensor([1, -1]),
    }
    points, strides = anchor_points([(8, 8), (4, 4), (2, 2)], STRIDES)

    def raw_for(shift: float) -> list[torch.Tensor]:
        flat = torch.zeros(2, len(points), 4 * REG_MAX + NC)
        for i, box in enumerate(targets["boxes"]):
            dist = box_to_distance(points, box.expand(len(points), 4)) / strides[:, None] + shift
            dist = dist.clamp(0, REG_MAX - 1.01)
            left = dist.floor().long()
            probs = torch.full((len(points), 4, REG_MAX), 1e-6)
            probs.scatter_(-1, left[..., None], (left + 1 - dist)[..., None])
            probs.scatter_(-1, (left + 1)[..., None], (dist - left)[..., None])
            flat[i, :, : 4 * REG_MAX] = probs.clamp(min=1e-6).log().flatten(1)
        return [level.reshape(2, s, s, -1) for level, s in zip(flat.split([64, 16, 4], 1), (8, 4, 2))]

    loss = AnchorFreeLoss(NC)
    exact = loss(raw_for(0.0), targets, STRIDES)
    exact_iou = loss.last_parts["iou"]
    shifted = loss(raw_for(0.6), targets, STRIDES)
    assert exact_iou < 0.01 < 0.1 < loss.last_parts["iou"], (exact_iou, loss.last_parts)
    assert exact["loss/box"] < shifted["loss/box"]


def test_per_image_shares_average_to_the_total_and_rank_the_bad_image_first():
    loss = AnchorFreeLoss(NC)
    for targets in (two_boxes(), no_boxes()):
        losses = loss(make_raw(grad=False), targets, STRIDES)
        total = sum(losses.values())
        assert loss.last_per_image.shape == (2,) and not loss.last_per_image.requires_grad
        torch.testing.assert_close(loss.last_per_image.mean(), total)
    raw = make_raw(-5.0, grad=False)
    for level in raw:
        level[0, ..., 4 * REG_MAX :] = 5.0  # image 0: every point confidently predicts every class
    loss(raw, two_boxes(), STRIDES)
    assert loss.last_per_image[0] > 2 * loss.last_per_image[1]


def test_criterion_dispatches_by_head_and_refuses_a_mismatch():
    criterion = MultiTaskCriterion(AnchorFreeLoss(NC), ViewLoss(NV))
    losses = criterion(make_raw(), torch.randn(2, NV), two_boxes(), FakeModel())
    assert set(losses) == KEYS | {"loss/view", "per_image"}
    anchor_model = create_model("shared", scale="test", img_size=64)
    with pytest.raises(ValueError, match="AnchorFreeLoss is the loss of head='anchorfree'.*head='anchor'"):
        criterion(make_raw(), torch.randn(2, NV), two_boxes(), anchor_model)
    with pytest.raises(ValueError, match="DetectionLoss is the loss of head='anchor'"):
        MultiTaskCriterion(DetectionLoss(NC), ViewLoss(NV))(make_raw(), torch.randn(2, NV), two_boxes(), FakeModel())
    with pytest.raises(ValueError, match="not \\(B, H, W, 4 \\* reg_max"):
        AnchorFreeLoss(NC)([torch.zeros(2, 3, 8, 8, 9)] * 3, two_boxes(), STRIDES)
    criterion.set_label_smoothing(0.1)
    assert criterion.det.eps == 0.1


# ---------------------------------------------------------------- learning
def test_loss_decreases_on_a_fixed_batch():
    """A test-scale anchor-free model, 40 Adam steps on one synthetic batch: total and localisation loss fall."""
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = {
        "boxes": [
            torch.tensor([[8.0, 10.0, 40.0, 36.0]]),
            torch.tensor([[20.0, 16.0, 56.0, 60.0]]),
            torch.tensor([[4.0, 30.0, 30.0, 60.0], [34.0, 4.0, 60.0, 28.0]]),
            torch.zeros(0, 4),
        ],
        "classes": [torch.tensor([0]), torch.tensor([1]), torch.tensor([2, 3]), torch.zeros(0, dtype=torch.long)],
    }
    model = create_model("shared", scale="test", img_size=64, head="anchorfree").train()
    loss = AnchorFreeLoss(NC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        losses = loss(model.forward_raw(images)[0], targets, model.strides)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append((float(total.detach()), float(losses["loss/box"].detach())))
    (first_total, first_box), (last_total, last_box) = history[0], history[-1]
    assert last_total < 0.3 * first_total and last_box < 0.5 * first_box, history[::10]
