"""best_config.yaml: the search's winner as a runnable training config, and the reader behind `--config` of
`echotune train`.

    write_best_config(path, train_config_of(trial_config), {"trial_id": ..., ...})   # end of a search
    values = read_config_file(path)     # echotune train --config: {TrainConfig field: value}, ConfigFileError if bad

The file is YAML: metadata keys first (which trial, its val scores, the final round's seeds, the checkpoint, the
command that reproduces it), then under `config:` every TrainConfig field of the winning run, seed, epochs and
arch included, so `echotune train --config results/<name>/best_config.yaml` trains that run again.
`read_config_file` also takes a bare mapping of TrainConfig fields (a hand-written file of a few keys).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import yaml

from echotune.atomic import atomic_write_text
from echotune.engine.config import TrainConfig
from echotune.spaces import to_train_config

CONFIG_KEY = "config"

# TrainConfig field type (as annotated) -> (what the file must hold, check). A field whose annotation is not
# listed is left to TrainConfig's own validation.
_NUMBER = (int, float)
_TYPE_CHECKS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str | None": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "tuple[float, float, float]": (
        "a list of three numbers",
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 3
            and all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in v)
        ),
    ),
    "dict[str, float]": (
        "a mapping of names to numbers",
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(k, str) and isinstance(x, _NUMBER) and not isinstance(x, bool) for k, x in v.items())
        ),
    ),
}


class ConfigFileError(ValueError):
    """A --config file that cannot be used; the message names the file and the bad key or value."""


def train_config_of(trial_config: dict) -> dict:
    """A trial's config (search-only parameters and all) -> the full TrainConfig dict its trainable trained, as
    plain YAML/JSON types (stage_split a list). Same construction as trainables.trial.train_trial."""
    cfg = TrainConfig.from_dict(to_train_config(trial_config))
    return json.loads(json.dumps(cfg.to_dict()))


def reproduce_command(config_path: str | Path, data_yaml: str | Path) -> str:
    """The shell command that trains the config of `config_path` again on the dataset it was searched on."""
    return shlex.join(["echotune", "train", "--config", str(config_path), "--data", str(data_yaml)])


def write_best_config(path: str | Path, config: dict, meta: dict) -> Path:
    """Write `meta` (plain values) and then `config` (TrainConfig fields) under `config:`, atomically."""
    text = yaml.safe_dump({**meta, CONFIG_KEY: config}, sort_keys=False, width=1_000_000)  # no folded commands
    return atomic_write_text(path, text)


def read_config_file(path: str | Path) -> dict:
    """The TrainConfig fields a YAML file sets: those under its `config:` key (best_config.yaml) or, without one,
    the whole mapping. Raises ConfigFileError naming the file and the problem: missing or unreadable file, bad
    YAML, not a mapping, an unknown field, a value of the wrong type. Values are not range-checked here
    (TrainConfig.from_dict does that once the command line's overrides are applied)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read it ({exc})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigFileError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict):
        raise ConfigFileError(
            f"{path}: expected a mapping of TrainConfig fields (or one under a '{CONFIG_KEY}:' "
            f"key), got {type(document).__name__}"
        )
    nested = CONFIG_KEY in document  # best_config.yaml: metadata beside the fields
    values = document[CONFIG_KEY] if nested else document
    where = f"{path}: '{CONFIG_KEY}:'" if nested else f"{path}:"
    if not isinstance(values, dict):
        raise ConfigFileError(f"{where} expected a mapping of TrainConfig fields, got {type(values).__name__}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ConfigFileError(
            f"{where} unknown TrainConfig field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(fields))}"
        )
    for key, value in values.items():
        expected, check = _TYPE_CHECKS.get(fields[key], (None, None))
        if check is not None and not check(value):
            raise ConfigFileError(f"{where} {key}: expected {expected}, got {value!r}")
    return {k: float(v) if fields[k] == "float" else v for k, v in values.items()}
