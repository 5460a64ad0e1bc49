"""Checks for a search on an existing Ray cluster (`run.py --address`), run by the driver before any trial starts.

Ray Tune no longer syncs trial folders to the head: every trial writes its checkpoints to `storage_path` on its
own node, and reads the dataset images at the paths the driver checked. So on a cluster both must mean the same
files on every node. `prepare_cluster` refuses a local results path on a multi-node cluster unless the user
declares it shared (`--shared-storage`), then asks every alive node, with a zero-CPU task pinned to it, whether
it sees the dataset files (same sizes), the shared results folder (a marker file the driver just wrote there)
and the same code as the driver. Nodes that join later (autoscaling) are covered by `require_dataset_on_node`,
which each trial runs on its own node before training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import ray

from echotune.data.check import CheckedDataset
from echotune.results.layout import is_object_store
from echotune.trainables.node import EXAMPLES_SHOWN, NodeInfo

# The packages a trial imports (pyproject's packages): a node running other versions of them would train
# something else than the driver planned.
PROJECT_PACKAGES = ("echotune", "echotune.models", "echotune.spaces", "echotune.trainables", "echotune.search")
PROBE_TIMEOUT_S = 180.0  # a fresh node may need to start a worker process and set up a runtime environment


class ClusterError(ValueError):
    """The cluster cannot run this search as asked (storage, dataset or code not the same on every node)."""


def alive_nodes() -> list[NodeInfo]:
    return [
        NodeInfo(n["NodeID"], n["NodeManagerAddress"], n["NodeManagerHostname"], dict(n.get("Resources", {})))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def is_client_connection() -> bool:
    """Connected through Ray Client (ray://HOST:10001): this process is not on the cluster."""
    return ray.util.client.ray.is_connected()


def check_storage_rule(storage: str, shared: bool, nodes: list[NodeInfo], client: bool) -> None:
    """Refuse results storage that some node running trials could not see; ClusterError says what to use instead.

    A local path is fine on a one-node cluster this process runs on; with more nodes, or through Ray Client (the
    search loop then runs on the cluster, not here), it must be a mount every node shares (`shared`).
    Through Ray Client an object store is refused too: Optuna's SQLite study would stay on this machine, where
    the search loop on the cluster cannot open it.
    """
    if client and is_object_store(storage):
        raise ClusterError(
            f"--storage {storage} through Ray Client (ray://): the trials' results would go to the object store, but "
            f"the Optuna study (SQLite) needs a folder that both this machine and the cluster's search loop open. "
            f"Run the driver on the cluster instead (ray job submit ... -- python search/run.py --address auto "
            f"--storage {storage}, see docs/cluster.md), or use a shared mount with --storage PATH --shared-storage."
        )
    if is_object_store(storage) or shared:
        return
    if client or len(nodes) > 1:
        where = (
            "through Ray Client (ray://) the search runs on the cluster, not on this machine"
            if client
            else f"this Ray cluster has {len(nodes)} alive nodes: {', '.join(n.describe() for n in nodes)}"
        )
        raise ClusterError(
            f"--storage {storage} is a local path, but {where}. Each trial writes its checkpoints and results on "
            f"the node it runs on, so Ray Tune needs one storage every node sees. Use an object store "
            f"(--storage s3://BUCKET/echotune or gs://BUCKET/echotune), or a folder mounted at the same path on "
            f"every node (NFS, EFS, Filestore) and say so with --shared-storage."
        )


def dataset_files(data: CheckedDataset) -> dict[str, int]:
    """Every image path a search reads (all splits: trials train and validate, the driver tests the ensemble),
    with its size in bytes as the driver sees it."""
    return {str(s.image): os.stat(s.image).st_size for samples in data.samples.values() for s in samples}


def find_unusable_files(files: dict[str, int]) -> list[str]:
    """The paths of `files` that are missing here or have another size (a stale or partial copy)."""
    bad = []
    for path, size in files.items():
        try:
            if os.stat(path).st_size != size:
                bad.append(f"{path} (size differs)")
        except OSError:
            bad.append(path)
    return bad


def code_fingerprint() -> str:
    """A hash of the project's Python sources as this process would import them (found, not imported)."""
    digest = hashlib.sha256()
    for name in PROJECT_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            digest.update(f"{name}: missing".encode())
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        nested = {n.rpartition(".")[2] for n in PROJECT_PACKAGES if n.startswith(f"{name}.")}  # hashed on their own
        for path in sorted(p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in nested):
            digest.update(f"{name}/{path.relative_to(root).as_posix()}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def probe_node(files: dict[str, int], marker: str | None, marker_text: str | None) -> dict:
    """Runs on one node: what it sees of the dataset, the shared results folder and the code."""
    bad = find_unusable_files(files)
    marker_ok = None
    if marker is not None:
        try:
            marker_ok = Path(marker).read_text() == marker_text
        except OSError:
            marker_ok = False
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "unusable": bad[:EXAMPLES_SHOWN],
        "n_unusable": len(bad),
        "n_files": len(files),
        "storage_visible": marker_ok,
        "code": code_fingerprint(),
    }


def probe_nodes(
    nodes: list[NodeInfo], files: dict[str, int], marker: str | None, marker_text: str | None
) -> tuple[dict[str, dict], list[str]]:
    """Run `probe_node` on every node (pinned, zero CPUs): the answers by node id, and the nodes that failed."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    files_ref = ray.put(files)  # stored once, read by every node
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)  # zero CPUs: runs even on a busy node
    refs = {
        n.node_id: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(
            files_ref, marker, marker_text
        )
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    answers, problems = {}, []
    for node in nodes:
        ref = refs[node.node_id]
        if ref not in ready:
            problems.append(f"{node.describe()} did not answer the check within {PROBE_TIMEOUT_S:.0f} s")
            continue
        try:
            answers[node.node_id] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            problems.append(
                f"{node.describe()} could not run the check ({last}); is this project installed there "
                f"(pip install -e .), or shipped with ray job submit --working-dir . ?"
            )
    return answers, problems


def _marker_file(storage: str) -> tuple[Path, str]:
    root = Path(storage).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(16)
    path = root / f".echotune-shared-check-{text[:8]}"
    path.write_text(text)
    return path, text


@dataclass
class ClusterFacts:
    """What the driver found: recorded in search.json so a result can be traced to the nodes that made it."""

    nodes: list[NodeInfo]
    client: bool
    code: str

    def to_record(self) -> dict:
        return {"client": self.client, "code": self.code, "nodes": [n.to_record() for n in self.nodes]}


def node_problems(nodes: list[NodeInfo], answers: dict[str, dict], storage: str, code: str) -> list[str]:
    """One line per problem a node reported (the driver's code fingerprint is `code`)."""
    problems = []
    for node in nodes:
        answer = answers.get(node.node_id)
        if answer is None:
            continue
        if answer["n_unusable"]:
            problems.append(
                f"{node.describe()} does not see {answer['n_unusable']} of {answer['n_files']} dataset images as the "
                f"driver does, e.g. {', '.join(answer['unusable'])}: put the dataset on a shared mount or copy it "
                f"to the same path on every node"
            )
        if answer["storage_visible"] is False:
            problems.append(
                f"{node.describe()} does not see the results folder {storage} (a file the driver wrote "
                f"there is missing): mount it at the same path on every node, or use an object store"
            )
        if answer["code"] != code:
            problems.append(
                f"{node.describe()} has other project code than the driver (fingerprint "
                f"{answer['code']} vs {code}): install the same version on every node, or submit with "
                f"ray job submit --working-dir ."
            )
    return problems


def prepare_cluster(storage: str, shared_storage: bool, data: CheckedDataset) -> ClusterFacts:
    """On a connected cluster: the storage rule, then every alive node's view of the dataset, the results folder
    and the code. Raises ClusterError listing every problem found; returns the facts otherwise."""
    nodes, client = alive_nodes(), is_client_connection()
    check_storage_rule(storage, shared_storage, nodes, client)
    marker, marker_text = (None, None) if is_object_store(storage) else _marker_file(storage)
    try:
        answers, problems = probe_nodes(nodes, dataset_files(data), str(marker) if marker else None, marker_text)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    code = code_fingerprint()
    problems += node_problems(nodes, answers, storage, code)
    if problems:
        raise ClusterError("the cluster cannot run this search:\n  - " + "\n  - ".join(problems))
    return ClusterFacts(nodes=nodes, client=client, code=code)
