"""Decoding raw anchor-head outputs into boxes, and the NMS post-processing every head shares.

Raw format (the contract): per level i a (B, na, H_i, W_i, 5 + nc) tensor of logits ``tx, ty, tw, th, obj, cls..``.
Decoding (the YOLOv5 parameterisation): with sigmoid s(.), grid cell (x, y), the level's stride and anchor (w, h)
in pixels,  xy = (s(txy) * 2 - 0.5 + grid_xy) * stride,  wh = (s(twh) * 2) ** 2 * anchor_wh,  obj = s(obj),
cls = s(cls). The centre can thus reach half a cell beyond its own cell, and wh spans (0, 4) x the anchor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

MAX_NMS_CANDIDATES = 30_000  # caps NMS cost per image when nearly everything passes a tiny conf threshold


def decode_level(raw: torch.Tensor, anchors: torch.Tensor, stride: float) -> torch.Tensor:
    """(B, na, H, W, 5 + nc) logits, (na, 2) anchors in px -> (B, na * H * W, 5 + nc) decoded (float32).

    Output columns: cx, cy, w, h in pixels (centre form), then sigmoid obj and per-class sigmoid probabilities.
    Rows are ordered anchor-major, then y, then x (the raw tensor's order).
    """
    b, na, h, w, no = raw.shape
    p = raw.float().sigmoid()
    ys, xs = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
    grid = torch.stack((xs, ys), dim=-1).view(1, 1, h, w, 2).float()  # (.., 2) = (x, y) cell indices
    anchor_wh = anchors.to(device=raw.device, dtype=torch.float32).view(1, na, 1, 1, 2)
    xy = (p[..., 0:2] * 2 - 0.5 + grid) * float(stride)
    wh = (p[..., 2:4] * 2) ** 2 * anchor_wh
    return torch.cat((xy, wh, p[..., 4:]), dim=-1).view(b, na * h * w, no)


def xywh_to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre form -> (..., 4) corner form."""
    xy, half = xywh[..., :2], xywh[..., 2:4] / 2
    return torch.cat((xy - half, xy + half), dim=-1)


@torch.no_grad()
def postprocess(
    raw: Sequence[torch.Tensor],
    anchors: torch.Tensor,
    strides: Sequence[float] | torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
) -> list[dict[str, torch.Tensor]]:
    """Anchor-head raw level outputs -> per image ``{"boxes": (K, 4) xyxy px, "scores": (K,), "labels": (K,)}``.

    ``decode_level`` on every level, then ``nms_detections`` with the image size H_0 * stride_0 by W_0 * stride_0.
    anchors: (levels, na, 2) in pixels; strides: (levels,). (A model decodes with its own head's ``decode``,
    which works for either head; this function is the anchor head's shortcut.)
    """
    strides = [float(s) for s in (strides.tolist() if isinstance(strides, torch.Tensor) else strides)]
    if not len(raw) == len(anchors) == len(strides):
        raise ValueError(
            f"need one anchor set and stride per level: {len(raw)} levels, {len(anchors)} anchor "
            f"sets, {len(strides)} strides"
        )
    image_hw = (raw[0].shape[2] * strides[0], raw[0].shape[3] * strides[0])
    decoded = torch.cat([decode_level(r, a, s) for r, a, s in zip(raw, anchors, strides)], dim=1)  # (B, N, 5+nc)
    return nms_detections(decoded, image_hw, conf_thres, iou_thres, max_det)


@torch.no_grad()
def nms_detections(
    decoded: torch.Tensor,
    image_hw: Sequence[float],
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
) -> list[dict[str, torch.Tensor]]:
    """Decoded (B, N, 5 + nc) rows (cx, cy, w, h px, obj, class probabilities; any head's ``decode``) -> per
    image ``{"boxes": (K, 4) xyxy px, "scores": (K,), "labels": (K,) int64}``.

    score = obj * class probability of the best class (one label per box), kept when > conf_thres, clipped to
    the image (image_hw = (height, width) px), class-wise NMS at iou_thres, at most max_det by score.
    """
    img_h, img_w = float(image_hw[0]), float(image_hw[1])
    results = []
    for det in decoded:  # (N, 5 + nc) per image
        scores, labels = (det[:, 5:] * det[:, 4:5]).max(dim=1)
        keep = scores > conf_thres
        boxes, scores, labels = xywh_to_xyxy(det[keep, :4]), scores[keep], labels[keep]
        if scores.numel() > MAX_NMS_CANDIDATES:
            top = scores.topk(MAX_NMS_CANDIDATES).indices
            boxes, scores, labels = boxes[top], scores[top], labels[top]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h)
        keep = batched_nms(boxes, scores, labels, iou_thres)[:max_det]  # sorted by decreasing score
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep].long()})
    return results
