"""Training throughput of the engine's train step, measured side by side in one run on this machine.

    python benchmarks/throughput.py                # full table (a few minutes on 2 cores)
    python benchmarks/throughput.py --quick        # under a minute: test and n scales only

For each architecture/scale: train-step images/s (the engine's `train_one_epoch` over fixed cached batches:
forward, losses, balancer, backward, clip, optimizer), the GradNorm step time / fixed-weight step time on
the same model and batches, and the achieved GFLOP/s of the step (FLOPs counted by torch's FlopCounterMode)
as a fraction of this machine's measured fp32 matmul GFLOP/s at the same thread count.

A second table weighs the engine against the simplest loop that trains the same thing, and the data loading:
  engine / bare        images/s of `train_one_epoch` as `fit` calls it (fixed balancer, EMA, clipping, per-image
                       loss bookkeeping) / images/s of a hand-written loop (forward with the same criterion,
                       backward, optimizer step), same model, batches and threads, steps interleaved so that
                       machine noise hits both alike (goal >= 0.95)
  data wait            time waiting for the next batch / (wait + train step), over the DataLoader `fit` builds
                       (cached images like a trial, its workers, a hard-mining epoch order), without augmentation
                       and with the `medical` policy at strength 0.5 (goal <= 5 %)
Writes results/bench/throughput.json and results/bench/throughput.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import header, load_data, run_facts, write_outputs
from torch.utils.flop_counter import FlopCounterMode

from echotune.augment import Augmenter
from echotune.balance import create_balancer
from echotune.data.dataset import EchoDataset, make_loader
from echotune.engine.build import build_model, build_optimizer, device_runtime
from echotune.engine.config import TrainConfig
from echotune.engine.ema import ModelEMA
from echotune.engine.fit import hard_mining_indices
from echotune.engine.steps import StepSettings, soft_views, to_device, train_one_epoch
from echotune.losses import DETECTION_LOSS_KEYS, VIEW_LOSS_KEY

FULL = [("shared", "test"), ("shared", "n"), ("shared", "s"), ("dual", "n")]
QUICK = [("shared", "test"), ("shared", "n")]


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def fixed_batches(data, img_size: int, batch_size: int, count: int) -> list[dict]:
    dataset = EchoDataset(data.samples["train"], img_size, cache=True)
    batch = next(iter(make_loader(dataset, batch_size, shuffle=True, seed=0)))
    return [batch] * count


def time_steps(cfg: TrainConfig, data, batches: list[dict], balance: str) -> tuple[float, float]:
    """(median seconds per train step over the timed steps, FLOPs of one step)."""
    torch.manual_seed(0)
    model = build_model(cfg, data)
    balancer = create_balancer(balance, alpha=cfg.gn_alpha)
    optimizer = build_optimizer(cfg, model, balancer)
    settings = StepSettings(lr_at_step=lambda step: 1e-3, grad_clip=cfg.grad_clip)
    device = torch.device("cpu")
    train_one_epoch(model, balancer, batches[:2], optimizer, settings, 0, device)  # warm-up
    per_step = []
    for batch in batches:
        start = time.perf_counter()
        train_one_epoch(model, balancer, [batch], optimizer, settings, 0, device)
        per_step.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        train_one_epoch(model, balancer, batches[:1], optimizer, settings, 0, device)
    return statistics.median(per_step), counter.get_total_flops()


def bare_step(model, optimizer, batch: dict, device: torch.device) -> None:
    """The minimal training step: forward with the model's criterion, summed task losses, backward, step."""
    images, targets = to_device(batch, device)
    targets["views"] = soft_views(targets["views"], model.n_views, 0.0)  # the criterion's target format
    losses = model(images, targets)
    total = sum(losses[k] for k in DETECTION_LOSS_KEYS) + losses[VIEW_LOSS_KEY]
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def engine_vs_bare(cfg: TrainConfig, data, batches: list[dict]) -> tuple[float, float]:
    """(median s per bare step, median s per engine step), alternating the two on the same batches."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    bare_model = build_model(cfg, data)
    bare_optimizer = build_optimizer(cfg, bare_model, create_balancer("fixed"))
    torch.manual_seed(0)
    model = build_model(cfg, data)
    balancer = create_balancer("fixed")
    optimizer = build_optimizer(cfg, model, balancer)
    ema = ModelEMA(model, cfg.ema_decay)  # fit always keeps EMA weights
    settings = StepSettings(lr_at_step=lambda step: 1e-3, grad_clip=cfg.grad_clip)
    bare_model.train()
    for batch in batches[:2]:  # warm-up
        bare_step(bare_model, bare_optimizer, batch, device)
        train_one_epoch(model, balancer, [batch], optimizer, settings, 0, device, ema)
    bare, engine = [], []
    for i, batch in enumerate(batches):
        for which in (0, 1) if i % 2 == 0 else (1, 0):  # alternate the order: neither always runs second
            start = time.perf_counter()
            if which == 0:
                bare_step(bare_model, bare_optimizer, batch, device)
                bare.append(time.perf_counter() - start)
            else:
                train_one_epoch(model, balancer, [batch], optimizer, settings, 0, device, ema)
                engine.append(time.perf_counter() - start)
    return statistics.median(bare), statistics.median(engine)


def data_wait_share(
    cfg: TrainConfig, data, train_set: EchoDataset, policy: str, strength: float, max_steps: int
) -> float:
    """Share of step time spent waiting for the next batch, in a loop over the DataLoader `fit` builds over
    `train_set` (built as fit builds it: images cached once per trial)."""
    device = torch.device("cpu")
    runtime = device_runtime(cfg, device)
    train_set.set_epoch(1, Augmenter(policy, strength) if strength > 0 else None, cfg.seed)
    indices = hard_mining_indices(len(train_set), {}, 0.0, np.random.default_rng([cfg.seed, 1]))
    loader = make_loader(
        train_set, cfg.batch_size, workers=runtime.workers, indices=indices, pin_memory=runtime.pin_memory
    )
    torch.manual_seed(0)
    model = build_model(cfg, data)
    balancer = create_balancer("fixed")
    optimizer = build_optimizer(cfg, model, balancer)
    ema = ModelEMA(model, cfg.ema_decay)
    settings = StepSettings(lr_at_step=lambda step: 1e-3, grad_clip=cfg.grad_clip)
    wait = step = 0.0
    batches = iter(loader)
    for _ in range(min(max_steps, len(loader))):
        start = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        train_one_epoch(model, balancer, [batch], optimizer, settings, 1, device, ema)
        wait, step = wait + loaded - start, step + time.perf_counter() - loaded
    return wait / (wait + step)


def run(quick: bool, img_size: int, batch_size: int, steps: int, threads: int, data_yaml: str | None = None) -> dict:
    torch.set_num_threads(threads)
    data = load_data(data_yaml)
    batches = fixed_batches(data, img_size, batch_size, steps)
    train_set = EchoDataset(data.samples["train"], img_size, cache=True, cache_threads=threads)  # as fit builds it
    peak = matmul_gflops(threads)
    rows, engine_rows = [], []
    for arch, scale in QUICK if quick else FULL:
        balances = ("fixed", "gradnorm") if arch == "shared" else ("fixed", "uncertainty")
        cfg = TrainConfig.from_dict(
            {
                "arch": arch,
                "model_scale": scale,
                "img_size": img_size,
                "cpus": threads,
                "balance": balances[0],
                "batch_size": batch_size,
                "classifier": "resnet18",
            }
        )
        times = {b: time_steps(cfg, data, batches, b) for b in balances}
        base_s, flops = times["fixed"]
        other_s = times[balances[1]][0]
        rows.append(
            {
                "arch": arch,
                "scale": scale,
                "images_per_s": batch_size / base_s,
                "step_ms": base_s * 1e3,
                f"{balances[1]}_step_ms": other_s * 1e3,
                "balance_cost_ratio": other_s / base_s,
                "balance": balances[1],
                "gflop_per_step": flops / 1e9,
                "gflops_achieved": flops / base_s / 1e9,
                "fraction_of_matmul_peak": flops / base_s / 1e9 / peak,
            }
        )
        bare_s, engine_s = engine_vs_bare(cfg, data, batches)
        engine_rows.append(
            {
                "arch": arch,
                "scale": scale,
                "bare_images_per_s": batch_size / bare_s,
                "engine_images_per_s": batch_size / engine_s,
                "engine_over_bare": bare_s / engine_s,
                "data_wait_share": data_wait_share(cfg, data, train_set, "none", 0.0, steps),
                "data_wait_share_medical": data_wait_share(cfg, data, train_set, "medical", 0.5, steps),
            }
        )
        print(
            f"{arch:>6} {scale:>4}: {rows[-1]['images_per_s']:.1f} img/s, {balances[1]}/fixed "
            f"{rows[-1]['balance_cost_ratio']:.3f}, {rows[-1]['gflops_achieved']:.1f} GFLOP/s "
            f"({rows[-1]['fraction_of_matmul_peak']:.0%} of matmul); engine/bare "
            f"{engine_rows[-1]['engine_over_bare']:.3f}, data wait {engine_rows[-1]['data_wait_share']:.1%} "
            f"(medical aug {engine_rows[-1]['data_wait_share_medical']:.1%})",
            flush=True,
        )
    return {
        "threads": threads,
        "img_size": img_size,
        "batch_size": batch_size,
        "timed_steps": steps,
        "matmul_gflops": peak,
        "rows": rows,
        "engine_rows": engine_rows,
    }


def markdown(result: dict) -> str:
    lines = header(
        result,
        f"{result['threads']} thread(s), {result['img_size']} px, batch {result['batch_size']}, "
        f"median of {result['timed_steps']} steps; fp32 matmul peak "
        f"{result['matmul_gflops']:.1f} GFLOP/s",
    )
    lines += [
        "| model | scale | train images/s | step ms | balancer | balancer step / fixed step | GFLOP/step | "
        "GFLOP/s | of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['arch']} | {r['scale']} | {r['images_per_s']:.1f} | {r['step_ms']:.0f} | {r['balance']} | "
            f"{r['balance_cost_ratio']:.3f} | {r['gflop_per_step']:.2f} | {r['gflops_achieved']:.1f} | "
            f"{r['fraction_of_matmul_peak']:.0%} |"
        )
    lines += [
        "",
        "| model | scale | bare loop images/s | engine images/s | engine / bare | data wait (no aug) | "
        "data wait (medical 0.5) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["engine_rows"]:
        lines.append(
            f"| {r['arch']} | {r['scale']} | {r['bare_images_per_s']:.1f} | {r['engine_images_per_s']:.1f} | "
            f"{r['engine_over_bare']:.3f} | {r['data_wait_share']:.1%} | {r['data_wait_share_medical']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="test and n scales, fewer steps (< 1 minute)")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 10; quick 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    facts = run_facts("benchmarks/throughput.py", argv)
    result = {
        **facts,
        **run(
            args.quick, args.img_size, args.batch_size, args.steps or (4 if args.quick else 10), args.threads, args.data
        ),
    }
    name = "throughput-quick" if args.quick else "throughput"
    write_outputs(args.out, name, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
