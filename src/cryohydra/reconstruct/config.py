"""Settings of ``cryohydra backproject`` (saved in ``OUTDIR/backproject.json``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BackprojectConfig"]


@dataclass(frozen=True)
class BackprojectConfig:
    """Known-pose reconstruction of a particle set.

    Attributes:
        half_maps: also write the half-maps and their gold-standard FSC.
        seed: seeds the random half-set split.
        batch_size: images read and inserted at a time.
        invert_contrast: the stack has dark particles.
        symmetry: point group imposed (C<n>, D<n>, T, O, I, I1-I4 in RELION's orientation):
            each image is inserted at every symmetry mate of its pose.
        whiten: whiten each optics group's images and CTFs by the noise spectrum of its
            background (``reconstruct --whiten``): groups then weigh in by their own
            signal-to-noise ratio at each frequency.
    """

    half_maps: bool = False
    seed: int = 0
    batch_size: int = 256
    invert_contrast: bool = False
    symmetry: str = "C1"
    whiten: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
