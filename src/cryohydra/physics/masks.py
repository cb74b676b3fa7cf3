"""Soft real-space masks (``docs/CONVENTIONS.md``: the origin at index ``L // 2``)."""

from __future__ import annotations

import math

import torch

from cryohydra.physics.fourier import radius_grid_3d

__all__ = ["soft_spherical_mask"]


def soft_spherical_mask(box_size: int, radius_px: float, edge_px: float) -> torch.Tensor:
    """Spherical mask ``(L, L, L)`` float32 centred at index ``L // 2``, values in ``[0, 1]``.

    1 up to ``radius_px``, then a raised-cosine edge ``(1 + cos(pi (r - radius) / edge)) / 2``
    falling to 0 at ``radius_px + edge_px`` (pixels); a hard sphere when ``edge_px == 0``.
    """
    if radius_px < 0 or edge_px < 0:
        raise ValueError("radius_px and edge_px must be non-negative")
    r = radius_grid_3d(box_size)
    if edge_px == 0:
        return (r <= radius_px).to(torch.float32)
    t = ((r - radius_px) / edge_px).clamp(0.0, 1.0)
    return (0.5 * (1.0 + torch.cos(math.pi * t))).to(torch.float32)
