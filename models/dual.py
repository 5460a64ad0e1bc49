"""``dual``: the detector plus an independent timm classifier for the view; the tasks share no parameters.

The classifier sees the same [0, 1] images, normalised with its own pretrained_cfg mean/std (what ImageNet
weights expect). GradNorm does not apply (no shared layer); use fixed or uncertainty balancing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .base import Criterion, MultiTaskModel
from .registry import register_model
from .weights import load_error_reason

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CHECKPOINT_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or a training checkpoint {"state_dict"/"model": ...}; strip "module." prefixes."""
    if isinstance(obj, dict):
        for key in _CHECKPOINT_WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            "classifier_weights must hold a state_dict (name -> tensor), possibly under "
            f"one of {_CHECKPOINT_WRAPPER_KEYS}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_classifier_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a state_dict file into ``model`` non-strictly; tensors of another shape (e.g. a 1000-class head)
    are skipped. Warns about missing keys; returns {"missing", "unexpected", "skipped_shape"} key lists."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier_weights file not found: {path}")
    try:
        state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # UnpicklingError (pickled code refused), RuntimeError/EOFError (damaged file)
        raise ValueError(
            f"classifier_weights {path}: not loadable with weights_only=True (which refuses pickled "
            f"code): {load_error_reason(path, exc)}"
        ) from exc
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    report = {
        "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys),
        "skipped_shape": skipped,
    }
    if report["missing"]:
        warnings.warn(
            f"classifier_weights {path.name}: {len(report['missing'])} tensors not loaded (kept their "
            f"initialisation): {report['missing'][:10]}"
            f"{' ...' if len(report['missing']) > 10 else ''}",
            stacklevel=3,
        )
    return report


@register_model("dual")
class DualBackbone(MultiTaskModel):
    """Detector for the jets + ``timm.create_model(classifier)`` for the view, trained side by side."""

    def __init__(
        self,
        scale: str = "s",
        nc: int = 4,
        n_views: int = 3,
        img_size: int = 160,
        classifier: str = "resnet18",
        classifier_weights: str | Path | None = None,
        dropout: float = 0.2,
        anchors: Any = None,
        criterion: Criterion | None = None,
        head: str = "anchor",
    ):
        if not timm.is_model(classifier):
            raise ValueError(
                f"unknown timm classifier {classifier!r}; see timm.list_models() for valid names "
                f"(e.g. resnet18, efficientnet_b0, mobilenetv3_small_100)"
            )
        super().__init__(scale, nc, n_views, img_size, anchors, criterion, head)
        self.classifier_name = classifier
        self.classifier = timm.create_model(classifier, pretrained=False, num_classes=n_views, drop_rate=dropout)
        cfg = getattr(self.classifier, "pretrained_cfg", None) or {}
        # (1, 3, 1, 1) input normalisation; non-persistent so the state_dict holds only learnable state
        self.register_buffer("cls_mean", torch.tensor(cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1), False)
        self.register_buffer("cls_std", torch.tensor(cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1), False)
        self.classifier_load_report: dict[str, list[str]] | None = None
        if classifier_weights is not None:
            self.classifier_load_report = load_classifier_weights(self.classifier, classifier_weights)

    def forward_raw(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.check_images(images)
        view_logits = self.classifier((images - self.cls_mean) / self.cls_std)  # (B, n_views)
        return self.detector(images), view_logits
