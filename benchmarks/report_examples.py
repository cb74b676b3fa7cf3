"""The report and the analyses of the HSP90 benchmark runs, copied to ``docs/figures/``.

Runs ``cryohydra analyze`` (which rewrites ``report.html``) on the HSP90 centred runs of
``bench_reconstruct.py`` (semi-amortized with ``--switch auto``, and ``--mode amortized`` for
the encoder's trajectories), times each, and copies the PNGs to ``docs/figures/`` with the
run's name in front. The particles shown are the same in both runs.

  python benchmarks/report_examples.py
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402
from cryohydra.analysis import analyze  # noqa: E402
from cryohydra.report import write_report  # noqa: E402
from datasets import WORK  # noqa: E402

DATASET = "hsp90_64px_centred_10000"
RUNS = {"semi-amortized": "semi-amortized_switch-auto", "amortized": "amortized"}
PARTICLES = [11, 4242, 8080]
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name, setting in RUNS.items():
        folder = WORK / "reconstruct" / DATASET / setting
        if not (folder / "summary.json").exists():
            print(f"skipping {name}: {folder} has no finished run")
            continue
        start = time.perf_counter()
        made = analyze(folder, PARTICLES)
        analysed = time.perf_counter() - start
        report = write_report(folder)
        timings[name] = {
            "analyze_seconds": analysed,
            "report_seconds": time.perf_counter() - start - analysed,
            "report_bytes": report.stat().st_size,
        }
        for path in [*made.values(), *sorted(folder.glob("report_*.png"))]:
            shutil.copy(path, FIGURES / f"{name}_{path.name}")
        print(json.dumps({name: timings[name]}))
    write_results("report_examples", {"dataset": DATASET, "particles": PARTICLES, **timings})


if __name__ == "__main__":
    main()
