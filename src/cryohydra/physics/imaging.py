"""The image-formation model, in one place: rotation -> central slice -> transfer function ->
shift, and its exact adjoint.

For a particle in pose ``(R, t)`` with transfer function ``T`` (the CTF, or the identity for
images without one), the centred 2D transform of its clean image is

    I^(k) = T(k) * V^(R^T (kx, ky, 0)) * exp(+2 pi i k.t)

(Fourier-slice theorem, then the microscope, then the in-plane shift; ``docs/CONVENTIONS.md``).
:class:`ImagingModel` holds the frequencies of an image grid and applies the chain or its
adjoint; the simulator, the loss of ab initio, the pose search, the known-pose
backprojection, the handedness search and the analyses all go through it. Everything is
batched over particles, differentiable with respect to the volume, the rotations and the
shifts, and runs on any device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import torch

from cryohydra.physics.ctf import ctf_2d
from cryohydra.physics.fourier import ifft2_centered, padded_fft3
from cryohydra.physics.projector import (
    SliceGrid,
    backproject,
    gridding_correction,
    project,
    slice_to_image,
)
from cryohydra.physics.shifts import phase_ramp

__all__ = [
    "CTF",
    "FourierVolume",
    "FrequencyPoints",
    "Identity",
    "ImagingModel",
    "TransferFunction",
    "spectra_to_images",
]


class TransferFunction(ABC):
    """What the microscope does to each image of a batch, as a real function of 2D frequency."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __call__(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` real values at ``(P, 2)`` frequencies in 1/Å."""

    @abstractmethod
    def subset(self, index: torch.Tensor | np.ndarray) -> TransferFunction:
        """The transfer functions of the images ``index`` of the batch."""


