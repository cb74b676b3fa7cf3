"""Analyses of a reconstruction's amortized stage, as PNGs in OUTDIR (they join the report).

- posterior: for chosen particles, the model's loss over a HEALPix grid of viewing directions
  (the best over in-plane angles) on the sphere, each head's candidate marked, with a gnomonic
  close-up around the true (or best) pose;
- heads: with true poses in the input, each head's mean rotation error per HEALPix cell of
  true viewing direction (head specialisation);
- trajectories: the chosen particles' poses after every epoch, over their posterior maps.

Uses the encoder and volume saved at the switch (switch_state.pt) or, for --mode amortized and
cryoai, those of the last checkpoint, and the per-epoch poses (history/).

Examples:
  cryohydra analyze abinitio
  cryohydra analyze abinitio --particles 0 17 256 --only posterior trajectories
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryohydra.analysis.analyze import ANALYSES, analyze
from cryohydra.cli.common import device, existing_dir, positive
from cryohydra.report import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="output folder of cryohydra reconstruct")
    parser.add_argument(
        "--particles",
        type=int,
        nargs="+",
        default=None,
        metavar="INDEX",
        help="particles (0-based) for the posterior and trajectories",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=ANALYSES,
        default=list(ANALYSES),
        help="which analyses",
    )
    parser.add_argument(
        "--nside",
        type=positive(int),
        default=8,
        help="HEALPix order of the posterior's grid of viewing directions",
    )
    parser.add_argument(
        "--datadir", type=existing_dir, default=None, help="folder holding the image stacks"
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--no-report", action="store_true", help="do not rewrite report.html with the figures"
    )


def run(args: argparse.Namespace) -> int:
    made = analyze(
        args.outdir, args.particles, tuple(args.only), args.nside, args.datadir, args.device
    )
    for name, path in made.items():
        print(f"{name}: {path}")
    if not args.no_report:
        print(f"report: {write_report(Path(args.outdir))}")
    return 0
