"""Reconstruct a map from particles with known poses (Fourier backprojection, CTF-weighted).

Reads a RELION STAR or cryoSPARC .cs file with poses, shifts and CTF, streams the images in
batches, and writes OUTDIR/map.mrc. With --half-maps it also writes the two half-maps of a
random, seeded split and their gold-standard FSC (fsc.csv, fsc.png, fsc.json; resolution at
0.143 after a soft spherical mask). OUTDIR/backproject.json keeps the input and the settings.

Example:
  cryohydra backproject sim/particles.star -o recon --half-maps
  cryohydra backproject betagal.star -o recon --symmetry D2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from cryohydra.cli.common import (
    config_from_args,
    device,
    existing_dir,
    positive,
    read_input,
    symmetry,
)
from cryohydra.io.errors import check_writable
from cryohydra.io.run_folder import FSC_PLOT_FILE, MAP_FILE
from cryohydra.metrics.fsc import plot_fsc
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.reconstruct.config import BackprojectConfig
from cryohydra.reconstruct.outputs import output_names, write_reconstruction

SETTINGS_FILE = "backproject.json"  # the input, the settings and the resolution


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("particles", help="particles with poses: .star or .cs")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument(
        "--datadir", type=existing_dir, default=None, help="folder holding the image stacks"
    )
    parser.add_argument("--half-maps", action="store_true", help="also write half-maps and FSC")
    parser.add_argument("--seed", type=int, default=0, help="seed of the half-set split")
    parser.add_argument("--batch-size", type=positive(int), default=256, help="images per batch")
    parser.add_argument(
        "--invert-contrast", action="store_true", help="the stack has dark particles"
    )
    parser.add_argument(
        "--no-ctf",
        action="store_true",
        help="the images have no CTF (simulated without one); needed for an input without "
        "CTF columns, and ignores the CTF of one that has them",
    )
    parser.add_argument(
        "--symmetry",
        type=symmetry,
        default="C1",
        help="point group to impose (C<n>, D<n>, T, O, I, I1-I4; RELION's axes): each image "
        "is inserted at every symmetry mate of its pose",
    )
    parser.add_argument(
        "--whiten",
        action="store_true",
        help="whiten each optics group by the noise spectrum of its images' background "
        "(for coloured noise, or groups whose noise differs)",
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(BackprojectConfig, args)
    outdir = Path(args.outdir)
    names = output_names(half_maps=config.half_maps) + [SETTINGS_FILE]
    names += [FSC_PLOT_FILE] if config.half_maps else []
    particles = read_input(args.particles, args.datadir, args.no_ctf)
    particles.scan_images()  # a NaN, infinite or constant image: refused before any work
    for name in names:
        check_writable(outdir / name, args.force)
    result = reconstruct_known_poses(
        particles,
        batch_size=config.batch_size,
        seed=config.seed,
        invert_contrast=config.invert_contrast,
        device=args.device,
        progress=not args.quiet,
        symmetry=config.symmetry,
        whiten=config.whiten,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    curve = write_reconstruction(result, outdir, half_maps=config.half_maps, force=args.force)
    summary = {
        "input": str(particles.source),
        "n_particles": result.n_particles,
        "config": asdict(config),
        "pixel_size_a": result.pixel_size_a,
    }
    print(f"Reconstructed {result.n_particles} particles: {outdir / MAP_FILE}")
    if curve is not None:
        plot_fsc({"half-maps (masked)": curve}, outdir / FSC_PLOT_FILE, title="Gold-standard FSC")
        summary["half_map_resolution_a_0.143"] = curve.resolution_a(0.143)
        print(
            f"Gold-standard resolution (FSC 0.143): {curve.resolution_a(0.143):.2f} Å; "
            f"half-maps and FSC in {outdir}"
        )
    (outdir / SETTINGS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return 0
