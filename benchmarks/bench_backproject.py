"""Known-pose reconstruction: throughput, and the ceiling resolution on the standard datasets.

- Backprojection throughput (particles/s) at 64 and 128 px (6UO9, CTF, shifts, SNR 0.1).
- For each standard dataset (HSP90 and 6UO9, 64 px, 10,000 particles, SNR 0.1, EMPIAR-10028
  CTF, centred and shifted): the map from the true poses, its FSC against the ground truth
  (resolution at 0.5, soft spherical mask) and the gold-standard half-map FSC at 0.143. These
  are the ceilings the ab-initio benchmark compares with. Maps are kept under
  ``benchmarks/work/known_pose/``.

Results go to ``benchmarks/results/backproject.json``, updated after every dataset; a dataset
already there is skipped (``--redo`` to recompute), so an interrupted run resumes.
  python benchmarks/bench_backproject.py [--device cuda] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mrcfile
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, write_results  # noqa: E402
from cryohydra.io.mrc import write_map  # noqa: E402
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.metrics.fsc import fsc, soft_spherical_mask  # noqa: E402
from cryohydra.reconstruct.backproject import reconstruct_known_poses  # noqa: E402
from datasets import WORK, all_standard, standard  # noqa: E402

NAME = "backproject"


def throughput(box: int, n: int, device: str) -> dict:
    dataset = standard("6uo9", shifted=True, n_particles=n, box=box)
    particles = read_star(dataset.star)
    start = time.perf_counter()
    reconstruct_known_poses(particles, device=device, progress=False)
    seconds = time.perf_counter() - start
    return {"box": box, "n_particles": n, "seconds": seconds, "particles_per_s": n / seconds}


def known_pose(dataset, device: str) -> dict:
    particles = read_star(dataset.star)
    start = time.perf_counter()
    result = reconstruct_known_poses(particles, device=device, progress=False)
    seconds = time.perf_counter() - start
    truth = torch.from_numpy(mrcfile.read(dataset.ground_truth).copy())
    box, pixel = truth.shape[-1], result.pixel_size_a
    mask = soft_spherical_mask(box, radius_px=0.4 * box, edge_px=3)
    versus_truth = fsc(result.full.cpu(), truth, mask, pixel_size_a=pixel)
    gold = fsc(result.half_a.cpu(), result.half_b.cpu(), mask, pixel_size_a=pixel)
    out = WORK / "known_pose" / dataset.name
    write_map(out / "map.mrc", result.full.cpu().numpy(), pixel, force=True)
    return {
        "dataset": dataset.name,
        "n_particles": len(particles),
        "pixel_size_a": pixel,
        "seconds": seconds,
        "resolution_vs_truth_a_fsc05": versus_truth.resolution_a(0.5),
        "gold_standard_a_fsc0143": gold.resolution_a(0.143),
        "nyquist_a": 2 * pixel,
        "map": str((out / "map.mrc").relative_to(WORK.parent.parent)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args()
    name = NAME if args.device == "cpu" else f"{NAME}_{args.device}"
    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() and not args.redo else {}
    results.pop("machine", None)
    results.setdefault("throughput", [])
    results.setdefault("known_pose", [])
    if not args.skip_throughput and not results["throughput"]:
        for box, n in ((64, 2000), (128, 1000)):
            results["throughput"].append(throughput(box, n, args.device))
            print(results["throughput"][-1], flush=True)
        write_results(name, results)
    done = {entry["dataset"] for entry in results["known_pose"]}
    for dataset in all_standard():
        if dataset.name in done:
            continue
        results["known_pose"].append(known_pose(dataset, args.device))
        print(results["known_pose"][-1], flush=True)
        write_results(name, results)
    print("machine:", machine(), "\nwritten to", path)


if __name__ == "__main__":
    main()
