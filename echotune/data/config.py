"""`data.yaml` parsing, compatible with Ultralytics dataset files, plus EchoTune's `view_names` and
`video_id_pattern` keys.

Keys: `path` (dataset root), `train`, `val`, optional `test` (each a folder of images, a .txt list of image
paths, or a list of either), `names` (list or {id: name}), optional `nc`, optional `view_names` (order of the
one-hot view line), optional `video_id_pattern` (a regular expression giving each file name's source video, for
naming schemes EchoTune does not know: see echotune.data.check.video_id). Paths resolve like Ultralytics:
relative split paths against the root (`path`, itself resolved against the yaml's folder, or the yaml's folder
when `path` is absent); a split given as `../x` that does not exist there is retried as `x` (Roboflow exports
write `../train/images`).

Labels live in the sibling `labels/` folder: the last `/images/` of an image path becomes `/labels/` and the
suffix becomes `.txt`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from echotune.data.problems import ERROR, DataError, Problem

DATA_YAML = "data.yaml"  # a dataset's description file, the Ultralytics name (what EchoTune writes, what it reads)
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
# The Regurgitation-YOLODataset export writes the one-hot view line in this order and has no `view_names`.
EXPORT_VIEW_NAMES = ("PSAX", "PLAX", "A4C")
VIDEO_ID_KEY = "video_id_pattern"  # EchoTune's own data.yaml key, like view_names
VIDEO_ID_OPTION = "--video-id-pattern"  # the command lines' override of that key


@dataclass
class DataConfig:
    yaml_path: Path
    root: Path
    names: tuple[str, ...]  # detection classes, index = class id
    view_names: tuple[str, ...] | None  # None: absent from the yaml, to be inferred from the view lines
    split_sources: dict[str, list[Path]] = field(default_factory=dict)  # split -> folders and/or .txt lists
    # `video_id_pattern` compiled (None: the built-in naming schemes), where it came from (data.yaml's key, or a
    # command line's --video-id-pattern overriding it) and its line in data.yaml, for the check's messages.
    video_id_pattern: re.Pattern | None = None
    video_id_pattern_origin: str = VIDEO_ID_KEY
    video_id_pattern_line: int | None = None

    @property
    def nc(self) -> int:
        return len(self.names)


def label_path_for(image_path: Path) -> Path:
    """`.../images/x.png` -> `.../labels/x.txt` (last `images` folder replaced, as Ultralytics does)."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")  # no images/ folder: label beside the image


