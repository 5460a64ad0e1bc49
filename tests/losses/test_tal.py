"""Task-aligned assignment (TOOD) on hand-made points, predictions and boxes."""

from __future__ import annotations

import pytest
import torch

from echotune.losses.tal import pad_targets, pairwise_iou, task_aligned_assign
from echotune.models.anchorfree import anchor_points

NC = 3
POINTS, _ = anchor_points([(8, 8)], [8.0])  # one stride-8 level of a 64 px image: centres 4, 12, .., 60


def point_index(x: float, y: float) -> int:
    return int(((y - 4) / 8) * 8 + (x - 4) / 8)


def assign(gt_boxes, gt_labels, scores=None, pred_boxes=None, **kw):
    """One image; predictions default to every point predicting a 0.5-score box equal to the first GT."""
    gt = torch.tensor(gt_boxes, dtype=torch.float32)[None]
    n = len(POINTS)
    scores = torch.full((1, n, NC), 0.5) if scores is None else scores
    pred_boxes = gt[:, :1].expand(1, n, 4).clone() if pred_boxes is None else pred_boxes
    labels = torch.tensor(gt_labels)[None]
    return task_aligned_assign(scores, pred_boxes, POINTS, gt, labels, torch.ones_like(labels, dtype=torch.bool), **kw)


def fg_points(t) -> set[tuple[float, float]]:
    return {tuple(p) for p in POINTS[t.fg[0]].tolist()}


def test_a_gt_gets_exactly_its_top_k_candidates_inside_the_box():
    # [0, 0, 40, 24] holds the centres x in {4, .., 36} (5) by y in {4, 12, 20} (3): 15 candidates.
    box = [0.0, 0.0, 40.0, 24.0]
    inside = [(x, y) for y in (4.0, 12.0, 20.0) for x in (4.0, 12.0, 20.0, 28.0, 36.0)]
    scores = torch.rand(1, len(POINTS), NC)
    scores[0, :, 1] = 0.99  # every point outside the box is the most confident: it must still not be chosen
    scores[0, [point_index(*p) for p in inside], 1] = torch.linspace(0.1, 0.9, len(inside))
    t = assign([box], [1], scores=scores, topk=10)
    assert fg_points(t) == set(inside[-10:])  # the 10 best aligned (same IoU everywhere: by score)
    assert (t.labels[t.fg] == 1).all() and (t.boxes[t.fg] == torch.tensor(box)).all()
    assert t.num_fg == 10
    # fewer candidates than k: all of them, nothing outside
    assert fg_points(assign([box], [1], topk=20)) == set(inside)


def test_points_outside_every_gt_are_negatives_with_zero_targets():
    t = assign([[0.0, 0.0, 40.0, 24.0]], [0])
    outside = ~t.fg[0]
    assert outside.sum() == len(POINTS) - 10
    assert (t.score[0, outside] == 0).all() and (t.boxes[0, outside] == 0).all()
    assert (t.labels[0, outside] == 0).all() and (t.gt_index[0, outside] == 0).all()


def test_a_point_inside_two_gts_goes_to_the_one_its_box_overlaps_most():
    a, b = [0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 48.0, 48.0]  # both hold the centres 12, 20, 28 (x and y)
    shared = [(x, y) for x in (12.0, 20.0, 28.0) for y in (12.0, 20.0, 28.0)]
    for predicted, winner in ((b, 1), (a, 0), ([9.0, 9.0, 47.0, 47.0], 1), ([1.0, 1.0, 30.0, 30.0], 0)):
        pred = torch.tensor(predicted).expand(1, len(POINTS), 4).clone()
        t = assign([a, b], [2, 0], pred_boxes=pred, topk=64)  # k large: every candidate of both GTs is chosen
        for p in shared:
            i = point_index(*p)
            assert t.fg[0, i] and t.gt_index[0, i] == winner and t.labels[0, i] == (2, 0)[winner]
        # points inside only one GT keep that GT
        assert t.gt_index[0, point_index(4.0, 4.0)] == 0 and t.gt_index[0, point_index(44.0, 44.0)] == 1


def test_target_score_is_the_alignment_normalised_to_the_best_iou():
    gt = [0.0, 0.0, 32.0, 32.0]
    # every point predicts a box of IoU 0.25 with the GT, but two: IoU 1 and 0.5625
    pred = torch.tensor([8.0, 8.0, 24.0, 24.0]).expand(1, len(POINTS), 4).clone()
    good, mid, bad = point_index(12, 12), point_index(20, 20), point_index(28, 28)
    pred[0, good] = torch.tensor(gt)
    pred[0, mid] = torch.tensor([4.0, 4.0, 28.0, 28.0])
    scores = torch.full((1, len(POINTS), NC), 0.5)
    t = assign([gt], [0], scores=scores, pred_boxes=pred, topk=16, alpha=1.0, beta=2.0)
    torch.testing.assert_close(t.score[0, good], torch.tensor(1.0))  # the best-aligned point: its IoU, 1
    torch.testing.assert_close(t.score[0, mid], torch.tensor(0.5625**2))  # (0.5 * u^2) / (0.5 * 1) * 1
    torch.testing.assert_close(t.score[0, bad], torch.tensor(0.25**2))
    # with a worse best box, the scale follows the best IoU (the class score learns localisation quality)
    pred[0, good] = pred[0, mid]
    t = assign([gt], [0], scores=scores, pred_boxes=pred, topk=16, alpha=1.0, beta=2.0)
    assert float(t.score.max()) == pytest.approx(0.5625, rel=1e-4)


def test_images_without_gts_and_padding():
    boxes, labels, mask = pad_targets(
        {
            "boxes": [torch.zeros(0, 4), torch.tensor([[8.0, 8, 30, 30], [5, 5, 5, 9]])],
            "classes": [torch.zeros(0, dtype=torch.long), torch.tensor([1, 2])],
        },
        "cpu",
    )
    assert boxes.shape == (2, 2, 4) and mask.tolist() == [[False, False], [True, False]]  # degenerate box masked
    scores = torch.full((2, len(POINTS), NC), 0.5)
    pred = boxes[:, :1].expand(2, len(POINTS), 4).clone()
    t = task_aligned_assign(scores, pred, POINTS, boxes, labels, mask)
    assert t.fg[0].sum() == 0 and t.fg[1].sum() > 0 and (t.labels[1, t.fg[1]] == 1).all()
    empty = pad_targets({"boxes": [torch.zeros(0, 4)] * 2, "classes": [torch.zeros(0, dtype=torch.long)] * 2}, "cpu")
    t = task_aligned_assign(scores, pred, POINTS, *empty)
    assert t.num_fg == 0 and t.score.shape == (2, len(POINTS)) and (t.score == 0).all()


def test_pairwise_iou():
    gt = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 20, 10]]])
    pred = torch.tensor([[[0.0, 0, 10, 10], [5, 0, 15, 10], [30, 30, 40, 40]]])
    torch.testing.assert_close(pairwise_iou(gt, pred), torch.tensor([[[1.0, 1 / 3, 0], [0.5, 0.5, 0]]]))
