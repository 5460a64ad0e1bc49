"""Bad-input corpus (issue #8): every bad input a user can give, through the real command lines.

Each case asserts the exact message (file, line and value where there are some), exit code 2, and that nothing
is half-written: the --storage / --out folder given does not exist afterwards (or, for a CLI writing into an
existing folder, is byte-identical), and no *.tmp file is left anywhere under tmp_path.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_TRAIN
from tests.data.export_fixture import EXPORT_YAML, default_frames, leaky_export, make_export, write_image
from tests.search.test_cli import INVOCATIONS, ROOT, command, load, prog, train_argv

NAME = "Regurgitation-YOLODataset-1new"  # make_export's dataset folder
VIEW_LINE = "\n0 1 0\n"


def run_cli(cli: str, argv: list[str], capsys, how: str = "script") -> tuple[int, list[str]]:
    """(exit code, stripped non-empty lines of stdout + stderr) of `echotune CLI ARGV` or of CLI's old script, or
    for CLI "run" of search/run.py ARGV (argv says which of search, check and resplit); usage errors exit through
    SystemExit."""
    try:
        code = load("run").main([str(a) for a in argv]) if cli == "run" else command(cli, how)(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, [line.strip() for line in (captured.out + captured.err).splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_written(tmp_path: Path, *absent: Path) -> None:
    for path in absent:
        assert not path.exists(), f"{path} was created"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


# ---------------------------------------------------------------- datasets: data.yaml, splits, images, labels
def _yaml_without(key: str):
    def build(tmp: Path) -> Path:
        path = make_export(tmp)
        path.write_text(re.sub(rf"^{key}:.*\n(- .*\n)*", "", path.read_text(), flags=re.M))  # with its list items
        return path

    return build


def _yaml_text(text: str):
    def build(tmp: Path) -> Path:
        path = make_export(tmp)
        path.write_text(text)
        return path

    return build


def _with_label(split: str, stem: str, label: str):
    def build(tmp: Path) -> Path:
        frames = default_frames()
        frames[split][stem] = label
        return make_export(tmp, frames=frames)

    return build


def _damaged_image(name: str, damage):
    def build(tmp: Path) -> Path:
        path = make_export(tmp)
        image = write_image(path.parent / "train" / "images" / name)
        image.write_bytes(damage(image.read_bytes()))
        return path

    return build


def _without_split_folder(tmp: Path) -> Path:
    path = make_export(tmp)
    shutil.rmtree(path.parent / "valid")
    return path


def _empty_split(tmp: Path) -> Path:
    frames = default_frames()
    frames["test"] = {}
    return make_export(tmp, frames=frames)


ROOT_DIR = "{tmp}/" + NAME
YAML = ROOT_DIR + "/data.yaml"
TRUNCATED_LABEL = "1 0.1 0.2 0.3 0.2 0.35 0.4 0.1 0.4\n\n0 1 0\n"[:20]  # the file cut mid-line: '... 0.2 0.'
LEAKY = (
    "error: " + YAML + ": leaky splits: 1 of 4 source videos have frames in more than one split (3 frames): "
    "train+val 1, train+test 0, val+test 0, all three 0. Scores on these splits are optimistic (the model is "
    "evaluated on frames of videos it trained on)."
)
TOKEN_COUNT = (
    "expected 5 tokens (cls cx cy w h), 9 (cls x1 y1 .. x4 y4) or a one-hot view line as the last line; got {n} tokens"
)

DATA_CASES = [  # (id, build(tmp) -> data.yaml, the message line; {tmp} is the test's tmp_path)
    ("yaml-missing-train", _yaml_without("train"), YAML + ": key 'train': missing (required: train and val)"),
    ("yaml-missing-val", _yaml_without("val"), YAML + ": key 'val': missing (required: train and val)"),
    (
        "yaml-missing-names",
        _yaml_without("names"),
        YAML + ": key 'names': missing (a list of class names, or {{id: name}})",
    ),
    (
        "yaml-not-a-mapping",
        _yaml_text("- train/images\n- valid/images\n"),
        "error: " + YAML + ": expected a mapping of keys (path, train, val, test, names, view_names), "
        "got list ['train/images', 'valid/images']",
    ),
    (
        "yaml-empty",
        _yaml_text(""),
        "error: "
        + YAML
        + ": expected a mapping of keys (path, train, val, test, names, view_names), got an empty file",
    ),
    (
        "yaml-invalid",
        _yaml_text("nc: 4\nnames: [AR, MR, PR, TR\ntrain: train/images\nval: valid/images\n"),
        "error: " + YAML + ": not valid YAML: line 3, column 6: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 2, column 8)",
    ),
    (
        "yaml-nonexistent",
        lambda tmp: tmp / "nowhere" / "data.yaml",
        "error: {tmp}/nowhere/data.yaml: data.yaml not found",
    ),
    (
        "split-folder-missing",
        _without_split_folder,
        YAML + ":8: key 'val': " + ROOT_DIR + "/valid/images does not exist (value: '../" + NAME + "/valid/images')",
    ),
    (
        "image-corrupt",
        _damaged_image("vidF.mp4-1.png", lambda data: b"not a png at all"),
        ROOT_DIR + "/train/images/vidF.mp4-1.png: unreadable or corrupt image (OpenCV could not decode it)",
    ),
    (
        "image-truncated-png",
        _damaged_image("vidF.mp4-1.png", lambda data: data[: len(data) // 2]),
        ROOT_DIR + "/train/images/vidF.mp4-1.png: unreadable or corrupt image (OpenCV could not decode it)",
    ),
    (
        "image-truncated-jpeg",
        _damaged_image("vidF.mp4-1.jpg", lambda data: data[: len(data) // 2]),
        ROOT_DIR + "/train/images/vidF.mp4-1.jpg: truncated JPEG (no end-of-image marker)",
    ),
    (
        "label-truncated",
        _with_label("train", "vidA.mp4-1", TRUNCATED_LABEL),
        ROOT_DIR + "/train/labels/vidA.mp4-1.txt:1: " + TOKEN_COUNT.format(n=6) + " (value: '1 0.1 0.2 0.3 0.2 0.')",
    ),
    (
        "label-wrong-token-count",
        _with_label("train", "vidE.mp4-1", "0 0.5 0.5 0.2 0.2 0.1 0.1" + VIEW_LINE),
        ROOT_DIR
        + "/train/labels/vidE.mp4-1.txt:1: "
        + TOKEN_COUNT.format(n=7)
        + " (value: '0 0.5 0.5 0.2 0.2 0.1 0.1')",
    ),
    (
        "label-value-outside-0-1",
        _with_label("train", "vidE.mp4-1", "0 0.5 1.5 0.2 0.2" + VIEW_LINE),
        ROOT_DIR + "/train/labels/vidE.mp4-1.txt:1: cy is outside [0, 1] (labels must be normalised) (value: '1.5')",
    ),
    (
        "label-class-id-ge-nc",
        _with_label("train", "vidE.mp4-1", "7 0.5 0.5 0.2 0.2" + VIEW_LINE),
        ROOT_DIR + "/train/labels/vidE.mp4-1.txt:1: class id 7 >= nc=4 (valid: 0..3) (value: '7')",
    ),
    (
        "label-class-id-not-a-number",
        _with_label("valid", "vidC.mp4-1", "AR 0.5 0.5 0.2 0.2" + VIEW_LINE),
        ROOT_DIR + "/valid/labels/vidC.mp4-1.txt:1: class id is not a non-negative integer (value: 'AR')",
    ),
    (
        "label-value-not-a-number",
        _with_label("train", "vidE.mp4-1", "0 0.5 0,5 0.2 0.2" + VIEW_LINE),
        ROOT_DIR + "/train/labels/vidE.mp4-1.txt:1: cy is not a number (value: '0,5')",
    ),
    (
        "view-line-wrong-length",
        _with_label("train", "vidE.mp4-1", "0 0.5 0.5 0.2 0.2\n\n0 1\n"),
        ROOT_DIR + "/train/labels/vidE.mp4-1.txt:3: view line has 2 entries, expected 3 (one per view name) "
        "(value: '0 1')",
    ),
    (
        "view-line-not-one-hot",
        _with_label("train", "vidE.mp4-4", "0 0.5 0.5 0.2 0.2\n\n0 1 1\n"),
        ROOT_DIR + "/train/labels/vidE.mp4-4.txt:3: view line is not one-hot (2 entries are 1, expected exactly one) "
        "(value: '0 1 1')",
    ),
    (
        "view-line-not-last",
        _with_label("train", "vidE.mp4-1", "0 0 1\n0 0.5 0.5 0.2 0.2\n"),
        ROOT_DIR + "/train/labels/vidE.mp4-1.txt:1: a view line must be the last non-blank line (value: '0 0 1')",
    ),
    (
        "empty-split",
        _empty_split,
        ROOT_DIR + "/test/images: split 'test' has no images (value: '" + ROOT_DIR + "/test/images')",
    ),
    ("leaky-splits", leaky_export, LEAKY),  # vidA: 2 frames in train, 1 in valid; the message goes on with the fix
]


@pytest.mark.parametrize("cli", ["run", "train"])
@pytest.mark.parametrize("build, message", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_dataset_is_refused_before_anything_is_written(cli, build, message, tmp_path, capsys):
    data_yaml = build(tmp_path)
    out = tmp_path / "results"
    argv = ["--data", data_yaml] + (["--storage", out] if cli == "run" else ["--out", out, "--scale", "test"])
    code, lines = run_cli(cli, argv, capsys)
    assert code == 2
    assert message.format(tmp=tmp_path) in lines, "\n".join(lines)
    if message == LEAKY:  # then the example video, the fix and the way to go on knowingly
        assert lines[lines.index(message.format(tmp=tmp_path)) + 1 :] == [
            "vidA: train 2, val 1",
            f"Fix: echotune resplit --data {data_yaml} (or --folds K --fold I for grouped "
            f"K-fold) writes leak-free splits and a new data.yaml; use that one.",
            "Or pass --allow-leaky-splits to go on knowingly: the results are flagged as leaky.",
        ]
    if message.startswith(YAML):  # a data.yaml problem: listed under the file's verdict
        assert f"error: {data_yaml}: invalid dataset file" in lines
    elif not message.startswith("error: "):  # a data-check report: one error, the verdict says so
        assert any(line.startswith("NOT USABLE: 1 error(s)") for line in lines), "\n".join(lines)
    assert_nothing_written(tmp_path, out)


def test_yaml_with_several_problems_lists_each_with_its_line(tmp_path, capsys):
    data_yaml = make_export(tmp_path)
    data_yaml.write_text(EXPORT_YAML.format(name=NAME).replace("nc: 4", "nc: 5").replace("val:", "#val:"))
    code, lines = run_cli("run", ["--data", data_yaml, "--check-data"], capsys)
    assert code == 2
    assert lines[:3] == [
        f"error: {data_yaml}: invalid dataset file",
        f"{data_yaml}:6: key 'nc': nc=5 but names has 4 entries (value: '5')",
        f"{data_yaml}: key 'val': missing (required: train and val)",
    ]


# ---------------------------------------------------------------- command-line values
OBJECTIVES = "is not valid; choose one or more of: score, map50, map50_95, view_acc, view_f1, view_kappa, f1"
RUN_VALUES = [  # (id, command, argv, message after "<prog>: error: ")
    (
        "space-unknown",
        "search",
        ["--space", "nope"],
        "space='nope' is not valid; choose one of: all, baseline, dual_backbone, gradnorm",
    ),
    (
        "max-epochs-negative",
        "search",
        ["--max-epochs", "-1"],
        "argument --epochs/--max-epochs: expected a positive integer, got -1",
    ),
    (
        "max-epochs-below-stages",
        "search",
        ["--max-epochs", "2"],
        "max_epochs must be >= 3 (one per training stage), got 2",
    ),
    (
        "num-samples-zero",
        "search",
        ["--num-samples", "0"],
        "argument --num-samples: expected a positive integer, got 0",
    ),
    (
        "num-samples-not-a-number",
        "search",
        ["--num-samples", "ten"],
        "argument --num-samples: expected a positive integer, got 'ten'",
    ),
    ("cpus-per-trial-zero", "search", ["--cpus-per-trial", "0"], "cpus_per_trial must be > 0, got 0.0"),
    ("gpus-per-trial-negative", "search", ["--gpus-per-trial", "-1"], "gpus_per_trial must be >= 0, got -1.0"),
    (
        "gpus-per-trial-fraction-above-1",
        "search",
        ["--gpus-per-trial", "1.5"],
        "gpus_per_trial above 1 must be a whole number, got 1.5",
    ),
    (
        "img-size-not-multiple-of-32",
        "search",
        ["--img-size", "100"],
        "img_size must be a multiple of 32 and >= 64, got 100",
    ),
    ("objectives-unknown", "search", ["--objectives", "nope"], "objectives=['nope'] " + OBJECTIVES),
    ("objectives-empty", "search", ["--objectives", ","], "objectives=[] " + OBJECTIVES),
    (
        "concurrency-zero",
        "search",
        ["--concurrency", "0"],
        "argument --concurrency: expected a positive integer, got 0",
    ),
    (
        "ratios-two-values",
        "resplit",
        ["--ratios", "0.7,0.3"],
        "argument --ratios: expected three non-negative numbers train,val,test with train and val > 0; got '0.7,0.3'",
    ),
    (
        "shared-storage-on-object-store",
        "search",
        ["--shared-storage", "--storage", "s3://bucket/x"],
        "shared_storage is for a local path mounted on every node; storage=s3://bucket/x is an object store",
    ),
]


def assert_refused_by_the_parser(name, argv, message, how, capsys, out: Path) -> None:
    """`NAME ARGV` exits 2 with `<prog>: error: MESSAGE` as its last line, having written nothing (nor OUT)."""
    code, lines = run_cli(name, argv, capsys, how)
    assert code == 2
    assert lines[-1] == f"{prog(name, how)}: error: {message}"
    assert_nothing_written(out.parent, out)


@pytest.mark.parametrize("how", INVOCATIONS)
@pytest.mark.parametrize("name, argv, message", [c[1:] for c in RUN_VALUES], ids=[c[0] for c in RUN_VALUES])
def test_bad_search_option_is_refused_by_the_parser(name, argv, message, how, tmp_path, capsys):
    storage = tmp_path / "results"
    argv = argv if "--storage" in argv or name != "search" else argv + ["--storage", storage]
    assert_refused_by_the_parser(name, ["--data", tmp_path / "data.yaml"] + argv, message, how, capsys, storage)


OTHER_VALUES = [  # (id, command, argv, message after "<prog>: error: ")
    (
        "train-epochs-zero",
        "train",
        ["--epochs", "0"],
        "argument --epochs: expected a positive total or three non-negative per-stage counts; got '0'",
    ),
    ("train-img-size", "train", ["--img-size", "100"], "img_size must be a multiple of 32 and >= 64, got 100"),
    (
        "predict-conf-above-1",
        "predict",
        ["--checkpoint", "x.pt", "--source", "x.png", "--conf", "2"],
        "--conf must be in [0, 1], got 2.0",
    ),
    (
        "predict-no-model",
        "predict",
        ["--source", "x.png"],
        "one of the arguments MODEL --ensemble --checkpoint is required",
    ),
    ("ensemble-top-k-zero", "ensemble", ["exp", "--top-k", "0"], "--top-k must be >= 1, got 0"),
    ("leaderboard-top-zero", "leaderboard", ["exp", "--top", "0"], "--top-k must be >= 1, got 0"),
    (
        "leaderboard-by-unknown",
        "leaderboard",
        ["exp", "--by", "auc"],
        "unknown --by 'auc'; valid: map50, map50_95, precision, recall, f1, view_acc, view_f1, view_kappa, score",
    ),
]


@pytest.mark.parametrize("how", INVOCATIONS)
@pytest.mark.parametrize("name, argv, message", [c[1:] for c in OTHER_VALUES], ids=[c[0] for c in OTHER_VALUES])
def test_bad_option_of_the_other_commands_is_refused_by_the_parser(name, argv, message, how, tmp_path, capsys):
    out = tmp_path / "out"
    assert_refused_by_the_parser(
        name, argv + (["--out", out] if name in ("train", "predict") else []), message, how, capsys, out
    )


# ---------------------------------------------------------------- trial resources no node has
NODE_CASES = [  # (id, cpus, gpus, nodes' resources, message)
    (
        "gpu-on-cpu-only-cluster",
        1,
        1,
        [{"CPU": 2.0}],
        "--gpus-per-trial 1 needs 1 GPU(s) per trial, but no node of this Ray cluster has that many (largest: 0 GPU); "
        "use --gpus-per-trial 0 to train on CPU",
    ),
    (
        "more-gpus-than-a-node",
        1,
        4,
        [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}],
        "--gpus-per-trial 4 needs 4 GPU(s) per trial, but no node of this Ray cluster has that many (largest: 2 GPU); "
        "use --gpus-per-trial 2 or less",
    ),
    (
        "more-cpus-than-a-node",
        64,
        0,
        [{"CPU": 2.0}, {"CPU": 4.0}],
        "--cpus-per-trial 64 needs 64 CPU(s) per trial, but no node of this Ray cluster has that many "
        "(largest: 4 CPU); use --cpus-per-trial 4 or less",
    ),
    (
        "cpus-and-gpu-on-different-nodes",
        4,
        1,
        [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}],
        "a trial needs 4 CPU + 1 GPU on one node, but no node of this Ray cluster has both (nodes: 8 CPU + 0 GPU, "
        "2 CPU + 1 GPU); lower --cpus-per-trial or --gpus-per-trial",
    ),
]


@pytest.mark.parametrize("cpus, gpus, nodes, message", [c[1:] for c in NODE_CASES], ids=[c[0] for c in NODE_CASES])
def test_trial_resources_no_node_has_are_refused(cpus, gpus, nodes, message):
    from echotune.search.cluster import ClusterError
    from echotune.search.orchestrate import check_trial_fits
    from echotune.search.search_config import SearchConfig

    with pytest.raises(ClusterError) as info:
        check_trial_fits(SearchConfig(cpus_per_trial=cpus, gpus_per_trial=gpus), nodes)
    assert str(info.value) == message
    check_trial_fits(SearchConfig(cpus_per_trial=0.5, gpus_per_trial=0.5), [{"CPU": 1.0, "GPU": 1.0}])  # fits


def test_on_an_existing_cluster_a_missing_node_is_only_a_warning(tmp_path, monkeypatch, capsys):
    """An autoscaler may add a GPU node later: the search goes on (here stopped at the next step) with a warning."""
    from echotune.data.check import check_dataset
    from echotune.search import orchestrate
    from echotune.search.cluster import ClusterError
    from echotune.search.search_config import SearchConfig
    from echotune.trainables.node import NodeInfo

    def next_step(*args):
        raise ClusterError("stopped at the per-node checks")

    monkeypatch.setattr(orchestrate, "start_ray", lambda address, **options: None)
    monkeypatch.setattr(orchestrate.ray, "shutdown", lambda: None)
    monkeypatch.setattr(orchestrate, "alive_nodes", lambda: [NodeInfo("n1", "10.0.0.1", "head", {"CPU": 4.0})])
    monkeypatch.setattr(orchestrate, "prepare_cluster", next_step)
    cfg = SearchConfig(storage=str(tmp_path / "results"), gpus_per_trial=1)
    with pytest.raises(ClusterError, match="stopped at the per-node checks"):
        orchestrate.run_search(cfg, check_dataset(make_export(tmp_path)), resume=False, address="auto")
    assert capsys.readouterr().out.splitlines()[0] == (
        "warning: --gpus-per-trial 1 needs 1 GPU(s) per trial, but no node of this Ray cluster has that many "
        "(largest: 0 GPU); trials will wait until the autoscaler adds such a node"
    )


@pytest.mark.ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: a 1-GPU trial would fit")
def test_gpu_trial_on_a_local_ray_without_gpu_exits_before_anything_is_written(tmp_path, capsys):
    storage = tmp_path / "results"
    code, lines = run_cli(
        "run",
        ["--data", make_export(tmp_path), "--storage", storage, "--gpus-per-trial", "1", "--num-samples", "1"],
        capsys,
    )
    assert code == 2
    assert lines[-1] == (
        "error: --gpus-per-trial 1 needs 1 GPU(s) per trial, but no node of this Ray cluster has "
        "that many (largest: 0 GPU); use --gpus-per-trial 0 to train on CPU"
    )
    assert_nothing_written(tmp_path, storage)


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real engine checkpoint: shared arch, scale test, 64 px, 4 classes / 3 views, one epoch (~1 s)."""
    from echotune.data.check import check_dataset
    from echotune.engine import fit

    root = tmp_path_factory.mktemp("checkpoint")
    result = fit(
        {**TINY_TRAIN, "epochs": 1}, check_dataset(make_export(root)), out_dir=root / "run", log=lambda _: None
    )
    return result.last_checkpoint


