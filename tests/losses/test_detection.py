from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import box_iou

from echotune.losses import BINARY_LOSSES, BOX_LOSSES, DetectionLoss
from echotune.losses.functional import smooth_one_hot
from tests.losses.helpers import (
    ANCHORS,
    NC,
    STRIDES,
    decoded_pixels,
    make_raw,
    matches_for,
    no_boxes,
    separate_boxes,
    set_box_logits,
    two_boxes,
)

KEYS = {"loss/box", "loss/obj", "loss/cls_det"}


@pytest.mark.parametrize("box,obj,cls", list(itertools.product(BOX_LOSSES, BINARY_LOSSES, BINARY_LOSSES)))
@pytest.mark.parametrize("targets", [two_boxes, no_boxes], ids=["boxes", "empty"])
def test_every_option_gives_finite_scalars_and_gradients(box, obj, cls, targets):
    raw = make_raw()
    losses = DetectionLoss(NC, box=box, obj=obj, cls=cls, label_smoothing=0.1)(raw, targets(), ANCHORS, STRIDES)
    assert set(losses) == KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(r.grad is not None and torch.isfinite(r.grad).all() for r in raw)
    if targets is no_boxes:
        assert losses["loss/box"] == 0 and losses["loss/cls_det"] == 0 and losses["loss/obj"] > 0


@pytest.mark.parametrize("box", BOX_LOSSES)
@pytest.mark.parametrize("value", [-100.0, 100.0])
def test_saturated_logits_stay_finite(box, value):
    raw = make_raw(value)
    losses = DetectionLoss(NC, box=box)(raw, two_boxes(), ANCHORS, STRIDES)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(r.grad).all() for r in raw)


def test_single_class_skips_class_loss_but_stays_connected():
    raw = make_raw(nc=1)
    targets = two_boxes()
    targets["classes"] = [torch.zeros_like(c) for c in targets["classes"]]
    losses = DetectionLoss(1)(raw, targets, ANCHORS, STRIDES)
    assert losses["loss/cls_det"] == 0 and losses["loss/cls_det"].requires_grad and losses["loss/box"] > 0


@pytest.mark.parametrize("box", BOX_LOSSES)
def test_exact_box_logits_beat_shifted_ones(box):
    targets, loss = separate_boxes(), DetectionLoss(NC, box=box)
    matches = matches_for(targets)
    exact, shifted = make_raw(0.0, grad=False), make_raw(0.0, grad=False)
    set_box_logits(exact, matches)
    set_box_logits(shifted, matches, shift=0.4)
    pred, imgs = decoded_pixels(exact, matches)
    gt = torch.cat(targets["boxes"])[imgs]  # one box per image
    assert box_iou(pred, gt).diagonal().min() > 0.999
    good = loss(exact, targets, ANCHORS, STRIDES)["loss/box"]
    assert good < 1e-4 < loss(shifted, targets, ANCHORS, STRIDES)["loss/box"]


@pytest.mark.parametrize("kind", BINARY_LOSSES)
def test_correct_class_and_objectness_logits_beat_wrong_ones(kind):
    targets, loss = separate_boxes(), DetectionLoss(NC, obj=kind, cls=kind)
    matches = matches_for(targets)
    right, wrong = make_raw(-8.0, grad=False), make_raw(-8.0, grad=False)
    for raw in (right, wrong):
        set_box_logits(raw, matches)
    with torch.no_grad():
        for r, w, t in zip(right, wrong, matches):
            r[t.img, t.anchor, t.gy, t.gx, 4] = 8.0  # objectness where there is a jet
            r[t.img, t.anchor, t.gy, t.gx, 5 + t.cls] = 8.0  # and the right class
            w[..., 4] = 8.0  # objectness everywhere
            w[t.img, t.anchor, t.gy, t.gx, 5 + (t.cls + 1) % NC] = 8.0
    good, bad = loss(right, targets, ANCHORS, STRIDES), loss(wrong, targets, ANCHORS, STRIDES)
    assert good["loss/cls_det"] < 0.01 * bad["loss/cls_det"]
    assert good["loss/obj"] < 0.01 * bad["loss/obj"]


def test_label_smoothing_targets_are_exact():
    expected = torch.tensor([[0.05, 0.05, 0.95, 0.05], [0.95, 0.05, 0.05, 0.05]])
    torch.testing.assert_close(smooth_one_hot(torch.tensor([2, 0]), 4, 0.1), expected)
    torch.testing.assert_close(smooth_one_hot(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_gains_follow_the_published_scaling():
    loss = DetectionLoss(8, obj_gain=2.0, cls_gain=0.5, img_size=320)
    assert math.isclose(loss.obj_gain, 2.0 * 0.25) and math.isclose(loss.cls_gain, 0.5 * 8 / 80)


@pytest.mark.parametrize(
    "kw,choices",
    [
        ({"box": "iou"}, "giou, diou, ciou"),
        ({"obj": "mse"}, "bce, focal, varifocal"),
        ({"cls": "ce"}, "bce, focal, varifocal"),
    ],
)
def test_invalid_options_list_valid_choices(kw, choices):
    with pytest.raises(ValueError, match=choices):
        DetectionLoss(NC, **kw)


def test_wrong_raw_shape_is_rejected():
    with pytest.raises(ValueError, match="5 \\+ nc"):
        DetectionLoss(NC + 1)(make_raw(), two_boxes(), ANCHORS, STRIDES)


def test_optimising_free_raw_logits_fits_the_targets():
    targets, loss = separate_boxes(), DetectionLoss(NC, img_size=64)
    raw = make_raw(0.0)
    opt = torch.optim.Adam(raw, lr=0.05)  # higher rates leave Adam jittering around the optimum
    first = None
    for _ in range(200):
        total = sum(loss(raw, targets, ANCHORS, STRIDES).values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.2 * first
    pred, imgs = decoded_pixels(raw, matches_for(targets))
    gt = torch.cat(targets["boxes"])[imgs]  # one box per image
    assert box_iou(pred, gt).diagonal().min() > 0.9
