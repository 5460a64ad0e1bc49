"""Population-based training over the three stages (`run.py --scheduler pbt`): Ray Tune's PopulationBasedTraining,
synchronous, perturbing at the stage ends (or every N epochs), mutating only the per-stage schedule.

    scheduler = build_pbt_scheduler(cfg)      # StagePBT: where, what and how PBT perturbs
    searcher, param_space = build_pbt_search(cfg)  # the population: the baseline + samples from the space
    checkpoints = pbt_checkpoint_config(cfg)  # keep what a weaker member may still clone

**Population.** `num_samples` members, all live from the start: Ray time-slices them on the trial resources
(PBT pauses a member at each perturbation epoch), so `--concurrency` does not apply. Ray refuses any searcher
with PBT (PopulationBasedTraining.on_trial_add raises "Search algorithms cannot be used with PBT"), and an
Optuna study could not describe a member whose values change mid-run anyway, so the members come from the
space through an in-memory Optuna study with a random sampler: what the search's TPE does for its first
(startup) trials, with the same constants; the baseline point is member 0. Ray's BasicVariantGenerator then
runs these configurations as they are (`points_to_evaluate`, one per sample).

**When.** Perturbation epochs are the stage ends of one fixed stage split for every member (the space's
baseline split, 30/50/20: the epochs where stage 1 and stage 2 end, 4 and 10 of 12), or every `interval`
epochs (`--pbt-interval N`). A searched stage split would give each member its own boundaries, so members
use the fixed one (their config says so: stage_split and the search-only fractions are set to it). Never at
the last epoch: nothing would train with the new values.

**What.** `MUTABLE_KEYS` (echotune/engine/config.py: per-stage learning rates and augmentation strengths,
stage-3 label smoothing and mixup alpha): the keys the engine reads every epoch, hence take effect from the
next epoch after a clone, and the only training keys a resume may change (the engine refuses any other
difference). Each is mutated within the space's own range (spaces.parameter_ranges: one source), resampled
from it with RESAMPLE_PROBABILITY, else multiplied by 0.8 or 1.2 (Ray's factors) and clipped to it; where the
space makes a key a constant (augmentation policy `none`: strengths 0) the constant wins. A space without
any of these keys has nothing for PBT to do and is refused.

**How (synchronous).** `synch=True`: at each perturbation epoch every member waits until all have reached it,
then the bottom QUANTILE_FRACTION (by the current epoch's `val/score`, PBT_METRIC) clone a top member's
checkpoint and explore. So members are compared after the same number of epochs, as ASHA's rungs do
(scores are compared only at equal budget: more epochs alone raise a score); asynchronous PBT compares a member
with the others' last scores, taken at other epochs. The baseline member is never cloned into: it stays the
original recipe trained for the whole budget, the reference of every gain (it may still be a donor).

**Checkpoints.** Ray deletes checkpoints by its retention rule, which knows nothing of PBT: ordered by score
it deleted a donor's checkpoint before the weaker member restored it (ray-project/ray#9036, #8441), so PBT keeps
the most recent ones, as many as a donor can report before the clone has restored (the longest stretch
between perturbation epochs, or after the last, plus one). A member cloned into drops (and deletes) the
checkpoints of the lineage it leaves, except the latest (a resume from an older snapshot needs it): its best
checkpoint in the leaderboard is then one of its current lineage, whose config the leaderboard shows (the
leaderboard also scores a member on its epochs since its last clone: search/trial_table.py).

**Resume.** `Tuner.restore` gives the scheduler back as it was pickled when the search started, so PBT's
per-member state is empty (as for ASHA, search/scheduler.py) and, left so, members waiting at the sync point
would run past it (or, with Ray's own sync bookkeeping, wait forever: ray-project/ray#48616). StagePBT rebuilds
it: which perturbation epochs were already synced (SYNCED_FILE) and which members wait at the next one (their
last result, restored by Ray). Like Ray's policy files, SYNCED_FILE is written into the driver's staging folder,
which Ray uploads to the experiment folder together with its experiment state, so the record and the trials'
state describe the same moment. On a resume Ray downloads only the .json and .pkl files back into a fresh
staging folder, which it then uploads over the experiment folder: StagePBT copies pbt_global.txt and
pbt_policy_*.txt back first (a local experiment folder), or their pre-crash lines would be lost. Ray's exploit
also changes a member's checkpoint without marking its run metadata for the next experiment snapshot: StagePBT
does, or a resume would pair the clone's config with the member's own weights (the engine refuses that pair).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.utils.util import SafeFallbackEncoder

from echotune.atomic import atomic_write_bytes, atomic_write_text
from echotune.engine.config import MUTABLE_KEYS, TrainConfig
from echotune.engine.schedule import split_epochs
from echotune.metrics import SCORE_METRIC
from echotune.results.layout import PBT_GLOBAL_FILE, PBT_POLICY_FILE
from echotune.results.layout import PBT_PERTURBED_MARK as PERTURBED_MARK
from echotune.results.layout import PBT_SYNCED_FILE as SYNCED_FILE
from echotune.spaces import get_profile, get_space, parameter_ranges
from echotune.spaces.common import fractions_from_split
from echotune.spaces.trials import NumericRange, ReplayTrial
from echotune.trainables.trial import DIVERGED_KEY

if TYPE_CHECKING:
    from echotune.search.search_config import SearchConfig

logger = logging.getLogger(__name__)

TIME_ATTR = "epoch"
# PBT compares members on their *current* quality, the score of the epoch just trained, not the running best
# (val/best_score, what Optuna, ASHA and the leaderboard use): a member whose best lies epochs behind it and that
# has since declined should be replaced.
PBT_METRIC = SCORE_METRIC
# The bottom quarter clones the top quarter (Ray's default, the truncation selection of Jaderberg et al. 2017):
# with a population of 4, one member per round (ceil(4 * 0.25)). A larger fraction (up to 0.5) would replace
# half of a small population at every round and collapse it onto one lineage within two rounds.
QUANTILE_FRACTION = 0.25
# Ray's default: each mutated key is redrawn from the space's range with this probability, else perturbed by
# x0.8 / x1.2. With 8 keys a clone redraws about 2 (a jump that can leave a local optimum), nudges the rest.
RESAMPLE_PROBABILITY = 0.25
POLICY_FILES = (PBT_GLOBAL_FILE, PBT_POLICY_FILE.format("*"))  # what Ray's PBT writes into the driver's staging folder


def pbt_stage_split(cfg: SearchConfig) -> tuple[float, float, float]:
    """The one stage split every PBT member trains with: the space's baseline split (the original 30/50/20)."""
    config = get_space(cfg.space).baseline_config(cfg.profile)
    return tuple(config.get("stage_split", TrainConfig().stage_split))


