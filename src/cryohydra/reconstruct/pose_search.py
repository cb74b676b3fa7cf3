"""Global pose search against the current map: projection matching on a grid of SO(3).

For image ``i`` (transform ``X_i`` with its shift ``t_i`` undone, CTF ``C_i``) and a grid
rotation ``R_g`` with central slice ``P_g = P(R_g) V``, the squared error summed over the
frequencies ``k`` compared is, up to a term that does not depend on ``g``,

    e(i, g) = sum_k C_ik^2 |P_gk|^2  -  2 Re sum_k C_ik P_gk conj(X_ik)

so all ``B x G`` errors are two real matrix products, ``(C^2) |P|^2^T`` and
``(C X) . P`` (``G`` in the thousands costs seconds at low resolution on a CPU).

Alternating a search with a known-pose reconstruction from the poses found
(:func:`~cryohydra.reconstruct.backproject.wiener_maps`) is iterative projection matching;
cryohydra runs a few rounds of it at the switch, from the map and poses of the amortized
stage, which the encoder alone leaves tens of degrees off on hard (elongated,
pseudo-symmetric) molecules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cryohydra.geometry.sampling import so3_grid
from cryohydra.physics.image_formation import CTFBatch
from cryohydra.physics.projector import SliceGrid
from cryohydra.physics.shifts import phase_ramp
from cryohydra.reconstruct.backproject import Accumulator, wiener_maps
from cryohydra.reconstruct.batches import ParticleBatches
from cryohydra.reconstruct.distributed import Context
from cryohydra.reconstruct.volume import HartleyVolume

__all__ = [
    "SearchResult",
    "best_grid_poses",
    "grid_errors",
    "known_pose_map",
    "projection_matching",
]


def grid_errors(
    slices: torch.Tensor, spectra: torch.Tensor, ctf: torch.Tensor | None
) -> torch.Tensor:
    """Squared errors ``(B, G)``, up to a per-image constant, of ``B`` images against ``G``
    central slices.

    Args:
        slices: ``(G, P)`` complex slices of the volume at the compared frequencies.
        spectra: ``(B, P)`` complex image transforms with their shifts undone.
        ctf: ``(B, P)`` real CTF values, or None.
    """
    power = slices.real**2 + slices.imag**2
    if ctf is None:
        ctf = torch.ones_like(spectra.real)
    model = (ctf**2) @ power.T
    cross = (ctf * spectra.real) @ slices.real.T + (ctf * spectra.imag) @ slices.imag.T
    return model - 2 * cross


def best_grid_poses(
    slices: torch.Tensor,
    spectra: torch.Tensor,
    ctf: torch.Tensor | None,
    chunk: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``(B,)`` of the best of ``G`` slices for each image, and its error ``(B,)``
    (same constant as :func:`grid_errors`), the grid taken ``chunk`` slices at a time."""
    best_error = torch.full(spectra.shape[:1], torch.inf, device=spectra.device)
    best_index = torch.zeros(spectra.shape[:1], dtype=torch.int64, device=spectra.device)
    for start in range(0, slices.shape[0], chunk):
        errors = grid_errors(slices[start : start + chunk], spectra, ctf)
        value, index = errors.min(dim=1)
        better = value < best_error
        best_error = torch.where(better, value, best_error)
        best_index = torch.where(better, index + start, best_index)
    return best_index, best_error


@dataclass
class SearchResult:
    """Rotations ``(N, 3, 3)`` found, the fraction of images that changed grid rotation in
    each round, and the seconds taken."""

    rotations: torch.Tensor
    changed: list[float]
    seconds: float


