"""A map's point-group symmetry: imposing a group on a map, and detecting one.

``symmetrise_map`` averages ``V(g x)`` over the group (trilinear, on a Fourier-upsampled copy).

``detect_symmetry`` scores candidate point groups on a map in any orientation:

1. the map is centred on its centre of mass (every symmetry axis passes through it),
   low-passed, Fourier-cropped to ``coarse_box`` and masked;
2. for each fold ``n`` of the candidates, the correlation ``c_n(u) = corr(V, V o rot(u,
   2 pi / n))`` over axis directions ``u`` on a HEALPix hemisphere, the best few refined
   locally;
3. each candidate group, in RELION's orientation (:func:`cryohydra.geometry.symmetry.point_group`),
   is aligned onto the map: its principal axis onto one of the best directions of its fold,
   its nearest other axis onto the best direction on the cone at the right angle about it;
4. the group's score is the mean correlation of the map with itself under every non-identity
   operator ``Q g Q^T`` of the aligned group, on a finer copy (``score_box``, low-passed at
   ``resolution_a``);
5. the centre is then refined for the best-scoring group (the centre of mass of a
   reconstruction can lie pixels off the molecule's), and steps 2-4 repeated about it.

The reported group is the largest whose score reaches ``threshold`` and comes within
``margin`` of the best score (C1 if none). A score
near 1 means an exact symmetry; a pseudo-symmetry (a heterodimer of similar chains) scores
lower, and how much lower sets the threshold (``docs/symmetry.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import healpy
import numpy as np
import torch

from cryohydra.geometry.rotations import exp_map
from cryohydra.geometry.symmetry import Symmetry, point_group, rotation_axes, symmetry_group
from cryohydra.metrics.fsc import ArrayLike, as_volume
from cryohydra.metrics.map_alignment import (
    MapAlignment,
    _lowpass,
    _mask,
    apply_alignment,
    rotate_map,
    rotated_values,
    shift_map,
)
from cryohydra.physics.fourier import (
    fourier_crop,
    index_grid_3d,
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_MARGIN",
    "DEFAULT_THRESHOLD",
    "GroupScore",
    "SymmetryDetection",
    "detect_symmetry",
    "standard_orientation",
    "symmetrise_map",
    "symmetry_correlation",
]

DEFAULT_CANDIDATES = tuple(
    [f"C{n}" for n in range(2, 9)] + [f"D{n}" for n in range(2, 9)] + ["T", "O", "I"]
)
DEFAULT_THRESHOLD = 0.85
DEFAULT_MARGIN = 0.03
_CHUNK = 32


def symmetrise_map(volume: ArrayLike, symmetry: Symmetry, oversampling: int = 2) -> torch.Tensor:
    """``mean_g V(g x)`` over the group ``(L, L, L)`` float32: the map made symmetric about
    index ``L // 2`` (trilinear on a copy Fourier-upsampled ``oversampling`` times)."""
    vol = as_volume(volume, torch.float32, even=True)
    group, _ = symmetry_group(symmetry)
    if len(group) == 1:
        return vol.clone()
    total = torch.zeros_like(vol)
    for start in range(0, len(group), 8):
        chunk = group[start : start + 8]
        total += rotate_map(vol, chunk.transpose(-1, -2), oversampling).sum(dim=0)
    return total / len(group)


@dataclass(frozen=True)
class _Prepared:
    """A map ready for self-correlations: its values at the points of the mask's support
    (``(P, 3)`` pixels from the centre), zero-mean and unit-norm there."""

    volume: torch.Tensor
    points: torch.Tensor
    values: torch.Tensor


def _correlations(prepared: _Prepared, rotations: torch.Tensor) -> torch.Tensor:
    """Correlation of the map with itself rotated by each of ``(B, 3, 3)``: ``(B,)``."""
    out = []
    for start in range(0, len(rotations), _CHUNK):
        chunk = rotations[start : start + _CHUNK].to(torch.float32)
        rotated = rotated_values(prepared.volume, prepared.points, chunk)
        rotated = rotated - rotated.mean(dim=1, keepdim=True)
        norms = rotated.norm(dim=1).clamp_min(1e-30)
        out.append(rotated @ prepared.values / norms)
    return torch.cat(out)


def symmetry_correlation(prepared: _Prepared, operators: torch.Tensor) -> float:
    """Mean correlation of a prepared map (:func:`_smoothed`) with itself under the
    non-identity ``operators`` ``(G, 3, 3)``."""
    eye = torch.eye(3, dtype=operators.dtype)
    others = operators[(operators - eye).abs().amax(dim=(-1, -2)) > 1e-6]
    if len(others) == 0:
        return 1.0
    return float(_correlations(prepared, others).mean())


