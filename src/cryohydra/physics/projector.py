"""Fourier-slice projection and its exact adjoint (backprojection).

By the Fourier-slice theorem the 2D transform of the projection along the beam of a volume
seen in pose ``R`` is the central slice ``P^(kx, ky) = V^(R^T (kx, ky, 0))``. The slice is
sampled with trilinear interpolation at the frequencies of a :class:`SliceGrid` (the points of
the image's Fourier grid inside a radius). Because ``H = Re F - Im F`` is linear and pointwise,
the same slice taken from a Hartley volume is the Hartley transform of the projection.

:func:`backproject` is the exact adjoint of :func:`project`: ``<P v, u> == <v, P^T u>``.
Both are batched over poses, differentiable (also with respect to the rotations), and run on
any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "SliceGrid",
    "project",
    "sample_volume",
    "trilinear_corners",
    "gather_trilinear",
    "backproject",
    "slice_to_image",
    "image_to_slice",
    "gridding_correction",
]


@dataclass(frozen=True)
class SliceGrid:
    """The frequencies of an ``L x L`` image at which slices are taken.

    Attributes:
        box_size: ``L``.
        mask: ``(L, L)`` bool, the points kept (``|k| <= radius`` in pixels).
        coords: ``(P, 3)`` float32 ``(kx, ky, 0)`` in pixel units (index minus ``L // 2``).
        flat_index: ``(P,)`` int64 index of each point in the flattened ``L * L`` image.
        mirror: ``(P,)`` int64, position in ``coords`` of the point at ``-k``.
    """

    box_size: int
    mask: torch.Tensor
    coords: torch.Tensor
    flat_index: torch.Tensor
    mirror: torch.Tensor

    @staticmethod
    def create(box_size: int, radius_px: float | None = None, device=None) -> SliceGrid:
        """Points of the ``L x L`` grid with ``|k| <= radius_px`` (default ``L // 2 - 1``).

        The radius is capped at ``L // 2 - 1`` so that every point and its mirror ``-k``
        lie on the grid, and trilinear neighbours stay inside the volume.
        """
        if box_size % 2:
            raise ValueError(f"box size must be even, got {box_size}")
        limit = box_size // 2 - 1
        radius = limit if radius_px is None else min(float(radius_px), limit)
        k = torch.arange(box_size, device=device, dtype=torch.float32) - box_size // 2
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        mask = kx**2 + ky**2 <= radius**2 + 1e-6
        flat_index = torch.nonzero(mask.reshape(-1)).squeeze(1)
        coords = torch.stack([kx[mask], ky[mask], torch.zeros_like(kx[mask])], dim=-1)
        # Position of -k: the mask is symmetric about the centre, so -k is in it.
        lookup = torch.full((box_size * box_size,), -1, dtype=torch.int64, device=device)
        lookup[flat_index] = torch.arange(len(flat_index), device=device)
        centre = box_size // 2
        mirror_flat = (centre - ky[mask].long()) * box_size + (centre - kx[mask].long())
        mirror = lookup[mirror_flat]
        return SliceGrid(box_size, mask, coords, flat_index, mirror)

    @property
    def n_points(self) -> int:
        return len(self.flat_index)

    def to(self, device) -> SliceGrid:
        return SliceGrid(
            self.box_size,
            self.mask.to(device),
            self.coords.to(device),
            self.flat_index.to(device),
            self.mirror.to(device),
        )

    def frequencies_a(self, pixel_size_a: float | torch.Tensor) -> torch.Tensor:
        """``(P, 2)`` ``(kx, ky)`` in 1/Å, or ``(B, P, 2)`` for a ``(B,)`` pixel-size tensor."""
        k = self.coords[:, :2] / self.box_size
        if isinstance(pixel_size_a, torch.Tensor) and pixel_size_a.ndim > 0:
            return k / pixel_size_a.to(k)[:, None, None]
        return k / pixel_size_a


def _trilinear(coords: torch.Tensor, box_size: int):
    """Corner indices ``(..., 8)`` into the flat volume and their weights ``(..., 8)``.

    ``coords`` ``(..., 3)`` are ``(x, y, z)`` frequencies in pixel units; the volume is
    ``(z, y, x)`` with the origin at index ``L // 2``. Positions are kept inside the volume;
    the lower corner is clamped to ``L - 2`` so a point on the last plane still has two
    corners (the upper one then takes the whole weight).
    """
    position = (coords + box_size // 2).clamp(0, box_size - 1)
    base = torch.floor(position).clamp(max=box_size - 2)
    frac = position - base
    base = base.long()
    flat_base = (base[..., 2] * box_size + base[..., 1]) * box_size + base[..., 0]
    steps = torch.tensor([0, 1], device=coords.device)
    offsets = (
        steps[:, None, None] * box_size**2 + steps[None, :, None] * box_size + steps[None, None, :]
    ).reshape(8)
    lower_upper = torch.stack([1 - frac, frac], dim=-1)  # (..., 3, 2): x, y, z
    weights = (
        lower_upper[..., 2, :, None, None]
        * lower_upper[..., 1, None, :, None]
        * lower_upper[..., 0, None, None, :]
    ).reshape(*frac.shape[:-1], 8)
    return flat_base[..., None] + offsets, weights


class _Gather(torch.autograd.Function):
    """``flat[indices]`` whose backward is ``index_add_``: deterministic on CPU (PyTorch's own
    backward of indexing, an accumulating ``index_put_``, is not when multi-threaded), so a
    run repeats bit for bit and a resumed run matches an uninterrupted one."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.size = flat.shape[0]
        return flat[indices]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (indices,) = ctx.saved_tensors
        out = torch.zeros(ctx.size, dtype=grad.dtype, device=grad.device)
        out.index_add_(0, indices.reshape(-1), grad.reshape(-1))
        return out, None


def _slice_coords(rotations: torch.Tensor, grid: SliceGrid, volume_size: int) -> torch.Tensor:
    """``R^T (kx, ky, 0)`` for every pose and point, ``(B, P, 3)`` (as rows: ``k^T R``), in
    pixels of a volume of side ``volume_size`` (``> L`` for an oversampled volume)."""
    coords = grid.coords.to(rotations.dtype) * (volume_size / grid.box_size)
    return torch.matmul(coords, rotations)


def project(volume: torch.Tensor, rotations: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """Central slices of a Fourier or Hartley volume.

    Args:
        volume: ``(N, N, N)`` real (Hartley) or complex (Fourier), ``(z, y, x)``, centred.
            ``N = L`` samples the transform of the ``L``-box volume directly; ``N = s L``
            is the transform of the volume zero-padded ``s`` times (see
            :func:`cryohydra.physics.fourier.padded_fft3`), which makes trilinear
            interpolation far more accurate.
        rotations: ``(B, 3, 3)`` poses ``R``.
        grid: the frequencies of the ``L x L`` image to sample.
    Returns:
        ``(B, P)`` values of ``V^(R^T k)`` at the grid's points (same dtype as ``volume``).
    """
    return sample_volume(volume, _slice_coords(rotations, grid, volume.shape[-1]))


def sample_volume(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear values ``(...)`` of a centred ``(N, N, N)`` volume at ``(..., 3)`` points
    ``(x, y, z)`` in pixels from index ``N // 2`` (kept inside the volume); differentiable
    with respect to the volume, deterministically (``index_add_`` backward)."""
    return gather_trilinear(volume, *trilinear_corners(coords, volume.shape[-1]))


def trilinear_corners(coords: torch.Tensor, volume_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 corner indices into a flat ``(N, N, N)`` volume and their weights, ``(..., 8)``
    each, of ``(..., 3)`` points (as :func:`sample_volume`), to be reused with
    :func:`gather_trilinear` when the same points are sampled many times."""
    return _trilinear(coords, volume_size)


def gather_trilinear(
    volume: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum(volume[indices] * weights, -1)``: trilinear values at precomputed corners."""
    values = _Gather.apply(volume.reshape(-1), indices.reshape(-1)).reshape(indices.shape)
    return (values * weights.to(values.real.dtype)).sum(dim=-1)


def backproject(
    values: torch.Tensor, rotations: torch.Tensor, grid: SliceGrid, box_size: int | None = None
) -> torch.Tensor:
    """Adjoint of :func:`project`: spread slice values ``(B, P)`` into an ``(N, N, N)``
    volume, ``N = box_size`` (default the grid's ``L``; ``s L`` for an oversampled volume).

    Backprojecting ``|CTF|^2`` (or ones) instead of data gives the sampling weights used for
    the density correction of a Fourier reconstruction.
    """
    box_size = box_size or grid.box_size
    indices, weights = _trilinear(_slice_coords(rotations, grid, box_size), box_size)
    contributions = values[..., None] * weights.to(values.real.dtype)
    volume = torch.zeros(box_size**3, dtype=values.dtype, device=values.device)
    volume.index_add_(0, indices.reshape(-1), contributions.reshape(-1))
    return volume.reshape(box_size, box_size, box_size)


def slice_to_image(values: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """Place ``(B, P)`` slice values on the ``(B, L, L)`` image grid (zero outside the mask)."""
    box = grid.box_size
    image = torch.zeros(values.shape[0], box * box, dtype=values.dtype, device=values.device)
    image[:, grid.flat_index] = values
    return image.reshape(values.shape[0], box, box)


def image_to_slice(images: torch.Tensor, grid: SliceGrid) -> torch.Tensor:
    """Take the grid's points ``(B, P)`` from ``(B, L, L)`` transformed images."""
    return images.reshape(images.shape[0], -1)[:, grid.flat_index]


def gridding_correction(box_size: int, padded_box: int, device=None, dtype=torch.float64):
    """``(L, L, L)`` real-space factor of trilinear interpolation on a ``padded_box`` grid.

    Interpolating a transform trilinearly convolves it with a triangle one voxel wide, which
    multiplies the map by ``sinc^2(x / N)`` along each axis (``x`` in pixels from the centre,
    ``N = padded_box``). Dividing a map by this before slicing it (or a reconstruction after
    backprojecting) undoes that attenuation.
    """
    x = (torch.arange(box_size, device=device, dtype=dtype) - box_size // 2) / padded_box
    kernel = torch.sinc(x) ** 2
    return kernel[:, None, None] * kernel[None, :, None] * kernel[None, None, :]
