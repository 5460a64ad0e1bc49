"""Decoding, NMS post-processing and anchor k-means on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echotune.models import decode_level, default_anchors, kmeans_anchors, postprocess

NC = 2
ANCHORS = torch.tensor([[[16.0, 16.0], [16.0, 20.0], [8.0, 8.0]]] * 3)  # (3 levels, 3, 2) px
STRIDES = (8, 16, 32)
LOW, HIGH = -20.0, 20.0  # logits giving probability ~0 / ~1


def empty_raw(size: int = 64, batch: int = 1) -> list[torch.Tensor]:
    """Raw outputs where every box has objectness ~0 (nothing should be detected)."""
    raw = [torch.zeros(batch, 3, size // s, size // s, 5 + NC) for s in STRIDES]
    for r in raw:
        r[..., 4] = LOW
    return raw


def put_box(raw, level=0, anchor=0, y=1, x=1, cls=0, obj=HIGH, txy=(0.0, 0.0), twh=(0.0, 0.0)) -> None:
    """Set one anchor's logits: class ``cls`` confident, others ~0."""
    r = raw[level][0, anchor, y, x]
    r[0:2], r[2:4], r[4] = torch.tensor(txy), torch.tensor(twh), obj
    r[5:] = LOW
    r[5 + cls] = HIGH


def test_decode_zero_logits_give_cell_centres_and_anchor_sizes():
    h, w, stride = 2, 3, 16.0  # non-square to catch x/y mix-ups
    out = decode_level(torch.zeros(1, 3, h, w, 5 + NC), ANCHORS[0], stride).view(1, 3, h, w, 5 + NC)
    for a in range(3):
        for y in range(h):
            for x in range(w):
                torch.testing.assert_close(out[0, a, y, x, :2], torch.tensor([(0.5 + x) * stride, (0.5 + y) * stride]))
                torch.testing.assert_close(out[0, a, y, x, 2:4], ANCHORS[0, a])
    torch.testing.assert_close(out[..., 4:], torch.full_like(out[..., 4:], 0.5))


def test_decode_matches_formula_on_random_logits():
    raw = torch.randn(2, 3, 4, 4, 5 + NC)
    out = decode_level(raw, ANCHORS[1], 8).view(2, 3, 4, 4, 5 + NC)
    a, y, x = 2, 3, 1
    s = raw[1, a, y, x].sigmoid()
    torch.testing.assert_close(out[1, a, y, x, 0], (s[0] * 2 - 0.5 + x) * 8)
    torch.testing.assert_close(out[1, a, y, x, 1], (s[1] * 2 - 0.5 + y) * 8)
    torch.testing.assert_close(out[1, a, y, x, 2:4], (s[2:4] * 2) ** 2 * ANCHORS[1, a])
    torch.testing.assert_close(out[1, a, y, x, 4:], s[4:])


def test_postprocess_nms_merges_overlapping_same_class_only():
    raw = empty_raw()
    put_box(raw, anchor=0)  # 16x16 at (12, 12)
    put_box(raw, anchor=1, obj=5.0)  # 16x20 at the same centre: IoU 0.8 with the first, same class -> suppressed
    put_box(raw, anchor=2, cls=1, obj=10.0)  # same place, other class -> kept
    (det,) = postprocess(raw, ANCHORS, STRIDES, iou_thres=0.6)
    assert det["labels"].tolist() == [0, 1]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([4.0, 4.0, 20.0, 20.0]))
    torch.testing.assert_close(det["scores"], torch.ones(2), atol=1e-4, rtol=0)


def test_postprocess_conf_threshold_and_score_is_obj_times_cls():
    raw = empty_raw()
    put_box(raw, y=2, x=2, obj=0.0)  # score = 0.5 * ~1
    put_box(raw, y=5, x=5, obj=-2.0)  # score = sigmoid(-2) ~ 0.12
    (det,) = postprocess(raw, ANCHORS, STRIDES, conf_thres=0.3)
    assert len(det["scores"]) == 1
    torch.testing.assert_close(det["scores"][0], torch.tensor(0.5), atol=1e-6, rtol=0)
    (det,) = postprocess(raw, ANCHORS, STRIDES, conf_thres=0.1)
    assert len(det["scores"]) == 2
    assert postprocess(empty_raw(), ANCHORS, STRIDES)[0]["boxes"].shape == (0, 4)


def test_postprocess_max_det_keeps_the_best():
    raw = empty_raw()
    for i, x in enumerate((0, 3, 6)):  # far apart, no overlap
        put_box(raw, y=4, x=x, obj=float(i))
    (det,) = postprocess(raw, ANCHORS, STRIDES, max_det=2)
    assert det["scores"].shape == (2,) and det["scores"][0] > det["scores"][1]
    assert det["boxes"][0, 0] > 40  # the x=6 box (highest objectness) first


def test_postprocess_clips_to_image_and_handles_batches():
    raw = empty_raw(size=64, batch=2)
    put_box(raw, level=2, x=0, y=0, twh=(HIGH, HIGH))  # (4 * 16)^2 px box centred at (16, 16): past the border
    put_box(raw, level=2, x=1, y=1, cls=1, obj=5.0, twh=(HIGH, HIGH))
    dets = postprocess(raw, ANCHORS, STRIDES)
    assert dets[0]["boxes"].tolist() == [[0.0, 0.0, 48.0, 48.0], [16.0, 16.0, 64.0, 64.0]]
    assert dets[1]["boxes"].shape == (0, 4)


def test_kmeans_recovers_clusters_sorted_by_area():
    centres = np.array(
        [[8, 10], [12, 20], [20, 14], [30, 40], [45, 30], [40, 60], [80, 70], [100, 140], [150, 110]], dtype=float
    )  # already in increasing area
    rng = np.random.default_rng(0)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(150, 2)) for c in centres])
    anchors = kmeans_anchors(wh[rng.permutation(len(wh))], n=9, img_size=320)
    assert anchors.shape == (3, 3, 2)
    areas = anchors.reshape(-1, 2).prod(1)
    assert (np.diff(areas) > 0).all()
    np.testing.assert_allclose(anchors.reshape(-1, 2), centres, rtol=0.05)


def test_kmeans_falls_back_to_defaults_with_few_boxes():
    with pytest.warns(UserWarning, match="distinct boxes"):
        anchors = kmeans_anchors(np.array([[10, 10], [20, 20], [20, 20], [1, 1]]), n=9, img_size=320)
    np.testing.assert_allclose(anchors, default_anchors(320))
    np.testing.assert_allclose(default_anchors(320)[2, 2], [186.5, 163.0])  # (373, 326) / 2
    with pytest.raises(ValueError, match="multiple of 3"):
        kmeans_anchors(np.ones((20, 2)), n=4)
