"""Population-based training (`--scheduler pbt`, search/pbt.py): where and what it perturbs, the engine's resume
from another member's checkpoint, the lineage parser, and one real search (4 members x 6 epochs, perturbing every
2 epochs) whose driver is SIGKILLed after the first perturbation and resumed."""

from __future__ import annotations

import json
import math
import random

import pyarrow.parquet as pq
import pytest

from echotune.engine import TrainConfig, fit
from echotune.engine.checkpoint import check_compatible, load_checkpoint
from echotune.engine.config import MUTABLE_KEYS
from echotune.engine.schedule import lr_at, plan_stages
from echotune.reporting.lineage import PolicyLine, member_schedule, read_lineage, read_policy, weight_chain
from echotune.search.pbt import (
    StayInSpace,
    checkpoints_to_keep,
    hyperparam_mutations,
    initial_population,
    mutation_ranges,
    pbt_stage_split,
    perturbation_epochs,
)
from echotune.search.search_config import SearchConfig
from echotune.spaces import get_space, parameter_ranges, to_train_config
from tests.conftest import TINY_TRAIN
from tests.reliability.faults import SearchProcess, run_cli, search_argv, trial_results, wait_for

MEMBERS, EPOCHS, INTERVAL = 4, 6, 2


def pbt_config(**overrides) -> SearchConfig:
    values = dict(
        space="gradnorm",
        name="pbt",
        num_samples=MEMBERS,
        max_epochs=EPOCHS,
        img_size=64,
        scheduler="pbt",
        pbt_interval=INTERVAL,
        seed=0,
    )
    return SearchConfig(**{**values, **overrides})


# ---------------------------------------------------------------- where and what PBT perturbs (no Ray run)


def test_perturbation_epochs_are_the_stage_ends_or_every_n_epochs_never_the_last():
    assert perturbation_epochs(12, None, (0.3, 0.5, 0.2)) == [4, 10]  # stage 1 ends after 4, stage 2 after 10
    assert perturbation_epochs(12, 2, (0.3, 0.5, 0.2)) == [2, 4, 6, 8, 10]
    assert perturbation_epochs(6, 2, (0.3, 0.5, 0.2)) == [2, 4]
    assert perturbation_epochs(3, None, (0.3, 0.5, 0.2)) == [1, 2]
    assert perturbation_epochs(4, 4, (0.3, 0.5, 0.2)) == []
    # a donor's checkpoint at 4 must outlive its 6 reports up to the next perturbation epoch (10)
    assert checkpoints_to_keep([4, 10], 12) == 7 and checkpoints_to_keep([2, 4], 6) == 3


def test_the_population_is_the_baseline_and_space_samples_all_on_one_stage_split():
    cfg = pbt_config()
    population = initial_population(cfg)
    assert len(population) == MEMBERS
    baseline = get_space("gradnorm").baseline("quick")
    assert all(population[0][k] == v for k, v in baseline.items() if k not in ("stage1_frac", "stage2_frac"))
    assert len({json.dumps(m, sort_keys=True, default=str) for m in population}) == MEMBERS
    assert len({frozenset(m) for m in population}) == 1  # the same keys (Ray resolves points against them)
    split = pbt_stage_split(cfg)
    assert split == (0.3, 0.5, 0.2)
    for member in population:
        assert (member["stage_split"], member["epochs"], member["img_size"]) == (split, EPOCHS, 64)
        assert (member["stage1_frac"], member["stage2_frac"]) == pytest.approx((0.3, 0.5))
        TrainConfig.from_dict(to_train_config(member))  # a valid training config


