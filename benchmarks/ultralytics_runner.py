"""Train and run one Ultralytics YOLO model for benchmarks/vs_ultralytics.py; runs in Ultralytics' own venv.

    <ultralytics-venv>/bin/python benchmarks/ultralytics_runner.py JOB.json OUT.json

Started by vs_ultralytics.py (never imported by it, and it imports nothing of EchoTune: this interpreter has
Ultralytics, not EchoTune). JOB.json says what to do:

    {"model": "yolov8n.yaml", "data": ".../data.yaml", "epochs": 20, "img_size": 160, "batch_size": 16,
     "threads": 1, "seed": 0, "project": "<folder for Ultralytics' run>", "name": "yolov8n-seed0",
     "predict": {"val": ["<image path>", ...], "test": [...]}, "conf": 0.001, "iou": 0.6, "max_det": 300}

It trains from scratch (the model yaml, pretrained=False) on CPU with `threads` torch/OpenCV threads and no
loader workers (as EchoTune's runs), times every epoch with Ultralytics' callbacks, then predicts every listed
image with the best checkpoint (Ultralytics' own choice on val) at the low confidence of the mAP protocol.
OUT.json holds Ultralytics' own val metrics of the best checkpoint (its metric code, for a cross-check only),
per epoch: train_s (its training pass: on_train_epoch_start to on_train_epoch_end), epoch_s (to
on_fit_epoch_end: training, validation and checkpoint saving) and the images it trained on; per split and image
(in the order given): boxes (N, 4) xyxy in the ORIGINAL image's pixels (Ultralytics scales its letterboxed
predictions back), scores (N,), labels (N,) class ids; and `network_attempts`: every socket connection tried.

No network: vs_ultralytics.py sets YOLO_OFFLINE/YOLO_CONFIG_DIR/YOLO_AUTOINSTALL (ultralytics_env.py), this
script sets sync off in the settings again, skips the font download of its dataset check, trains with
plots=False (no fonts) and amp=False (no AMP check weights), and, as a last guard, replaces socket connections
to any non-loopback address by an immediate OSError that is recorded: a forgotten call fails at once instead of
hanging until a time-out.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

NETWORK_ATTEMPTS: list[str] = []


def _is_local(address) -> bool:
    """A loopback host (127.x, ::1, localhost) or an AF_UNIX path: the only connections allowed."""
    if not isinstance(address, tuple):
        return True
    host = address[0] if address else ""
    return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))


def block_network() -> None:
    """Every socket connect to a non-loopback address raises OSError at once and is recorded (a DNS lookup
    through getaddrinfo as well). Installed before Ultralytics is imported."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what: str):
        NETWORK_ATTEMPTS.append(what)
        raise OSError(f"network access blocked by the EchoTune benchmark: {what}")

    def connect(self, address):
        return real_connect(self, address) if _is_local(address) else refuse(f"connect {address!r}")

    def connect_ex(self, address):
        return real_connect_ex(self, address) if _is_local(address) else refuse(f"connect {address!r}")

    def getaddrinfo(host, *args, **kwargs):
        if host is None or _is_local((host,)):
            return real_getaddrinfo(host, *args, **kwargs)
        return refuse(f"getaddrinfo {host!r}")

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


