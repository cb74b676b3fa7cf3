"""ASPIRE's class-average ab-initio pipeline on a RELION STAR file, in ASPIRE's own environment.

ASPIRE's documented route for noisy data (the ``gallery/experiments`` ab-initio pipelines) is
2D class averaging first, then common lines on the class averages. This script follows it on
every particle and then gives each particle a pose, so that its output has the same form as
``aspire_run.py``'s (common lines on raw images).

1. Load (``RelionSource``, cached). All particles, or the first ``--images``.
2. Preprocess, in the order of the newest experimental pipeline
   (``experimental_abinitio_pipeline_11618.py``): ``phase_flip()`` (ASPIRE's CTF-sign
   correction), ``downsample(--cl-box)`` (every gallery pipeline downsamples, the simulated
   and 10028/10081 ones to 32 px, which is the default here), ``normalize_background()``
   (ASPIRE's defaults: background outside radius 1, ramp removed, background variance 1) and
   ``whiten()`` with its default noise estimate (``WhiteNoiseEstimator``; the simulated and
   10028 pipelines pass ``AnisotropicNoiseEstimator`` instead, which gives the same filter for
   the white noise of simulated data). ``invert_contrast()`` is left out: it only changes
   the global sign, which neither classification, alignment nor common lines see, and the
   map is made from the raw particles anyway.
3. Class averages: ``DefaultClassAvgSource`` (0.14.3: ``ClassAvgSourcev140``) with its
   defaults: ``RIRClass2D`` (400 FSPCA components, 300 bispectrum components, sklearn
   nearest neighbours over the images and their reflections), ``BFTAverager2D``
   (polar-Fourier rotational alignment over 360 angles, brute-force shifts within
   ``L // 32`` px = 1 px at 32 px) and ``GlobalVarianceClassSelector`` (averages every one of
   the n classes, one per particle as reference, and ranks them by variance). The number of
   neighbours per class (``--n-nbor``, 10) and of class averages kept (``--n-classes``, the
   top 1000 by that ranking) are those of ``simulated_abinitio_pipeline.py``'s "small sim"
   (32 px, 10,000 images, 1000 classes, 10 neighbours), the gallery set closest to ours.
   ``RIRClass2D``'s defaults refuse fewer images than bispectrum components (300).
   The variance ranking does not avoid overlapping classes, so the kept classes hold far
   fewer distinct particles than ``n_classes * n_nbor`` (see ``unassigned`` below).
4. Common lines on the class averages: ``CLSyncVoting`` (``--method sync``, ASPIRE's default
   ``n_theta=360`` and shift search) or ``CommonlineIRLS`` (``--method irls``, alpha = 2/3 as
   in ``aspire_run.py``), on the CPU.
5. Per-particle poses. Each class average is aligned to its reference image (column 0 of its
   class), so the common-lines rotation of the average is the reference's pose. The averager
   brings member j onto the reference by reflecting it about y = 0 (if ``class_refl``) and
   then rotating it by ``theta_j`` (``averager.rotations``, radians, ASPIRE's
   "counter-clockwise"). In ASPIRE's convention (microscope -> molecule) member j's pose is

       R_j = R_class @ Rz(-theta_j) @ diag(1, -1, -1)^refl_j

   (``Rz`` the usual right-handed turn about the viewing axis; ``diag(1, -1, -1)`` is the
   half turn about x, a proper rotation, because a projection does not see the sign of z).
   The sign of ``theta`` is the opposite of a counter-clockwise turn in R's own (x, y)
   frame, so the composition was fixed by measurement: on 1,000 SNR-10 particles, the true
   pose of each reference composed this way gives every member's true pose to a median of
   4.5 degrees (4.2 unreflected, 4.7 reflected, no global alignment, HSP90's two-fold
   allowed); ``Rz(+theta)`` gives 73, reflection about the other axis 101 on the
   reflected members. A particle in several kept classes takes the pose of the first one
   in ASPIRE's ranking; a particle in none gets the identity and is counted
   (``unassigned`` in aspire.json). The averager's shifts (at most 1 px at 32 px) are not
   used: the poses are rotations only, as in aspire_run.py.
6. The map: ASPIRE's CTF-aware least-squares ``MeanEstimator`` (``--maxiter`` CG iterations)
   from the raw particles (full size, not phase-flipped) at their poses, as aspire_run.py
   does. Unassigned particles are left out of the map (they have no pose).

Conventions (``benchmarks/peers/NOTES.md``): ASPIRE's rotations are RELION's A transposed,
and its CTF has the opposite sign to RELION's, so the map of a bright-particle stack comes
out negated; both are undone here.

Writes to OUTDIR: ``rotations.npy`` (n_particles, 3, 3) in cryohydra's convention (``R`` =
RELION A), ``map.mrc``, ``aspire.json`` (timings of each step, settings, counts) and
``classes.npz`` (kept classes: members, reflections, alignment angles, class rotations in
ASPIRE's convention, and each particle's class).

  python aspire_classavg_run.py particles.star OUT --method sync --n-classes 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import mrcfile
import numpy as np
from aspire.denoising import DefaultClassAvgSource
from aspire.source import RelionSource
from aspire_run import estimate_rotations, mean_volume  # this folder: the same steps

N_CLASSES = 1000  # simulated_abinitio_pipeline.py, "small sim"
N_NBOR = 10  # the same
STEPS = ("load", "preprocess", "class_average", "common_lines", "map")


def preprocess(source, box: int):
    """The images for classification and common lines, as the experimental pipeline makes them."""
    images = source.phase_flip()
    if 0 < box < images.L:
        images = images.downsample(box)
    return images.normalize_background().whiten().cache()


def class_average(images, n_nbor: int, n_classes: int):
    """ASPIRE's default class averages, the first ``n_classes`` in its own ranking.

    Returns the averages (cached) and the table of the kept classes: members (reference
    first), reflections and alignment angles (radians, counter-clockwise, applied after the
    reflection), one row per kept class.
    """
    averages = DefaultClassAvgSource(images, n_nbor=n_nbor)
    n_classes = min(n_classes, images.n)
    # Classify, average all n classes and rank them, on this object: ``cache()`` works on a
    # deep copy, so called first it would classify the copy and leave ``averages`` to
    # classify again (twice the time, and a table that need not match the averages).
    chosen = np.asarray(averages.selection_indices[:n_classes], dtype=int)
    kept = averages[:n_classes].cache()
    members = np.asarray(averages.class_indices[chosen], dtype=int)
    if not np.array_equal(members[:, 0], chosen):
        raise RuntimeError("class table rows are not indexed by their reference image")
    table = {
        "reference": chosen,
        "members": members,
        "reflections": np.asarray(averages.class_refl[chosen], dtype=bool),
        "angles": np.stack([averages.averager.rotations[k] for k in chosen]).astype(float),
    }
    return kept, table


def in_plane(angles: np.ndarray, reflections: np.ndarray) -> np.ndarray:
    """``Rz(-theta) F^refl``: a class member's pose relative to its class (see the docstring)."""
    c, s = np.cos(-angles), np.sin(-angles)
    turn = np.zeros((*angles.shape, 3, 3))
    turn[..., 0, 0], turn[..., 0, 1], turn[..., 1, 0], turn[..., 1, 1] = c, -s, s, c
    turn[..., 2, 2] = 1.0
    flip = np.where(reflections[..., None], [1.0, -1.0, -1.0], 1.0)  # diag(1, -1, -1)
    return turn * flip[..., None, :]