def test_mutations_use_the_space_ranges_and_stay_inside_them():
    cfg = pbt_config()
    ranges = mutation_ranges(cfg)
    space_ranges = parameter_ranges("gradnorm", "quick")
    assert set(ranges) == set(MUTABLE_KEYS) and all(ranges[k] == space_ranges[k] for k in ranges)
    assert ranges["lr_stage1"].log and not ranges["mixup_alpha"].log
    explore = StayInSpace("gradnorm", "quick", ranges)
    member = initial_population(cfg)[1]
    high = explore({**member, "aug_policy": "medical", "lr_stage2": 1.0, "aug_strength_stage3": 0.9})
    assert high["lr_stage2"] == ranges["lr_stage2"].high
    assert high["aug_strength_stage3"] == ranges["aug_strength_stage3"].high
    off = explore({**member, "aug_policy": "none", "aug_strength_stage2": 0.7})  # the space's constants win
    assert off["aug_strength_stage1"] == off["aug_strength_stage2"] == off["aug_strength_stage3"] == 0.0
    # Ray's own explore step (what PBT runs at each clone), many times: every value inside the space's range
    from ray.tune.schedulers.pbt import _explore

    random.seed(0)
    mutations = hyperparam_mutations(ranges)
    for donor in initial_population(cfg) * 25:
        new, _ = _explore(donor, mutations, 0.25, (1.2, 0.8), explore)
        assert all(ranges[k].low <= new[k] <= ranges[k].high for k in ranges)
        TrainConfig.from_dict(to_train_config(new))
    with pytest.raises(ValueError, match="searches none"):
        mutation_ranges(pbt_config(space="baseline"))


def test_the_search_seed_fixes_the_perturbations():
    """Ray's explore draws from the driver's global generators; the scheduler seeds them with the search's seed."""
    from ray.tune.schedulers.pbt import _explore

    from echotune.search.pbt import build_pbt_scheduler

    def perturbed(seed: int) -> list[dict]:
        scheduler = build_pbt_scheduler(pbt_config(seed=seed))
        donors = initial_population(pbt_config(seed=0))
        return [
            _explore(d, scheduler._hyperparam_mutations, 0.5, (1.2, 0.8), scheduler._custom_explore_fn)[0]
            for d in donors * 3
        ]

    assert perturbed(3) == perturbed(3)
    assert perturbed(3) != perturbed(4)


def test_several_objectives_are_refused():
    from echotune.search.pbt import build_pbt_scheduler

    with pytest.raises(ValueError, match="one number"):
        build_pbt_scheduler(pbt_config(objectives=["map50", "view_acc"]))


# ---------------------------------------------------------------- the engine continues another member's run


def test_a_resume_may_change_only_the_schedule_and_runtime_keys():
    saved = {**TrainConfig().to_dict(), "nc": 4, "n_views": 3}
    state = {"config": saved}
    mutated = {
        **saved,
        "lr_stage2": 0.005,
        "aug_strength_stage1": 0.9,
        "mixup_alpha": 0.4,
        "label_smoothing_stage3": 0,
        "cpus": 4,
        "device": "cuda",
        "stage_split": list(saved["stage_split"]),
    }  # a split read from JSON
    check_compatible(state, mutated, "c.pt", strict=True)
    for key, value in (("loss_box", "giou"), ("epochs", 20), ("weight_decay", 0.1), ("model_scale", "s")):
        with pytest.raises(ValueError, match=f"{key}: checkpoint"):
            check_compatible(state, {**saved, key: value}, "c.pt", strict=True)
    check_compatible(state, {**saved, "epochs": 20}, "c.pt")  # not strict (train.py --resume): the shape only


