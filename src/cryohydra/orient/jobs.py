"""The two jobs of ``cryohydra orient``: training sets simulated from structures, and the
recovery of a particle set's orientations into a RELION 3.1 STAR file (the command line in
:mod:`cryohydra.cli.orient` is a thin layer over these)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cryohydra.io.batches import ParticleBatches
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.particles import ParticleSet
from cryohydra.io.read import read_particles
from cryohydra.io.star import write_star
from cryohydra.io.structure import read_atomic_model
from cryohydra.metrics.pose_error import pose_errors
from cryohydra.metrics.reference import reference_fsc
from cryohydra.metrics.two_sided import two_sided_alignment
from cryohydra.orient.detector import (
    DetectorConfig,
    apply_detector_rotation,
    resolve_detector_rotation,
)
from cryohydra.orient.recover import RecoverConfig, embed, feature_distances, recover_orientations
from cryohydra.orient.training import TrainingSet, load_model
from cryohydra.reconstruct.backproject import reconstruct_known_poses
from cryohydra.reconstruct.outputs import output_names, write_reconstruction
from cryohydra.simulate import MODEL_SUFFIXES, SimulationConfig, simulate

__all__ = ["StructureSpec", "fitting_pixel_size_a", "recover_job", "simulate_training_sets"]

# An atomic model is simulated at the pixel size that makes its diameter this share of the box.
_FILL = 0.84
_DETECTOR_BOX = 32


@dataclass(frozen=True)
class StructureSpec:
    """A structure to simulate training images from: ``PATH`` or ``PATH:PIXEL_SIZE_A``."""

    path: Path
    pixel_size_a: float | None = None

    @staticmethod
    def parse(text: str) -> StructureSpec:
        head, _, tail = text.rpartition(":")
        if head and tail.replace(".", "", 1).isdigit():
            return StructureSpec(Path(head), float(tail))
        return StructureSpec(Path(text))

    @property
    def name(self) -> str:
        name = self.path.name
        for suffix in (".gz", ".pdb", ".cif", ".ent", ".mmcif", ".mrc", ".map"):
            name = name.removesuffix(suffix)
        return name


def fitting_pixel_size_a(model_path: Path, box_size: int) -> float:
    """Pixel size (Å) at which the model's diameter (twice its largest distance from the centre
    of mass) fills 84 % of the box, as in the standard benchmark datasets."""
    model = read_atomic_model(model_path)
    radius = float(np.linalg.norm(model.coords_a - model.center_of_mass_a, axis=1).max())
    return 2 * radius / (_FILL * box_size)


def simulate_training_sets(
    structures: list[StructureSpec],
    snrs: list[float],
    base: SimulationConfig,
    datadir: Path,
    log=print,
) -> list[tuple[str, Path, dict]]:
    """Simulate every structure once, without noise, into ``datadir/<name>`` (a set already
    simulated with the same settings is reused); training adds fresh noise at each of
    ``snrs`` to every batch (:class:`~cryohydra.orient.training.TrainingSet`). Returns
    ``(name, star, info)`` per structure and SNR."""
    sets = []
    for k, spec in enumerate(structures):
        pixel = spec.pixel_size_a
        if pixel is None and spec.path.suffix.lower() in MODEL_SUFFIXES:
            pixel = fitting_pixel_size_a(spec.path, base.box_size)
        config = SimulationConfig(
            **{
                **asdict(base),
                "structure": str(spec.path),
                "pixel_size_a": pixel,
                "snr": math.inf,
                "seed": base.seed + 1000 * k,
            }
        )
        folder = datadir / spec.name
        log_path = folder / "simulation.json"
        if log_path.exists():
            done = json.loads(log_path.read_text())["config"]
            wanted = {key: (None if v == math.inf else v) for key, v in asdict(config).items()}
            if done != wanted:
                raise ValueError(f"{folder} holds a set simulated with other settings")
            log(f"reusing {folder}")
        else:
            log(f"simulating {spec.name} ({config.n_particles} clean images) into {folder}")
            simulate(config, folder, progress=False)
        for snr in snrs:
            label = "inf" if math.isinf(snr) else f"{snr:g}"
            info = {"snr": snr, "simulated": True}
            sets.append((f"{spec.name}_snr{label}", folder / "particles.star", info))
    return sets


def load_training_sets(
    entries: list[tuple[str, Path, dict]], box_size: int, symmetry: str = "C1"
) -> list[TrainingSet]:
    """The sets of :func:`simulate_training_sets` (clean, with fresh noise at their SNR) and
    given ones (``info["snr"]`` absent: used as stored)."""
    return [
        TrainingSet.from_particles(
            name, read_particles(star), box_size, symmetry, snr=info.get("snr"), info=info
        )
        for name, star, info in entries
    ]


def _evaluation(
    particles: ParticleSet, before: torch.Tensor, after: torch.Tensor, symmetry
) -> dict:
    """Errors against the input's poses: one-sided (what the map sees) before and after the
    detector search, and two-sided (the distance fit alone)."""
    true = particles.rotations
    out = {
        "one_sided": pose_errors(after.numpy(), true, symmetry=symmetry).to_dict(),
        "one_sided_before_detector_search": pose_errors(
            before.numpy(), true, symmetry=symmetry
        ).to_dict(),
        "two_sided": two_sided_alignment(before, true).to_dict(),
    }
    return out


def recover_job(
    model_path: Path,
    particles: ParticleSet,
    outdir: Path,
    recover: RecoverConfig | None = None,
    detector: DetectorConfig | None = None,
    invert_contrast: bool = False,
    reference_map: Path | None = None,
    symmetry: str = "C1",
    device: str = "cpu",
    force: bool = False,
    log=print,
) -> dict:
    """Embed, fit orientations, resolve ``A`` and the hand, write ``poses.star`` (RELION 3.1,
    the input's CTF, zero shifts), the map from those poses (``map.mrc``, half-maps) and
    ``recover.json``; with true poses in the input, the pose errors too."""
    names = ("poses.star", *output_names(fsc=False), "recover.json")
    paths = {name: check_writable(outdir / name, force) for name in names}
    outdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    model, payload = load_model(model_path, device)
    box = model.box_size
    stored_box = particles.box_size or particles.load_images([0]).shape[-1]
    if stored_box < box:
        raise InputFileError(
            particles.source,
            f"images are {stored_box} px; the network {model_path} needs at least {box} px",
        )
    data = ParticleBatches(particles, box, invert_contrast=invert_contrast, device=device)
    features = embed(model, data)
    timings["embed_s"] = time.perf_counter() - began
    log(f"embedded {len(particles)} images in {timings['embed_s']:.1f} s")
    step = time.perf_counter()
    found = recover_orientations(len(particles), feature_distances(features), recover, device)
    timings["recover_s"] = time.perf_counter() - step
    log(
        f"orientations fitted: {found.steps} steps, held-out loss {found.final_loss:.4f} rad^2, "
        f"{timings['recover_s']:.1f} s"
    )
    step = time.perf_counter()
    search_box = min(stored_box, max(box, _DETECTOR_BOX))
    search_data = ParticleBatches(
        particles, search_box, invert_contrast=invert_contrast, device=device
    )
    searched = resolve_detector_rotation(found.rotations, search_data, detector, log=log)
    timings["detector_search_s"] = time.perf_counter() - step
    rotations = apply_detector_rotation(
        found.rotations, torch.from_numpy(searched.rotation), searched.inverted
    )
    log(
        f"detector rotation found (inverted: {searched.inverted}, score {searched.score:.4f}, "
        f"{searched.evaluations} reconstructions, {timings['detector_search_s']:.1f} s)"
    )
    timings["total_s"] = time.perf_counter() - began
    shifts = np.zeros((len(particles), 2))
    posed = particles.with_poses(rotations.numpy(), shifts)
    write_star(paths["poses.star"], posed, force=force)
    result = reconstruct_known_poses(
        posed, invert_contrast=invert_contrast, device=device, progress=False
    )
    pixel = result.pixel_size_a
    write_reconstruction(result, outdir, fsc=False, force=force)
    summary: dict = {
        "model": str(model_path),
        "training_sets": payload["training_sets"],
        "particles": str(particles.source),
        "n_particles": len(particles),
        "recover": asdict(recover or RecoverConfig()),
        "detector": asdict(detector or DetectorConfig()),
        "fit": {"steps": found.steps, "held_out_loss_rad2": found.final_loss},
        "detector_search": {
            "rotation": searched.rotation.tolist(),
            "inverted": searched.inverted,
            "score": searched.score,
            "evaluations": searched.evaluations,
        },
        "timings": timings,
        "outputs": {name: str(path) for name, path in paths.items()},
    }
    if particles.has_poses:
        summary["pose_error"] = _evaluation(particles, found.rotations, rotations, symmetry)
    if reference_map is not None:
        summary["fsc_vs_reference_a_0.5"] = reference_fsc(result.full, reference_map, pixel)
    paths["recover.json"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary
