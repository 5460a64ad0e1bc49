"""Cluster rules without a cluster: the storage rule, what a trial asks Ray for (fractional GPUs), the dataset
check a trial runs on its node, and the command line. The real multi-node runs are in test_cluster_loopback.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from ray import tune

from echotune.search.cluster import (
    ClusterError,
    check_storage_rule,
    code_fingerprint,
    dataset_files,
    find_unusable_files,
)
from echotune.search.search_config import SearchConfig
from echotune.search.tuner import trial_resources
from echotune.trainables.node import NodeInfo, require_dataset_on_node
from tests.search.test_cli import load

HEAD = NodeInfo("a" * 56, "10.0.0.1", "head-host", {"CPU": 2.0, "node:__internal_head__": 1.0})
WORKER = NodeInfo("b" * 56, "10.0.0.2", "gpu-host", {"CPU": 8.0, "GPU": 1.0})


@pytest.mark.parametrize(
    "storage, shared, nodes, client, error",
    [
        ("results", False, [HEAD], False, None),  # one node, the driver's machine: a local folder is fine
        (
            "results",
            False,
            [HEAD, WORKER],
            False,
            "this Ray cluster has 2 alive nodes: node aaaaaaaaaaaa (head-host, "
            "10.0.0.1, head), node bbbbbbbbbbbb (gpu-host, 10.0.0.2)",
        ),
        ("/mnt/nfs/echotune", True, [HEAD, WORKER], False, None),  # declared shared (and then checked on every node)
        ("s3://bucket/echotune", False, [HEAD, WORKER], False, None),
        ("gs://bucket/echotune", False, [HEAD, WORKER], False, None),
        ("results", False, [HEAD], True, "through Ray Client (ray://) the search runs on the cluster"),
        ("/mnt/nfs/echotune", True, [HEAD], True, None),
        ("s3://bucket/echotune", False, [HEAD], True, "the Optuna study (SQLite) needs a folder"),
    ],
)
def test_storage_rule(storage, shared, nodes, client, error):
    if error is None:
        check_storage_rule(storage, shared, nodes, client)
        return
    with pytest.raises(ClusterError) as info:
        check_storage_rule(storage, shared, nodes, client)
    assert error in str(info.value)
    assert "s3://" in str(info.value) and "--shared-storage" in str(info.value)  # says what to use instead


@pytest.mark.parametrize(
    "cpus, gpus, bundle, device",
    [
        (2.0, 0.5, {"CPU": 2.0, "GPU": 0.5}, "cuda"),  # two trials share one GPU
        (1.0, 0.25, {"CPU": 1.0, "GPU": 0.25}, "cuda"),
        (4.0, 1.0, {"CPU": 4.0, "GPU": 1.0}, "cuda"),
        (1.0, 0.0, {"CPU": 1.0}, "cpu"),  # a CPU trial placed on a GPU node leaves the GPU alone
    ],
)
def test_trial_resource_request(cpus, gpus, bundle, device):
    cfg = SearchConfig(cpus_per_trial=cpus, gpus_per_trial=gpus)

    def trainable(config):
        pass

    # tune.with_resources turns the dict into the PlacementGroupFactory each trial is scheduled with
    pgf = tune.with_resources(trainable, trial_resources(cfg))._resources
    assert pgf.bundles == [bundle] and pgf.required_resources == bundle
    constants = cfg.trial_constants()
    assert constants["device"] == device and constants["workers"] == -1  # the engine sizes the loader per device


def test_cli_builds_a_fractional_gpu_cluster_search():
    from echotune.search.cli.search import search_config_from_args

    run = load("run")
    parser = run.build_parser()
    args = parser.parse_args(
        [
            "--address",
            "auto",
            "--storage",
            "/mnt/nfs/echotune",
            "--shared-storage",
            "--gpus-per-trial",
            "0.5",
            "--cpus-per-trial",
            "4",
        ]
    )
    cfg = search_config_from_args(parser, args)
    assert (cfg.shared_storage, cfg.gpus_per_trial, cfg.cpus_per_trial) == (True, 0.5, 4.0)
    assert trial_resources(cfg) == {"cpu": 4.0, "gpu": 0.5}


def test_cli_refuses_shared_storage_for_an_object_store(capsys):
    with pytest.raises(SystemExit) as info:
        load("run").main(["--storage", "s3://bucket/echotune", "--shared-storage"])
    assert info.value.code == 2
    assert "shared_storage is for a local path" in capsys.readouterr().err


def test_storage_default_comes_from_the_cluster_environment(monkeypatch):
    monkeypatch.setenv("ECHOTUNE_STORAGE", "s3://bucket/echotune")
    assert load("run").build_parser().parse_args([]).storage == "s3://bucket/echotune"
    monkeypatch.delenv("ECHOTUNE_STORAGE")
    assert load("run").build_parser().parse_args([]).storage == "results"


def test_object_store_search_keeps_its_optuna_db_in_the_results_dir(monkeypatch, tmp_path):
    cfg = SearchConfig(name="s", storage="s3://bucket/echotune")
    monkeypatch.setenv("ECHOTUNE_RESULTS_DIR", str(tmp_path / "keep"))
    assert cfg.local_dir == tmp_path / "keep" / "s" and cfg.experiment_dir == "s3://bucket/echotune/s"
    monkeypatch.delenv("ECHOTUNE_RESULTS_DIR")
    assert cfg.local_dir == (Path.cwd() / "results" / "s").resolve()


def test_unusable_files_are_missing_or_of_another_size(tiny_synthetic, tmp_path):
    files = dataset_files(tiny_synthetic)
    n = sum(len(s) for s in tiny_synthetic.samples.values())
    assert len(files) == n and find_unusable_files(files) == []
    first = next(iter(files))
    changed = {**files, first: files[first] + 1, str(tmp_path / "gone.png"): 10}
    assert find_unusable_files(changed) == [f"{first} (size differs)", str(tmp_path / "gone.png")]


def test_a_trial_names_the_node_and_the_missing_images(tiny_synthetic, tmp_path):
    require_dataset_on_node(tiny_synthetic)  # all there
    train = tiny_synthetic.samples["train"]
    moved = tmp_path / "moved.png"
    shutil.copy(train[0].image, moved)
    data = dataclasses.replace(
        tiny_synthetic,
        samples={**tiny_synthetic.samples, "train": [dataclasses.replace(train[0], image=moved), *train[1:]]},
    )
    require_dataset_on_node(data)
    os.remove(moved)
    with pytest.raises(FileNotFoundError) as info:
        require_dataset_on_node(data)
    message = str(info.value)
    assert f"1 dataset image(s) are missing on node local ({os.uname().nodename}" in message
    assert str(moved) in message and "shared mount" in message


def test_code_fingerprint_is_stable():
    first = code_fingerprint()
    assert first == code_fingerprint() and len(first) == 16 and int(first, 16) >= 0
