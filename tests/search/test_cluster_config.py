"""cluster.yaml: Ray's own launcher preparation and schema validation (offline: what `ray up` runs before it calls
the cloud), then the project's rules for it: whole-number node resources, autoscaling worker types for CPU and
GPU, no port open to the world, no secret in the file, token auth, shared results storage, shared memory, and
the project installed on every node."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = re.compile(r"secret|password|passwd|access_key|api_key|credential|private_key|token", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN|\b[0-9a-f]{40,}\b|ghp_[0-9A-Za-z]{20,}")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))  # fills Ray's AWS defaults, merges setup commands
    validate_config(config)  # Ray's JSON schema and its cross-field checks
    return config


def _strings(node, path=()):
    """(path, key or None, string) for every mapping key and string value in the config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), None
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _strings(item, (*path, str(i)))
    elif isinstance(node, str):
        yield path, None, node


def test_ray_prepares_and_validates_it(prepared):
    assert prepared["provider"]["type"] == "aws" and prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}


def test_node_types_whole_resources_and_autoscaling(prepared):
    types = prepared["available_node_types"]
    for name, node_type in types.items():
        resources = node_type["resources"]
        assert all(isinstance(v, int) and v >= 0 for v in resources.values()), (name, resources)
        assert node_type["min_workers"] <= node_type["max_workers"]
    assert "GPU" not in types["head"]["resources"] and "GPU" not in types["cpu_worker"]["resources"]
    assert types["gpu_worker"]["resources"]["GPU"] >= 1 and types["gpu_worker"]["resources"]["CPU"] >= 2
    for worker in ("cpu_worker", "gpu_worker"):  # scale from zero: billed only while trials need them
        assert types[worker]["min_workers"] == 0 < types[worker]["max_workers"]
    assert sum(types[w]["max_workers"] for w in ("cpu_worker", "gpu_worker")) <= prepared["max_workers"]
    assert types["head"]["max_workers"] == 0


def test_no_port_is_opened_to_the_world(prepared):
    text = yaml.safe_dump(prepared)
    assert "0.0.0.0" not in text and "::/0" not in text
    # Our own security group on every node type: otherwise the launcher creates one with SSH from 0.0.0.0/0.
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"].get("SecurityGroupIds"), name
    assert "IpPermissions" not in prepared["provider"].get("security_group", {})
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # reached through `ray dashboard` port forwarding only


def test_no_secrets_in_the_file(raw):
    for path, key, value in _strings(raw):
        if key is not None and path[:1] != ("file_mounts",):  # file_mounts keys are paths on the nodes
            assert not SECRET_KEY.search(key), (path, key)
        if value is not None:
            assert not SECRET_VALUE.search(value), (path, value)
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token travels as a file


def test_token_auth_on_every_node(prepared):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in prepared[key]), key
    assert any("export RAY_AUTH_MODE=token" in c for c in prepared["setup_commands"])  # shells and job drivers


def test_shared_results_storage_is_set(prepared):
    exports = " ".join(prepared["setup_commands"])
    storage = re.search(r"export ECHOTUNE_STORAGE=(\S+?)'", exports)
    assert storage and re.match(r"(s3|gs)://", storage.group(1)), exports  # one bucket every node writes to
    assert "export ECHOTUNE_RESULTS_DIR=" in exports


def test_shared_memory_and_the_project_installed_on_every_node(prepared, raw):
    assert raw["file_mounts"]["~/echotune"] == "."
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged into both
        commands = " ".join(prepared[key])
        assert "/dev/shm" in commands
        assert (
            'pip install --python ~/echotune-venv/bin/python -e "$HOME/echotune[cluster]" '
            '-c "$HOME/echotune/constraints.txt"'
        ) in commands  # the tested set, the same Ray on every node
        assert "resolve_data_yaml(None)" in commands  # the synthetic set at the same path on every node
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_range = next(d for d in extras["dependencies"] if d.startswith("ray["))
    assert ray_range.replace("ray[tune]", "ray[default]") in extras["optional-dependencies"]["cluster"]
    tested = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    import ray

    assert tested["ray"] == ray.__version__  # the suite runs on the tested set


def _doc_commands() -> list[str]:
    """Shell commands in docs/cluster.md's code blocks, continuation lines joined (what users paste)."""
    docs = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", docs, re.DOTALL)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_documented_commands_open_only_ssh_from_your_address(raw):
    """The checks above see cluster.yaml as Ray prepares it; users also paste docs/cluster.md's commands and may
    uncomment cluster.yaml's alternatives: those must not open a port to the world or move the dashboard either."""
    commands = _doc_commands()
    ingress = [c for c in commands if "authorize-security-group-ingress" in c]
    assert ingress, "docs/cluster.md lost its security group commands"
    for command in ingress:  # SSH from one address (/32), or traffic between the group's own nodes
        cidrs = re.findall(r"--cidr(?:-ip)?[ =](\S+)", command)
        assert "--ipv6-cidr" not in command, command
        assert ("--source-group" in command and not cidrs) or (
            cidrs and all(c.endswith("/32") for c in cidrs) and "--port 22" in command
        ), command
    for command in commands:
        assert "0.0.0.0" not in command and "::/0" not in command, command
    yaml_lines = (ROOT / "cluster.yaml").read_text().splitlines()
    uncommented = [line.lstrip("# ") for line in yaml_lines]  # commented-out alternatives too
    for line in commands + uncommented:
        for host in re.findall(r"--dashboard-host[ =](\S+)", line):
            assert host.strip("'\"") in ("127.0.0.1", "localhost"), line
    heads = [c for c in commands if re.search(r"\bray start\b.*--head", c)]
    assert heads and all("--dashboard-host=127.0.0.1" in c for c in heads), heads
