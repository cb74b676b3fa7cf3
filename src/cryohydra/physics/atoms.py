"""Density maps from atomic models (read by :func:`cryohydra.io.structure.read_atomic_model`).

Each atom contributes its electron scattering factor, the five-Gaussian fit of International
Tables Vol. C Table 4.3.2.2 (``gemmi.Element.c4322``):
``f(k) = sum_i a_i exp(-(b_i + B) |k|^2 / 4)`` with ``|k|`` in 1/Å, i.e. in real space
``rho(r) = sum_i a_i (4 pi / b_i')^(3/2) exp(-4 pi^2 r^2 / b_i')``, ``b_i' = b_i + B``.
Its projection along z is the same sum with ``(4 pi / b_i')^1`` in 2D, which is what the
handedness test compares the Fourier-slice projection with.

Atoms are splatted, blurred by a known Gaussian, on a grid ``oversampling`` times finer; the
result is Fourier-cropped to the requested box and the blur divided out there, so the map is
the band-limited potential with little aliasing even for sharp atoms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.fft import fftn, fftshift, ifftn, ifftshift

from cryohydra.physics.fourier import frequency_axis

__all__ = ["AtomicModel", "density_map", "projected_density"]

# Gaussians are cut where they fall below this fraction of their peak.
_CUTOFF = 1e-4
_ATOMS_PER_CHUNK = 256
# Width (in fine pixels) of the blur under which atoms are splatted, undone afterwards.
_SPLAT_SIGMA_FINE_PX = 0.7


@dataclass(frozen=True)
class AtomicModel:
    """Atoms of one model: positions ``(N, 3)`` Å as ``(x, y, z)`` and scattering factors."""

    coords_a: np.ndarray
    coef_a: np.ndarray
    coef_b: np.ndarray
    center_of_mass_a: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.coords_a)


def _splat_gaussians(
    positions_px: torch.Tensor,
    coef_a: torch.Tensor,
    coef_b_px2: torch.Tensor,
    box_size: int,
    ndim: int,
) -> torch.Tensor:
    """Sum of isotropic Gaussians on a ``box_size^ndim`` grid (origin at index ``L // 2``).

    ``positions_px`` ``(N, ndim)`` as ``(x, y[, z])`` in pixels from the origin; each atom
    contributes ``sum_i a_i (4 pi / b_i)^(ndim/2) exp(-4 pi^2 r^2 / b_i)`` with ``b_i`` in px^2
    (so values are per px^ndim). Returns ``(z, y, x)`` or ``(y, x)``.
    """
    device = positions_px.device
    radius = math.ceil(math.sqrt(float(coef_b_px2.max()) * math.log(1 / _CUTOFF)) / (2 * math.pi))
    steps = torch.arange(-radius, radius + 1, device=device)
    offsets = torch.stack(torch.meshgrid(*([steps] * ndim), indexing="ij"), dim=-1).reshape(
        -1, ndim
    )
    grid = torch.zeros(box_size**ndim, dtype=torch.float64, device=device)
    strides = torch.tensor([box_size**d for d in range(ndim)], device=device)  # x, y, z
    prefactor = coef_a * (4 * math.pi / coef_b_px2) ** (ndim / 2)
    for start in range(0, len(positions_px), _ATOMS_PER_CHUNK):
        pos = positions_px[start : start + _ATOMS_PER_CHUNK] + box_size // 2
        nearest = torch.round(pos).long()
        voxels = nearest[:, None, :] + offsets[None]  # (n, V, ndim)
        r2 = ((voxels - pos[:, None, :]) ** 2).sum(-1)  # (n, V)
        b = coef_b_px2[start : start + _ATOMS_PER_CHUNK, None, :]
        values = (
            prefactor[start : start + _ATOMS_PER_CHUNK, None, :]
            * torch.exp(-4 * math.pi**2 * r2[..., None] / b)
        ).sum(-1)
        inside = ((voxels >= 0) & (voxels < box_size)).all(-1)
        flat = (voxels * strides).sum(-1)
        grid.index_add_(0, flat[inside], values[inside])
    return grid.reshape((box_size,) * ndim)


def _positions_px(
    model: AtomicModel, rotation: np.ndarray | None, pixel_size_a: float
) -> torch.Tensor:
    centred = model.coords_a - model.center_of_mass_a
    if rotation is not None:
        centred = centred @ np.asarray(rotation, dtype=np.float64).T  # x -> R @ x
    return torch.from_numpy(centred / pixel_size_a)


def _render(
    model: AtomicModel,
    box_size: int,
    pixel_size_a: float,
    bfactor_a2: float,
    oversampling: int,
    rotation: np.ndarray | None,
    ndim: int,
    device,
) -> torch.Tensor:
    fine_pixel = pixel_size_a / oversampling
    fine_box = box_size * oversampling
    # Sharp atoms point-sampled on a grid alias. Splat them blurred by a known Gaussian wide
    # enough to be well sampled on the fine grid, keep the coarse band, then undo that blur
    # (and apply the requested B-factor) exactly in Fourier space.
    extra_b_a2 = 8 * math.pi**2 * (_SPLAT_SIGMA_FINE_PX * fine_pixel) ** 2
    positions = _positions_px(model, rotation, fine_pixel)[:, :ndim].to(device)
    coef_a = torch.from_numpy(model.coef_a).to(device)
    coef_b = torch.from_numpy(model.coef_b + extra_b_a2).to(device) / fine_pixel**2
    fine = _splat_gaussians(positions, coef_a, coef_b, fine_box, ndim) / fine_pixel**ndim
    dims = tuple(range(-ndim, 0))
    start = fine_box // 2 - box_size // 2
    window = (slice(start, start + box_size),) * ndim
    spectrum = fftshift(fftn(ifftshift(fine, dim=dims), dim=dims), dim=dims)[window]
    k = frequency_axis(box_size, pixel_size_a, device=device, dtype=torch.float64)
    k2 = sum(axis**2 for axis in torch.meshgrid(*([k] * ndim), indexing="ij"))
    spectrum = spectrum * torch.exp(-(bfactor_a2 - extra_b_a2) * k2 / 4)
    image = fftshift(ifftn(ifftshift(spectrum, dim=dims), dim=dims), dim=dims).real
    return (image * (box_size / fine_box) ** ndim).to(torch.float32)


def density_map(
    model: AtomicModel,
    box_size: int,
    pixel_size_a: float,
    bfactor_a2: float = 0.0,
    oversampling: int = 2,
    device=None,
) -> torch.Tensor:
    """``(L, L, L)`` ``(z, y, x)`` float32 density, the centre of mass at index ``L // 2``.

    Values are the electron scattering potential per Å^3 (arbitrary overall scale). Atoms
    outside the box are dropped; ``bfactor_a2`` blurs all atoms alike.
    """
    return _render(model, box_size, pixel_size_a, bfactor_a2, oversampling, None, 3, device)


def projected_density(
    model: AtomicModel,
    rotation: np.ndarray,
    box_size: int,
    pixel_size_a: float,
    bfactor_a2: float = 0.0,
    oversampling: int = 2,
    device=None,
) -> torch.Tensor:
    """Real-space projection ``(L, L)`` ``(y, x)``: atoms moved by ``x -> R @ x`` about the
    centre of mass, each Gaussian integrated along z (per Å^2).

    This is independent of the Fourier machinery, for checking handedness and rotations.
    """
    return _render(model, box_size, pixel_size_a, bfactor_a2, oversampling, rotation, 2, device)
