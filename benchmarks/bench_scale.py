"""Scale: a stack larger than this machine's memory cares to hold, with one and two processes.

The stack: 200,000 particles of 128 px (1.75 Å/px, PDB 6UO9, SNR 0.1, CTF, 3 Å shifts) in
20 chunk files of 10,000 images (655 MB each, 13.1 GB in all), with one RELION 3.1 STAR file.
To save an hour of simulation, 10,000 images are simulated once and the chunk files are
copies of that stack (each a file of its own on disk, so nothing is shared in the page
cache); the STAR rows carry each copy's CTF and poses. For memory and speed this is the same as
200,000 distinct images.

Each measurement runs ``scale_worker.py`` in a fresh process (so its peak memory is its own):
``--batches`` amortized batches (the defaults: 15 Å, encoder on 32 px crops) and
``--auto-batches`` auto-decoding batches at Nyquist, batch 64 in all, with 1 process (2
threads), 1 process with a DataLoader worker, and 2 processes under torchrun (gloo, 1 thread
each). Results: ``results/scale.json`` and ``results/scale.md``.

  python benchmarks/bench_scale.py                 # makes the stack once (about 15 min)
  python benchmarks/bench_scale.py --batches 300 --auto-batches 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_results  # noqa: E402
from cryohydra.data import default_structure  # noqa: E402
from cryohydra.io.star import read_star, write_star  # noqa: E402
from cryohydra.simulate import SimulationConfig, simulate  # noqa: E402
from datasets import WORK  # noqa: E402

NAME = "scale"
FOLDER = WORK / "scale_200k_128px"
UNIQUE, COPIES = 10_000, 20
WORKER = Path(__file__).parent / "scale_worker.py"


def make_stack(folder: Path = FOLDER) -> Path:
    """The 200,000-particle STAR file (made once)."""
    star = folder / "particles_200k.star"
    if star.exists():
        return star
    base = folder / "base"
    if not (base / "simulation.json").exists():
        config = SimulationConfig(
            structure=str(default_structure()),
            box_size=128,
            pixel_size_a=1.75,
            n_particles=UNIQUE,
            snr=0.1,
            shift_std_a=3.0,
            seed=7,
        )
        simulate(config, base, progress=True)
    particles = read_star(base / "particles.star")
    source = Path(particles.image_paths[0])
    paths = []
    for copy in range(COPIES):
        target = folder / f"chunk_{copy:02d}.mrcs"
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        paths.append(str(target))
    tiled = particles.subset(np.tile(np.arange(UNIQUE), COPIES))
    tiled = dataclasses.replace(
        tiled,
        image_paths=np.repeat(np.array(paths, dtype=object), UNIQUE),
        image_indices=np.tile(particles.image_indices, COPIES),
        _stacks={},
    )
    write_star(star, tiled)
    return star


def measure(star: Path, processes: int, workers: int, args) -> dict:
    worker = [
        str(WORKER),
        str(star),
        "--batches",
        str(args.batches),
        "--auto-batches",
        str(args.auto_batches),
        "--workers",
        str(workers),
    ]
    if processes == 1:
        command = [sys.executable, *worker]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            *worker,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-3000:])
    ranks = [
        json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith("SCALE ")
    ]
    return {
        "processes": processes,
        "threads_per_process": int(env["OMP_NUM_THREADS"]),
        "loader_workers": workers,
        "wall_s": time.perf_counter() - start,
        "ranks": ranks,
        "amortized_images_per_s": ranks[0]["amortized"]["images_per_s"],
        "auto_decoding_images_per_s": ranks[0].get("auto-decoding", {}).get("images_per_s"),
        "peak_rss_mib_per_process": max(r["peak_rss_mib"] for r in ranks),
        "peak_rss_mib_total": sum(r["peak_rss_mib"] + r["peak_rss_children_mib"] for r in ranks),
    }


def markdown(results: dict) -> str:
    lines = [
        "# Scale benchmark",
        "",
        f"{results['n_particles']:,} particles of {results['box']} px on disk "
        f"({results['stack_gb']:.1f} GB in {COPIES} chunk files; see `bench_scale.py`); "
        f"{results['batches']} amortized and {results['auto_batches']} auto-decoding "
        "batches of 64; machine and date in `scale.json`.",
        "",
        "| processes | threads each | loader workers | amortized (img/s) "
        "| auto-decoding (img/s) | peak RSS per process (MiB) | peak RSS all (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results["measurements"]:
        auto = m["auto_decoding_images_per_s"]
        lines.append(
            f"| {m['processes']} | {m['threads_per_process']} | {m['loader_workers']} "
            f"| {m['amortized_images_per_s']:.0f} | {'-' if auto is None else f'{auto:.1f}'} "
            f"| {m['peak_rss_mib_per_process']:.0f} | {m['peak_rss_mib_total']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--auto-batches", type=int, default=50)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["1x0", "1x1", "2x0"],
        help="PROCESSESxLOADER_WORKERS to measure",
    )
    args = parser.parse_args()
    star = make_stack()
    stack_bytes = sum(p.stat().st_size for p in FOLDER.glob("chunk_*.mrcs"))
    measurements = []
    for setting in args.settings:
        processes, workers = (int(x) for x in setting.split("x"))
        entry = measure(star, processes, workers, args)
        print(json.dumps({k: v for k, v in entry.items() if k != "ranks"}), flush=True)
        measurements.append(entry)
    first = measurements[0]["ranks"][0]
    results = {
        "n_particles": first["n_particles"],
        "box": first["box"],
        "stack_gb": stack_bytes / 1e9,
        "batches": args.batches,
        "auto_batches": args.auto_batches,
        "measurements": measurements,
    }
    write_results(NAME, results)
    (RESULTS / f"{NAME}.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
