"""Search spaces: every sampled config trains, conditionals are honest, the baseline point is exact.

All against real Optuna studies (and Ray's real OptunaSearch for points_to_evaluate); no Ray cluster needed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import warnings

import optuna
import pytest

from echotune import spaces
from echotune.engine.config import TrainConfig
from echotune.losses import FOCAL_LOSSES
from echotune.spaces.common import SEARCH_ONLY_PARAMS, STAGE3_FLOOR, fractions_from_split, split_from_fractions
from echotune.spaces.original import original_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = spaces.list_spaces()
CASES = [(name, profile) for name in SPACES for profile in spaces.PROFILES]
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
SEEDS = range(30)

# child parameters -> condition on the trial's config under which they must be (and only then are) suggested
CONDITIONALS = {
    ("focal_gamma",): lambda c: c.get("loss_obj") in FOCAL_LOSSES or c["loss_cls"] in FOCAL_LOSSES,
    ("loss_obj",): lambda c: c["head"] == "anchor",  # the anchor-free head has no objectness
    ("view_smoothing",): lambda c: c["loss_view"] == "label_smoothing",
    ("aug_strength_stage1", "aug_strength_stage2", "aug_strength_stage3"): lambda c: c["aug_policy"] != "none",
    ("view_level", "gn_alpha", "gn_lr", "gn_min_weight"): lambda c: c["arch"] == "shared",
    ("balance", "classifier", "lr_cls_factor"): lambda c: c["arch"] == "dual",
}
ARCH_CHILDREN = {("view_level", "gn_alpha", "gn_lr", "gn_min_weight"), ("balance", "classifier", "lr_cls_factor")}


def sample(name: str, profile: str, seed: int) -> tuple[dict, dict]:
    """(trial.params, returned constants) of one RandomSampler trial of a real study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    constants = spaces.get_space(name).define(trial, profile)
    return dict(trial.params), constants


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_every_sampled_config_is_a_valid_train_config(name, profile):
    seen = {children: set() for children in CONDITIONALS}
    for seed in SEEDS:
        params, constants = sample(name, profile, seed)
        for key in set(params) & set(constants):  # a constant never contradicts a suggestion
            assert params[key] == constants[key], (key, params[key], constants[key])
        config = {**params, **constants}  # what Ray's OptunaSearch hands the trainable
        assert set(config) - FIELDS <= set(SEARCH_ONLY_PARAMS), set(config) - FIELDS
        cfg = TrainConfig.from_dict(spaces.to_train_config(config))
        assert cfg.img_size == spaces.get_profile(profile).img_size
        assert abs(sum(cfg.stage_split) - 1.0) < 1e-3 and cfg.stage_split[2] >= 0.05
        if "stage1_frac" in params:
            assert cfg.stage_split == split_from_fractions(params["stage1_frac"], params["stage2_frac"])
        if not params:  # the baseline space: nothing is suggested, so nothing is conditional
            continue
        searched = spaces.get_profile(profile).searched
        if searched is not None:  # a focused profile: the rest are constants at the baseline's values
            assert set(params) <= set(searched), set(params) - set(searched)
        for children, condition in CONDITIONALS.items():
            wanted = condition(config)
            seen[children].add(wanted)
            for child in children:
                if searched is None or child in searched:
                    assert (child in params) == wanted, (seed, child, config)
    if (
        name != "baseline" and spaces.get_profile(profile).searched is None
    ):  # 30 seeds reach both sides of every condition (of the arch only in `all`)
        varying = [c for c in CONDITIONALS if name == "all" or c not in ARCH_CHILDREN]
        assert all(seen[children] == {True, False} for children in varying), seen