@dataclass(frozen=True)
class CTF(TransferFunction):
    """The contrast transfer function of ``B`` images: parameters as ``(B,)`` tensors
    (:func:`cryohydra.physics.ctf.ctf_2d`), times each image's amplitude ``scale``
    (RELION's ``rlnCtfScalefactor``; 1 when not given)."""

    defocus_u_a: torch.Tensor
    defocus_v_a: torch.Tensor
    astigmatism_angle_rad: torch.Tensor
    voltage_kv: torch.Tensor
    cs_mm: torch.Tensor
    amplitude_contrast: torch.Tensor
    phase_shift_rad: torch.Tensor
    bfactor_a2: torch.Tensor
    scale: torch.Tensor

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray], device=None) -> CTF:
        """From ``(B,)`` arrays named as the fields (e.g. ``CTFParams.as_dict()``); ``scale``
        may be left out (ones)."""
        n = len(arrays["defocus_u_a"])
        arrays = {"scale": np.ones(n), **arrays}
        return CTF(
            **{
                f.name: torch.as_tensor(arrays[f.name], dtype=torch.float32, device=device)
                for f in fields(CTF)
            }
        )

    def __len__(self) -> int:
        return len(self.defocus_u_a)

    def __call__(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        physics = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scale"}
        values = ctf_2d(frequencies_a, **physics)
        return values * self.scale.reshape(-1, *[1] * (values.ndim - 1))

    def subset(self, index: torch.Tensor | np.ndarray) -> CTF:
        return CTF(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Identity(TransferFunction):
    """No transfer function (images simulated or recorded without a CTF): ``T = 1``."""

    n_images: int

    def __len__(self) -> int:
        return self.n_images

    def __call__(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        shape = (self.n_images, frequencies_a.shape[-2])
        return torch.ones(shape, dtype=frequencies_a.dtype, device=frequencies_a.device)

    def subset(self, index: torch.Tensor | np.ndarray) -> Identity:
        return Identity(len(index))


class FrequencyPoints(Protocol):
    """Points of an image's Fourier grid: :class:`~cryohydra.physics.projector.SliceGrid`
    (the whole plane inside a radius) or the backprojection's Hermitian half-plane."""

    box_size: int
    coords: torch.Tensor  # (P, 3) (kx, ky, 0) in pixels

    def frequencies_a(self, pixel_size_a: float) -> torch.Tensor: ...


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


class ImagingModel:
    """The image-formation model at the points of an image grid.

    Args:
        points: the frequencies compared or written (a ``SliceGrid``, or any
            :class:`FrequencyPoints`).
        pixel_size_a: Å/px of the images.

    Shapes: ``B`` images, ``P`` points; a candidate axis ``M`` may follow ``B`` (``(B, M, P)``
    slices with ``(B, M, 2)`` shifts), the transfer function being the image's.
    """

    def __init__(self, points: FrequencyPoints, pixel_size_a: float) -> None:
        self.points = points
        self.pixel_size_a = pixel_size_a
        self.frequencies_a = points.frequencies_a(pixel_size_a)  # (P, 2) 1/Å

    def transfer_values(self, transfer: TransferFunction) -> torch.Tensor:
        """``(B, P)`` values of the batch's transfer function at the points."""
        return transfer(self.frequencies_a)

    def slices(self, volume: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` central slices ``V^(R^T k)`` of a Fourier or Hartley volume
        (:func:`cryohydra.physics.projector.project`)."""
        return project(volume, rotations, self.points)

    def _ramp(self, shifts_a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ramp = phase_ramp(self.frequencies_a, shifts_a.reshape(-1, 2))
        return ramp.reshape(like.shape)

    def modulate(
        self, slices: torch.Tensor, transfer: torch.Tensor, shifts_a: torch.Tensor | None
    ) -> torch.Tensor:
        """The microscope after the slice: ``T(k) S(k) exp(+2 pi i k.t)``.

        Args:
            slices: ``(B, P)`` or ``(B, M, P)`` complex central slices.
            transfer: ``(B, P)`` values of :meth:`transfer_values`.
            shifts_a: ``(B, 2)`` or ``(B, M, 2)`` shifts ``t`` in Å; None for centred particles.
        """
        values = slices * (transfer if slices.ndim == 2 else transfer[:, None, :])
        if shifts_a is not None:
            values = values * self._ramp(shifts_a, values)
        return values

    def unshift(self, spectra: torch.Tensor, shifts_a: torch.Tensor) -> torch.Tensor:
        """The adjoint of the shift: ``X(k) exp(-2 pi i k.t)`` (centres the particles);
        ``(B, P)`` spectra with ``(B, 2)`` shifts, or ``(B, M, P)`` with ``(B, M, 2)``."""
        return spectra * self._ramp(shifts_a, spectra).conj()

    def forward(
        self,
        volume: torch.Tensor,
        rotations: torch.Tensor,
        shifts_a: torch.Tensor | None,
        transfer: TransferFunction,
    ) -> torch.Tensor:
        """``(B, P)`` transforms of the clean images of ``(B, 3, 3)`` poses: slice, transfer,
        shift. ``volume``: a Fourier (or Hartley) volume's centred spectrum."""
        slices = self.slices(volume, rotations)
        return self.modulate(slices, self.transfer_values(transfer), shifts_a)

    def adjoint(
        self,
        spectra: torch.Tensor,
        rotations: torch.Tensor,
        shifts_a: torch.Tensor | None,
        transfer: TransferFunction,
        volume_size: int | None = None,
    ) -> torch.Tensor:
        """Exact adjoint of :meth:`forward`: ``sum_i P^T(R_i) [T_i exp(-2 pi i k.t_i) X_i]``,
        an ``(N, N, N)`` volume (``N = volume_size``, default the grid's ``L``)."""
        if shifts_a is not None:
            spectra = self.unshift(spectra, shifts_a)
        values = spectra * self.transfer_values(transfer)
        return backproject(values, rotations, self.points, volume_size)

    def images(
        self,
        volume: FourierVolume,
        rotations: torch.Tensor,
        shifts_a: torch.Tensor | None,
        transfer: TransferFunction,
    ) -> torch.Tensor:
        """``(B, P)`` transforms of clean images of a map (its padded transform)."""
        return self.forward(volume.spectrum, rotations, shifts_a, transfer)


def spectra_to_images(values: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """``(B, P)`` centred transforms -> ``(B, L, L)`` real images (zero beyond the grid)."""
    return ifft2_centered(slice_to_image(values, grid)).real
