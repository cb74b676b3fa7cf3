"""The pose encoder of the amortized stage: image -> M candidate poses (rotation and shift).

``image -> per-image normalisation -> Gaussian pyramid -> CNN backbone -> M heads``

* **Normalisation**: each image is brought to zero mean and unit variance.
* **Gaussian pyramid**: the image blurred at fixed scales (``sigmas_px``, 0 = the image
  itself), stacked as channels. The blur is exact (a Gaussian in Fourier space) and has no
  parameter; it hands the network the low-resolution content that is still visible at SNR 0.1.
* **Backbones** (``backbone=``):

  - ``"vgg16"``: the thirteen 3x3 convolutions of VGG16 (64-64, 128-128, 256x3, 512x3, 512x3,
    each group followed by 2x2 max pooling), every convolution with batch norm and ReLU: the
    encoder of the semi-amortized paper, for GPUs (about 15 M parameters, 1.3 GFLOP per 64 px
    image).
  - ``"light"``: four groups (16, 32, 64, 128 channels) of two 3x3 convolutions with batch norm
    and ReLU, each followed by 2x2 max pooling (about 0.3 M parameters, 70 MFLOP per 64 px
    image): cryohydra's default, which makes CPU runs practical.

* **Heads**: ``M`` independent two-layer perceptrons on the flattened features (weights held as
  ``(M, in, out)`` tensors, so that head ``m``'s parameters are touched only by its own
  outputs). Each predicts a rotation in the 6D representation (Gram-Schmidt of two columns)
  and an in-plane shift, bounded to ``max_shift_a`` by a ``tanh``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cryohydra.geometry.rotations import sixd_to_matrix
from cryohydra.physics.fourier import fft2_centered, frequency_grid_2d, ifft2_centered

__all__ = [
    "BACKBONES",
    "GaussianPyramid",
    "build_backbone",
    "build_front_end",
    "MultiHeadMLP",
    "PoseEncoder",
    "SixDPoseOutput",
    "normalise_images",
]

# Channel plan of each backbone: numbers are 3x3 conv+BN+ReLU layers, "M" a 2x2 max pool.
BACKBONES: dict[str, list[int | str]] = {
    "vgg16": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ],  # fmt: skip
    "light": [16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M"],
}


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per image ``(B, L, L)``."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    return (images - mean) / std


class GaussianPyramid(nn.Module):
    """``(B, L, L)`` -> ``(B, S, L, L)``: the image blurred by Gaussians of ``sigmas_px``."""

    def __init__(self, box_size: int, sigmas_px: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)):
        super().__init__()
        k = frequency_grid_2d(box_size, 1.0)  # cycles per pixel, (L, L, 2)
        k2 = (k**2).sum(dim=-1)
        sigmas = torch.tensor(sigmas_px, dtype=torch.float32)
        self.register_buffer(
            "filters", torch.exp(-2 * math.pi**2 * sigmas[:, None, None] ** 2 * k2)
        )

    @property
    def n_channels(self) -> int:
        return self.filters.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        spectrum = fft2_centered(images)[:, None]
        return ifft2_centered(spectrum * self.filters).real


def build_backbone(plan: list[int | str], in_channels: int) -> tuple[nn.Sequential, int, int]:
    layers: list[nn.Module] = []
    channels, pools = in_channels, 0
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            pools += 1
        else:
            layers += [
                nn.Conv2d(channels, int(item), 3, padding=1, bias=False),
                nn.BatchNorm2d(int(item)),
                nn.ReLU(inplace=True),
            ]
            channels = int(item)
    return nn.Sequential(*layers), channels, pools


class MultiHeadMLP(nn.Module):
    """``M`` independent perceptrons ``in -> hidden -> out`` applied to the same features."""

    def __init__(self, n_heads: int, in_features: int, hidden: int, out_features: int):
        super().__init__()

        def weight(fan_in: int, fan_out: int) -> nn.Parameter:
            bound = 1 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(n_heads, fan_in, fan_out).uniform_(-bound, bound))

        self.w1, self.b1 = weight(in_features, hidden), nn.Parameter(torch.zeros(n_heads, hidden))
        self.w2, self.b2 = weight(hidden, hidden), nn.Parameter(torch.zeros(n_heads, hidden))
        self.w3 = weight(hidden, out_features)
        self.b3 = nn.Parameter(torch.zeros(n_heads, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, in)`` -> ``(B, M, out)``."""
        x = torch.relu(torch.einsum("bi,mih->bmh", features, self.w1) + self.b1)
        x = torch.relu(torch.einsum("bmi,mih->bmh", x, self.w2) + self.b2)
        return torch.einsum("bmi,mio->bmo", x, self.w3) + self.b3

    @torch.no_grad()
    def copy_heads(self, source: slice, target: slice) -> None:
        """Give heads ``target`` the weights of heads ``source`` (as many)."""
        for parameter in self.parameters():
            parameter[target] = parameter[source]