def perturbation_epochs(max_epochs: int, interval: int | None, stage_split) -> list[int]:
    """Epochs (1-based counts of epochs trained) after which PBT perturbs: every `interval` epochs, or (None) where
    stage 1 and stage 2 end under `stage_split`; never the last epoch. E.g. 12, None, (0.3, 0.5, 0.2) -> [4, 10];
    12, 2 -> [2, 4, 6, 8, 10]."""
    if interval is not None:
        return list(range(interval, max_epochs, interval))
    ends, epoch = [], 0
    for count in split_epochs(max_epochs, tuple(stage_split))[:-1]:
        epoch += count
        if 0 < epoch < max_epochs and epoch not in ends:
            ends.append(epoch)
    return ends


def checkpoints_to_keep(epochs: list[int], max_epochs: int) -> int:
    """Most recent checkpoints a member keeps: a donor's checkpoint at a perturbation epoch must survive until
    the clone restores it, which synchronous PBT guarantees before the donor passes the next perturbation epoch
    (or the end): the longest such stretch of reports after it, plus the checkpoint itself."""
    stops = [*epochs, max_epochs]
    return max(b - a for a, b in zip(stops, stops[1:])) + 1 if epochs else 1


def mutation_ranges(cfg: SearchConfig) -> dict[str, NumericRange]:
    """MUTABLE_KEYS that the space searches, with the space's own ranges; ValueError when there is none."""
    ranges = parameter_ranges(cfg.space, cfg.profile)
    mutable = {key: ranges[key] for key in MUTABLE_KEYS if key in ranges}
    if not mutable:
        raise ValueError(
            f"--scheduler pbt mutates {', '.join(MUTABLE_KEYS)}, but space {cfg.space!r} searches none "
            f"of them: PBT would only copy checkpoints between identical schedules"
        )
    return mutable


