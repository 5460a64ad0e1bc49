"""The throughput benchmark's quick mode runs and writes a sane table (never a speed threshold)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_throughput_writes_json_and_markdown(tiny_synthetic, tmp_path):
    bench = load_benchmark()
    assert bench.main(["--quick", "--data", str(tiny_synthetic.config.yaml_path), "--img-size", "64",
                       "--batch-size", "4", "--steps", "2", "--threads", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "throughput-quick.json").read_text())
    assert [(r["arch"], r["scale"]) for r in result["rows"]] == [("shared", "test"), ("shared", "n")]
    for row in result["rows"]:
        assert row["images_per_s"] > 0 and row["gflop_per_step"] > 0 and row["balance"] == "gradnorm"
        assert 0 < row["fraction_of_matmul_peak"] and math.isfinite(row["balance_cost_ratio"])
        # images/s and step time describe the same measurement
        assert math.isclose(row["images_per_s"], 4 / (row["step_ms"] / 1e3), rel_tol=1e-6)
    table = (tmp_path / "throughput-quick.md").read_text()
    assert table.count("| shared |") == 2 and "matmul peak" in table
