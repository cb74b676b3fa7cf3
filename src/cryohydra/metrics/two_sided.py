"""Pose errors after a *two-sided* alignment, for diagnosing distance-based methods.

Pairwise orientation distances are unchanged by ``R -> A R B`` and by ``R -> R^T``
(:mod:`cryohydra.orient.distances`), so a method that only matches distances can at best
recover orientations up to these. The two-sided alignment finds ``A``, ``B`` and the
inversion minimising ``sum_i ||A R_i B - T_i||_F^2`` and reports what is left: the quality of
the distance fit itself. It is *not* the error that matters for a map (the detector-side
``A`` changes the reconstruction): that is the one-sided error of
:func:`cryohydra.metrics.pose_error.pose_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from cryohydra.geometry.rotations import geodesic_distance
from cryohydra.geometry.sampling import so3_grid

__all__ = ["TwoSidedAlignment", "two_sided_alignment"]


@dataclass(frozen=True)
class TwoSidedAlignment:
    """``A R_i B`` (or ``A R_i^T B`` when ``inverted``) best matches ``T_i``; per-particle
    geodesic errors ``(N,)`` in degrees."""

    a: np.ndarray
    b: np.ndarray
    inverted: bool
    rotation_error_deg: np.ndarray

    @property
    def median_rotation_error_deg(self) -> float:
        return float(np.median(self.rotation_error_deg))

    @property
    def mean_rotation_error_deg(self) -> float:
        return float(np.mean(self.rotation_error_deg))

    def to_dict(self) -> dict:
        return {
            "median_rotation_error_deg": self.median_rotation_error_deg,
            "mean_rotation_error_deg": self.mean_rotation_error_deg,
            "median_rotation_error_rad": float(np.deg2rad(self.median_rotation_error_deg)),
            "inverted": self.inverted,
        }


def _alternate(estimated, true, starts, iterations):
    """Alternating Procrustes from each of ``starts`` ``(S, 3, 3)`` at once: each side in
    closed form given the other. Returns ``A``, ``B`` ``(S, 3, 3)`` and errors ``(S, N)``."""
    a = starts

    def best_b(a):
        return roma.special_procrustes(((a[:, None] @ estimated).mT @ true).sum(1))

    for _ in range(iterations):
        b = best_b(a)
        a = roma.special_procrustes((true @ (estimated @ b[:, None]).mT).sum(1))
    b = best_b(a)
    aligned = a[:, None] @ estimated @ b[:, None]
    return a, b, geodesic_distance(aligned, true.expand_as(aligned))


def two_sided_alignment(
    estimated: np.ndarray | torch.Tensor,
    true: np.ndarray | torch.Tensor,
    starts_nside: int = 1,
    iterations: int = 30,
) -> TwoSidedAlignment:
    """Align ``estimated`` ``(N, 3, 3)`` to ``true`` on both sides, over both inversions.

    The problem is not convex in ``(A, B)``: alternation starts from every ``A`` of
    ``so3_grid(starts_nside)`` (72 rotations for 1) and the best result is kept.
    """
    est = torch.as_tensor(estimated, dtype=torch.float64)
    tru = torch.as_tensor(true, dtype=torch.float64)
    if est.shape != tru.shape:
        raise ValueError(f"shapes differ: {tuple(est.shape)} vs {tuple(tru.shape)}")
    best = None
    starts = so3_grid(starts_nside)
    for inverted in (False, True):
        candidate = est.mT if inverted else est
        a, b, errors = _alternate(candidate, tru, starts, iterations)
        k = int(errors.mean(dim=1).argmin())
        score = float(errors[k].mean())
        if best is None or score < best[0]:
            best = (score, a[k], b[k], inverted, errors[k])
    _, a, b, inverted, error = best
    return TwoSidedAlignment(a.numpy(), b.numpy(), inverted, torch.rad2deg(error).numpy())
