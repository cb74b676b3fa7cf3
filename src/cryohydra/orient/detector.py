"""The detector-side rotation ``A`` and the hand, found from the images.

Distances leave orientations free up to ``R -> A R B`` and ``R -> R^T``. ``B`` only rotates
the map; ``A`` and the inversion change which view each image is taken to be, so a map made
with the wrong ones is not a rotated copy of the molecule but a blur. Nothing in the distances
can tell them apart; the images can: only the right ``A`` gives poses under which the images
agree with one another.

The score of a candidate ``(A, inverted)`` is a cross-validated re-projection: the images of a
subset are split in two halves, a Wiener-filtered map is reconstructed from each half with poses
``A R_i`` (or ``A R_i^T``), and each half's images are compared (correlation of the transforms,
with the CTF, at low resolution) with the projections of the *other* half's map. The search runs
on a coarse grid of SO(3) for both inversions, then refines the best few seeds by a pattern
search of shrinking steps about the three axes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cryohydra.geometry.rotations import exp_map
from cryohydra.geometry.sampling import so3_grid
from cryohydra.io.batches import ParticleBatches
from cryohydra.physics.imaging import FourierVolume
from cryohydra.reconstruct.backproject import Accumulator, wiener_maps

__all__ = [
    "DetectorConfig",
    "DetectorSearch",
    "apply_detector_rotation",
    "resolve_detector_rotation",
]


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the search.

    Attributes:
        n_images: images scored (a random subset; more is slower and steadier).
        resolution_a: highest resolution compared (Å); None: four times the Nyquist limit of
            the data as read.
        nside: HEALPix order of the coarse grid (1: 72 rotations, about 60 degrees apart).
        seeds: best coarse candidates refined.
        final_step_deg: the pattern search stops below this step.
        seed: seeds the subset.
    """

    n_images: int = 1000
    resolution_a: float | None = None
    nside: int = 1
    seeds: int = 4
    final_step_deg: float = 1.0
    seed: int = 0


@dataclass
class DetectorSearch:
    """The rotation ``A`` ``(3, 3)`` and inversion found, the best score (mean correlation),
    the scores of the coarse grid per inversion, evaluations made and seconds taken."""

    rotation: np.ndarray
    inverted: bool
    score: float
    coarse_scores: dict = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0


def apply_detector_rotation(
    rotations: torch.Tensor, a: torch.Tensor, inverted: bool
) -> torch.Tensor:
    """``A R_i`` or ``A R_i^T`` for ``(N, 3, 3)`` rotations."""
    base = rotations.transpose(-1, -2) if inverted else rotations
    return a.to(base) @ base


class _Scorer:
    """Cross-validated re-projection score of candidate poses on a fixed subset."""

    def __init__(self, data: ParticleBatches, rows: np.ndarray, resolution_a: float) -> None:
        self.data = data
        self.grid = data.grid_at(resolution_a)
        batch = data.load(rows, self.grid)
        self.images = batch.images
        self.spectra = batch.spectra
        self.transfer = batch.transfer
        self.model = batch.model
        radius = torch.linalg.vector_norm(self.grid.coords[:, :2], dim=-1)
        self.keep = radius >= 1.0  # leave out the DC term: the mean is not structure
        box = data.working_box
        self.box = box
        self.reconstruction_radius = float(radius.max()) + 2
        self.transfer_function = data.transfer_function(rows)
        self.halves = [np.arange(len(rows)) % 2 == parity for parity in (0, 1)]
        self.zero_shifts = torch.zeros(len(rows), 2, device=data.device)
        self.evaluations = 0

    @torch.no_grad()
    def __call__(self, rotations: torch.Tensor) -> float:
        self.evaluations += 1
        rotations = rotations.to(self.data.device, torch.float32)
        accumulators = []
        for members in self.halves:
            acc = Accumulator.zeros(self.box, self.data.device, self.reconstruction_radius)
            index = torch.from_numpy(np.nonzero(members)[0]).to(self.data.device)
            acc.add(
                self.images[index],
                rotations[index],
                self.zero_shifts[index],
                self.transfer_function.subset(index),
                self.data.pixel_size_a,
            )
            accumulators.append(acc)
        _, map_a, map_b, _ = wiener_maps(*accumulators)
        correlations = []
        for members, other in zip(self.halves, (map_b, map_a), strict=True):
            index = torch.from_numpy(np.nonzero(members)[0]).to(self.data.device)
            volume = FourierVolume.from_map(other)
            model = self.model.modulate(
                self.model.slices(volume.spectrum, rotations[index]), self.transfer[index], None
            )
            observed = self.spectra[index]
            model, observed = model[:, self.keep], observed[:, self.keep]
            cross = (model.conj() * observed).real.sum(dim=-1)
            norms = torch.linalg.vector_norm(model, dim=-1) * torch.linalg.vector_norm(
                observed, dim=-1
            )
            correlations.append(cross / norms.clamp(min=1e-12))
        return float(torch.cat(correlations).mean())


def _axes_steps(step_rad: float) -> torch.Tensor:
    """The six rotations ``exp(+-step e_k)``."""
    vectors = torch.cat([torch.eye(3), -torch.eye(3)]).double() * step_rad
    return exp_map(vectors)


def resolve_detector_rotation(
    rotations: torch.Tensor | np.ndarray,
    data: ParticleBatches,
    config: DetectorConfig | None = None,
    log=None,
) -> DetectorSearch:
    """Find ``A`` and the inversion making ``A R_i`` (or ``A R_i^T``) consistent with the
    images of ``data`` (see the module docstring). ``rotations`` ``(N, 3, 3)`` are in the
    order of ``data``'s particles."""
    config = config or DetectorConfig()
    began = time.perf_counter()
    rotations = torch.as_tensor(rotations, dtype=torch.float64)
    n = len(data)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(n, size=min(n, config.n_images), replace=False))
    resolution = config.resolution_a or 4 * data.nyquist_a
    scorer = _Scorer(data, rows, resolution)
    subset = rotations[torch.from_numpy(rows)]
    candidates = []  # (score, A, inverted)
    coarse: dict = {}
    grid = so3_grid(config.nside)
    for inverted in (False, True):
        scores = [scorer(apply_detector_rotation(subset, a, inverted)) for a in grid]
        coarse["inverted" if inverted else "direct"] = scores
        candidates += [(s, a, inverted) for s, a in zip(scores, grid, strict=True)]
    candidates.sort(key=lambda c: -c[0])
    refined = []
    start_step = math.radians(58.6 / config.nside) / 2
    for score, a, inverted in candidates[: config.seeds]:
        step = start_step
        while math.degrees(step) >= config.final_step_deg:
            trials = _axes_steps(step) @ a
            scores = [scorer(apply_detector_rotation(subset, t, inverted)) for t in trials]
            best = int(np.argmax(scores))
            if scores[best] > score:
                score, a = scores[best], trials[best]
            else:
                step /= 2
        refined.append((score, a, inverted))
        if log is not None:
            log(f"detector search: seed refined to score {score:.4f} (inverted {inverted})")
    score, a, inverted = max(refined, key=lambda c: c[0])
    return DetectorSearch(
        a.numpy(), inverted, score, coarse, scorer.evaluations, time.perf_counter() - began
    )
