"""Write (or rewrite) the report of a reconstruction: OUTDIR/report.html and its PNGs.

Works on a finished run and on one still going (from its log, its latest per-epoch poses and
the model volume of its latest checkpoint). The page is self-contained: open it in a browser.
Figures of `cryohydra analyze` in the folder (analysis_*.png) join it.

Examples:
  cryohydra report abinitio
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryohydra.report import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="output folder of cryohydra reconstruct")


def run(args: argparse.Namespace) -> int:
    path = write_report(Path(args.outdir))
    print(f"report: {path}")
    return 0
