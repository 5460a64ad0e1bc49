from __future__ import annotations

import numpy as np
import pytest
import torch

from echotune.data.check import check_dataset
from echotune.data.dataset import PAD_VALUE, EchoDataset, collate, letterbox, make_loader, set_thread_budget
from tests.data.export_fixture import make_export


def test_letterbox_wide_image_maps_boxes_exactly():
    image = np.zeros((48, 64, 3), np.uint8)
    image[12:24, 16:32] = 255  # a white rectangle: x 16..32, y 12..24
    out, lb = letterbox(image, 128)
    assert out.shape == (128, 128, 3) and lb.scale == 2.0 and (lb.pad_x, lb.pad_y) == (0, 16)
    box = lb.to_square(np.array([[16, 12, 32, 24]], np.float32))
    np.testing.assert_allclose(box, [[32, 40, 64, 64]])
    x1, y1, x2, y2 = box[0].astype(int)
    assert out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() == 255  # inside (bilinear blends only the rim)
    assert out[y1 - 2, x1:x2].max() == 0 and out[y2 + 1, x1:x2].max() == 0 and out[y1:y2, x2 + 1].max() == 0
    assert (out[:16] == PAD_VALUE).all() and (out[-16:] == PAD_VALUE).all()
    np.testing.assert_allclose(lb.to_original(box), [[16, 12, 32, 24]])


def test_letterbox_tall_image_pads_left_and_right():
    out, lb = letterbox(np.zeros((100, 50, 3), np.uint8), 64)
    assert out.shape == (64, 64, 3) and lb.pad_x == 16 and lb.pad_y == 0
    assert (out[:, :16] == PAD_VALUE).all() and (out[:, 16:48] == 0).all()


def test_dataset_items_and_collate(tmp_path):
    check = check_dataset(make_export(tmp_path))
    ds = EchoDataset(check.samples["train"], img_size=64)
    assert len(ds) == 3
    item = ds[1]  # vidA.mp4-2: AR (0.5, 0.5, 0.2, 0.1) + TR (0.25, 0.25, 0.1, 0.1) on a 64x48 image, PSAX
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    # 64x48 -> scale 1, pad_y 8: AR box x 25.6..38.4, y 21.6..26.4 (+8)
    torch.testing.assert_close(item["boxes"][0], torch.tensor([25.6, 29.6, 38.4, 34.4]))
    assert item["classes"].tolist() == [0, 3] and item["view"] == 0 and item["path"].endswith("vidA.mp4-2.png")
    batch = collate([ds[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 64, 64) and batch["views"].tolist() == [1, 0, 2]
    assert [b.shape for b in batch["boxes"]] == [(1, 4), (2, 4), (0, 4)]


def test_cache_gives_identical_items(tmp_path):
    check = check_dataset(make_export(tmp_path))
    plain = EchoDataset(check.samples["train"], img_size=64)
    cached = EchoDataset(check.samples["train"], img_size=64, cache=True)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])


def test_transform_is_applied(tmp_path):
    check = check_dataset(make_export(tmp_path))

    def drop_boxes_and_invert(image, boxes, classes, seed):
        assert isinstance(seed, int)
        return 255 - image, boxes[:0], classes[:0]

    ds = EchoDataset(check.samples["train"], img_size=64, transform=drop_boxes_and_invert)
    plain = EchoDataset(check.samples["train"], img_size=64)
    item = ds[0]
    assert item["boxes"].shape == (0, 4) and item["classes"].shape == (0,)
    torch.testing.assert_close(item["image"], 1.0 - plain[0]["image"])


def test_loader_shuffle_is_seeded(tmp_path):
    check = check_dataset(make_export(tmp_path))
    ds = EchoDataset(check.samples["train"], img_size=64)
    order = [tuple(b["paths"]) for b in make_loader(ds, batch_size=3, shuffle=True, seed=5)]
    again = [tuple(b["paths"]) for b in make_loader(ds, batch_size=3, shuffle=True, seed=5)]
    assert order == again


def test_bad_img_size_and_threads():
    with pytest.raises(ValueError, match="multiple of 32"):
        EchoDataset([], img_size=100)
    with pytest.raises(ValueError, match="cpus must be >= 1"):
        set_thread_budget(0)
    set_thread_budget(1)
    assert torch.get_num_threads() == 1


def test_mosaic_items_are_seeded_and_carry_no_view(tmp_path):
    from echotune.augment import Mosaic

    check = check_dataset(make_export(tmp_path))
    ds = EchoDataset(check.samples["train"], img_size=64, cache=True)
    plain = [ds[i] for i in range(len(ds))]
    ds.set_epoch(0, None, seed=3, mosaic=Mosaic(64), mosaic_p=1.0)
    mixed = [ds[i] for i in range(len(ds))]
    assert all(item["view"] == -1 for item in mixed)  # a collage has no single echo view
    assert any(not torch.equal(m["image"], p["image"]) for m, p in zip(mixed, plain))
    assert all(
        torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        for a, b in zip(mixed, [ds[i] for i in range(len(ds))])
    )  # same (seed, epoch, index): same item
    ds.set_epoch(1, None, seed=3, mosaic=Mosaic(64), mosaic_p=0.0)  # probability 0: the plain items again
    assert all(torch.equal(ds[i]["image"], p["image"]) and ds[i]["view"] == p["view"] for i, p in enumerate(plain))