def build_front_end(
    box_size: int, backbone: str, sigmas_px: tuple[float, ...]
) -> tuple[GaussianPyramid, nn.Sequential, int]:
    """The pyramid and CNN backbone shared by the encoders, and the length of the flattened
    features they give for a ``box_size`` image."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    pyramid = GaussianPyramid(box_size, sigmas_px)
    features, channels, pools = build_backbone(BACKBONES[backbone], pyramid.n_channels)
    side = box_size // 2**pools
    if side < 1:
        raise ValueError(f"box {box_size} px is too small for the {backbone} backbone")
    return pyramid, features, channels * side * side


class SixDPoseOutput:
    """What each head's outputs mean: a rotation in the 6D representation (Gram-Schmidt of two
    columns, :func:`~cryohydra.geometry.rotations.sixd_to_matrix`) and an in-plane shift
    bounded to ``max_shift_a`` (Å) on each axis by a ``tanh``. Another pose parameterisation
    is another class with ``n_outputs``, ``initialise`` and ``__call__``."""

    n_outputs = 8
    _ROTATION = slice(0, 6)
    _SHIFT = slice(6, 8)

    def __init__(self, max_shift_a: float) -> None:
        self.max_shift_a = float(max_shift_a)

    def initialise(self, last_weight: torch.Tensor) -> None:
        """Start with small shifts: the shift outputs' weights ``(M, hidden, out)`` scaled down."""
        with torch.no_grad():
            last_weight[..., self._SHIFT] *= 0.01

    def __call__(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M, 8)`` -> rotations ``(B, M, 3, 3)`` and shifts ``(B, M, 2)`` Å."""
        rotations = sixd_to_matrix(out[..., self._ROTATION])
        shifts_a = self.max_shift_a * torch.tanh(out[..., self._SHIFT])
        return rotations, shifts_a


class PoseEncoder(nn.Module):
    """Images ``(B, L, L)`` -> rotations ``(B, M, 3, 3)`` and shifts ``(B, M, 2)`` in Å.

    ``max_shift_a`` defaults to 10 % of the box; the heads' outputs are read by a
    :class:`SixDPoseOutput`. ``bf16``: the CNN and the heads run under bfloat16 autocast
    (a GPU's tensor cores; it runs on a CPU too).
    """

    def __init__(
        self,
        box_size: int,
        pixel_size_a: float,
        n_heads: int,
        backbone: str = "light",
        hidden: int = 256,
        max_shift_a: float | None = None,
        sigmas_px: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0),
        bf16: bool = False,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.bf16 = bf16
        self.pyramid, self.features, n_features = build_front_end(box_size, backbone, sigmas_px)
        default = 0.1 * box_size * pixel_size_a
        self.output = SixDPoseOutput(default if max_shift_a is None else max_shift_a)
        self.heads = MultiHeadMLP(n_heads, n_features, hidden, self.output.n_outputs)
        self.output.initialise(self.heads.w3)

    @property
    def max_shift_a(self) -> float:
        return self.output.max_shift_a

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pyramid(normalise_images(images))
        # bf16 (``self.bf16``): the CNN and the heads only; the pyramid (FFTs) before them and
        # the 6D -> rotation after them stay float32, as does everything outside the encoder.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.heads(self.features(x).flatten(1))
        return self.output(out.float())
