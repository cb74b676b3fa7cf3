"""The training modes of ``cryohydra reconstruct``: how an image's candidate poses come from
the encoder, and whether the run switches to auto-decoding.

A mode is one class. ``MODES`` maps the names of ``--mode`` to them; the configuration, the
trainer and the command line ask the mode, never its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from cryohydra.inference.objective import rotated_half_turn, undo_half_turn

__all__ = ["MODES", "Amortized", "CryoAI", "Mode", "SemiAmortized", "get_mode"]


class Mode(ABC):
    """How the amortized stage proposes poses, and what follows it."""

    name: str
    #: the run switches to per-particle auto-decoding (else it stays amortized to the end)
    switches: bool

    @abstractmethod
    def n_heads(self, requested: int) -> int:
        """Heads of the encoder, given ``--heads``."""

    @abstractmethod
    def n_candidates(self, requested: int) -> int:
        """Candidate poses per image that winner-takes-all chooses between."""

    @abstractmethod
    def candidates(
        self, encoder: torch.nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate rotations ``(B, C, 3, 3)`` and shifts ``(B, C, 2)`` Å of images
        ``(B, L, L)`` (already at the encoder's box)."""


class _MultiHead(Mode):
    """The multi-head encoder's ``M`` poses, winner-takes-all."""

    def n_heads(self, requested: int) -> int:
        return requested

    def n_candidates(self, requested: int) -> int:
        return requested

    def candidates(self, encoder, images):
        return encoder(images)


class SemiAmortized(_MultiHead):
    """``M`` heads while poses are ambiguous, then each pose refined by its own SGD steps."""

    name = "semi-amortized"
    switches = True


class Amortized(_MultiHead):
    """The multi-head encoder to the end (no switch)."""

    name = "amortized"
    switches = False


class CryoAI(Mode):
    """cryoAI's symmetrised loss: one head, and the pose of the image turned by 180 degrees
    in-plane, mapped back, as a second candidate (:func:`undo_half_turn`)."""

    name = "cryoai"
    switches = False

    def n_heads(self, requested: int) -> int:
        return 1

    def n_candidates(self, requested: int) -> int:
        return 2

    def candidates(self, encoder, images):
        both = torch.cat([images, rotated_half_turn(images)])
        rotations, shifts = encoder(both)
        batch = images.shape[0]
        turned = undo_half_turn(rotations[batch:], shifts[batch:])
        rotations = torch.cat([rotations[:batch], turned[0]], dim=1)
        shifts = torch.cat([shifts[:batch], turned[1]], dim=1)
        return rotations, shifts


MODES: dict[str, Mode] = {m.name: m for m in (SemiAmortized(), Amortized(), CryoAI())}


def get_mode(name: str) -> Mode:
    """The mode called ``name`` (``ValueError`` naming the choices otherwise)."""
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
    return MODES[name]
