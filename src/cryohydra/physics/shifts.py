"""In-plane shifts as Fourier phase ramps (sub-pixel, in Å).

RELION 3.1 convention: the observed image is ``I(x) = P(x + t)``, so
``I^(k) = P^(k) exp(+2 pi i k.t)``; translating the observed image by ``+t`` centres it.
"""

from __future__ import annotations

import math

import torch

from cryohydra.physics.fourier import fft2_centered, frequency_grid_2d, ifft2_centered

__all__ = ["phase_ramp", "apply_shift", "shift_images"]


def phase_ramp(
    frequencies_a: torch.Tensor, shifts_a: torch.Tensor, batched_frequencies: bool = False
) -> torch.Tensor:
    """``exp(+2 pi i k.t)`` for ``(..., 2)`` frequencies (1/Å) and ``(B, 2)`` shifts (Å).

    Returns ``(B, ...)`` complex. With ``batched_frequencies`` the frequencies are
    ``(B, ..., 2)``, one set per particle.
    """
    extra = frequencies_a.ndim - (2 if batched_frequencies else 1)
    view = shifts_a.to(frequencies_a.dtype).reshape(shifts_a.shape[0], *([1] * extra), 2)
    phase = 2 * math.pi * (frequencies_a * view).sum(dim=-1)
    return torch.polar(torch.ones_like(phase), phase)


def apply_shift(
    spectrum: torch.Tensor,
    frequencies_a: torch.Tensor,
    shifts_a: torch.Tensor,
    batched_frequencies: bool = False,
) -> torch.Tensor:
    """Shift centred Fourier values ``(B, ...)`` by ``t`` (``(B, 2)`` Å).

    ``I^ = P^ exp(+2 pi i k.t)``.
    """
    return spectrum * phase_ramp(frequencies_a, shifts_a, batched_frequencies)


def shift_images(images: torch.Tensor, shifts_a: torch.Tensor, pixel_size_a: float) -> torch.Tensor:
    """Real images ``(B, L, L)`` -> ``I(x) = P(x + t)`` for shifts ``t`` ``(B, 2)`` in Å."""
    freqs = frequency_grid_2d(
        images.shape[-1], pixel_size_a, device=images.device, dtype=images.dtype
    )
    return ifft2_centered(apply_shift(fft2_centered(images), freqs, shifts_a)).real
