"""A known map (``--reference-map``, a simulation's ground truth): the FSC of a
reconstruction against it, after aligning the two (a map's frame is free in ab initio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryohydra.io.errors import InputFileError
from cryohydra.io.mrc import read_map
from cryohydra.metrics.fsc import masked_fsc
from cryohydra.metrics.map_alignment import align_maps
from cryohydra.physics.fourier import fourier_crop

__all__ = ["ReferenceMap", "reference_fsc"]


class ReferenceMap:
    """A known map (``--reference-map``), for the FSC against it after alignment."""

    def __init__(self, path: Path) -> None:
        volume, voxel = read_map(path)
        if voxel is None:
            raise InputFileError(path, "has no voxel size in its header")
        self.path = path
        self.volume = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
        self.pixel_size_a = float(voxel)

    def at(self, box: int, pixel_size_a: float) -> torch.Tensor:
        """The map Fourier-cropped to ``box`` (the same field of view is required)."""
        fov, own_fov = box * pixel_size_a, self.volume.shape[-1] * self.pixel_size_a
        if abs(fov - own_fov) > 0.01 * own_fov:
            raise InputFileError(
                self.path,
                f"covers {own_fov:.1f} Å but the particles {fov:.1f} Å (box x pixel size)",
            )
        return fourier_crop(self.volume, box, ndim=3)

    def fsc_of(self, volume: torch.Tensor, pixel_size_a: float) -> dict:
        reference = self.at(volume.shape[-1], pixel_size_a)
        aligned = align_maps(volume, reference, pixel_size_a).aligned_map
        curve = masked_fsc(aligned, reference, pixel_size_a)
        return {"fsc_vs_reference_a_0.5": curve.resolution_a(0.5), "curve": curve}


def reference_fsc(volume: torch.Tensor, reference_map: Path, pixel_size_a: float) -> float:
    """Resolution (Å) at FSC 0.5 of ``volume`` against a known map, after aligning them."""
    return ReferenceMap(reference_map).fsc_of(volume, pixel_size_a)["fsc_vs_reference_a_0.5"]
