"""Detect a map's point-group symmetry (C<n>, D<n>, T, O, I), in any orientation.

Each candidate group is aligned onto the map (its axes through the map's centre of mass) and
scored by the mean correlation of the low-passed map with itself under the group's operators;
the largest group whose score reaches --threshold, and comes within --margin of the best
score, is reported (C1 if none). Writes OUTDIR/symmetry.json: the group, every candidate's
score and its orientation (the rotation taking RELION's axes of the group to the map's).

Example:
  cryohydra symmetry run/map.mrc -o run/symmetry
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cryohydra.cli.common import fraction, positive, symmetry
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.mrc import read_map
from cryohydra.metrics.symmetry import (
    DEFAULT_CANDIDATES,
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    detect_symmetry,
)

SYMMETRY_FILE = "symmetry.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("map", help="map (.mrc)")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument(
        "--pixel-size",
        dest="pixel_size_a",
        type=positive(float),
        default=None,
        help="Å/px, when the header has none",
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        type=symmetry,
        default=list(DEFAULT_CANDIDATES),
        help="point groups to score",
    )
    parser.add_argument(
        "--threshold",
        type=fraction,
        default=DEFAULT_THRESHOLD,
        help="score a group needs to be reported",
    )
    parser.add_argument(
        "--margin",
        type=fraction,
        default=DEFAULT_MARGIN,
        help="a larger group is preferred only within this of the best score",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    volume, voxel_a = read_map(args.map)
    pixel_size_a = args.pixel_size_a or voxel_a
    if pixel_size_a is None:
        raise InputFileError(args.map, "no voxel size in the header; give --pixel-size")
    outdir = Path(args.outdir)
    check_writable(outdir / SYMMETRY_FILE, args.force)
    detection = detect_symmetry(
        volume,
        pixel_size_a,
        candidates=args.candidates,
        threshold=args.threshold,
        margin=args.margin,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    result = {"map": str(Path(args.map).resolve()), "pixel_size_a": pixel_size_a}
    result.update(detection.to_dict())
    (outdir / SYMMETRY_FILE).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.map}: {detection.summary()}")
    print(f"scores of every candidate: {outdir / SYMMETRY_FILE}")
    return 0
