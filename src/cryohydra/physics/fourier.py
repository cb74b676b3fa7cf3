"""Centred Fourier and Hartley transforms, frequency grids and Fourier cropping.

Conventions (``docs/CONVENTIONS.md``): ``F = fftshift(fftn(ifftshift(x)))`` so that DC sits
at index ``L // 2``; kernel ``exp(-2 pi i k.x)``; Hartley ``H = Re F - Im F``; the frequency of
index ``j`` is ``(j - L // 2) / (L * pixel_size_a)`` in 1/Å. Transforms act on the last two
(2D) or three (3D) dimensions and are batched over the others.
"""

from __future__ import annotations

import torch

__all__ = [
    "fft2_centered",
    "ifft2_centered",
    "fft3_centered",
    "ifft3_centered",
    "padded_fft3",
    "zero_pad",
    "hartley2",
    "ihartley2",
    "hartley3",
    "ihartley3",
    "fourier_to_hartley",
    "hartley_to_fourier",
    "frequency_axis",
    "frequency_grid_2d",
    "frequency_grid_3d",
    "index_grid_3d",
    "radius_grid_3d",
    "fourier_crop",
    "fourier_crop_2d",
    "shell_mean",
]

_DIMS2 = (-2, -1)
_DIMS3 = (-3, -2, -1)


def _fft_centered(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=dims)
    return torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)


def _ifft_centered(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=dims)
    return torch.fft.fftshift(torch.fft.ifftn(x, dim=dims), dim=dims)


def fft2_centered(images: torch.Tensor) -> torch.Tensor:
    """``(..., L, L)`` real or complex -> centred 2D DFT ``(..., L, L)`` complex."""
    return _fft_centered(images, _DIMS2)


