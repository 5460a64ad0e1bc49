"""Tests of the models package: registry, shapes for every model x scale, forward routing, gradients, decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from echotune.models import SCALES, create_model, default_anchors, list_models, postprocess

torch.set_num_threads(1)
S, B, NC, NV = 64, 2, 4, 3  # image size, batch, detection classes, views
STRIDES = (8, 16, 32)
LOSS_KEYS = ("loss/box", "loss/obj", "loss/cls_det", "loss/view")
_CACHE: dict[tuple[str, str], nn.Module] = {}


def cached_model(name: str, scale: str) -> nn.Module:
    """One model per (name, scale) for the whole module: building the large scales is the slow part."""
    if (name, scale) not in _CACHE:
        _CACHE[name, scale] = create_model(name, scale=scale, nc=NC, n_views=NV, img_size=S)
    return _CACHE[name, scale]


def sq_criterion(det_raw, view_logits, targets, model=None, det_weight=1.0, view_weight=1.0):
    """Stand-in criterion (NOT a detection loss): sums of squares, only to check routing and gradient flow."""
    det = sum((r.float() ** 2).mean() for r in det_raw)
    return {
        "loss/box": det_weight * det,
        "loss/obj": det_weight * det,
        "loss/cls_det": det_weight * det,
        "loss/view": view_weight * (view_logits**2).mean(),
    }


def images(size: int = S) -> torch.Tensor:
    return torch.rand(B, 3, size, size)


def check_raw(det_raw, view_logits, size: int = S) -> None:
    assert len(det_raw) == 3
    for r, s in zip(det_raw, STRIDES):
        assert tuple(r.shape) == (B, 3, size // s, size // s, 5 + NC)
    assert tuple(view_logits.shape) == (B, NV)


def check_detections(dets, size: int = S, max_det: int = 300) -> None:
    assert len(dets) == B
    for d in dets:
        k = d["boxes"].shape[0]
        assert d["boxes"].shape == (k, 4) and d["scores"].shape == (k,) and d["labels"].shape == (k,)
        assert d["labels"].dtype == torch.int64 and k <= max_det
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= size).all()


# ---------------------------------------------------------------- registry, shapes, forward routing
def test_registry_lists_models_and_unknown_name_lists_them():
    assert {"shared", "dual"} <= set(list_models())
    with pytest.raises(ValueError, match="valid: dual, shared"):
        create_model("yolo9000")


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_every_model_and_scale(name, scale):
    model = cached_model(name, scale)
    assert (model.nc, model.n_views, model.img_size) == (NC, NV, S)
    assert model.strides.tolist() == list(STRIDES) and tuple(model.anchors.shape) == (3, 3, 2)
    x = images()
    model.train()
    det_raw, view_logits = model.forward_raw(x)
    check_raw(det_raw, view_logits)
    if scale == "l":  # one forward only for the big one; check the eval post-processing on its output
        check_detections(postprocess(det_raw, model.anchors, model.strides))
        return
    model.eval()
    with torch.no_grad():
        check_raw(*model.forward_raw(x))
        out = model(x)
    assert set(out) == {"detections", "view_logits"} and tuple(out["view_logits"].shape) == (B, NV)
    check_detections(out["detections"])


@pytest.mark.parametrize("name", list_models())
def test_parameter_counts_grow_with_scale(name):
    counts = [sum(p.numel() for p in cached_model(name, s).parameters()) for s in ("test", "n", "s", "m", "l")]
    assert counts == sorted(set(counts)), counts


@pytest.mark.parametrize("name", list_models())
def test_train_forward_routes_to_criterion_and_grads_reach_all_parameters(name):
    model = create_model(name, scale="test", nc=NC, n_views=NV, img_size=S, criterion=sq_criterion).train()
    losses = model(images(), targets={"anything": 1})
    assert set(losses) == set(LOSS_KEYS)
    sum(losses.values()).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    if name == "shared":  # (timm's resnets zero-init each block's last BN gamma, so their grads may be exactly 0)
        assert not [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]


@pytest.mark.parametrize("name", list_models())
def test_forward_errors(name):
    model = create_model(name, scale="test", img_size=S).train()
    with pytest.raises(ValueError, match="criterion"):
        model(images(), targets=[])
    model.criterion = sq_criterion
    with pytest.raises(ValueError, match="targets"):
        model(images())
    with pytest.raises(ValueError, match="multiple of 32"):
        model.forward_raw(torch.rand(B, 3, 48, 48))
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model(name, scale="test", img_size=100)
    with pytest.raises(ValueError, match="valid: test, n, s, m, l"):
        create_model(name, scale="xl")


def test_criterion_module_is_not_registered():
    model = create_model("shared", scale="test", img_size=S)
    keys, n_params = set(model.state_dict()), len(list(model.parameters()))
    criterion = nn.Linear(2, 2)  # a criterion with parameters of its own
    model.criterion = criterion
    assert model.criterion is criterion
    assert set(model.state_dict()) == keys and len(list(model.parameters())) == n_params


@pytest.mark.parametrize("name", list_models())
def test_channels_last_matches_contiguous(name):
    model = create_model(name, scale="test", img_size=S).eval()
    x = images()
    with torch.no_grad():
        ref_raw, ref_view = model.forward_raw(x)
        model = model.to(memory_format=torch.channels_last)
        raw, view = model.forward_raw(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref_raw, raw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ref_view, view, rtol=1e-4, atol=1e-4)


def test_anchor_defaults_custom_and_bias_prior():
    model = create_model("shared", scale="test", img_size=160)
    torch.testing.assert_close(model.anchors, torch.as_tensor(default_anchors(160)))
    torch.testing.assert_close(model.anchors[0, 0], torch.tensor([2.5, 3.25]))  # (10, 13) * 160 / 640
    for conv, stride in zip(model.detector.head.convs, STRIDES):
        bias = conv.bias.view(3, 5 + 4)
        torch.testing.assert_close(bias[:, 4], torch.full((3,), math.log(8 / (160 / stride) ** 2)))
        torch.testing.assert_close(bias[:, 5:], torch.full((3, 4), math.log(0.6 / (4 - 0.99))))
    custom = [[1, 2, 3, 4, 5, 6]] * 3  # (3, 6) flat form
    assert create_model("dual", scale="test", anchors=custom).anchors[2, 1].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="anchors"):
        create_model("shared", scale="test", anchors=[[1, 2]])


def test_register_model_rejects_a_clashing_name():
    from echotune.models.registry import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("shared")(lambda **kw: nn.Identity())
