"""Settings of ``cryohydra fsc`` and ``cryohydra evaluate`` (saved in their JSON outputs)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvaluateConfig", "FSCConfig"]


@dataclass(frozen=True)
class FSCConfig:
    """FSC between two maps.

    Attributes:
        mask: None, ``"sphere"`` (a soft sphere) or the path of a mask map.
        mask_radius_a: the sphere's radius in Å (None: 0.4 of the box).
        mask_edge_a: its soft edge in Å (None: 3 pixels).
        align: align the second map onto the first (rotation, shift, hand) first.
        allow_mirror: with ``align``, also try the other hand.
        pixel_size_a: Å/px when the headers have none (None: from the headers).
    """

    mask: str | None = None
    mask_radius_a: float | None = None
    mask_edge_a: float | None = None
    align: bool = False
    allow_mirror: bool = True
    pixel_size_a: float | None = None


@dataclass(frozen=True)
class EvaluateConfig:
    """Pose errors of estimated poses against true ones.

    Attributes:
        symmetry: the point group (``C1``, ``C<n>``, ``D<n>``): errors are the smallest over
            its operators.
        per_particle: also list each particle's errors.
    """

    symmetry: str = "C1"
    per_particle: bool = False
