"""The whole chain (letterbox -> model -> target assignment -> losses -> decode/NMS -> COCO mAP) can learn:
a tiny model over-fits one fixed batch."""

from __future__ import annotations

import pytest
import torch

from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.build import build_model
from echotune.engine.config import TrainConfig
from echotune.metrics import detection_metrics, view_metrics


@pytest.mark.slow  # quick tier: ~25 s of training
def test_tiny_model_overfits_one_batch(tiny_synthetic):
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"model_scale": "test", "img_size": 64})
    model = build_model(cfg, tiny_synthetic)
    samples = [s for s in tiny_synthetic.samples["train"] if len(s.labels.boxes)][:4]
    batch = next(iter(make_loader(EchoDataset(samples, 64), batch_size=4)))
    targets = {"boxes": batch["boxes"], "classes": batch["classes"], "views": batch["views"]}
    gt = [{"boxes": b, "labels": c} for b, c in zip(batch["boxes"], batch["classes"])]

    def evaluate():
        model.eval()
        with torch.no_grad():
            out = model(batch["images"])
        return detection_metrics(out["detections"], gt, 4).map50, view_metrics(out["view_logits"], batch["views"], 3)

    map_before, _ = evaluate()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first_det_loss = None
    for _ in range(200):
        model.train()
        losses = model(batch["images"], targets)
        det_loss = losses["loss/box"] + losses["loss/obj"] + losses["loss/cls_det"]
        first_det_loss = first_det_loss or float(det_loss.detach())
        optimizer.zero_grad()
        (det_loss + losses["loss/view"]).backward()
        optimizer.step()
    map_after, view = evaluate()
    assert float(det_loss.detach()) < 0.5 * first_det_loss
    assert map_before < 0.2 and map_after > 0.9
    assert view.accuracy == 1.0
