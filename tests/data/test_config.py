from __future__ import annotations

from pathlib import Path

import pytest

from echotune.data.config import label_path_for, list_split_images, load_data_config
from echotune.data.problems import DataError
from tests.data.export_fixture import make_export, write_image


def test_real_export_yaml_resolves_dotdot_paths(tmp_path):
    yaml_path = make_export(tmp_path)
    cfg = load_data_config(yaml_path)
    root = yaml_path.parent
    assert cfg.names == ("AR", "MR", "PR", "TR") and cfg.nc == 4 and cfg.view_names is None
    assert cfg.split_sources == {
        "train": [root / "train/images"],
        "val": [root / "valid/images"],
        "test": [root / "test/images"],
    }


def test_roboflow_style_dotdot_is_retried_without_it(tmp_path):
    (tmp_path / "ds/train/images").mkdir(parents=True)
    (tmp_path / "ds/valid/images").mkdir(parents=True)
    (tmp_path / "ds/data.yaml").write_text("names: {0: AR, 1: MR}\ntrain: ../train/images\nval: ../valid/images\n")
    cfg = load_data_config(tmp_path / "ds/data.yaml")
    assert cfg.names == ("AR", "MR")
    assert cfg.split_sources["train"] == [tmp_path / "ds/train/images"]


def test_path_key_and_txt_lists(tmp_path):
    img = write_image(tmp_path / "data/images/a.png")
    (tmp_path / "data/lists").mkdir()
    (tmp_path / "data/lists/train.txt").write_text("# comment\n../images/a.png\n\n")
    (tmp_path / "data/lists/val.txt").write_text(f"{img}\nmissing.png\nnotes.doc\n")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/data.yaml").write_text(
        "path: ../data\ntrain: lists/train.txt\nval: lists/val.txt\n"
        "names: [AR, MR, PR, TR]\nview_names: [PSAX, PLAX, A4C]\n"
    )
    cfg = load_data_config(tmp_path / "cfg/data.yaml")
    assert cfg.root == tmp_path / "data" and cfg.view_names == ("PSAX", "PLAX", "A4C")
    images, problems = list_split_images(cfg.split_sources["train"][0])
    assert images == [img] and problems == []
    images, problems = list_split_images(cfg.split_sources["val"][0])
    assert images == [img]
    assert [(p.line, p.value) for p in problems] == [(2, "missing.png"), (3, "notes.doc")]
    assert "does not exist" in problems[0].message


def test_label_path_replaces_last_images_folder():
    assert label_path_for(Path("/d/images/train/images/x.y.png")) == Path("/d/images/train/labels/x.y.txt")
    assert label_path_for(Path("/d/flat/x.png")) == Path("/d/flat/x.txt")


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("train: a\nval: b\n", ["key 'names': missing", "key 'train'", "a does not exist", "key 'val'"]),
        ("names: [AR, MR]\nnc: 3\ntrain: .\nval: .\n", ["data.yaml:2: key 'nc': nc=3 but names has 2 entries"]),
        ("names: [AR, AR]\ntrain: .\nval: .\n", ["key 'names': names must be unique"]),
        ("names: {0: AR, 2: MR}\ntrain: .\nval: .\n", ["ids must be 0..1 without gaps"]),
        ("names: [AR]\ntrain: .\n", ["key 'val': missing (required: train and val)"]),
        ("names: [AR]\ntrain: .\nval: data.yaml\n", ["is a file but not a .txt list"]),
        ("- just\n- a list\n", ["expected a mapping of keys"]),
        ("names: [AR\n", ["not valid YAML"]),
    ],
)
def test_bad_yaml_lists_every_problem(tmp_path, text, fragments):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_data_config(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_yaml(tmp_path):
    with pytest.raises(DataError, match="data.yaml not found"):
        load_data_config(tmp_path / "nope.yaml")
