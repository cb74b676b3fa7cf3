"""Fourier shell correlation between two maps (or a map and the ground truth).

Reports the resolution at FSC 0.5 and 0.143 (first crossing, interpolated) in Å and writes
OUTDIR/fsc.csv, OUTDIR/fsc.png (with the threshold lines) and OUTDIR/fsc.json. With --align the
second map is first aligned onto the first (rotation, shift and handedness: an exhaustive
search over SO(3) and both hands, then local refinement), as an ab-initio map lives in an
arbitrary frame; the aligned map is written as OUTDIR/aligned.mrc.

Example:
  cryohydra fsc recon/map.mrc sim/ground_truth.mrc -o fsc_vs_truth --mask sphere --align
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cryohydra.cli.common import config_from_args, non_negative, positive
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.mrc import read_map, write_map
from cryohydra.metrics.config import FSCConfig
from cryohydra.metrics.fsc import fsc, plot_fsc, soft_spherical_mask
from cryohydra.metrics.map_alignment import align_maps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("map1", help="reference map (.mrc)")
    parser.add_argument("map2", help="second map (.mrc), aligned onto map1 with --align")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument(
        "--mask",
        default=None,
        help="'sphere' for a soft spherical mask, or a mask .mrc of the maps' size",
    )
    parser.add_argument(
        "--mask-radius",
        dest="mask_radius_a",
        type=positive(float),
        default=None,
        help="sphere radius, Å (default 0.4 box)",
    )
    parser.add_argument(
        "--mask-edge",
        dest="mask_edge_a",
        type=non_negative(float),
        default=None,
        help="soft edge, Å (3 px)",
    )
    parser.add_argument("--align", action="store_true", help="align map2 onto map1 first")
    parser.add_argument(
        "--no-mirror",
        dest="allow_mirror",
        action="store_false",
        help="with --align: keep the hand",
    )
    parser.add_argument(
        "--pixel-size",
        dest="pixel_size_a",
        type=positive(float),
        default=None,
        help="Å/px, when the headers have none",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _pixel_size(paths: list[str], voxels: list[float | None], given: float | None) -> float:
    if given is not None:
        return given
    known = [v for v in voxels if v is not None]
    if not known:
        raise InputFileError(paths[0], "no voxel size in the header; give --pixel-size")
    if len(known) == 2 and abs(known[0] - known[1]) > 1e-3 * known[0]:
        raise InputFileError(
            paths[1], f"voxel size {known[1]:.4f} Å differs from {paths[0]}'s {known[0]:.4f} Å"
        )
    return known[0]


def _mask(config: FSCConfig, box: int, pixel_size_a: float) -> torch.Tensor | None:
    if config.mask is None:
        return None
    if config.mask == "sphere":
        radius = (config.mask_radius_a / pixel_size_a) if config.mask_radius_a else 0.4 * box
        edge = (config.mask_edge_a / pixel_size_a) if config.mask_edge_a else 3.0
        return soft_spherical_mask(box, radius_px=radius, edge_px=edge)
    mask, _ = read_map(config.mask)
    if mask.shape != (box,) * 3:
        raise InputFileError(config.mask, f"mask is {mask.shape}, the maps are {(box,) * 3}")
    return torch.from_numpy(mask)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(FSCConfig, args)
    outdir = Path(args.outdir)
    names = ["fsc.csv", "fsc.png", "fsc.json"] + (["aligned.mrc"] if config.align else [])
    paths = {name: check_writable(outdir / name, args.force) for name in names}
    (map1, voxel1), (map2, voxel2) = read_map(args.map1), read_map(args.map2)
    if map1.shape != map2.shape or len(set(map1.shape)) != 1:
        raise InputFileError(args.map2, f"shape {map2.shape} differs from map1's {map1.shape}")
    pixel = _pixel_size([args.map1, args.map2], [voxel1, voxel2], config.pixel_size_a)
    reference, moving = torch.from_numpy(map1), torch.from_numpy(map2)
    summary: dict = {
        "map1": str(args.map1),
        "map2": str(args.map2),
        "config": asdict(config),
        "pixel_size_a": pixel,
    }
    if config.align:
        alignment = align_maps(moving, reference, pixel, allow_mirror=config.allow_mirror)
        moving = alignment.aligned_map
        write_map(paths["aligned.mrc"], moving.numpy(), pixel, force=args.force)
        summary["alignment"] = {
            "rotation": np.asarray(alignment.rotation).tolist(),
            "shift_a": np.asarray(alignment.shift_a).tolist(),
            "mirrored": alignment.mirrored,
            "correlation": alignment.correlation,
        }
    curve = fsc(reference, moving, _mask(config, map1.shape[0], pixel), pixel_size_a=pixel)
    curve.to_csv(paths["fsc.csv"])
    label = "map2 aligned to map1" if config.align else "map1 vs map2"
    plot_fsc({label: curve}, paths["fsc.png"], title=f"FSC ({config.mask or 'no'} mask)")
    summary["mask"] = config.mask
    summary["fsc"] = curve.to_dict()
    paths["fsc.json"].write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"Resolution: {curve.resolution_a(0.5):.2f} Å at FSC 0.5, "
        f"{curve.resolution_a(0.143):.2f} Å at FSC 0.143 (Nyquist {2 * pixel:.2f} Å)"
    )
    if config.align:
        hand = "mirrored" if summary["alignment"]["mirrored"] else "same hand"
        print(f"Alignment: {hand}, correlation {summary['alignment']['correlation']:.3f}")
    print(f"Written: {', '.join(str(p) for p in paths.values())}")
    return 0
