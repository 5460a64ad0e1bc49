"""Which parameters the two tasks share: GradNorm's shared weight per view level, and dual's disjointness."""

from __future__ import annotations

import pytest
import timm
import torch

from echotune.models import VIEW_LEVELS, create_model

torch.set_num_threads(1)
S, B = 64, 2


# per view level, blocks after the branch point that only the detection path uses
DET_ONLY_AFTER = {
    "P3": ("detector.neck.p4_out.", "detector.neck.p5_out."),
    "P4": ("detector.neck.p5_out.",),
    "P5": (),
    "backbone": ("detector.neck.",),
}


def det_loss(det_raw) -> torch.Tensor:
    """Stand-in detection-only loss (sum of squares of the raw outputs)."""
    return sum((r**2).mean() for r in det_raw)


def grads_after(model, which: str) -> dict[str, torch.Tensor | None]:
    """Backward a detection-only or view-only loss from a fresh zero-grad state; name -> grad (None = unreached)."""
    model.zero_grad(set_to_none=True)
    det_raw, view_logits = model.forward_raw(torch.rand(B, 3, S, S))
    (det_loss(det_raw) if which == "det" else (view_logits**2).mean()).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_view_level_picks_shared_weight_and_head_channels():
    expected_channels = {"P3": 16, "P4": 32, "P5": 64, "backbone": 64}  # test scale: widths 256/512/1024 x 1/16
    weight_names = set()
    for level, path in VIEW_LEVELS.items():
        model = create_model("shared", scale="test", img_size=S, view_level=level)
        w = model.gradnorm_shared_weight
        assert w is model.get_submodule(path).fuse.conv.weight and model.shared_parameters() == [w]
        assert model.view_head.in_channels == expected_channels[level] == w.shape[0]
        weight_names.add(next(n for n, p in model.named_parameters() if p is w))
    assert len(weight_names) == len(VIEW_LEVELS)  # four different layers
    with pytest.raises(ValueError, match="valid: P3, P4, P5, backbone"):
        create_model("shared", scale="test", view_level="P6")


@pytest.mark.parametrize("level", list(VIEW_LEVELS))
def test_both_task_losses_reach_the_shared_weight(level):
    model = create_model("shared", scale="test", img_size=S, view_level=level).train()
    w_name = next(n for n, p in model.named_parameters() if p is model.gradnorm_shared_weight)
    view = grads_after(model, "view")
    assert view[w_name] is not None and view[w_name].abs().sum() > 0
    # W is the LAST shared layer: the view loss reaches nothing that only detection uses (head, later neck)
    det_only = ("detector.head.", *DET_ONLY_AFTER[level])
    assert all(view[n] is None for n in view if n.startswith(det_only))
    det = grads_after(model, "det")
    assert det[w_name] is not None and det[w_name].abs().sum() > 0
    assert all(det[n] is None for n in det if n.startswith("view_head."))


def test_dual_shares_nothing():
    model = create_model("dual", scale="test", img_size=S).train()
    det_ids = {id(p) for p in model.detector.parameters()}
    cls_ids = {id(p) for p in model.classifier.parameters()}
    assert det_ids.isdisjoint(cls_ids) and len(det_ids) + len(cls_ids) == len(list(model.parameters()))
    det = grads_after(model, "det")
    assert all(g is None for n, g in det.items() if n.startswith("classifier."))
    assert all(g is not None for n, g in det.items() if n.startswith("detector."))
    view = grads_after(model, "view")
    assert all(g is None for n, g in view.items() if n.startswith("detector."))
    assert model.shared_parameters() == []
    with pytest.raises(ValueError, match="GradNorm is not applicable"):
        _ = model.gradnorm_shared_weight


def test_dual_unknown_classifier_names_it():
    with pytest.raises(ValueError, match=r"'not_a_net'.*timm.list_models\(\)"):
        create_model("dual", scale="test", classifier="not_a_net")


def test_dual_loads_classifier_weights_from_file(tmp_path):
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # ImageNet-shaped head
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="fc.weight"):  # the 1000-class head cannot load into 3 classes
        model = create_model("dual", scale="test", img_size=S, classifier="resnet18", classifier_weights=path)
    torch.testing.assert_close(model.classifier.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.classifier.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.classifier.fc.weight.shape == (3, 512)
    assert set(model.classifier_load_report["skipped_shape"]) == {"fc.weight", "fc.bias"}
    # a training checkpoint wrapping the state_dict loads too
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    with pytest.warns(UserWarning):
        model = create_model("dual", scale="test", img_size=S, classifier_weights=str(path))
    torch.testing.assert_close(model.classifier.conv1.weight, source.conv1.weight)
    with pytest.raises(FileNotFoundError):
        create_model("dual", scale="test", classifier_weights=tmp_path / "missing.pth")
