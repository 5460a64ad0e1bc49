"""The search's headline on held-out data: the best trial and the baseline on val and test, with 95 % intervals.

    held = write_held_out(experiment_dir, data, best_row, baseline_row)   # end of run.py; writes held_out.json
    held_out_notes(doc), held_out_frames(doc)                             # the leaderboard's text and tables

Selection on val, reporting on test: the best trial was picked by its val/score, each model's P/R/F1 confidence
is chosen on val and applied unchanged to test, and test is read once, here, after every choice is made.
Intervals are percentile bootstraps over source videos (videos resampled with replacement); "best - baseline"
is a paired bootstrap (the same resampled videos for both models), so it says whether the search's gain on
test differs from zero. After a final round (search/final_round.py) the two are the winner's and the baseline's
final-round runs, same epochs and seed; without one, the search's best trial and the baseline trial, whose
epochs are printed beside the difference (ASHA never stops the baseline, but it may have stopped the best).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset
from echotune.engine.evaluate_checkpoint import N_RESAMPLES, evaluate_held_out, paired_difference
from echotune.ensemble.members import checkpoint_file
from echotune.metrics import METRIC_LABELS, Estimate
from echotune.results.documents import read_json_document
from echotune.results.layout import HELD_OUT_FILE

MODELS = ("best", "baseline")


def write_held_out(
    experiment_dir: str | Path,
    data: CheckedDataset,
    best: dict | None,
    baseline: dict | None,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict | None:
    """Evaluate the best trial's and the baseline's checkpoints (leaderboard rows) on val and test, write
    held_out.json into the experiment folder and return its content; None when there is no best checkpoint."""
    models = {
        name: row
        for name, row in (("best", best), ("baseline", baseline))
        if row is not None and row.get("checkpoint_path")
    }
    if "best" not in models:
        return None
    if "baseline" in models and models["baseline"]["trial_id"] == models["best"]["trial_id"]:
        models.pop("baseline")  # the baseline won: nothing to compare it with
    split = "test" if data.samples.get("test") else "val"
    which = " and ".join(f"{name} ({row['trial_id']})" for name, row in models.items())
    log(f"Evaluating {which} on val and {split} with {n_resamples} bootstrap resamples of source videos ...")
    evaluations = {
        name: evaluate_held_out(
            checkpoint_file(Path(row["checkpoint_path"])), data, device=device, n_resamples=n_resamples, seed=seed
        )
        for name, row in models.items()
    }
    doc = {
        "split": split,
        "n_resamples": n_resamples,
        "seed": seed,
        **{
            name: {
                "trial_id": models[name]["trial_id"],
                "epochs_planned": models[name].get("epochs_planned"),
                **held.to_dict(),
            }
            for name, held in evaluations.items()
        },
    }
    if "baseline" in evaluations:
        doc["best_minus_baseline"] = {
            s: {
                k: e.to_dict()
                for k, e in paired_difference(
                    evaluations["best"], evaluations["baseline"], s, n_resamples, seed
                ).items()
            }
            for s in evaluations["best"].metrics
        }
    atomic_write_text(Path(experiment_dir) / HELD_OUT_FILE, json.dumps(doc, indent=2) + "\n")
    return doc


def read_held_out(experiment_dir: str | Path) -> dict | None:
    """held_out.json of an experiment folder (None when the search has not written one)."""
    return read_json_document(Path(experiment_dir) / HELD_OUT_FILE)


def held_out_notes(doc: dict) -> list[str]:
    """What the held-out tables show and which checkpoints they come from."""
    lines = [
        f"P/R/F1 at each model's confidence chosen on val, applied unchanged to {doc['split']}; 95 % CIs from "
        f"{doc['n_resamples']} bootstrap resamples of source videos"
        + ("; best - baseline is paired (the same videos for both)" if "best_minus_baseline" in doc else "")
    ]
    for name in MODELS:
        if name in doc:
            m = doc[name]
            planned = f" of {m['epochs_planned']}" if m.get("epochs_planned") else ""
            lines.append(
                f"{name}: trial {m['trial_id']}, checkpoint of epoch {m['epoch']}{planned}, conf {m['conf']:.3f}"
            )
    return lines


def held_out_frames(doc: dict) -> list[tuple[str, pd.DataFrame]]:
    """(caption, table) per split: one row per metric with `value [low, high]` cells for the best trial, the
    baseline and their paired difference; then the best trial's per-class metrics on the held-out split."""
    models = [name for name in MODELS if name in doc]
    frames = []
    for split in doc["best"]["ci95"]:
        columns = {name: doc[name]["ci95"][split] for name in models}
        if "best_minus_baseline" in doc:
            columns["best - baseline"] = doc["best_minus_baseline"][split]
        frame = pd.DataFrame(
            [
                {
                    "metric": label,
                    **{
                        name: format(Estimate(**ci[key]), ".3f" if name in MODELS else "+.3f")
                        for name, ci in columns.items()
                    },
                }
                for key, label in METRIC_LABELS
            ]
        )
        frames.append((split, frame))
    per_class = doc["best"]["per_class"].get(doc["split"], {})
    if per_class:
        frames.append(
            (
                f"best trial per class ({doc['split']})",
                pd.DataFrame([{"class": name, **values} for name, values in per_class.items()]),
            )
        )
    return frames
