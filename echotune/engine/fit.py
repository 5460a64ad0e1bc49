"""`fit`: train one configuration over the three stages, report every epoch, checkpoint, resume.

    fit(cfg, data, report=callback, resume_from=None, out_dir=None) -> FitResult

`report(metrics, checkpoint_path)` is called once per epoch, always with the same names (those the search and
the reports read are defined in echotune.metrics.score): val/* (VAL_METRICS), train/loss and its parts
train/loss/box, ..., gradnorm/w_det and gradnorm/w_view (TASK_WEIGHT_METRICS, whatever the balancer), stage,
epoch, lr, stage/* and time/*, and val/best_score: the best val/score so far (SELECTION_METRIC, what the search
selects on; it survives a resume with the checkpoint's `best`). None is NaN: a non-finite loss or validation
metric ends the run with NonFiniteLossError instead. The engine never imports Ray; the trainables adapt it.
Every epoch's randomness (shuffle, augmentation, mixup, hard mining) is keyed by (seed, epoch), and the torch
RNG (dropout) is checkpointed, so 2 epochs + resume + 2 epochs equals 4 epochs straight on CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from echotune.atomic import atomic_write_text
from echotune.augment import Augmenter, Mosaic
from echotune.balance import create_balancer
from echotune.data.check import CheckedDataset
from echotune.data.dataset import EchoDataset, make_loader, set_thread_budget
from echotune.engine.build import build_model, build_optimizer, device_runtime
from echotune.engine.checkpoint import (
    check_compatible,
    load_checkpoint,
    package_versions,
    restore_rng_state,
    save_checkpoint,
)
from echotune.engine.config import TrainConfig
from echotune.engine.ema import ModelEMA
from echotune.engine.schedule import lr_at, plan_stages, stage_at
from echotune.engine.steps import StepSettings, evaluate, train_one_epoch
from echotune.metrics import SCORE_METRIC, SELECTION_METRIC, TASK_WEIGHT_METRICS, TRAIN_LOSS
from echotune.results.layout import BEST_CHECKPOINT_FILE, CHECKPOINT_FILE

Report = Callable[[dict, "Path | None"], None]


@dataclass
class FitResult:
    best: dict[str, float]  # metrics of the epoch with the highest val/score
    last: dict[str, float]
    history: list[dict] = field(default_factory=list)
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


def hard_mining_indices(n: int, losses: dict[int, float], frac: float, rng: np.random.Generator) -> list[int]:
    """An epoch of n indices where the frac*n lowest-loss images of the previous epoch are replaced by second
    copies of the frac*n highest-loss ones (same epoch length, so compute per epoch stays constant)."""
    order = rng.permutation(n)
    k = int(round(frac * n))
    if k == 0 or len(losses) < n:
        return order.tolist()
    ranked = sorted(range(n), key=lambda i: losses[i])
    easiest, hardest = set(ranked[:k]), ranked[-k:]
    plan = [i for i in order if i not in easiest] + hardest
    return [plan[i] for i in rng.permutation(len(plan))]


def fit(
    cfg: TrainConfig | dict,
    data: CheckedDataset,
    report: Report | None = None,
    resume_from: str | Path | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    strict_resume: bool = False,
) -> FitResult:
    """Train `cfg` on `data`; `resume_from` continues a last.pt. strict_resume: the checkpoint's config must equal
    `cfg` but for the per-stage schedule and runtime keys (checkpoint.check_compatible; the search's trials),
    else only the model's shape must match (train.py --resume may train on for more epochs)."""
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    data.raise_if_errors()
    set_thread_budget(cfg.cpus)
    torch.manual_seed(cfg.seed)
    runtime = device_runtime(cfg)
    device = runtime.device
    out_dir = Path(out_dir) if out_dir else None
    nc, n_views = data.config.nc, len(data.view_names)
    train_set = EchoDataset(data.samples["train"], cfg.img_size, cache=cfg.cache_images, cache_threads=cfg.cpus)
    val_set = EchoDataset(data.samples["val"], cfg.img_size, cache=cfg.cache_images, cache_threads=cfg.cpus)
    val_loader = make_loader(val_set, cfg.batch_size, workers=runtime.workers, pin_memory=runtime.pin_memory)

    model = build_model(cfg, data).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    balancer = create_balancer(
        cfg.balance, alpha=cfg.gn_alpha, lr=cfg.gn_lr, min_weight=cfg.gn_min_weight, weights=(1.0, cfg.view_loss_weight)
    ).to(device)
    optimizer = build_optimizer(cfg, model, balancer)
    ema = ModelEMA(model, cfg.ema_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp)
    stages = plan_stages(cfg)
    mosaic = Mosaic(cfg.img_size) if cfg.mosaic > 0 else None
    run_info = {
        "config": cfg.to_dict(),
        "nc": nc,
        "n_views": n_views,
        "names": list(data.config.names),
        "view_names": list(data.view_names),
        "data": str(data.config.yaml_path),
    }

    start_epoch, history, mining_losses, best = 0, [], {}, None
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        check_compatible(state, {**cfg.to_dict(), "nc": nc, "n_views": n_views}, resume_from, strict=strict_resume)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        balancer.load_state_dict(state["balancer"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        start_epoch, history, best = state["epoch"], list(state["history"]), state.get("best")
        mining_losses = {int(k): v for k, v in state["mining_losses"].items()}
        log(f"Resumed from {resume_from} at epoch {start_epoch}/{cfg.epochs}")
    if out_dir is not None:
        atomic_write_text(out_dir / "run.json", json.dumps({**run_info, "versions": package_versions()}, indent=2))

    result = FitResult(best=best or {}, last=history[-1] if history else {}, history=history)
    if resume_from is not None and best is not None:  # until a resumed epoch beats it, the best is the earlier one
        earlier_best = Path(resume_from).with_name(BEST_CHECKPOINT_FILE)
        result.best_checkpoint = earlier_best if earlier_best.is_file() else None
    for epoch in range(start_epoch, cfg.epochs):
        stage = stage_at(stages, epoch)
        rng = np.random.default_rng([cfg.seed, epoch])
        aug_strength = stage.aug_strength
        train_set.set_epoch(
            epoch,
            Augmenter(cfg.aug_policy, aug_strength) if aug_strength > 0 else None,
            cfg.seed,
            mosaic=mosaic,
            mosaic_p=stage.mosaic,
        )
        indices = hard_mining_indices(len(train_set), mining_losses, stage.hard_mining_frac, rng)
        loader = make_loader(
            train_set, cfg.batch_size, workers=runtime.workers, indices=indices, pin_memory=runtime.pin_memory
        )
        steps = len(loader)
        settings = StepSettings(
            # this epoch's stage, epoch and step count bound now (the settings live for this epoch only)
            lr_at_step=lambda step, stage=stage, epoch=epoch, steps=steps: lr_at(
                stage, epoch - stage.start_epoch + step / steps, cfg.warmup_epochs
            ),
            label_smoothing=stage.label_smoothing,
            mixup_alpha=stage.mixup_alpha,
            grad_clip=cfg.grad_clip,
            seed=cfg.seed,
        )
        model.criterion.set_label_smoothing(stage.label_smoothing)
        epoch_result = train_one_epoch(model, balancer, loader, optimizer, settings, epoch, device, ema, scaler)
        mining_losses.update(epoch_result.per_image_loss)  # images a mined epoch skipped keep their last loss
        metrics, _ = evaluate(ema.module, val_loader, device, nc, n_views, cfg.score_weights or None)
        metrics.update({f"train/{k}": v for k, v in epoch_result.losses.items()})
        metrics.update({TASK_WEIGHT_METRICS[k]: v for k, v in balancer.weights().items()})
        metrics.update(
            {
                "stage/aug_strength": aug_strength,
                "stage/hard_mining_frac": stage.hard_mining_frac,
                "stage/label_smoothing": stage.label_smoothing,
                "stage/mixup_alpha": stage.mixup_alpha,
                "stage/mosaic": stage.mosaic,
            }
        )
        metrics.update(
            {
                "stage": stage.index,
                "epoch": epoch + 1,
                "lr": settings.lr_at_step(steps - 1),
                "time/train_s": epoch_result.seconds,
                "time/images_per_s": epoch_result.images / max(epoch_result.seconds, 1e-9),
            }
        )
        improved = best is None or metrics[SCORE_METRIC] > best[SCORE_METRIC]
        # the running best: what the search selects on (SELECTION_METRIC), the score of the best.pt so far
        metrics[SELECTION_METRIC] = metrics[SCORE_METRIC] if improved else best[SCORE_METRIC]
        history.append(metrics)
        best = metrics if improved else best
        result = FitResult(
            best=best,
            last=metrics,
            history=history,
            best_checkpoint=result.best_checkpoint,
            last_checkpoint=result.last_checkpoint,
        )
        if out_dir is not None:
            state = {
                **run_info,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "balancer": balancer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "stage": stage.index,
                "history": history,
                "best": best,
                "mining_losses": mining_losses,
                "config": {**cfg.to_dict(), "nc": nc, "n_views": n_views},
            }
            result.last_checkpoint = save_checkpoint(out_dir / CHECKPOINT_FILE, state)
            if improved:
                result.best_checkpoint = save_checkpoint(out_dir / BEST_CHECKPOINT_FILE, state)
        log(_epoch_line(metrics, cfg.epochs))
        if report is not None:
            report(metrics, result.last_checkpoint)
    return result


def _epoch_line(m: dict, total: int) -> str:
    loss, w = TRAIN_LOSS, {task: m.get(name, 1.0) for task, name in TASK_WEIGHT_METRICS.items()}
    return (
        f"epoch {m['epoch']:>3}/{total} stage {m['stage']} | loss {m[loss]:.3f} "
        f"(box {m[loss + '/box']:.3f} obj {m[loss + '/obj']:.3f} cls {m[loss + '/cls_det']:.3f} "
        f"view {m[loss + '/view']:.3f}) | mAP50 {m['val/map50']:.3f} mAP {m['val/map50_95']:.3f} "
        f"view acc {m['val/view_acc']:.3f} kappa {m['val/view_kappa']:.3f} | score {m[SCORE_METRIC]:.3f} | "
        f"w det {w['det']:.2f} view {w['view']:.2f} | {m['time/images_per_s']:.0f} img/s"
    )
