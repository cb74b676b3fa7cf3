"""The explicit volume of ab-initio reconstruction, stored in Hartley space.

Each Hartley coefficient is ``h(k) = m(k) exp(e(k))``: a mantissa ``m`` and an exponent ``e``,
both learned. The exponent starts at the log of the data's radial amplitude, so the mantissa
of every frequency lives on the same scale (about 1) although the map's spectrum spans
several decades; with Adam, a step of the mantissa is then a *relative* change of the
coefficient at every frequency.

A real Hartley volume is the transform of a real map, so the Fourier coefficients
``F(k) = (h(k) + h(-k)) / 2 - i (h(k) - h(-k)) / 2`` are Hermitian by construction. A slice is
taken in Hartley space (the Fourier-slice theorem holds for it, the transform being linear and
pointwise) at the grid's points and at their mirrors ``-k``, then turned into Fourier values.
Coefficients outside the sphere of radius ``L / 2`` are held at zero.

With a point group imposed (``symmetry``, rotations ``(G, 3, 3)``), the coefficients used
everywhere are those of the symmetrised volume ``mean_g h(g^T k)`` (trilinear at the rotated
grid points; the transform of ``V(g x)`` is ``h(g k)``): the learned ``m`` and ``e`` are
unconstrained and every slice, map and gradient is that of a symmetric molecule.

With a real-space ``mask`` (e.g. a soft sphere a little larger than the particle), the same
holds for the masked volume: the coefficients used are ``H[mask . H^-1[h]]`` (two 3D
transforms per use), so nothing outside the mask (solvent noise, a neighbour's density) can
explain the images.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cryohydra.physics.fourier import (
    hartley3,
    hartley_to_fourier,
    ihartley3,
    index_grid_3d,
    radius_grid_3d,
    shell_mean,
)
from cryohydra.physics.projector import (
    SliceGrid,
    gather_trilinear,
    project,
    trilinear_corners,
)

__all__ = ["HartleyVolume", "radial_profile"]

# Up to this many rotated points (G L^3) the trilinear corners of the symmetrisation are kept
# (96 bytes a point, 384 MiB at the cap: D2 at 64 px is kept, I at 64 px or C2 at 128 px is
# recomputed for every use, about 4x slower).
_MAX_CACHED_POINTS = 4 * 2**20


def radial_profile(values: torch.Tensor, radius_px: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Mean of ``values`` over shells ``round(radius_px)`` = 0 .. ``n_shells - 1``."""
    return shell_mean(values, torch.round(radius_px).long(), n_shells)


