"""The Ray node a trial runs on, and the check every trial makes there first: are the dataset's images here?

The driver checks every node before the search (search/cluster.py); a node that joins later (autoscaling) is
covered by `require_dataset_on_node`, which each trial runs on its own node before training.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import ray

from echotune.data.check import CheckedDataset

EXAMPLES_SHOWN = 3  # missing files named in an error


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    ip: str
    hostname: str
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def is_head(self) -> bool:
        return "node:__internal_head__" in self.resources

    def describe(self) -> str:
        return f"node {self.node_id[:12]} ({self.hostname}, {self.ip}{', head' if self.is_head else ''})"

    def to_record(self) -> dict:
        return {
            "node_id": self.node_id,
            "ip": self.ip,
            "hostname": self.hostname,
            "head": self.is_head,
            "resources": {k: v for k, v in sorted(self.resources.items()) if not k.startswith("node:")},
        }


def this_node() -> NodeInfo:
    """The node this process runs on (inside a trial or task: its Ray node)."""
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    return NodeInfo(
        node_id, ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1", socket.gethostname()
    )


def require_dataset_on_node(data: CheckedDataset) -> None:
    """Raise FileNotFoundError naming the node and the files if some dataset image is not readable here.

    Trials call it first: a node that joined after the driver's check (autoscaling) may lack a copy."""
    missing = [p for p in (str(s.image) for samples in data.samples.values() for s in samples) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} dataset image(s) are missing on {this_node().describe()}, e.g. "
            f"{', '.join(missing[:EXAMPLES_SHOWN])}. Every node must see the dataset at the path the driver checked "
            f"({data.config.yaml_path.parent}): put it on a shared mount, or copy it to that path on every node "
            f"(cluster.yaml file_mounts / setup_commands; see docs/cluster.md)."
        )
