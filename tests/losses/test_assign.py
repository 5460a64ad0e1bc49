from __future__ import annotations

import torch

from tests.losses.helpers import make_targets, matches_for, no_boxes, two_boxes


def cells(level) -> set[tuple[int, int, int, int]]:
    return set(zip(level.img.tolist(), level.anchor.tolist(), level.gy.tolist(), level.gx.tolist()))


def test_known_position_gets_centre_cell_and_two_nearest_neighbours():
    # Box 20x15 px centred at (20, 17.5). Stride 16: centre (1.25, 1.09) -> cell (gy=1, gx=1), nearest borders
    # left and top -> neighbours (1, 0) and (0, 1). Anchors (3, 6.1) px: ratio 20/3 > 4 -> excluded;
    # (6.2, 4.5): 3.2, 3.3 -> match; (5.9, 11.9): 3.4, 1.3 -> match.
    level = matches_for(make_targets([[[10, 10, 30, 25]], []], [[2], []]))[1]
    expected = {(0, a, gy, gx) for a in (1, 2) for gy, gx in ((1, 1), (1, 0), (0, 1))}
    assert cells(level) == expected and len(level) == 6
    assert (level.cls == 2).all()
    centre = next(i for i, (gy, gx) in enumerate(zip(level.gy.tolist(), level.gx.tolist())) if (gy, gx) == (1, 1))
    torch.testing.assert_close(level.box[centre], torch.tensor([0.25, 17.5 / 16 - 1, 20 / 16, 15 / 16]))
    # Every match's cell + offset is the GT centre, offsets stay inside the decodable range (-0.5, 1.5).
    torch.testing.assert_close(level.box[:, 0] + level.gx, torch.full((6,), 20 / 16))
    torch.testing.assert_close(level.box[:, 1] + level.gy, torch.full((6,), 17.5 / 16))
    assert ((level.box[:, :2] > -0.5) & (level.box[:, :2] < 1.5)).all()
    # Stride 32: centre (0.625, 0.55) -> right and lower neighbours; stride 8: no anchor within ratio 4.
    assert cells(matches_for(make_targets([[[10, 10, 30, 25]], []], [[2], []]))[2]) == {
        (0, a, gy, gx) for a in (0, 1, 2) for gy, gx in ((0, 0), (0, 1), (1, 0))
    }


def test_border_neighbours_outside_the_grid_are_dropped():
    # 3x3 px box centred at (62, 30): stride 8 -> (7.75, 3.75); the right neighbour gx=8 does not exist.
    level = matches_for(make_targets([[], [[60.5, 28.5, 63.5, 31.5]]], [[], [1]]))[0]
    assert cells(level) == {(1, a, gy, 7) for a in range(3) for gy in (3, 4)}
    # Centre (2, 2) px -> (0.25, 0.25) in cell (0, 0): left/upper neighbours are outside -> centre cell only.
    level = matches_for(make_targets([[[0.5, 0.5, 3.5, 3.5]], []], [[0], []]))[0]
    assert cells(level) == {(0, a, 0, 0) for a in range(3)}


def test_anchor_t_excludes_mismatching_anchors():
    targets = make_targets([[[10, 10, 30, 25]], []], [[2], []])
    assert set(matches_for(targets)[1].anchor.tolist()) == {1, 2}
    assert set(matches_for(targets, anchor_t=3.36)[1].anchor.tolist()) == {1}  # 3.39 for anchor 2
    assert len(matches_for(targets, anchor_t=2.0)[1]) == 0


def test_no_boxes_and_degenerate_boxes_give_empty_levels():
    degenerate = make_targets([[[5, 5, 5, 20]], []], [[0], []])
    for targets in (no_boxes(), degenerate):
        for level in matches_for(targets):
            assert len(level) == 0 and level.box.shape == (0, 4) and level.anchor_wh.shape == (0, 2)


def test_image_indices_follow_the_box_lists():
    levels = matches_for(two_boxes())
    imgs = torch.cat([lv.img for lv in levels])
    assert set(imgs.tolist()) == {0, 1}
    classes = {(i, c) for lv in levels for i, c in zip(lv.img.tolist(), lv.cls.tolist())}
    assert classes <= {(0, 2), (1, 0), (1, 3)} and {(1, 0), (1, 3)} <= classes