def _slices(volume: HartleyVolume, rotations: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """``(G, P)`` central slices of the volume for ``G`` rotations, 4096 at a time."""
    hartley = volume.hartley()
    chunks = torch.split(rotations, 4096)
    return torch.cat([volume.slices(chunk, grid, hartley) for chunk in chunks])


def _reconstruction_radius(grid: SliceGrid) -> float:
    """Radius (Fourier pixels) of the points backprojected: a little beyond those compared."""
    return float(torch.linalg.vector_norm(grid.coords[:, :2], dim=-1).max()) + 2


def _add_to_halves(
    halves: list[Accumulator],
    batch,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    data: ParticleBatches,
) -> None:
    """Backproject a batch into two half-sets (even and odd rows), with the CTF."""
    ctf_params = data.particles.ctf
    for parity, accumulator in enumerate(halves):
        members = (batch.rows % 2 == parity).nonzero()[:, 0]
        rows = batch.rows[members].cpu().numpy()
        ctf = None if ctf_params is None else CTFBatch.from_params(ctf_params, rows, data.device)
        accumulator.add(
            batch.images[members],
            rotations[members],
            shifts_a[members],
            ctf,
            data.pixel_size_a,
        )


def _sum_over_ranks(halves: list[Accumulator], context: Context) -> None:
    for accumulator in halves:
        context.sum(accumulator.numerator_sum)
        context.sum(accumulator.weight_sum)
        accumulator.count = int(context.sum_float(accumulator.count))


@torch.no_grad()
def known_pose_map(
    data: ParticleBatches,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor,
    resolution_a: float,
    batch_size: int = 512,
    context: Context | None = None,
) -> torch.Tensor:
    """The Wiener-filtered map ``(L, L, L)`` of ``data`` at its working box from the poses
    ``(N, 3, 3)``, ``(N, 2)`` Å, backprojected up to ``resolution_a`` (the reconstruction of
    one round of :func:`projection_matching`; sums added over the ranks of a torchrun run)."""
    context = context or Context()
    device = shifts_a.device
    box = data.working_box
    grid = data.grid_at(resolution_a)
    radius = _reconstruction_radius(grid)
    halves = [Accumulator.zeros(box, device, radius) for _ in range(2)]
    n = len(data)
    for start in range(0, n, batch_size):
        batch = data.load(np.arange(start, min(n, start + batch_size)), grid)
        rows = batch.rows
        _add_to_halves(halves, batch, rotations[rows], shifts_a[rows], data)
    _sum_over_ranks(halves, context)
    return wiener_maps(*halves)[0].to(device)


@torch.no_grad()
def projection_matching(
    volume: HartleyVolume,
    data: ParticleBatches,
    shifts_a: torch.Tensor,
    resolution_a: float,
    nside: int,
    rounds: int,
    converged: float,
    batch_size: int = 512,
    context: Context | None = None,
) -> SearchResult:
    """Iterative projection matching at ``resolution_a``: each round finds every image's best
    rotation on the grid ``so3_grid(nside)`` (its shift held at ``shifts_a``), then replaces
    ``volume`` by the Wiener-filtered reconstruction from those poses (two halves, odd and even
    rows, for the filter). Stops after ``rounds`` or once at most ``converged`` of the images
    changed rotation. In a torchrun run (``context``) each rank searches its own particles
    (``data`` is its shard) and the reconstruction's sums are added over the ranks.
    """
    context = context or Context()
    start_time = time.perf_counter()
    device = shifts_a.device
    rotations = so3_grid(nside).to(device, torch.float32)
    grid = data.grid_at(resolution_a)
    box = data.working_box
    radius = _reconstruction_radius(grid)
    n = len(data)
    index = torch.full((n,), -1, dtype=torch.int64, device=device)
    changed: list[float] = []
    for _ in range(rounds):
        slices = _slices(volume, rotations, grid)
        found = torch.empty_like(index)
        halves = [Accumulator.zeros(box, device, radius) for _ in range(2)]
        for start in range(0, n, batch_size):
            batch = data.load(np.arange(start, min(n, start + batch_size)), grid)
            shifts = shifts_a[batch.rows]
            spectra = batch.spectra * phase_ramp(batch.frequencies_a, shifts).conj()
            best, _ = best_grid_poses(slices, spectra, batch.ctf)
            found[batch.rows] = best
            _add_to_halves(halves, batch, rotations[best], shifts, data)
        _sum_over_ranks(halves, context)
        n_changed = context.sum_float(float((found != index).sum()))
        changed.append(n_changed / context.sum_float(float(n)))
        index = found
        volume.load_map(wiener_maps(*halves)[0].to(device))
        if changed[-1] <= converged:
            break
    return SearchResult(rotations[index], changed, time.perf_counter() - start_time)
