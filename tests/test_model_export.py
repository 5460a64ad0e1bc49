"""Issue #18 item 3: ONNX / TorchScript export of trained checkpoints, checked against PyTorch.

Every model here is a real checkpoint written by a 1-epoch `fit` on the session's tiny synthetic set, and every
comparison runs on that set's real val images (letterboxed as in evaluation). Tolerances (float32 throughout):
ONNX raw outputs within ONNX_ATOL = 1e-4 of PyTorch's (onnxruntime's kernels sum in another order: measured
~1e-6 on these models; a wrong weight or pre-processing step is off by 1e-2 or more), TorchScript within 1e-6
(the same ATen kernels: measured exactly 0), post-processed boxes within 1e-3 px and scores within 1e-5.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from echotune import model_export as mx
from tests.conftest import TINY_TRAIN
from tests.search.test_cli import INVOCATIONS, command

ONNX_ATOL, TORCHSCRIPT_ATOL, BOX_ATOL_PX, SCORE_ATOL = 1e-4, 1e-6, 1e-3, 1e-5
COMBOS = [("shared", "anchor"), ("shared", "anchorfree"), ("dual", "anchor"), ("dual", "anchorfree")]

pytestmark = pytest.mark.slow  # quick tier: real fits and exports, ~40 s together


@pytest.fixture(scope="module")
def runs(tiny_synthetic, tmp_path_factory):
    """(arch, head) -> folder of a 1-epoch training run (run.json, last.pt, best.pt)."""
    from echotune.engine import fit

    root = tmp_path_factory.mktemp("export_runs")
    folders = {}
    for arch, head in COMBOS:
        extra = {"balance": "fixed", "classifier": "resnet10t"} if arch == "dual" else {}
        cfg = {**TINY_TRAIN, "epochs": 1, "arch": arch, "head": head, **extra}
        folders[arch, head] = root / f"{arch}_{head}"
        fit(cfg, tiny_synthetic, out_dir=folders[arch, head], log=lambda _: None)
    return folders


@pytest.fixture(scope="module")
def val_images(tiny_synthetic):
    """(4, 3, 64, 64) float32: 4 real val images, letterboxed; 4 != the trace batch of 2 (dynamic batch axis)."""
    images, split, _ = mx.check_images(tiny_synthetic.config.yaml_path, 64, 4)
    assert split == "val" and images.shape == (4, 3, 64, 64)
    return images


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def assert_same_detections(reference: list[dict], exported: list[dict]) -> int:
    """The same set of boxes per image: one-to-one pairs of equal label, boxes within BOX_ATOL_PX and scores
    within SCORE_ATOL, paired closest first over the whole image (a one-epoch model has many boxes of equal
    score, and float rounding may order those differently). Returns the number of boxes compared."""
    assert len(reference) == len(exported)
    total = 0
    for ref, got in zip(reference, exported):
        assert len(got["scores"]) == len(ref["scores"])
        box_diff = (ref["boxes"][:, None] - got["boxes"][None]).abs().amax(-1)  # (K, K) px
        close = (
            (ref["labels"][:, None] == got["labels"][None])
            & (box_diff <= BOX_ATOL_PX)
            & ((ref["scores"][:, None] - got["scores"][None]).abs() <= SCORE_ATOL)
        )
        cost = torch.where(close, box_diff, torch.full_like(box_diff, float("inf"))).flatten()
        free_ref, free_got = set(range(len(ref["scores"]))), set(range(len(got["scores"])))
        for k in cost.argsort().tolist():
            i, j = divmod(k, len(got["scores"]))
            if cost[k].isfinite() and i in free_ref and j in free_got:
                free_ref.discard(i)
                free_got.discard(j)
        assert not free_ref, f"{len(free_ref)} of {len(ref['scores'])} PyTorch boxes have no exported twin"
        total += len(ref["scores"])
    return total


@pytest.mark.parametrize("arch,head", COMBOS)
def test_onnx_and_torchscript_outputs_equal_pytorch_and_postprocess_gives_its_detections(
    runs, val_images, arch, head, tmp_path
):
    model, spec = mx.load_for_export(runs[arch, head] / "best.pt", log=lambda _: None)
    paths = mx.export_model(model, spec, tmp_path, "best", log=lambda _: None)
    x = torch.from_numpy(val_images)
    with torch.no_grad():
        reference_raw = [t.numpy() for t in mx.RawHeads(model)(x)]
        reference = model(x)  # the eval forward: detections after NMS, view logits

    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]
    assert [o.name for o in session.get_outputs()] == ["det_p3", "det_p4", "det_p5", "view_logits"]
    onnx_raw = session.run(None, {"images": val_images})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14: "torch.jit.load is deprecated"
        scripted = torch.jit.load(str(paths["torchscript"]))
    with torch.no_grad():
        script_raw = [t.numpy() for t in scripted(x)]
    sidecar = mx.load_sidecar(paths["json"])
    for i, out in enumerate(sidecar["outputs"]):
        assert [len(val_images), *out["shape"][1:]] == list(reference_raw[i].shape) == list(onnx_raw[i].shape)
        assert max_abs(onnx_raw[i], reference_raw[i]) <= ONNX_ATOL, out["name"]
        assert max_abs(script_raw[i], reference_raw[i]) <= TORCHSCRIPT_ATOL, out["name"]

    exported = mx.postprocess(onnx_raw, sidecar)  # from the JSON alone: the head is rebuilt from it
    assert assert_same_detections(reference["detections"], exported["detections"]) > 0
    torch.testing.assert_close(exported["view_probs"], reference["view_logits"].softmax(-1), atol=1e-6, rtol=0)
    assert sidecar["head"]["kind"] == head and sidecar["source"]["config"]["arch"] == arch
    assert sidecar["names"] == ["AR", "MR", "PR", "TR"] and sidecar["view_names"] == ["PSAX", "PLAX", "A4C"]
    # the files describe themselves too
    assert (
        json.loads({p.key: p.value for p in onnx.load(str(paths["onnx"])).metadata_props}["echotune"])["head"]
        == sidecar["head"]
    )


def test_postprocess_at_other_thresholds_follows_the_model(runs, val_images):
    model, spec = mx.load_for_export(runs["shared", "anchor"] / "best.pt", log=lambda _: None)
    x = torch.from_numpy(val_images)
    with torch.no_grad():
        raw = mx.RawHeads(model)(x)
        model.conf_thres, model.iou_thres, model.max_det = 0.05, 0.4, 5
        reference = model(x)
    exported = mx.postprocess(raw, spec, conf_thres=0.05, iou_thres=0.4, max_det=5)
    assert_same_detections(reference["detections"], exported["detections"])
    assert all(len(d["scores"]) <= 5 for d in exported["detections"])


def test_detection_matching_ignores_order_and_cut_edges_but_not_real_differences():
    def dets(rows):  # (x1, y1, x2, y2, score, label)
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
        return {"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()}

    ref = dets([[0, 0, 10, 10, 0.5, 0], [20, 20, 30, 30, 0.5, 0], [40, 40, 50, 50, 0.00105, 1]])
    swapped = dets([[20, 20, 30.01, 30, 0.5, 0], [0, 0, 10, 10, 0.50001, 0], [40, 40, 50, 50, 0.00105, 1]])
    match = mx.match_detections([ref], [swapped], conf_thres=0.001, max_det=300)
    assert match.ok and match.matched == 3 and 0.009 < match.max_box_diff < 0.011
    at_the_cut = dets([[0, 0, 10, 10, 0.5, 0], [20, 20, 30, 30, 0.5, 0]])  # the 0.00105 box fell below 0.001
    match = mx.match_detections([ref], [at_the_cut], conf_thres=0.001, max_det=300)
    assert match.ok and (match.matched, match.borderline) == (2, 1)
    assert not mx.match_detections([ref], [at_the_cut], conf_thres=0.0001, max_det=300).ok  # not at a cut now
    relabelled = dets([[0, 0, 10, 10, 0.5, 0], [20, 20, 30, 30, 0.5, 2], [40, 40, 50, 50, 0.00105, 1]])
    match = mx.match_detections([ref], [relabelled], conf_thres=0.001, max_det=300)
    assert not match.ok and match.unexplained == 2  # the PyTorch box without a twin, and the stray one
    moved = dets([[0, 0, 10, 10.5, 0.5, 0], [20, 20, 30, 30, 0.5, 0], [40, 40, 50, 50, 0.00105, 1]])
    assert not mx.match_detections([ref], [moved], conf_thres=0.001, max_det=300).ok  # 0.5 px > BOX_TOL_PX


def test_the_check_fails_when_the_file_is_not_the_model(runs, val_images, tmp_path):
    model, spec = mx.load_for_export(runs["shared", "anchorfree"] / "best.pt", log=lambda _: None)
    paths = mx.export_model(model, spec, tmp_path, "m", formats=["onnx"], log=lambda _: None)
    assert mx.check_export(model, paths["onnx"], "onnx", val_images, spec).ok
    with torch.no_grad():  # a changed weight after export: the file no longer matches the model
        model.detector.head.cls_branches[0][-1].bias += 0.05
    report = mx.check_export(model, paths["onnx"], "onnx", val_images, spec)
    assert not report.ok and not report.raw_ok
    assert report.max_abs["det_p3"] > report.tolerance["det_p3"]  # the changed level, and only that one
    assert report.max_abs["det_p4"] <= report.tolerance["det_p4"] and report.max_abs["det_p5"] <= ONNX_ATOL
    assert "BEYOND TOLERANCE" in "\n".join(report.lines())


def test_onnx_reference_runtime_gives_the_same_check(runs, val_images, tmp_path):
    """onnx's pure-numpy evaluator: what checks the ONNX file where onnxruntime does not install."""
    model, spec = mx.load_for_export(runs["shared", "anchor"] / "best.pt", log=lambda _: None)
    paths = mx.export_model(model, spec, tmp_path, "m", formats=["onnx"], log=lambda _: None)
    report = mx.check_export(model, paths["onnx"], "onnx", val_images[:2], spec, runtime="reference")
    assert report.ok and report.runtime.startswith("onnx.reference") and max(report.max_abs.values()) <= ONNX_ATOL


