"""Run a search end to end: start Ray, fit (or resume) the Tuner with live progress, then summarise.

Writes into results/<name>/: Ray Tune's experiment files, optuna.db, leaderboard.parquet, the final round's
final/ and final.json, held_out.json, best_config.yaml (runnable: echotune train --config).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import ray

from echotune.data.check import CheckedDataset
from echotune.data.leakage import guard_leakage
from echotune.metrics import SCORE_METRIC
from echotune.results.layout import BEST_CONFIG_FILE, BEST_SCORE_COLUMN, FAILED_STATUSES, is_object_store
from echotune.results.search_record import read_search_record, write_search_record
from echotune.search.best_config import reproduce_command, train_config_of, write_best_config
from echotune.search.cluster import ClusterError, ClusterFacts, alive_nodes, prepare_cluster
from echotune.search.final_round import headline, run_final_round, write_winner_config
from echotune.search.progress import DEFAULT_EVERY_S, SearchStatus
from echotune.search.search_config import SearchConfig
from echotune.search.tuner import build_tuner, restore_tuner
from echotune.trainables.trial import remove_orphaned_work_dirs

# Save the experiment state (trials and their latest checkpoints, searcher) at least every second, so a killed
# driver loses at most the epoch each running trial was in (Ray's default adapts the period to its overhead).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we snapshot on purpose
# Ray logs each failed trial's whole traceback (~40 lines, mostly Ray's frames); SearchStatus prints the trial, its
# error, the end of its traceback and of its worker's stderr instead. Set it to 1 for Ray's logs as well.
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


# The live status (search/progress.py) replaced ProgressPrinter; experiments saved by earlier versions name it
# in their tuner.pkl, so it stays importable under this name for --resume.
ProgressPrinter = SearchStatus


def close_orphaned_optuna_trials(cfg: SearchConfig) -> int:
    """Trials left RUNNING in the study (asked by a driver that died before Ray recorded them) become FAIL."""
    if cfg.scheduler == "pbt":  # population-based training runs without Optuna: there is no study
        return 0
    study = optuna.load_study(study_name=cfg.name, storage=cfg.optuna_storage_url)
    closed = 0
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        optuna.trial.Trial(study, frozen._trial_id).set_user_attr(
            "orphaned", "asked by a driver that was interrupted before Ray recorded it"
        )
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        closed += 1
    return closed


def start_ray(
    address: str | None,
    cpus: int | None = None,
    dashboard_host: str | None = None,
    log: Callable[[str], None] | None = None,
) -> str | None:
    """Start a local Ray (address None) or connect to a running cluster: `auto`, HOST:PORT or ray://HOST:10001.

    A local Ray starts no dashboard unless `dashboard_host` names the interface it may listen on: 127.0.0.1
    keeps it (and the job API behind it, which runs any command) reachable from this machine only. Returns the
    dashboard's address when one was started. `log`: told when Ray starts and when it is up (it takes seconds:
    the search's first status lines)."""
    log = log or (lambda message: None)
    log(f"starting Ray ({f'connecting to {address}' if address else 'local'}) ...")
    dashboard_url = _init_ray(address, cpus, dashboard_host)
    log("Ray is up; starting the Tuner ...")
    return dashboard_url


