"""ASPIRE's ab-initio pipeline on a RELION STAR file; run inside ASPIRE's own environment.

Common-lines orientation estimation (``CLSyncVoting`` or ``CommonlineIRLS``) on phase-flipped
images, optionally downsampled for the common-lines step, then ASPIRE's CTF-aware
least-squares mean volume (``MeanEstimator``) from the full-size, un-flipped images in the
estimated orientations. Conventions (``benchmarks/peers/NOTES.md``): ASPIRE's rotations are
RELION's A transposed, and its CTF has the opposite sign to RELION's, so the map of a
bright-particle stack comes out negated; both are undone here.

Writes to OUTDIR: ``rotations.npy`` (n, 3, 3) in cryohydra's convention (``R`` = RELION A),
``map.mrc`` and ``aspire.json`` (timings, settings).

  python aspire_run.py particles.star OUT --images 200 --method irls --cl-box 32
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import mrcfile
import numpy as np
from aspire.abinitio import CLSyncVoting, CommonlineIRLS
from aspire.reconstruction import MeanEstimator
from aspire.source import RelionSource


def estimate_rotations(source, method: str, n_theta: int) -> np.ndarray:
    """Common-lines rotations in ASPIRE's convention (microscope -> molecule)."""
    if method == "sync":
        orient = CLSyncVoting(source, n_theta=n_theta, disable_gpu=True)
    else:  # alpha=2/3: the spectral-norm bound; alpha=None solves an SDP per iteration
        orient = CommonlineIRLS(source, n_theta=n_theta, alpha=2 / 3, disable_gpu=True)
    orient.estimate_rotations()
    return np.asarray(orient.rotations, dtype=np.float64)


def mean_volume(source, outdir: Path, maxiter: int) -> np.ndarray:
    estimator = MeanEstimator(
        source,
        checkpoint_iterations=None,
        checkpoint_prefix=str(outdir / "cg_checkpoint"),  # else it writes into the cwd
        maxiter=maxiter,
    )
    return -estimator.estimate().asnumpy()[0]  # ASPIRE's CTF is -CTF_RELION


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("star")
    parser.add_argument("outdir")
    parser.add_argument("--images", type=int, required=True, help="the first N particles")
    parser.add_argument("--method", choices=["sync", "irls"], required=True)
    parser.add_argument("--cl-box", type=int, default=0, help="box of the common-lines step")
    parser.add_argument("--n-theta", type=int, default=360)
    parser.add_argument("--maxiter", type=int, default=50, help="CG iterations of the map")
    args = parser.parse_args()
    outdir = Path(args.outdir).resolve()  # before the chdir
    outdir.mkdir(parents=True, exist_ok=True)
    os.chdir(outdir)  # ASPIRE writes logs/ into the working folder
    began = time.perf_counter()
    source = RelionSource(args.star, max_rows=args.images).cache()
    loaded = time.perf_counter()
    lines = source.downsample(args.cl_box) if 0 < args.cl_box < source.L else source
    rotations = estimate_rotations(lines.phase_flip().cache(), args.method, args.n_theta)
    oriented = time.perf_counter()
    oriented_source = source.update(rotations=rotations.astype(source.dtype))
    volume = mean_volume(oriented_source, outdir, args.maxiter)
    finished = time.perf_counter()
    np.save(outdir / "rotations.npy", rotations.transpose(0, 2, 1))
    with mrcfile.new(outdir / "map.mrc", overwrite=True) as out:
        out.set_data(volume.astype(np.float32))
        out.voxel_size = float(source.pixel_size)
    record = {
        "method": args.method,
        "images": len(rotations),
        "box": int(source.L),
        "common_lines_box": int(lines.L),
        "load_seconds": loaded - began,
        "orientation_seconds": oriented - loaded,
        "map_seconds": finished - oriented,
    }
    (outdir / "aspire.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
