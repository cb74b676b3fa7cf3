"""Symmetry expansion checked against a peer: ``backproject --symmetry C3`` beside cryoDRGN's
``backproject_voxel`` on an explicitly expanded STAR file.

An asymmetric molecule (6UO9, 64 px, 3.5 Å/px, 3 Å shifts, the EMPIAR-10028 CTF table, SNR 1,
3,000 particles with their true poses) is reconstructed with C3 imposed. Expansion inserts each
image at every mate ``R g`` of its pose, so the map it makes is the truth averaged over the
group, ``(1/3) sum_g V(g x)``, whatever the molecule. Three independent routes to that map:

- ours: ``reconstruct_known_poses(..., symmetry="C3")``, the operators from
  ``cryohydra.geometry.symmetry``;
- the peer: every particle written three times into a RELION STAR file with the Euler angles
  of ``A g_k`` (RELION's matrix ``A`` is the project's ``R``, ``benchmarks/peers/NOTES.md``;
  ``g_k`` a turn of ``120 k`` degrees about z, RELION's C3 axis), the matrices and angles made
  here with scipy (no cryohydra code), and reconstructed by cryoDRGN 4.3.1's
  ``backproject_voxel`` (its own ``parse_pose_star`` / ``parse_ctf_star``);
- the truth: the simulator's ground-truth map averaged over the three turns about the
  map's z axis (``scipy.ndimage.affine_transform`` about voxel ``L // 2``).

A wrong convention fails visibly: the same STAR expanded on the left (``g_k A``, which turns
each image in its plane) is run through the peer as a negative control, and the unsymmetrised
truth is scored beside the symmetrised one. All maps are scored by the same masked FSC.
Results: ``results/symmetry_expansion.json`` (one row per run, with the commit).

  python benchmarks/bench_symmetry_expansion.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backproject import run_cryodrgn  # noqa: E402
from common import RESULTS, commit, machine  # noqa: E402
from compare import ensure_peer  # noqa: E402
from cryohydra.io.mrc import write_map  # noqa: E402
from cryohydra.io.star import read_star  # noqa: E402
from cryohydra.metrics.fsc import masked_fsc  # noqa: E402
from cryohydra.reconstruct.backproject import reconstruct_known_poses  # noqa: E402
from cryohydra.simulate import simulate  # noqa: E402
from datasets import WORK, config  # noqa: E402

PATH = RESULTS / "symmetry_expansion.json"
ROOT = WORK / "symmetry_expansion"
FOLD = 3


def turns_about_z(fold: int) -> np.ndarray:
    """``(fold, 3, 3)`` active rotations by ``360 k / fold`` degrees about z (x, y, z order)."""
    angles = 360.0 * np.arange(fold)[:, None] / fold
    return Rotation.from_euler("z", angles, degrees=True).as_matrix()


def relion_matrices(star: dict) -> np.ndarray:
    """RELION's ``A = Rz(-psi) Ry(-tilt) Rz(-rot)`` of each particle, from its angles."""
    angles = star["particles"][["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    return Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)


def relion_angles(matrices: np.ndarray) -> np.ndarray:
    """``(N, 3)`` rot, tilt, psi (degrees) of RELION matrices ``A`` (inverse of the above)."""
    return Rotation.from_matrix(matrices.transpose(0, 2, 1)).as_euler("ZYZ", degrees=True)


def expanded_star(source: Path, target: Path, right: bool) -> int:
    """Write ``source`` with each particle repeated at ``A g`` (``right``) or ``g A``."""
    star = starfile.read(source, always_dict=True)
    particles = star["particles"]
    matrices = relion_matrices(star)
    check = relion_matrices({"particles": _with_angles(particles, relion_angles(matrices))})
    if np.abs(check - matrices).max() > 1e-6:
        raise AssertionError("the Euler angles written do not give back the matrices")
    copies = []
    for g in turns_about_z(FOLD):
        turned = matrices @ g if right else g @ matrices
        copies.append(_with_angles(particles, relion_angles(turned)))
    star["particles"] = pd.concat(copies, ignore_index=True)
    starfile.write(star, target, overwrite=True)
    return len(star["particles"])


def _with_angles(particles, angles: np.ndarray):
    out = particles.copy()
    out[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]] = angles
    return out


def symmetrised_truth(volume: np.ndarray, fold: int) -> np.ndarray:
    """``(1/fold) sum_g V(g x)`` for turns about the map's z axis; ``volume`` is ``[z, y, x]``
    and the centre is voxel ``L // 2`` on each axis (``docs/CONVENTIONS.md``)."""
    centre = np.full(3, volume.shape[0] // 2, dtype=np.float64)
    reverse = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
    total = np.zeros_like(volume, dtype=np.float64)
    for g in turns_about_z(fold):
        matrix = reverse @ g @ reverse
        total += affine_transform(volume.astype(np.float64), matrix, centre - matrix @ centre)
    return (total / fold).astype(np.float32)


def _read(path: Path) -> torch.Tensor:
    return torch.from_numpy(mrcfile.read(path).astype(np.float32).copy())


def _score(curve) -> dict:
    """FSC 0.5 (Å) and the mean FSC over the shells up to Nyquist."""
    return {"fsc05_a": curve.resolution_a(0.5), "fsc_mean": float(curve.values[1:].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=3000)
    parser.add_argument("--snr", type=float, default=1.0)
    args = parser.parse_args()
    code = commit()
    folder = ROOT / f"6uo9_64px_shifted_snr{args.snr:g}_{args.particles}"
    if not (folder / "simulation.json").exists():
        settings = dataclasses.replace(config("6uo9", True, args.particles, 64), snr=args.snr)
        simulate(settings, folder, force=True, progress=False)
    star = folder / "particles.star"
    particles = read_star(star)
    pixel = float(particles.pixel_size_a[0])
    truth = mrcfile.read(folder / "ground_truth.mrc").astype(np.float32)
    truth_sym = torch.from_numpy(symmetrised_truth(truth, FOLD))
    write_map(folder / "ground_truth_c3.mrc", truth_sym.numpy(), pixel, force=True)

    maps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name, symmetry in (("cryohydra_c1", "C1"), ("cryohydra_c3", "C3")):
        start = time.perf_counter()
        result = reconstruct_known_poses(particles, progress=False, symmetry=symmetry)
        seconds[name] = time.perf_counter() - start
        maps[name] = result.full.cpu()
        write_map(folder / f"{name}.mrc", maps[name].numpy(), pixel, force=True)
    ensure_peer("cryodrgn")
    runs = {"cryodrgn_c1": star}
    for name, right in (("cryodrgn_expanded_right", True), ("cryodrgn_expanded_left", False)):
        runs[name] = folder / f"{name}.star"
        expanded_star(star, runs[name], right)
    for name, path in runs.items():
        rows = len(particles) if name == "cryodrgn_c1" else FOLD * len(particles)
        seconds[name] = run_cryodrgn(path, folder / name, rows)["wall_s"]
        maps[name] = _read(folder / name / "map.mrc")

    references = {"truth": torch.from_numpy(truth), "truth_c3": truth_sym}
    scores = {
        name: {ref: _score(masked_fsc(volume, target, pixel)) for ref, target in references.items()}
        for name, volume in maps.items()
    }
    between = masked_fsc(maps["cryohydra_c3"], maps["cryodrgn_expanded_right"], pixel)
    row = {
        "commit": code,
        "dataset": folder.name,
        "particles": len(particles),
        "expanded_rows": 3 * len(particles),
        "pixel_size_a": pixel,
        "nyquist_a": 2 * pixel,
        "versus": scores,
        "ours_c3_vs_peer_expanded": {**_score(between), "fsc_min": float(between.values.min())},
        "seconds": seconds,
    }
    rows = json.loads(PATH.read_text())["rows"] if PATH.exists() else []
    rows.append(row)
    PATH.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