@pytest.mark.parametrize("profile", spaces.PROFILES)
def test_all_space_gives_each_parameter_one_distribution(profile):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    distributions: dict[str, set] = {}
    for _ in range(40):
        trial = study.ask()
        spaces.get_space("all").define(trial, profile)
        for param, dist in trial.distributions.items():
            distributions.setdefault(param, set()).add(repr(dist))
    assert {p for p, d in distributions.items() if len(d) > 1} == set()
    assert {"arch", "balance", "classifier"} <= set(distributions)
    assert ("gn_alpha" in distributions) == (spaces.get_profile(profile).searched is None)  # quick fixes it


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_baseline_point_is_accepted_as_is_and_reproduces_the_original(name, profile):
    space = spaces.get_space(name)
    point = space.baseline(profile)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Optuna's "Fixed parameter ... is out of range" UserWarning
        study.enqueue_trial(point)
        trial = study.ask()
        constants = space.define(trial, profile)
    assert trial.params == point  # every value was used and nothing was sampled
    config = spaces.to_train_config({**trial.params, **constants})
    expected = space.baseline_config(profile)
    assert config == {k: expected[k] for k in config}
    assert TrainConfig.from_dict(config) == TrainConfig.from_dict(expected)
    if name != "dual_backbone":
        assert config == original_config(profile)
    else:  # the original recipe on the dual model, without the shared-only keys
        dual_keys, shared_only = (
            {"arch", "balance", "classifier", "lr_cls_factor"},
            {"view_level", "gn_alpha", "gn_lr", "gn_min_weight"},
        )
        assert {k: v for k, v in config.items() if k not in dual_keys} == {
            k: v for k, v in original_config(profile).items() if k not in dual_keys | shared_only
        }


def test_a_point_outside_the_distributions_is_what_optuna_warns_about():
    """Control for the test above: Optuna does warn (and still uses the value) when a point is out of range."""
    point = {**spaces.get_space("gradnorm").baseline("quick-all"), "lr_stage1": 0.5}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(point)
    trial = study.ask()
    with pytest.warns(UserWarning, match="lr_stage1 with value 0.5 is out of range"):
        spaces.get_space("gradnorm").define(trial, "quick-all")


