"""Reading the JSON documents a search keeps beside Ray's files (search.json, held_out.json, final.json).

Each is written atomically (echotune.atomic), so a reader sees a whole document or none; a damaged one (edited
by hand, or from another tool) is an error that names the file and the line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_document(path: str | Path) -> Any | None:
    """The parsed document at `path`; None when there is no such file; ValueError naming the file and the line
    when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
