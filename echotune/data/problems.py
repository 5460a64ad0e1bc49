"""Data problems: every finding of the data check names the file, the line (when there is one) and the value.

Problems are collected, never raised one at a time, so a user sees everything wrong with a dataset in one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: str  # ERROR makes the dataset unusable; WARNING is reported and tolerated
    kind: str  # short stable identifier used to group the report, e.g. "class-id", "view-line"
    path: Path
    message: str
    line: int | None = None  # 1-based line number in `path`
    value: str | None = None  # the offending text, verbatim

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def __str__(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.value is not None:
            text += f" (value: {self.value!r})"
        return text


class DataError(ValueError):
    """Raised when a dataset cannot be used; `problems` holds every error found, each naming file/line/value."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        details = "\n".join(f"  {p}" for p in self.problems if p.is_error)
        super().__init__(f"{message}\n{details}" if details else message)
