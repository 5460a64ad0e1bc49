"""Reading the JSON documents a search keeps beside Ray's files (search.json, held_out.json, final.json), and
Ray's own JSON-lines results (result.json).

Our documents are written atomically (echotune.atomic), so a reader sees a whole document or none; a damaged one
(edited by hand, or from another tool) is an error that names the file and the line. Ray appends to its files, so
a crash can cut their last line: that line is skipped, not an error.
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


def read_json_lines(path: str | Path) -> list[Any]:
    """The parsed lines of a JSON-lines file such as Ray's result.json, in order; [] when there is no such file.
    A line that does not parse (cut by a crash) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    parsed = []
    for line in path.read_text().splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return parsed
