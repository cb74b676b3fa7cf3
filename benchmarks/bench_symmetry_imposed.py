"""``cryohydra reconstruct`` with the point group imposed against C1, on symmetric molecules.

HSP90 (C2) and 5A1A beta-galactosidase (D2), 64 px, SNR 0.1, the EMPIAR-10028 CTF table,
centred (``datasets.py``), 2,000 and 10,000 particles; defaults otherwise. Pose errors are
scored modulo the molecule's own group (from its chains, in the map's frame); the FSC 0.5 is
against the truth, beside the known-pose map's. Each run appends a row to
``results/symmetry_imposed.json`` as it finishes (a row already there is skipped, so the
benchmark resumes where it stopped; ``--again`` adds a new row beside an old one).

  python benchmarks/bench_symmetry_imposed.py --sizes 2000
"""

from __future__ import annotations

import argparse
import json
import time

from common import RESULTS, append_row, commit, read_rows
from cryohydra.inference.config import ReconstructConfig
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JobOptions, run_job
from cryohydra.metrics.reference import reference_fsc
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from datasets import standard

GROUPS = {"hsp90": "C2", "5a1a": "D2"}
PATH = RESULTS / "symmetry_imposed.json"
WORK = RESULTS.parent / "work" / "symmetry_imposed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--models", nargs="+", default=list(GROUPS))
    parser.add_argument(
        "--groups", nargs="+", default=None, help="only these imposed groups (e.g. D2)"
    )
    parser.add_argument(
        "--again", action="store_true", help="run even where a row exists (adds a new row)"
    )
    args = parser.parse_args()
    code = commit()  # the code this process imported, even if a commit lands meanwhile
    for n in args.sizes:
        for model in args.models:
            dataset = standard(model, False, n_particles=n)
            particles = read_star(dataset.star)
            known = reconstruct_known_poses(particles, progress=False)
            ceiling = reference_fsc(known.full.cpu(), dataset.ground_truth, known.pixel_size_a)
            for group in ("C1", GROUPS[model]):
                if args.groups is not None and group not in args.groups:
                    continue
                key = (dataset.name, group)
                done = {(r["dataset"], r["imposed"]) for r in read_rows(PATH)}
                if not args.again and key in done:
                    continue
                started = time.perf_counter()
                summary = run_job(
                    particles,
                    ReconstructConfig(symmetry=group),
                    JobOptions(
                        WORK / f"{dataset.name}_{group}",
                        reference_map=dataset.ground_truth,
                        symmetry=dataset.symmetry,
                        progress=False,
                        report=False,
                        force=True,
                    ),
                )
                errors = summary["pose_error"]
                row = {
                    "dataset": dataset.name,
                    "imposed": group,
                    "median_rotation_error_deg": errors["median_rotation_error_deg"],
                    "mean_rotation_error_deg": errors["mean_rotation_error_deg"],
                    "fsc_0.5_vs_truth_a": summary["resolution_vs_reference_a_0.5"],
                    "known_pose_fsc_0.5_a": ceiling,
                    "training_min": summary["training_seconds"] / 60,
                    "total_min": (time.perf_counter() - started) / 60,
                    "detected": summary["symmetry_detection"]["symbol"],
                    "commit": code,
                }
                append_row(PATH, row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
