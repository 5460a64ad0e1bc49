"""Fusion and TTA on hand-made boxes: exact inverse mappings, identity cases, ensemble-boxes' behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from echotune.data.dataset import letterbox
from echotune.ensemble.fusion import FusionParams, fuse_detections, fuse_views
from echotune.ensemble.tta import Variant, boxes_to_original, flip_boxes, to_tensor, tta_variants

# Overlaps inside one set stay <= 0.6 (the members' own NMS IoU), as in real member output.
SET = {
    "boxes": np.array([[10, 12, 50, 40], [22, 12, 62, 40], [60, 60, 90, 95], [0, 0, 8, 8], [30, 5, 31, 6]], np.float32),
    "scores": np.array([0.9, 0.6, 0.5, 0.3, 0.01], np.float32),
    "labels": np.array([0, 0, 1, 2, 3], np.int64),
}


def test_flip_inverse_is_exact_on_hand_made_boxes():
    boxes = np.array([[0, 0, 10, 20], [5.5, 1, 64, 2], [30, 30, 34, 33]], np.float32)
    flipped = flip_boxes(boxes, 64)
    np.testing.assert_array_equal(flipped, [[54, 0, 64, 20], [0, 1, 58.5, 2], [30, 30, 34, 33]])
    np.testing.assert_array_equal(flip_boxes(flipped, 64), boxes)


@pytest.mark.parametrize("hw", [(97, 203), (300, 61), (64, 64)])
def test_flip_tta_maps_a_drawn_box_back_to_where_it_is(hw):
    # A white rectangle in an odd-sized image; find it in the flipped letterboxed tensor the model would see,
    # and map that box back: it must land on the rectangle (to within the resize's one-pixel blur).
    h, w = hw
    image = np.zeros((h, w, 3), np.uint8)
    box = np.array([[w * 0.1, h * 0.2, w * 0.45, h * 0.7]]).round()
    x1, y1, x2, y2 = box[0].astype(int)
    image[y1:y2, x1:x2] = 255
    square, lb = letterbox(image, 64)
    seen = to_tensor(square[None], Variant(64, flip=True))[0, 0].numpy() > 0.5
    ys, xs = np.nonzero(seen)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    np.testing.assert_allclose(boxes_to_original(found, Variant(64, True), lb), box, atol=1.5 / lb.scale)
    # the exact algebra: the box's letterboxed, flipped image maps back exactly
    exact = flip_boxes(lb.to_square(box.astype(np.float32)), 64)
    np.testing.assert_allclose(boxes_to_original(exact, Variant(64, True), lb), box, rtol=1e-5, atol=1e-3)


def test_tta_variants_identity_first_and_bad_mode():
    assert tta_variants("none", 160) == [Variant(160, False)]
    assert tta_variants("flip", 64) == [Variant(64, False), Variant(64, True)]
    assert tta_variants("scales", 160) == [Variant(160, False), Variant(128, False), Variant(192, False)]
    assert tta_variants("flip+scales", 64)[0] == Variant(64, False) and len(tta_variants("flip+scales", 64)) == 4
    with pytest.raises(ValueError, match="tta='mirror' is not valid; choose one of: none, flip, scales, flip"):
        tta_variants("mirror", 64)


def test_one_set_passes_through_unchanged():
    assert fuse_detections([SET], [0.3], (100, 100), FusionParams("wbf")) is SET


@pytest.mark.parametrize("method", ["wbf", "nms"])
@pytest.mark.parametrize("k", [2, 3])
def test_k_identical_members_equal_the_single_member(method, k):
    weights = [1.0, 0.4, 0.7][:k]  # any weights: every box is fused with its own copies only
    fused = fuse_detections([SET] * k, weights, (100, 120), FusionParams(method, iou_thr=0.6))
    order = np.argsort(-SET["scores"])
    np.testing.assert_allclose(fused["boxes"], SET["boxes"][order], atol=1e-3)
    np.testing.assert_allclose(fused["scores"], SET["scores"][order], rtol=1e-5)
    np.testing.assert_array_equal(fused["labels"], SET["labels"][order])


def test_boxes_outside_the_image_are_kept_in_the_members_frame():
    # letterbox padding: a member may predict a box reaching beyond a 40 x 100 image; fusion must not clip it
    pred = {
        "boxes": np.array([[-5, 10, 20, 50]], np.float32),
        "scores": np.array([0.8], np.float32),
        "labels": np.array([1]),
    }
    fused = fuse_detections([pred, pred], [1, 1], (40, 100))
    np.testing.assert_allclose(fused["boxes"], pred["boxes"], atol=1e-3)


def test_wbf_averages_overlapping_boxes_by_score_and_weight():
    a = {
        "boxes": np.array([[10, 10, 50, 50]], np.float32),
        "scores": np.array([0.8], np.float32),
        "labels": np.array([0]),
    }
    b = {
        "boxes": np.array([[14, 10, 54, 50]], np.float32),
        "scores": np.array([0.8], np.float32),
        "labels": np.array([0]),
    }
    fused = fuse_detections([a, b], [1.0, 1.0], (64, 64))
    np.testing.assert_allclose(fused["boxes"], [[12, 10, 52, 50]], atol=1e-3)
    np.testing.assert_allclose(fused["scores"], [0.8], rtol=1e-6)
    heavier_b = fuse_detections([a, b], [1.0, 3.0], (64, 64))  # weights scale each box's vote
    np.testing.assert_allclose(heavier_b["boxes"], [[13, 10, 53, 50]], atol=1e-3)
    other_class = fuse_detections([a, {**b, "labels": np.array([1])}], [1.0, 1.0], (64, 64))
    assert len(other_class["boxes"]) == 2  # never fused across classes


def test_soft_nms_decays_duplicates_instead_of_keeping_their_scores():
    one = {
        "boxes": np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float32),
        "scores": np.array([0.9, 0.5], np.float32),
        "labels": np.array([0, 0]),
    }
    fused = fuse_detections([one, one], [1, 1], (100, 100), FusionParams("soft-nms", skip_box_thr=0.001, sigma=0.5))
    decay = np.exp(-1 / 0.5)  # Gaussian soft-NMS: score * exp(-IoU^2 / sigma), IoU 1 with its copy
    np.testing.assert_allclose(fused["scores"], [0.9, 0.5, 0.9 * decay, 0.5 * decay], rtol=1e-4)
    np.testing.assert_allclose(fused["boxes"], one["boxes"][[0, 1, 0, 1]], atol=1e-3)
    dropped = fuse_detections([one, one], [1, 1], (100, 100), FusionParams("soft-nms", skip_box_thr=0.1))
    np.testing.assert_allclose(dropped["scores"], [0.9, 0.5, 0.9 * decay], rtol=1e-4)


def test_empty_sets_and_view_averaging():
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0)}
    for method in ("wbf", "soft-nms", "nms"):
        assert len(fuse_detections([empty, empty], [1, 1], (50, 50), FusionParams(method))["boxes"]) == 0
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    np.testing.assert_allclose(fuse_views(probs, [3, 1]), [0.55, 0.35, 0.1])
    np.testing.assert_allclose(fuse_views(np.stack([probs, probs]), [1, 1]), [[0.4, 0.5, 0.1]] * 2)
    with pytest.raises(ValueError, match="fusion='mean' is not valid; choose one of: wbf, soft-nms, nms"):
        FusionParams("mean")
