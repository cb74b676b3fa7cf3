"""Orientation distances: true ones between rotations, predicted ones between features.

The distance between two orientations is the angle of ``R_i R_j^T`` (radians, in ``[0, pi]``).
It is unchanged by ``R -> A R B`` for any rotations ``A`` (detector side) and ``B`` (molecule
side), and by the inversion ``R -> R^T``: pairwise distances fix orientations only up to these.

A unit quaternion ``q`` of ``R`` gives ``angle(R_i R_j^T) = 2 arccos |<q_i, q_j>|``. The network
predicts distances the same way from unit feature vectors ``f``:
``d_ij = 2 arccos |cos(f_i, f_j)|`` (the absolute value: like quaternions, ``f`` and ``-f``
stand for the same orientation, and the distance stays in ``[0, pi]``).
"""

from __future__ import annotations

import torch

from cryohydra.geometry.rotations import geodesic_distance

__all__ = [
    "flat_weights",
    "paired_predicted_distances",
    "pairwise_rotation_distances",
    "predicted_distances",
    "quaternion_distances",
    "upper_pairs",
]

# arccos has an infinite slope at 1: cosines are clamped below this.
_MAX_COSINE = 1.0 - 1e-6


def pairwise_rotation_distances(rotations: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` angles (radians) of ``R_i R_j^T`` for rotations ``(N, 3, 3)``."""
    n = rotations.shape[0]
    return geodesic_distance(
        rotations[:, None].expand(n, n, 3, 3), rotations[None].expand(n, n, 3, 3)
    )


def _angle_of_cosine(cosine: torch.Tensor) -> torch.Tensor:
    return 2 * torch.acos(cosine.abs().clamp(max=_MAX_COSINE))


def predicted_distances(
    features_a: torch.Tensor, features_b: torch.Tensor | None = None
) -> torch.Tensor:
    """``2 arccos |cos(f_i, f_j)|`` for features ``(N, D)`` and ``(M, D)`` -> ``(N, M)``
    (``features_b`` None: all pairs of ``features_a``)."""
    a = torch.nn.functional.normalize(features_a, dim=-1)
    b = a if features_b is None else torch.nn.functional.normalize(features_b, dim=-1)
    return _angle_of_cosine(a @ b.T)


def paired_predicted_distances(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """``2 arccos |cos(f_i, g_i)|`` row by row: features ``(P, D)`` and ``(P, D)`` -> ``(P,)``."""
    a = torch.nn.functional.normalize(features_a, dim=-1)
    b = torch.nn.functional.normalize(features_b, dim=-1)
    return _angle_of_cosine((a * b).sum(dim=-1))


def quaternion_distances(q_a: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
    """Angles (radians) between the rotations of unit quaternions ``(..., 4)``, elementwise."""
    return _angle_of_cosine((q_a * q_b).sum(dim=-1))


def upper_pairs(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` of all pairs ``i < j`` of ``n`` items."""
    index = torch.triu_indices(n, n, offset=1, device=device)
    return index[0], index[1]


def flat_weights(distances: torch.Tensor, bins: int = 18) -> torch.Tensor:
    """Weights (mean 1) making the weighted histogram of ``distances`` (radians, in
    ``[0, pi]``) flat over its occupied bins: each pair weighs ``1 / count`` of its bin.

    Uniform orientations put most pairs near the largest angles (density ``(1 - cos d) / pi``);
    without the reweighting a network would learn little about the small distances that matter
    most for recovering orientations.
    """
    which = (distances / torch.pi * bins).long().clamp(0, bins - 1)
    counts = torch.bincount(which, minlength=bins).to(distances.dtype)
    weights = 1.0 / counts[which]
    return weights * (len(distances) / weights.sum())