def hyperparam_mutations(ranges: dict[str, NumericRange]) -> dict:
    """PBT's resample distributions: the space's ranges as Tune domains (log-uniform where the space is)."""
    return {key: (tune.loguniform if r.log else tune.uniform)(r.low, r.high) for key, r in ranges.items()}


@dataclass(frozen=True)
class StayInSpace:
    """PBT's custom_explore_fn (after Ray's perturbation): clip each mutated key to the space's range (x1.2 can
    leave it), then let the space's own constants for this config win (aug_policy none: strengths stay 0).
    A plain picklable object: the scheduler is pickled with the Tuner."""

    space: str
    profile: str
    ranges: dict[str, NumericRange]

    def __call__(self, config: dict) -> dict:
        config = dict(config)
        for key, r in self.ranges.items():
            config[key] = min(max(float(config[key]), r.low), r.high)
        # The space's own function, not SearchSpace.define: a profile that searches fewer parameters (quick)
        # would return its fixed values as constants too, undoing every mutation of a key it does not search.
        constants = get_space(self.space).define_fn(ReplayTrial(config), get_profile(self.profile))
        config.update({k: v for k, v in constants.items() if k in self.ranges})
        return config


def initial_population(cfg: SearchConfig) -> list[dict]:
    """`cfg.num_samples` full trial configs: the baseline point first, then random samples of the space (an
    in-memory Optuna study seeded with cfg.seed, as TPE's startup trials), each with the search's trial constants
    and the fixed PBT stage split. Like Ray's OptunaSearch: {**suggested params, **space constants, **trial constants}.
    Every member has the same keys (Ray resolves each point against a param_space that must hold all of them): a
    key the space leaves out for a member (a conditional parameter, e.g. focal_gamma without a focal loss) gets
    TrainConfig's default, the value the engine would use without it."""
    space = get_space(cfg.space)
    split = pbt_stage_split(cfg)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" in the search log
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.seed), direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    baseline = space.baseline(cfg.profile)
    if baseline:
        study.enqueue_trial(baseline)
    population = []
    for _ in range(cfg.num_samples):
        trial = study.ask()
        constants = space.define(trial, cfg.profile)
        config = {**trial.params, **constants, **cfg.trial_constants(), "stage_split": split}
        if "stage1_frac" in config:  # searched split: the members' config names the split they train with
            config.update(fractions_from_split(split))
        population.append(config)
    defaults = TrainConfig().to_dict()
    keys = {key for config in population for key in config}
    return [{**{key: defaults[key] for key in keys - set(config)}, **config} for config in population]


def is_baseline(config: dict, baseline: dict | None) -> bool:
    """As the leaderboard decides it: the config holds every value of the space's baseline point."""
    return baseline is not None and all(config.get(k) == v for k, v in baseline.items())


