"""Simulation throughput and projector speed.

- ``cryohydra simulate`` images/s at 64 and 128 px (bundled 6UO9, CTF, shifts, SNR 0.1,
  written to disk), end to end including the map and the two passes over the stack.
- The Fourier-slice projector: slices/s for the forward projection, its adjoint
  (backprojection), and forward + autograd backward (what training pays), on the padded
  transform used by the simulator and on an unpadded one.

Writes ``benchmarks/results/simulate_projector.json``. Usage:
  python benchmarks/bench_simulate_projector.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, write_results  # noqa: E402
from cryohydra.data import default_structure  # noqa: E402
from cryohydra.geometry.rotations import random_rotations  # noqa: E402
from cryohydra.physics.projector import SliceGrid, backproject, project  # noqa: E402
from cryohydra.simulate import SimulationConfig, load_structure, simulate  # noqa: E402


def bench_simulation(box: int, n: int, device: str) -> dict:
    """End-to-end ``simulate`` time, and the part spent making the map from the atoms."""
    pixel = 3.5 * 64 / box
    start = time.perf_counter()
    load_structure(default_structure(), box, pixel)
    map_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        config = SimulationConfig(
            structure=str(default_structure()),
            box_size=box,
            pixel_size_a=pixel,
            n_particles=n,
            snr=0.1,
            shift_std_a=3.0,
        )
        start = time.perf_counter()
        simulate(config, folder, device=device, progress=False)
        elapsed = time.perf_counter() - start
    return {
        "box": box,
        "n_particles": n,
        "seconds": elapsed,
        "images_per_s": n / elapsed,
        "map_from_atoms_seconds": map_seconds,
        "images_per_s_excluding_map": n / max(elapsed - map_seconds, 1e-9),
    }


def bench_projector(box: int, batch: int, oversampling: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    size = box * oversampling
    volume = torch.randn(size, size, size, dtype=torch.complex64, generator=g).to(device)
    rotations = random_rotations(batch, generator=g, dtype=torch.float32).to(device)
    grid = SliceGrid.create(box, device=device)
    values = project(volume, rotations, grid)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def forward():
        project(volume, rotations, grid)
        sync()

    def adjoint():
        backproject(values, rotations, grid, size)
        sync()

    trainable = volume.clone().requires_grad_()

    def forward_backward():
        project(trainable, rotations, grid).abs().pow(2).sum().backward()
        sync()

    result = {"box": box, "batch": batch, "oversampling": oversampling, "points": grid.n_points}
    for name, function in (
        ("forward", forward),
        ("adjoint", adjoint),
        ("fwd_bwd", forward_backward),
    ):
        seconds = timed(function)
        result[f"{name}_slices_per_s"] = batch / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    args = parser.parse_args()
    n64, n128 = (200, 100) if args.quick else (4000, 2000)
    results = {"simulation": [], "projector": []}
    for box, n in ((64, n64), (128, n128)):
        results["simulation"].append(bench_simulation(box, n, args.device))
        print(results["simulation"][-1], flush=True)
    for box in (64, 128):
        for oversampling in (1, 2):
            batch = 256 if box == 64 else 64
            results["projector"].append(bench_projector(box, batch, oversampling, args.device))
            print(results["projector"][-1], flush=True)
    name = "simulate_projector" + ("" if args.device == "cpu" else f"_{args.device}")
    if not args.quick:
        print("written to", write_results(name, results))
    assert all(math.isfinite(r["images_per_s"]) for r in results["simulation"])


if __name__ == "__main__":
    main()