def compile_video_id_pattern(text: object) -> re.Pattern:
    """A `video_id_pattern` as a compiled regex; ValueError saying why not (the caller adds where it came from)."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected a non-empty regular expression (a string), e.g. '^(?P<video>.+)_frame\\d+'")
    try:
        return re.compile(text)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"not a valid regular expression: {exc.msg}{where}") from None


def load_data_config(yaml_path: str | os.PathLike, video_id_pattern: str | None = None) -> DataConfig:
    """Read and validate a data.yaml; raises DataError naming the file, key and value of every problem.

    `video_id_pattern`: a command line's --video-id-pattern, which replaces the file's `video_id_pattern` key."""
    yaml_path = Path(yaml_path).expanduser().resolve()
    if not yaml_path.is_file():
        raise DataError(f"{yaml_path}: data.yaml not found")
    raw = read_yaml(yaml_path, DataError)
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"{type(raw).__name__} {repr(raw)[:60]}"
        raise DataError(
            f"{yaml_path}: expected a mapping of keys (path, train, val, test, names, view_names), got {got}"
        )

    problems: list[Problem] = []

    def bad(key: str, message: str, value: object = None) -> None:
        line = _key_line(yaml_path, key)
        problems.append(
            Problem(
                ERROR, "data-yaml", yaml_path, f"key '{key}': {message}", line, None if value is None else str(value)
            )
        )

    root = _resolve_root(yaml_path, raw.get("path"))
    names = _parse_names(raw.get("names"), bad)
    if "nc" in raw and names is not None and raw["nc"] != len(names):
        bad("nc", f"nc={raw['nc']} but names has {len(names)} entries", raw["nc"])
    view_names = None
    if raw.get("view_names") is not None:
        view_names = _parse_names(raw["view_names"], bad, key="view_names")

    pattern, origin, pattern_line = None, VIDEO_ID_KEY, None
    if video_id_pattern is not None:
        try:
            pattern, origin = compile_video_id_pattern(video_id_pattern), VIDEO_ID_OPTION
        except ValueError as exc:
            problems.append(
                Problem(ERROR, "data-yaml", yaml_path, f"{VIDEO_ID_OPTION}: {exc}", value=str(video_id_pattern))
            )
    elif raw.get(VIDEO_ID_KEY) is not None:
        pattern_line = _key_line(yaml_path, VIDEO_ID_KEY)
        try:
            pattern = compile_video_id_pattern(raw[VIDEO_ID_KEY])
        except ValueError as exc:
            bad(VIDEO_ID_KEY, str(exc), raw[VIDEO_ID_KEY])

    sources: dict[str, list[Path]] = {}
    for split in SPLITS:
        spec = raw.get(split)
        if spec is None:
            if split in REQUIRED_SPLITS:
                bad(split, "missing (required: train and val)")
            continue
        specs = spec if isinstance(spec, list) else [spec]
        resolved = []
        for item in specs:
            if not isinstance(item, str) or not item.strip():
                bad(split, "expected a folder or a .txt list of image paths", item)
                continue
            path = _resolve_split_path(root, item)
            if not path.exists():
                bad(split, f"{path} does not exist", item)
            elif path.is_file() and path.suffix != ".txt":
                bad(split, f"{path} is a file but not a .txt list of image paths", item)
            resolved.append(path)
        sources[split] = resolved

    if problems:
        raise DataError(f"{yaml_path}: invalid dataset file", problems)
    return DataConfig(
        yaml_path, root, tuple(names), view_names and tuple(view_names), sources, pattern, origin, pattern_line
    )


def read_yaml(path: Path, error: type[ValueError] = ValueError) -> object:
    """The YAML document in the file at `path`; `error` (a ValueError class: DataError, ...) naming the file when
    it is not valid YAML or not UTF-8 text."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {yaml_error_text(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line with 1-based positions: `line 2, column 1: expected ... (while parsing a flow
    sequence started at line 1, column 8)`; its own text names a "<unicode string>", not the file."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} started at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        text += f" ({context})"
    return text


def list_split_images(source: Path) -> tuple[list[Path], list[Problem]]:
    """Image paths of one split source (folder scanned recursively, or .txt list); problems name file and line."""
    problems: list[Problem] = []
    if source.is_dir():
        images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return images, problems
    images = []
    for number, text in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        entry = text.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else (source.parent / path)
        path = Path(os.path.normpath(path))
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(
                Problem(
                    ERROR,
                    "image-list",
                    source,
                    f"not an image file (valid: {', '.join(IMAGE_SUFFIXES)})",
                    number,
                    entry,
                )
            )
        elif not path.is_file():
            problems.append(Problem(ERROR, "image-list", source, f"listed image {path} does not exist", number, entry))
        else:
            images.append(path)
    return images, problems


def _resolve_root(yaml_path: Path, path_value: object) -> Path:
    if not path_value:
        return yaml_path.parent
    root = Path(str(path_value)).expanduser()
    return Path(os.path.normpath(root if root.is_absolute() else yaml_path.parent / root))


def _resolve_split_path(root: Path, item: str) -> Path:
    path = Path(item).expanduser()
    if path.is_absolute():
        return path
    candidate = Path(os.path.normpath(root / path))
    if not candidate.exists() and item.startswith("../"):
        retry = Path(os.path.normpath(root / item[3:]))
        if retry.exists():
            return retry
    return candidate


def _parse_names(value: object, bad, key: str = "names") -> list[str] | None:
    if value is None:
        bad(key, "missing (a list of class names, or {id: name})")
        return None
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            bad(key, "ids of a {id: name} mapping must be integers", list(value))
            return None
        if ids != list(range(len(ids))):
            bad(key, f"ids must be 0..{len(ids) - 1} without gaps", ids)
            return None
        value = [value[i] if i in value else value[str(i)] for i in ids]
    if not isinstance(value, list) or not value:
        bad(key, "expected a non-empty list of names or {id: name}", value)
        return None
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        bad(key, "names must be unique", names)
    return names


def _key_line(yaml_path: Path, key: str) -> int | None:
    """1-based line of a top-level key in the yaml file, for error messages (None if absent)."""
    for number, text in enumerate(yaml_path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.startswith(f"{key}:"):
            return number
    return None
