"""Export a trained model to ONNX and TorchScript, then check the files against PyTorch on real images.

    echotune export results/run/best.pt                        # -> results/run/export/best.onnx, ...
    echotune export results/run --format onnx --img-size 320   # a training run's folder: best.pt, else last.pt
    echotune export results/gradnorm/trial_ab12                 # a Ray trial folder: its best checkpoint_*
    echotune export results/gradnorm/ensemble --out deploy      # an ensemble: every member + ensemble.json

PATH is a checkpoint (last.pt / best.pt), a folder holding best.pt (else last.pt), a Ray trial folder (the
checkpoint_* with the highest val/score), or an ensemble folder / manifest.yaml (every member, named by trial).
Writes into --out (default: PATH's folder / export) <name>.onnx and/or <name>.torchscript and the sidecar
<name>.json (input contract, outputs, decoding, NMS parameters, class and view names, source checkpoint and
config, versions, the check's results). The graph returns the raw head tensors (det_p3, det_p4, det_p5,
view_logits) for a dynamic batch of letterboxed RGB images in [0, 1]; decoding and NMS run after it, in
echotune.model_export.postprocess (see the sidecar and README, "Export").
The check runs --check images (from the val split of --data, else of the checkpoint's dataset, else of the
embedded synthetic set) through each file (ONNX with onnxruntime, else onnx's reference evaluator) and the
PyTorch model, and prints the max abs difference per output and whether the post-processed detections match.
Exit codes: 0 success; 1 an exported file differs from PyTorch beyond the tolerance; 2 bad input (missing or
unreadable checkpoint, bad manifest or data.yaml, ONNX packages not installed, --out cannot be written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echotune.model_export import (
    EXPORTERS,
    FORMATS,
    OPSET,
    RAW_ATOL,
    check_export,
    check_images,
    ensemble_index,
    export_model,
    load_for_export,
    resolve_sources,
    write_sidecar,
)
from echotune.search.cli.command import (
    EXIT_FAILED,
    EXIT_OK,
    add_cache_dir,
    add_data,
    add_img_size,
    add_out,
    cannot_write,
    fail,
    note,
)

DEFAULT_CHECK_IMAGES = 8
ENSEMBLE_INDEX = "ensemble.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="checkpoint file, training/trial folder, or ensemble folder")
    parser.add_argument(
        "--format", default=",".join(FORMATS), help=f"comma-separated, from {', '.join(FORMATS)} (default: both)"
    )
    add_out(parser, help="output folder (default: PATH's folder / export)")
    add_img_size(parser, help="input side S, a multiple of 32 (default: the training size)")
    parser.add_argument(
        "--check",
        type=int,
        default=DEFAULT_CHECK_IMAGES,
        metavar="N_IMAGES",
        help=f"images to check the files on (default {DEFAULT_CHECK_IMAGES}; 0 skips the check)",
    )
    add_data(
        parser,
        help="data.yaml: the check's images (val split) and names for a checkpoint that stores none "
        "(default: the checkpoint's dataset)",
    )
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="legacy",
        help="ONNX exporter: legacy (torch.onnx dynamo=False, default) or dynamo (needs onnxscript)",
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument(
        "--atol",
        type=float,
        default=RAW_ATOL,
        help=f"raw-output tolerance: atol * max(1, max |PyTorch|) (default {RAW_ATOL:g})",
    )
    parser.add_argument(
        "--runtime",
        choices=("auto", "onnxruntime", "reference"),
        default="auto",
        help="what runs the ONNX file for the check (default: onnxruntime when installed)",
    )
    add_cache_dir(parser)


def parse_formats(parser: argparse.ArgumentParser, text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        parser.error(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return list(dict.fromkeys(formats))


def check_data_yaml(data: str | None, spec: dict, manifest, cache_dir: Path | None) -> Path:
    """--data, else the checkpoint's dataset (when still there), else the ensemble's, else the synthetic set."""
    from echotune.data.prepare import resolve_data_yaml

    for candidate in (data, spec["source"].get("data"), manifest.extra.get("data_yaml") if manifest else None):
        if candidate is not None and (data is not None or Path(candidate).is_file()):
            return Path(candidate)
    return resolve_data_yaml(None, cache_dir, log=note)


def export_all(args, formats: list[str]) -> bool:
    """Export every source of args.path (and check it); True when every check passed."""
    sources, manifest = resolve_sources(args.path)
    out = args.out or (args.path if args.path.is_dir() else args.path.parent) / "export"
    specs, all_ok, images_cache = {}, True, {}
    for source in sources:
        model, spec = load_for_export(
            source.checkpoint, args.img_size, source.names, source.view_names, args.data, source.trial_id, log=note
        )
        size = spec["input"]["shape"][-1]
        who = f"trial {source.trial_id}: " if source.trial_id else ""
        print(
            f"Exporting {who}{source.checkpoint} ({spec['source']['config'].get('arch')}, "
            f"{spec['head']['kind']} head, {size} px input) to {out}",
            flush=True,
        )
        paths = export_model(
            model, spec, out, source.name, formats, args.opset, args.exporter, log=lambda m: print(f"  {m}", flush=True)
        )
        if args.check > 0:
            data_yaml = check_data_yaml(args.data, spec, manifest, args.cache_dir)
            if (data_yaml, size) not in images_cache:
                images_cache[data_yaml, size] = check_images(data_yaml, size, args.check)
            images, split, available = images_cache[data_yaml, size]
            print(f"  check images: {len(images)} of the {available} in the {split} split of {data_yaml}")
            spec["check"] = {"data": str(data_yaml), "split": split}
            for fmt in formats:
                report = check_export(model, paths[fmt], fmt, images, spec, args.runtime, args.atol)
                print("\n".join(f"  {line}" for line in report.lines()), flush=True)
                spec["check"][fmt] = report.to_dict()
                all_ok &= report.ok
            write_sidecar(paths["json"], spec)  # now with the check's results
        specs[source.name] = spec
    if manifest is not None:
        import json

        from echotune.atomic import atomic_write_text

        index = atomic_write_text(out / ENSEMBLE_INDEX, json.dumps(ensemble_index(manifest, specs), indent=2) + "\n")
        print(f"wrote {index} ({len(specs)} members, weights and fusion parameters)")
    return all_ok


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    formats = parse_formats(parser, args.format)
    if args.img_size is not None and (args.img_size < 32 or args.img_size % 32):
        parser.error(f"--img-size must be a positive multiple of 32, got {args.img_size}")
    if args.check < 0 or args.atol <= 0:
        parser.error("--check must be >= 0 and --atol > 0")
    try:
        ok = export_all(args, formats)
    except ImportError as exc:  # onnx / onnxruntime / onnxscript missing
        return fail(f"{exc}; install the export extra: pip install -e '.[export]'")
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        return fail(exc)
    except OSError as exc:  # writing the files: e.g. a full disk or a read-only --out
        return cannot_write("the export", exc)
    if not ok:
        fail("an exported file differs from PyTorch beyond the tolerance (see the check above)")
        return EXIT_FAILED
    return EXIT_OK
