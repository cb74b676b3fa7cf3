"""The data term of ab-initio reconstruction: how well a candidate pose explains an image.

For image ``i`` with transform ``X_i`` and CTF ``C_i`` and a candidate pose ``(R, t)`` the
predicted transform is ``C_i(k) V^(R^T k) exp(+2 pi i k.t)`` (the image-formation model of
:mod:`cryohydra.physics.imaging`, here with the learned Hartley volume). Under white
Gaussian noise the negative log-likelihood is, up to constants, the squared error summed over
the frequencies of the grid (the frequency mask); we use its mean.

*Winner-takes-all*: with ``M`` candidates per image (all ``B x M`` slices taken in one batched
call), the loss of an image is the smallest of its ``M`` errors, so only the winning
candidate's head receives gradient from that image.

*cryoAI's symmetrised loss* is the same minimum over two candidates: the pose predicted from
the image and the one predicted from the image turned by 180 degrees in-plane, mapped back
(:func:`rotated_half_turn`, :func:`undo_half_turn`).
"""

from __future__ import annotations

import torch

from cryohydra.models.volume import HartleyVolume
from cryohydra.physics.imaging import ImagingModel

__all__ = [
    "candidate_errors",
    "rotated_half_turn",
    "undo_half_turn",
    "winner_takes_all",
]

# R_z(pi): turning the microscope frame by 180 degrees about the beam.
_HALF_TURN = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))


def candidate_errors(
    volume: HartleyVolume,
    spectra: torch.Tensor,
    transfer: torch.Tensor,
    rotations: torch.Tensor,
    shifts_a: torch.Tensor | None,
    model: ImagingModel,
    hartley: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error ``(B, M)`` of every candidate pose of every image.

    Args:
        volume: the current volume (or the same wrapped in ``DistributedDataParallel``);
            called as ``volume(rotations, grid, hartley)`` for the slices.
        spectra: ``(B, P)`` complex transforms of the images at the model's points.
        transfer: ``(B, P)`` each image's transfer function (CTF or ones) at those points.
        rotations: ``(B, M, 3, 3)`` candidate rotations.
        shifts_a: ``(B, M, 2)`` candidate shifts ``t`` (Å), or None for centred particles.
        model: the image-formation model at the points compared (the frequency mask).
        hartley: the volume's coefficients if already computed (e.g. without gradient).
    """
    batch, n_candidates = rotations.shape[:2]
    predicted = volume(rotations.reshape(-1, 3, 3), model.points, hartley)
    predicted = model.modulate(predicted.reshape(batch, n_candidates, -1), transfer, shifts_a)
    residual = predicted - spectra[:, None, :]
    return (residual.real**2 + residual.imag**2).mean(dim=-1)


def winner_takes_all(errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image loss ``(B,)`` (the smallest of its ``M`` errors) and the winner ``(B,)``."""
    loss, winner = errors.min(dim=1)
    return loss, winner


def rotated_half_turn(images: torch.Tensor) -> torch.Tensor:
    """Images ``(B, L, L)`` turned by 180 degrees about the centre ``L // 2``:
    ``I'(x) = I(-x)`` (exact: a flip and a one-pixel roll on each axis)."""
    flipped = torch.flip(images, dims=(-2, -1))
    return torch.roll(flipped, shifts=(1, 1), dims=(-2, -1))


def undo_half_turn(
    rotations: torch.Tensor, shifts_a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose of an image from the pose ``(R', t')`` of its half-turned copy.

    Turning an image ``I(x) = [C * P_R](x + t)`` by 180 degrees gives ``I(-x)``, which is the
    image in pose ``R_z(pi) R`` with shift ``-t`` (the CTF is even). So ``R = R_z(pi) R'`` and
    ``t = -t'``.
    """
    half_turn = _HALF_TURN.to(rotations)
    return half_turn @ rotations, -shifts_a
