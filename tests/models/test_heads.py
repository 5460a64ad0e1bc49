"""Both detection heads (anchor, anchorfree) in both architectures: raw and decoded shapes, the anchor-free decode
formula, bias priors, construction errors, gradient flow with the real losses, and export of forward_raw."""

from __future__ import annotations

import math

import pytest
import torch

from echotune.losses import AnchorFreeLoss, DetectionLoss, MultiTaskCriterion, ViewLoss
from echotune.models import DETECT_HEADS, REG_MAX, AnchorFreeHead, create_model, nms_detections, postprocess
from echotune.models.anchorfree import anchor_points, expected_distance

torch.set_num_threads(1)
S, B, NC, NV = 64, 2, 4, 3
STRIDES = (8, 16, 32)
ARCHS = ("shared", "dual")


def build(arch: str, head: str, criterion=None):
    return create_model(arch, scale="test", nc=NC, n_views=NV, img_size=S, head=head, criterion=criterion)


def raw_shape(head: str, h: int, w: int) -> tuple[int, ...]:
    return (B, 3, h, w, 5 + NC) if head == "anchor" else (B, h, w, 4 * REG_MAX + NC)


@pytest.mark.parametrize("head", DETECT_HEADS)
@pytest.mark.parametrize("arch", ARCHS)
def test_raw_decoded_and_eval_outputs(arch, head):
    model = build(arch, head).eval()
    assert model.head_kind == head and model.strides.tolist() == list(STRIDES)
    assert (model.anchors is None) == (head == "anchorfree")
    x = torch.rand(B, 3, S, S + 32)  # not square: catches x / y mix-ups
    with torch.no_grad():
        raw, view_logits = model.forward_raw(x)
        cells = [(S // s, (S + 32) // s) for s in STRIDES]
        assert [tuple(r.shape) for r in raw] == [raw_shape(head, h, w) for h, w in cells]
        decoded = model.detector.head.decode(raw)
        n = sum(h * w for h, w in cells) * (3 if head == "anchor" else 1)
        assert decoded.shape == (B, n, 5 + NC) and decoded.dtype == torch.float32
        assert ((decoded[..., 4:] >= 0) & (decoded[..., 4:] <= 1)).all() and (decoded[..., 2:4] >= 0).all()
        if head == "anchorfree":
            assert (decoded[..., 4] == 1).all()  # no objectness: the score is the class probability
        else:  # the anchor head's decode is what postprocess always did
            for a, b in zip(postprocess(raw, model.anchors, model.strides), nms_detections(decoded, (S, S + 32))):
                torch.testing.assert_close(a, b)
        out = model(x)
    assert set(out) == {"detections", "view_logits"} and tuple(out["view_logits"].shape) == (B, NV)
    assert len(out["detections"]) == B
    for d in out["detections"]:
        k = len(d["scores"])
        assert d["boxes"].shape == (k, 4) and d["labels"].dtype == torch.int64 and k <= model.max_det
        assert (d["boxes"] >= 0).all() and (d["boxes"][:, 0::2] <= S + 32).all() and (d["boxes"][:, 1::2] <= S).all()


def test_anchorfree_decode_formula_on_hand_made_logits():
    head = AnchorFreeHead((16, 32, 64), NC, S)
    raw = [torch.zeros(1, S // s, S // s, 4 * REG_MAX + NC) for s in STRIDES]
    raw[1][0, 2, 1, : 4 * REG_MAX].view(4, REG_MAX)[:] = -50.0  # stride 16, cell y=2, x=1: centre (24, 40)
    for side, k in enumerate((1, 2, 3, 5)):  # l, t, r, b one-hot on bins 1, 2, 3, 5 (strides)
        raw[1][0, 2, 1, side * REG_MAX + k] = 50.0
    raw[1][0, 2, 1, 4 * REG_MAX + 2] = 3.0
    decoded = head.decode(raw)
    row = decoded[0, 64 + 2 * 4 + 1]  # rows: level, y, x
    x1, y1, x2, y2 = 24 - 16, 40 - 32, 24 + 48, 40 + 80
    torch.testing.assert_close(row[:4], torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]))
    torch.testing.assert_close(row[4:], torch.tensor([1.0, 0.5, 0.5, torch.tensor(3.0).sigmoid().item(), 0.5]))
    # zero logits: uniform bins -> (REG_MAX - 1) / 2 strides on every side, centred on the cell centre
    points, point_strides = anchor_points([(8, 8), (4, 4), (2, 2)], STRIDES)
    torch.testing.assert_close(decoded[0, 0, :2], points[0])
    torch.testing.assert_close(decoded[0, -1, 2:4], (REG_MAX - 1) * point_strides[-1].expand(2))


def test_anchorfree_bias_priors():
    head = build("shared", "anchorfree").detector.head
    for box, cls, stride in zip(head.box_branches, head.cls_branches, STRIDES):
        bins = box[-1].bias.view(4, REG_MAX)
        # geometric over the bins: every bin reachable, expected distance ~PRIOR_DISTANCE = 2 strides per side
        torch.testing.assert_close(expected_distance(bins), torch.full((4,), 2.0), atol=0.05, rtol=0)
        assert (bins.softmax(-1) > 1e-4).all()
        p = 1.0 / (NC * (S / stride) ** 2)  # the mean class target: ~1 unit of target mass per image and level
        torch.testing.assert_close(cls[-1].bias, torch.full((NC,), math.log(p / (1 - p))))
    uniform = AnchorFreeHead((16, 32, 64), NC, S, prior_distance=None)
    torch.testing.assert_close(
        expected_distance(uniform.box_branches[0][-1].bias.view(4, REG_MAX)), torch.full((4,), (REG_MAX - 1) / 2)
    )


def test_head_construction_errors():
    with pytest.raises(ValueError, match="unknown head 'yolo'; valid: anchor, anchorfree"):
        create_model("shared", scale="test", head="yolo")
    with pytest.raises(ValueError, match="anchors apply only to head='anchor'"):
        create_model("dual", scale="test", head="anchorfree", anchors=[[1, 2, 3, 4, 5, 6]] * 3)


@pytest.mark.parametrize("head", DETECT_HEADS)
@pytest.mark.parametrize("arch", ARCHS)
def test_real_losses_reach_every_parameter(arch, head):
    det = AnchorFreeLoss(NC) if head == "anchorfree" else DetectionLoss(NC, img_size=S)
    model = build(arch, head, MultiTaskCriterion(det, ViewLoss(NV))).train()
    targets = {
        "boxes": [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[20.0, 24.0, 60.0, 60.0]])],
        "classes": [torch.tensor([1]), torch.tensor([3])],
        "views": torch.tensor([0, 2]),
    }
    losses = model(torch.rand(B, 3, S, S), targets)
    assert {"loss/box", "loss/obj", "loss/cls_det", "loss/view"} <= set(losses)
    sum(v for k, v in losses.items() if k.startswith("loss/")).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_anchorfree_channels_last_matches_contiguous():
    model = build("shared", "anchorfree").eval()
    x = torch.rand(B, 3, S, S)
    with torch.no_grad():
        ref, _ = model.forward_raw(x)
        model = model.to(memory_format=torch.channels_last)
        raw, _ = model.forward_raw(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref, raw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- export of the raw heads
class RawHeads(torch.nn.Module):
    """forward_raw as a module's forward (what torch.jit.trace / torch.onnx.export take)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        det_raw, view_logits = self.model.forward_raw(images)
        return (*det_raw, view_logits)


@pytest.mark.parametrize("head", DETECT_HEADS)
def test_forward_raw_traces(head):
    wrapped = RawHeads(build("shared", head).eval())
    x = torch.rand(1, 3, S, S)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, x)
        for a, b in zip(traced(x), wrapped(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("head", DETECT_HEADS)
def test_forward_raw_exports_to_onnx(head, tmp_path):
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (not a project dependency)")
    wrapped = RawHeads(build("shared", head).eval())
    path = tmp_path / f"{head}.onnx"
    torch.onnx.export(
        wrapped,
        (torch.rand(1, 3, S, S),),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=["p3", "p4", "p5", "view_logits"],
    )
    import onnx

    graph = onnx.load(str(path)).graph
    dims = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output]
    assert dims == [[1, *raw_shape(head, S // s, S // s)[1:]] for s in STRIDES] + [[1, NV]]
