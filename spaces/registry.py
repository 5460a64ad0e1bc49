"""Registry of named search spaces.

    @register_space("gradnorm", baseline_config=original_config)
    def define(trial, profile: Profile) -> dict:
        '''One-line description.

        Parameters and ranges ...'''
        trial.suggest_float("gn_alpha", 0.0, 3.0)
        return {"arch": "shared"}          # constants merged into the trial's config

    space = get_space("gradnorm")
    constants = space.define(optuna_trial, "quick")     # define-by-run, for OptunaSearch(space=...)
    point = space.baseline("quick")                     # for OptunaSearch(points_to_evaluate=[point])

A trial's config is ``{**suggested params, **constants}`` (what Ray's OptunaSearch builds); after
``to_train_config`` (which drops the search-only parameters such as ``stage1_frac``) it is a valid
``TrainConfig.from_dict`` input.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from echotune.engine.config import TrainConfig
from echotune.spaces.common import fractions_from_split
from echotune.spaces.profiles import Profile, get_profile
from echotune.spaces.trials import CyclingTrial, FocusedTrial, NumericRange, ReplayTrial, SuggestTrial

DefineFn = Callable[[SuggestTrial, Profile], dict]
ConfigFn = Callable[[Profile], dict]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str  # first line of the define function's docstring
    doc: str  # the whole docstring: parameters, ranges, conditions, constants, baseline
    define_fn: DefineFn
    baseline_config_fn: ConfigFn

    def define(self, trial: SuggestTrial, profile: str | Profile) -> dict:
        """Define-by-run: suggest this space's parameters on `trial`; return the constant config keys. A profile
        with a `searched` list suggests only those; the others are constants at the baseline's values."""
        profile = get_profile(profile)
        if profile.searched is None:
            return dict(self.define_fn(trial, profile))
        focused = FocusedTrial(trial, profile.searched, self.fixed_values(profile))
        constants = self.define_fn(focused, profile)
        return {**focused.fixed_used, **constants}

    def fixed_values(self, profile: str | Profile) -> dict:
        """What a parameter a profile does not search is fixed at: the baseline configuration's value (the
        original study's recipe), else TrainConfig's default (parameters the baseline does not use, such as
        focal_gamma), plus the search-only stage fractions of the baseline's split."""
        config = {**TrainConfig().to_dict(), **self.baseline_config_fn(get_profile(profile))}
        return {**config, **fractions_from_split(config["stage_split"])}

    def baseline_config(self, profile: str | Profile) -> dict:
        """The full training configuration (TrainConfig keys) that this space's baseline point stands for."""
        return dict(self.baseline_config_fn(get_profile(profile)))

    def baseline(self, profile: str | Profile) -> dict:
        """The baseline as a point of this space: suggested-parameter values only, each inside its distribution
        (fit for ``points_to_evaluate`` / ``study.enqueue_trial``). Empty for a space with no parameters."""
        return self.point(profile)

    def recipe(self, profile: str | Profile) -> dict:
        """The baseline with spaces.original.DETECTOR_RECIPE's values wherever this space (and profile) searches
        that parameter: a second known starting point. Equal to the baseline where none of them is searched."""
        from echotune.spaces.original import DETECTOR_RECIPE

        return self.point(profile, DETECTOR_RECIPE)

    def point(self, profile: str | Profile, overrides: dict | None = None) -> dict:
        """The baseline configuration with `overrides` as a point of this space (searched parameters only)."""
        config = {**self.baseline_config(profile), **(overrides or {})}
        trial = ReplayTrial({**config, **fractions_from_split(config["stage_split"])})
        self.define(trial, profile)
        return trial.params


_SPACES: dict[str, SearchSpace] = {}


def register_space(name: str, *, baseline_config: ConfigFn) -> Callable[[DefineFn], DefineFn]:
    """Register the decorated define-by-run function as space `name` (returned unchanged, so spaces can reuse it).

    `baseline_config(profile)` gives the full configuration the space's baseline point must reproduce."""

    def decorator(define_fn: DefineFn) -> DefineFn:
        if name in _SPACES:
            raise ValueError(f"search space {name!r} is already registered")
        doc = inspect.cleandoc(define_fn.__doc__ or "")
        if not doc:
            raise ValueError(f"search space {name!r} needs a docstring documenting its parameters")
        _SPACES[name] = SearchSpace(name, doc.splitlines()[0], doc, define_fn, baseline_config)
        return define_fn

    return decorator


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def get_space(name: str) -> SearchSpace:
    if name not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; valid spaces: {', '.join(list_spaces())}")
    return _SPACES[name]


def _cycling_runs(name: str, profile: str | Profile, searched_only: bool = True) -> list[CyclingTrial]:
    """Space `name` run with CyclingTrial until every categorical choice has come up once (so every
    single-choice condition fires): together the runs have suggested every parameter the space has (under a
    focused profile only its searched ones, unless `searched_only` is False)."""
    space, profile = get_space(name), get_profile(profile)
    runs: list[CyclingTrial] = []
    while not runs or len(runs) < max(r.max_choices for r in runs):
        runs.append(CyclingTrial(len(runs)))
        if searched_only:
            space.define(runs[-1], profile)
        else:
            space.define_fn(runs[-1], profile)
    return runs


def parameter_ranges(name: str, profile: str | Profile = "quick") -> dict[str, NumericRange]:
    """{parameter: NumericRange(low, high, log)} of every numeric parameter of space `name` under `profile`, as
    the space suggests it (conditional ones included), e.g. {"lr_stage1": (0.001, 0.03, True), ...}: for code that
    must stay inside the space's ranges without restating them (search/pbt.py's mutations). Every parameter of
    the space, also those a focused profile (quick) keeps fixed."""
    return {
        param: rng for run in _cycling_runs(name, profile, searched_only=False) for param, rng in run.ranges.items()
    }


def parameter_table(name: str, profile: str | Profile = "quick") -> dict[str, tuple[str, bool]]:
    """{parameter: (distribution, conditional)} for space `name` under `profile` (see _cycling_runs)."""
    runs = _cycling_runs(name, profile)
    table: dict[str, tuple[str, bool]] = {}
    for run in runs:
        for param, dist in run.distributions.items():
            table.setdefault(param, (dist, any(param not in r.distributions for r in runs)))
    return table


def describe_space(name: str, profile: str | Profile = "quick") -> str:
    """Human-readable summary: docstring, the parameters with their distributions under `profile`, the baseline."""
    space, p = get_space(name), get_profile(profile)
    lines = [
        f"{space.name} (profile {p.name}: {p.description})",
        "",
        space.doc,
        "",
        f"Parameters under profile {p.name}:",
    ]
    table = parameter_table(name, p)
    width = max((len(k) for k in table), default=0)
    lines += [f"  {param:<{width}}  {dist}{'  (conditional)' if cond else ''}" for param, (dist, cond) in table.items()]
    if not table:
        lines.append("  (none: every trial runs the same configuration)")
    lines += ["", f"Baseline point: {space.baseline(p)}"]
    return "\n".join(lines)