def ifft2_centered(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_centered` (complex output; take ``.real`` for real images)."""
    return _ifft_centered(spectrum, _DIMS2)


def fft3_centered(volume: torch.Tensor) -> torch.Tensor:
    """``(..., L, L, L)`` -> centred 3D DFT ``(..., L, L, L)`` complex."""
    return _fft_centered(volume, _DIMS3)


def ifft3_centered(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft3_centered`."""
    return _ifft_centered(spectrum, _DIMS3)


def zero_pad(signal: torch.Tensor, new_box: int, ndim: int) -> torch.Tensor:
    """Zero-pad the last ``ndim`` axes of ``signal`` from ``L`` to ``new_box``, keeping index
    ``L // 2`` on ``new_box // 2`` (the origin stays the origin)."""
    box = signal.shape[-1]
    start = new_box // 2 - box // 2
    padded = signal.new_zeros(*signal.shape[:-ndim], *((new_box,) * ndim))
    padded[(Ellipsis,) + (slice(start, start + box),) * ndim] = signal
    return padded


def padded_fft3(volume: torch.Tensor, oversampling: int = 2) -> torch.Tensor:
    """Centred 3D DFT of a real ``(L, L, L)`` volume zero-padded to ``s L`` on every side.

    Its samples at ``s k`` are the plain transform at ``k``; in between they interpolate the
    continuous transform, so trilinear slicing of it is accurate (RELION pads by 2 for this).
    """
    if oversampling == 1:
        return fft3_centered(volume)
    return fft3_centered(zero_pad(volume, oversampling * volume.shape[-1], ndim=3))


def fourier_to_hartley(spectrum: torch.Tensor) -> torch.Tensor:
    """``H = Re F - Im F`` (real)."""
    return spectrum.real - spectrum.imag


def hartley_to_fourier(hartley: torch.Tensor, hartley_flipped: torch.Tensor) -> torch.Tensor:
    """Recover ``F(k)`` from ``H(k)`` and ``H(-k)`` (the transform of a real signal).

    ``Re F = (H(k) + H(-k)) / 2``, ``Im F = (H(-k) - H(k)) / 2``.
    """
    return torch.complex(0.5 * (hartley + hartley_flipped), 0.5 * (hartley_flipped - hartley))


def hartley2(images: torch.Tensor) -> torch.Tensor:
    """Centred 2D Hartley transform of real ``(..., L, L)`` images."""
    return fourier_to_hartley(fft2_centered(images))


def ihartley2(hartley: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hartley2`: the Hartley transform is its own inverse up to ``1/N``."""
    n = hartley.shape[-1] * hartley.shape[-2]
    return hartley2(hartley) / n


def hartley3(volume: torch.Tensor) -> torch.Tensor:
    """Centred 3D Hartley transform of a real ``(..., L, L, L)`` volume."""
    return fourier_to_hartley(fft3_centered(volume))


def ihartley3(hartley: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hartley3`."""
    n = hartley.shape[-1] * hartley.shape[-2] * hartley.shape[-3]
    return hartley3(hartley) / n


def frequency_axis(
    box_size: int, pixel_size_a: float = 1.0, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Frequencies of the ``L`` indices of a centred axis, ``(L,)`` in 1/Å.

    With ``pixel_size_a = 1 / box_size`` the result is in pixel units (``j - L // 2``).
    """
    j = torch.arange(box_size, device=device, dtype=dtype)
    return (j - box_size // 2) / (box_size * pixel_size_a)


def frequency_grid_2d(
    box_size: int, pixel_size_a: float = 1.0, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``(L, L, 2)`` grid of ``(kx, ky)`` in 1/Å; ``kx`` varies along the last image axis."""
    k = frequency_axis(box_size, pixel_size_a, device=device, dtype=dtype)
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    return torch.stack([kx, ky], dim=-1)


def index_grid_3d(box_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(L, L, L, 3)`` ``(x, y, z)`` position in pixels of each voxel from index ``L // 2``
    (the volume's axes are ``(z, y, x)``); in Fourier space, the frequency in pixels."""
    axis = torch.arange(box_size, device=device, dtype=dtype) - box_size // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def radius_grid_3d(box_size: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """``(L, L, L)`` distance in pixels of each voxel from index ``L // 2`` (in Fourier space,
    ``|k|`` in pixels: round it for the shell)."""
    x, y, z = index_grid_3d(box_size, device, dtype).unbind(-1)
    return torch.sqrt(x**2 + y**2 + z**2)


def frequency_grid_3d(
    box_size: int, pixel_size_a: float = 1.0, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``(L, L, L, 3)`` ``(kx, ky, kz)`` in 1/Å of a centred 3D transform's voxels."""
    return index_grid_3d(box_size, device, dtype) / (box_size * pixel_size_a)


def fourier_crop(signal: torch.Tensor, new_box: int, ndim: int = 2) -> torch.Tensor:
    """Downsample real images (``ndim=2``) or volumes (``ndim=3``) by Fourier cropping.

    ``(..., L, ..., L)`` -> ``(..., new_box, ..., new_box)``. The field of view is kept (the
    pixel size grows by ``L / new_box``) and so are real-space values: a constant stays the
    same constant.
    """
    box = signal.shape[-1]
    if new_box > box or new_box % 2:
        raise ValueError(f"new box {new_box} must be even and at most the box {box}")
    if new_box == box:
        return signal
    dims = _DIMS2 if ndim == 2 else _DIMS3
    start = box // 2 - new_box // 2
    window = (Ellipsis,) + (slice(start, start + new_box),) * ndim
    spectrum = _fft_centered(signal, dims)[window]
    return _ifft_centered(spectrum, dims).real * (new_box / box) ** ndim


def fourier_crop_2d(images: torch.Tensor, new_box: int) -> torch.Tensor:
    """Downsample real images ``(..., L, L)`` to ``(..., new_box, new_box)``."""
    return fourier_crop(images, new_box, ndim=2)


def shell_mean(values: torch.Tensor, shells: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Mean of ``values`` per shell index ``shells`` (same shape, int64) for shells
    ``0 .. n_shells - 1``; points in higher shells are ignored, empty shells give 0."""
    values, shells = values.reshape(-1), shells.reshape(-1)
    inside = shells < n_shells
    sums = torch.zeros(n_shells, dtype=values.dtype, device=values.device)
    counts = torch.zeros(n_shells, dtype=values.dtype, device=values.device)
    sums.index_add_(0, shells[inside], values[inside])
    counts.index_add_(0, shells[inside], torch.ones_like(values[inside]))
    return sums / counts.clamp(min=1)