def _five_class_export(tmp: Path) -> Path:
    path = make_export(tmp)
    path.write_text(path.read_text().replace("nc: 4", "nc: 5").replace("- TR\n", "- TR\n- XR\n"))
    return path


def _random_bytes(tmp: Path, checkpoint: Path) -> Path:
    path = tmp / "random.pt"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _truncated(tmp: Path, checkpoint: Path) -> Path:
    data = checkpoint.read_bytes()
    path = tmp / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


NOT_LOADABLE = ": not a loadable EchoTune checkpoint (loaded with weights_only=True, which refuses pickled code): "
NOT_A_CHECKPOINT = "not a PyTorch checkpoint (truncated, damaged or another format: no zip archive)"
RESUME_CASES = [  # (id, extra argv, dataset, the file given to --resume, message after "error: --resume: ")
    (
        "other-architecture",
        ["--arch", "dual"],
        make_export,
        lambda tmp, ckpt: ckpt,
        "{ckpt}: checkpoint does not match the config (arch: checkpoint 'shared' vs config 'dual'; "
        "balance: checkpoint 'gradnorm' vs config 'fixed')",
    ),  # (the dual model's default balance is fixed)
    (
        "other-class-count",
        [],
        _five_class_export,
        lambda tmp, ckpt: ckpt,
        "{ckpt}: checkpoint does not match the config (nc: checkpoint 4 vs config 5)",
    ),
    (
        "other-image-size",
        ["--img-size", "96"],
        make_export,
        lambda tmp, ckpt: ckpt,
        "{ckpt}: checkpoint does not match the config (img_size: checkpoint 64 vs config 96)",
    ),
    (
        "other-balance",
        ["--balance", "fixed"],
        make_export,
        lambda tmp, ckpt: ckpt,
        "{ckpt}: checkpoint does not match the config (balance: checkpoint 'gradnorm' vs config 'fixed')",
    ),
    (
        "other-optimizer",
        ["--set", "optimizer=adamw"],
        make_export,
        lambda tmp, ckpt: ckpt,
        "{ckpt}: checkpoint does not match the config (optimizer: checkpoint 'sgd' vs config 'adamw')",
    ),
    ("missing-file", [], make_export, lambda tmp, ckpt: tmp / "nope.pt", "checkpoint {tmp}/nope.pt does not exist"),
    ("random-bytes", [], make_export, _random_bytes, "{tmp}/random.pt" + NOT_LOADABLE + NOT_A_CHECKPOINT),
    (
        "truncated",
        [],
        make_export,
        _truncated,
        "{tmp}/truncated.pt"
        + NOT_LOADABLE
        + "PytorchStreamReader failed reading zip archive: failed finding central directory.",
    ),
]