def set_threads(threads: int) -> None:
    """torch and OpenCV threads, as EchoTune's set_thread_budget. Ultralytics sets OpenCV's to 0 on import, and
    its select_device (called by the trainer and the predictor) resets torch's to its NUM_THREADS constant
    (min(8, cores - 1)), so this runs after the import and also sets that constant, in every module that holds a
    copy of it (torch_utils for select_device; data.base for its image-caching thread pool)."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    for name, module in list(sys.modules.items()):
        if name.startswith("ultralytics") and hasattr(module, "NUM_THREADS"):
            module.NUM_THREADS = threads


def skip_font_download() -> None:
    """check_det_dataset calls check_font, which downloads Arial.ttf when it is not on disk, for plots only; the
    runs here have plots=False, so it is made a no-op (else the attempt would only be refused by block_network)."""
    import ultralytics.data.utils

    ultralytics.data.utils.check_font = lambda *args, **kwargs: None


class EpochTimer:
    """Ultralytics callbacks that time each epoch: training pass, and the whole epoch with validation. The final
    validation of best.pt after training also ends in on_fit_epoch_end (with no training pass before it): its
    metrics are kept as Ultralytics' own val numbers for the best checkpoint, not timed as an epoch."""

    def __init__(self):
        self.epochs: list[dict] = []
        self.final_val: dict = {}
        self._start, self._trained = 0.0, None

    def on_train_epoch_start(self, trainer) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer) -> None:
        self._trained = time.perf_counter()

    def on_fit_epoch_end(self, trainer) -> None:
        end = time.perf_counter()
        if self._trained is None:  # the final validation of best.pt
            self.final_val = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, (int, float))}
            return
        fitness = getattr(trainer, "fitness", None)
        self.epochs.append(
            {
                "epoch": int(trainer.epoch) + 1,
                "train_s": self._trained - self._start,
                "epoch_s": end - self._start,
                "images": len(trainer.train_loader.dataset),
                "fitness": None if fitness is None else float(fitness),
                "torch_threads": _torch_threads(),
            }
        )
        self._trained = None

    def attach(self, model) -> None:
        for event in ("on_train_epoch_start", "on_train_epoch_end", "on_fit_epoch_end"):
            model.add_callback(event, getattr(self, event))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def train(job: dict, timer: EpochTimer):
    """Train from scratch; returns the trainer (best checkpoint path in trainer.best)."""
    from ultralytics import YOLO

    model = YOLO(job["model"])
    timer.attach(model)
    model.train(
        data=job["data"],
        epochs=job["epochs"],
        imgsz=job["img_size"],
        batch=job["batch_size"],
        workers=0,
        device="cpu",
        seed=job["seed"],
        deterministic=True,
        pretrained=False,
        amp=False,
        plots=False,
        cache=job.get("cache", "ram"),
        project=job["project"],
        name=job["name"],
        exist_ok=True,
        verbose=False,
        val=True,
    )
    return model.trainer


def predict(weights: str, images: list[str], job: dict) -> list[dict]:
    """Predictions of `weights` on `images`, in their order: boxes xyxy (original image pixels), scores, labels."""
    from ultralytics import YOLO

    model = YOLO(weights)
    out = []
    for path, result in zip(
        images,
        model.predict(
            source=images,
            imgsz=job["img_size"],
            conf=job["conf"],
            iou=job["iou"],
            max_det=job["max_det"],
            device="cpu",
            stream=True,
            verbose=False,
        ),
    ):
        boxes = result.boxes
        out.append(
            {
                "image": path,
                "shape_hw": list(result.orig_shape),
                "boxes": boxes.xyxy.float().tolist(),
                "scores": boxes.conf.float().tolist(),
                "labels": [int(c) for c in boxes.cls.tolist()],
            }
        )
    return out


def main(argv: list[str]) -> int:
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    block_network()
    import ultralytics
    import ultralytics.data.base  # noqa: F401  (imported for set_threads: it holds a copy of NUM_THREADS)
    import ultralytics.engine.trainer  # noqa: F401
    from ultralytics.utils import SETTINGS

    SETTINGS.update({k: v for k, v in job.get("settings", {"sync": False}).items() if k in SETTINGS})
    skip_font_download()
    set_threads(job["threads"])
    timer = EpochTimer()
    start = time.perf_counter()
    trainer = train(job, timer)
    train_wall = time.perf_counter() - start
    best = str(trainer.best) if Path(trainer.best).is_file() else str(trainer.last)
    predict_start = time.perf_counter()
    predictions = {split: predict(best, images, job) for split, images in job.get("predict", {}).items()}
    result = {
        "ultralytics": ultralytics.__version__,
        "torch": _torch_version(),
        "model": job["model"],
        "weights": best,
        "weights_are_best": best == str(trainer.best),
        "best_fitness": None if trainer.best_fitness is None else float(trainer.best_fitness),
        "epochs": timer.epochs,
        "own_val_metrics": timer.final_val,
        "train_wall_s": train_wall,
        "predict_s": time.perf_counter() - predict_start,
        "predictions": predictions,
        "settings": {"sync": SETTINGS.get("sync"), "api_key_set": bool(SETTINGS.get("api_key"))},
        "env": {
            k: os.environ.get(k) for k in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "YOLO_AUTOINSTALL", "OMP_NUM_THREADS")
        },
        "network_attempts": NETWORK_ATTEMPTS,
    }
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out_path)
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
