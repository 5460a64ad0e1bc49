"""Search building blocks without a Ray cluster: Optuna trial states, equal-epoch rungs, the baseline's
exemption from early stopping, resume of rungs."""

from __future__ import annotations

import json

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from echotune.engine.config import TrainConfig
from echotune.engine.schedule import plan_stages
from echotune.search.optuna_bridge import best_epoch_attrs, final_state
from echotune.search.scheduler import STOPPED_FILE, EpochASHA
from echotune.spaces.common import split_from_fractions

EPOCHS = 12  # run.py's default --max-epochs


def test_best_epoch_attrs_are_the_validation_metrics_of_a_best_epoch_only():
    result = {
        "epoch": 3,
        "val/score": 0.4,
        "val/best_score": 0.4,
        "val/map50": 0.3,
        "val/view_kappa": 0.5,
        "val/f1": float("nan"),
        "train/loss": 1.0,
        "val/flag": True,
    }
    assert best_epoch_attrs(result) == {"val/score": 0.4, "val/map50": 0.3, "val/view_kappa": 0.5, "best_epoch": 3}
    assert best_epoch_attrs({**result, "val/score": 0.35}) == {}  # not the best epoch: the attributes stay
    assert best_epoch_attrs({**result, "diverged": 1.0}) == {}
    assert best_epoch_attrs({"epoch": 1}) == {}


def test_final_states():
    S = optuna.trial.TrialState
    assert final_state({"epoch": 8, "epochs_planned": 8}, error=False) == S.COMPLETE
    assert final_state({"epoch": 3, "epochs_planned": 8}, error=False) == S.PRUNED
    assert final_state({"epoch": 3, "epochs_planned": 8, "diverged": 1.0}, error=False) == S.FAIL
    assert final_state({"epoch": 8, "epochs_planned": 8}, error=True) == S.FAIL
    assert final_state(None, error=False) == S.PRUNED


def _trial(trial_id: str, stage1_frac: float, stage2_frac: float = 0.3) -> Trial:
    """A Ray Trial as the searcher would create it, config as the space builds it (split from the fractions)."""
    config = {
        "stage1_frac": stage1_frac,
        "stage2_frac": stage2_frac,
        "epochs": EPOCHS,
        "stage_split": split_from_fractions(stage1_frac, stage2_frac),
    }
    return Trial("__fake", config=config, trial_id=trial_id, stub=True)


def _stage(trial: Trial, epoch: int) -> int:
    """The stage `epoch` (1-based) belongs to in the trial's schedule."""
    cfg = TrainConfig(epochs=EPOCHS, stage_split=trial.config["stage_split"])
    return next(s.index for s in plan_stages(cfg) if s.start_epoch < epoch <= s.end_epoch)


def _results(trial: Trial, epoch: int) -> dict:
    """One epoch's report as the trainable sends it (plus the old axis, stages finished, for the contrast).
    The score rises with training and jumps when stage 2 lowers the lr: a trial whose stage 1 ends early looks
    better early, with no bearing on how good it ends."""
    cfg = TrainConfig(epochs=EPOCHS, stage_split=trial.config["stage_split"])
    stages_done = sum(stage.end_epoch <= epoch for stage in plan_stages(cfg))
    return {
        "epoch": epoch,
        "stages_done": stages_done,
        "stage": _stage(trial, epoch),
        "val/score": 0.02 * epoch + 0.1 * (_stage(trial, epoch) > 1) + 0.001 * int(trial.trial_id[1:]),
    }


def _drive(scheduler, trials: list[Trial]) -> tuple[dict[str, dict[float, int]], dict[str, int]]:
    """Drive `scheduler` epoch by epoch, all trials in turn, as Ray would. Returns, per trial, the epoch at which
    its score entered each rung, and the last epoch it trained (a stopped trial reports no more)."""
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    rungs = scheduler._brackets[0]._rungs
    entered: dict[str, dict[float, int]] = {t.trial_id: {} for t in trials}
    trained = dict.fromkeys(entered, 0)
    running = list(trials)
    for epoch in range(1, EPOCHS + 1):
        for trial in list(running):
            action = scheduler.on_trial_result(None, trial, _results(trial, epoch))
            trained[trial.trial_id] = epoch
            for milestone, recorded in rungs:
                if trial.trial_id in recorded:
                    entered[trial.trial_id].setdefault(milestone, epoch)
            if action == TrialScheduler.STOP:
                running.remove(trial)
    return entered, trained


def test_rungs_sit_at_fixed_epochs_from_a_quarter_of_the_budget(tmp_path):
    assert EpochASHA("val/score", "max", tmp_path, max_epochs=12).rung_milestones() == [3, 6]
    assert EpochASHA("val/score", "max", tmp_path, max_epochs=4).rung_milestones() == [1, 2]
    assert EpochASHA("val/score", "max", tmp_path, max_epochs=20).rung_milestones() == [5, 10]


