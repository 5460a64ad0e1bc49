"""Each PBT member's lineage, read from the files Ray's PopulationBasedTraining writes (search/pbt.py).

    lineage = read_lineage("results/pbt", {trial_id: (experiment_tag, config), ...})
    lineage["56f0b_00001"].text       # "e2←56f0b_00003; e4←56f0b_00003": its clones, epoch ← donor
    lineage["56f0b_00001"].schedule   # {"stage1": {"lr_stage1": 0.0049, ...}, "stage2": {...}, "stage3": {...}}

Files (in the experiment folder; Ray 2.60 names and line format, steps written as epochs by StagePBT):
  pbt_global.txt            every exploit of the search, in order
  pbt_policy_<trial_id>.txt the history of that member's *weights*: at an exploit Ray copies the donor's file
                            over the member's and appends the new line, so it is the donor's chain plus the
                            member's last clone (PopulationBasedTrainingReplay follows the same chain)
one JSON list per line and exploit: [member tag, donor tag, member epoch, donor epoch, donor config, new config].
Tags are Ray's experiment tags at creation ("0", "1", ...: the population's points carry no sampled variables;
a clone's tag gets "@perturbed[...]" appended), mapped to trial ids through the trials' current tags.

The schedule a member ended with is, for each stage, the values of that stage's keys (MUTABLE_KEYS_BY_STAGE)
in effect when the stage's last epoch was trained, along its weights' chain: a stage-1 learning rate mutated
after stage 1 ended trained nothing, so it is not the one shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from echotune.engine.config import MUTABLE_KEYS_BY_STAGE
from echotune.engine.schedule import split_epochs
from echotune.results.documents import read_json_lines
from echotune.results.layout import (
    PBT_GLOBAL_FILE,
    PBT_PERTURBED_MARK,
    PBT_POLICY_FILE,
    PBT_SYNCED_FILE,
    RESULT_FILE,
    trial_folder_name,
)
from echotune.results.search_record import read_search_record

ARROW = "←"


@dataclass(frozen=True)
class PolicyLine:
    """One exploit as Ray logs it (tags, not trial ids)."""

    member_tag: str
    donor_tag: str
    member_epoch: int
    donor_epoch: int
    donor_config: dict
    new_config: dict


@dataclass(frozen=True)
class Exploit:
    epoch: int  # the member continued from the donor's checkpoint of this epoch (the sync epoch)
    member: str  # trial ids
    donor: str
    new_config: dict  # the member's config from then on (the donor's, mutated)


@dataclass
class MemberLineage:
    trial_id: str
    exploits: list[Exploit] = field(default_factory=list)  # this member's clones, in order (pbt_global.txt)
    schedule: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> mutated key -> value in effect

    @property
    def text(self) -> str:
        """'e2←t3; e4←t0' ('' for a member never cloned into)."""
        return "; ".join(f"e{e.epoch}{ARROW}{e.donor}" for e in self.exploits)


def read_policy(path: str | Path) -> list[PolicyLine]:
    """The lines of a pbt_global.txt or pbt_policy_*.txt ([] when absent); a line cut by a crash is skipped, and
    one of another shape ends the list."""
    lines = []
    for entry in read_json_lines(path):
        try:
            member, donor, member_epoch, donor_epoch, donor_config, new_config = entry
            lines.append(
                PolicyLine(str(member), str(donor), int(member_epoch), int(donor_epoch), donor_config, new_config)
            )
        except (ValueError, TypeError):
            break
    return lines


def weight_chain(lines: list[PolicyLine]) -> list[PolicyLine]:
    """The lines of a member's policy file that its weights descend through, oldest first: from the last line
    back, each earlier line must be a clone *into* the later line's donor (Ray's replay rule; a member's own
    earlier clone stays in its file when the donor had no file to copy, and is cut here)."""
    chain: list[PolicyLine] = []
    for line in reversed(lines):
        if chain and line.member_tag != chain[-1].donor_tag:
            break
        chain.append(line)
    return chain[::-1]


def original_tag(experiment_tag: str) -> str:
    return experiment_tag.split(PBT_PERTURBED_MARK, 1)[0]


def stage_schedule(config_at_epoch, epochs: int, stage_split) -> dict[str, dict[str, float]]:
    """{"stage1": {key: value}, ...}: each stage's keys as `config_at_epoch(epoch)` held them at the stage's last
    epoch (epochs counted from 1, as reported); stages without epochs are left out."""
    schedule, end = {}, 0
    for stage, count in zip(sorted(MUTABLE_KEYS_BY_STAGE), split_epochs(epochs, tuple(stage_split))):
        end += count
        if count:
            config = config_at_epoch(end)
            schedule[f"stage{stage}"] = {k: config[k] for k in MUTABLE_KEYS_BY_STAGE[stage] if k in config}
    return schedule


def member_schedule(
    chain: list[PolicyLine], config: dict, reported: dict[int, dict] | None = None
) -> dict[str, dict[str, float]]:
    """The schedule of a member whose weights went through `chain` and whose config is now `config`. `reported`:
    {epoch: the config the member reported that epoch with} (its result.json), the ground truth where it exists:
    a driver killed between an exploit's policy line and Ray's next state snapshot resumes the member under its
    old config, while the policy file keeps the line."""

    def config_at(epoch: int) -> dict:  # epoch t was trained under the config set by the last clone before it
        if reported and epoch in reported:
            return reported[epoch]
        current = chain[0].donor_config if chain else config
        for line in chain:
            if line.donor_epoch < epoch:
                current = line.new_config
        return current

    return stage_schedule(config_at, int(config["epochs"]), config["stage_split"])


def read_lineage(experiment_dir: str | Path, trials: dict[str, tuple[str, dict]]) -> dict[str, MemberLineage]:
    """Lineage of every trial in `trials` ({trial_id: (experiment_tag, config)}, the config as it is now)."""
    folder = Path(experiment_dir)
    by_tag = {original_tag(tag): trial_id for trial_id, (tag, _) in trials.items()}
    lineage = {trial_id: MemberLineage(trial_id) for trial_id in trials}
    for line in read_policy(folder / PBT_GLOBAL_FILE):
        member, donor = by_tag.get(line.member_tag), by_tag.get(line.donor_tag)
        if member in lineage and donor is not None:
            lineage[member].exploits.append(Exploit(line.donor_epoch, member, donor, line.new_config))
    for trial_id, (_, config) in trials.items():
        if "epochs" in config and "stage_split" in config:
            chain = weight_chain(read_policy(folder / PBT_POLICY_FILE.format(trial_id)))
            lineage[trial_id].schedule = member_schedule(chain, config, reported_configs(folder, trial_id))
    return lineage


def reported_configs(experiment_dir: str | Path, trial_id: str) -> dict[int, dict]:
    """{epoch: config} from the member's result.json; the last report of an epoch wins (a resumed member may
    report an epoch again); {} without the file."""
    results = read_json_lines(Path(experiment_dir) / trial_folder_name(trial_id) / RESULT_FILE)
    return {
        int(r["epoch"]): r["config"]
        for r in results
        if isinstance(r, dict) and "epoch" in r and isinstance(r.get("config"), dict)
    }


def is_pbt_search(experiment_dir: str | Path) -> bool:
    """search.json says --scheduler pbt (or, for a folder without one, PBT left its files)."""
    folder = Path(experiment_dir)
    try:
        scheduler = read_search_record(folder).get("config", {}).get("scheduler")
    except ValueError:  # a damaged search.json: the files decide
        scheduler = None
    return scheduler == "pbt" or (folder / PBT_GLOBAL_FILE).is_file() or (folder / PBT_SYNCED_FILE).is_file()


def lineage_columns(member: MemberLineage | None) -> dict:
    """The leaderboard's columns: pbt_lineage ('' never cloned into) and pbt_final_config (the schedule, JSON);
    both null outside a PBT search."""
    if member is None:
        return {"pbt_lineage": None, "pbt_final_config": None}
    return {"pbt_lineage": member.text, "pbt_final_config": json.dumps(member.schedule, sort_keys=True)}


def format_schedule(schedule: dict[str, dict[str, float]]) -> str:
    """'stage1 lr_stage1=0.0049 aug_strength_stage1=0.2 | stage2 ...'"""
    return " | ".join(
        f"{stage} " + " ".join(f"{k}={v:.3g}" for k, v in values.items()) for stage, values in schedule.items()
    )


def lineage_lines(rows) -> list[str]:
    """The text block of the leaderboard: one line per PBT member (rows: dicts or a DataFrame's records, in
    rank order); [] when no row has lineage columns (not a PBT search)."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    members = [r for r in records if isinstance(r.get("pbt_final_config"), str)]
    if not members:
        return []
    width = max(len(str(r["trial_id"])) for r in members)
    return [
        f"  {r['trial_id']:<{width}}  {r.get('pbt_lineage') or 'never cloned into':<{width * 2 + 8}}  "
        f"{format_schedule(json.loads(r['pbt_final_config']))}"
        for r in members
    ]
