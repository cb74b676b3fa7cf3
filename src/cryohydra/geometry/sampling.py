"""Orientation distributions for simulation: uniform on SO(3), uniform Euler angles, and
preferred orientations (a mixture of von Mises-Fisher lobes of viewing direction); and a
deterministic grid covering SO(3) for searches."""

from __future__ import annotations

import healpy
import numpy as np
import torch

from cryohydra.geometry.rotations import euler_relion_to_matrix, random_rotations

__all__ = [
    "uniform_so3",
    "uniform_euler",
    "preferred_orientations",
    "sample_von_mises_fisher_s2",
    "rotations_from_directions",
    "so3_grid",
]


def uniform_so3(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 3)`` rotations uniform (Haar) on SO(3)."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return random_rotations(n, generator=generator).numpy()


def uniform_euler(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 3)`` from RELION angles uniform in ``rot, psi in [-pi, pi)``, ``tilt in [0, pi)``.

    Not uniform on SO(3): viewing directions crowd at the poles. Kept as users know it.
    """
    angles = np.stack(
        [rng.uniform(-np.pi, np.pi, n), rng.uniform(0, np.pi, n), rng.uniform(-np.pi, np.pi, n)],
        axis=-1,
    )
    return euler_relion_to_matrix(torch.from_numpy(angles)).numpy()


def sample_von_mises_fisher_s2(
    mean_direction: np.ndarray, kappa: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``(n, 3)`` unit vectors from a von Mises-Fisher law on the sphere (Wood, 1994).

    The angle from the mean has ``E[cos] = coth(kappa) - 1 / kappa``.
    """
    mu = np.asarray(mean_direction, dtype=np.float64)
    mu = mu / np.linalg.norm(mu)
    u = rng.uniform(size=n)
    # Inverse CDF of w = cos(angle from mu) for the vMF density on S^2.
    w = 1 + np.log(u + (1 - u) * np.exp(-2 * kappa)) / kappa
    phi = rng.uniform(0, 2 * np.pi, n)
    # An orthonormal basis (e1, e2) perpendicular to mu.
    helper = np.array([1.0, 0.0, 0.0]) if abs(mu[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(mu, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(mu, e1)
    radial = np.sqrt(np.clip(1 - w**2, 0, None))
    return (
        w[:, None] * mu
        + (radial * np.cos(phi))[:, None] * e1
        + (radial * np.sin(phi))[:, None] * e2
    )


def rotations_from_directions(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotations whose viewing direction (third row of ``R``) is each of ``directions``
    ``(n, 3)``, with a uniformly random in-plane angle."""
    d = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    rot = np.arctan2(d[:, 1], d[:, 0])
    tilt = np.arccos(np.clip(d[:, 2], -1, 1))
    psi = rng.uniform(-np.pi, np.pi, len(d))
    return euler_relion_to_matrix(torch.from_numpy(np.stack([rot, tilt, psi], -1))).numpy()


def preferred_orientations(
    n: int,
    rng: np.random.Generator,
    n_views: int = 3,
    kappa: float = 20.0,
    view_directions: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, 3, 3)`` rotations whose viewing directions cluster around a few views.

    Each particle picks one of ``n_views`` mean directions (drawn uniformly on the sphere
    unless ``view_directions`` ``(K, 3)`` is given) with equal probability, then its direction
    from a von Mises-Fisher lobe of concentration ``kappa`` (about ``1/sqrt(kappa)`` rad
    wide) around it; the in-plane angle is uniform.
    """
    if view_directions is None:
        view_directions = rng.normal(size=(n_views, 3))
    view_directions = np.asarray(view_directions, dtype=np.float64).reshape(-1, 3)
    which = rng.integers(len(view_directions), size=n)
    directions = np.empty((n, 3))
    for k, mean in enumerate(view_directions):
        rows = np.nonzero(which == k)[0]
        directions[rows] = sample_von_mises_fisher_s2(mean, kappa, len(rows), rng)
    return rotations_from_directions(directions, rng)


def so3_grid(nside: int) -> torch.Tensor:
    """Rotations ``(12 nside^2 * 6 nside, 3, 3)`` float64 covering SO(3) about uniformly.

    Viewing directions are HEALPix pixel centres (about ``58.6 / nside`` degrees apart), each
    with ``6 nside`` in-plane angles of the same spacing.
    """
    theta, phi = healpy.pix2ang(nside, np.arange(12 * nside**2))
    n_psi = 6 * nside
    psi = np.arange(n_psi) * 2 * np.pi / n_psi
    angles = np.stack(
        [np.repeat(phi, n_psi), np.repeat(theta, n_psi), np.tile(psi, len(theta))], axis=-1
    )
    return euler_relion_to_matrix(torch.from_numpy(angles))