@pytest.mark.slow  # torch.export tracing: ~8 s for even the tiny model
def test_dynamo_exporter_gives_the_same_outputs(runs, val_images, tmp_path):
    """The torch.export-based exporter: the one left once torch drops the legacy (TorchScript-based) one."""
    pytest.importorskip("onnxscript")
    model, spec = mx.load_for_export(runs["shared", "anchorfree"] / "best.pt", log=lambda _: None)
    paths = mx.export_model(model, spec, tmp_path, "m", formats=["onnx"], exporter="dynamo", log=lambda _: None)
    assert spec["files"]["onnx"]["exporter"] == "dynamo"
    assert ort.InferenceSession(str(paths["onnx"])).get_inputs()[0].shape[0] == "batch"
    report = mx.check_export(model, paths["onnx"], "onnx", val_images, spec, runtime="onnxruntime")
    assert report.ok, report.lines()
    assert max(report.max_abs.values()) <= ONNX_ATOL and report.detections.matched > 0


def test_preprocess_is_exactly_the_evaluation_input(tiny_synthetic, tmp_path):
    """The documented input contract: a non-square grey-padded frame gives EchoDataset's tensor bit for bit."""
    from dataclasses import replace

    from echotune.data.dataset import EchoDataset, read_rgb

    sample = tiny_synthetic.samples["val"][0]
    wide = tmp_path / "wide.png"
    image = cv2.imread(str(sample.image))
    cv2.imwrite(str(wide), cv2.copyMakeBorder(image, 0, 0, 0, 40, cv2.BORDER_CONSTANT, value=(0, 0, 255)))
    sample = replace(sample, image=wide, image_hw=(64, 104))
    batch, letterboxes = mx.preprocess([read_rgb(wide)], 96)
    expected = EchoDataset([sample], 96)[0]["image"].numpy()
    assert batch.dtype == np.float32 and batch.shape == (1, 3, 96, 96)
    assert np.array_equal(batch[0], expected)
    assert letterboxes[0].pad_y > 0 and letterboxes[0].pad_x == 0  # the wide frame is padded above and below


