"""EchoTune models: a from-scratch YOLOv5-style jet detector plus a view classifier, in two architectures.

    from echotune.models import create_model, list_models
    model = create_model("shared", scale="s", nc=4, n_views=3, img_size=160, view_level="P3")
    model = create_model("dual", scale="s", classifier="resnet18")
    model = create_model("shared", scale="n", head="anchorfree")   # anchor-free decoupled head

See models/base.py for the forward contract, models/decode.py (anchor head) and models/anchorfree.py
(anchor-free head) for the raw output formats.
"""

from __future__ import annotations

from . import dual, shared  # noqa: F401  (imported for their @register_model side effect)
from .anchorfree import REG_MAX, AnchorFreeHead
from .anchors import DEFAULT_ANCHORS, default_anchors, kmeans_anchors
from .base import MultiTaskModel
from .decode import decode_level, nms_detections, postprocess, xywh_to_xyxy
from .detector import SCALES, Backbone, Detector, PANNeck
from .dual import DualBackbone
from .heads import DETECT_HEADS, DetectHead, ViewHead
from .registry import create_model, list_models, register_model
from .shared import VIEW_LEVELS, SharedMultiTask

__all__ = [
    "DEFAULT_ANCHORS",
    "DETECT_HEADS",
    "REG_MAX",
    "SCALES",
    "VIEW_LEVELS",
    "AnchorFreeHead",
    "Backbone",
    "DetectHead",
    "Detector",
    "DualBackbone",
    "MultiTaskModel",
    "PANNeck",
    "SharedMultiTask",
    "ViewHead",
    "create_model",
    "decode_level",
    "default_anchors",
    "kmeans_anchors",
    "list_models",
    "nms_detections",
    "postprocess",
    "register_model",
    "xywh_to_xyxy",
]