def particle_rotations(class_rotations: np.ndarray, table: dict, n: int):
    """Each particle's ASPIRE rotation from the first kept class that holds it.

    Returns the rotations (identity where no kept class holds the particle), each
    particle's class (row of ``table``; -1 for none) and its column in that class.
    """
    relative = in_plane(table["angles"], table["reflections"])
    members = table["members"]
    rotations = np.tile(np.eye(3), (n, 1, 1))
    owner, column = np.full(n, -1), np.full(n, -1)
    for row in range(len(members)):  # ASPIRE's ranking: the first class wins
        free = np.flatnonzero(owner[members[row]] < 0)
        picks = members[row][free]
        owner[picks], column[picks] = row, free
        rotations[picks] = class_rotations[row] @ relative[row][free]
    return rotations, owner, column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("star")
    parser.add_argument("outdir")
    parser.add_argument("--images", type=int, default=0, help="the first N particles (0: all)")
    parser.add_argument("--method", choices=["sync", "irls"], default="sync")
    parser.add_argument("--cl-box", type=int, default=32, help="box of classes and common lines")
    parser.add_argument("--n-classes", type=int, default=N_CLASSES, help="class averages kept")
    parser.add_argument("--n-nbor", type=int, default=N_NBOR, help="images per class")
    parser.add_argument("--n-theta", type=int, default=360)
    parser.add_argument("--maxiter", type=int, default=50, help="CG iterations of the map")
    args = parser.parse_args()
    star, outdir = Path(args.star).resolve(), Path(args.outdir).resolve()  # before the chdir
    outdir.mkdir(parents=True, exist_ok=True)
    os.chdir(outdir)  # ASPIRE writes logs/ into the working folder
    times, cpu = [time.perf_counter()], [time.process_time()]
    source = RelionSource(str(star), max_rows=args.images or None).cache()
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    images = preprocess(source, args.cl_box)
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    averages, table = class_average(images, args.n_nbor, args.n_classes)
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    class_rotations = estimate_rotations(averages, args.method, args.n_theta)
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    rotations, owner, column = particle_rotations(class_rotations, table, source.n)
    assigned = owner >= 0
    oriented = source.update(rotations=rotations.astype(source.dtype))
    if not assigned.all():  # no pose, so no part in the map
        oriented = oriented[np.flatnonzero(assigned)]
    volume = mean_volume(oriented, outdir, args.maxiter)
    times.append(time.perf_counter())
    cpu.append(time.process_time())
    np.save(outdir / "rotations.npy", rotations.transpose(0, 2, 1))
    np.savez(
        outdir / "classes.npz",
        class_rotations=class_rotations, owner=owner, column=column, **table,
    )  # fmt: skip
    with mrcfile.new(outdir / "map.mrc", overwrite=True) as out:
        out.set_data(volume.astype(np.float32))
        out.voxel_size = float(source.pixel_size)
    steps, cpu_steps = np.diff(times), np.diff(cpu)
    reflected = table["reflections"][owner[assigned], column[assigned]]
    record = {
        "method": args.method,
        "images": int(source.n),
        "box": int(source.L),
        "common_lines_box": int(images.L),
        "n_classes": len(table["members"]),
        "n_nbor": int(table["members"].shape[1]),
        "unassigned": int(np.sum(~assigned)),
        "reflected": int(np.sum(reflected)),  # assigned particles whose pose has the flip
        "load_seconds": steps[0],
        "preprocess_seconds": steps[1],
        "class_average_seconds": steps[2],
        "common_lines_seconds": steps[3],
        "map_seconds": steps[4],
        "orientation_seconds": steps[1] + steps[2] + steps[3],
        "cpu_seconds": dict(zip(STEPS, cpu_steps.tolist(), strict=True)),  # all threads
    }
    (outdir / "aspire.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
