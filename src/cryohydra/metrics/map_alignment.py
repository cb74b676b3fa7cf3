"""Rigid alignment of one map onto another: rotation, translation and handedness.

The transform (``docs/CONVENTIONS.md``: volumes ``(z, y, x)``, origin at index ``L // 2``,
points ``x`` written ``(x, y, z)`` in pixels or Å from the origin) is

``aligned(x) = moving(H R^T (x - s))``, ``H = J = diag(1, 1, -1)`` if mirrored else identity:

the moving map is mirrored (``z -> -z``) if needed, rotated by ``R`` (the content at ``x``
moves to ``R x``) and translated by ``s`` (Å). For a map estimated from poses ``R_est``
aligned onto the true map, ``R`` relates to the pose alignment ``Q`` of
:func:`cryohydra.metrics.pose_error.align_rotations` by ``Q = R^T`` (or ``J R^T J`` when
mirrored): ``V_est(y) = V_true(R H y + s)``.

:func:`align_maps` does

1. a global search on Fourier-cropped, low-passed, masked copies (box ``coarse_box``): every
   rotation of a HEALPix grid of viewing directions times in-plane angles, for both hands,
   each scored with its best translation from an FFT cross-correlation;
2. a local refinement (L-BFGS on the correlation, rotation ``exp(w) R`` and shift ``s``, with
   the map resampled by ``grid_sample``) of the best few distinct candidates on the coarse
   maps, then of the best one on maps cropped to at most ``refine_box``;
3. the transform applied to the full map: exact mirror, trilinear rotation of a copy
   Fourier-upsampled ``oversampling`` times, exact Fourier shift.

About 4 s for a 64^3 pair on 2 CPU cores (the global search dominates: ``2 x 72 nside^3``
rotations of a ``coarse_box^3`` map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from cryohydra.geometry.rotations import exp_map, geodesic_distance
from cryohydra.geometry.sampling import so3_grid
from cryohydra.metrics.fsc import ArrayLike, as_volume, soft_spherical_mask
from cryohydra.physics.fourier import (
    fft3_centered,
    fourier_crop,
    frequency_grid_3d,
    ifft3_centered,
    index_grid_3d,
)

__all__ = [
    "MapAlignment",
    "align_maps",
    "apply_alignment",
    "flip_handedness",
    "rotate_map",
    "rotated_values",
    "self_alignment",
    "shift_map",
    "so3_grid",
]


_ROTATION_CHUNK = 256


@dataclass(frozen=True)
class MapAlignment:
    """Result of :func:`align_maps`: ``aligned(x) = moving(H R^T (x - s))``.

    Attributes:
        rotation: ``(3, 3)`` float64 ``R`` acting on ``(x, y, z)`` coordinates.
        shift_a: ``(3,)`` float64 ``s`` as ``(x, y, z)`` in Å.
        mirrored: whether the moving map was mirrored (``z -> -z``) before rotating.
        correlation: Pearson correlation of the aligned map with the reference, both under the
            soft spherical mask used for the alignment.
        aligned_map: ``(L, L, L)`` float32 the moving map transformed.
        pixel_size_a: pixel size (Å/px) of the maps.
    """

    rotation: torch.Tensor
    shift_a: torch.Tensor
    mirrored: bool
    correlation: float
    aligned_map: torch.Tensor
    pixel_size_a: float


def _even_volume(volume: ArrayLike) -> torch.Tensor:
    return as_volume(volume, torch.float32, even=True)


def _sampling_grid(
    points_px: torch.Tensor,
    rotations: torch.Tensor,
    shifts_px: torch.Tensor | None,
    box_size: int,
) -> torch.Tensor:
    """``grid_sample`` coordinates of ``R^T (x - s)`` for ``(P, 3)`` points ``x`` (pixels from
    the origin), ``(B, 3, 3)`` rotations and ``(B, 3)`` shifts: ``(B, P, 3)``.

    With ``align_corners=True`` index ``i`` sits at ``a i - 1``, ``a = 2 / (L - 1)``, so a
    point ``p`` (from index ``L // 2``) at ``a p + b``, ``b = a L // 2 - 1``.
    """
    scale = 2.0 / (box_size - 1)
    offset = scale * (box_size // 2) - 1.0
    rot = rotations.to(points_px.dtype)
    moved = points_px if shifts_px is None else points_px - shifts_px[:, None, :].to(rot.dtype)
    return (moved * scale) @ rot + offset  # row x^T R = (R^T x)^T


def _sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear values of ``volume`` ``(L, L, L)`` at ``(B, P, 3)`` ``grid_sample`` coordinates
    (zero outside the box): ``(B, P)``."""
    box = volume.shape[-1]
    source = volume.expand(grid.shape[0], 1, box, box, box)
    out = F.grid_sample(source, grid[:, None, None], mode="bilinear", align_corners=True)
    return out[:, 0, 0, 0]


def _fourier_upsample(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """Band-limited (sinc) interpolation of ``(L, L, L)`` onto ``(f L, f L, f L)``: the centred
    spectrum zero-padded, values kept; index ``f L // 2`` is the same origin."""
    box = volume.shape[-1]
    fine = factor * box
    start = fine // 2 - box // 2
    spectrum = volume.new_zeros((fine,) * 3, dtype=torch.complex64)
    spectrum[start : start + box, start : start + box, start : start + box] = fft3_centered(volume)
    return ifft3_centered(spectrum).real * factor**3


def _transformed(
    volume: torch.Tensor,
    rotations: torch.Tensor,
    shifts_px: torch.Tensor | None = None,
    oversampling: int = 1,
) -> torch.Tensor:
    """``V(R^T (x - s))`` on the whole box for each of ``B`` transforms: ``(B, L, L, L)``.

    With ``oversampling > 1`` the trilinear interpolation runs on a Fourier-upsampled copy,
    which keeps far more of the high frequencies.
    """
    box = volume.shape[-1]
    source = volume if oversampling == 1 else _fourier_upsample(volume, oversampling)
    points = index_grid_3d(box).reshape(-1, 3) * oversampling
    shifts = None if shifts_px is None else shifts_px * oversampling
    values = _sample(source, _sampling_grid(points, rotations, shifts, source.shape[-1]))
    return values.reshape(-1, box, box, box)


def rotated_values(
    volume: torch.Tensor, points_px: torch.Tensor, rotations: torch.Tensor
) -> torch.Tensor:
    """``V(R^T x)`` at ``(P, 3)`` points ``x`` (pixels from index ``L // 2``) for each of
    ``(B, 3, 3)`` rotations: ``(B, P)`` (trilinear, zero outside the box)."""
    grid = _sampling_grid(points_px, rotations, None, volume.shape[-1])
    return _sample(volume, grid)


def rotate_map(volume: ArrayLike, rotations: ArrayLike, oversampling: int = 1) -> torch.Tensor:
    """Rotate about index ``L // 2`` by ``R`` (``x_new = R x``): ``V'(x) = V(R^T x)``.

    ``volume`` ``(L, L, L)``; ``rotations`` ``(3, 3)`` or ``(B, 3, 3)`` acting on ``(x, y, z)``.
    Returns ``(L, L, L)`` or ``(B, L, L, L)`` float32 (trilinear, zero outside the box; with
    ``oversampling`` 2 on a map Fourier-upsampled twice, more accurate and 8x the memory).
    """
    vol = _even_volume(volume)
    rot = torch.as_tensor(rotations)
    out = _transformed(vol, rot.reshape(-1, 3, 3), oversampling=oversampling)
    return out[0] if rot.ndim == 2 else out


def flip_handedness(volume: ArrayLike) -> torch.Tensor:
    """Mirror ``z -> -z`` about index ``L // 2``: ``V'(x, y, z) = V(x, y, -z)`` (exact)."""
    vol = torch.as_tensor(volume)
    return torch.roll(torch.flip(vol, dims=(-3,)), shifts=1, dims=-3)


def shift_map(volume: ArrayLike, shift_a: ArrayLike, pixel_size_a: float) -> torch.Tensor:
    """Translate by ``s`` (``(x, y, z)`` Å): ``V'(x) = V(x - s)``, a Fourier phase ramp
    ``exp(-2 pi i k.s)`` (exact for a band-limited map, periodic in the box)."""
    vol = torch.as_tensor(volume)
    shift = torch.as_tensor(shift_a, dtype=torch.float64)
    kx, ky, kz = frequency_grid_3d(vol.shape[-1], pixel_size_a, dtype=torch.float64).unbind(-1)
    phase = -2 * math.pi * (kx * shift[0] + ky * shift[1] + kz * shift[2])
    shifted = ifft3_centered(
        fft3_centered(vol.to(torch.float64)) * torch.polar(torch.ones_like(phase), phase)
    )
    return shifted.real.to(vol.dtype)


def _mask(box_size: int, radius_px: float | None) -> torch.Tensor:
    """Soft sphere: radius ``L / 2 - L / 8`` by default, edge ``L / 16``."""
    edge = box_size / 16
    radius = box_size / 2 - 2 * edge if radius_px is None else radius_px
    return soft_spherical_mask(box_size, radius, edge)


def _lowpass(volume: torch.Tensor, pixel_size_a: float, resolution_a: float) -> torch.Tensor:
    """Gaussian low-pass, amplitude ``exp(-1/2)`` at frequency ``1 / resolution_a``."""
    kx, ky, kz = frequency_grid_3d(volume.shape[-1], pixel_size_a, dtype=torch.float64).unbind(-1)
    gain = torch.exp(-0.5 * (kx**2 + ky**2 + kz**2) * resolution_a**2)
    return ifft3_centered(fft3_centered(volume.to(torch.float64)) * gain).real.float()


def _normalise(volume: torch.Tensor) -> torch.Tensor:
    centred = volume - volume.mean()
    return centred / centred.norm().clamp_min(1e-30)


def _downsample(volume: torch.Tensor, box: int) -> torch.Tensor:
    return fourier_crop(volume, min(box, volume.shape[-1]), ndim=3)


@dataclass(frozen=True)
class _Candidate:
    score: float
    mirrored: bool
    rotation: torch.Tensor  # (3, 3) float64
    shift_a: torch.Tensor  # (3,) float64


def _wrapped(index: torch.Tensor, box: int) -> torch.Tensor:
    """FFT lag index -> signed lag in ``[-L/2, L/2)``."""
    return (index + box // 2) % box - box // 2


def _exhaustive_scores(
    moving: torch.Tensor, reference: torch.Tensor, rotations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each rotation ``(R, 3, 3)``: the best correlation over circular translations and
    that translation ``(R, 3)`` ``(x, y, z)`` in pixels (``rotated(x - s)`` matches).

    The maps are masked inside the inscribed sphere, so only the output voxels inside it (half
    of the box) are resampled; the rest are taken as zero.
    """
    box = reference.shape[-1]
    ref_spectrum = torch.fft.rfftn(_normalise(reference))
    points = index_grid_3d(box).reshape(-1, 3)
    inside = torch.nonzero(points.norm(dim=-1) < box / 2).squeeze(1)
    scores, shifts = [], []
    for chunk in rotations.split(_ROTATION_CHUNK):
        values = _sample(moving, _sampling_grid(points[inside], chunk, None, box))
        rotated = values.new_zeros(len(chunk), box**3)
        rotated[:, inside] = values - values.sum(dim=1, keepdim=True) / box**3
        norms = rotated.norm(dim=1).clamp_min(1e-30)
        spectrum = torch.fft.rfftn(rotated.reshape(-1, box, box, box), dim=(-3, -2, -1))
        # sum_x ref(x) rot(x - s) = IFFT[ref^ conj(rot^)](s)
        cc = torch.fft.irfftn(ref_spectrum * spectrum.conj(), s=(box,) * 3, dim=(-3, -2, -1))
        best, flat = cc.flatten(1).max(dim=1)
        zyx = torch.stack([flat // box**2, (flat // box) % box, flat % box], dim=-1)
        scores.append(best / norms)
        shifts.append(_wrapped(zyx, box).flip(-1).to(torch.float64))
    return torch.cat(scores), torch.cat(shifts)


def _distinct_best(
    candidates: list[_Candidate], count: int, min_angle_rad: float
) -> list[_Candidate]:
    """Highest-scoring candidates, skipping those within ``min_angle_rad`` of a kept one of the
    same hand (non-maximum suppression)."""
    kept: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.score):
        if all(
            k.mirrored != cand.mirrored
            or float(geodesic_distance(k.rotation, cand.rotation)) > min_angle_rad
            for k in kept
        ):
            kept.append(cand)
        if len(kept) == count:
            break
    return kept


def _global_search(
    moving: torch.Tensor,
    reference: torch.Tensor,
    pixel_size_a: float,
    nside: int,
    count: int,
    hands: tuple[bool, ...],
) -> list[_Candidate]:
    """Best ``count`` distinct (rotation, shift, hand) over the SO(3) grid on coarse maps."""
    rotations = so3_grid(nside)
    spacing = math.radians(58.6 / nside)
    pool: list[_Candidate] = []
    for mirrored in hands:
        hand_map = flip_handedness(moving) if mirrored else moving
        scores, shifts_px = _exhaustive_scores(hand_map, reference, rotations)
        top = torch.topk(scores, min(len(scores), 8 * count)).indices
        pool += [
            _Candidate(float(scores[i]), mirrored, rotations[i], shifts_px[i] * pixel_size_a)
            for i in top.tolist()
        ]
    return _distinct_best(pool, count, 2 * spacing)


def _refine(
    moving: torch.Tensor,
    reference: torch.Tensor,
    pixel_size_a: float,
    start: _Candidate,
    iterations: int,
) -> _Candidate:
    """Local maximum of the correlation over ``R = exp(w) R0`` and ``s`` from ``start``."""
    hand_map = flip_handedness(moving) if start.mirrored else moving
    ref = _normalise(reference)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    s = (start.shift_a / pixel_size_a).clone().requires_grad_(True)

    def rotation() -> torch.Tensor:
        return exp_map(w) @ start.rotation

    def loss() -> torch.Tensor:
        moved = _transformed(hand_map, rotation()[None], s[None])[0]
        moved = moved - moved.mean()
        return -(moved * ref).sum() / moved.norm().clamp_min(1e-30)

    optimiser = torch.optim.LBFGS(
        [w, s], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe", tolerance_change=1e-9
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = loss()
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        score = -float(loss())
        return _Candidate(score, start.mirrored, rotation().detach(), s.detach() * pixel_size_a)


def _prepared(volume: torch.Tensor, box: int, mask_radius_px: float | None) -> torch.Tensor:
    """Masked at full size, then Fourier-cropped to ``box``."""
    return _downsample(volume * _mask(volume.shape[-1], mask_radius_px), box)


def align_maps(
    moving: ArrayLike,
    reference: ArrayLike,
    pixel_size_a: float,
    *,
    mask_radius_px: float | None = None,
    coarse_box: int = 24,
    coarse_resolution_a: float | None = None,
    nside: int = 4,
    n_candidates: int = 4,
    refine_box: int = 128,
    refine_iterations: int = 40,
    allow_mirror: bool = True,
    oversampling: int = 2,
) -> MapAlignment:
    """Align ``moving`` onto ``reference`` (both ``(L, L, L)``, same pixel size in Å/px).

    Args:
        mask_radius_px: radius (pixels of the full maps) of the soft spherical mask applied to
            both maps; default ``3 L / 8`` with a ``L / 16`` edge.
        coarse_box: box of the Fourier-cropped maps of the global search.
        coarse_resolution_a: Gaussian low-pass of the global search (Å); default 2.5 coarse
            pixels.
        nside: HEALPix order of the grid of the global search: ``72 nside^3`` rotations, about
            ``58.6 / nside`` degrees apart (15 degrees for 4).
        n_candidates: distinct grid optima refined on the coarse maps.
        refine_box: the final refinement runs on maps Fourier-cropped to at most this box.
        refine_iterations: L-BFGS iterations per refinement.
        allow_mirror: also search the other hand.
        oversampling: the final map is rotated by trilinear interpolation of a copy
            Fourier-upsampled by this factor (1: plain trilinear, 8x less memory).

    Returns:
        :class:`MapAlignment` with ``aligned(x) = moving(H R^T (x - s))``.
    """
    mov, ref = _even_volume(moving), _even_volume(reference)
    if mov.shape != ref.shape:
        raise ValueError(f"maps differ in shape: {tuple(mov.shape)} vs {tuple(ref.shape)}")
    box = ref.shape[-1]
    coarse_pixel = pixel_size_a * box / min(coarse_box, box)
    resolution = 2.5 * coarse_pixel if coarse_resolution_a is None else coarse_resolution_a
    coarse_mov, coarse_ref = (
        _lowpass(_prepared(v, coarse_box, mask_radius_px), coarse_pixel, resolution)
        for v in (mov, ref)
    )
    hands = (False, True) if allow_mirror else (False,)
    starts = _global_search(coarse_mov, coarse_ref, coarse_pixel, nside, n_candidates, hands)
    refined = [_refine(coarse_mov, coarse_ref, coarse_pixel, c, refine_iterations) for c in starts]
    best = max(refined, key=lambda c: c.score)
    fine_box = min(refine_box, box)
    fine_pixel = pixel_size_a * box / fine_box
    fine_mov, fine_ref = (_prepared(v, fine_box, mask_radius_px) for v in (mov, ref))
    best = _refine(fine_mov, fine_ref, fine_pixel, best, refine_iterations)
    return _finish(mov, ref, pixel_size_a, best, mask_radius_px, oversampling)


def self_alignment(
    volume: ArrayLike,
    pixel_size_a: float,
    *,
    min_angle_deg: float = 30.0,
    lowpass_a: float | None = None,
    mask_radius_px: float | None = None,
    coarse_box: int = 24,
    nside: int = 4,
    n_candidates: int = 4,
    refine_box: int = 128,
    refine_iterations: int = 40,
) -> MapAlignment:
    """The best rotation (at least ``min_angle_deg`` from the identity, same hand) and shift
    superposing a map on itself: its strongest symmetry or pseudo-symmetry.

    ``aligned(x) = volume(R^T (x - s)) ~ volume(x)`` with ``correlation`` telling how well
    (1 for an exact symmetry). Same search as :func:`align_maps`, the identity excluded;
    ``lowpass_a`` (Å) low-passes the map first, for a pseudo-symmetry that holds only at
    low resolution.
    """
    vol = _even_volume(volume)
    if lowpass_a is not None:
        vol = _lowpass(vol, pixel_size_a, lowpass_a)
    box = vol.shape[-1]
    coarse_pixel = pixel_size_a * box / min(coarse_box, box)
    coarse = _lowpass(_prepared(vol, coarse_box, mask_radius_px), coarse_pixel, 2.5 * coarse_pixel)
    pool = _global_search(coarse, coarse, coarse_pixel, nside, 4 * n_candidates, (False,))
    eye = torch.eye(3, dtype=torch.float64)
    min_angle = math.radians(min_angle_deg)
    starts = [c for c in pool if float(geodesic_distance(c.rotation, eye)) > min_angle]
    refined = [
        _refine(coarse, coarse, coarse_pixel, c, refine_iterations) for c in starts[:n_candidates]
    ]
    refined = [c for c in refined if float(geodesic_distance(c.rotation, eye)) > min_angle]
    if not refined:
        raise ValueError("no self-alignment away from the identity was found")
    best = max(refined, key=lambda c: c.score)
    fine_box = min(refine_box, box)
    fine = _prepared(vol, fine_box, mask_radius_px)
    best = _refine(fine, fine, pixel_size_a * box / fine_box, best, refine_iterations)
    return _finish(vol, vol, pixel_size_a, best, mask_radius_px, oversampling=1)


def _transform(
    volume: torch.Tensor,
    rotation: torch.Tensor,
    shift_a: torch.Tensor,
    mirrored: bool,
    pixel_size_a: float,
    oversampling: int,
) -> torch.Tensor:
    """Mirror (exact), rotate (trilinear), then shift (exact Fourier phase ramp)."""
    hand_map = flip_handedness(volume) if mirrored else volume
    rotated = rotate_map(hand_map, rotation, oversampling=oversampling)
    return shift_map(rotated, shift_a, pixel_size_a)


def _finish(
    moving: torch.Tensor,
    reference: torch.Tensor,
    pixel_size_a: float,
    best: _Candidate,
    mask_radius_px: float | None,
    oversampling: int,
) -> MapAlignment:
    aligned = _transform(
        moving, best.rotation, best.shift_a, best.mirrored, pixel_size_a, oversampling
    )
    mask = _mask(reference.shape[-1], mask_radius_px)
    correlation = float((_normalise(aligned * mask) * _normalise(reference * mask)).sum())
    return MapAlignment(
        rotation=best.rotation,
        shift_a=best.shift_a,
        mirrored=best.mirrored,
        correlation=correlation,
        aligned_map=aligned,
        pixel_size_a=float(pixel_size_a),
    )


def apply_alignment(
    volume: ArrayLike, alignment: MapAlignment, oversampling: int = 2
) -> torch.Tensor:
    """Transform another ``(L, L, L)`` map (e.g. the other half-map) like the aligned one:
    ``out(x) = volume(H R^T (x - s))``, float32. ``oversampling`` as in :func:`rotate_map`
    (use the same value as :func:`align_maps` to treat both half-maps alike)."""
    a = alignment
    return _transform(
        _even_volume(volume), a.rotation, a.shift_a, a.mirrored, a.pixel_size_a, oversampling
    )
