"""Rotation representations, following ``docs/CONVENTIONS.md``.

A rotation ``R`` (3x3, in SO(3)) takes molecule coordinates to microscope coordinates:
``x_scope = R @ x_mol``. ``R`` is RELION's ``Euler_angles2matrix(rot, tilt, psi)`` (ZYZ).
All functions are batched over leading dimensions, differentiable, and work on any device.
Angles are in radians.
"""

from __future__ import annotations

import roma
import torch

__all__ = [
    "euler_relion_to_matrix",
    "matrix_to_euler_relion",
    "cryosparc_pose_to_matrix",
    "matrix_to_cryosparc_pose",
    "exp_map",
    "log_map",
    "sixd_to_matrix",
    "matrix_to_sixd",
    "random_rotations",
    "geodesic_distance",
    "viewing_direction",
]

# Below this |sin(tilt)| the ZYZ decomposition is degenerate (gimbal lock).
_GIMBAL_EPS = 1e-7


def euler_relion_to_matrix(angles_rad: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles ``(rot, tilt, psi)`` in radians, ``(..., 3)`` -> ``(..., 3, 3)``."""
    ca, sa = torch.cos(angles_rad[..., 0]), torch.sin(angles_rad[..., 0])
    cb, sb = torch.cos(angles_rad[..., 1]), torch.sin(angles_rad[..., 1])
    cg, sg = torch.cos(angles_rad[..., 2]), torch.sin(angles_rad[..., 2])
    rows = [
        torch.stack([cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb], dim=-1),
        torch.stack([-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb], dim=-1),
        torch.stack([sb * ca, sb * sa, cb], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_euler_relion(rotations: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_relion_to_matrix`: ``(..., 3, 3)`` -> ``(..., 3)`` radians.

    ``tilt`` is in ``[0, pi]``; ``rot`` and ``psi`` in ``(-pi, pi]``. At gimbal lock
    (``tilt`` = 0 or pi) ``rot`` is set to 0 and the whole in-plane angle goes to ``psi``.
    """
    r = rotations
    sin_tilt = torch.sqrt(r[..., 2, 0] ** 2 + r[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, r[..., 2, 2])
    rot = torch.atan2(r[..., 2, 1], r[..., 2, 0])
    psi = torch.atan2(r[..., 1, 2], -r[..., 0, 2])
    locked = sin_tilt < _GIMBAL_EPS
    # tilt = 0: A[0,0] = cos(rot + psi), A[0,1] = sin(rot + psi).
    # tilt = pi: A[0,0] = -cos(psi - rot), A[0,1] = sin(psi - rot).
    upright = r[..., 2, 2] > 0
    psi_locked = torch.where(
        upright,
        torch.atan2(r[..., 0, 1], r[..., 0, 0]),
        torch.atan2(r[..., 0, 1], -r[..., 0, 0]),
    )
    rot = torch.where(locked, torch.zeros_like(rot), rot)
    psi = torch.where(locked, psi_locked, psi)
    return torch.stack([rot, tilt, psi], dim=-1)


def exp_map(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle vector ``w`` ``(..., 3)`` -> ``exp([w]_x)`` ``(..., 3, 3)``.

    Right-handed: ``exp_map(theta * z)`` turns x towards y. Finite, exact gradients at
    ``w = 0`` (first-order expansion there), so ``R <- exp(w) R`` can start at ``w = 0``.
    """
    return roma.rotvec_to_rotmat(rotvec)


def log_map(rotations: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`exp_map`: ``(..., 3, 3)`` -> axis-angle ``(..., 3)``, angle in [0, pi]."""
    return roma.rotmat_to_rotvec(rotations)


def cryosparc_pose_to_matrix(pose_rotvec: torch.Tensor) -> torch.Tensor:
    """cryoSPARC ``alignments3D/pose`` (axis-angle, radians) -> our (RELION) matrix.

    cryoSPARC's axis-angle vector ``e`` describes the inverse rotation: ``R = exp([e]_x)^T``
    (the relation used by pyem's ``csparc2star`` and cryoDRGN's ``parse_pose_csparc``).
    """
    return exp_map(pose_rotvec).transpose(-1, -2)


def matrix_to_cryosparc_pose(rotations: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`cryosparc_pose_to_matrix`."""
    return log_map(rotations.transpose(-1, -2))


def sixd_to_matrix(sixd: torch.Tensor) -> torch.Tensor:
    """6D representation ``(..., 6)`` (two columns, Gram-Schmidt) -> ``(..., 3, 3)``.

    The six numbers are the first two columns of the matrix, column-major:
    ``(R00, R10, R20, R01, R11, R21)``.
    """
    columns = sixd.reshape(*sixd.shape[:-1], 2, 3).transpose(-1, -2)
    return roma.special_gramschmidt(columns)


def matrix_to_sixd(rotations: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sixd_to_matrix` on rotation matrices: ``(..., 3, 3)`` -> ``(..., 6)``."""
    return rotations[..., :, :2].transpose(-1, -2).reshape(*rotations.shape[:-2], 6)


def random_rotations(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` rotations drawn uniformly (Haar measure) on SO(3), ``(n, 3, 3)``.

    A normalised 4D Gaussian is a uniform unit quaternion, hence a Haar-uniform rotation.
    """
    quat = torch.randn(n, 4, generator=generator, dtype=dtype, device=device)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return roma.unitquat_to_rotmat(quat)


def geodesic_distance(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of ``r1 r2^T``: ``2 arcsin(||r1 - r2||_F / sqrt 8)``, ``(...)``."""
    return roma.rotmat_geodesic_distance(r1, r2)


def viewing_direction(rotations: torch.Tensor) -> torch.Tensor:
    """Unit vector of the beam in molecule coordinates: the third row of ``R``, ``(..., 3)``."""
    return rotations[..., 2, :]
