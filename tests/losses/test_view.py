from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from echotune.losses import VIEW_LOSSES, ViewLoss, class_balanced_weights
from tests.losses.helpers import NV

COUNTS = [50, 5, 0]
VIEWS = {
    "int": torch.tensor([2, -1, 0, 1]),
    "all_unlabelled": torch.tensor([-1, -1, -1, -1]),
    "mixup": torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.4, 0.6], [0.5, 0.0, 0.0]]),
    "mixup_unlabelled": torch.zeros(4, NV),
}


def make(kind: str, **kw) -> ViewLoss:
    return ViewLoss(NV, kind=kind, class_counts=COUNTS if kind == "class_balanced" else None, **kw)


@pytest.mark.parametrize("views", list(VIEWS))
@pytest.mark.parametrize("kind", VIEW_LOSSES)
def test_every_kind_gives_a_finite_connected_scalar(kind, views):
    logits = torch.randn(4, NV, requires_grad=True)
    loss = make(kind)(logits, VIEWS[views])
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    if "unlabelled" in views:
        assert loss == 0
    else:
        assert loss > 0 and logits.grad[1].abs().sum() == 0  # the unlabelled image is ignored


@pytest.mark.parametrize("kind", VIEW_LOSSES)
def test_soft_one_hot_rows_equal_hard_labels_and_correct_logits_win(kind):
    labels = torch.tensor([2, -1, 0, 1])
    soft = F.one_hot(labels.clamp(min=0), NV).float() * (labels >= 0)[:, None]
    logits = torch.randn(4, NV)
    torch.testing.assert_close(make(kind)(logits, labels), make(kind)(logits, soft))
    right = F.one_hot(labels.clamp(min=0), NV).float() * 6
    wrong = F.one_hot((labels + 1) % NV, NV).float() * 6
    assert make(kind)(right, labels) < 0.1 * make(kind)(wrong, labels)


def test_ce_ignores_unlabelled_images_exactly():
    logits, labels = torch.randn(4, NV), torch.tensor([2, -1, 0, 1])
    torch.testing.assert_close(make("ce")(logits, labels), F.cross_entropy(logits, labels, ignore_index=-1))


def test_label_smoothing_uses_the_smoothed_target():
    logits, labels = torch.randn(2, NV), torch.tensor([1, 0])
    q = torch.full((2, NV), 0.1 / NV) + F.one_hot(labels, NV) * 0.9  # 1 - s + s/V on the label, s/V elsewhere
    expected = -(q * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(make("label_smoothing", smoothing=0.1)(logits, labels), expected)


def test_focal_on_soft_targets_matches_the_formula():
    logits, q = torch.randn(4, NV), VIEWS["mixup"]
    keep = q.sum(1) > 0
    p, logp = logits[keep].softmax(1), logits[keep].log_softmax(1)
    qk = q[keep]
    expected = ((1 - (qk * p).sum(1)) ** 2 * -(qk * logp).sum(1)).mean()
    torch.testing.assert_close(make("focal", focal_gamma=2.0)(logits, q), expected)
    torch.testing.assert_close(make("focal", focal_gamma=0.0)(logits, q), make("ce")(logits, q))


def test_class_balanced_weights_by_hand():
    beta = 0.99
    w50, w5 = (1 - beta) / (1 - beta**50), (1 - beta) / (1 - beta**5)
    raw = torch.tensor([w50, w5, w5])  # the empty class takes the largest weight
    torch.testing.assert_close(class_balanced_weights(COUNTS, beta), raw * 3 / raw.sum())
    torch.testing.assert_close(class_balanced_weights([7, 7, 7], 0.9), torch.ones(3))
    logits, labels = torch.randn(4, NV), torch.tensor([2, -1, 0, 1])
    w = class_balanced_weights(COUNTS, 0.999)
    expected = (w[labels[[0, 2, 3]]] * F.cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]], reduction="none")).mean()
    torch.testing.assert_close(make("class_balanced")(logits, labels), expected)


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match="ce, label_smoothing, focal, class_balanced"):
        ViewLoss(NV, kind="softmax")
    with pytest.raises(ValueError, match="class_counts"):
        ViewLoss(NV, kind="class_balanced")
    with pytest.raises(ValueError, match="n_views"):
        ViewLoss(NV, kind="class_balanced", class_counts=[1, 2])
    with pytest.raises(ValueError, match="views must be"):
        ViewLoss(NV)(torch.randn(2, NV), torch.zeros(2, NV + 1))
