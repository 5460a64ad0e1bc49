"""Human-readable text of a `CheckedDataset`: per-split counts, box sizes, leakage, then every problem by kind."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from echotune.data.check import SCHEME_NAMES, CheckedDataset
from echotune.data.config import VIDEO_ID_KEY


def format_report(check: CheckedDataset, max_per_kind: int = 25) -> str:
    """The full report; `max_per_kind` caps the problems listed per kind (0 = list all), counts are always full."""
    cfg = check.config
    out = [
        f"EchoTune data check: {cfg.yaml_path}",
        f"  root:    {cfg.root}",
        f"  classes: {', '.join(cfg.names)} (nc={cfg.nc})",
        f"  views:   {', '.join(check.view_names)}",
    ]
    out += [f"  note:    {note}" for note in check.notes]
    out += ["", *_split_table(check), "", *_box_sizes(check), "", *_leakage(check), "", *_problems(check, max_per_kind)]
    return "\n".join(out)


def verdict(check: CheckedDataset) -> str:
    n_err, n_warn = len(check.errors), len(check.warnings)
    if n_err:
        return f"NOT USABLE: {n_err} error(s), {n_warn} warning(s). Fix the errors above and run the check again."
    leaky = " (leaky splits: a search, train.py and ensemble.py refuse them unless given --allow-leaky-splits)"
    return f"USABLE: 0 errors, {n_warn} warning(s){leaky if check.leakage else ''}."


def _split_table(check: CheckedDataset) -> list[str]:
    names, views = check.config.names, check.view_names
    header = ["split", "images", "videos", "no-box", "no-view", *names, "|", *views]
    rows = [header]
    for split, s in check.stats.items():
        rows.append(
            [
                split,
                s.images,
                s.videos,
                s.images_without_boxes,
                s.images_without_view,
                *(s.boxes_per_class.get(i, 0) for i in range(len(names))),
                "|",
                *(s.views.get(i, 0) for i in range(len(views))),
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["Images, boxes per class and views per split:"]
    lines += [
        "  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    return lines


def _box_sizes(check: CheckedDataset) -> list[str]:
    lines = ["Box sizes (width x height; median [min, max]):"]
    for split, s in check.stats.items():
        if not len(s.box_wh):
            lines.append(f"  {split}: no boxes")
            continue
        w, h = s.box_wh_pixels[:, 0], s.box_wh_pixels[:, 1]
        rel = np.median(s.box_wh, axis=0)
        lines.append(
            f"  {split}: {np.median(w):.0f} x {np.median(h):.0f} px [{w.min():.0f}..{w.max():.0f} x "
            f"{h.min():.0f}..{h.max():.0f}], {rel[0]:.3f} x {rel[1]:.3f} of the image; "
            f"{int(((w < 8) | (h < 8)).sum())} boxes under 8 px"
        )
    return lines


def _leakage(check: CheckedDataset) -> list[str]:
    videos_with_id = {s.video for split in check.samples.values() for s in split if s.video_derived}
    lines = []
    if not videos_with_id:
        lines.append(f"Leakage: cannot check: no file name gives a source-video id (known schemes: {SCHEME_NAMES}).")
    elif not check.leakage:
        lines.append(f"Leakage: none; each of {len(videos_with_id)} source videos sits in one split.")
    else:
        frames = sum(sum(c.values()) for c in check.leakage.values())
        pairs: dict[str, int] = defaultdict(int)
        for counts in check.leakage.values():
            pairs[" + ".join(sorted(counts, key=list(check.samples).index))] += 1
        lines += [
            f"Leakage: {len(check.leakage)} of {len(videos_with_id)} source videos appear in more than one "
            f"split ({frames} frames); an evaluation on these splits is optimistic. "
            f"Fix with --resplit-by-video (a search, train.py and ensemble.py refuse these splits unless "
            f"given --allow-leaky-splits).",
            "  " + ", ".join(f"{n} videos in {where}" for where, n in sorted(pairs.items())),
        ]
        for video, counts in list(check.leakage.items())[:10]:
            lines.append(f"  {video}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))
        if len(check.leakage) > 10:
            lines.append(f"  ... and {len(check.leakage) - 10} more videos")
    for split, missing in check.without_video_id().items():
        if missing:
            examples = ", ".join(s.image.name for s in missing[:3]) + (", ..." if len(missing) > 3 else "")
            lines.append(
                f"  {split}: {len(missing)} of {len(check.samples[split])} images have no source-video id "
                f"(e.g. {examples}): leakage could not be checked for them"
            )
    if any(check.without_video_id().values()) and check.config.video_id_pattern is not None:
        lines.append(
            f"  Fix the video_id_pattern {check.config.video_id_pattern.pattern!r} so that it finds the "
            f"video in every file name (see the video-id errors below)."
        )
    elif any(check.without_video_id().values()):
        lines.append(
            f"  Fix: add `{VIDEO_ID_KEY}: '<regex>'` to data.yaml (re.search on the file name; the group "
            f"named video, else group 1, else the whole match is the video id), e.g. "
            f"`{VIDEO_ID_KEY}: '^(?P<video>.+)_frame\\d+'`"
        )
    return lines


def _problems(check: CheckedDataset, max_per_kind: int) -> list[str]:
    if not check.problems:
        return ["Problems: none.", verdict(check)]
    by_kind = defaultdict(list)
    for problem in check.problems:
        by_kind[(not problem.is_error, problem.kind)].append(problem)
    lines = [f"Problems: {len(check.errors)} error(s), {len(check.warnings)} warning(s)"]
    for (is_warning, kind), found in sorted(by_kind.items()):
        label = "WARNING" if is_warning else "ERROR"
        lines.append(f"  {label} [{kind}] x{len(found)}")
        shown = found if max_per_kind <= 0 else found[:max_per_kind]
        lines += [f"    {p}" for p in shown]
        if len(shown) < len(found):
            lines.append(f"    ... and {len(found) - len(shown)} more of this kind (--max-problems 0 lists all)")
    lines.append(verdict(check))
    return lines