def test_a_clone_continues_the_donor_weights_with_its_new_schedule_from_the_next_epoch(tiny_synthetic, tmp_path):
    """What PBT's exploit asks of the engine: the donor's last.pt after 2 of 4 epochs, resumed under a config whose
    stage-2/3 values differ. Epochs continue at 3; lr, augmentation, label smoothing and mixup are the new ones."""
    donor = {**TINY_TRAIN, "epochs": 4}
    with pytest.raises(_Stop):  # the donor, stopped after its second epoch's checkpoint (PBT's sync epoch)
        fit(donor, tiny_synthetic, out_dir=tmp_path / "donor", log=lambda _: None, report=_stop_after(2))
    reports = []
    saved = load_checkpoint(tmp_path / "donor" / "last.pt")
    assert saved["epoch"] == 2
    clone = {
        **donor,
        "lr_stage2": 0.004,
        "aug_strength_stage2": 0.9,
        "lr_stage3": 2e-4,
        "label_smoothing_stage3": 0.05,
        "mixup_alpha": 0.6,
    }
    fit(
        clone,
        tiny_synthetic,
        out_dir=tmp_path / "clone",
        resume_from=tmp_path / "donor" / "last.pt",
        log=lambda _: None,
        report=lambda m, _: reports.append(m),
    )
    assert [m["epoch"] for m in reports] == [3, 4]
    stages = plan_stages(TrainConfig.from_dict(clone))
    steps = math.ceil(len(tiny_synthetic.samples["train"]) / clone["batch_size"])
    for metrics in reports:
        stage = stages[metrics["stage"] - 1]
        into = metrics["epoch"] - 1 - stage.start_epoch + (steps - 1) / steps  # the epoch's last step
        assert metrics["lr"] == pytest.approx(lr_at(stage, into))
    assert (reports[0]["stage"], reports[0]["stage/aug_strength"]) == (2, 0.9)
    assert (reports[1]["stage"], reports[1]["stage/label_smoothing"], reports[1]["stage/mixup_alpha"]) == (3, 0.05, 0.6)
    resumed = load_checkpoint(tmp_path / "clone" / "last.pt")
    assert [m["epoch"] for m in resumed["history"]] == [1, 2, 3, 4]  # the donor's first two epochs, then the clone's
    assert resumed["history"][:2] == saved["history"]
    assert resumed["config"]["lr_stage2"] == 0.004


class _Stop(Exception):
    pass


def _stop_after(epochs: int):
    def report(metrics, _):
        if metrics["epoch"] == epochs:
            raise _Stop

    return report


# ---------------------------------------------------------------- lineage parser (a hand-written policy file)


def _line(member, donor, epoch, donor_config, new_config) -> str:
    return json.dumps([member, donor, epoch, epoch, donor_config, new_config]) + "\n"


def _config(lr1, lr2, lr3, mixup=0.0) -> dict:
    return {
        "lr_stage1": lr1,
        "lr_stage2": lr2,
        "lr_stage3": lr3,
        "aug_strength_stage1": 0.0,
        "aug_strength_stage2": 0.0,
        "aug_strength_stage3": 0.0,
        "label_smoothing_stage3": 0.1,
        "mixup_alpha": mixup,
        "epochs": 6,
        "stage_split": [0.3, 0.5, 0.2],
    }


