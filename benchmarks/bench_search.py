"""The switch's global pose search, re-run with other settings from one run's switch snapshot.

A run of ``bench_realistic.py`` saves, at its switch, the amortized stage's map and poses
(``switch_state.pt``). This benchmark runs the search from that same start with each setting
below and scores what it ends with on the molecule's particles (``cryohydraJunk`` 0): the
median and mean rotation error (modulo the molecule's group), the share within 5 and 15
degrees, the map's FSC 0.5 against the truth, the fraction that moved in each round, the
median amplitude of junk and molecules (with ``amplitudes``) and the time. The search is
deterministic, so each row is the setting's own effect. Rows go to ``results/search.json``
as they finish (a row already there is skipped; ``--again`` adds another).

  python benchmarks/bench_search.py --variant whitened+scale
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench_realistic import VARIANTS, WORK
from common import RESULTS, append_row, commit, read_rows
from cryohydra.inference.config import ReconstructConfig
from cryohydra.inference.pose_search import projection_matching
from cryohydra.inference.train import AbInitio
from cryohydra.io.run_folder import SWITCH_FILE
from cryohydra.io.star import read_star
from cryohydra.jobs.abinitio import JUNK_COLUMN
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.metrics.reference import ReferenceMap
from datasets import realistic

PATH = RESULTS / "search.json"
# name: (rounds per stage, resolutions of the stages in Å, amplitudes, local refinement)
SETTINGS = {
    "10 rounds, unweighted": (10, (15.0,), False, False),
    "10 rounds": (10, (15.0,), True, False),
    "30 rounds": (30, (15.0,), True, False),
    "10 at 25 A, then 10 at 15 A": (10, (25.0, 15.0), True, False),
    "10 rounds, local refinement": (10, (15.0,), True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hsp90")
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--particles", type=int, default=20_000)
    parser.add_argument("--variant", default="whitened+scale", choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--again", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    code = commit()
    dataset = realistic(args.model, args.particles, args.box)
    snapshot_path = WORK / f"{dataset.name}_{args.variant}" / SWITCH_FILE
    particles = read_star(dataset.star)
    good = np.asarray(particles.extra_columns[JUNK_COLUMN]).astype(int) == 0
    true_rotations, _ = particles.require_poses()
    reference = ReferenceMap(dataset.ground_truth)
    config = ReconstructConfig(invert_contrast=True, **VARIANTS[args.variant])
    for name in args.settings:
        key = (dataset.name, args.variant, name)
        done = [(r["dataset"], r["variant"], r["setting"]) for r in read_rows(PATH)]
        if not args.again and key in done:
            continue
        rounds, resolutions, amplitudes, refine = SETTINGS[name]
        run = AbInitio(particles.with_poses(None, None), config, args.device)
        snapshot = torch.load(snapshot_path, map_location=run.device, weights_only=False)
        run.volume.load_state_dict(snapshot["volume"])
        rotations, shifts = snapshot["rotations"], snapshot["shifts_a"]
        started = time.perf_counter()
        stages = []
        for resolution_a in resolutions:
            found = projection_matching(
                run.volume,
                run.data,
                shifts,
                resolution_a,
                config.search_nside,
                rounds,
                config.search_converged,
                rotations=rotations,
                refine=refine,
                max_shift_a=run.encoder.max_shift_a,
                amplitudes=amplitudes,
            )
            rotations, shifts = found.rotations, found.shifts_a
            stages.append({"resolution_a": resolution_a, "changed": found.changed})
        seconds = time.perf_counter() - started
        errors = pose_errors(
            rotations.double().cpu().numpy()[good], true_rotations[good], symmetry=dataset.symmetry
        )
        fsc = reference.fsc_of(run.volume.to_map().cpu(), run.data.pixel_size_a)
        scale = run.data.particles.require_ctf().scale
        row = {
            "dataset": dataset.name,
            "variant": args.variant,
            "setting": name,
            "snapshot_epoch": snapshot["epoch"],
            "stages": stages,
            "settled": found.settled,
            "median_rotation_error_deg": errors.median_rotation_error_deg,
            "mean_rotation_error_deg": errors.mean_rotation_error_deg,
            "within_5deg": float(np.mean(errors.rotation_error_deg < 5)),
            "within_15deg": float(np.mean(errors.rotation_error_deg < 15)),
            "map_fsc_0.5_vs_truth_a": fsc["fsc_vs_reference_a_0.5"],
            "junk_amplitude_median": float(np.median(scale[~good])) if amplitudes else None,
            "molecule_amplitude_median": float(np.median(scale[good])) if amplitudes else None,
            "seconds": seconds,
            "commit": code,
        }
        append_row(PATH, row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