@pytest.mark.parametrize("name", SPACES)
def test_ray_optuna_search_runs_the_baseline_first_then_samples(name):
    from ray.tune.search.optuna import OptunaSearch

    space = spaces.get_space(name)
    baseline = space.baseline("quick")
    searcher = OptunaSearch(
        space=functools.partial(space.define, profile="quick"),
        metric="val/score",
        mode="max",
        points_to_evaluate=[baseline],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert {k: first[k] for k in baseline} == baseline  # the point's params are in the config as given
    assert TrainConfig.from_dict(spaces.to_train_config(first)) == TrainConfig.from_dict(space.baseline_config("quick"))
    TrainConfig.from_dict(spaces.to_train_config(second))
    if baseline:
        assert second != first


def test_original_config_is_the_study_on_each_profiles_detector():
    sizes = {}
    for profile in spaces.PROFILES:
        original = original_config(profile)
        assert "epochs" not in original  # the search's per-trial budget sets epochs
        TrainConfig.from_dict(original)
        sizes[profile] = (original["model_scale"], original["img_size"])
    # the original study's YOLOv5s at 640 px; on a CPU the closest detector that trains in minutes, at 160 px
    assert sizes == {"full": ("s", 640), "quick": ("n", 160), "quick-all": ("n", 160)}


# The categorical choices that studies already on disk (results/<name>/optuna.db) hold, written out as literals on
# purpose. The spaces import their choices from the engine's vocabularies; Optuna refuses to continue a study
# whose categorical choices changed (CategoricalDistribution has no dynamic value space; the order counts too), so
# a value added to, removed from or reordered in a vocabulary would make every stored study unresumable. This is
# not an agreement check between copies (there is one copy); it guards stored studies. Change it only together
# with a decision about the old studies (keep the space's choices as they were, or migrate).
STORED_CHOICES = {
    "arch": ("shared", "dual"),
    "head": ("anchor", "anchorfree"),
    "view_level": ("P3", "P4", "P5", "backbone"),
    "balance": ("fixed", "uncertainty"),
    "optimizer": ("sgd", "adamw"),
    "loss_box": ("giou", "diou", "ciou"),
    "loss_obj": ("bce", "focal", "varifocal"),
    "loss_cls": ("bce", "focal", "varifocal"),
    "loss_view": ("ce", "label_smoothing", "focal", "class_balanced"),
}
STORED_PROFILE_CHOICES = {
    "quick": {
        "model_scale": ("test", "n"),
        "aug_policy": ("none", "medical"),
        "classifier": ("resnet10t", "mobilenetv3_small_050", "mobilenetv3_large_100", "efficientnet_b0"),
    },
    "full": {
        "model_scale": ("n", "s", "m", "l"),
        "aug_policy": ("none", "medical", "medical+flip"),
        "classifier": (
            "resnet18",
            "resnet34",
            "resnet50",
            "efficientnet_b0",
            "efficientnet_b1",
            "efficientnet_b2",
            "convnext_tiny",
            "mobilenetv3_large_100",
        ),
    },
}
STORED_PROFILE_CHOICES["quick-all"] = STORED_PROFILE_CHOICES["quick"]


@pytest.mark.parametrize("profile", spaces.PROFILES)
def test_categorical_choices_are_those_stored_studies_hold(profile):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    choices = {}
    for _ in range(40):  # enough to open both branches of `all` and every conditional parameter
        trial = study.ask()
        spaces.get_space("all").define(trial, profile)
        choices.update(
            {
                p: d.choices
                for p, d in trial.distributions.items()
                if isinstance(d, optuna.distributions.CategoricalDistribution)
            }
        )
    searched = spaces.get_profile(profile).searched
    stored = {**STORED_CHOICES, **STORED_PROFILE_CHOICES[profile]}
    assert choices == {p: c for p, c in stored.items() if searched is None or p in searched}


def test_a_profile_offering_a_value_the_engine_refuses_fails_when_defined():
    quick = spaces.get_profile("quick")
    with pytest.raises(ValueError, match=r"unknown scales \['xl'\]; valid: test, n, s, m, l"):
        dataclasses.replace(quick, scales=("n", "xl"))
    with pytest.raises(ValueError, match=r"unknown aug_policies \['mosaic'\]"):
        dataclasses.replace(quick, aug_policies=("none", "mosaic"))
    with pytest.raises(ValueError, match="baseline's scale and classifier must be among its choices"):
        dataclasses.replace(quick, scales=("test",))


def test_profile_classifiers_exist_and_quick_ones_build_fast_at_160px():
    import timm
    import torch

    for profile in map(spaces.get_profile, spaces.PROFILES):
        assert [c for c in profile.classifiers if not timm.is_model(c)] == []
    for name in spaces.get_profile("quick").classifiers:
        start = time.perf_counter()
        model = timm.create_model(name, pretrained=False, num_classes=3).eval()
        assert time.perf_counter() - start < 1.0, name
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 160, 160)).shape == (1, 3)


def test_stage_split_from_two_fractions():
    assert split_from_fractions(0.3, 0.5) == (0.3, 0.5, 0.2)
    s1, s2, s3 = split_from_fractions(0.5, 0.7)  # past the floor: both shrink, ratio kept
    assert s3 == STAGE3_FLOOR == 0.05 and abs(s1 + s2 + s3 - 1) < 1e-3 and abs(s1 / s2 - 0.5 / 0.7) < 1e-3
    for split in [(0.3, 0.5, 0.2), (0.1, 0.2, 0.7), (0.25, 0.6, 0.15)]:
        f = fractions_from_split(split)
        assert split_from_fractions(f["stage1_frac"], f["stage2_frac"]) == pytest.approx(split, abs=1e-4)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid spaces: all, baseline, dual_backbone, gradnorm"):
        spaces.get_space("nope")
    with pytest.raises(ValueError, match="valid profiles: quick, quick-all, full"):
        spaces.get_profile("gpu")
    with pytest.raises(ValueError, match="valid profiles: quick, quick-all, full"):
        spaces.get_space("gradnorm").baseline("gpu")
    with pytest.raises(ValueError, match="valid spaces"):
        spaces.describe_space("nope")
    with pytest.raises(ValueError, match="already registered"):
        spaces.register_space("gradnorm", baseline_config=original_config)(lambda trial, profile: {})


