"""Stand-ins for ``optuna.Trial`` that run a space's define-by-run function without a study.

``SuggestTrial`` is the part of the trial API the spaces use: Ray's OptunaSearch hands the define-by-run
function a wrapper around ``optuna.Trial`` (it records each ``suggest_*`` return value), so the spaces call only
``suggest_float`` / ``suggest_categorical`` / ``suggest_int`` and never read ``trial.params``.

``ReplayTrial`` answers every suggestion from a fixed configuration and refuses values outside the
distribution: running a space with it turns "the original configuration" into that space's baseline point.
``CyclingTrial`` answers categorical suggestions with choice ``k % len(choices)``, so a few runs reach every
conditional branch; ``describe_space`` uses it to list a space's parameters. ``FocusedTrial`` searches only a
profile's chosen parameters and fixes the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol


class SuggestTrial(Protocol):
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def format_distribution(
    kind: str, low: Any = None, high: Any = None, log: bool = False, choices: Sequence[Any] = ()
) -> str:
    if kind == "categorical":
        return "{" + ", ".join(str(c) for c in choices) + "}"
    return f"{kind} [{low:g}, {high:g}]" + (" log" if log else "")


class ReplayTrial:
    """Suggests `values[name]` for every parameter; a missing value or one outside the range raises ValueError."""

    def __init__(self, values: dict):
        self.values = values
        self.params: dict[str, Any] = {}

    def _value(self, name: str) -> Any:
        if name not in self.values:
            raise ValueError(f"no value for parameter {name!r}; the configuration has: {', '.join(self.values)}")
        return self.values[name]

    def _numeric(self, name: str, low: float, high: float, log: bool, cast: type) -> Any:
        value = self._value(name)
        if not low <= value <= high:
            raise ValueError(f"{name}={value!r} lies outside {format_distribution(cast.__name__, low, high, log)}")
        self.params[name] = cast(value)
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._numeric(name, low, high, log, float)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._numeric(name, low, high, log, int)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self._value(name)
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not one of {format_distribution('categorical', choices=choices)}")
        self.params[name] = value
        return value


class NumericRange(NamedTuple):
    """A numeric parameter's distribution as the space suggests it, e.g. lr_stage1: (0.001, 0.03, True)."""

    low: float
    high: float
    log: bool


class CyclingTrial:
    """Run `k`: categorical -> choices[k % len(choices)], numeric -> low. Records each parameter's distribution
    (as text in `distributions`, and the numeric ones as NumericRange in `ranges`)."""

    def __init__(self, k: int):
        self.k = k
        self.distributions: dict[str, str] = {}
        self.ranges: dict[str, NumericRange] = {}
        self.max_choices = 1

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.distributions[name] = format_distribution("float", low, high, log)
        self.ranges[name] = NumericRange(float(low), float(high), log)
        return float(low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.distributions[name] = format_distribution("int", low, high, log)
        self.ranges[name] = NumericRange(low, high, log)
        return int(low)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.distributions[name] = format_distribution("categorical", choices=choices)
        self.max_choices = max(self.max_choices, len(choices))
        return choices[self.k % len(choices)]


class FocusedTrial:
    """Passes the suggestions of `searched` parameters to `trial`; answers every other one with its value in
    `fixed` (recorded in `fixed_used`, which the space returns as constants). A profile that searches a subset
    of a space (the quick profile) runs the space's define function through it, so the conditions between
    parameters stay in one place (a fixed aug_policy=none still turns the strengths off)."""

    def __init__(self, trial: SuggestTrial, searched: Sequence[str], fixed: dict):
        self.trial, self.searched, self.fixed = trial, frozenset(searched), fixed
        self.fixed_used: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:  # the rest of the trial's API (number, user attrs) is the trial's
        return getattr(self.trial, name)

    def _fixed(self, name: str) -> Any:
        if name not in self.fixed:
            raise ValueError(
                f"parameter {name!r} is neither searched nor fixed; fixed values exist for: "
                f"{', '.join(sorted(self.fixed))}"
            )
        self.fixed_used[name] = self.fixed[name]
        return self.fixed[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if name in self.searched:
            return self.trial.suggest_float(name, low, high, step=step, log=log)
        return float(self._fixed(name))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if name in self.searched:
            return self.trial.suggest_int(name, low, high, step=step, log=log)
        return int(self._fixed(name))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self.searched:
            return self.trial.suggest_categorical(name, choices)
        return self._fixed(name)
