"""The prepared GPU benchmark runs (on this CPU, at tiny sizes), so that the day a device is
lent it measures rather than fails."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_gpu_quick_runs_every_stage_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, "bench_gpu.py", "--device", "cpu", "--quick", "--out", str(out)]
    command += ["--work", str(tmp_path / "work")]
    subprocess.run(command, cwd=BENCHMARKS, check=True, capture_output=True, timeout=600)
    rows = json.loads(out.read_text())["rows"]
    assert [r["encoder_bf16"] for r in rows] == [False, True]
    for row in rows:
        for stage in ("amortized", "pose_search_round", "auto_decoding", "backprojection"):
            assert row[stage]["images_per_s"] > 0
