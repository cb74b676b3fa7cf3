"""The image-formation model, in one place.

For a particle in pose ``(R, t)`` with contrast transfer function ``CTF``, the centred 2D
transform of its clean image is

    I^(k) = CTF(k) * V^(R^T (kx, ky, 0)) * exp(+2 pi i k.t)

(Fourier-slice theorem, then the microscope's CTF, then the in-plane shift; see
``shared/CONVENTIONS.md``). Everything here is batched over particles, differentiable with
respect to the volume, the rotations and the shifts, and runs on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from cryohydra.io.particles import CTFParams
from cryohydra.physics.ctf import ctf_2d
from cryohydra.physics.fourier import ifft2_centered, padded_fft3
from cryohydra.physics.projector import SliceGrid, gridding_correction, project, slice_to_image
from cryohydra.physics.shifts import apply_shift

__all__ = ["CTFBatch", "FourierVolume", "clean_image_spectra", "spectra_to_images"]


@dataclass(frozen=True)
class CTFBatch:
    """CTF parameters of a batch as ``(B,)`` tensors on the working device."""

    defocus_u_a: torch.Tensor
    defocus_v_a: torch.Tensor
    astigmatism_angle_rad: torch.Tensor
    voltage_kv: torch.Tensor
    cs_mm: torch.Tensor
    amplitude_contrast: torch.Tensor
    phase_shift_rad: torch.Tensor
    bfactor_a2: torch.Tensor

    @staticmethod
    def from_params(params: CTFParams, indices: np.ndarray | None = None, device=None) -> CTFBatch:
        subset = params if indices is None else params.subset(indices)
        return CTFBatch(
            **{
                f.name: torch.as_tensor(getattr(subset, f.name), dtype=torch.float32, device=device)
                for f in fields(CTFBatch)
            }
        )

    def evaluate(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` CTF at ``(P, 2)`` frequencies in 1/Å."""
        return ctf_2d(frequencies_a, **{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class FourierVolume:
    """A real ``(L, L, L)`` map's centred transform, zero-padded ``oversampling`` times.

    The padding makes trilinear slicing accurate (see :func:`padded_fft3`), and the map is
    divided first by the real-space attenuation of trilinear interpolation
    (:func:`gridding_correction`), so that slices are projections of the map itself.
    """

    spectrum: torch.Tensor
    box_size: int
    oversampling: int

    @staticmethod
    def from_map(volume: torch.Tensor, oversampling: int = 2) -> FourierVolume:
        box = volume.shape[-1]
        correction = gridding_correction(box, oversampling * box, volume.device, volume.dtype)
        return FourierVolume(padded_fft3(volume / correction, oversampling), box, oversampling)


def clean_image_spectra(
    volume: FourierVolume,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor | None,
    ctf: CTFBatch | None,
    grid: SliceGrid,
    pixel_size_a: float,
) -> torch.Tensor:
    """``(B, P)`` complex transforms of the clean images at the grid's frequencies.

    Args:
        volume: the map's padded transform.
        rotations: ``(B, 3, 3)`` poses ``R``.
        shifts_a: ``(B, 2)`` shifts ``t`` in Å, or None for centred particles.
        ctf: the batch's CTF, or None for no CTF.
        grid: frequencies of the ``L x L`` images.
        pixel_size_a: Å/px of the images.
    """
    values = project(volume.spectrum, rotations, grid)
    frequencies = grid.frequencies_a(pixel_size_a)
    if ctf is not None:
        values = values * ctf.evaluate(frequencies)
    if shifts_a is not None:
        values = apply_shift(values, frequencies, shifts_a)
    return values


def spectra_to_images(values: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """``(B, P)`` centred transforms -> ``(B, L, L)`` real images (zero beyond the grid)."""
    return ifft2_centered(slice_to_image(values, grid)).real
