"""The Ray-overhead benchmark: its memory sampler, and its quick mode end to end with real Ray (schema and sanity
of the outputs; never a speed threshold)."""

from __future__ import annotations

import json
import math
import time

import overhead  # benchmarks/ is on sys.path (conftest.py)
import pytest


def test_rss_sampler_samples_this_process():
    with overhead.RssSampler(period=0.05) as rss:
        start = time.time()
        block = bytearray(64 * 1024 * 1024)  # 64 MB touched: the sampler must see the process grow
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.2)
        del block
    assert len(rss.samples) >= 3 and all(mb > 0 for _, mb in rss.samples)
    assert max(rss.between(start, time.time())) - rss.samples[0][1] > 32


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


@pytest.mark.ray
@pytest.mark.slow
def test_quick_mode_end_to_end(tiny_synthetic, tmp_path, run_benchmark):
    run_benchmark("overhead.py", "--quick", "--data", str(tiny_synthetic.config.yaml_path), "--out", str(tmp_path))
    result = json.loads((tmp_path / "overhead-quick.json").read_text())
    assert {"date", "machine", "versions", "command", "settings", "ray", "plain"} <= set(result)
    ray, plain, settings = result["ray"], result["plain"], result["settings"]
    assert ray["trials"] == plain["trials"] == settings["trials"] == 4
    assert ray["epochs"] == plain["epochs"] == 4 * settings["epochs"]  # FIFO: every trial ran all its epochs
    for row in (ray, plain):
        assert 0 < row["utilisation"] <= 1.05 and row["wall_s"] > 0 and row["train_s"] > 0
    # The driver calls on_trial_start before it asks the actor to train, so the first line comes after it.
    assert _finite(ray["startup_s_median"]) and ray["startup_s_median"] >= 0 and ray["actor_start_s_median"] >= 0
    assert _finite(ray["report_s_median"]) and ray["report_s_median"] > 0 and ray["epoch_s_median"] > 0
    share = ray["slot_share"]
    assert share["training"] == pytest.approx(ray["utilisation"]) and 0 <= share["actor_start"] < 1
    assert sum(share.values()) == pytest.approx(1.0) and len(ray["per_trial"]) == 4
    rss = ray["driver_rss_mb"]
    assert 0 < rss["fit_start"] <= rss["peak"] and rss["fit_end"] <= rss["peak"] and _finite(rss["growth_per_trial"])
    assert plain["pool_start_s"] >= 0 and result["plain_over_ray_wall"] > 0
    assert result["plain_over_ray_wall_with_init"] < result["plain_over_ray_wall"]
    table = (tmp_path / "overhead-quick.md").read_text()
    assert table.count("| Ray Tune") == 1 and table.count("| plain Pool(2)") == 1
    assert "Command: `python benchmarks/overhead.py --quick" in table