def test_lineage_follows_the_weights_through_the_policy_files(tmp_path):
    """Members t0..t3 (tags "0".."3"). At epoch 2 t1 clones t3; at epoch 4 t2 clones t1 (so t2's file is t1's
    chain plus its line) and t1 clones t0 (t0 had no file: t1's own old line stays in its file, not in its chain)."""
    c0, c3 = _config(1e-2, 1e-3, 1e-4), _config(4e-3, 2e-4, 3e-5, 0.5)
    c1 = _config(5e-3, 1e-4, 2e-5, 0.4)  # t3's, mutated at epoch 2
    c2 = _config(5e-3, 1.2e-4, 1e-5, 0.3)  # t1's (c1), mutated at epoch 4
    c1b = _config(8e-3, 9e-4, 9e-5, 0.1)  # t0's, mutated at epoch 4
    (tmp_path / "pbt_global.txt").write_text(
        _line("1", "3", 2, c3, c1) + _line("2", "1", 4, c1, c2) + _line("1", "0", 4, c0, c1b)
    )
    (tmp_path / "pbt_policy_t1.txt").write_text(_line("1", "3", 2, c3, c1) + _line("1", "0", 4, c0, c1b))
    (tmp_path / "pbt_policy_t2.txt").write_text(_line("1", "3", 2, c3, c1) + _line("2", "1", 4, c1, c2))
    assert [line.member_tag for line in weight_chain(read_policy(tmp_path / "pbt_policy_t1.txt"))] == ["1"]
    assert [line.member_tag for line in weight_chain(read_policy(tmp_path / "pbt_policy_t2.txt"))] == ["1", "2"]
    trials = {
        "t0": ("0", c0),
        "t1": ("1@perturbed[lr_stage1=0.008]", c1b),
        "t2": ("2@perturbed[x]", c2),
        "t3": ("3", c3),
    }
    lineage = read_lineage(tmp_path, trials)
    assert lineage["t1"].text == "e2←t3; e4←t0" and lineage["t2"].text == "e4←t1"
    assert lineage["t0"].text == lineage["t3"].text == ""
    # 6 epochs at 30/50/20: stages end after epochs 2, 5 and 6. t2's weights: t3's config up to epoch 2 (stage 1),
    # then c1 (t1's) for epochs 3-4, then c2 from epoch 5 on: stage 2 ended under c2, as did stage 3.
    assert lineage["t2"].schedule["stage1"]["lr_stage1"] == 4e-3
    assert lineage["t2"].schedule["stage2"]["lr_stage2"] == 1.2e-4
    assert lineage["t2"].schedule["stage3"] == {k: c2[k] for k in lineage["t2"].schedule["stage3"]}
    # t1: t0's weights up to epoch 4 (stage 1 under c0), then c1b
    assert lineage["t1"].schedule["stage1"]["lr_stage1"] == 1e-2
    assert lineage["t1"].schedule["stage2"]["lr_stage2"] == 9e-4
    assert lineage["t3"].schedule["stage2"]["lr_stage2"] == 2e-4  # never cloned into: its own config
    (tmp_path / "pbt_global.txt").write_text(_line("1", "3", 2, c3, c1) + '["2", "1", 4')  # cut by a crash
    assert len(read_policy(tmp_path / "pbt_global.txt")) == 1


# ---------------------------------------------------------------- one real search, its driver killed and resumed


def _global_lines(experiment) -> list[list]:
    path = experiment / "pbt_global.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.ray
