"""cryoJAX's noise-free images of a map in the poses, shifts and CTFs of a RELION 3.1 STAR file.

Runs inside cryoJAX's own environment (``benchmarks/peers/requirements-cryojax.txt``; cryoJAX
is not a dependency of cryohydra). Reads the map (``[z, y, x]`` as mrcfile returns it, origin
at index ``L // 2``), the optics block (``_rlnImagePixelSize``, ``_rlnImageSize``,
``_rlnVoltage``, ``_rlnSphericalAberration``, ``_rlnAmplitudeContrast``) and the particles
(``_rlnAngleRot/Tilt/Psi``, ``_rlnOriginX/YAngst``, ``_rlnDefocusU/V``, ``_rlnDefocusAngle``,
optional ``_rlnPhaseShift`` and ``_rlnCtfBfactor``), and writes an ``(n, L, L)`` float32 stack
plus ``OUT.json`` (versions, settings, the translations used).

Pipeline (cryojax 0.6.0): ``FourierVoxelGridVolume.from_real_voxel_grid`` (the map,
interpolation kernel deconvolved, optionally padded) -> ``FourierSliceExtraction`` ->
``ContrastTransferTheory(AstigmaticCTF)`` (or no CTF) -> Fourier phase-shift translation
(``make_image_model``, ``LinearImageModel`` / ``ProjectionImageModel``, no normalisation).

Convention translations from RELION / cryohydra (``docs/CONVENTIONS.md``) to cryoJAX, each
read from the installed cryojax 0.6.0 source and checked by
``benchmarks/bench_cryojax_conventions.py``:

1. Rotation. cryohydra's ``R`` is RELION's ``A(rot, tilt, psi)``, with
   ``P^(k) = V^(R^T k)``. cryoJAX's ``EulerAnglePose`` builds
   ``R_cj = Rz(psi) Ry(theta) Rz(phi)`` (extrinsic zyz, active rotations; ``_pose.py``) and a
   ``FourierVoxelGridVolume`` samples the volume at ``R_cj^T k`` (``is_frame_rotation`` is
   True, so ``rotate_coordinates(..., inverse=True)``). RELION's ``A`` is
   ``Rz(-psi) Ry(-tilt) Rz(-rot)``, hence ``(phi, theta, psi) = (-rot, -tilt, -psi)``: every
   angle negated, same order (also what the ``EulerAnglePose`` docstring says).
   ``--rotation transposed`` gives ``R_cj = A^T`` instead ((phi, theta, psi) =
   (psi, tilt, rot)), a wrong hypothesis kept for the check.
2. Shift. cryohydra / RELION: ``I^(k) = P^(k) exp(+2 pi i k.t)`` with
   ``t = (_rlnOriginXAngst, _rlnOriginYAngst)`` (translating the image by ``+t`` centres
   it). cryoJAX multiplies by ``exp(-2 pi i (tx qx + ty qy))`` for
   ``offset_in_angstroms = (tx, ty)`` (``AbstractPose.compute_translation_operator``), i.e.
   it puts the particle's centre at ``+offset``. Hence ``offset = -t``
   (``--shift-sign -1``, the default; ``+1`` is the wrong hypothesis).
3. CTF sign. cryoJAX's ``AstigmaticCTF`` is ``sin(chi - (phase_shift + arctan(w /
   sqrt(1 - w^2))))`` with ``chi = 2 pi (-df lambda s^2 / 2 + Cs lambda^3 s^4 / 4)``: that is
   ``-sin(gamma_RELION)`` = ``-CTF_cryohydra`` (the phase shift is in degrees in both STAR and
   cryoJAX, and enters with the same sign). cryoJAX's CTF images therefore have dark
   particles; the image is multiplied by ``--ctf-sign`` (default ``-1``) when the CTF is on so
   that the output follows cryohydra's convention (bright particles). Without a CTF cryoJAX's
   projection is already positive, and nothing is negated.
4. Astigmatism angle. cryoJAX takes ``defocus = (dfU + dfV) / 2`` and
   ``astigmatism = dfU - dfV``, as the ``AstigmaticCTF`` docstring says, but its azimuth is
   ``arctan2(qx, qy)`` (``ndimage.cartesian_to_polar``: measured from the image's y axis),
   where RELION's ``_rlnDefocusAngle`` is the angle of the U axis from x. Hence
   ``astigmatism_angle = 90 - _rlnDefocusAngle`` (degrees; ``--astigmatism-angle relion``,
   the default). ``direct`` passes ``_rlnDefocusAngle`` unchanged (the wrong hypothesis).
5. Scale. ``FourierSliceExtraction`` multiplies the projection by the pixel size (a line
   integral in Å; ``fourier_voxels.py``), cryohydra sums voxels. ``--scale`` divides
   cryoJAX's image by a factor (default 1: raw cryoJAX scale, so the check can measure it).
6. Map hand. ``--mirror-map`` flips the map along z before projecting (the other hand; a
   wrong hypothesis kept for the check).
7. Wavelength. cryoJAX computes its own from ``_rlnVoltage`` (``wavelength_from_kilovolts``);
   at 300 kV it differs from RELION's (cryohydra's) by 3e-5 relative, not translated.

Arrays: image ``[y, x]``, real-space origin at index ``L // 2`` in both programs (cryoJAX
realises a real-space fftshift with a phase; ``_fourier_slice.py``). Not translated: the
frequency band (cryoJAX fills the whole square, cryohydra the disc ``|k| <= L/2 - 1`` px;
the check compares on the common disc) and the CTF canvas (both apply the CTF on the
``--pad-image`` x box canvas, default 1, like ``cryohydra simulate --ctf-canvas 1``).

  cryojax/bin/python cryojax_simulate.py ground_truth.mrc particles.star out.mrcs [--no-ctf]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import cryojax.simulator as cxs  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mrcfile  # noqa: E402
import numpy as np  # noqa: E402
import starfile  # noqa: E402
from cryojax.ndimage import FourierGaussian  # noqa: E402

GEOMETRY = ("rlnImagePixelSize", "rlnImageSize")
OPTICS_CTF = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")


def read_star(path: Path, ctf: bool):
    """Particles with their optics-group columns merged in (RELION 3.1 only). The CTF
    columns are needed only with a CTF (cryohydra writes none for a set without)."""
    blocks = starfile.read(path, always_dict=True)
    if "optics" not in blocks or "particles" not in blocks:
        raise SystemExit(f"{path}: expected RELION 3.1 'optics' and 'particles' blocks")
    optics, particles = blocks["optics"], blocks["particles"]
    needed = GEOMETRY + (OPTICS_CTF if ctf else ())
    missing = [c for c in needed if c not in optics.columns]
    if ctf:
        missing += [c for c in ("rlnDefocusU", "rlnDefocusV") if c not in particles.columns]
    if missing:
        raise SystemExit(f"{path}: no {missing} (give --no-ctf for images without a CTF)")
    keep = ["rlnOpticsGroup", *(c for c in GEOMETRY + OPTICS_CTF if c in optics.columns)]
    return particles.merge(optics[keep], on="rlnOpticsGroup", how="left")


def column(table, name: str, default: float = 0.0) -> np.ndarray:
    if name in table.columns:
        return table[name].to_numpy(dtype=np.float64)
    return np.full(len(table), default)


def pose_parameters(table, rotation: str, shift_sign: float) -> np.ndarray:
    """``(n, 5)``: cryoJAX's (offset x, offset y, phi, theta, psi) from RELION's columns."""
    rot, tilt, psi = (column(table, f"rlnAngle{a}") for a in ("Rot", "Tilt", "Psi"))
    if rotation == "relion":  # R_cj = Rz(-psi) Ry(-tilt) Rz(-rot) = A
        angles = (-rot, -tilt, -psi)
    else:  # "transposed": R_cj = Rz(rot) Ry(tilt) Rz(psi) = A^T
        angles = (psi, tilt, rot)
    offsets = (
        shift_sign * column(table, "rlnOriginXAngst"),
        shift_sign * column(table, "rlnOriginYAngst"),
    )
    return np.stack([*offsets, *angles], axis=1)


def ctf_parameters(table, astigmatism_angle: str) -> np.ndarray:
    """``(n, 7)``: mean defocus, dfU - dfV, angle (deg), Cs, w, phase shift (deg), B."""
    du, dv = column(table, "rlnDefocusU"), column(table, "rlnDefocusV")
    angle = column(table, "rlnDefocusAngle")
    if astigmatism_angle == "relion":  # cryoJAX's azimuth is measured from y
        angle = 90.0 - angle
    return np.stack(
        [
            0.5 * (du + dv),
            du - dv,
            angle,
            column(table, "rlnSphericalAberration"),
            column(table, "rlnAmplitudeContrast"),
            column(table, "rlnPhaseShift"),
            column(table, "rlnCtfBfactor"),
        ],
        axis=1,
    )


def make_simulator(volume, config, use_ctf: bool, use_envelope: bool):
    integrator = cxs.FourierSliceExtraction()

    @eqx.filter_jit
    def simulate(pose_row, ctf_row):
        pose = cxs.EulerAnglePose(*pose_row)
        transfer = None
        if use_ctf:
            ctf = cxs.AstigmaticCTF(
                defocus_in_angstroms=ctf_row[0],
                astigmatism_in_angstroms=ctf_row[1],
                astigmatism_angle=ctf_row[2],
                spherical_aberration_in_mm=ctf_row[3],
            )
            envelope = FourierGaussian(1.0, ctf_row[6]) if use_envelope else None
            transfer = cxs.ContrastTransferTheory(
                ctf,
                envelope=envelope,
                amplitude_contrast_ratio=ctf_row[4],
                phase_shift=ctf_row[5],
            )
        model = cxs.make_image_model(volume, config, pose, transfer, volume_integrator=integrator)
        return model.simulate()

    return simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("map", type=Path, help="ground-truth map (.mrc)")
    parser.add_argument("star", type=Path, help="RELION 3.1 STAR with poses, shifts, CTF")
    parser.add_argument("out", type=Path, help="output stack (.mrcs)")
    parser.add_argument("--no-ctf", action="store_true", help="projections without a CTF")
    parser.add_argument("--rotation", choices=["relion", "transposed"], default="relion")
    parser.add_argument("--shift-sign", type=float, default=-1.0, help="offset = sign * origin")
    parser.add_argument(
        "--ctf-sign", type=float, default=-1.0, help="factor on the CTF images (cryoJAX's sign)"
    )
    parser.add_argument("--astigmatism-angle", choices=["relion", "direct"], default="relion")
    parser.add_argument("--mirror-map", action="store_true", help="flip the map along z")
    parser.add_argument("--scale", type=float, default=1.0, help="divide the images by this")
    parser.add_argument("--interp", choices=["linear", "cubic"], default="cubic")
    parser.add_argument("--pad-volume", type=float, default=2.0, help="volume pad_scale")
    parser.add_argument("--pad-image", type=int, default=1, help="CTF canvas, boxes wide")
    parser.add_argument("--max-images", type=int, default=0, help="the first N (0: all)")
    args = parser.parse_args()
    began = time.perf_counter()

    with mrcfile.open(args.map, permissive=True) as mrc:
        volume_array = np.asarray(mrc.data, dtype=np.float64)
        voxel_a = float(mrc.voxel_size.x)
    if args.mirror_map:
        volume_array = volume_array[::-1].copy()
    use_ctf = not args.no_ctf
    table = read_star(args.star, use_ctf)
    if args.max_images:
        table = table.iloc[: args.max_images]
    pixel_a = table["rlnImagePixelSize"].to_numpy(dtype=np.float64)
    box = table["rlnImageSize"].to_numpy(dtype=np.int64)
    voltage = column(table, "rlnVoltage", 300.0)  # unused without a CTF
    if len(set(pixel_a)) != 1 or len(set(box)) != 1 or len(set(voltage)) != 1:
        raise SystemExit("one pixel size, box and voltage per file is supported")
    pixel_a, box, voltage = float(pixel_a[0]), int(box[0]), float(voltage[0])
    if volume_array.shape != (box, box, box):
        raise SystemExit(f"map is {volume_array.shape}, STAR box is {box}")
    if voxel_a > 0 and abs(voxel_a - pixel_a) > 1e-3:
        raise SystemExit(f"map voxel {voxel_a} Å differs from the STAR pixel {pixel_a} Å")

    volume = cxs.FourierVoxelGridVolume.from_real_voxel_grid(
        jnp.asarray(volume_array), interp=args.interp, pad_scale=args.pad_volume
    )
    config = cxs.BasicImageConfig(
        (box, box), pixel_a, voltage, padded_shape=(args.pad_image * box,) * 2
    )
    poses = pose_parameters(table, args.rotation, args.shift_sign)
    ctfs = ctf_parameters(table, args.astigmatism_angle)
    use_envelope = use_ctf and bool(np.any(ctfs[:, 6] != 0))
    simulate = make_simulator(volume, config, use_ctf, use_envelope)
    factor = (args.ctf_sign if use_ctf else 1.0) / args.scale
    images = np.empty((len(table), box, box), dtype=np.float32)
    for i in range(len(table)):
        images[i] = factor * np.asarray(simulate(jnp.asarray(poses[i]), jnp.asarray(ctfs[i])))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(args.out, overwrite=True) as mrc:
        mrc.set_data(images)
        mrc.set_image_stack()
        mrc.voxel_size = pixel_a
    record = {
        "versions": {p: version(p) for p in ("cryojax", "jax", "jaxlib", "equinox", "numpy")},
        "images": len(table),
        "box": box,
        "pixel_size_a": pixel_a,
        "ctf": use_ctf,
        "envelope": use_envelope,
        "rotation": args.rotation,
        "shift_sign": args.shift_sign,
        "ctf_sign": args.ctf_sign,
        "astigmatism_angle": args.astigmatism_angle,
        "mirror_map": args.mirror_map,
        "scale": args.scale,
        "interp": args.interp,
        "pad_volume": args.pad_volume,
        "pad_image": args.pad_image,
        "seconds": round(time.perf_counter() - began, 2),
    }
    Path(str(args.out) + ".json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