def _init_ray(address: str | None, cpus: int | None, dashboard_host: str | None) -> str | None:
    if not address:
        dashboard = (
            {"include_dashboard": False}
            if dashboard_host is None
            else {"include_dashboard": True, "dashboard_host": dashboard_host}
        )
        context = ray.init(num_cpus=cpus, log_to_driver=False, configure_logging=False, **dashboard)
        return context.dashboard_url if dashboard_host is not None else None
    # Through Ray Client the search loop (and SearchStatus) runs on the cluster: its output must be streamed.
    client = address.startswith("ray://")
    # Ray Client: the head's proxy forks one server process per connection, and that fork now and then dies at
    # birth (a gRPC fork race in Ray 2.60, ray-project/ray#63202): ConnectionAbortedError "Initialization failure
    # from server ... Starting Ray client server failed" (or "Proxy failed to Connect to backend" when the server
    # is slow to come up). A new connection gets a new server, so only those are retried, with back-off. Nothing
    # else is: Ray itself waits ~30 s for an unreachable client port, and over ray:// a missing or wrong token
    # looks just like that ("ray client connection timeout"); an authentication failure must fail at once.
    backoff_s = (2.0, 4.0, 8.0) if client else ()
    for attempt in range(len(backoff_s) + 1):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=client)
            return None
        except ConnectionError as exc:  # Ray logs the cause (e.g. InvalidAuthToken) but raises a generic message
            text = str(exc)
            server_startup_failed = isinstance(exc, ConnectionAbortedError) and not any(
                word in text.lower() for word in ("authenticat", "authtoken", "auth token")
            )
            if not server_startup_failed or attempt == len(backoff_s):
                raise ConnectionError(
                    f"could not connect to the Ray cluster at {address}: {exc}. {auth_hint()}"
                ) from exc
            reason = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), repr(exc))
            print(
                f"warning: Ray Client connection {attempt + 1} of {len(backoff_s) + 1} to {address} failed on the "
                f"cluster's side ({reason}); retrying in {backoff_s[attempt]:g} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(backoff_s[attempt])


def auth_hint() -> str:
    """What to check when a connection fails: Ray 2.60 clusters use token authentication, and only `ray start
    --head` and `ray.init(address="auto")` turn it on by themselves on the client side."""
    where = "~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; `ray get-auth-token` prints it on the head"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (
            f"If the cluster uses token authentication (Ray logs InvalidAuthToken above), export "
            f"RAY_AUTH_MODE=token and give this machine the cluster's token ({where}); see docs/cluster.md."
        )
    return f"Check that this machine's token is the cluster's ({where}) and that the address is right."


def describe_cluster(facts: ClusterFacts) -> str:
    nodes = "; ".join(
        f"{n.hostname} {n.ip}{' (head)' if n.is_head else ''}: "
        + ", ".join(
            f"{v:g} {k}"
            for k, v in sorted(n.resources.items())
            if k in ("CPU", "GPU") or not (k.startswith("node:") or k.endswith("memory"))
        )
        for n in facts.nodes
    )
    return (
        f"Ray cluster{' (through Ray Client)' if facts.client else ''}: {len(facts.nodes)} node(s) [{nodes}]; "
        f"dataset, results storage and code (fingerprint {facts.code}) checked on every node"
    )


def build_final_ensemble(cfg: SearchConfig, data: CheckedDataset, top_k: int):
    """The ensemble of the top-k trials (tuned on val, measured on test); None, with the reason, when it cannot
    be built (e.g. fewer usable trials than needed, no test split)."""
    from echotune.ensemble import build_ensemble

    split = "test" if data.samples.get("test") else "val"
    print(f"\nEnsemble of the top {top_k} trials (weights and thresholds tuned on val, measured on {split}):")
    try:
        return build_ensemble(
            cfg.experiment_dir,
            data,
            top_k=top_k,
            split=split,
            seed=cfg.seed,
            allow_leaky_splits=cfg.allow_leaky_splits,
            log=lambda m: print(textwrap.indent(m, "  "), flush=True),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"  skipped: {exc}")
        return None


def summarise(
    cfg: SearchConfig,
    data: CheckedDataset | None = None,
    ensemble_top_k: int = 0,
    top: int = 5,
    final: dict | None = None,
) -> dict:
    """Leaderboard parquet, the ensemble (ensemble_top_k > 0), the best trial and the baseline on val and test
    (held_out.json), then the leaderboard table, plots, report.html and best_config.yaml; returns the best and
    baseline rows. `final`: the final round's final.json content (search/final_round.py): its winner is the best,
    its final fit (already in held_out.json) the headline, and best_config.yaml its winning run's config."""
    from echotune.reporting.held_out import write_held_out
    from echotune.search.leaderboard_report import (
        build_report,
        render_text,
        write_parquets,
        write_plots,
        write_report_html,
    )

    if is_object_store(cfg.storage):  # the trial files are in the object store; the analysis reads a filesystem
        print(
            f"Search finished. For the leaderboard, sync {cfg.experiment_dir} to a local folder and run "
            f"echotune leaderboard on it (with --write for the ensemble builder's leaderboard.parquet)."
        )
        return {"best": None, "baseline": None, "rows": [], "report": None}
    experiment = Path(cfg.experiment_dir)
    report = build_report([experiment], by="score", top=top)
    write_parquets(report)  # the ensemble picks its members from it
    ensemble = build_final_ensemble(cfg, data, ensemble_top_k) if ensemble_top_k > 0 and data is not None else None
    rows = report.experiments[0].rows
    # candidates for "best": trials with a score and a checkpoint (a diverged trial's zeros are no score; ties,
    # e.g. every trial at 0 after a few epochs, keep the leaderboard's order)
    ranked = sorted(
        (
            r
            for r in rows
            if r[BEST_SCORE_COLUMN] is not None and r["checkpoint_path"] and r["status"] not in FAILED_STATUSES
        ),
        key=lambda r: -r[BEST_SCORE_COLUMN],
    )
    best = ranked[0] if ranked else None
    baseline = next((r for r in ranked if r["is_baseline"]), None)
    winner = (final or {}).get("winner")
    if winner is not None:  # the final round chose among the top trials on fresh full-budget runs
        best = next((r for r in rows if r["trial_id"] == winner["search_trial_id"]), best)
    # held_out.json, before the text and report.html, which show it: the final round wrote the final fit's
    if data is not None and not (final or {}).get("final_fit"):
        print()
        write_held_out(experiment, data, best, baseline, seed=cfg.seed, log=lambda m: print(m, flush=True))
    print("\n" + render_text(report, "table"))
    plots = write_plots(report, experiment / "plots", log=lambda m: print(f"  ({m})"))
    html = write_report_html(report, plots, experiment / "report.html")
    data_yaml = data.config.yaml_path if data is not None else read_search_record(cfg.local_dir).get("data_yaml")
    if winner is not None:
        path = write_winner_config(experiment, final, data_yaml)
        print(f"\n{headline(final)}")
        print(
            f"Best: trial {winner['search_trial_id']}, final-round val/score {winner['val_mean']:.4f} (mean over "
            f"{len(final['seeds'])} seed(s)); runnable config {path}: echotune train --config {path}"
        )
    elif best is not None:
        path = experiment / BEST_CONFIG_FILE
        write_best_config(
            path,
            train_config_of(json.loads(best["config_json"])),
            {
                "trial_id": best["trial_id"],
                "selected_by": "the search's best val/score (no final round)",
                SCORE_METRIC: best[BEST_SCORE_COLUMN],
                "checkpoint": best["checkpoint_path"],
                "reproduce": reproduce_command(path, data_yaml),
            },
        )
        print(
            f"\nBest trial {best['trial_id']}: val/score {best[BEST_SCORE_COLUMN]:.4f}; checkpoint "
            f"{best['checkpoint_path']}; runnable config {path}"
        )
    if ensemble is not None:
        split = ensemble.split
        print(
            f"Ensemble of {len(ensemble.members)} on {split}: "
            f"score {ensemble.ensemble_metrics[f'{split}/score']:.4f} vs "
            f"best single trial {ensemble.single_best['metrics'][f'{split}/score']:.4f} "
            f"(gain {ensemble.ci['gain']['score']:+.4f}, paired 95 % CI); {ensemble.manifest_path}"
        )
    print(f"Plots in {experiment / 'plots'}; report {html}; more: echotune leaderboard {experiment}")
    return {"best": best, "baseline": baseline, "rows": rows, "report": report, "ensemble": ensemble, "final": final}


def trial_fit_problem(cfg: SearchConfig, nodes: list[dict[str, float]]) -> tuple[str, str] | None:
    """(what does not fit, what to do) when no node offers a trial's resources, else None. `nodes`: each alive
    node's Ray resources, e.g. {"CPU": 8.0, "GPU": 1.0}. A trial takes its CPUs and GPUs from one node."""
    wanted = {"CPU": cfg.cpus_per_trial, "GPU": cfg.gpus_per_trial}
    options = {"CPU": "--cpus-per-trial", "GPU": "--gpus-per-trial"}
    for key in ("GPU", "CPU"):
        largest = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if wanted[key] > largest:
            fix = (
                "use --gpus-per-trial 0 to train on CPU"
                if key == "GPU" and largest == 0
                else f"use {options[key]} {largest:g} or less"
            )
            return (
                f"{options[key]} {wanted[key]:g} needs {wanted[key]:g} {key}(s) per trial, but no node of this "
                f"Ray cluster has that many (largest: {largest:g} {key})"
            ), fix
    if not any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes):
        offered = ", ".join(f"{n.get('CPU', 0.0):g} CPU + {n.get('GPU', 0.0):g} GPU" for n in nodes)
        return (
            f"a trial needs {wanted['CPU']:g} CPU + {wanted['GPU']:g} GPU on one node, but no node of this Ray "
            f"cluster has both (nodes: {offered})"
        ), "lower --cpus-per-trial or --gpus-per-trial"
    return None


