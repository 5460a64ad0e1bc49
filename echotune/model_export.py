"""Export a trained model to ONNX and TorchScript: the raw head tensors in the graph, decoding and NMS after it.

    model, spec = load_for_export("results/run/best.pt")        # EMA weights, eval mode, on the CPU
    files = export_model(model, spec, "out", "best")            # out/best.onnx, out/best.torchscript, out/best.json
    outputs = onnxruntime.InferenceSession("out/best.onnx").run(None, {"images": x})   # x: preprocess(...)[0]
    result = postprocess(outputs, load_sidecar("out/best.json"))  # the eval forward's detections + view probs

Why the graph stops at the raw heads: the eval forward returns per-image dicts of data-dependent length after a
class-wise NMS (torchvision's batched_nms), on which torch.onnx.export and torch.export fail. ONNX's
NonMaxSuppression does something else (it suppresses per class over every class score of a box, where EchoTune
keeps one label per box, the best of obj * class probability, and it caps boxes per class, not per image), so NMS
in the graph would not return the PyTorch model's detections. `postprocess` runs the head's own `decode` and
`models.decode.nms_detections`, so exported and PyTorch detections agree to float rounding; it needs only the
sidecar JSON (the head is rebuilt from its anchors, strides and reg_max: `decode` reads nothing else).

Input contract (what evaluation feeds the model, echotune.data.dataset): `images` float32 (B, 3, S, S), RGB,
NCHW, pixel / 255 in [0, 1], no mean/std (the dual model's classifier normalises inside the graph). Each image
is letterboxed first: resized keeping its aspect ratio so the long side is S (cv2 INTER_AREA when shrinking,
INTER_LINEAR when enlarging), pasted centred on an S x S canvas of grey 114. Boxes come out in those S x S
pixels; `Letterbox.to_original` maps them back. `preprocess` does all of it.

Outputs, in order: det_p3, det_p4, det_p5 (strides 8, 16, 32; anchor head (B, 3, S/s, S/s, 5 + nc), anchor-free
head (B, S/s, S/s, 4 * reg_max + nc): the formats of models.decode and models.anchorfree), then view_logits
(B, n_views). The batch axis is dynamic; S is fixed at export (any multiple of 32, default the training size).

Exporter: torch.onnx.export(dynamo=False), the TorchScript-based exporter, by default. In torch 2.14 it works
without onnxscript, exports these models in seconds, and gives the same numbers as the dynamo exporter
(measured: both within 4e-6 of PyTorch, every architecture and head); it is deprecated, so exporter="dynamo"
(torch.export based, needs onnxscript, 3-5x slower) is there for the torch release that removes it. Opset 18:
the dynamo exporter's own (its torchlib is written for 18), within the legacy exporter's range (<= 20), and run
by onnxruntime >= 1.14 and TensorRT >= 8.6.

Tolerances of `check_export` (float32 throughout): a raw output passes when max |exported - PyTorch| <=
RAW_ATOL * max(1, max |PyTorch|): another runtime sums a convolution's products in another order, each sum off by
~sqrt(fan-in) * 2^-24 relative, and ~60 layers compound it; measured 4e-6 or less, so 1e-4 leaves 25x
headroom while a wrong weight, layer or pre-processing differs by 1e-2 or more. Detections match when every box
finds one of the same label within BOX_TOL_PX (a raw error at the tolerance moves a box by at most ~2 * anchor *
1e-4 < 0.1 px, anchor-free by stride * (reg_max - 1) * 1e-4 < 0.05 px) and SCORE_TOL. This module never imports
Ray or the search layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echotune.atomic import atomic_write_bytes, atomic_write_text
from echotune.data.config import list_split_images, load_data_config
from echotune.data.dataset import PAD_VALUE, Letterbox, letterbox, read_rgb
from echotune.engine.checkpoint import load_checkpoint, package_versions
from echotune.engine.evaluate_checkpoint import load_model, recorded_val_conf
from echotune.metrics import SCORE_METRIC
from echotune.models.anchorfree import AnchorFreeHead
from echotune.models.decode import MAX_NMS_CANDIDATES, nms_detections
from echotune.models.heads import DetectHead
from echotune.results.layout import BEST_CHECKPOINT_FILE as BEST_FILE
from echotune.results.layout import CHECKPOINT_FILE as LAST_FILE

SPEC_VERSION = 1
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # .torchscript: what Ultralytics users know
EXPORTERS = ("legacy", "dynamo")
OPSET = 18
INPUT_NAME = "images"
LEVEL_NAMES = ("det_p3", "det_p4", "det_p5")
VIEW_OUTPUT = "view_logits"
EXAMPLE_BATCH = 2  # trace with 2 images: a batch of 1 lets an exporter specialise the batch axis to 1
METADATA_KEY = "echotune"  # ONNX metadata_props key / TorchScript extra file (as .json) holding the spec
# Check tolerances (module docstring: why these values)
RAW_ATOL = 1e-4
BOX_TOL_PX = 0.1
SCORE_TOL = 1e-4
VIEW_PROB_TOL = 1e-4
# File names a training run writes (echotune.engine.fit; a Ray checkpoint folder holds last.pt)


# ------------------------------------------------------------------------------------------------------------
# Loading and the exported module
# ------------------------------------------------------------------------------------------------------------


class RawHeads(nn.Module):
    """forward(images (B, 3, S, S)) -> (det_p3, det_p4, det_p5, view_logits): `forward_raw` as a flat tuple of
    tensors, the form both exporters and torch.jit.trace take."""

    def __init__(self, model: nn.Module):
        super().__init__()
        # The model's children, not the model itself: torch.jit.trace probes every attribute of every submodule
        # with hasattr(), and a model without a shared layer raises ValueError from gradnorm_shared_weight (on
        # purpose, for its message). The parameters are the same tensors, so the trace records them as this
        # module's; the dual model's normalisation buffers (non-persistent, its own) become graph constants.
        self.parts = nn.ModuleDict(dict(model.named_children()))
        self.__dict__["_forward_raw"] = model.forward_raw  # a plain attribute: not a submodule

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        det_raw, view_logits = self._forward_raw(images)
        return (*det_raw, view_logits)


def load_for_export(
    path: str | Path,
    img_size: int | None = None,
    names: Sequence[str] | None = None,
    view_names: Sequence[str] | None = None,
    data_yaml: str | Path | None = None,
    trial_id: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, dict]:
    """(model with the checkpoint's EMA weights in eval mode on the CPU, its export spec). Names: given, else
    the checkpoint's, else data_yaml's, else generic. Errors name the file (FileNotFoundError, ValueError)."""
    from echotune.ensemble.predictor import label_names  # here: echotune.ensemble loads the ensemble builder

    try:
        model, cfg, state = load_model(path, device="cpu")
    except OSError as exc:  # e.g. no read permission (a missing file is FileNotFoundError, named by load_model)
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from exc
    if names is None or view_names is None:
        names, view_names = label_names(state, model.nc, model.n_views, data_yaml, log)
    spec = export_spec(model, state, path, img_size or cfg.img_size, names, view_names, trial_id)
    return model, spec


def check_img_size(img_size: int) -> None:
    if img_size < 32 or img_size % 32:
        raise ValueError(f"img_size must be a positive multiple of 32 (the detector's largest stride), got {img_size}")


def output_shapes(model: nn.Module, img_size: int) -> list[list]:
    """Symbolic output shapes, "batch" for the dynamic axis: level tensors, then (batch, n_views)."""
    head, shapes = model.detector.head, []
    for stride in head.strides.tolist():
        cells = img_size // int(stride)
        shapes.append(
            ["batch", head.na, cells, cells, head.no] if head.kind == "anchor" else ["batch", cells, cells, head.no]
        )
    return [*shapes, ["batch", model.n_views]]


def _head_spec(head: nn.Module) -> dict:
    if head.kind == "anchor":
        return {
            "kind": "anchor",
            "nc": head.nc,
            "strides": head.strides.tolist(),
            "anchors": head.anchors.tolist(),
            "decode": "per level (B, 3, H, W, 5 + nc) logits tx ty tw th obj cls..: with s = sigmoid, "
            "xy = (s(txy) * 2 - 0.5 + cell_xy) * stride, wh = (s(twh) * 2) ** 2 * anchor_wh (px), "
            "obj = s(obj), class probabilities s(cls) (models.decode.decode_level)",
        }
    return {
        "kind": head.kind,
        "nc": head.nc,
        "strides": head.strides.tolist(),
        "reg_max": head.reg_max,
        "decode": "per level (B, H, W, 4 * reg_max + nc) logits, side-major l t r b bins then classes: "
        "point = (cell_xy + 0.5) * stride, side distance = stride * sum_k k * softmax(bins)_k, box = "
        "(px - l, py - t, px + r, py + b), class probabilities sigmoid(cls), no objectness "
        "(models.anchorfree.AnchorFreeHead.decode)",
    }


def export_spec(
    model: nn.Module,
    state: dict,
    checkpoint: str | Path,
    img_size: int,
    names: Sequence[str],
    view_names: Sequence[str],
    trial_id: str | None = None,
) -> dict:
    """The sidecar: everything a user of the exported files needs (input contract, outputs, decoding, NMS
    parameters, names) and where they came from (checkpoint, its config, package versions). JSON-ready."""
    check_img_size(img_size)
    if len(names) != model.nc or len(view_names) != model.n_views:
        raise ValueError(
            f"{checkpoint}: the model predicts {model.nc} classes / {model.n_views} views, but "
            f"{len(names)} class names / {len(view_names)} view names were given"
        )
    head = model.detector.head
    output_names = [*LEVEL_NAMES, VIEW_OUTPUT]
    meanings = [f"detection logits, stride {int(s)}" for s in head.strides.tolist()] + [
        "view logits (softmax: probabilities)"
    ]
    checkpoint = Path(checkpoint)
    history = state.get("history") or []
    return {
        "format": "echotune-export",
        "version": SPEC_VERSION,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, img_size, img_size],
            "dtype": "float32",
            "layout": "NCHW",
            "channel_order": "RGB",
            "scale": "pixel / 255",
            "value_range": [0.0, 1.0],
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "letterbox": {
                "size": img_size,
                "keep_aspect_ratio": True,
                "centred": True,
                "pad_value": PAD_VALUE,
                "resize": "long side to size; cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
                "boxes_to_original": "(box - [pad_x, pad_y, pad_x, pad_y]) / scale",
            },
            "note": "no mean/std in front of the graph: the dual model's classifier normalises inside it",
        },
        "outputs": [
            {"name": n, "shape": s, "meaning": m}
            for n, s, m in zip(output_names, output_shapes(model, img_size), meanings)
        ],
        "head": _head_spec(head),
        "postprocess": {
            "conf_thres": model.conf_thres,
            "iou_thres": model.iou_thres,
            "max_det": model.max_det,
            "max_nms_candidates": MAX_NMS_CANDIDATES,
            "operating_conf": recorded_val_conf(state),
            "steps": "decode every level (head.decode) -> rows cx cy w h px, obj, class probabilities; "
            "score = obj * best class probability, label = that class; keep score > "
            "conf_thres; xyxy clipped to the S x S input; class-wise NMS at iou_thres "
            "(torchvision batched_nms); top max_det by score (models.decode.nms_detections). "
            "conf_thres 0.001 is the evaluation protocol (the whole PR curve); "
            "operating_conf is the P/R/F1 confidence chosen on val",
            "function": "echotune.model_export.postprocess(outputs, spec)",
        },
        "names": list(names),
        "view_names": list(view_names),
        "source": {
            "checkpoint": str(checkpoint.resolve()),
            "sha256": _sha256(checkpoint),
            "trial_id": trial_id,
            "epoch": state.get("epoch"),
            "val_score": history[-1].get(SCORE_METRIC) if history else None,
            "data": state.get("data"),
            "config": state.get("config"),
        },
        "versions": export_versions(),
        "trained_with": state.get("versions"),
        "files": {},
    }


def export_versions() -> dict[str, str]:
    """The exporting environment: the checkpoint module's list plus the ONNX packages."""
    return package_versions(("onnx", "onnxruntime", "onnxscript"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_input(img_size: int, batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """A fixed (batch, 3, S, S) input in [0, 1] to trace with (the values do not matter, only the shapes)."""
    return torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))


def _embedded(spec: dict) -> str:
    """The spec stored inside the exported files (without the file list: a file cannot hold its own hash)."""
    return json.dumps({k: v for k, v in spec.items() if k not in ("files", "check")}, default=str)


# ------------------------------------------------------------------------------------------------------------
# Exporters
# ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what tracing says about our models (the Python shape checks become constants: intended, the
    graph has a fixed S) and the deprecation notices of the legacy exporter and torch.jit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


def onnx_bytes(model: nn.Module, img_size: int, opset: int = OPSET, exporter: str = "legacy") -> bytes:
    """The serialized ONNX graph of RawHeads(model): input `images` (batch, 3, S, S), outputs LEVEL_NAMES and
    VIEW_OUTPUT, batch axis dynamic."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r} is not valid; choose one of: {', '.join(EXPORTERS)}")
    check_img_size(img_size)
    wrapper, example = RawHeads(model).eval(), example_input(img_size)
    names = [*LEVEL_NAMES, VIEW_OUTPUT]
    with _quiet(), torch.no_grad():
        if exporter == "legacy":
            buffer = io.BytesIO()
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                do_constant_folding=True,
                dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *names)},
            )
            return buffer.getvalue()
        if importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter's dependency: say so first
            raise ValueError(
                "exporter 'dynamo' needs onnxscript (pip install onnxscript), or use the default exporter 'legacy'"
            )
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=({0: batch},),
        )
        return program.model_proto.SerializeToString()


def export_onnx(model: nn.Module, path: str | Path, spec: dict, opset: int = OPSET, exporter: str = "legacy") -> dict:
    """Write `path` (.onnx, atomically) with the spec in its metadata_props; returns its entry for spec["files"]."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes(model, spec["input"]["shape"][-1], opset, exporter))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, _embedded(spec)
    proto.producer_name = "echotune"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    path = atomic_write_bytes(path, data)
    return {
        "file": path.name,
        "format": "onnx",
        "opset": opset,
        "exporter": exporter,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def export_torchscript(model: nn.Module, path: str | Path, spec: dict) -> dict:
    """Write `path` (torch.jit.trace of RawHeads(model), atomically) with the spec as the extra file
    `echotune.json` (torch.jit.load(path, _extra_files={"echotune.json": ""})); returns its spec["files"] entry."""
    img_size = spec["input"]["shape"][-1]
    check_img_size(img_size)
    with _quiet(), torch.no_grad():
        # check_trace=False: check_export compares the saved file with the model on real images instead
        traced = torch.jit.trace(RawHeads(model).eval(), example_input(img_size), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={f"{METADATA_KEY}.json": _embedded(spec)})
    data = buffer.getvalue()
    path = atomic_write_bytes(path, data)
    return {"file": path.name, "format": "torchscript", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_sidecar(path: str | Path, spec: dict) -> Path:
    return atomic_write_text(path, json.dumps(spec, indent=2, default=str) + "\n")


def load_sidecar(path: str | Path) -> dict:
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable export sidecar: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("format") != "echotune-export":
        raise ValueError(f"{path}: not an EchoTune export sidecar (no format: echotune-export)")
    return spec


def export_model(
    model: nn.Module,
    spec: dict,
    out_dir: str | Path,
    name: str,
    formats: Sequence[str] = FORMATS,
    opset: int = OPSET,
    exporter: str = "legacy",
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Write <out_dir>/<name>.onnx / .torchscript (those in `formats`) and the sidecar <name>.json; fills
    spec["files"]; returns {format: path, "json": path}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"format {', '.join(unknown) or '(none)'} is not valid; choose from: {', '.join(FORMATS)}")
    out_dir, paths = Path(out_dir), {}
    for fmt in formats:
        path = out_dir / f"{name}{SUFFIXES[fmt]}"
        entry = (
            export_onnx(model, path, spec, opset, exporter) if fmt == "onnx" else export_torchscript(model, path, spec)
        )
        spec["files"][fmt] = entry
        paths[fmt] = path
        log(f"wrote {path} ({entry['bytes'] / 1e6:.1f} MB{_how(entry)})")
    paths["json"] = write_sidecar(out_dir / f"{name}.json", spec)
    log(f"wrote {paths['json']} (input contract, outputs, decoding, NMS parameters, names, source)")
    return paths


def _how(entry: dict) -> str:
    return f", opset {entry['opset']}, {entry['exporter']} exporter" if entry["format"] == "onnx" else ", traced"


# ------------------------------------------------------------------------------------------------------------
# Pre- and post-processing
# ------------------------------------------------------------------------------------------------------------


def preprocess(images_rgb: Sequence[np.ndarray], img_size: int) -> tuple[np.ndarray, list[Letterbox]]:
    """RGB uint8 images of any size -> ((B, 3, S, S) float32 in [0, 1], letterbox of each): the input contract,
    exactly as EchoDataset builds an evaluation batch."""
    boxed = [letterbox(np.asarray(image), img_size) for image in images_rgb]
    squares = np.stack([square for square, _ in boxed])  # (B, S, S, 3) uint8
    batch = torch.from_numpy(np.ascontiguousarray(squares.transpose(0, 3, 1, 2))).float().div_(255.0)
    return batch.numpy(), [lb for _, lb in boxed]


def decoding_head(source: Any) -> nn.Module:
    """The detection head whose `decode` turns raw outputs into rows: a model's own head, a head, or one rebuilt
    from a spec (decode reads only anchors, strides and reg_max, so 1-channel inputs decode identically)."""
    if hasattr(source, "detector"):
        return source.detector.head
    if hasattr(source, "decode"):
        return source
    head = source["head"]
    if head["kind"] == "anchor":
        anchors = torch.tensor(head["anchors"], dtype=torch.float32)
        return DetectHead((1, 1, 1), head["nc"], anchors, source["input"]["shape"][-1], head["strides"])
    return AnchorFreeHead((1, 1, 1), head["nc"], source["input"]["shape"][-1], head["reg_max"], head["strides"])


def _tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    array = np.asarray(value)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def input_hw(head: nn.Module, level0: torch.Tensor) -> tuple[float, float]:
    """(H, W) in input pixels from the finest level's grid: (B, na, H, W, no) anchor, (B, H, W, no) anchor-free."""
    h, w = level0.shape[2:4] if head.kind == "anchor" else level0.shape[1:3]
    stride = float(head.strides[0])
    return h * stride, w * stride


def postprocess(
    outputs: Sequence,
    source: Any,
    conf_thres: float | None = None,
    iou_thres: float | None = None,
    max_det: int | None = None,
) -> dict:
    """Exported graph outputs (numpy arrays or tensors, in output order) -> {"detections": per image {boxes (K, 4)
    xyxy input px, scores (K,), labels (K,) int64}, "view_logits" (B, V), "view_probs" (B, V)}: what the PyTorch
    model's eval forward returns (plus the softmax). `source`: the spec (sidecar dict), or the model. NMS
    parameters default to the spec's / model's (the evaluation protocol's)."""
    head = decoding_head(source)
    if hasattr(source, "detector"):
        defaults = {"conf_thres": source.conf_thres, "iou_thres": source.iou_thres, "max_det": source.max_det}
    else:
        defaults = (
            source["postprocess"]
            if isinstance(source, dict)
            else {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 300}
        )
    raw = [_tensor(o) for o in outputs]
    det_raw, view_logits = raw[:-1], raw[-1]
    if len(det_raw) != len(head.strides):
        raise ValueError(f"expected {len(head.strides)} detection outputs and the view logits, got {len(raw)} outputs")
    with torch.no_grad():
        detections = nms_detections(
            head.decode(det_raw),
            input_hw(head, det_raw[0]),
            conf_thres=defaults["conf_thres"] if conf_thres is None else conf_thres,
            iou_thres=defaults["iou_thres"] if iou_thres is None else iou_thres,
            max_det=defaults["max_det"] if max_det is None else max_det,
        )
    return {"detections": detections, "view_logits": view_logits, "view_probs": view_logits.float().softmax(-1)}


# ------------------------------------------------------------------------------------------------------------
# Running the exported files and checking them against PyTorch
# ------------------------------------------------------------------------------------------------------------


def onnx_runner(path: str | Path, runtime: str = "auto") -> tuple[Callable[[np.ndarray], list[np.ndarray]], str]:
    """(run(images) -> outputs, description). runtime "auto": onnxruntime when installed, else onnx's pure-numpy
    reference evaluator (slow, but it reads the same graph); "onnxruntime" / "reference" force one."""
    if runtime in ("auto", "onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            if runtime == "onnxruntime":
                raise ValueError("onnxruntime is not installed (pip install onnxruntime)") from None
        else:
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as torch
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return (lambda x: session.run(None, {INPUT_NAME: x})), f"onnxruntime {ort.__version__}"
    if runtime not in ("auto", "reference"):
        raise ValueError(f"runtime={runtime!r} is not valid; choose auto, onnxruntime or reference")
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    return (lambda x: evaluator.run(None, {INPUT_NAME: x})), f"onnx.reference {onnx.__version__}"


def torchscript_runner(path: str | Path) -> tuple[Callable[[np.ndarray], list[np.ndarray]], str]:
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(images: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(images))]

    return run, f"torch.jit {torch.__version__}"


@dataclass
class DetectionMatch:
    """Exported detections (postprocess) against the PyTorch eval forward's, image by image."""

    reference: int = 0  # boxes the PyTorch model returned
    exported: int = 0
    matched: int = 0
    borderline: int = 0  # unmatched boxes scoring within SCORE_TOL of a cut (conf_thres, or the max_det-th score):
    #                      float rounding may put such a box on either side of the cut
    unexplained: int = 0  # any other unmatched box, on either side: a real difference
    max_box_diff: float = 0.0  # px, over matched boxes
    max_score_diff: float = 0.0

    @property
    def ok(self) -> bool:
        return self.unexplained == 0


def _cut_scores(scores: torch.Tensor, conf_thres: float, max_det: int) -> list[float]:
    return [conf_thres] + ([float(scores[-1])] if len(scores) >= max_det else [])


def match_detections(
    reference: Sequence[dict],
    exported: Sequence[dict],
    conf_thres: float,
    max_det: int,
    box_tol: float = BOX_TOL_PX,
    score_tol: float = SCORE_TOL,
) -> DetectionMatch:
    """One-to-one matching per image: same label, every coordinate within box_tol px, score within score_tol,
    the nearest free box first (boxes of equal score may come in another order). NMS keeps no two boxes of one
    label that close, so the first fit is the right one."""
    result = DetectionMatch()
    for ref, got in zip(reference, exported):
        result.reference += len(ref["scores"])
        result.exported += len(got["scores"])
        used = torch.zeros(len(got["scores"]), dtype=torch.bool)
        unmatched = []
        for i in range(len(ref["scores"])):
            diff = (got["boxes"] - ref["boxes"][i]).abs().amax(-1)  # (K_got,) px
            ok = (
                (got["labels"] == ref["labels"][i])
                & (diff <= box_tol)
                & ((got["scores"] - ref["scores"][i]).abs() <= score_tol)
                & ~used
            )
            if not bool(ok.any()):
                unmatched.append(float(ref["scores"][i]))
                continue
            j = int(torch.where(ok, diff, torch.full_like(diff, float("inf"))).argmin())
            used[j] = True
            result.matched += 1
            result.max_box_diff = max(result.max_box_diff, float(diff[j]))
            result.max_score_diff = max(result.max_score_diff, float((got["scores"][j] - ref["scores"][i]).abs()))
        unmatched += got["scores"][~used].tolist()
        cuts = _cut_scores(ref["scores"], conf_thres, max_det) + _cut_scores(got["scores"], conf_thres, max_det)
        borderline = sum(any(abs(s - c) <= score_tol for c in cuts) for s in unmatched)
        result.borderline += borderline
        result.unexplained += len(unmatched) - borderline
    return result


@dataclass
class CheckReport:
    """One exported file against the PyTorch model on the same images."""

    file: str
    runtime: str
    images: int
    max_abs: dict[str, float] = field(default_factory=dict)  # per output: max |exported - PyTorch| (raw)
    tolerance: dict[str, float] = field(default_factory=dict)
    detections: DetectionMatch = field(default_factory=DetectionMatch)
    view_prob_max_abs: float = 0.0

    @property
    def raw_ok(self) -> bool:
        return all(self.max_abs[k] <= self.tolerance[k] for k in self.max_abs)

    @property
    def ok(self) -> bool:
        return self.raw_ok and self.detections.ok and self.view_prob_max_abs <= VIEW_PROB_TOL

    def lines(self) -> list[str]:
        out = [f"check {self.file} ({self.runtime}) against PyTorch on {self.images} image(s):"]
        for name, value in self.max_abs.items():
            beyond = "" if value <= self.tolerance[name] else "  BEYOND TOLERANCE"
            out.append(f"  {name:<12} max abs diff {value:.3g} (tolerance {self.tolerance[name]:.3g}){beyond}")
        d = self.detections
        out.append(
            f"  detections   {d.matched}/{d.reference} PyTorch boxes matched by {d.exported} exported "
            f"(max box diff {d.max_box_diff:.3g} px, tolerance {BOX_TOL_PX}; max score diff "
            f"{d.max_score_diff:.3g}, tolerance {SCORE_TOL})"
            + (f"; {d.borderline} unmatched at a score cut" if d.borderline else "")
            + ("" if d.ok else f"; {d.unexplained} unmatched  MISMATCH")
        )
        out.append(f"  view probs   max abs diff {self.view_prob_max_abs:.3g} (tolerance {VIEW_PROB_TOL})")
        out.append(f"  {'OK' if self.ok else 'FAILED'}")
        return out

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "images": self.images,
            "max_abs_diff": self.max_abs,
            "tolerance": self.tolerance,
            "detections": {**dataclasses.asdict(self.detections), "ok": self.detections.ok},
            "view_prob_max_abs_diff": self.view_prob_max_abs,
            "ok": self.ok,
        }


def check_export(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    images: np.ndarray,
    spec: dict,
    runtime: str = "auto",
    atol: float = RAW_ATOL,
) -> CheckReport:
    """Run the exported file and the PyTorch model on `images` ((B, 3, S, S) float32, the input contract) and
    compare raw outputs (max abs difference per output, tolerance atol * max(1, max |PyTorch|)), the detections
    of postprocess(exported) with the eval forward's, and the view probabilities."""
    run, description = onnx_runner(path, runtime) if fmt == "onnx" else torchscript_runner(path)
    names = [o["name"] for o in spec["outputs"]]
    images = np.ascontiguousarray(images, dtype=np.float32)
    x = torch.from_numpy(images)
    model.eval()
    with torch.no_grad():
        reference_raw = [t.float() for t in RawHeads(model)(x)]
        reference = model(x)
    exported_raw = [_tensor(o).float() for o in run(images)]
    report = CheckReport(Path(path).name, description, len(images))
    for name, ref, got in zip(names, reference_raw, exported_raw):
        if ref.shape != got.shape:
            raise ValueError(f"{path}: output {name} has shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
        report.max_abs[name] = float((got - ref).abs().max())
        report.tolerance[name] = atol * max(1.0, float(ref.abs().max()))
    exported = postprocess(exported_raw, spec)
    settings = spec["postprocess"]
    report.detections = match_detections(
        reference["detections"], exported["detections"], settings["conf_thres"], settings["max_det"]
    )
    reference_probs = reference["view_logits"].float().softmax(-1)
    report.view_prob_max_abs = float((exported["view_probs"] - reference_probs).abs().max())
    return report


def check_images(
    data_yaml: str | Path, img_size: int, n: int, splits: Sequence[str] = ("val", "test", "train")
) -> tuple[np.ndarray, str, int]:
    """n images (evenly spaced over the first of `splits` that has any) letterboxed as in evaluation:
    ((n, 3, S, S) float32, split, images in that split). Errors name data.yaml or the image."""
    config = load_data_config(data_yaml)
    for split in splits:
        files = sorted({p for source in config.split_sources.get(split, []) for p in list_split_images(source)[0]})
        if files:
            picks = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
            batch, _ = preprocess([read_rgb(files[i]) for i in picks], img_size)
            return batch, split, len(files)
    raise ValueError(f"{data_yaml}: no images in any of the splits {', '.join(splits)} to check the export on")


# ------------------------------------------------------------------------------------------------------------
# What to export: a checkpoint, a trial folder, an ensemble folder
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSource:
    name: str  # stem of the exported files
    checkpoint: Path
    trial_id: str | None = None
    names: tuple[str, ...] | None = None  # an ensemble's class / view names (a bare checkpoint may lack them)
    view_names: tuple[str, ...] | None = None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"


def _unique(names: list[str]) -> list[str]:
    """File stems, suffixed _2, _3, .. where two trial ids map to one safe name."""
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in out:
            n += 1
            candidate = f"{name}_{n}"
        out.append(candidate)
    return out


def best_ray_checkpoint(folder: Path) -> Path | None:
    """The last.pt of a Ray trial folder's checkpoint_* subfolders with the highest val/score at its epoch (what
    the search keeps and ranks checkpoints by; ties: the later epoch); None when there is none."""
    files = sorted(folder.glob(f"checkpoint_*/{LAST_FILE}"))
    if not files:
        return None
    scored = []
    for file in files:
        history = load_checkpoint(file).get("history") or [{}]
        scored.append((history[-1].get(SCORE_METRIC, float("-inf")), history[-1].get("epoch", 0), file))
    return max(scored, key=lambda t: (t[0], t[1]))[2]


def resolve_sources(path: str | Path) -> tuple[list[ExportSource], Any]:
    """(what to export, the ensemble manifest or None) for PATH: a checkpoint file; a folder holding best.pt (else
    last.pt: a training run's or a Ray checkpoint folder); a Ray trial folder (its best checkpoint_*); an ensemble
    folder or manifest.yaml (every member). FileNotFoundError naming the path when there is nothing to export."""
    from echotune.ensemble.manifest import MANIFEST_FILE, load_manifest  # here: see load_for_export

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist (expected a checkpoint file, a trial folder or an ensemble folder)"
        )
    manifest_file = path / MANIFEST_FILE if path.is_dir() else path
    if manifest_file.suffix in (".yaml", ".yml") and manifest_file.is_file():
        manifest = load_manifest(manifest_file)
        names = _unique([_safe_name(m.trial_id) for m in manifest.members])
        return [
            ExportSource(name, m.checkpoint, m.trial_id, tuple(manifest.names), tuple(manifest.view_names))
            for name, m in zip(names, manifest.members)
        ], manifest
    if path.is_file():
        return [ExportSource(_safe_name(path.stem), path)], None
    for name in (BEST_FILE, LAST_FILE):
        if (path / name).is_file():
            return [ExportSource(_safe_name(name.removesuffix(".pt")), path / name)], None
    best = best_ray_checkpoint(path)
    if best is not None:
        return [ExportSource(_safe_name(path.name), best, path.name)], None
    raise FileNotFoundError(
        f"{path}: nothing to export: no {BEST_FILE}, {LAST_FILE}, checkpoint_*/{LAST_FILE} or "
        f"{MANIFEST_FILE} in this folder (of a search's results, pass a trial folder or the "
        "ensemble folder)"
    )


def ensemble_index(manifest: Any, specs: dict[str, dict]) -> dict:
    """ensemble.json: the members' exported files with their weights and how the ensemble fuses them (not in any
    graph: WBF / soft-NMS over the members' detections, echotune.ensemble.fusion.fuse_detections)."""
    return {
        "format": "echotune-ensemble-export",
        "version": SPEC_VERSION,
        "members": [
            {
                "name": name,
                "trial_id": spec["source"]["trial_id"],
                "weight": weight,
                "files": {fmt: e["file"] for fmt, e in spec["files"].items()},
                "sidecar": f"{name}.json",
            }
            for (name, spec), weight in zip(specs.items(), manifest.weights)
        ],
        "tta": manifest.tta,
        "fusion": manifest.fusion.to_dict(),
        "names": list(manifest.names),
        "view_names": list(manifest.view_names),
        "conf": manifest.extra.get("conf"),
        "fuse_with": "echotune.ensemble.fusion.fuse_detections(per-member detections in original pixels, "
        "weights, image_wh, FusionParams(**fusion)); view probabilities: their weighted mean",
    }
