"""The Siamese network: one shared encoder maps each image to a feature vector; the distance
of two orientations is predicted from the features (:func:`~.distances.predicted_distances`).

``image -> normalisation -> Gaussian pyramid -> CNN backbone -> two-layer perceptron -> f``,
the same front end and backbones as the pose encoder of ``cryohydra reconstruct``
(:mod:`cryohydra.models.encoder`).
"""

from __future__ import annotations

import torch
from torch import nn

from cryohydra.models.encoder import build_front_end, normalise_images

__all__ = ["DistanceEncoder"]


class DistanceEncoder(nn.Module):
    """Images ``(B, L, L)`` -> unit feature vectors ``(B, feature_dim)``."""

    def __init__(
        self,
        box_size: int,
        feature_dim: int = 32,
        backbone: str = "light",
        hidden: int = 256,
        sigmas_px: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0),
    ) -> None:
        super().__init__()
        self.box_size = box_size
        self.pyramid, self.features, n_features = build_front_end(box_size, backbone, sigmas_px)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pyramid(normalise_images(images))
        return nn.functional.normalize(self.head(self.features(x)), dim=-1)