def check_trial_fits(cfg: SearchConfig, nodes: list[dict[str, float]]) -> None:
    """Raise ClusterError when no node can run a trial: Ray Tune would wait for such a node forever."""
    problem = trial_fit_problem(cfg, nodes)
    if problem is not None:
        raise ClusterError("; ".join(problem))


def run_search(
    cfg: SearchConfig,
    data: CheckedDataset,
    resume: bool,
    address: str | None = None,
    ensemble_top_k: int = 0,
    dashboard_host: str | None = None,
    status_every: float = DEFAULT_EVERY_S,
) -> dict:
    """`status_every`: seconds between the live status lines of the search and of the final round
    (search/progress.py; 0: none, the per-epoch, per-trial and failure lines stay)."""
    start = time.time()
    # Leaky splits are refused before Ray starts unless the search allows them (run.py has warned already);
    # allowed, search.json records the counts, and the leaderboard and report.html show them.
    leaky_splits = guard_leakage(data, cfg.allow_leaky_splits, log=None)
    status = SearchStatus(cfg.num_samples, cfg.max_epochs, label=cfg.name, every_s=status_every)
    dashboard = start_ray(address, dashboard_host=dashboard_host, log=status.note)
    if dashboard:
        print(f"Ray dashboard: http://{dashboard}", flush=True)
    try:
        # Before anything is written. A local Ray never grows; on a cluster an autoscaler may add the node later.
        nodes = [node.resources for node in alive_nodes()]
        if not address:
            check_trial_fits(cfg, nodes)
        elif (problem := trial_fit_problem(cfg, nodes)) is not None:
            print(f"warning: {problem[0]}; trials will wait until the autoscaler adds such a node", flush=True)
        # On an existing cluster, refuse what would fail on some node (storage, dataset, code) before any trial.
        cluster = prepare_cluster(cfg.storage, cfg.shared_storage, data) if address else None
        if cluster is not None:
            print(describe_cluster(cluster), flush=True)
        write_search_record(
            cfg,
            data.config.yaml_path,
            resumed=resume,
            leaky_splits=leaky_splits,
            cluster=cluster.to_record() if cluster is not None else None,
        )
        tuner = restore_tuner(cfg, data, status) if resume else build_tuner(cfg, data, [status])
        tuner.fit()
        closed = close_orphaned_optuna_trials(cfg)
        if closed:
            print(f"Closed {closed} Optuna trial(s) left RUNNING by an interrupted driver as FAIL.")
        if not address:  # killed workers' work folders on this machine (a cluster's trials sweep their own nodes)
            remove_orphaned_work_dirs()
        # Before the summary: the top trials and the baseline again at full budget with fresh seeds (final.json)
        final = run_final_round(
            cfg,
            data,
            log=lambda m: print(m, flush=True),
            progress=lambda runs: SearchStatus(
                runs, cfg.max_epochs, label=f"{cfg.name} final round", every_s=status_every
            ),
        )
        summary = summarise(cfg, data, ensemble_top_k, final=final)
        summary["status"] = status  # the search's live status: its last counts, when its lines were printed
    finally:
        ray.shutdown()
    print(f"Search wall time {time.time() - start:.0f} s; results in {cfg.experiment_dir}")
    return summary
