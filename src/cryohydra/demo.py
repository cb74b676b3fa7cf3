"""The demo behind ``make demo``: simulate a dataset from the bundled structure (PDB 6UO9), then
reconstruct it from its known poses and measure the result against the ground truth.

This is the ceiling any ab-initio method can reach on the dataset; the ab-initio job replaces
the known-pose step once it exists.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mrcfile
import torch

from cryohydra.data import default_structure
from cryohydra.io.mrc import write_map
from cryohydra.io.star import read_star
from cryohydra.metrics.fsc import fsc, masked_fsc, plot_fsc, soft_spherical_mask
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.simulate import SimulationConfig, simulate

# A folder the demo made itself carries this file, so re-running may replace its contents;
# any other existing folder is left alone.
MARKER = ".cryohydra-demo"


def _claim(outdir: Path) -> None:
    if outdir.exists() and any(outdir.iterdir()) and not (outdir / MARKER).exists():
        raise SystemExit(f"{outdir} exists and was not made by the demo; choose another --outdir")
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / MARKER).write_text("made by `python -m cryohydra.demo`; safe to delete\n")


def run_demo(outdir: Path, n_particles: int, snr: float, device: str) -> dict:
    _claim(outdir)
    timings = {}
    start = time.perf_counter()
    config = SimulationConfig(
        structure=str(default_structure()),
        box_size=64,
        pixel_size_a=3.5,
        n_particles=n_particles,
        snr=snr,
        shift_std_a=3.0,
        seed=0,
    )
    print(f"[1/2] Simulating {n_particles} particles of PDB 6UO9 (64 px, 3.5 Å/px, SNR {snr})")
    simulate(config, outdir / "dataset", force=True, device=device)
    timings["simulate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    print("[2/2] Reconstructing from the known poses (Fourier backprojection, half-sets)")
    particles = read_star(outdir / "dataset" / "particles.star")
    result = reconstruct_known_poses(particles, device=device)
    timings["reconstruct_s"] = time.perf_counter() - start

    recon = outdir / "reconstruction"
    pixel = result.pixel_size_a
    for name, volume in (("map", result.full), ("half_map_a", result.half_a)):
        write_map(recon / f"{name}.mrc", volume.cpu().numpy(), pixel, force=True)
    write_map(recon / "half_map_b.mrc", result.half_b.cpu().numpy(), pixel, force=True)
    truth = torch.from_numpy(mrcfile.read(outdir / "dataset" / "ground_truth.mrc").copy())
    mask = soft_spherical_mask(64, radius_px=0.4 * 64, edge_px=3)
    gold = masked_fsc(result.half_a.cpu(), result.half_b.cpu(), pixel)
    versus_truth = fsc(result.full.cpu(), truth, mask, pixel_size_a=pixel)
    plot_fsc(
        {"half-maps": gold, "map vs ground truth": versus_truth},
        recon / "fsc.png",
        title=f"PDB 6UO9, {n_particles} particles, SNR {snr}, known poses",
    )
    report = {
        "dataset": str(outdir / "dataset"),
        "n_particles": n_particles,
        "snr": snr,
        "gold_standard_resolution_a_0143": gold.resolution_a(0.143),
        "resolution_vs_truth_a_05": versus_truth.resolution_a(0.5),
        "nyquist_a": 2 * pixel,
        "timings_s": timings,
    }
    (recon / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default="demo_output")
    parser.add_argument("-n", "--n-particles", type=int, default=5000)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    outdir = Path(args.outdir).resolve()
    report = run_demo(outdir, args.n_particles, args.snr, args.device)
    recon = outdir / "reconstruction"
    print(
        "\nDone.\n"
        f"  map:        {recon / 'map.mrc'}\n"
        f"  half-maps:  {recon / 'half_map_a.mrc'}, {recon / 'half_map_b.mrc'}\n"
        f"  FSC plot:   {recon / 'fsc.png'}\n"
        f"  report:     {recon / 'report.json'}\n"
        f"  dataset:    {outdir / 'dataset'} (particles.star, particles.mrcs, ground_truth.mrc)\n"
        f"  gold-standard resolution (FSC 0.143): "
        f"{report['gold_standard_resolution_a_0143']:.2f} Å; vs ground truth (FSC 0.5): "
        f"{report['resolution_vs_truth_a_05']:.2f} Å (Nyquist {report['nyquist_a']:.1f} Å)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
