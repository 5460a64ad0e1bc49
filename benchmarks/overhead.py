"""Ray Tune's overhead on short trials: worker utilisation, trial start-up, report+checkpoint time, driver memory,
against a plain process pool running the same trials without Ray.

    python benchmarks/overhead.py            # 16 short trials, 2 at a time (a few minutes on 2 cores)
    python benchmarks/overhead.py --quick    # 4 tiny trials (well under a minute on an idle machine)

The trials are fixed: the `baseline` space (nothing searched: every trial is the original configuration with
the same seed, so every trial does the same work), random searcher, FIFO scheduler (every trial runs all its
epochs), `concurrency` trials at a time with 1 CPU each, through the project's own Tuner and trainable.

  utilisation         sum over results of Ray's time_this_iter_s (time inside the trainable between reports)
                      / (Tuner.fit wall time x concurrency); goal >= 0.90
  trial start-up      the trainable's first line (`trial_started_at`) - the driver's on_trial_start; and the
                      actor start before it: on_trial_start - when the driver first listed the trial
  report+checkpoint   how long each tune.report(metrics, checkpoint) blocked the trainable (`report_s`)
  driver RSS          the driver process, sampled every 0.5 s: at the start and end of Tuner.fit, peak, growth
                      per trial; and the driver's CPU time during Tuner.fit (it shares the cores with the trials)

The plain loop: a multiprocessing Pool(concurrency) (spawned processes) calling echotune.engine.fit on the same
configurations and data, checkpointing every epoch into a temporary folder as a trial does; its utilisation is
the sum of each run's time from fit() to its last epoch report / (wall x concurrency). Writes
OUT/overhead.{json,md} (--quick: overhead-quick.*).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench_common import QUICK_SPEC, apply_defaults, header, load_data, run_facts, write_outputs

from echotune.data.check import CheckedDataset
from echotune.engine import TrainConfig, fit
from echotune.results.leaderboard import finite_or_none
from echotune.spaces import to_train_config

DEFAULTS = {
    "trials": (16, 4),
    "epochs": (3, 3),
    "img_size": (96, 64),
    "model_scale": (None, "test"),
    "compare_fresh_workers": (True, False),
}  # full, quick


class RssSampler:
    """This process's resident memory (VmRSS, MB) every `period` seconds in a daemon thread: (time.time(), MB)."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
        raise OSError("no VmRSS in /proc/self/status")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.rss_mb()))
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self.samples.append((time.time(), self.rss_mb()))  # the starting point, taken before the block runs
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self.rss_mb()))

    def between(self, start: float, end: float) -> list[float]:
        return [mb for t, mb in self.samples if start <= t <= end]


def median(values: list[float]) -> float | None:
    return finite_or_none(statistics.median(values)) if values else None


# ---------------------------------------------------------------- the two runners


