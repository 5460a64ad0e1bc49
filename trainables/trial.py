"""The Ray Tune trainable: a trial's config dict -> TrainConfig -> engine `fit` -> `tune.report(metrics, checkpoint)`.

One function for every architecture (the config's `arch` says which). The search binds the space's
`to_train_config` (which drops search-only parameters such as `stage1_frac`) with `tune.with_parameters`, so a
searched value travels one way: spaces/ -> search/tuner.py -> here -> echotune.engine (fit -> schedule -> steps).

The engine writes `last.pt` into a local folder each epoch; each report hands Ray a one-file checkpoint folder
(hard-linked, not copied) that Ray persists to the experiment's storage. On a retry or a resumed search,
`tune.get_checkpoint()` gives that folder back and `fit(resume_from=...)` continues from the next epoch.
Under population-based training (search/pbt.py) it may be another member's checkpoint, with this member's new,
mutated config: each checkpoint folder names the trial that wrote it (ORIGIN_FILE), reported as
`restored_from_trial` beside `restored_from_epoch`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray import tune

from echotune.atomic import atomic_write_text
from echotune.data.check import CheckedDataset
from echotune.engine import NonFiniteLossError, TrainConfig, fit
from echotune.engine.checkpoint import load_checkpoint
from echotune.metrics import REPORTED_VAL_METRICS
from echotune.results.layout import CHECKPOINT_FILE, ORIGIN_FILE
from echotune.trainables.node import require_dataset_on_node

WORK_PREFIX = "echotune-trial-"  # + "<pid of the worker process>-<random>": a trial's local work folder
# The final report of a diverged trial holds DIVERGED_KEY = 1.0 and the reason under ERROR_KEY; the search's
# scheduler bridges, progress display and leaderboard read them by these names.
DIVERGED_KEY = "diverged"
ERROR_KEY = "error"


def make_work_dir() -> Path:
    """A fresh work folder in the system temp folder, named after this process (see remove_orphaned_work_dirs)."""
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_orphaned_work_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove the work folders on this machine whose worker process is gone and return them.

    A trial removes its own folder when it ends, but a worker killed by SIGKILL, the OOM killer or a node's
    shutdown cannot: its folder (the run's last.pt, up to tens of MB) stays. Each trial sweeps at its start,
    and the search at its end. A folder whose pid is alive stays, even if the pid was reused by another
    process (a later sweep gets it); folders of the old unnamed form are not touched."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        pid = path.name.removeprefix(WORK_PREFIX).split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def train_trial(config: dict, data: CheckedDataset, *, to_train_config: Callable[[dict], dict]) -> None:
    """Function trainable: `tune.with_parameters(train_trial, data=checked, to_train_config=spaces.to_train_config)`.

    `config` is the trial's sampled configuration; `to_train_config(config)` must give TrainConfig fields only."""
    started_at = time.time()  # wall clock at the trainable's first line: the benchmarks' trial start-up time
    cfg = TrainConfig.from_dict(to_train_config(config))
    require_dataset_on_node(data)  # on a cluster the images must be at the driver's paths on this node too
    # Every result names the Ray node that produced it (Ray's own node_ip/hostname cannot tell apart two nodes
    # of one machine, and a retried trial may move to another node).
    node_id = ray.get_runtime_context().get_node_id()
    trial_id = tune.get_context().get_trial_id()
    remove_orphaned_work_dirs()  # left by workers killed earlier on this node
    work = make_work_dir()
    resume_from, restored_epoch, restored_trial = None, 0, trial_id
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry after a crash, a resumed search, or a PBT clone: continue after its epoch
        restored = Path(checkpoint.to_directory(str(work / "restored")))
        resume_from = restored / CHECKPOINT_FILE
        restored_epoch = int(load_checkpoint(resume_from)["epoch"])
        origin = restored / ORIGIN_FILE
        restored_trial = json.loads(origin.read_text())["trial_id"] if origin.is_file() else trial_id

    last_report_s = [0.0]  # how long the previous tune.report (checkpoint upload + driver hand-off) blocked

    def report(metrics: dict, checkpoint_path: Path | None) -> None:
        folder = Path(tempfile.mkdtemp(prefix="report-", dir=work))
        os.link(checkpoint_path, folder / CHECKPOINT_FILE)  # Ray copies it to storage; a link avoids one copy
        atomic_write_text(folder / ORIGIN_FILE, json.dumps({"trial_id": trial_id}))
        # restored_from_epoch: the checkpoint this run of the trial started from (0: from scratch), so a retry
        # or resume is visible in every result, with how much it had to redo; restored_from_trial: whose checkpoint
        # it was (this trial's own, or the PBT donor's).
        # `epoch` (from the engine) is ASHA's time axis: every epoch is reported, so rungs see each trial at
        # exactly their epochs (search/scheduler.py).
        metrics = {
            **metrics,
            "epochs_planned": cfg.epochs,
            "node_id": node_id,
            "restored_from_epoch": restored_epoch,
            "restored_from_trial": restored_trial,
            "trial_started_at": started_at,
            "report_s": last_report_s[0],
        }  # report_s: 0 on the first report
        start = time.perf_counter()
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        last_report_s[0] = time.perf_counter() - start
        shutil.rmtree(folder, ignore_errors=True)

    epochs_done = [0]

    def report_and_count(metrics: dict, checkpoint_path: Path | None) -> None:
        epochs_done[0] = int(metrics["epoch"])
        report(metrics, checkpoint_path)

    try:
        fit(
            cfg,
            data,
            report=report_and_count,
            resume_from=resume_from,
            out_dir=work / "run",
            log=lambda _: None,
            strict_resume=True,
        )  # a retry, resume or PBT clone continues under this trial's own config
    except NonFiniteLossError as exc:
        # Divergence is deterministic: a retry would diverge again, so end the trial with a final report that
        # says so (Optuna records it as FAIL, the leaderboard shows the reason) instead of raising into retries.
        tune.report(
            {
                **{m: 0.0 for m in REPORTED_VAL_METRICS},
                "epoch": epochs_done[0],
                "epochs_planned": cfg.epochs,
                DIVERGED_KEY: 1.0,
                ERROR_KEY: str(exc),
                "node_id": node_id,
                "restored_from_epoch": restored_epoch,
                "restored_from_trial": restored_trial,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
