"""The comparison benchmark's process runner (``benchmarks/compare.py``): the wall-clock cap,
the per-process resources from ``wait4``, and which of a peer's per-epoch maps get scored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
compare = pytest.importorskip("compare")


def _run(tmp_path: Path, name: str, command: list, capped: bool = True) -> compare.Run:
    data = compare.Data("tiny", tmp_path, 1.0, 1)
    run = compare.Run(name, name, "ceiling", data, command, capped=capped)
    return run


def test_lanes_stop_a_run_at_the_cap_and_measure_each_process(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "COMPARE", tmp_path)
    grow = "import time; x = bytearray(200 * 2**20); time.sleep(60)"
    slow = _run(tmp_path, "slow", [sys.executable, "-c", grow])
    brief = "import time; print('done'); time.sleep(2)"
    quick = _run(tmp_path, "quick", [sys.executable, "-c", brief], capped=False)
    compare.Lanes(lanes=2, threads=1, cap_s=3.0).run_all([slow, quick])

    stopped = json.loads(slow.done.read_text())
    assert stopped["stopped_at_cap"] and stopped["returncode"] == -15
    assert 3.0 < stopped["wall_seconds"] < 30.0
    assert stopped["peak_rss_mb"] > 200  # its own 200 MB, not the parent's
    finished = json.loads(quick.done.read_text())
    assert finished["returncode"] == 0 and not finished["stopped_at_cap"]
    assert finished["peak_rss_mb"] < stopped["peak_rss_mb"]
    assert "done" in (quick.folder / "stdout.log").read_text()


def test_finished_runs_are_not_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "COMPARE", tmp_path)
    marker = tmp_path / "count"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]
    run = _run(tmp_path, "once", command)
    for _ in range(2):
        compare.Lanes(lanes=1, threads=1, cap_s=0).run_all([run])
    assert marker.read_text() == "x"


def test_spread_keeps_the_last_and_at_most_n():
    items = list(range(23))
    picked = compare._spread(items, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 22
    assert picked == sorted(set(picked))
    assert compare._spread(items[:5], 8) == items[:5]


def test_every_preparation_runs_once_before_its_run(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "COMPARE", tmp_path)
    first, second = tmp_path / "ctf.pkl", tmp_path / "pose.pkl"
    first.write_text("there already")

    def make(path: Path) -> tuple[list, Path]:
        return [sys.executable, "-c", f"open({str(path)!r}, 'a').write('x')"], path

    run = _run(tmp_path, "prepared", [sys.executable, "-c", "pass"])
    run.prepare = [make(first), make(second)]
    compare.Lanes(lanes=1, threads=1, cap_s=0).run_all([run])
    assert first.read_text() == "there already"  # not made again
    assert second.read_text() == "x"  # made