def ray_run(args, data: CheckedDataset, storage: Path, reuse_actors: bool = True) -> tuple[dict, list[dict]]:
    # Imported here, not at the top: the plain loop's spawned processes import this script, and a plain loop
    # should pay only for what it uses (Ray and the search add seconds of imports per process).
    from ray_bench import BenchSearchConfig, read_results, run_search

    cfg = BenchSearchConfig(
        space="baseline",
        profile=args.profile,
        name="overhead",
        storage=str(storage),
        num_samples=args.trials,
        max_epochs=args.epochs,
        img_size=args.img_size,
        concurrency=args.concurrency,
        scheduler="fifo",
        searcher="random",
        model_scale=args.model_scale,
        reuse_actors=reuse_actors,
    )
    with RssSampler() as rss:
        run = run_search(cfg, data)
    results = read_results(run.experiment_dir)
    events = run.events
    trial_ids = sorted({r["trial_id"] for r in results})
    first = {r["trial_id"]: r for r in results if int(r["training_iteration"]) == 1}
    # In the order the trials were created: the first `concurrency` start together, later ones as slots free up.
    per_trial = [
        {
            "trial_id": t,
            "actor_start_s": events.started[t] - events.first_seen[t],
            "startup_s": first[t]["trial_started_at"] - events.started[t],
            "train_s": sum(r["time_this_iter_s"] for r in results if r["trial_id"] == t),
        }
        for t in sorted(trial_ids, key=lambda t: events.first_seen.get(t, 0.0))
        if t in events.started and t in first
    ]
    startup = [p["startup_s"] for p in per_trial]
    reports = [r["report_s"] for r in results if int(r["training_iteration"]) > 1]  # the first has no previous
    later_epochs = [r["time_this_iter_s"] for r in results if int(r["training_iteration"]) > 1]
    train_s = sum(r["time_this_iter_s"] for r in results)
    during_fit = rss.between(run.fit_started_at, run.fit_ended_at) or [rss.samples[-1][1]]
    row = {
        "runner": "ray" if reuse_actors else "ray-fresh-actors",
        "reuse_actors": reuse_actors,
        "trials": len(trial_ids),
        "epochs": len(results),
        "wall_s": run.fit_s,
        "ray_start_s": run.ray_start_s,
        "ray_shutdown_s": run.shutdown_s,
        "driver_cpu_s": run.fit_cpu_s,
        "train_s": train_s,
        "utilisation": train_s / (run.fit_s * args.concurrency),
        "startup_s_median": median(startup),
        "startup_s_max": finite_or_none(max(startup, default=None)),
        "actor_start_s_median": median([p["actor_start_s"] for p in per_trial]),
        "report_s_median": median(reports),
        "report_s_mean": finite_or_none(statistics.fmean(reports)) if reports else None,
        "epoch_s_median": median(later_epochs),
        "driver_rss_mb": {
            "before_ray": rss.samples[0][1],
            "fit_start": during_fit[0],
            "peak": max(during_fit),
            "fit_end": during_fit[-1],
            "growth_per_trial": (during_fit[-1] - during_fit[0]) / max(len(trial_ids), 1),
        },
        "per_trial": per_trial,
    }
    # Where the worker slots' time went (slot-seconds = Tuner.fit wall x concurrency): training between reports,
    # trial actors starting (process, imports, setup), and the rest (first-line start-up, the last report,
    # trial teardown, the driver's scheduling).
    slots = run.fit_s * args.concurrency
    actor_s = sum(p["actor_start_s"] for p in per_trial)
    row["slot_share"] = {
        "training": train_s / slots,
        "actor_start": actor_s / slots,
        "other": 1.0 - (train_s + actor_s) / slots,
    }
    configs = [r["config"] for r in sorted(first.values(), key=lambda r: r["trial_id"])]
    return row, configs


def plain_trial(job: tuple[dict, CheckedDataset]) -> dict:
    """One trial without Ray, in a pool process; module level so the pool can pickle it."""
    config, data = job
    started = time.time()
    reports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="echotune-plain-") as out:
        fit(
            TrainConfig.from_dict(config),
            data,
            report=lambda metrics, path: reports.append(time.time()),
            out_dir=out,
            log=lambda _: None,
        )
    return {"started_at": started, "train_s": reports[-1] - started, "epochs": len(reports), "ended_at": time.time()}


def plain_run(args, data: CheckedDataset, configs: list[dict]) -> dict:
    jobs = [(to_train_config(c), data) for c in configs]
    start_at, start = time.time(), time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.concurrency) as pool:
        runs = pool.map(plain_trial, jobs, chunksize=1)
    wall = time.perf_counter() - start
    train_s = sum(r["train_s"] for r in runs)
    return {
        "runner": "plain",
        "trials": len(runs),
        "epochs": sum(r["epochs"] for r in runs),
        "wall_s": wall,
        "train_s": train_s,
        "utilisation": train_s / (wall * args.concurrency),
        "pool_start_s": min(r["started_at"] for r in runs) - start_at,
    }


# ---------------------------------------------------------------- table