@pytest.mark.parametrize("name", SPACES)
def test_docstrings_and_describe_cover_every_parameter(name):
    docs = spaces.get_space(name).doc
    if name == "all":  # documents its branches by reference
        docs += spaces.get_space("gradnorm").doc + spaces.get_space("dual_backbone").doc
    for profile in spaces.PROFILES:
        table = spaces.parameter_table(name, profile)
        text = spaces.describe_space(name, profile)
        for param in table:
            base, digit = re.match(r"(.*?)(\d?)$", param).groups()
            assert re.search(re.escape(base) + (r"[\d/]*" + digit if digit else ""), docs), param
            assert param in text
    table = spaces.parameter_table(name, "full")
    if name == "baseline":
        assert table == {} and "(none" in spaces.describe_space(name)
    else:
        assert table["focal_gamma"] == ("float [1, 3]", True) and table["loss_obj"][1] is True  # anchor head only
        assert table["head"] == ("{anchor, anchorfree}", False)
        assert table["aug_policy"] == ("{none, medical, medical+flip}", False)


def test_a_focused_profile_searches_its_parameters_and_fixes_the_rest_at_the_baseline():
    """The quick profile's mechanism, on a chosen subset: only the listed parameters reach Optuna; every other
    one is a constant at the original recipe's value, and conditions still follow the fixed values."""
    focused = dataclasses.replace(
        spaces.get_profile("quick-all"),
        name="focused",
        searched=("lr_stage1", "mixup_alpha", "loss_obj", "focal_gamma", "model_scale"),
    )
    space = spaces.get_space("gradnorm")
    original = original_config("quick-all")
    seen_focal = set()
    for seed in range(12):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        trial = study.ask()
        constants = space.define(trial, focused)
        assert set(trial.params) <= set(focused.searched)
        assert {"lr_stage1", "mixup_alpha", "loss_obj", "model_scale"} <= set(trial.params)
        config = spaces.to_train_config({**trial.params, **constants})
        for key in ("lr_stage2", "gn_alpha", "optimizer", "aug_policy", "loss_box", "stage_split", "view_level"):
            assert config[key] == original[key], key  # fixed at the baseline
        assert config["aug_strength_stage1"] == 0.0  # aug_policy fixed at none: its strengths stay off
        focal = trial.params["loss_obj"] in FOCAL_LOSSES
        seen_focal.add(focal)
        assert ("focal_gamma" in trial.params) == focal  # a searched child follows its (searched) switch
        TrainConfig.from_dict(config)
    assert seen_focal == {True, False}
    # the baseline point holds only the searched parameters, and with the fixed rest is the original recipe
    point = space.baseline(focused)
    assert point == {"model_scale": "n", "lr_stage1": 1e-2, "loss_obj": "bce", "mixup_alpha": 0.0}
    study = optuna.create_study()
    study.enqueue_trial(point)
    trial = study.ask()
    assert spaces.to_train_config({**point, **space.define(trial, focused)}) == original


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_recipe_point_is_the_baseline_with_the_detector_recipe_where_searched(name, profile):
    from echotune.spaces.original import DETECTOR_RECIPE

    space = spaces.get_space(name)
    point, baseline = space.recipe(profile), space.baseline(profile)
    # the same parameters, less the anchor head's objectness loss where the recipe switches to the anchor-free head
    assert set(point) == set(baseline) - ({"loss_obj"} if point.get("head") == "anchorfree" else set())
    for key, value in point.items():
        assert value == DETECTOR_RECIPE.get(key, baseline[key]), key
    if name in ("gradnorm", "all"):  # the quick profile searches the head, the optimizer and the floor
        assert (point["head"], point["optimizer"], point["gn_min_weight"]) == ("anchorfree", "adamw", 0.5)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside every distribution
        study.enqueue_trial(point)
        trial = study.ask()
        space.define(trial, profile)
    assert trial.params == point