class StagePBT(PopulationBasedTraining):
    """Synchronous PBT perturbing at given epochs (Ray's own perturbs every fixed interval), never cloning into
    the baseline member, with its state rebuilt after a resume (module docstring)."""

    def __init__(
        self,
        epochs: list[int],
        experiment_dir: str | Path,
        mutations: dict,
        explore: StayInSpace,
        baseline: dict | None = None,
        quantile_fraction: float = QUANTILE_FRACTION,
        resample_probability: float = RESAMPLE_PROBABILITY,
        seed: int | None = None,
    ):
        if not epochs:
            raise ValueError("PBT needs at least one perturbation epoch before the last epoch")
        if seed is not None:
            # Ray's exploit and explore draw from the driver's global generators (random.choice of the donor and
            # of the x0.8 / x1.2 factor, random.random for resampling, Domain.sample(None) -> numpy's global):
            # seeded here, once per search, the same seed perturbs the same way (given the same results).
            random.seed(seed)
            np.random.seed(seed)
        # perturbation_interval=1 and burn-in up to the first perturbation epoch: Ray's interval test then
        # passes at every perturbation epoch, and on_trial_result lets only those through.
        super().__init__(
            time_attr=TIME_ATTR,
            metric=PBT_METRIC,
            mode="max",
            perturbation_interval=1,
            burn_in_period=epochs[0],
            hyperparam_mutations=mutations,
            quantile_fraction=quantile_fraction,
            resample_probability=resample_probability,
            custom_explore_fn=explore,
            synch=True,
        )
        self.perturbation_epochs = sorted(epochs)
        self.experiment_dir = str(experiment_dir)
        self.baseline = baseline
        self._next_perturbation_sync = self.perturbation_epochs[0]
        self._synced: list[int] = []
        self._staging: Path | None = None  # the driver's staging folder (Ray syncs it to the experiment folder)
        self._rebuilt = False

    def next_epoch_after(self, epoch: float) -> float:
        """The next perturbation epoch after `epoch` (inf after the last: members then run to the end)."""
        return next((e for e in self.perturbation_epochs if e > epoch), math.inf)

    # ---------------------------------------------------------------- Ray's hooks

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if not self._rebuilt:
            self._rebuild(trial)
        super().on_trial_add(tune_controller, trial)
        # A member restored after a clone carries Ray's "@perturbed[...]" tag; its lines in the policy files must
        # keep naming it by its tag at creation (Ray would also append a second "@perturbed" at its next clone).
        self._trial_state[trial].orig_tag = trial.experiment_tag.split(PERTURBED_MARK, 1)[0]
        self._restore_member(trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        epoch = result.get(TIME_ATTR)
        if epoch not in self.perturbation_epochs or epoch < self._next_perturbation_sync or result.get(DIVERGED_KEY):
            # between perturbation epochs, at one already synced (a member replaying epochs after a resume), or a
            # diverged member's last word
            return TrialScheduler.CONTINUE
        waiting_for = self._next_perturbation_sync
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._next_perturbation_sync != waiting_for:  # the last member arrived: PBT exploited and explored
            self._record_sync(int(waiting_for))
        return decision

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trial = super().choose_trial_to_run(tune_controller)
        if trial is None and self._all_waiting(tune_controller):
            # Every live member waits at the sync point and none runs, so no result will come to trigger the sync
            # (Ray's synchronous PBT would wait forever): a member ended before reaching it (diverged, or failed
            # for good), or a resume restored every member there. Synchronise the waiting ones now.
            epoch = self._next_perturbation_sync
            logger.info("StagePBT: every live member waits at epoch %s and none runs; synchronising now", epoch)
            lower, upper = self._quantiles()
            middle = [t for t in tune_controller.get_trials() if t not in lower and t not in upper]
            for member in upper + middle + lower:  # as Ray's sync: top members checkpoint before others clone
                self._trial_state[member].last_perturbation_time = epoch
                self._checkpoint_or_exploit(member, tune_controller, upper, lower)
            self._record_sync(int(epoch))
            trial = super().choose_trial_to_run(tune_controller)
        return trial

    def _all_waiting(self, tune_controller) -> bool:
        live = [t for t in tune_controller.get_live_trials() if not t.is_finished()]
        return (
            bool(live)
            and math.isfinite(self._next_perturbation_sync)
            and all(
                t.status != Trial.RUNNING and self._trial_state[t].last_train_time >= self._next_perturbation_sync
                for t in live
            )
        )

    def _quantiles(self) -> tuple[list[Trial], list[Trial]]:
        """Ray's quantiles, except that the baseline member is never in the lower one (never cloned into); the
        next-weakest member takes its place."""
        lower, upper = super()._quantiles()
        if not any(self._is_baseline(t) for t in lower):
            return lower, upper
        ranked = sorted(
            (
                t
                for t, s in self._trial_state.items()
                if s.last_score is not None and not math.isnan(s.last_score) and not t.is_finished()
            ),
            key=lambda t: self._trial_state[t].last_score,
        )
        lower = [t for t in ranked if not self._is_baseline(t) and t not in upper][: len(lower)]
        return lower, upper

    def _checkpoint_or_exploit(self, trial: Trial, tune_controller, upper_quantile, lower_quantile) -> None:
        if trial in upper_quantile and trial.status == Trial.PENDING and trial.checkpoint is not None:
            # A member restored by --resume while it waited at this sync point: no actor to ask for a save, and
            # its latest checkpoint is the one of this epoch. (A top member is never in the lower quantile.)
            self._trial_state[trial].last_checkpoint = trial.checkpoint
            self._num_checkpoints += 1
            return
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial) -> None:
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result
        keep = latest.checkpoint.path if latest is not None and latest.checkpoint is not None else None
        super()._exploit(tune_controller, trial, trial_to_clone)
        # The member's own checkpoints belong to the lineage it leaves: its best one must not stand for the member
        # in the leaderboard (its config is no longer the member's), so they are dropped from its bookkeeping and
        # deleted, except the latest, which a resume from an experiment snapshot older than this exploit restores.
        left, manager._checkpoint_results = manager._checkpoint_results, []
        for result in left:
            if result.checkpoint is not None and result.checkpoint.path != keep:
                try:
                    result.checkpoint.filesystem.delete_dir(result.checkpoint.path)
                except OSError as exc:
                    logger.warning("StagePBT: could not delete %s: %s", result.checkpoint.path, exc)
        # Ray swaps the donor's checkpoint into the member's checkpoint manager behind its back: the member's run
        # metadata, cached as JSON for the experiment state, would keep naming its own checkpoint while its config
        # (set_config refreshes that part) is saved as the clone's. A resume then restored the member's own
        # weights under the donor's config (caught by the engine's check_compatible). Refresh both together.
        trial.run_metadata.invalidate_cache()

    def _log_config_on_step(self, trial_state, new_state, trial: Trial, trial_to_clone: Trial, new_config: dict):
        """Ray's policy files, same names and lines ([member tag, donor tag, member step, donor step, donor config,
        new config]; the member's file first takes a copy of the donor's), except that both steps are the sync
        epoch: Ray writes each trial's last_result iteration, which for the member whose result triggered the sync
        is still the epoch before (Ray updates it after the scheduler). Epoch and iteration are otherwise the same
        here (one report per epoch, the iteration restored with a checkpoint)."""
        epoch = int(new_state.last_train_time)
        staging = Path(trial.local_experiment_path)
        line = (
            json.dumps(
                [trial_state.orig_tag, new_state.orig_tag, epoch, epoch, trial_to_clone.config, new_config],
                cls=SafeFallbackEncoder,
            )
            + "\n"
        )
        _append_atomically(staging / PBT_GLOBAL_FILE, line)
        donor_policy = Path(trial_to_clone.local_experiment_path) / PBT_POLICY_FILE.format(trial_to_clone.trial_id)
        member_policy = staging / PBT_POLICY_FILE.format(trial.trial_id)
        # the member's file: the donor's history, then this line (a reader never sees half of either)
        history = donor_policy.read_text() if donor_policy.exists() else ""
        atomic_write_text(member_policy, history + line)

    # ---------------------------------------------------------------- resume

    def _is_baseline(self, trial: Trial) -> bool:
        return is_baseline(trial.config, self.baseline)

    def _record_sync(self, epoch: int) -> None:
        """Keep the sync and move on to the next perturbation epoch. The record goes where Ray's own PBT files go,
        the driver's staging folder, which Ray uploads to the experiment folder with the experiment state: the two
        always agree (and a file written straight into the experiment folder would be overwritten there by the
        staging copy Ray downloads on a resume, as it does every .json)."""
        self._synced = sorted(set(self._synced) | {epoch})
        self._next_perturbation_sync = self.next_epoch_after(epoch)
        if self._staging is not None:
            atomic_write_text(self._staging / SYNCED_FILE, json.dumps(self._synced) + "\n")

    def _rebuild(self, trial: Trial) -> None:
        """Once, at the first trial added (a fresh search finds nothing): the synced epochs (in the staging folder,
        where Ray has just downloaded the experiment's .json files on a resume), and PBT's policy files copied back
        from the experiment folder (a local one: Ray downloads no .txt)."""
        self._rebuilt = True
        self._staging = staging = Path(trial.local_experiment_path)
        synced = staging / SYNCED_FILE
        if synced.is_file():
            self._synced = [int(e) for e in json.loads(synced.read_text())]
            self._next_perturbation_sync = next(
                (e for e in self.perturbation_epochs if e not in self._synced), math.inf
            )
            logger.info("StagePBT: resumed after the syncs at epochs %s", self._synced)
        folder = Path(self.experiment_dir)
        if folder.is_dir() and staging.resolve() != folder.resolve():
            staging.mkdir(parents=True, exist_ok=True)
            for pattern in POLICY_FILES:
                for path in folder.glob(pattern):
                    if not (staging / path.name).exists():
                        atomic_write_bytes(staging / path.name, path.read_bytes())

    def _restore_member(self, trial: Trial) -> None:
        """A restored member whose last result is at (or past) the pending sync point waits there: its score
        enters the next sync as if it had just arrived."""
        last = trial.last_result or {}
        epoch = last.get(TIME_ATTR)
        if (
            trial.is_finished()
            or epoch not in self.perturbation_epochs
            or epoch < self._next_perturbation_sync
            or PBT_METRIC not in last
        ):
            return
        state = self._trial_state[trial]
        state.last_score = self._metric_op * last[PBT_METRIC]
        state.last_train_time = state.last_perturbation_time = epoch
        state.last_result = last


