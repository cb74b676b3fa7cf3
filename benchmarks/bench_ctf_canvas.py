"""How much applying the CTF on a canvas larger than the box changes the known-pose map.

``simulate --ctf-canvas 1`` multiplies each projection by the CTF on the box's own Fourier
grid, so signal that defocus spreads past the box wraps around to its far side; a canvas of 2
boxes loses it past the edge, as a microscope does. For each model the standard set's settings
(64 px, the EMPIAR-10028 CTF table, centred; ``datasets.config``) are simulated with canvas 1
and 2, noise-free and at SNR 0.1, and reconstructed from the true poses (``backproject``); the
row gives the FSC against the truth: at 0.5 and 0.143, its mean over the outer half of the
shells and its last shell (below Nyquist). Rows are appended to
``results/ctf_canvas.json`` as they finish (a row already there is skipped).

  python benchmarks/bench_ctf_canvas.py --particles 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np

from common import RESULTS, commit, machine
from cryohydra.io.star import read_star
from cryohydra.metrics.reference import ReferenceMap
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.simulate import simulate
from datasets import WORK, config

PATH = RESULTS / "ctf_canvas.json"


def _rows() -> list[dict]:
    return json.loads(PATH.read_text())["rows"] if PATH.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--models", nargs="+", default=["hsp90", "6uo9"])
    args = parser.parse_args()
    code = commit()
    for model in args.models:
        for snr in (math.inf, 0.1):
            for canvas in (1, 2):
                key = (model, args.particles, None if math.isinf(snr) else snr, canvas)
                done = {(r["model"], r["particles"], r["snr"], r["canvas"]) for r in _rows()}
                if key in done:
                    continue
                settings = dataclasses.replace(
                    config(model, False, args.particles), snr=snr, ctf_canvas=canvas
                )
                folder = WORK / "ctf_canvas" / f"{model}_{args.particles}_{snr}_{canvas}"
                started = time.perf_counter()
                simulate(settings, folder, force=True, progress=False)
                simulated = time.perf_counter() - started
                particles = read_star(folder / "particles.star")
                result = reconstruct_known_poses(particles, progress=False)
                curve = ReferenceMap(folder / "ground_truth.mrc").fsc_of(
                    result.full.cpu(), result.pixel_size_a
                )["curve"]
                values = np.asarray(curve.values)[: result.full.shape[-1] // 2]
                row = {
                    "model": model,
                    "particles": args.particles,
                    "snr": key[2],
                    "canvas": canvas,
                    "fsc_0.5_vs_truth_a": curve.resolution_a(0.5),
                    "fsc_0.143_vs_truth_a": curve.resolution_a(0.143),
                    # At 64 px the FSC 0.5 sits at Nyquist either way: the curve's outer half
                    # and its last shell tell the two apart.
                    "fsc_outer_half_mean": float(np.mean(values[len(values) // 2 :])),
                    "fsc_last_shell": float(values[-1]),
                    "nyquist_a": 2 * result.pixel_size_a,
                    "simulate_s": simulated,
                    "commit": code,
                }
                rows = [*_rows(), row]
                PATH.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
