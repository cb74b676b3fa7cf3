"""Simulate particle images from an atomic model (PDB/mmCIF) or a map (MRC).

Writes OUTDIR/particles.mrcs (in chunks), OUTDIR/particles.star (RELION 3.1 with the true
poses, shifts and CTF), OUTDIR/ground_truth.mrc and OUTDIR/simulation.json.

Example:
  cryohydra simulate 6uo9.pdb -o sim --box 64 --pixel-size 3.5 -n 10000 --snr 0.1 \\
      --ctf-table empiar10028_ctf.npy --shift-std 3
"""

from __future__ import annotations

import argparse
import math

from cryohydra.simulate import ORIENTATIONS, SimulationConfig, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulationConfig(structure="")
    parser.add_argument("structure", help="atomic model (.pdb, .cif, .gz) or map (.mrc)")
    parser.add_argument("-o", "--outdir", required=True, help="output folder")
    parser.add_argument("--box", type=int, default=defaults.box_size, help="box size (px, even)")
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="Å/px (needed for a model; for a map, defaults to its voxel size)",
    )
    parser.add_argument("-n", "--n-particles", type=int, default=defaults.n_particles)
    parser.add_argument(
        "--snr",
        type=float,
        default=defaults.snr,
        help="var(clean) / var(noise) over the box, dataset mean; 'inf' for no noise "
        f"(default {defaults.snr})",
    )
    parser.add_argument("--orientations", choices=ORIENTATIONS, default=defaults.orientations)
    parser.add_argument(
        "--n-views", type=int, default=defaults.n_views, help="preferred: number of views"
    )
    parser.add_argument(
        "--view-kappa",
        type=float,
        default=defaults.view_kappa,
        help="preferred: von Mises-Fisher concentration (lobe width about 1/sqrt(kappa) rad)",
    )
    parser.add_argument(
        "--shift-std", type=float, default=0.0, help="std of the Gaussian shifts, Å"
    )
    ctf = parser.add_argument_group("CTF")
    ctf.add_argument("--no-ctf", action="store_true", help="images without CTF")
    ctf.add_argument(
        "--ctf-table",
        default=None,
        help="draw CTF rows from a .npy table (columns: box, pixel, dfU, dfV, angle deg, kV, "
        "Cs mm, amplitude contrast, phase shift deg), e.g. EMPIAR-10028's",
    )
    ctf.add_argument("--defocus-min", type=float, default=defaults.defocus_min_a, help="Å")
    ctf.add_argument("--defocus-max", type=float, default=defaults.defocus_max_a, help="Å")
    ctf.add_argument(
        "--astigmatism", type=float, default=defaults.astigmatism_a, help="max dfU - dfV, Å"
    )
    ctf.add_argument("--voltage", type=float, default=defaults.voltage_kv, help="kV")
    ctf.add_argument("--cs", type=float, default=defaults.cs_mm, help="mm")
    ctf.add_argument("--amplitude-contrast", type=float, default=defaults.amplitude_contrast)
    parser.add_argument("--bfactor", type=float, default=0.0, help="B-factor of the map, Å^2")
    parser.add_argument(
        "--contrast-sign",
        type=int,
        choices=(1, -1),
        default=1,
        help="+1: bright particles (RELION convention); -1: dark particles, as raw data",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = SimulationConfig(
        structure=args.structure,
        box_size=args.box,
        pixel_size_a=args.pixel_size,
        n_particles=args.n_particles,
        snr=args.snr if args.snr > 0 else math.nan,
        orientations=args.orientations,
        n_views=args.n_views,
        view_kappa=args.view_kappa,
        shift_std_a=args.shift_std,
        ctf=not args.no_ctf,
        ctf_table=args.ctf_table,
        defocus_min_a=args.defocus_min,
        defocus_max_a=args.defocus_max,
        astigmatism_a=args.astigmatism,
        voltage_kv=args.voltage,
        cs_mm=args.cs,
        amplitude_contrast=args.amplitude_contrast,
        bfactor_a2=args.bfactor,
        contrast_sign=args.contrast_sign,
        seed=args.seed,
        chunk_size=args.chunk_size,
    )
    summary = simulate(
        config, args.outdir, force=args.force, device=args.device, progress=not args.quiet
    )
    outputs = summary["outputs"]
    print(
        f"Simulated {config.n_particles} particles ({config.box_size} px, "
        f"{summary['pixel_size_a']:.3f} Å/px, SNR {config.snr:g}).\n"
        f"  images: {outputs['stack']}\n  metadata: {outputs['star']}\n"
        f"  ground truth: {outputs['map']}"
    )
    return 0