def _num(value, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _ray_line(label: str, ray: dict) -> str:
    rss = ray["driver_rss_mb"]
    return (
        f"| {label} | {ray['trials']} | {ray['wall_s']:.1f} (+{ray['ray_start_s']:.1f} ray.init) | "
        f"{ray['train_s']:.1f} | {ray['utilisation']:.2f} | {_num(ray['startup_s_median'])} "
        f"(+{_num(ray['actor_start_s_median'])} actor start) | {_num(ray['report_s_median'], '.3f')} | "
        f"{rss['fit_start']:.0f} / {rss['peak']:.0f} / {rss['fit_end']:.0f} ({rss['growth_per_trial']:+.1f}) |"
    )


def markdown(result: dict) -> str:
    s, ray, plain = result["settings"], result["ray"], result["plain"]
    lines = header(
        result,
        f"{s['trials']} trials x {s['epochs']} epochs of the `baseline` configuration, "
        f"{s['img_size']} px{', scale ' + s['model_scale'] if s['model_scale'] else ''}, "
        f"{s['concurrency']} at a time x 1 CPU; data {s['data']}",
    )
    share = ray["slot_share"]
    lines += [
        "| runner | trials | wall s | training s | utilisation | start-up s (median) | "
        "report+checkpoint s (median) | driver RSS MB start / peak / end (per trial) |",
        "|---|---|---|---|---|---|---|---|",
        *(
            [_ray_line("Ray Tune, a fresh worker per trial (reuse_actors=False)", result["ray_fresh"])]
            if result.get("ray_fresh")
            else []
        ),
        _ray_line("Ray Tune (search/tuner.py: workers reused)", ray),
        f"| plain Pool({s['concurrency']}) + engine.fit | {plain['trials']} | {plain['wall_s']:.1f} | "
        f"{plain['train_s']:.1f} | {plain['utilisation']:.2f} | {plain['pool_start_s']:.2f} (pool start) | - | - |",
        "",
        f"Plain-loop wall / Ray wall: {result['plain_over_ray_wall']:.2f} (Tuner.fit only), "
        f"{result['plain_over_ray_wall_with_init']:.2f} (with ray.init). Median epoch in a trial "
        f"{_num(ray['epoch_s_median'])} s; the driver used {ray['driver_cpu_s']:.1f} CPU-s during "
        f"Tuner.fit; utilisation goal >= 0.90. Worker slot time: {share['training']:.0%} training, "
        f"{share['actor_start']:.0%} starting trial actors, {share['other']:.0%} other.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 tiny trials on a small synthetic set")
    parser.add_argument("--trials", type=int, help="trials (default 16; quick 4)")
    parser.add_argument(
        "--epochs", type=int, help="epochs per trial (default 3, one per stage: a search needs at least that)"
    )
    parser.add_argument("--img-size", type=int, help="input size in px (default 96; quick 64)")
    parser.add_argument(
        "--model-scale",
        choices=("test", "n", "s", "m", "l"),
        help="detector scale (default: the baseline's; quick: test)",
    )
    parser.add_argument("--profile", default="quick", help="space profile of the baseline configuration")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time, 1 CPU each (default 2)")
    parser.add_argument("--data", help="data.yaml (default: the embedded synthetic set; quick: a small one)")
    parser.add_argument(
        "--compare-fresh-workers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the trials with a fresh Ray worker per trial (default: on; quick: off)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    apply_defaults(args, DEFAULTS)
    if args.trials < 1 or args.epochs < 1 or args.concurrency < 1:
        parser.error("--trials, --epochs and --concurrency must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = "overhead-quick" if args.quick else "overhead"
    data = load_data(args.data, QUICK_SPEC if args.quick else None)
    facts = run_facts("benchmarks/overhead.py", argv)
    fresh_row = None
    if args.compare_fresh_workers:  # the same trials without worker reuse: what reuse_actors=True saves
        fresh_row, _ = ray_run(args, data, (args.out / f"{name}-fresh").resolve(), reuse_actors=False)
        print(
            f"Ray, fresh workers: {fresh_row['trials']} trials in {fresh_row['wall_s']:.1f} s, utilisation "
            f"{fresh_row['utilisation']:.2f}",
            flush=True,
        )
    ray_row, configs = ray_run(args, data, (args.out / name).resolve())
    print(
        f"Ray: {ray_row['trials']} trials in {ray_row['wall_s']:.1f} s, utilisation {ray_row['utilisation']:.2f}",
        flush=True,
    )
    plain_row = plain_run(args, data, configs)
    print(
        f"plain: {plain_row['trials']} trials in {plain_row['wall_s']:.1f} s, utilisation "
        f"{plain_row['utilisation']:.2f}",
        flush=True,
    )
    result = {
        **facts,
        "benchmark": "overhead",
        "settings": {
            "trials": args.trials,
            "epochs": args.epochs,
            "img_size": args.img_size,
            "model_scale": args.model_scale,
            "concurrency": args.concurrency,
            "profile": args.profile,
            "data": str(data.config.yaml_path),
        },
        "ray": ray_row,
        "ray_fresh": fresh_row,
        "plain": plain_row,
        "plain_over_ray_wall": plain_row["wall_s"] / ray_row["wall_s"],
        "plain_over_ray_wall_with_init": plain_row["wall_s"] / (ray_row["wall_s"] + ray_row["ray_start_s"]),
    }
    write_outputs(args.out, name, result, markdown(result))
    print("\n" + markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
