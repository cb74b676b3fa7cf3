"""Compare estimated poses with the true ones.

Both files are RELION STAR (from cryohydra or any RELION-compatible tool) or cryoSPARC .cs.
Particles are matched by image (stack name and index), or by order when the names differ.
The estimated rotations are aligned to the true ones in closed form (SVD) over a global
rotation and both hands, then the rotation error, the viewing-direction error (degrees) and
the shift error (Å) are reported; --symmetry scores a C_n or D_n molecule modulo its group.
Writes OUTDIR/pose_errors.json and OUTDIR/pose_errors.png (histograms).

Example:
  cryohydra evaluate run/poses.star sim/particles.star -o eval
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cryohydra.cli.common import config_from_args, symmetry
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.particles import ParticleSet
from cryohydra.io.read import read_particles
from cryohydra.metrics.config import EvaluateConfig
from cryohydra.metrics.pose_error import plot_pose_error_histogram, pose_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("estimated", help="estimated poses (.star or .cs)")
    parser.add_argument("true", help="true poses (.star or .cs), e.g. from cryohydra simulate")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument(
        "--symmetry", type=symmetry, default="C1", help="point group: C1, C<n> or D<n>"
    )
    parser.add_argument(
        "--per-particle", action="store_true", help="also list each particle's errors"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _image_keys(particles: ParticleSet) -> list[tuple[str, int]]:
    return [
        (Path(p).name, int(i))
        for p, i in zip(particles.image_paths, particles.image_indices, strict=True)
    ]


def match_particles(estimated: ParticleSet, true: ParticleSet) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``estimated`` and ``true`` that hold the same images.

    Matched by (stack file name, index); an image listed several times (a symmetry-expanded
    STAR, a RELION 5 file) pairs its k-th row in one file with its k-th row in the other. If no
    names match and the sets have the same size, by order.
    """
    occurrences: dict[tuple[str, int], list[int]] = {}
    for row, key in enumerate(_image_keys(true)):
        occurrences.setdefault(key, []).append(row)
    seen: dict[tuple[str, int], int] = {}
    pairs = []
    for row, key in enumerate(_image_keys(estimated)):
        k = seen.get(key, 0)
        seen[key] = k + 1
        rows = occurrences.get(key, [])
        if k < len(rows):
            pairs.append((row, rows[k]))
    if pairs:
        est_rows, tru_rows = (np.array(column) for column in zip(*pairs, strict=True))
        return est_rows, tru_rows
    if len(estimated) == len(true):
        return np.arange(len(estimated)), np.arange(len(true))
    raise InputFileError(
        estimated.source,
        f"no image of its {len(estimated)} particles is among the {len(true)} of {true.source}",
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(EvaluateConfig, args)
    outdir = Path(args.outdir)
    estimated, true = read_particles(args.estimated), read_particles(args.true)
    est_rot, est_shift = estimated.require_poses()
    true_rot, true_shift = true.require_poses()
    paths = {
        n: check_writable(outdir / n, args.force) for n in ("pose_errors.json", "pose_errors.png")
    }
    est_rows, true_rows = match_particles(estimated, true)
    errors = pose_errors(
        est_rot[est_rows],
        true_rot[true_rows],
        est_shift[est_rows],
        true_shift[true_rows],
        symmetry=config.symmetry,
    )
    summary = {
        "estimated": str(args.estimated),
        "true": str(args.true),
        "n_matched": len(est_rows),
        "config": asdict(config),
        **errors.to_dict(per_particle=config.per_particle),
    }
    paths["pose_errors.json"].write_text(json.dumps(summary, indent=2) + "\n")
    plot_pose_error_histogram(errors, paths["pose_errors.png"])
    hand = "mirrored" if errors.mirrored else "same hand"
    print(
        f"{len(est_rows)} particles ({hand}, {errors.symmetry}): rotation error median "
        f"{errors.median_rotation_error_deg:.2f}°, mean {errors.mean_rotation_error_deg:.2f}°; "
        f"viewing direction median {errors.median_viewing_direction_error_deg:.2f}°; "
        f"shift median {errors.median_shift_error_a:.2f} Å"
    )
    print(f"Written: {paths['pose_errors.json']}, {paths['pose_errors.png']}")
    return 0
