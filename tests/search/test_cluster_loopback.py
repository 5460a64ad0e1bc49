"""A real two-node Ray cluster on this machine, driven the ways docs/cluster.md documents.

Two `ray start --block` processes, a head and a worker node carrying a custom resource, each with its own temp
dir as if on separate machines, with Ray's token authentication on (a token file of the test's own, never
~/.ray) and one CPU each, so two concurrent one-CPU trials must use both nodes. Results go to a folder both
nodes see (this machine's disk, hence --shared-storage) or to a file:// "bucket". Every route runs the real CLI
in a subprocess, as a user would: `python search/run.py --address HOST:PORT`, `--address ray://HOST:PORT`
(Ray Client) and `ray job submit --working-dir . -- python search/run.py --address auto` (the last two need
ray[default], which the test extra installs; skipped without it). The module fixture always tears the cluster
down: SIGTERM to each `ray start` it started, then SIGKILL to what is left of that process's own group.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.search.test_cli import load

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter's environment
WORKER_RESOURCE = "loopback_worker"
HAS_DASHBOARD = importlib.util.find_spec("aiohttp") is not None  # ray[default]: dashboard and job server
HAS_CLIENT = importlib.util.find_spec("grpc") is not None  # ray[client] (in ray[default]): the ray:// server
NEEDS_CLUSTER_EXTRA = "pip install -e '.[test]' (ray[default])"
# --no-reuse-actors: with 1-2 s trials, a reused head worker would take the second trial whenever the first ends
# before the worker node's actor has started (Tune drops the pending actor), and "ran on both nodes" would be luck.
SEARCH_ARGS = [
    "--space",
    "gradnorm",
    "--searcher",
    "random",
    "--scheduler",
    "fifo",
    "--num-samples",
    "2",
    "--concurrency",
    "2",
    "--max-epochs",
    "3",
    "--img-size",
    "64",
    "--ensemble-top-k",
    "0",
    "--seed",
    "0",
    "--no-reuse-actors",
    "--final-top-k",
    "0",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LoopbackCluster:
    gcs_address: str
    client_address: str
    dashboard_address: str | None
    env: dict[str, str]  # what every process that talks to the cluster needs: token auth
    root: Path  # a folder both nodes see
    logs: Path
    head_temp_dir: Path
    nodes: list[dict] = field(default_factory=list)  # Ray's node records, as seen when the cluster came up
    worker: subprocess.Popen | None = None  # the second node's `ray start --block` (its own process group)

    def ray_logs(self, pattern: str) -> str:
        """The head's Ray log files matching `pattern` (for failure messages)."""
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.head_temp_dir.glob(f"session_latest/logs/{pattern}"))
        )

    def run(self, args: list[str], timeout: float = 420) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        (self.logs / f"cmd-{time.time():.0f}.log").write_text(f"{args}\n{result.stdout}\n{result.stderr}")
        return result