def test_every_rung_compares_trials_after_the_same_epochs_whatever_their_stage_split(tmp_path):
    # stage 1 of 1, 2, 4 and 6 epochs of 12: the extremes of stage1_frac in [0.1, 0.5]
    trials = [_trial(f"t{i}", frac) for i, frac in enumerate((0.1, 0.2, 0.35, 0.5))]
    stage1_ends = {
        plan_stages(TrainConfig(epochs=EPOCHS, stage_split=t.config["stage_split"]))[0].end_epoch for t in trials
    }
    assert stage1_ends == {1, 2, 4, 6}
    entered, _ = _drive(EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS), trials)
    for milestone in (3, 6):
        epochs = {rungs[milestone] for rungs in entered.values() if milestone in rungs}
        assert epochs == {milestone}, (milestone, entered)
    assert all(3 in rungs for rungs in entered.values())  # every trial was judged at the first rung
    # The old axis (stages done, rungs at stage ends) on the same reports compares unequal training: this
    # harness would catch it.
    old = AsyncHyperBandScheduler(
        time_attr="stages_done", metric="val/score", mode="max", grace_period=1, max_t=3, reduction_factor=2
    )
    old_entered, _ = _drive(old, trials)
    assert {rungs[1] for rungs in old_entered.values() if 1 in rungs} == stage1_ends


def test_the_baseline_is_never_stopped_even_when_worst_at_every_rung(tmp_path):
    # same split for all; the baseline t0 scores lowest (trial-id bonus) and Ray hands its reports in last
    baseline, *others = [_trial(f"t{i}", 0.3) for i in range(4)]
    for i, trial in enumerate([baseline, *others]):
        trial.config["gn_alpha"] = 1.5 + i
    point = {"gn_alpha": 1.5, "stage1_frac": 0.3}  # the space's baseline point
    trials = [*others, baseline]
    entered, trained = _drive(EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS, baseline=point), trials)
    assert trained["t0"] == EPOCHS
    assert set(entered["t0"]) == {3, 6}  # still the reference in every rung
    # without the baseline point the same trial is stopped at the first rung: the exemption is what keeps it
    entered, trained = _drive(EpochASHA("val/score", "max", tmp_path / "control", max_epochs=EPOCHS), trials)
    assert trained["t0"] == 3 and set(entered["t0"]) == {3}


def test_a_protected_point_such_as_the_recipe_trains_in_full_too(tmp_path):
    # t0 (the baseline) and t1 (the recipe point) score lowest; both train every epoch, t2 and t3 compete
    trials = [_trial(f"t{i}", 0.3) for i in range(4)]
    for i, trial in enumerate(trials):
        trial.config["gn_alpha"] = 1.5 + i
    baseline, recipe = {"gn_alpha": 1.5}, {"gn_alpha": 2.5}
    entered, trained = _drive(
        EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS, baseline=baseline, protected=(recipe,)), trials[::-1]
    )
    assert trained["t0"] == trained["t1"] == EPOCHS
    _, unprotected = _drive(
        EpochASHA("val/score", "max", tmp_path / "control", max_epochs=EPOCHS, baseline=baseline), trials[::-1]
    )
    assert unprotected["t1"] < EPOCHS  # the control: without the protection ASHA stops it


def test_rungs_are_rebuilt_from_result_files_on_the_epoch_axis(tmp_path):
    """As after Tuner.restore: a fresh scheduler reads every trial's result.json before its first decision."""
    for trial_id, scores in {"a": [0.1, 0.2, 0.5, 0.5, 0.5, 0.6], "b": [0.1, 0.1, 0.2, 0.3]}.items():
        lines = [json.dumps({"trial_id": trial_id, "epoch": i + 1, "val/score": s}) for i, s in enumerate(scores)]
        (tmp_path / f"trial_{trial_id}").mkdir()
        (tmp_path / f"trial_{trial_id}" / "result.json").write_text("\n".join(lines) + "\n{cut by a cra")
    scheduler = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS, baseline={"gn_alpha": 1.5})
    assert scheduler.rebuild_rungs() == 3
    rungs = dict(scheduler._brackets[0]._rungs)
    assert rungs[3] == {"a": 0.5, "b": 0.2} and rungs[6] == {"a": 0.6}  # the scores at epochs 3 and 6
    # the first decision after a resume uses them: at epoch 3 a weak newcomer is stopped, the baseline is not
    scheduler = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS, baseline={"gn_alpha": 1.5})
    newcomer, baseline = _trial("c", 0.3), _trial("d", 0.3)
    newcomer.config["gn_alpha"], baseline.config["gn_alpha"] = 0.7, 1.5
    for trial in (newcomer, baseline):
        scheduler.on_trial_add(None, trial)
        assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val/score": 0.1}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, newcomer, {"epoch": 3, "val/score": 0.1}) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, baseline, {"epoch": 3, "val/score": 0.1}) == TrialScheduler.CONTINUE