def _centre_of_mass_px(volume: torch.Tensor) -> torch.Tensor:
    """``(x, y, z)`` pixels from index ``L // 2`` of the positive part of the map inside the
    scoring mask (density in the corners, outside it, would pull it off the molecule)."""
    box = volume.shape[-1]
    weights = (volume.clamp_min(0) * _mask(box, None).to(volume.dtype)).to(torch.float64)
    k = torch.arange(box, dtype=torch.float64) - box // 2
    total = weights.sum().clamp_min(1e-30)
    z = (weights.sum(dim=(1, 2)) * k).sum() / total
    y = (weights.sum(dim=(0, 2)) * k).sum() / total
    x = (weights.sum(dim=(0, 1)) * k).sum() / total
    return torch.stack([x, y, z])


def _smoothed(
    volume: torch.Tensor, pixel_size_a: float, box: int, lowpass_a: float
) -> Callable[[torch.Tensor], _Prepared]:
    """The map low-passed at ``lowpass_a`` and cropped to ``box`` once; returns
    ``prepare(centre)``: that copy moved so that ``centre`` (``(x, y, z)`` pixels of the
    original map from index ``L // 2``) is at the box centre, masked, zero-mean, unit-norm."""
    size = min(box, volume.shape[-1])
    smooth = fourier_crop(_lowpass(volume.to(torch.float64), pixel_size_a, lowpass_a), size, ndim=3)
    mask = _mask(size, None)
    inside = mask.reshape(-1) > 0
    points = index_grid_3d(size).reshape(-1, 3)[inside]
    cropped_pixel_a = pixel_size_a * volume.shape[-1] / size

    def prepare(centre: torch.Tensor) -> _Prepared:
        moved = shift_map(smooth, -centre * pixel_size_a, cropped_pixel_a) * mask
        values = moved.reshape(-1)[inside]
        values = values - values.mean()
        return _Prepared(moved, points, values / values.norm().clamp_min(1e-30))

    return prepare


def _refine_centre(
    prepare: Callable[[torch.Tensor], _Prepared],
    operators: torch.Tensor,
    centre: torch.Tensor,
    step_px: float = 1.0,
    rounds: int = 4,
) -> torch.Tensor:
    """The centre (pixels) about which ``operators`` superpose the map best: a pattern search
    (+-step on each axis until none improves, then half the step). Density inside the mask
    that is not the molecule's (a skirt of noise or solvent) pulls the centre of mass off:
    a C3 blob map beside a haze that moved it 2.2 px scored 0.773, 0.970 about the refined
    centre (``tests/metrics/test_symmetry_detection.py``)."""
    best = symmetry_correlation(prepare(centre), operators)
    step = step_px
    for _ in range(rounds):
        improved = True
        while improved:
            improved = False
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    trial = centre.clone()
                    trial[axis] += sign * step
                    score = symmetry_correlation(prepare(trial), operators)
                    if score > best + 1e-6:
                        best, centre, improved = score, trial, True
        step /= 2
    return centre


def _hemisphere(nside: int) -> torch.Tensor:
    vectors = np.stack(healpy.pix2vec(nside, np.arange(12 * nside**2)), axis=-1)
    return torch.from_numpy(vectors[vectors[:, 2] >= 0])


def _turn(axes: torch.Tensor, fold: int) -> torch.Tensor:
    return exp_map(axes * (2 * math.pi / fold))


def _best_axes(
    volume: _Prepared, fold: int, directions: torch.Tensor, keep: int
) -> list[tuple[float, torch.Tensor]]:
    """The ``keep`` best distinct axis directions of ``fold`` (coarse grid, then refined)."""
    scores = _correlations(volume, _turn(directions, fold))
    order = torch.argsort(scores, descending=True)
    chosen: list[torch.Tensor] = []
    for index in order.tolist():
        axis = directions[index]
        if all(abs(float(axis @ c)) < math.cos(math.radians(15)) for c in chosen):
            chosen.append(axis)
        if len(chosen) == keep:
            break
    return [_refine_axis(volume, fold, axis) for axis in chosen]