@pytest.mark.parametrize(
    "argv, dataset, resume, message", [c[1:] for c in RESUME_CASES], ids=[c[0] for c in RESUME_CASES]
)
def test_train_refuses_a_checkpoint_it_cannot_resume(argv, dataset, resume, message, checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    given = resume(tmp_path, checkpoint)
    code, lines = run_cli(
        "train",
        train_argv(dataset(tmp_path), out, "--resume", given, *argv),
        capsys,
    )
    assert code == 2
    expected = "error: --resume: " + message.format(tmp=tmp_path, ckpt=checkpoint)
    assert lines[0].startswith(expected), "\n".join(lines)  # torch's own explanation may follow on more lines
    assert_nothing_written(tmp_path, out)


def test_train_resume_check_accepts_a_matching_checkpoint(checkpoint, tmp_path):
    from echotune.data.check import check_dataset
    from echotune.search.cli import train

    cfg = train.config_from_args(load("train").build_parser().parse_args(["--scale", "test", "--img-size", "64"]))
    train.check_resume(checkpoint, cfg, check_dataset(make_export(tmp_path)))  # no error


@pytest.mark.parametrize(
    "damage, message",
    [
        (_random_bytes, "{tmp}/random.pt" + NOT_LOADABLE + NOT_A_CHECKPOINT),
        (
            _truncated,
            "{tmp}/truncated.pt" + NOT_LOADABLE + "PytorchStreamReader failed reading zip archive: failed "
            "finding central directory.",
        ),
        (lambda tmp, ckpt: tmp / "nope.pt", "checkpoint {tmp}/nope.pt does not exist"),
    ],
    ids=["random-bytes", "truncated", "missing-file"],
)
def test_predict_refuses_a_damaged_checkpoint(damage, message, checkpoint, tmp_path, capsys):
    out = tmp_path / "preds"
    code, lines = run_cli(
        "predict",
        [
            "--checkpoint",
            damage(tmp_path, checkpoint),
            "--source",
            write_image(tmp_path / "frame.png"),
            "--out",
            out,
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 2
    assert lines[0].startswith("error: " + message.format(tmp=tmp_path)), "\n".join(lines)
    assert_nothing_written(tmp_path, out)


# ---------------------------------------------------------------- ensemble manifests
@pytest.fixture(scope="module")
def manifest_doc(checkpoint, tmp_path_factory) -> dict:
    """A valid one-member manifest as save_manifest writes it, with an absolute checkpoint path."""
    from echotune.ensemble.fusion import FusionParams
    from echotune.ensemble.manifest import Manifest, ManifestMember, load_manifest, save_manifest

    member = ManifestMember("t0", checkpoint, "shared", 0.5)
    path = save_manifest(
        Manifest([member], [1.0], "none", FusionParams(), ["AR", "MR", "PR", "TR"], ["PSAX", "PLAX", "A4C"]),
        tmp_path_factory.mktemp("manifest") / "manifest.yaml",
    )
    load_manifest(path)
    doc = yaml.safe_load(path.read_text())
    doc["members"][0]["checkpoint"] = str(checkpoint)  # the cases' manifests are written elsewhere
    return doc


def _edit(change):
    def write(doc: dict) -> str:
        doc = yaml.safe_load(yaml.safe_dump(doc))
        change(doc)
        return yaml.safe_dump(doc, sort_keys=False)

    return write


VALID_KEYS = (
    "version, members, weights, tta, fusion, names, view_names, tuned_on, conf, data_yaml, created, "
    "versions, experiment"
)
MANIFEST_CASES = [  # (id, doc -> manifest text, message after "error: "; {m}: the manifest file)
    (
        "not-yaml",
        lambda doc: "members: [unclosed\n",
        "{m}: not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow "
        "sequence started at line 1, column 10)",
    ),
    (
        "not-a-mapping",
        lambda doc: "- members\n",
        "{m}: expected a mapping with keys version, members, weights, tta, fusion, names, view_names (got ['members'])",
    ),
    (
        "missing-keys",
        _edit(lambda d: (d.pop("weights"), d.pop("tta"))),
        "{m}: missing key(s) ['weights', 'tta']; valid keys: " + VALID_KEYS,
    ),
    (
        "member-checkpoint-missing",
        _edit(lambda d: d["members"][0].update(checkpoint="../nowhere/last.pt")),
        "{m}: members[0].checkpoint: '../nowhere/last.pt' -> {tmp}/nowhere/last.pt does not exist",
    ),
    (
        "weights-wrong-type",
        _edit(lambda d: d.update(weights="x")),
        "{m}: weights: expected 1 positive numbers, one per member (got 'x')",
    ),
    (
        "conf-out-of-range",
        _edit(lambda d: d.update(conf=1.5)),
        "{m}: conf: expected the operating confidence chosen on val, a number in [0, 1] (got 1.5)",
    ),
    (
        "member-not-a-mapping",
        _edit(lambda d: d.update(members=["t0"])),
        "{m}: members[0]: expected a mapping with string trial_id and checkpoint (got 't0')",
    ),
    (
        "member-of-other-class-count",
        _edit(lambda d: d.update(names=["AR", "MR", "PR", "TR", "XR"])),
        "{m.parent}: members[0] (trial t0): {ckpt}: checkpoint does not match the config "
        "(nc: checkpoint 4 vs config 5)",
    ),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES])
def test_predict_refuses_a_bad_ensemble_manifest(text, message, manifest_doc, checkpoint, tmp_path, capsys):
    manifest = tmp_path / "ensemble" / "manifest.yaml"
    manifest.parent.mkdir()
    manifest.write_text(text(manifest_doc))
    out = tmp_path / "preds"
    code, lines = run_cli(
        "predict",
        [
            "--ensemble",
            manifest.parent,
            "--source",
            write_image(tmp_path / "frame.png"),
            "--out",
            out,
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 2
    assert lines == ["error: " + message.format(m=manifest, tmp=tmp_path, ckpt=checkpoint)]
    assert_nothing_written(tmp_path, out)


def test_predict_refuses_a_missing_ensemble(tmp_path, capsys):
    out = tmp_path / "preds"
    code, lines = run_cli(
        "predict", ["--ensemble", tmp_path / "nope", "--source", write_image(tmp_path / "a.png"), "--out", out], capsys
    )
    assert code == 2
    assert lines == [f"error: ensemble manifest {tmp_path / 'nope'} does not exist (build one with echotune ensemble)"]
    assert_nothing_written(tmp_path, out)


# ---------------------------------------------------------------- experiment folders
@pytest.mark.parametrize(
    "cli, message",
    [
        (
            "ensemble",
            "error: {exp}/search.json: not valid JSON (line 1: Expecting property name enclosed in double quotes)",
        ),
        (
            "leaderboard",
            "error: {exp}: not a Ray Tune experiment folder (no experiment_state-*.json inside); expected "
            "results/<name> written by echotune search",
        ),
    ],
    ids=["ensemble-damaged-search-json", "leaderboard-not-an-experiment"],
)
def test_damaged_experiment_folder_is_left_untouched(cli, message, tmp_path, capsys):
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "search.json").write_text("{'config': 1}\n")
    before = snapshot(experiment)
    code, lines = run_cli(cli, [experiment], capsys)
    assert code == 2
    assert lines == [message.format(exp=experiment)]
    assert snapshot(experiment) == before
    assert_nothing_written(tmp_path)


def test_ensemble_refuses_leaky_splits_and_leaves_the_experiment_untouched(tmp_path, capsys):
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "search.json").write_text('{"config": {"space": "gradnorm"}}\n')
    before = snapshot(experiment)
    code, lines = run_cli("ensemble", [experiment, "--data", leaky_export(tmp_path)], capsys)
    assert code == 2
    assert lines[0] == LEAKY.format(tmp=tmp_path) and lines[1] == "vidA: train 2, val 1", "\n".join(lines)
    assert lines[-1] == "Or pass --allow-leaky-splits to go on knowingly: the results are flagged as leaky."
    assert snapshot(experiment) == before  # no ensemble/ folder
    assert_nothing_written(tmp_path, experiment / "ensemble")


# ---------------------------------------------------------------- unwritable results
def test_search_refuses_a_results_folder_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder\n")
    storage = tmp_path / "afile" / "results"
    code, lines = run_cli("run", ["--data", make_export(tmp_path), "--storage", storage], capsys)
    assert code == 2
    assert lines[-1] == f"error: cannot write the results folder {storage / 'gradnorm'}: Not a directory"
    assert (tmp_path / "afile").read_text() == "not a folder\n"
    assert_nothing_written(tmp_path, storage)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions: a read-only folder stays writable")
def test_search_refuses_a_read_only_results_folder(tmp_path, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        storage = read_only / "results"
        code, lines = run_cli("run", ["--data", make_export(tmp_path), "--storage", storage], capsys)
        assert code == 2
        assert lines[-1] == f"error: cannot write the results folder {storage / 'gradnorm'}: Permission denied"
        assert_nothing_written(tmp_path, storage)
    finally:
        read_only.chmod(0o700)


def test_full_disk_while_writing_a_split_leaves_no_partial_folder(tmp_path):
    """A disk that fills up mid-write, simulated with RLIMIT_FSIZE in a child process (Python ignores SIGXFSZ,
    so a write past the limit raises OSError EFBIG): the split folder must not appear half-written."""
    data_yaml, out = make_export(tmp_path), tmp_path / "split"
    limit = 64  # bytes: the first list (train.txt, a few ../<dataset>/... lines) is larger

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "search/run.py", "--data", str(data_yaml), "--resplit-by-video", "--split-out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: cannot write {out}: File too large"
    assert_nothing_written(tmp_path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # no temporary sibling either