@pytest.mark.slow
def test_pbt_search_exploits_continues_and_survives_a_driver_kill(tiny_synthetic, tmp_path):
    name = "pbt"
    experiment = tmp_path / "results" / name
    pbt = ("--scheduler", "pbt", "--pbt-interval", INTERVAL, "--num-samples", MEMBERS, "--max-epochs", EPOCHS)
    args = search_argv(tiny_synthetic.config.yaml_path, tmp_path, name, *pbt)
    search = SearchProcess(args, tmp_path / "search.log")
    try:

        def first_perturbation_synced():
            synced = experiment / "pbt_synced.json"
            return synced.is_file() and json.loads(synced.read_text())[:1] == [INTERVAL]

        wait_for(first_perturbation_synced, 240, search, "the first perturbation")
        search.kill_driver()
        before = trial_results(experiment)
        assert all(rows[-1]["epoch"] < EPOCHS for rows in before.values()), "killed too late to test the resume"
        rc = run_cli(["--storage", str(tmp_path / "results"), "--name", name, "--resume"], tmp_path / "resume.log", 400)
        assert rc == 0, (tmp_path / "resume.log").read_text()[-4000:]
    finally:
        search.cleanup()

    results = trial_results(experiment)
    rows = {r["trial_id"]: r for r in pq.read_table(experiment / "leaderboard.parquet").to_pylist()}
    assert sorted(rows) == sorted(results) and len(rows) == MEMBERS  # every member exactly once
    assert {(r["status"], r["epochs_trained"]) for r in rows.values()} == {("TERMINATED", EPOCHS)}
    assert json.loads((experiment / "pbt_synced.json").read_text()) == [2, 4]  # the second sync after the resume

    # no member restarted: each run of a member (a resume, a retry, a clone) continues after the epoch it restored
    ranges = mutation_ranges(pbt_config())
    clones = set()
    for trial_id, reports in results.items():
        assert {r["epoch"] for r in reports} == set(range(1, EPOCHS + 1)), trial_id
        for previous, report in zip([None, *reports], reports):
            if (
                previous is None
                or report["restored_from_epoch"] != previous["restored_from_epoch"]
                or report["restored_from_trial"] != previous["restored_from_trial"]
            ):  # a new run starts here
                assert report["epoch"] == report["restored_from_epoch"] + 1, (trial_id, report["epoch"])
            if report["restored_from_trial"] != trial_id:
                clones.add((trial_id, report["restored_from_epoch"], report["restored_from_trial"]))
    assert clones, "no member continued from another member's checkpoint"
    baseline = next(i for i, r in rows.items() if r["is_baseline"])
    assert all(member != baseline for member, _, _ in clones)  # the reference is never cloned into

    # each clone the results show is in pbt_global.txt, at a perturbation epoch, with a mutated config in range
    logged = {}
    for member_tag, donor_tag, epoch, donor_epoch, donor_config, new_config in _global_lines(experiment):
        assert "@" not in member_tag + donor_tag  # members named by their tags at creation, also after a resume
        logged[(member_tag, epoch)] = (donor_tag, donor_config, new_config)
        assert epoch == donor_epoch and epoch in (2, 4)
        changed = [k for k in ranges if new_config[k] != donor_config[k]]
        assert changed and all(ranges[k].low <= new_config[k] <= ranges[k].high for k in ranges)
    by_tag = {str(int(i.rsplit("_", 1)[1])): i for i in rows}  # tags "0".."3": the members' creation order
    for member, epoch, donor in clones:
        member_tag = next(t for t, i in by_tag.items() if i == member)
        donor_tag, _, new_config = logged[(member_tag, epoch)]
        assert by_tag[donor_tag] == donor
        first = next(
            r for r in results[member] if r["restored_from_trial"] == donor and r["restored_from_epoch"] == epoch
        )
        assert {k: first["config"][k] for k in MUTABLE_KEYS} == {k: new_config[k] for k in MUTABLE_KEYS}

    # the leaderboard's lineage columns say what the pbt files say
    for trial_id, row in rows.items():
        tag = next(t for t, i in by_tag.items() if i == trial_id)
        expected = "; ".join(
            f"e{epoch}←{by_tag[donor]}" for member, donor, epoch, *_ in _global_lines(experiment) if member == tag
        )
        assert row["pbt_lineage"] == expected, trial_id
        schedule = json.loads(row["pbt_final_config"])
        final = results[trial_id][-1]["config"]  # stage 3 ends at the last epoch: its values are the final config's
        assert schedule["stage3"] == {k: final[k] for k in schedule["stage3"]}
        assert set(schedule) == {"stage1", "stage2", "stage3"}
    assert "PBT lineage" in (tmp_path / "resume.log").read_text()


def test_the_schedule_follows_what_the_member_reported_over_a_policy_line_a_crash_left_behind():
    """A driver killed after an exploit's policy line was written but before Ray's state snapshot resumes the
    member under its old config: its result.json (the config it reported each epoch) is what it trained with."""
    base = {**TrainConfig(epochs=6, stage_split=(1 / 3, 1 / 3, 1 / 3)).to_dict()}
    old, new = {**base, "lr_stage3": 1e-4, "mixup_alpha": 0.1}, {**base, "lr_stage3": 3e-4, "mixup_alpha": 0.5}
    phantom = weight_chain([PolicyLine("1", "0", 2, 2, old, new)])
    assert member_schedule(phantom, new)["stage3"]["mixup_alpha"] == 0.5  # the policy file alone says: cloned
    reported = {e: old for e in range(1, 7)}  # ... but every epoch was trained under the old config
    assert member_schedule(phantom, new, reported)["stage3"] == {
        k: old[k] for k in ("lr_stage3", "aug_strength_stage3", "label_smoothing_stage3", "mixup_alpha")
    }
