"""The GPU measurement to run the day a device is lent (under 5 minutes on one GPU).

At 128 px (6UO9 at 1.75 Å/px, SNR 0.1, CTF, 3 Å shifts; simulated on the device first), for
float32 and for ``--bf16-encoder``: images/s and peak GPU memory of each stage of
``cryohydra reconstruct`` with its defaults (batch size, heads, encoder box, resolutions):
``--batches`` amortized batches, ``--batches`` auto-decoding batches at Nyquist, one round of
the switch's global pose search on every image, and the final backprojection.
Rows go to ``results/gpu.json`` (``--out`` elsewhere), each with the device and the commit.

  python benchmarks/bench_gpu.py --device cuda            # the real run
  python benchmarks/bench_gpu.py --device cpu --quick     # a smoke test of the script (s)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import RESULTS, CountingBar, commit, machine
from cryohydra.data import default_structure
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.pose_search import projection_matching
from cryohydra.inference.train import AbInitio
from cryohydra.io.star import read_star
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.simulate import SimulationConfig, simulate


def _timed(device: torch.device, work) -> tuple[float, float | None]:
    """Seconds and peak GPU memory (MiB; None on a CPU) of ``work()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    begin = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - begin, torch.cuda.max_memory_allocated() / 2**20
    return time.perf_counter() - begin, None


def measure(star: Path, device: torch.device, bf16: bool, batches: int) -> dict:
    particles = read_star(star).with_poses(None, None)
    config = ReconstructConfig(epochs=2, switch=1, encoder_bf16=bf16)
    run = AbInitio(particles, config, device)
    row: dict = {"encoder_bf16": bf16, "box": run.data.working_box, "batch_size": config.batch_size}

    def stage(name: str, images: int, work) -> None:
        seconds, peak = _timed(device, work)
        row[name] = {"images": images, "seconds": seconds, "images_per_s": images / seconds}
        row[name]["peak_gpu_mib"] = peak

    chosen = run.epoch_batches(1)[:batches]
    count = sum(len(b) for b in chosen)
    stage("amortized", count, lambda: run.amortized_epoch(1, CountingBar(), chosen))

    def search() -> None:
        projection_matching(
            run.volume,
            run.data,
            run.table.shifts_a,
            run.loss_resolution_a(1),
            config.search_nside,
            1,
            config.search_converged,
            rotations=run.table.rotations,
            max_shift_a=run.encoder.max_shift_a,
        )

    stage("pose_search_round", len(run.data), search)
    n = len(run.data)
    run.enter_auto_decoding(run.table.rotations.clone(), run.table.shifts_a.clone(), 1)
    run.epoch = 1
    chosen = run.epoch_batches(2)[:batches]
    count = sum(len(b) for b in chosen)
    stage("auto_decoding", count, lambda: run.auto_decoding_epoch(2, CountingBar(), chosen))
    posed = read_star(star)
    stage(
        "backprojection", n, lambda: reconstruct_known_poses(posed, device=device, progress=False)
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--particles", type=int, default=4000)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    parser.add_argument("--work", type=Path, default=RESULTS.parent / "work" / "gpu")
    args = parser.parse_args()
    if args.quick:
        args.particles, args.box, args.batches = 128, 32, 2
    device = torch.device(args.device)
    code = commit()
    folder = args.work / f"6uo9_{args.box}px_{args.particles}"
    started = time.perf_counter()
    if not (folder / "simulation.json").exists():
        simulate(
            SimulationConfig(
                structure=str(default_structure()),
                box_size=args.box,
                pixel_size_a=3.5 * 64 / args.box,
                n_particles=args.particles,
                snr=0.1,
                shift_std_a=3.0,
                seed=2026,
            ),
            folder,
            force=True,
            device=device,
            progress=False,
        )
    simulated = time.perf_counter() - started
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    for bf16 in (False, True):
        row = measure(folder / "particles.star", device, bf16, args.batches)
        row.update(
            {
                "particles": args.particles,
                "simulate_s": simulated,
                "quick": args.quick,
                "commit": code,
            }
        )
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
