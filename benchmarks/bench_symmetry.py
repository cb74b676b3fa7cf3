"""Symmetry detection on maps from atomic models and on turned symmetric blob maps.

Writes ``results/symmetry_detection.json``: per map the reported group, every candidate's
score, and the wall time (mean and median of ``--repeats`` runs, one thread).

  python benchmarks/bench_symmetry.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from cryohydra.data import default_structure
from cryohydra.metrics.symmetry import detect_symmetry
from cryohydra.simulate import load_structure

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests" / "metrics"))
from test_symmetry_detection import TURN, blob_map  # noqa: E402

from common import write_results  # noqa: E402

MAPS = {
    "6uo9 (heterodimer)": (default_structure(), 64, 3.5, "C1"),
    "hsp90 (homodimer)": (ROOT / "data" / "hsp90_hsp82_dimer.pdb.gz", 64, 2.5, "C2"),
    "5a1a (beta-galactosidase)": (
        ROOT.parent / "tests" / "data" / "models" / "5a1a.cif.gz",
        64,
        3.5,
        "D2",
    ),
}
BLOBS = ("C3", "C7", "D2", "D5", "T", "O", "I")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    volumes = {
        name: (*load_structure(p, box, px), want) for name, (p, box, px, want) in MAPS.items()
    }
    volumes.update(
        {f"blobs {s}, turned": (blob_map(s, 64, seed=1, turn=TURN), 3.0, s) for s in BLOBS}
    )
    rows = []
    for name, (volume, pixel_a, expected) in volumes.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            detection = detect_symmetry(volume, pixel_a)
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "map": name,
                "pixel_size_a": pixel_a,
                "box": volume.shape[-1],
                "expected": expected,
                "reported": detection.symbol,
                "right": detection.symbol == expected,
                "scores": {s.symbol: round(s.score, 4) for s in detection.scores},
                "seconds_mean": statistics.mean(times),
                "seconds_median": statistics.median(times),
            }
        )
        print(f"{name}: {detection.summary()} ({statistics.median(times):.1f} s)", flush=True)
    path = write_results("symmetry_detection", {"threads": 1, "rows": rows})
    print(path)


if __name__ == "__main__":
    main()
