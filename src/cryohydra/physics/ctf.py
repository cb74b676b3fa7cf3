"""Contrast transfer function, RELION / CTFFIND convention (``docs/CONVENTIONS.md``).

``gamma = pi lambda df s^2 - (pi/2) Cs lambda^3 s^4 + phase_shift + arcsin(w)`` and
``CTF = sin(gamma) exp(-B s^2 / 4)``, so ``CTF(0) = w > 0``: particles are bright on a dark
background in the stored images.
"""

from __future__ import annotations

import math

import torch

__all__ = ["electron_wavelength_a", "ctf_2d"]


def electron_wavelength_a(voltage_kv: torch.Tensor | float) -> torch.Tensor | float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    volts = voltage_kv * 1e3
    if isinstance(volts, torch.Tensor):
        return 12.2643247 / torch.sqrt(volts * (1 + 0.978466e-6 * volts))
    return 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))


def ctf_2d(
    frequencies_a: torch.Tensor,
    defocus_u_a: torch.Tensor,
    defocus_v_a: torch.Tensor,
    astigmatism_angle_rad: torch.Tensor,
    voltage_kv: torch.Tensor,
    cs_mm: torch.Tensor,
    amplitude_contrast: torch.Tensor,
    phase_shift_rad: torch.Tensor | None = None,
    bfactor_a2: torch.Tensor | None = None,
    batched_frequencies: bool = False,
) -> torch.Tensor:
    """CTF of ``B`` particles at 2D frequencies.

    Args:
        frequencies_a: ``(..., 2)`` ``(kx, ky)`` in 1/Å shared by all particles, or
            ``(B, ..., 2)`` per particle (different pixel sizes) with ``batched_frequencies``.
        defocus_u_a, defocus_v_a: ``(B,)`` defocus in Å (positive = underfocus).
        astigmatism_angle_rad: ``(B,)`` angle of the ``U`` axis from x.
        voltage_kv, cs_mm, amplitude_contrast: ``(B,)`` (or scalars).
        phase_shift_rad, bfactor_a2: ``(B,)``, default 0.
    Returns:
        ``(B, ...)`` real CTF values.
    """
    # Per-particle parameters get one trailing singleton per frequency dimension.
    extra = frequencies_a.ndim - (2 if batched_frequencies else 1)

    def per_particle(value, default=0.0):
        if value is None:
            value = default
        value = torch.as_tensor(value, dtype=frequencies_a.dtype, device=frequencies_a.device)
        return value.reshape(-1, *([1] * extra)) if value.ndim else value

    kx, ky = frequencies_a[..., 0], frequencies_a[..., 1]
    s2 = kx**2 + ky**2
    phi = torch.atan2(ky, kx)
    wavelength = electron_wavelength_a(per_particle(voltage_kv))
    angle = per_particle(astigmatism_angle_rad)
    du, dv = per_particle(defocus_u_a), per_particle(defocus_v_a)
    defocus = 0.5 * (du + dv + (du - dv) * torch.cos(2 * (phi - angle)))
    cs_a = per_particle(cs_mm) * 1e7
    w = per_particle(amplitude_contrast)
    gamma = (
        math.pi * wavelength * defocus * s2
        - 0.5 * math.pi * cs_a * wavelength**3 * s2**2
        + per_particle(phase_shift_rad)
        + torch.asin(w)
    )
    ctf = torch.sin(gamma)
    if bfactor_a2 is not None:
        ctf = ctf * torch.exp(-per_particle(bfactor_a2) * s2 / 4)
    return ctf