def _wait_for_nodes(env: dict, address: str, count: int, timeout_s: float = 90) -> list[dict]:
    """Ray's node table once `count` nodes are alive (polled from a driver subprocess, as a user would see it)."""
    script = (
        "import json, sys, time, ray\n"
        f"ray.init(address={address!r}, include_dashboard=False, log_to_driver=False)\n"
        f"deadline = time.time() + {timeout_s}\n"
        f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout_s + 60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    nodes = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(nodes) == count, nodes
    return nodes


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, f"ray start exited early:\n{log.read_text()[-3000:]}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"port {port} not open after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to one `ray start --block` process: it drains its node and stops the Ray processes it started
    (signalling its whole group at once would kill the GCS it reports to first and stall the drain). Then
    SIGKILL to whatever is left of its process group (its own session: only what it started)."""
    proc.terminate()
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def loopback_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    logs = root / "logs"
    logs.mkdir()
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # A clean Ray environment: no inherited address or token source, token auth on, our own token file.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ECHOTUNE_"))}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        # what cluster.yaml exports on every node: the default --storage (a bucket: here a file:// URI,
        # which Ray Tune treats like one; shared only because both nodes are this machine) and where the
        # driver keeps the Optuna study of such a search
        ECHOTUNE_STORAGE=f"file://{root / 'bucket'}",
        ECHOTUNE_RESULTS_DIR=str(root / "head-results"),
    )
    # One temp dir per node, as on separate machines: a node unpacks runtime environments (a job's working dir)
    # into its own session folder, and two nodes sharing one would replace each other's copy under a running
    # driver. Short paths: Ray's socket paths must fit 107 bytes.
    temp_dirs = [tempfile.mkdtemp(prefix="ray-lb-", dir="/tmp") for _ in range(2)]
    gcs_port, client_port = free_port(), free_port() if HAS_CLIENT else None
    dashboard_port = free_port() if HAS_DASHBOARD else None
    node_flags = [
        "--num-cpus=1",
        "--num-gpus=0",
        "--disable-usage-stats",
        # two raylets on one machine: random worker ports, and agent ports of their own
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]
    procs: list[tuple[subprocess.Popen, object]] = []  # each `ray start` and its open log file

    def start(name: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
        log = logs / f"{name}.log"
        out = log.open("w")
        proc = subprocess.Popen(
            [*RAY_CLI, "start", "--block", *node_flags, *args, f"--dashboard-agent-listen-port={free_port()}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append((proc, out))
        return proc, log

    try:
        head, head_log = start(
            "head",
            [
                "--head",
                f"--port={gcs_port}",
                f"--temp-dir={temp_dirs[0]}",
                *([f"--ray-client-server-port={client_port}"] if HAS_CLIENT else []),
                *(
                    ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
                    if HAS_DASHBOARD
                    else ["--include-dashboard=false"]
                ),
            ],
        )
        _wait_for_port(gcs_port, head, head_log)
        if HAS_CLIENT:  # the Ray Client server (the proxy) starts after the GCS: drivers get a listening port
            _wait_for_port(client_port, head, head_log)
        worker, _ = start(
            "worker",
            [
                f"--address=127.0.0.1:{gcs_port}",
                f"--temp-dir={temp_dirs[1]}",
                f'--resources={{"{WORKER_RESOURCE}": 1}}',
            ],
        )
        cluster = LoopbackCluster(
            gcs_address=f"127.0.0.1:{gcs_port}",
            client_address=f"ray://127.0.0.1:{client_port}",
            dashboard_address=f"http://127.0.0.1:{dashboard_port}" if HAS_DASHBOARD else None,
            env=env,
            root=root,
            logs=logs,
            head_temp_dir=Path(temp_dirs[0]),
            worker=worker,
        )
        cluster.nodes = _wait_for_nodes(env, cluster.gcs_address, 2)
        yield cluster
    finally:
        for proc, out in reversed(procs):  # workers first, then the head
            _stop(proc)
            out.close()
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _search(cluster: LoopbackCluster, data, address: str, name: str, *extra: str, storage: bool = True) -> list[str]:
    """The run.py command line of a tiny search (after the interpreter); storage=False: the cluster's default."""
    return [
        "search/run.py",
        "--address",
        address,
        "--data",
        str(data.config.yaml_path),
        "--name",
        name,
        *(["--storage", str(cluster.root / "results")] if storage else []),
        *SEARCH_ARGS,
        *extra,
    ]


def _assert_trials_ran_on_both_nodes(cluster: LoopbackCluster, experiment: Path) -> None:
    record = json.loads((experiment / "search.json").read_text())
    recorded = {n["node_id"]: n for n in record["cluster"]["nodes"]}
    assert set(recorded) == {n["NodeID"] for n in cluster.nodes}
    worker_id = next(i for i, n in recorded.items() if WORKER_RESOURCE in n["resources"])
    head_id = next(i for i, n in recorded.items() if n["head"])
    trial_nodes, node_ips = {}, set()
    for trial in sorted(experiment.glob("trial_*")):
        results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        assert results and all(r["epoch"] >= 1 for r in results), trial
        nodes = {r["node_id"] for r in results}
        assert len(nodes) == 1, (trial.name, nodes)  # no retries here: one node per trial
        trial_nodes[trial.name] = nodes.pop()
        assert results[-1]["epoch"] == 3
        node_ips.add(results[-1]["node_ip"])
    assert len(trial_nodes) == 2 and set(trial_nodes.values()) == {head_id, worker_id}, trial_nodes
    assert len(node_ips) == 1  # Ray's node_ip cannot tell two nodes of one machine apart; node_id can
    assert (experiment / "leaderboard.parquet").is_file()  # the summary (or the leaderboard CLI) read it


def test_run_py_with_address_runs_trials_on_both_nodes(loopback_cluster, tiny_synthetic):
    result = loopback_cluster.run(
        [
            sys.executable,
            *_search(loopback_cluster, tiny_synthetic, loopback_cluster.gcs_address, "direct", "--shared-storage"),
        ]
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    assert "Ray cluster: 2 node(s)" in result.stdout and "checked on every node" in result.stdout
    _assert_trials_ran_on_both_nodes(loopback_cluster, loopback_cluster.root / "results" / "direct")


def test_every_node_reports_what_it_cannot_see(loopback_cluster, tiny_synthetic):
    """The driver's pre-flight check on both real nodes, fed a view that disagrees with the disk (an image of
    another size, a missing one, a results-folder marker that is not there, another code fingerprint): each
    node answers from itself (a task pinned to it) and every problem names its node."""
    image = tiny_synthetic.samples["train"][0].image
    files = {str(image): image.stat().st_size + 1, "/nonexistent/echo.png": 10}
    script = (
        "import json, ray\n"
        "from search.cluster import alive_nodes, node_problems, probe_nodes\n"
        f"ray.init(address={loopback_cluster.gcs_address!r}, include_dashboard=False, log_to_driver=False)\n"
        "nodes = alive_nodes()\n"
        f"answers, failed = probe_nodes(nodes, {files!r}, '/nonexistent/.echotune-shared-check', 'x')\n"
        "problems = node_problems(nodes, answers, '/shared/results', 'driver-code')\n"
        "print(json.dumps({'answers': answers, 'failed': failed, 'problems': problems}))\n"
    )
    result = loopback_cluster.run([sys.executable, "-c", script], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == [] and set(report["answers"]) == {n["NodeID"] for n in loopback_cluster.nodes}
    for node_id, answer in report["answers"].items():
        assert answer["node_id"] == node_id  # it ran on the node it was pinned to
        assert answer["n_unusable"] == 2 and answer["storage_visible"] is False
        assert answer["unusable"] == [f"{image} (size differs)", "/nonexistent/echo.png"]
    problems = report["problems"]
    assert len(problems) == 6
    for node_id in report["answers"]:
        mine = [p for p in problems if p.startswith(f"node {node_id[:12]} ")]
        assert len(mine) == 3, problems
        assert "does not see 2 of 2 dataset images" in mine[0] and "does not see the results folder" in mine[1]
        assert "has other project code than the driver" in mine[2]


def test_local_storage_is_refused_on_a_multi_node_cluster(loopback_cluster, tiny_synthetic):
    result = loopback_cluster.run(
        [sys.executable, *_search(loopback_cluster, tiny_synthetic, loopback_cluster.gcs_address, "refused")]
    )
    assert result.returncode == 2, (result.stdout[-3000:], result.stderr[-3000:])
    assert "is a local path, but this Ray cluster has 2 alive nodes" in result.stderr
    assert "--shared-storage" in result.stderr and "s3://" in result.stderr
    assert not (loopback_cluster.root / "results" / "refused").exists()  # refused before anything was written


@pytest.mark.skipif(not HAS_CLIENT, reason=f"Ray Client needs ray[client]: {NEEDS_CLUSTER_EXTRA}")
def test_ray_client_route(loopback_cluster, tiny_synthetic):
    result = loopback_cluster.run(
        [
            sys.executable,
            *_search(loopback_cluster, tiny_synthetic, loopback_cluster.client_address, "client", "--shared-storage"),
        ]
    )
    assert result.returncode == 0, (
        result.stdout[-4000:],
        result.stderr[-4000:],
        loopback_cluster.ray_logs("ray_client_server*.err"),
    )
    assert "through Ray Client" in result.stdout
    _assert_trials_ran_on_both_nodes(loopback_cluster, loopback_cluster.root / "results" / "client")


def test_ray_client_connect_retries_a_server_that_died_at_birth_and_nothing_else(monkeypatch, capsys):
    """Why test_ray_client_route was flaky (no cluster here: ray.init is scripted). The head's Ray Client proxy
    forks a server per connection, and that fork now and then dies at birth (Ray's gRPC fork race: the head's
    ray_client_server.err shows `Check failed: next_worker->state == KICKED`, then "SpecificServer startup failed"):
    ray.init raises ConnectionAbortedError. start_ray retries that, a bounded number of times with logged back-off,
    and nothing else: not a GCS address, not Ray's own connection timeout (what a missing token looks like over
    ray://), not an authentication failure."""
    from types import SimpleNamespace

    from echotune.search import orchestrate

    died = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback (most recent call last):\n"
        "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err "
        "for detailed logs.\n"
    )
    outcomes, calls, sleeps = [], [], []

    def scripted_init(**kwargs):
        calls.append(kwargs["address"])
        error = outcomes.pop(0) if outcomes else None
        if error is not None:
            raise error

    monkeypatch.setattr(orchestrate.ray, "init", scripted_init)
    monkeypatch.setattr(orchestrate, "time", SimpleNamespace(sleep=sleeps.append))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # a driver without token auth: the hint says what to set
    outcomes[:] = [died, died]
    assert orchestrate.start_ray("ray://127.0.0.1:10001") is None
    assert len(calls) == 3 and sleeps == [2.0, 4.0]
    err = capsys.readouterr().err
    assert err.count("retrying in") == 2 and "connection 1 of 4" in err and "Starting Ray client server failed" in err

    calls.clear(), sleeps.clear()  # bounded: four attempts, then the usual message with the hint
    outcomes[:] = [died] * 10
    with pytest.raises(ConnectionError, match="could not connect to the Ray cluster at ray://127.0.0.1:10001"):
        orchestrate.start_ray("ray://127.0.0.1:10001")
    assert len(calls) == 4 and sleeps == [2.0, 4.0, 8.0]

    for address, error in [
        ("ray://127.0.0.1:10001", ConnectionError("ray client connection timeout")),
        (
            "ray://127.0.0.1:10001",
            ConnectionAbortedError("Initialization failure from server:\nAuthenticationError: InvalidAuthToken"),
        ),
        ("127.0.0.1:6379", ConnectionAbortedError("anything, to a GCS address")),
    ]:
        calls.clear(), sleeps.clear(), capsys.readouterr()
        outcomes[:] = [error, None]
        with pytest.raises(ConnectionError, match="export RAY_AUTH_MODE=token"):  # at once, with the fix
            orchestrate.start_ray(address)
        assert len(calls) == 1 and sleeps == [] and "retrying" not in capsys.readouterr().err


@pytest.mark.skipif(not HAS_DASHBOARD, reason=f"ray job submit needs the job server: {NEEDS_CLUSTER_EXTRA}")
def test_ray_job_submit_route_with_bucket_storage_then_fetch_and_leaderboard(loopback_cluster, tiny_synthetic):
    """docs/cluster.md steps 5 and 7: submit with the cluster's default storage (ECHOTUNE_STORAGE, a bucket),
    then put the bucket's experiment and the head's Optuna study into one folder and build the leaderboard."""
    submit = [
        *RAY_CLI,
        "job",
        "submit",
        "--address",
        loopback_cluster.dashboard_address,
        "--working-dir",
        ".",
        "--",
        sys.executable,
        *_search(loopback_cluster, tiny_synthetic, "auto", "via_job", storage=False),
    ]
    result = loopback_cluster.run(submit)
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    assert "succeeded" in result.stdout + result.stderr and "sync file://" in result.stdout + result.stderr
    fetched = loopback_cluster.root / "fetched" / "via_job"
    shutil.copytree(loopback_cluster.root / "bucket" / "via_job", fetched)  # aws s3 sync s3://BUCKET/echotune/NAME
    for path in (loopback_cluster.root / "head-results" / "via_job").iterdir():  # ray rsync-down ...results/NAME
        shutil.copy(path, fetched / path.name)
    assert load("leaderboard").main([str(fetched), "--write"]) == 0  # docs/cluster.md step 7
    _assert_trials_ran_on_both_nodes(loopback_cluster, fetched)


def test_a_driver_without_the_token_is_refused_with_the_fix(loopback_cluster, tiny_synthetic, tmp_path):
    """The cluster really enforces token authentication: a driver with neither RAY_AUTH_MODE nor a token (an
    empty HOME: no ~/.ray/auth_token) cannot join, and run.py says what to set."""
    env = {k: v for k, v in loopback_cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    result = subprocess.run(
        [
            sys.executable,
            *_search(loopback_cluster, tiny_synthetic, loopback_cluster.gcs_address, "no_token", "--shared-storage"),
        ],
        cwd=REPO,
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, (result.stdout[-3000:], result.stderr[-3000:])
    assert "InvalidAuthToken" in result.stderr  # Ray's own log line: the GCS refused the unauthenticated client
    assert "could not connect to the Ray cluster" in result.stderr and "export RAY_AUTH_MODE=token" in result.stderr
    assert not (loopback_cluster.root / "results" / "no_token").exists()


# The victim is killed once the driver has recorded its epoch 2-4: with ~0.3 s epochs and the driver's result
# files lagging the trial by up to a second, 6 epochs (as before) let it finish before the kill now and then;
# 20 more epochs after the window leave it seconds of margin.
NODE_LOSS_EPOCHS = 24


def test_trials_of_a_lost_node_move_to_another_node_and_finish(loopback_cluster, tmp_path):
    """Node loss (runs last: it kills the cluster's second node). SIGKILL the worker node's whole process group
    (raylet, its trial workers: a VM gone) while one of the two trials trains there; Ray retries that trial
    from its last checkpoint on the head, where it finishes, and the search ends normally."""
    from echotune.data.synthetic import SyntheticSpec, generate
    from tests.reliability.faults import SearchProcess, trial_results, wait_for

    data = generate(
        tmp_path / "data",
        SyntheticSpec(train_videos=12, val_videos=4, test_videos=4, frames_per_video=4, img_size=64, seed=1),
    )  # ~1 s epochs
    head_id = next(n["NodeID"] for n in loopback_cluster.nodes if WORKER_RESOURCE not in n["Resources"])
    worker_id = next(n["NodeID"] for n in loopback_cluster.nodes if WORKER_RESOURCE in n["Resources"])
    experiment = loopback_cluster.root / "results" / "node_loss"
    search = SearchProcess(
        [
            "--address",
            loopback_cluster.gcs_address,
            "--data",
            str(data),
            "--name",
            "node_loss",
            "--storage",
            str(loopback_cluster.root / "results"),
            "--shared-storage",
            *SEARCH_ARGS,
            "--max-epochs",
            str(NODE_LOSS_EPOCHS),
        ],
        tmp_path / "search.log",
        env=loopback_cluster.env,
    )
    try:

        def trial_on_the_worker_node():
            for trial_id, rows in trial_results(experiment).items():
                if rows and rows[-1]["node_id"] == worker_id and 2 <= rows[-1]["epoch"] <= 4:
                    return trial_id
            return None

        victim = wait_for(trial_on_the_worker_node, 240, search, "a trial training on the worker node")
        os.killpg(loopback_cluster.worker.pid, signal.SIGKILL)  # the node is gone, not drained
        assert search.wait(400) == 0, search.output()[-4000:]
    finally:
        search.cleanup()
    results = trial_results(experiment)
    assert len(results) == 2
    moved = results[victim]
    on_worker = [r["epoch"] for r in moved if r["node_id"] == worker_id]
    on_head = [r for r in moved if r["node_id"] != worker_id]
    assert on_worker == list(range(1, max(on_worker) + 1))
    assert {r["node_id"] for r in on_head} == {head_id}  # moved to the surviving node ...
    # ... from its last checkpoint Ray had registered: the last reported epoch's, or, when the node died between
    # the driver logging that result and registering its checkpoint (a separate event in Ray's controller; seen
    # once under load), the one before. Nothing earlier is lost, and the retry redoes exactly what was lost.
    (restored,) = {r["restored_from_epoch"] for r in on_head}
    assert restored in (max(on_worker), max(on_worker) - 1), (restored, on_worker)
    assert [r["epoch"] for r in on_head] == list(range(restored + 1, NODE_LOSS_EPOCHS + 1))
    rows = {r["trial_id"]: r for r in pq.read_table(experiment / "leaderboard.parquet").to_pylist()}
    assert sorted(rows) == sorted(results)
    assert {(r["status"], r["epochs_trained"]) for r in rows.values()} == {("TERMINATED", NODE_LOSS_EPOCHS)}
    assert rows[victim]["retries"] == 1
