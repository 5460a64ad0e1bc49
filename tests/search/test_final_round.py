"""The final round after the search (search/final_round.py), the runnable best_config.yaml and train.py --config.

Selection and the config file on hand-made rows and files (fast); then one real tiny search (Ray, Optuna, ASHA;
64 px, 3 epochs, 3 trials) with a final round of the top 1 and the baseline at 2 fresh seeds, shared by the Ray
tests: what the round trained and wrote, that best_config.yaml trains the winning run again bit for bit, and that
a final round whose driver crashed resumes without running anything twice.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import pytest
import yaml

from echotune.engine import TrainConfig
from echotune.engine.checkpoint import load_checkpoint
from echotune.search.best_config import read_config_file, train_config_of, write_best_config
from echotune.search.final_round import (
    FINAL_DIR,
    Candidate,
    baseline_trial_config,
    choose_winner,
    read_final,
    run_configs,
    run_final_round,
    select_candidates,
)
from echotune.search.search_config import SearchConfig
from echotune.spaces import register_space
from tests.search.test_cli import load

SPACE = "final_round_probe"
EPOCHS = 3


# ----------------------------------------------------------------------------------------- selection (no Ray)
def _row(
    trial_id: str, score: float | None, status: str = "TERMINATED", baseline: bool = False, epochs: int = 12, **config
) -> dict:
    config = {"gn_alpha": 1.0, "epochs": 12, "seed": 0, **config}
    return {
        "trial_id": trial_id,
        "best/val/score": score,
        "status": status,
        "is_baseline": baseline,
        "epochs_trained": epochs,
        "epochs_planned": 12,
        "config_json": json.dumps(config, sort_keys=True),
    }


def test_candidates_are_the_top_k_distinct_configurations_plus_the_baseline():
    rows = [
        _row("diverged", 0.9, status="DIVERGED", gn_alpha=9.0),
        _row("a", 0.5, gn_alpha=0.5),
        _row("a_twin", 0.45, gn_alpha=0.5),  # the same configuration as a: not a second candidate
        _row("stopped", 0.4, status="STOPPED_EARLY", epochs=3, gn_alpha=0.4),  # ASHA-stopped: still a candidate
        _row("c", 0.3, gn_alpha=0.3),
        _row("base", 0.1, baseline=True, gn_alpha=1.5),
        _row("pending", None),
    ]
    candidates = select_candidates(rows, 2, baseline_config={"unused": True})
    assert [(c.search_trial_id, c.search_rank, c.is_baseline) for c in candidates] == [
        ("a", 1, False),
        ("stopped", 3, False),
        ("base", 5, True),
    ]  # ranks among the scored, unfailed trials
    assert candidates[1].search_epochs_trained == 3 and candidates[0].config["gn_alpha"] == 0.5
    # the baseline already among the top k joins once; without a row its configuration comes from the space
    assert [c.search_trial_id for c in select_candidates(rows, 5, {})] == ["a", "stopped", "c", "base"]
    no_row = select_candidates(rows[:3], 1, baseline_config={"gn_alpha": 1.5, "epochs": 12, "seed": 0})
    assert [(c.search_trial_id, c.is_baseline, c.config["gn_alpha"]) for c in no_row] == [
        ("a", False, 0.5),
        (None, True, 1.5),
    ]
    configs = run_configs(candidates, [1, 2], 12)
    assert [(c["gn_alpha"], c["seed"], c["epochs"]) for c in configs] == [
        (0.5, 1, 12),
        (0.5, 2, 12),
        (0.4, 1, 12),
        (0.4, 2, 12),
        (1.5, 1, 12),
        (1.5, 2, 12),
    ]


def test_no_final_round_after_an_interrupted_search():
    from echotune.search.final_round import unfinished_search

    cfg = SearchConfig(num_samples=3)
    done = [_row("a", 0.5), _row("b", 0.2, status="STOPPED_EARLY", epochs=3), _row("c", None, status="ERROR")]
    assert unfinished_search(cfg, done) is None
    assert unfinished_search(cfg, [*done[:2], _row("c", 0.1, status="PENDING")]) == "1 trial(s) unfinished"  # Ctrl-C
    assert unfinished_search(cfg, done[:2]) == "2 of 3 trials started"
    assert unfinished_search(dataclasses.replace(cfg, time_budget_s=60.0), done[:2]) is None  # the budget ended it


def _candidate(name: str, rank: int, scores: list[float], baseline: bool = False, status: str = "TERMINATED"):
    runs = [
        {"seed": seed, "status": status, "epochs_trained": 12, "best_val_score": s}
        for seed, s in zip((1, 2, 3), scores)
    ]
    return Candidate({"name": name}, baseline, name, rank, 1.0 / rank, 12, 12, runs)


def test_the_winner_is_the_best_final_round_mean_not_the_search_best():
    search_best = _candidate("search_best", 1, [0.30, 0.20, 0.22])  # flattered in the search: mean 0.24
    steady = _candidate("steady", 2, [0.26, 0.27, 0.25])  # mean 0.26
    lucky = _candidate("lucky_but_diverged", 3, [0.50, 0.49, 0.48], status="DIVERGED")  # a failed run rules it out
    baseline = _candidate("baseline", 5, [0.10, 0.12, 0.11], baseline=True)
    assert choose_winner([search_best, steady, lucky, baseline], [1, 2, 3], 12) is steady
    short = _candidate("short", 4, [0.9, 0.9])  # a seed missing (its run never finished): out
    assert choose_winner([search_best, short], [1, 2, 3], 12) is search_best
    tied = _candidate("tied", 2, [0.10, 0.12, 0.11])
    assert choose_winner([tied, baseline], [1, 2, 3], 12) is baseline  # ties go to the baseline
    assert choose_winner([lucky], [1, 2, 3], 12) is None


def test_final_round_flags_reach_the_search_config_and_survive_a_resume(tmp_path, capsys):
    from echotune.results.search_record import read_search_record, resumed_config, write_search_record
    from echotune.search.cli.search import search_config_from_args

    parser = load("run").build_parser()
    cfg = search_config_from_args(
        parser, parser.parse_args(["--final-top-k", "2", "--final-seeds", "3", "--storage", str(tmp_path)])
    )
    assert (cfg.final_top_k, cfg.final_seeds) == (2, 3)
    assert (SearchConfig().final_top_k, SearchConfig().final_seeds) == (3, 1)
    write_search_record(cfg, tmp_path / "data.yaml")
    resumed = resumed_config(SearchConfig(name=cfg.name, storage=str(tmp_path)), read_search_record(cfg.local_dir))
    assert (resumed.final_top_k, resumed.final_seeds) == (2, 3)
    for argv, message in (
        (["--final-top-k", "-1"], "final_top_k must be >= 0"),
        (["--final-seeds", "0"], "expected a positive integer"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            search_config_from_args(parser, parser.parse_args(argv))
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ------------------------------------------------------------------------------ best_config.yaml and --config
def test_best_config_round_trips_exactly_and_the_command_line_overrides_it(tmp_path):
    trial = {
        "arch": "shared",
        "model_scale": "test",
        "img_size": 64,
        "lr_stage1": 0.0031234567891234567,
        "weight_decay": 1e-05,
        "gn_alpha": 1,
        "stage_split": (0.2857, 0.5714, 0.1429),
        "stage1_frac": 0.3,
        "stage2_frac": 0.6,
        "seed": 4,
        "epochs": 7,
        "score_weights": {"view_f1": 0.5},
    }
    config = train_config_of(trial)  # the search-only stage fractions are dropped, like the trainable does
    path = write_best_config(tmp_path / "best_config.yaml", config, {"trial_id": "abc", "val/score": 0.25})
    document = yaml.safe_load(path.read_text())
    assert document["trial_id"] == "abc" and set(document["config"]) == set(TrainConfig().to_dict())
    values = read_config_file(path)
    assert TrainConfig.from_dict(values) == TrainConfig.from_dict(
        {k: v for k, v in trial.items() if not k.endswith("_frac")}
    )
    bare = tmp_path / "bare.yaml"
    bare.write_text("model_scale: test\nlr_stage1: 0.002\nstage_split: [0.5, 0.3, 0.2]\n")
    assert read_config_file(bare) == {"model_scale": "test", "lr_stage1": 0.002, "stage_split": [0.5, 0.3, 0.2]}
    from echotune.search.cli import train

    cfg = train.config_from_args(
        load("train").build_parser().parse_args(["--config", str(path), "--seed", "9", "--set", "gn_alpha=0.5"])
    )
    assert (cfg.seed, cfg.gn_alpha, cfg.lr_stage1, cfg.epochs) == (9, 0.5, trial["lr_stage1"], 7)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("config: [unclosed\n", "not valid YAML (line 2, column 1)"),
        ("- epochs: 3\n", "expected a mapping of TrainConfig fields"),
        ("trial_id: x\nconfig: 3\n", "'config:' expected a mapping of TrainConfig fields, got int"),
        ("config:\n  epochs: 3\n  learning_rate: 0.1\n", "'config:' unknown TrainConfig field(s) learning_rate"),
        ("epochs: ten\n", "epochs: expected an integer, got 'ten'"),
        ("stage_split: [0.5, 0.5]\n", "stage_split: expected a list of three numbers"),
        ("img_size: 100\n", "img_size must be a multiple of 32 and >= 64, got 100"),
    ],
)
def test_train_config_refuses_a_bad_file_naming_it_before_anything_is_written(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    assert load("train").main(["--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {path}") and message in err, err
    assert not out.exists()


# ------------------------------------------------------------------------- one real search with a final round
def _constants() -> dict:
    # view macro-F1 weighs in, so that tiny 3-epoch runs (which detect nothing and whose view kappa is ~0) do not
    # all score exactly 0: the final round then has real numbers to rank
    return {
        "arch": "shared",
        "balance": "gradnorm",
        "model_scale": "test",
        "optimizer": "adamw",
        "lr_stage2": 1e-3,
        "lr_stage3": 3e-4,
        "stage_split": (0.3, 0.5, 0.2),
        "img_size": 64,
        "score_weights": {"view_f1": 1.0},
    }


def _baseline(profile) -> dict:
    return {**_constants(), "gn_alpha": 1.5, "lr_stage1": 3e-3}


def _define(trial, profile) -> dict:
    """Final-round test space: gn_alpha float [0, 3], lr_stage1 float [1e-3, 3e-2] log."""
    trial.suggest_float("gn_alpha", 0.0, 3.0)
    trial.suggest_float("lr_stage1", 1e-3, 3e-2, log=True)
    return _constants()


@pytest.fixture(scope="module")
def final_search(tiny_synthetic, tmp_path_factory):
    """(SearchConfig, run_search's summary, experiment folder): 3 trials x 3 epochs with ASHA, then the final
    round of the top 1 and the baseline at seeds 1 and 2, as run.py runs it."""
    from echotune.search.orchestrate import run_search
    from echotune.spaces.registry import _SPACES

    register_space(SPACE, baseline_config=_baseline)(_define)
    try:
        cfg = SearchConfig(
            space=SPACE,
            name="final",
            storage=str(tmp_path_factory.mktemp("final") / "results"),
            num_samples=3,
            max_epochs=EPOCHS,
            img_size=64,
            concurrency=2,
            seed=0,
            final_top_k=1,
            final_seeds=2,
        )
        summary = run_search(cfg, tiny_synthetic, resume=False)
        yield cfg, summary, Path(cfg.experiment_dir)
    finally:
        _SPACES.pop(SPACE, None)


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.ray
def test_the_final_round_retrains_top_k_and_the_baseline_at_full_epochs_with_fresh_seeds(final_search):
    cfg, summary, experiment = final_search
    doc = read_final(experiment)
    assert doc["complete"] and doc["seeds"] == [1, 2] and doc["epochs"] == EPOCHS
    rows = summary["rows"]
    baseline_row = next(r for r in rows if r["is_baseline"])
    assert json.loads(baseline_row["config_json"]) == baseline_trial_config(cfg)  # the space's baseline, as Ray ran it
    scored = sorted((r for r in rows if r["best/val/score"] is not None), key=lambda r: -r["best/val/score"])
    expected = [r["trial_id"] for r in scored[:1]] + [baseline_row["trial_id"]] * (baseline_row not in scored[:1])
    assert [c["search_trial_id"] for c in doc["candidates"]] == expected
    runs = {}
    for candidate in doc["candidates"]:
        assert [r["seed"] for r in candidate["runs"]] == [1, 2]
        for run in candidate["runs"]:  # every run the full budget, whatever ASHA gave it in the search
            assert (run["status"], run["epochs_trained"]) == ("TERMINATED", EPOCHS), run
            params = json.loads((experiment / FINAL_DIR / f"trial_{run['trial_id']}" / "params.json").read_text())
            assert params == {**candidate["config"], "seed": run["seed"]}  # the same config, a fresh seed
            runs[run["trial_id"]] = run
        scores = [r["best_val_score"] for r in candidate["runs"]]
        assert candidate["val_mean"] == pytest.approx(statistics.fmean(scores))
    assert sorted(p.name for p in (experiment / FINAL_DIR).glob("trial_*")) == sorted(f"trial_{t}" for t in runs)
    winner = doc["candidates"][doc["winner"]["index"]]
    assert winner["val_mean"] == max(c["val_mean"] for c in doc["candidates"])
    assert doc["trial_epochs"] == {
        "search": sum(r["epochs_trained"] for r in rows),
        "final_round": EPOCHS * len(runs),
        "total": sum(r["epochs_trained"] for r in rows) + EPOCHS * len(runs),
    }
    # the final fit: the winner's and the baseline's seed-1 runs, measured once on test (held_out.json)
    fit, held = doc["final_fit"], json.loads((experiment / "held_out.json").read_text())
    assert (fit["seed"], fit["epochs"], fit["split"]) == (1, EPOCHS, "test")
    assert fit["winner"]["trial_id"] == winner["runs"][0]["trial_id"] == held["best"]["trial_id"]
    assert fit["winner"]["test"] == held["best"]["ci95"]["test"]["score"]
    if fit["baseline_is_winner"]:
        assert winner["is_baseline"] and fit["baseline"] is None and "baseline" not in held
    else:
        baseline = next(c for c in doc["candidates"] if c["is_baseline"])
        assert fit["baseline"]["trial_id"] == baseline["runs"][0]["trial_id"] == held["baseline"]["trial_id"]
        difference = fit["difference"]["test"]
        assert difference == held["best_minus_baseline"]["test"]["score"]
        assert difference["value"] == pytest.approx(fit["winner"]["test"]["value"] - fit["baseline"]["test"]["value"])
        assert difference["low"] <= difference["value"] <= difference["high"]


@pytest.mark.ray
def test_best_config_yaml_names_the_winner_and_train_py_reproduces_its_final_round_run(
    final_search, tiny_synthetic, tmp_path
):
    cfg, summary, experiment = final_search
    doc = read_final(experiment)
    winner = doc["candidates"][doc["winner"]["index"]]
    assert summary["best"]["trial_id"] == winner["search_trial_id"] == doc["winner"]["search_trial_id"]
    run = winner["runs"][0]
    best_config = yaml.safe_load((experiment / "best_config.yaml").read_text())
    assert (best_config["trial_id"], best_config["final_round_trial_id"]) == (
        winner["search_trial_id"],
        run["trial_id"],
    )
    assert (
        best_config["final_round_seeds"] == [1, 2]
        and best_config["checkpoint"] == doc["final_fit"]["winner"]["checkpoint"]
    )
    assert best_config["config"] == train_config_of({**winner["config"], "seed": 1})
    assert (best_config["config"]["seed"], best_config["config"]["epochs"]) == (1, EPOCHS)
    out = tmp_path / "again"
    assert (
        load("train").main(
            [
                "--config",
                str(experiment / "best_config.yaml"),
                "--data",
                str(tiny_synthetic.config.yaml_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    again = load_checkpoint(out / "last.pt")["history"]
    ray_run = _results(experiment / FINAL_DIR / f"trial_{run['trial_id']}")
    assert [m["epoch"] for m in again] == [r["epoch"] for r in ray_run] == list(range(1, EPOCHS + 1))
    for key in ("val/score", "train/loss", "val/view_f1", "gradnorm/w_det"):
        assert [m[key] for m in again] == pytest.approx([r[key] for r in ray_run], abs=1e-6), key


class _DriverCrash(Exception):
    pass


def _crash_once(marker: Path):
    """A progress-callback factory whose callback crashes the driver loop once (the marker file outlives the Tuner's
    pickled copy of it), right after an experiment snapshot that holds a finished run and a run part-way through:
    when a checkpoint of a run's epoch below the last arrives after another run has finished, the callback holds
    the loop for longer than the snapshot period (TUNE_GLOBAL_CHECKPOINT_S = 1 s, search/orchestrate.py), so the
    same step of Ray's loop ends with a snapshot (get_state is called with it), and the next step begins with the
    crash."""
    from ray import tune

    class CrashOnce(tune.Callback):
        def __init__(self):
            self.finished, self.armed, self.snapshots = False, False, 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished = True

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            part_way = 0 < (trial.last_result or {}).get("epoch", 0) < EPOCHS
            if self.finished and part_way and not self.armed and not marker.exists():
                self.armed = True
                time.sleep(1.5)

        def get_state(self):
            self.snapshots += self.armed
            return None

        def on_step_begin(self, iteration, trials, **info):
            if self.snapshots and not marker.exists():
                marker.touch()
                raise _DriverCrash("driver crashed mid final round")

    return lambda total: CrashOnce()


@pytest.mark.ray
def test_an_interrupted_final_round_resumes_its_runs_and_a_finished_one_is_reused(
    final_search, tiny_synthetic, tmp_path
):
    """The search's folder without its final round, then a final round (top 1 + baseline, seeds 1-3: at least 3
    runs on 2 lanes) whose driver crashes after a run has finished and another is part-way; run again it restores
    final/: the finished run is kept as it was, the interrupted one continues from its checkpoint, each planned
    run exists once and trained every epoch. A third call reuses the complete final.json without Ray."""
    import ray

    cfg, _, experiment = final_search
    copy = tmp_path / "results" / experiment.name
    shutil.copytree(experiment, copy, ignore=shutil.ignore_patterns(FINAL_DIR, "final.json", "held_out.json"))
    cfg = dataclasses.replace(cfg, storage=str(tmp_path / "results"), final_top_k=1, final_seeds=3)
    log: list[str] = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with pytest.raises(_DriverCrash):
            run_final_round(cfg, tiny_synthetic, progress=_crash_once(tmp_path / "crashed"), log=log.append)
        plan = read_final(copy)
        assert plan["complete"] is False and plan["seeds"] == [1, 2, 3]
        planned_runs = 3 * len(plan["candidates"])
        # what the crash left in storage (result files are uploaded with each experiment snapshot)
        before = {p.name: _results(p) for p in (copy / FINAL_DIR).glob("trial_*") if (p / "result.json").is_file()}
        finished = {name for name, results in before.items() if len(results) == EPOCHS}
        part_way = {name for name, results in before.items() if 0 < len(results) < EPOCHS}
        assert finished and part_way and len(finished) < planned_runs, {n: len(r) for n, r in before.items()}
        doc = run_final_round(cfg, tiny_synthetic, log=log.append)
    finally:
        ray.shutdown()
    assert doc["complete"] and any("Final round (resumed)" in line for line in log)
    assert [c["search_trial_id"] for c in doc["candidates"]] == [c["search_trial_id"] for c in plan["candidates"]]
    trial_dirs = sorted((copy / FINAL_DIR).glob("trial_*"))
    assert len(trial_dirs) == planned_runs  # one run per (candidate, seed): none started twice
    assert all(len(c["runs"]) == 3 and all(r["epochs_trained"] == EPOCHS for r in c["runs"]) for c in doc["candidates"])
    for name in finished:  # kept as it was
        assert _results(copy / FINAL_DIR / name) == before[name]
    restarts = {}
    for name in part_way:  # continued from the checkpoint the snapshot held: at most one reported epoch redone
        results = _results(copy / FINAL_DIR / name)
        restarts[name] = start = results[-1]["restored_from_epoch"]
        assert before[name][-1]["epoch"] - 1 <= start < EPOCHS, [
            (r["epoch"], r["restored_from_epoch"]) for r in results
        ]
        assert [r["epoch"] for r in results if r["restored_from_epoch"] == start] == list(range(start + 1, EPOCHS + 1))
    assert max(restarts.values()) >= 1, restarts  # the run whose checkpoint the crash waited for: not from scratch
    state = {p: p.stat().st_mtime_ns for p in (copy / FINAL_DIR).rglob("*")}
    assert run_final_round(cfg, tiny_synthetic, log=log.append) == doc  # complete: reused as it is, without Ray
    assert {p: p.stat().st_mtime_ns for p in (copy / FINAL_DIR).rglob("*")} == state