class HartleyVolume(nn.Module):
    """An ``(L, L, L)`` Hartley volume ``m * exp(e)`` with a spherical support in frequency.

    Args:
        box_size: ``L`` (even).
        amplitude: ``(L // 2 + 1,)`` radial amplitude of the initial volume per Fourier shell
            (pixels); the exponent starts at its log.
        init_scale: standard deviation of the random initial mantissa.
        generator: seeds the random mantissa.
        symmetry: ``(G, 3, 3)`` rotations of a point group to impose (``None``: none).
        mask: ``(L, L, L)`` real-space weights in ``[0, 1]`` applied to the volume (``None``:
            none), e.g. :func:`~cryohydra.physics.masks.soft_spherical_mask`.
    """

    def __init__(
        self,
        box_size: int,
        amplitude: torch.Tensor | None = None,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
        symmetry: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if box_size % 2:
            raise ValueError(f"box size must be even, got {box_size}")
        self.box_size = box_size
        radius = radius_grid_3d(box_size, dtype=torch.float32)
        self.register_buffer("support", (radius <= box_size // 2).to(torch.float32))
        if amplitude is None:
            amplitude = torch.ones(box_size // 2 + 1)
        shells = torch.round(radius).long().clamp(max=len(amplitude) - 1)
        exponent = torch.log(amplitude.to(torch.float32).clamp(min=1e-12))[shells]
        mantissa = init_scale * torch.randn(box_size, box_size, box_size, generator=generator)
        self.mantissa = nn.Parameter(mantissa)
        self.exponent = nn.Parameter(exponent.contiguous())
        # Not saved: the run's settings name the group, and a checkpoint stays loadable.
        self.register_buffer("operators", None, persistent=False)
        self._corners: tuple[torch.Tensor, torch.Tensor] | None = None  # of g^T k, cached
        self.impose(symmetry)
        self.register_buffer("mask", None, persistent=False)  # like the group: from settings
        self.set_mask(mask)

    def impose(self, symmetry: torch.Tensor | None) -> None:
        """Impose the point group ``(G, 3, 3)`` from now on (``None`` or one operator: none);
        the learned coefficients are kept, the ones used are their symmetrised version."""
        operators = None
        if symmetry is not None and len(symmetry) > 1:
            operators = torch.as_tensor(symmetry, dtype=torch.float32, device=self.support.device)
        self.operators = operators
        self._corners = None

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """Apply the real-space ``mask`` ``(L, L, L)`` from now on (``None``: none)."""
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.float32, device=self.support.device)
            if mask.shape != (self.box_size,) * 3:
                raise ValueError(
                    f"a mask for a {self.box_size} px volume must be {(self.box_size,) * 3}, "
                    f"got {tuple(mask.shape)}"
                )
        self.mask = mask

    @staticmethod
    def from_state_dict(state: dict) -> HartleyVolume:
        """A volume holding a saved ``state_dict`` (its size read from the state)."""
        volume = HartleyVolume(state["mantissa"].shape[-1])
        volume.load_state_dict(state)
        return volume

    def hartley(self) -> torch.Tensor:
        """``(L, L, L)`` Hartley coefficients ``m exp(e)``, zero outside the support (and
        symmetrised when a group is imposed, masked when a mask is set)."""
        coefficients = self._symmetrised(self.mantissa * torch.exp(self.exponent) * self.support)
        if self.mask is None:
            return coefficients
        return hartley3(ihartley3(coefficients) * self.mask) * self.support

    def _symmetrised(self, coefficients: torch.Tensor) -> torch.Tensor:
        if self.operators is None:
            return coefficients
        box = self.box_size
        points = index_grid_3d(box, device=coefficients.device).reshape(-1, 3)
        if len(self.operators) * box**3 > _MAX_CACHED_POINTS:  # corners too big to keep
            total = torch.zeros_like(coefficients.reshape(-1))
            for operator in self.operators:
                total = total + gather_trilinear(
                    coefficients, *trilinear_corners(points @ operator, box)
                )
            return (total / len(self.operators)).reshape(box, box, box) * self.support
        if self._corners is None or self._corners[0].device != coefficients.device:
            self._corners = trilinear_corners(points @ self.operators, box)  # rows: g^T k
        values = gather_trilinear(coefficients, *self._corners)  # (G, L^3)
        return values.mean(dim=0).reshape(box, box, box) * self.support

    def slices(
        self, rotations: torch.Tensor, grid: SliceGrid, hartley: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, P)`` complex Fourier values of the central slices for ``(B, 3, 3)`` poses.

        ``hartley`` may be given (e.g. computed once without gradient for the pose steps).
        """
        values = project(self.hartley() if hartley is None else hartley, rotations, grid)
        return hartley_to_fourier(values, values[:, grid.mirror])

    def forward(
        self, rotations: torch.Tensor, grid: SliceGrid, hartley: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`slices` (so that ``DistributedDataParallel`` can wrap the volume)."""
        return self.slices(rotations, grid, hartley)

    @torch.no_grad()
    def to_map(self) -> torch.Tensor:
        """The real-space map ``(L, L, L)`` float32 (inverse Hartley transform)."""
        return ihartley3(self.hartley().to(torch.float64)).to(torch.float32)

    @torch.no_grad()
    def load_map(self, volume: torch.Tensor) -> None:
        """Set the coefficients to those of a real-space map (keeping the exponent)."""
        target = hartley3(volume.to(torch.float64)).to(torch.float32) * self.support
        self.mantissa.copy_(target * torch.exp(-self.exponent))

    @staticmethod
    def amplitude_from_spectra(spectra: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
        """Radial amplitude ``(L // 2 + 1,)`` of images' transforms ``(B, P)`` on ``grid``:
        the root of their mean power per shell, a starting scale for the exponent."""
        box = grid.box_size
        radius = torch.linalg.vector_norm(grid.coords[:, :2], dim=-1)
        power = (spectra.abs() ** 2).mean(dim=0)
        profile = torch.sqrt(radial_profile(power, radius, box // 2 + 1))
        # Shells past the grid's radius have no samples: continue with the last one.
        last = int(math.floor(float(radius.max())))
        profile[last + 1 :] = profile[last]
        return profile.clamp(min=float(profile.max()) * 1e-6)