def test_a_stop_decided_before_a_driver_crash_is_kept_after_the_resume(tmp_path):
    """The driver dies after ASHA stopped a trial (Optuna already holds it as PRUNED) but before Ray's state
    recorded the stop: Ray resumes the trial. The restored scheduler must stop it at its first result, not let
    it train on because its rung entry (rebuilt from result.json) means it is never judged again."""
    first = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS)
    strong, weak = _trial("a", 0.3), _trial("b", 0.3)
    for trial in (strong, weak):
        first.on_trial_add(None, trial)
    assert first.on_trial_result(None, strong, {"epoch": 3, "val/score": 0.9}) == TrialScheduler.CONTINUE
    assert first.on_trial_result(None, weak, {"epoch": 3, "val/score": 0.1}) == TrialScheduler.STOP
    assert json.loads((tmp_path / STOPPED_FILE).read_text()) == {"b": 3}
    for trial_id, score in (("a", 0.9), ("b", 0.1)):  # what the trials' result files hold at the crash
        (tmp_path / f"trial_{trial_id}").mkdir()
        (tmp_path / f"trial_{trial_id}" / "result.json").write_text(
            "".join(json.dumps({"trial_id": trial_id, "epoch": e, "val/score": score}) + "\n" for e in (1, 2, 3))
        )
    restored = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS)  # as Tuner.restore gives it back
    for trial in (strong, weak):
        restored.on_trial_add(None, trial)
    assert restored.on_trial_result(None, weak, {"epoch": 4, "val/score": 0.1}) == TrialScheduler.STOP
    assert restored.on_trial_result(None, strong, {"epoch": 4, "val/score": 0.9}) == TrialScheduler.CONTINUE
    # control: without the kept decision, the rebuilt rung would let the weak trial train to the end
    (tmp_path / STOPPED_FILE).unlink()
    unaware = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS)
    unaware.on_trial_add(None, weak)
    assert unaware.on_trial_result(None, weak, {"epoch": 4, "val/score": 0.1}) == TrialScheduler.CONTINUE


def test_the_end_of_the_budget_is_not_recorded_as_an_early_stop(tmp_path):
    """Ray's ASHA answers STOP at max_t, where every trial ends anyway: that is no pruning decision, and a trial
    whose last epoch was reported just before a driver crash must not come back as stopped early."""
    scheduler = EpochASHA("val/score", "max", tmp_path, max_epochs=EPOCHS)
    trial = _trial("a", 0.3)
    scheduler.on_trial_add(None, trial)
    for epoch in range(1, EPOCHS + 1):
        action = scheduler.on_trial_result(None, trial, {"epoch": epoch, "val/score": 0.5})
    assert action == TrialScheduler.STOP  # Ray's own end of the trial
    assert not (tmp_path / STOPPED_FILE).exists()


def test_stop_decisions_go_to_the_staging_folder_ray_uploads_and_come_back_from_it(tmp_path):
    """Ray uploads the driver's staging folder over the experiment folder, and on a resume first downloads every
    .json of the experiment into it: a decision written only into the experiment folder after a resume would be
    overwritten by that stale copy, one written only into staging lost by a kill before Ray's next sync. The
    scheduler writes both and merges both when it reads them back."""
    staging, experiment = tmp_path / "staging", tmp_path / "experiment"
    staging.mkdir()
    experiment.mkdir()

    class StagedTrial(Trial):
        local_experiment_path = property(lambda self: str(staging))

    def trial(trial_id):
        return StagedTrial("__fake", config=_trial(trial_id, 0.3).config, trial_id=trial_id, stub=True)

    scheduler = EpochASHA("val/score", "max", experiment, max_epochs=EPOCHS)
    strong, weak = trial("a"), trial("b")
    for t in (strong, weak):
        scheduler.on_trial_add(None, t)
    scheduler.on_trial_result(None, strong, {"epoch": 3, "val/score": 0.9})
    assert scheduler.on_trial_result(None, weak, {"epoch": 3, "val/score": 0.1}) == TrialScheduler.STOP
    assert json.loads((staging / STOPPED_FILE).read_text()) == {"b": 3}
    assert json.loads((experiment / STOPPED_FILE).read_text()) == {"b": 3}  # at once, before Ray's next sync
    # after a resume: Ray's stale copy (downloaded into staging) lacks a decision the experiment folder has, and
    # the next decision must reach both (else Ray's upload would overwrite the experiment folder's copy)
    (staging / STOPPED_FILE).write_text(json.dumps({}))
    restored = EpochASHA("val/score", "max", experiment, max_epochs=EPOCHS)
    other = trial("c")
    for t in (strong, weak, other):
        restored.on_trial_add(None, t)
    assert restored.on_trial_result(None, weak, {"epoch": 4, "val/score": 0.1}) == TrialScheduler.STOP
    restored.on_trial_result(None, strong, {"epoch": 3, "val/score": 0.9})  # (no result.json here to rebuild from)
    assert restored.on_trial_result(None, other, {"epoch": 3, "val/score": 0.0}) == TrialScheduler.STOP
    for folder in (staging, experiment):
        assert json.loads((folder / STOPPED_FILE).read_text()) == {"b": 3, "c": 3}
