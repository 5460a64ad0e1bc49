"""Leaky splits: source videos whose frames sit in more than one split, summarised, and the guard every command
that trains or evaluates runs before it starts.

Frames of one video are near-duplicates: a model scored on frames of videos it trained on looks better than it
is. `guard_leakage` refuses such splits (LeakySplitsError, a DataError: the command lines exit 2) unless the
caller explicitly allows them; then it warns and returns the record the outputs carry as their "leaky splits"
flag. Images whose name gives no source video cannot be checked: the guard only notes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from echotune.data.check import CheckedDataset
from echotune.data.config import SPLITS, VIDEO_ID_KEY
from echotune.data.problems import DataError

EXAMPLES = 5  # leaky videos named in a message
ALLOW_OPTION = "--allow-leaky-splits"


@dataclass(frozen=True)
class LeakageSummary:
    splits: tuple[str, ...]  # the dataset's splits, in order
    videos: int  # source videos with an id derived from their file names
    leaky_videos: int  # of those, in more than one split
    frames: int  # frames of the leaky videos, all splits together
    pairs: dict[str, int]  # "train+val", "train+test", "val+test", "train+val+test" -> videos in exactly those
    examples: dict[str, dict[str, int]]  # up to EXAMPLES leaky videos -> {split: frames}
    unchecked: dict[str, int]  # split -> images whose name gives no source video (leakage unknown)

    @property
    def leaky(self) -> bool:
        return self.leaky_videos > 0

    def pair_text(self) -> str:
        """`train+val 40, train+test 30, val+test 20, all three 13`."""
        return ", ".join(f"{'all three' if key.count('+') == 2 else key} {n}" for key, n in self.pairs.items())

    def to_record(self) -> dict:
        """The flag outputs carry (search.json, metrics.json): counts, pairs, examples."""
        return {
            "videos": self.leaky_videos,
            "videos_checked": self.videos,
            "frames": self.frames,
            "pairs": dict(self.pairs),
            "examples": {v: dict(c) for v, c in self.examples.items()},
            "images_without_video_id": {k: n for k, n in self.unchecked.items() if n},
        }


def _pair_keys(splits: tuple[str, ...]) -> list[str]:
    present = [s for s in SPLITS if s in splits]
    keys = [f"{a}+{b}" for i, a in enumerate(present) for b in present[i + 1 :]]
    return keys + (["+".join(present)] if len(present) == 3 else [])


def leakage_summary(check: CheckedDataset) -> LeakageSummary:
    splits = tuple(check.samples)
    pairs = dict.fromkeys(_pair_keys(splits), 0)
    for counts in check.leakage.values():
        key = "+".join(s for s in SPLITS if s in counts)
        pairs[key] = pairs.get(key, 0) + 1
    videos = len({s.video for samples in check.samples.values() for s in samples if s.video_derived})
    return LeakageSummary(
        splits=splits,
        videos=videos,
        leaky_videos=len(check.leakage),
        frames=sum(sum(c.values()) for c in check.leakage.values()),
        pairs=pairs,
        examples=dict(list(check.leakage.items())[:EXAMPLES]),
        unchecked={split: len(samples) for split, samples in check.without_video_id().items()},
    )


def flag_text(record: dict) -> str:
    """One line for outputs flagged leaky (leaderboard, report.html), from a `to_record()` dict."""
    pairs = ", ".join(f"{'all three' if k.count('+') == 2 else k} {n}" for k, n in record.get("pairs", {}).items())
    return (
        f"WARNING: leaky splits: {record.get('videos', '?')} source videos in more than one split ({pairs}): "
        f"evaluation is optimistic"
    )


def leakage_message(check: CheckedDataset, summary: LeakageSummary, allow_hint: str = ALLOW_OPTION) -> str:
    """The refusal: per-pair counts, example videos, the fix, and how to go on knowingly."""
    yaml_path = check.config.yaml_path
    lines = [
        f"{yaml_path}: leaky splits: {summary.leaky_videos} of {summary.videos} source videos have frames in "
        f"more than one split ({summary.frames} frames): {summary.pair_text()}. Scores on these splits are "
        f"optimistic (the model is evaluated on frames of videos it trained on)."
    ]
    lines += [
        f"  {video}: " + ", ".join(f"{split} {n}" for split, n in counts.items())
        for video, counts in summary.examples.items()
    ]
    if summary.leaky_videos > len(summary.examples):
        lines.append(
            f"  ... and {summary.leaky_videos - len(summary.examples)} more videos "
            f"(echotune check --data {yaml_path} lists them)"
        )
    lines += [
        f"Fix: echotune resplit --data {yaml_path} (or --folds K --fold I for "
        f"grouped K-fold) writes leak-free splits and a new data.yaml; use that one.",
        f"Or pass {allow_hint} to go on knowingly: the results are flagged as leaky.",
    ]
    return "\n".join(lines)


class LeakySplitsError(DataError):
    """Raised by `guard_leakage` on leaky splits that were not allowed; `summary` holds the counts."""

    def __init__(self, message: str, summary: LeakageSummary):
        super().__init__(message)
        self.summary = summary


def guard_leakage(
    check: CheckedDataset, allow: bool, log: Callable[[str], None] | None = print, allow_hint: str = ALLOW_OPTION
) -> dict | None:
    """Refuse leaky splits unless `allow`: raises LeakySplitsError. Returns None when no checked video leaks,
    else (allowed) the flag record for the outputs, after a warning through `log` (None: silent)."""
    summary = leakage_summary(check)
    say = log or (lambda _: None)
    unchecked = sum(summary.unchecked.values())
    if unchecked:
        say(
            f"note: {unchecked} image(s) have no source-video id in their name ("
            + ", ".join(f"{split} {n}" for split, n in summary.unchecked.items() if n)
            + f"): leakage could not be checked for them; add `{VIDEO_ID_KEY}: '<regex>'` to data.yaml"
        )
    if not summary.leaky:
        return None
    if not allow:
        raise LeakySplitsError(leakage_message(check, summary, allow_hint), summary)
    say(
        f"WARNING: leaky splits: {summary.leaky_videos} of {summary.videos} source videos have frames in more than "
        f"one split ({summary.pair_text()}; {summary.frames} frames). Going on because of {allow_hint}: "
        f"evaluation is optimistic and the results are flagged as leaky."
    )
    return summary.to_record()