def _refine_axis(
    volume: _Prepared, fold: int, axis: torch.Tensor, step_deg: float = 5.0, rounds: int = 5
) -> tuple[float, torch.Tensor]:
    """Pattern search of the axis on the sphere: 3 x 3 tilts of ``step``, halved each round."""
    best_axis = axis / axis.norm()
    best = float(_correlations(volume, _turn(best_axis[None], fold))[0])
    step = math.radians(step_deg)
    for _ in range(rounds):
        e1, e2 = _perpendiculars(best_axis)
        offsets = torch.tensor([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)], dtype=axis.dtype)
        trial = best_axis + step * (offsets[:, :1] * e1 + offsets[:, 1:] * e2)
        trial = trial / trial.norm(dim=1, keepdim=True)
        scores = _correlations(volume, _turn(trial, fold))
        top = int(torch.argmax(scores))
        if float(scores[top]) > best:
            best, best_axis = float(scores[top]), trial[top]
        step /= 2
    return best, best_axis


def _perpendiculars(axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=axis.dtype)
    if abs(float(axis @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=axis.dtype)
    e1 = torch.linalg.cross(axis, helper)
    e1 = e1 / e1.norm()
    return e1, torch.linalg.cross(axis, e1)


def _frame(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns ``[a, b, a x b]``, ``b`` the part of ``second`` normal to ``a``."""
    a = first / first.norm()
    b = second - (second @ a) * a
    b = b / b.norm()
    return torch.stack([a, b, torch.linalg.cross(a, b)], dim=1)


@dataclass(frozen=True)
class GroupScore:
    """A candidate group aligned onto the map: ``operators`` ``Q g Q^T`` in the map's frame
    (about the centre found), ``orientation`` ``Q`` (the group's RELION axes -> the map's)."""

    symbol: str
    order: int
    score: float
    orientation: np.ndarray

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "order": self.order,
            "score": round(self.score, 4),
            "orientation": np.round(self.orientation, 6).tolist(),
        }


@dataclass(frozen=True)
class SymmetryDetection:
    """The detected group (``C1`` if no candidate reached the threshold), every candidate's
    score, the centre found (Å from index ``L // 2``; the axes pass through it) and
    the resolution (Å) at which the groups were scored."""

    symbol: str
    threshold: float
    scores: list[GroupScore] = field(default_factory=list)
    centre_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    resolution_a: float | None = None

    @property
    def best(self) -> GroupScore | None:
        return next((s for s in self.scores if s.symbol == self.symbol), None)

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "threshold": self.threshold,
            "centre_a": list(self.centre_a),
            "resolution_a": self.resolution_a,
            "scores": [s.to_dict() for s in self.scores],
        }

    def summary(self) -> str:
        ranked = sorted(self.scores, key=lambda s: -s.score)[:5]
        listed = ", ".join(f"{s.symbol} {s.score:.3f}" for s in ranked)
        return (
            f"symmetry: {self.symbol} (largest group scoring >= {self.threshold:.2f}; "
            f"best scores: {listed})"
        )


def _align_group(
    volume: _Prepared,
    group: torch.Tensor,
    axes_by_fold: dict[int, list[tuple[float, torch.Tensor]]],
) -> tuple[float, torch.Tensor]:
    """The best orientation ``Q`` of ``group`` on the map and its score."""
    axes = rotation_axes(group)
    primary_fold, primary = axes[0]
    primary_t = torch.from_numpy(primary)
    best_score, best_q = -math.inf, torch.eye(3, dtype=torch.float64)
    others = [(f, torch.from_numpy(a)) for f, a in axes[1:]]
    if others:
        cosines = [abs(float(a @ primary_t)) for _, a in others]
        second_fold, second = others[int(np.argmax(cosines))]
        if float(second @ primary_t) < 0:
            second = -second
        angle = math.acos(min(1.0, float(second @ primary_t)))
    for _, u in axes_by_fold[primary_fold]:
        if not others:
            standard = _frame(primary_t, _perpendiculars(primary_t)[0])
            q = _frame(u, _perpendiculars(u)[0]) @ standard.T
        else:
            e1, e2 = _perpendiculars(u)
            # The primary n-fold repeats the ring every 360 / n degrees (180 / n for a
            # perpendicular two-fold, whose axis is a line).
            period = 360.0 / primary_fold / (2 if second_fold == 2 and angle > 1.5 else 1)
            psi = torch.arange(0, period, 1.0, dtype=torch.float64).deg2rad()
            ring = math.cos(angle) * u + math.sin(angle) * (
                torch.cos(psi)[:, None] * e1 + torch.sin(psi)[:, None] * e2
            )
            scores = _correlations(volume, _turn(ring, second_fold))
            v = ring[int(torch.argmax(scores))]
            q = _frame(u, v) @ _frame(primary_t, second).T
        score = symmetry_correlation(volume, q @ group @ q.T)
        if score > best_score:
            best_score, best_q = score, q
    return best_score, best_q


def detect_symmetry(
    volume: ArrayLike,
    pixel_size_a: float,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
    coarse_box: int = 32,
    score_box: int = 48,
    resolution_a: float | None = None,
    nside: int = 6,
    axes_per_fold: int = 3,
) -> SymmetryDetection:
    """Score ``candidates`` on the map and name the largest group scoring ``>= threshold``
    and within ``margin`` of the best score (a larger group that scores much lower than one
    of its subgroups holds only approximately: a round map nearly fits many groups).

    The axes are searched on a ``coarse_box`` copy low-passed at 2.5 of its pixels; the
    groups are scored on a ``score_box`` copy low-passed at ``resolution_a`` (at least 2 of
    its pixels), where a pseudo-symmetry (similar, not identical, chains) falls off faster
    than a true one. About 20 s for a 64^3 map on two CPU cores with the default candidates.
    """
    vol = as_volume(volume, torch.float32, even=True)
    box = vol.shape[-1]
    coarse_pixel = pixel_size_a * box / min(coarse_box, box)
    score_pixel = pixel_size_a * box / min(score_box, box)
    judged_at = max(resolution_a or 0.0, 2 * score_pixel)

    coarse = _smoothed(vol, pixel_size_a, coarse_box, 2.5 * coarse_pixel)
    fine = _smoothed(vol, pixel_size_a, score_box, judged_at)
    groups = {symbol: point_group(symbol) for symbol in candidates if len(point_group(symbol)) > 1}
    folds = sorted({rotation_axes(g)[0][0] for g in groups.values()})
    directions = _hemisphere(nside)

    def aligned(centre: torch.Tensor, near: dict | None = None) -> tuple[dict, dict]:
        """Each group's (coarse score, Q) about ``centre``, and the axes of each fold (the
        grid searched, or only refined from the axes ``near``)."""
        search = coarse(centre)
        if near is None:
            axes = {f: _best_axes(search, f, directions, axes_per_fold) for f in folds}
        else:
            axes = {f: [_refine_axis(search, f, u) for _, u in near[f]] for f in folds}
        return {s: _align_group(search, g, axes) for s, g in groups.items()}, axes

    # Axes about the centre of mass; the centre refined for the best group (on the coarse
    # copy, to 1/8 pixel); the axes found again about it if it moved half a pixel or more.
    centre = _centre_of_mass_px(vol)
    found, axes = aligned(centre)
    if found:
        symbol = max(found, key=lambda s: found[s][0])
        q = found[symbol][1]
        refined = _refine_centre(coarse, q @ groups[symbol] @ q.T, centre)
        if float((refined - centre).norm()) >= 0.5:
            found, _ = aligned(refined, near=axes)
        centre = refined
    judged = fine(centre)
    scores = []
    for symbol, (_, q) in found.items():
        group = groups[symbol]
        score = symmetry_correlation(judged, q @ group @ q.T)
        scores.append(GroupScore(symbol, len(group), score, q.numpy()))
    top = max((s.score for s in scores), default=-math.inf)
    passing = [s for s in scores if s.score >= max(threshold, top - margin)]
    chosen = max(passing, key=lambda s: (s.order, s.score)).symbol if passing else "C1"
    centre_a = tuple(float(c) * pixel_size_a for c in centre)
    return SymmetryDetection(chosen, threshold, scores, centre_a, judged_at)  # type: ignore[arg-type]


def standard_orientation(
    volume: ArrayLike,
    pixel_size_a: float,
    symbol: str,
    resolution_a: float | None = None,
) -> MapAlignment:
    """The transform that brings the map's own ``symbol`` axes onto the group's RELION axes
    through index ``L // 2``: ``aligned(x) = V(Q x + c)``, with ``Q`` the group's best
    orientation on the map and ``c`` the centre found (:func:`detect_symmetry` with this one
    candidate). As a :class:`MapAlignment` (``R = Q^T``, ``s = -Q^T c``), so
    :func:`cryohydra.inference.frames.poses_into_reference_frame` moves the particles' poses
    along; ``correlation`` is the group's score."""
    vol = as_volume(volume, torch.float32, even=True)
    found = detect_symmetry(
        vol, pixel_size_a, candidates=(symbol,), threshold=-math.inf, resolution_a=resolution_a
    )
    if not found.scores:  # C1: nothing to align
        rotation, shift = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        score = 1.0
    else:
        rotation = torch.from_numpy(found.scores[0].orientation).T.to(torch.float64)
        shift = -rotation @ torch.tensor(found.centre_a, dtype=torch.float64)
        score = found.scores[0].score
    alignment = MapAlignment(rotation, shift, False, score, vol, float(pixel_size_a))
    return dataclasses.replace(alignment, aligned_map=apply_alignment(vol, alignment))
