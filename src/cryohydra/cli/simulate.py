"""Simulate particle images from an atomic model (PDB/mmCIF) or a map (MRC).

Writes OUTDIR/particles.mrcs (in chunks), OUTDIR/particles.star (RELION 3.1 with the true
poses, shifts and CTF), OUTDIR/ground_truth.mrc and OUTDIR/simulation.json.

Example:
  cryohydra simulate 6uo9.pdb -o sim --box 64 --pixel-size 3.5 -n 10000 --snr 0.1 \\
      --ctf-table empiar10028_ctf.npy --shift-std 3
"""

from __future__ import annotations

import argparse

from cryohydra.cli.common import (
    config_from_args,
    device,
    existing_file,
    non_negative,
    positive,
)
from cryohydra.simulate import JUNK_KINDS, ORIENTATIONS, SimulationConfig, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulationConfig(structure="")
    data = parser.add_argument_group("structure and output")
    data.add_argument("structure", help="atomic model (.pdb, .cif, .gz) or map (.mrc)")
    data.add_argument("-o", "--outdir", required=True, help="output folder")
    data.add_argument(
        "--box",
        dest="box_size",
        type=positive(int),
        default=defaults.box_size,
        help="box size (px, even)",
    )
    data.add_argument(
        "--pixel-size",
        dest="pixel_size_a",
        type=positive(float),
        default=None,
        help="Å/px (needed for a model; for a map, defaults to its voxel size)",
    )
    data.add_argument(
        "--bfactor",
        dest="bfactor_a2",
        type=non_negative(float),
        default=0.0,
        help="B-factor of the map, Å^2",
    )
    particles = parser.add_argument_group("particles")
    particles.add_argument(
        "-n", "--n-particles", type=positive(int), default=defaults.n_particles, help="images"
    )
    particles.add_argument(
        "--snr",
        type=positive(float),
        default=defaults.snr,
        help="var(clean) / var(noise) over the box, dataset mean; 'inf' for no noise",
    )
    particles.add_argument(
        "--orientations",
        choices=ORIENTATIONS,
        default=defaults.orientations,
        help="uniform over SO(3), uniform Euler angles, or a few preferred views",
    )
    particles.add_argument(
        "--n-views", type=positive(int), default=defaults.n_views, help="preferred: number of views"
    )
    particles.add_argument(
        "--view-kappa",
        type=positive(float),
        default=defaults.view_kappa,
        help="preferred: von Mises-Fisher concentration (lobe width about 1/sqrt(kappa) rad)",
    )
    particles.add_argument(
        "--shift-std",
        dest="shift_std_a",
        type=non_negative(float),
        default=0.0,
        help="std of the Gaussian shifts, Å",
    )
    particles.add_argument(
        "--contrast-sign",
        type=int,
        choices=(1, -1),
        default=1,
        help="+1: bright particles (RELION convention); -1: dark particles, as raw data",
    )
    particles.add_argument(
        "--noise-spectrum",
        type=existing_file,
        default=None,
        help="coloured noise of this spectrum's shape (at the --snr asked): a .json saved "
        "spectrum, or real particles (a STAR or .cs file) to estimate it from their "
        "background outside a disc of 0.375 box; default white",
    )
    particles.add_argument(
        "--contrast-sd",
        type=non_negative(float),
        default=defaults.contrast_sd,
        help="spread of each particle's contrast factor (normal about 1; ice thickness), "
        "written to the STAR as cryohydraContrast",
    )
    particles.add_argument(
        "--junk-fraction",
        type=non_negative(float),
        default=defaults.junk_fraction,
        help="fraction of the images made junk, labelled in the STAR (cryohydraJunk 1, "
        "cryohydraJunkKind)",
    )
    particles.add_argument(
        "--junk-kinds",
        nargs="+",
        choices=JUNK_KINDS,
        default=list(JUNK_KINDS),
        help="kinds of junk, drawn evenly: empty ice, aggregates of blobs, carbon edges",
    )
    particles.add_argument("--seed", type=int, default=0, help="random seed of the whole set")
    ctf = parser.add_argument_group("CTF")
    ctf.add_argument("--no-ctf", dest="ctf", action="store_false", help="images without CTF")
    ctf.add_argument(
        "--ctf-table",
        type=existing_file,
        default=None,
        help="draw CTF rows from a .npy table (columns: box, pixel, dfU, dfV, angle deg, kV, "
        "Cs mm, amplitude contrast, phase shift deg), e.g. EMPIAR-10028's",
    )
    for bound in ("min", "max"):
        ctf.add_argument(
            f"--defocus-{bound}",
            dest=f"defocus_{bound}_a",
            type=positive(float),
            default=getattr(defaults, f"defocus_{bound}_a"),
            help=f"{bound}imum defocus of the uniform range, Å",
        )
    ctf.add_argument(
        "--astigmatism",
        dest="astigmatism_a",
        type=non_negative(float),
        default=defaults.astigmatism_a,
        help="max dfU - dfV, Å",
    )
    ctf.add_argument(
        "--voltage", dest="voltage_kv", type=positive(float), default=defaults.voltage_kv, help="kV"
    )
    ctf.add_argument(
        "--cs", dest="cs_mm", type=non_negative(float), default=defaults.cs_mm, help="mm"
    )
    ctf.add_argument(
        "--ctf-canvas",
        type=positive(int),
        default=defaults.ctf_canvas,
        help="apply the CTF on a canvas this many boxes wide, then crop to the box (2: signal "
        "that defocus spreads past the box is lost, as in a microscope, instead of wrapping "
        "around it)",
    )
    ctf.add_argument(
        "--amplitude-contrast",
        type=non_negative(float),
        default=defaults.amplitude_contrast,
        help="fraction of amplitude contrast, in [0, 1)",
    )
    running = parser.add_argument_group("running")
    running.add_argument(
        "--chunk-size",
        type=positive(int),
        default=defaults.chunk_size,
        help="images simulated and written at a time",
    )
    running.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    running.add_argument("--force", action="store_true", help="overwrite existing outputs")
    running.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(SimulationConfig, args)
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
