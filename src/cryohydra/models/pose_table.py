"""The per-particle pose table of the auto-decoding stage, with each particle's own optimiser.

Each particle ``i`` holds a rotation ``R_i`` and a shift ``t_i`` (Å). A pose step takes the
gradient of the particle's loss with respect to a perturbation ``(w, d)`` at zero, where the
pose is ``(exp(w) R_i, t_i + d)`` (``exp`` of the axis-angle vector ``w``, exact and smooth at
``w = 0``), and moves the perturbation by an Adam step whose moments belong to that particle
alone (they persist across epochs, as if each particle had its own ``torch.optim.Adam``). The
step is then folded into the pose, ``R_i <- exp(w) R_i``, ``t_i <- t_i + d``, so the
perturbation is always taken at zero.

The table lives on the working device: ``(N, 3, 3)`` rotations, ``(N, 2)`` shifts and
``(N, 5)`` Adam moments, about 100 bytes per particle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryohydra.geometry.rotations import exp_map

__all__ = ["PoseTable"]


@dataclass
class PoseTable:
    """Rotations ``(N, 3, 3)``, shifts ``(N, 2)`` Å, and per-particle Adam state.

    ``lr_rad`` and ``lr_shift_a`` are the Adam learning rates of the rotation perturbation
    (radians) and of the shift (Å).
    """

    rotations: torch.Tensor
    shifts_a: torch.Tensor
    first_moment: torch.Tensor
    second_moment: torch.Tensor
    steps: torch.Tensor
    lr_rad: float = 0.05
    lr_shift_a: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @staticmethod
    def create(
        rotations: torch.Tensor, shifts_a: torch.Tensor, lr_rad: float, lr_shift_a: float
    ) -> PoseTable:
        n = rotations.shape[0]
        device = rotations.device
        return PoseTable(
            rotations=rotations.to(torch.float32).clone(),
            shifts_a=shifts_a.to(torch.float32).clone(),
            first_moment=torch.zeros(n, 5, device=device),
            second_moment=torch.zeros(n, 5, device=device),
            steps=torch.zeros(n, dtype=torch.int64, device=device),
            lr_rad=lr_rad,
            lr_shift_a=lr_shift_a,
        )

    def __len__(self) -> int:
        return self.rotations.shape[0]

    def perturbation(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero perturbations ``w`` ``(B, 3)`` and ``d`` ``(B, 2)`` that require gradients."""
        n, device = len(rows), self.rotations.device
        w = torch.zeros(n, 3, device=device, requires_grad=True)
        d = torch.zeros(n, 2, device=device, requires_grad=True)
        return w, d

    def poses(
        self, rows: torch.Tensor, w: torch.Tensor, d: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exp(w) R, t + d)`` for the particles ``rows``."""
        return exp_map(w) @ self.rotations[rows], self.shifts_a[rows] + d

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad_w: torch.Tensor, grad_d: torch.Tensor) -> None:
        """One Adam step for each particle in ``rows`` (distinct), folded into its pose."""
        grad = torch.cat([grad_w, grad_d], dim=1)
        beta1, beta2 = self.betas
        m = beta1 * self.first_moment[rows] + (1 - beta1) * grad
        v = beta2 * self.second_moment[rows] + (1 - beta2) * grad**2
        steps = self.steps[rows] + 1
        m_hat = m / (1 - beta1 ** steps.to(m.dtype))[:, None]
        v_hat = v / (1 - beta2 ** steps.to(m.dtype))[:, None]
        lr = torch.tensor([self.lr_rad] * 3 + [self.lr_shift_a] * 2, device=grad.device)
        delta = -lr * m_hat / (torch.sqrt(v_hat) + self.eps)
        self.rotations[rows] = exp_map(delta[:, :3]) @ self.rotations[rows]
        self.shifts_a[rows] = self.shifts_a[rows] + delta[:, 3:]
        self.first_moment[rows] = m
        self.second_moment[rows] = v
        self.steps[rows] = steps

    @torch.no_grad()
    def replace(self, rows: torch.Tensor, rotations: torch.Tensor, shifts_a: torch.Tensor) -> None:
        """Set new poses for ``rows``; their Adam state starts afresh."""
        self.rotations[rows] = rotations.to(self.rotations)
        self.shifts_a[rows] = shifts_a.to(self.shifts_a)
        self.first_moment[rows] = 0.0
        self.second_moment[rows] = 0.0
        self.steps[rows] = 0

    def state_dict(self) -> dict:
        return {
            "rotations": self.rotations,
            "shifts_a": self.shifts_a,
            "first_moment": self.first_moment,
            "second_moment": self.second_moment,
            "steps": self.steps,
            "lr_rad": self.lr_rad,
            "lr_shift_a": self.lr_shift_a,
        }

    @staticmethod
    def from_state_dict(state: dict, device=None) -> PoseTable:
        tensors = {k: v.to(device) for k, v in state.items() if isinstance(v, torch.Tensor)}
        return PoseTable(**tensors, lr_rad=state["lr_rad"], lr_shift_a=state["lr_shift_a"])
