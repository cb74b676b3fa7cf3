"""Known-pose reconstruction: Fourier-space backprojection with CTF weighting.

For particle ``i`` with image transform ``X_i``, pose ``(R_i, t_i)`` and CTF ``C_i``, the
image-formation model is ``X_i = C_i P(R_i) V exp(+2 pi i k.t_i) + noise``. The estimate is

    V^ = sum_i P^T(R_i) [C_i exp(-2 pi i k.t_i) X_i]  /  (sum_i P^T(R_i) C_i^2  +  1 / tau^2)

accumulated slice by slice with trilinear gridding (the exact adjoint
:func:`cryohydra.physics.projector.backproject`), so memory does not depend on the number of
particles. As in RELION, the images are zero-padded twice before their transform and the
volume's grid is padded twice too, so the central planes are sampled as finely as the grid
they are spread into (backprojecting the unpadded image's frequencies alone leaves the voxels
between them to be interpolated from samples a voxel away, which loses signal).

The Wiener term ``1 / tau^2(k) = <W>_shell(k) / SSNR(k)`` is RELION's: the
spectral signal-to-noise ratio comes from the FSC of two half-sets accumulated in the same
pass (``SSNR = FSC / (1 - FSC)`` for a half, twice that for the whole), so no noise level has
to be known and the result does not depend on the images' scale. After the division the
real-space map is divided by ``sinc^2`` of the trilinear kernel (gridding correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from cryohydra.io.particles import ParticleSet, random_half_split
from cryohydra.physics.fourier import fft2_centered, ifft3_centered, shell_mean, zero_pad
from cryohydra.physics.image_formation import CTFBatch
from cryohydra.physics.projector import (
    SliceGrid,
    backproject,
    gridding_correction,
    image_to_slice,
)
from cryohydra.physics.shifts import phase_ramp

__all__ = ["Accumulator", "Reconstruction", "reconstruct_known_poses", "wiener_maps"]

# FSC is clipped into (0, 1) before it becomes an SSNR.
_FSC_FLOOR, _FSC_CEIL = 1e-3, 0.999
# Regulariser for plain inversions (half-set estimates used only for the FSC).
_EPSILON = 1e-6


@dataclass
class Accumulator:
    """Running sums of one set of particles on the padded Fourier grid.

    ``numerator``: ``(N, N, N)`` complex, ``sum P^T [C exp(-2 pi i k.t) X]``;
    ``weights``: ``(N, N, N)`` real, ``sum P^T C^2``; ``N = oversampling * L``.
    """

    numerator: torch.Tensor
    weights: torch.Tensor
    count: int = 0

    @staticmethod
    def zeros(padded_box: int, device=None) -> Accumulator:
        shape = (padded_box,) * 3
        return Accumulator(
            torch.zeros(shape, dtype=torch.complex128, device=device),
            torch.zeros(shape, dtype=torch.float64, device=device),
        )

    def add(
        self,
        images: torch.Tensor,
        rotations: torch.Tensor,
        shifts_a: torch.Tensor,
        ctf: CTFBatch | None,
        grid: SliceGrid,
        pixel_size_a: float,
    ) -> None:
        """Add real images ``(B, L, L)`` with poses ``(B, 3, 3)``, shifts ``(B, 2)`` Å.

        ``grid`` is the slice grid of the padded box ``N`` (the accumulator's size).
        """
        padded = self.weights.shape[-1]
        images = zero_pad(images, padded, ndim=2)
        values = image_to_slice(fft2_centered(images), grid).to(torch.complex128)
        frequencies = grid.frequencies_a(pixel_size_a).double()
        values = values * phase_ramp(frequencies, shifts_a.double()).conj()
        if ctf is None:
            ctf_values = torch.ones_like(values.real)
        else:
            ctf_values = ctf.evaluate(frequencies.float()).double()
        rotations = rotations.double()
        self.numerator += backproject(values * ctf_values, rotations, grid, padded)
        self.weights += backproject(ctf_values**2, rotations, grid, padded)
        self.count += len(images)

    def merged(self, other: Accumulator) -> Accumulator:
        return Accumulator(
            self.numerator + other.numerator, self.weights + other.weights, self.count + other.count
        )


@dataclass
class Reconstruction:
    """Maps ``(L, L, L)`` float32 and the half-set FSC used for the Wiener filter."""

    full: torch.Tensor
    half_a: torch.Tensor
    half_b: torch.Tensor
    shell_fsc: np.ndarray  # (L // 2 + 1,) FSC of the half-sets per Fourier shell
    pixel_size_a: float
    n_particles: int


def _shell_index(padded_box: int, oversampling: int, device) -> torch.Tensor:
    """Shell (in unpadded Fourier pixels) of every voxel of the padded grid."""
    k = torch.arange(padded_box, device=device, dtype=torch.float64) - padded_box // 2
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    radius = torch.sqrt(kx**2 + ky**2 + kz**2) / oversampling
    return torch.round(radius).long()


def _fourier_shell_correlation(
    a: torch.Tensor, b: torch.Tensor, shells: torch.Tensor, n_shells: int
) -> torch.Tensor:
    cross = shell_mean((a * b.conj()).real, shells, n_shells)
    power_a = shell_mean(a.abs() ** 2, shells, n_shells)
    power_b = shell_mean(b.abs() ** 2, shells, n_shells)
    return cross / torch.sqrt(power_a * power_b).clamp(min=1e-30)


def _to_real_space(spectrum: torch.Tensor, box_size: int) -> torch.Tensor:
    """Padded ``(N, N, N)`` transform -> ``(L, L, L)`` map, with the gridding correction."""
    padded_box = spectrum.shape[-1]
    volume = ifft3_centered(spectrum).real
    start = padded_box // 2 - box_size // 2
    volume = volume[start : start + box_size, start : start + box_size, start : start + box_size]
    volume = volume / gridding_correction(box_size, padded_box, volume.device, volume.dtype)
    # The padded transform sampled at s k is the plain one at k, so its inverse is the
    # zero-padded map itself: no rescaling.
    return volume.to(torch.float32)


def wiener_maps(
    half_a: Accumulator, half_b: Accumulator, box_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Full map and half maps ``(L, L, L)`` from two half-set accumulators, and the FSC."""
    padded_box = half_a.weights.shape[-1]
    oversampling = padded_box // box_size
    device = half_a.weights.device
    shells = _shell_index(padded_box, oversampling, device)
    n_shells = box_size // 2 + 1
    plain = [acc.numerator / (acc.weights + _EPSILON) for acc in (half_a, half_b)]
    fsc = _fourier_shell_correlation(plain[0], plain[1], shells, n_shells)
    ssnr_half = fsc.clamp(_FSC_FLOOR, _FSC_CEIL) / (1 - fsc.clamp(_FSC_FLOOR, _FSC_CEIL))
    outside = shells >= n_shells
    clipped = shells.clamp(max=n_shells - 1)

    def invert(acc: Accumulator, ssnr: torch.Tensor) -> torch.Tensor:
        tau_inverse = (shell_mean(acc.weights, shells, n_shells) / ssnr)[clipped]
        spectrum = acc.numerator / (acc.weights + tau_inverse + _EPSILON)
        spectrum[outside] = 0
        return _to_real_space(spectrum, box_size)

    full = invert(half_a.merged(half_b), 2 * ssnr_half)
    return full, invert(half_a, ssnr_half), invert(half_b, ssnr_half), fsc.cpu().numpy()


def reconstruct_known_poses(
    particles: ParticleSet,
    batch_size: int = 256,
    oversampling: int = 2,
    seed: int = 0,
    invert_contrast: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
) -> Reconstruction:
    """Reconstruct from the set's poses, shifts and CTF, streaming its images in batches.

    The particles are split at random (``seed``) into two half-sets for the Wiener filter and
    the gold-standard FSC, or as given by ``halves`` (two arrays of particle indices, e.g. the
    halves of an ab-initio run made on each half independently).
    """
    rotations, shifts = particles.require_poses()
    particles.check_images()
    pixel_sizes = np.unique(np.round(particles.pixel_size_a, 4))
    if len(pixel_sizes) != 1:
        raise ValueError(f"{particles.source}: particles have several pixel sizes {pixel_sizes}")
    pixel_size_a = float(particles.pixel_size_a[0])
    box_size = particles.box_size or particles.load_images([0]).shape[-1]
    grid = SliceGrid.create(oversampling * box_size, device=device)
    if halves is None:
        halves = random_half_split(len(particles), seed)
    accumulators = [Accumulator.zeros(oversampling * box_size, device) for _ in halves]
    sign = -1.0 if invert_contrast else 1.0
    bar = tqdm(total=len(particles), desc="backproject", unit="img", disable=not progress)
    for accumulator, members in zip(accumulators, halves, strict=True):
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            images = torch.from_numpy(particles.load_images(rows)).to(device) * sign
            ctf = None
            if particles.ctf is not None:
                ctf = CTFBatch.from_params(particles.ctf, rows, device)
            accumulator.add(
                images,
                torch.from_numpy(rotations[rows]).to(device),
                torch.from_numpy(shifts[rows]).to(device),
                ctf,
                grid,
                pixel_size_a,
            )
            bar.update(len(rows))
    bar.close()
    full, half_a, half_b, fsc = wiener_maps(*accumulators, box_size)
    return Reconstruction(full, half_a, half_b, fsc, pixel_size_a, len(particles))