def build_pbt_scheduler(cfg: SearchConfig) -> StagePBT:
    if len(cfg.metrics) > 1:
        raise ValueError(
            f"--scheduler pbt with several objectives {cfg.objectives}: PBT ranks members on one "
            f"number ({PBT_METRIC}), so it, not the objectives, would decide which models survive"
        )
    ranges = mutation_ranges(cfg)
    return StagePBT(
        perturbation_epochs(cfg.max_epochs, cfg.pbt_interval, pbt_stage_split(cfg)),
        cfg.experiment_dir,
        hyperparam_mutations(ranges),
        StayInSpace(cfg.space, cfg.profile, ranges),
        baseline=get_space(cfg.space).baseline(cfg.profile),
        seed=cfg.seed,
    )


def build_pbt_search(cfg: SearchConfig) -> tuple[BasicVariantGenerator, dict]:
    """(searcher, param_space) for the Tuner: the population as fixed points, one per sample, which Ray's
    BasicVariantGenerator runs as given. The param_space only mirrors their keys (Ray refuses a point's key that
    the param_space lacks, and walks into lists and dicts): None for a plain value (a point then sets it without
    a check), member 0's value for a list or dict (the stage split every member shares)."""
    population = initial_population(cfg)
    shape = {key: value if isinstance(value, (list, tuple, dict)) else None for key, value in population[0].items()}
    return BasicVariantGenerator(points_to_evaluate=population, random_state=cfg.seed), shape


def pbt_checkpoint_config(cfg: SearchConfig) -> tune.CheckpointConfig:
    """Recency retention (no score attribute): see the module docstring."""
    epochs = perturbation_epochs(cfg.max_epochs, cfg.pbt_interval, pbt_stage_split(cfg))
    return tune.CheckpointConfig(num_to_keep=checkpoints_to_keep(epochs, cfg.max_epochs))


def _append_atomically(path: Path, text: str) -> None:
    """`path`'s content + `text`, replaced in one rename (the policy files are small: one line per exploit)."""
    atomic_write_text(path, (path.read_text() if path.exists() else "") + text)
