"""Training throughput of the engine's train step, measured side by side in one run on this machine.

    python benchmarks/throughput.py                # full table (a few minutes on 2 cores)
    python benchmarks/throughput.py --quick        # under a minute: test and n scales only

For each architecture/scale: train-step images/s (the engine's `train_one_epoch` over fixed cached batches:
forward, losses, balancer, backward, clip, optimizer, EMA), the GradNorm step time / fixed-weight step time on
the same model and batches, and the achieved GFLOP/s of the step (FLOPs counted by torch's FlopCounterMode)
as a fraction of this machine's measured fp32 matmul GFLOP/s at the same thread count.
Writes results/bench/throughput.json and results/bench/throughput.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from echotune.atomic import atomic_write_text
from echotune.balance import create_balancer
from echotune.data.check import check_dataset
from echotune.data.dataset import EchoDataset, make_loader
from echotune.data.prepare import resolve_data_yaml
from echotune.engine.build import build_model, build_optimizer
from echotune.engine.checkpoint import package_versions
from echotune.engine.config import TrainConfig
from echotune.engine.steps import StepSettings, train_one_epoch

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
    return 2 * size ** 3 / statistics.median(times) / 1e9


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


def run(quick: bool, img_size: int, batch_size: int, steps: int, threads: int, data_yaml: str | None = None) -> dict:
    torch.set_num_threads(threads)
    data = check_dataset(resolve_data_yaml(data_yaml, log=lambda m: print(m, file=sys.stderr)))
    batches = fixed_batches(data, img_size, batch_size, steps)
    peak = matmul_gflops(threads)
    rows = []
    for arch, scale in (QUICK if quick else FULL):
        balances = ("fixed", "gradnorm") if arch == "shared" else ("fixed", "uncertainty")
        cfg = TrainConfig.from_dict({"arch": arch, "model_scale": scale, "img_size": img_size,
                                     "balance": balances[0], "batch_size": batch_size, "classifier": "resnet18"})
        times = {b: time_steps(cfg, data, batches, b) for b in balances}
        base_s, flops = times["fixed"]
        other_s = times[balances[1]][0]
        rows.append({"arch": arch, "scale": scale, "images_per_s": batch_size / base_s,
                     "step_ms": base_s * 1e3, f"{balances[1]}_step_ms": other_s * 1e3,
                     "balance_cost_ratio": other_s / base_s, "balance": balances[1],
                     "gflop_per_step": flops / 1e9, "gflops_achieved": flops / base_s / 1e9,
                     "fraction_of_matmul_peak": flops / base_s / 1e9 / peak})
        print(f"{arch:>6} {scale:>4}: {rows[-1]['images_per_s']:.1f} img/s, {balances[1]}/fixed "
              f"{rows[-1]['balance_cost_ratio']:.3f}, {rows[-1]['gflops_achieved']:.1f} GFLOP/s "
              f"({rows[-1]['fraction_of_matmul_peak']:.0%} of matmul)", flush=True)
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": threads, "img_size": img_size,
            "batch_size": batch_size, "timed_steps": steps, "matmul_gflops": peak, "versions": package_versions(),
            "rows": rows}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['machine']}; {result['threads']} thread(s), "
             f"{result['img_size']} px, batch {result['batch_size']}, median of {result['timed_steps']} steps; "
             f"fp32 matmul peak {result['matmul_gflops']:.1f} GFLOP/s; torch {result['versions']['torch']}.", "",
             "| model | scale | train images/s | step ms | balancer | balancer step / fixed step | GFLOP/step | "
             "GFLOP/s | of matmul peak |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['arch']} | {r['scale']} | {r['images_per_s']:.1f} | {r['step_ms']:.0f} | {r['balance']} | "
                     f"{r['balance_cost_ratio']:.3f} | {r['gflop_per_step']:.2f} | {r['gflops_achieved']:.1f} | "
                     f"{r['fraction_of_matmul_peak']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="test and n scales, fewer steps (< 1 minute)")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 10; quick 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    result = run(args.quick, args.img_size, args.batch_size, args.steps or (4 if args.quick else 10), args.threads,
                 args.data)
    name = "throughput-quick" if args.quick else "throughput"
    atomic_write_text(args.out / f"{name}.json", json.dumps(result, indent=2))
    atomic_write_text(args.out / f"{name}.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