def test_sources_best_then_last_ray_trial_by_score_and_nothing_to_export(runs, tmp_path):
    from echotune.engine.checkpoint import load_checkpoint, save_checkpoint

    run = runs["shared", "anchor"]
    assert mx.resolve_sources(run)[0][0].checkpoint == run / "best.pt"
    only_last = tmp_path / "only_last"
    only_last.mkdir()
    shutil.copy(run / "last.pt", only_last / "last.pt")
    assert mx.resolve_sources(only_last)[0][0].checkpoint == only_last / "last.pt"
    trial = tmp_path / "trial_ab12"  # Ray keeps several checkpoint_* folders: the best val/score is exported
    state = load_checkpoint(run / "last.pt")
    for i, score in enumerate((0.5, 0.7, 0.6)):
        history = [{**state["history"][-1], "val/score": score, "epoch": i + 1}]
        save_checkpoint(trial / f"checkpoint_{i:06d}" / "last.pt", {**state, "history": history})
    (source,), manifest = mx.resolve_sources(trial)
    assert source.checkpoint == trial / "checkpoint_000001" / "last.pt" and manifest is None
    assert (source.name, source.trial_id) == ("trial_ab12", "trial_ab12")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty")) + ": nothing to export"):
        mx.resolve_sources(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------------
# echotune export (search/export.py)
# ---------------------------------------------------------------------------------------------------------------


def run_cli(argv: list[str], how: str = "script") -> tuple[int, str, str]:
    """`python search/export.py ARGV` (how="script") or `echotune export ARGV`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = command("export", how)(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_exports_a_training_run_and_prints_the_check(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["dual", "anchorfree"], run)
    code, out, err = run_cli([run, "--check", "4"])
    assert code == 0, err
    folder = run / "export"
    for name in ("best.onnx", "best.torchscript", "best.json"):
        assert f"wrote {folder / name}" in out
    assert "check images: 4 of the 8 in the val split of" in out
    diffs = re.findall(r"(det_p3|det_p4|det_p5|view_logits)\s+max abs diff (\S+) \(tolerance (\S+)\)", out)
    assert len(diffs) == 8  # 4 outputs x (onnx, torchscript)
    assert all(float(d) <= ONNX_ATOL and float(d) <= float(t) for _, d, t in diffs)
    assert out.count("  OK") == 2 and "matched by" in out
    sidecar = json.loads((folder / "best.json").read_text())
    check = sidecar["check"]["onnx"]
    assert check["ok"] and check["runtime"].startswith("onnxruntime") and check["images"] == 4
    assert check["detections"]["matched"] == check["detections"]["reference"] > 0
    assert max(check["max_abs_diff"].values()) <= ONNX_ATOL
    assert sidecar["check"]["torchscript"]["max_abs_diff"]["view_logits"] <= TORCHSCRIPT_ATOL
    assert sidecar["source"]["checkpoint"] == str((run / "best.pt").resolve())


def test_cli_exports_every_ensemble_member_at_another_size(runs, tmp_path):
    from echotune.ensemble.fusion import FusionParams
    from echotune.ensemble.manifest import Manifest, ManifestMember, save_manifest

    members = [
        ManifestMember("t_one", runs["shared", "anchor"] / "best.pt", "shared", 0.4),
        ManifestMember("t two", runs["dual", "anchor"] / "best.pt", "dual", 0.3),
    ]
    save_manifest(
        Manifest(members, [1.0, 0.5], "none", FusionParams(), ["AR", "MR", "PR", "TR"], ["PSAX", "PLAX", "A4C"]),
        tmp_path / "ensemble" / "manifest.yaml",
    )
    code, out, err = run_cli(
        [tmp_path / "ensemble", "--format", "onnx", "--imgsz", "96", "--check", "2", "--out", tmp_path / "deploy"],
        how="echotune",
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == [
        "ensemble.json",
        "t_one.json",
        "t_one.onnx",
        "t_two.json",
        "t_two.onnx",
    ]
    index = json.loads((tmp_path / "deploy" / "ensemble.json").read_text())
    assert [(m["trial_id"], m["weight"], m["files"]) for m in index["members"]] == [
        ("t_one", 1.0, {"onnx": "t_one.onnx"}),
        ("t two", 0.5, {"onnx": "t_two.onnx"}),
    ]
    spec = mx.load_sidecar(tmp_path / "deploy" / "t_two.json")
    assert spec["input"]["shape"] == ["batch", 3, 96, 96] and spec["outputs"][0]["shape"] == ["batch", 3, 12, 12, 9]
    assert spec["check"]["onnx"]["ok"] and out.count("  OK") == 2


@pytest.mark.parametrize("how", INVOCATIONS)
def test_cli_bad_paths_exit_2_naming_the_path(how, runs, tmp_path):
    missing = tmp_path / "nope" / "best.pt"
    code, out, err = run_cli([missing], how)
    assert code == 2 and f"error: {missing} does not exist" in err and out == ""
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    code, _, err = run_cli([broken], how)
    assert code == 2 and f"{broken}: not a loadable EchoTune checkpoint" in err
    assert not (tmp_path / "export").exists()
    code, _, err = run_cli([tmp_path], how)  # a folder without best.pt, last.pt, checkpoint_* or manifest.yaml
    assert code == 2 and f"{tmp_path}: nothing to export" in err
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()) as usage:
        command("export", how)([runs["shared", "anchor"], "--img-size", "100"])
    assert exc.value.code == 2 and "--img-size must be a positive multiple of 32" in usage.getvalue()


def test_cli_exits_1_when_a_file_differs_beyond_the_tolerance(runs, tmp_path):
    """--atol 1e-12: onnxruntime's float rounding (~1e-7 here) is then 'beyond tolerance', as a wrong file would be."""
    code, out, err = run_cli(
        [runs["shared", "anchor"] / "best.pt", "--format", "onnx", "--check", "2", "--atol", "1e-12", "--out", tmp_path]
    )
    assert code == 1 and "BEYOND TOLERANCE" in out and "FAILED" in out
    assert "differs from PyTorch beyond the tolerance" in err
    assert mx.load_sidecar(tmp_path / "best.json")["check"]["onnx"]["ok"] is False  # the files stay, flagged
