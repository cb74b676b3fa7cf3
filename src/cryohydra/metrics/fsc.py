"""Fourier shell correlation (FSC), soft masks and resolution estimates.

Conventions (``docs/CONVENTIONS.md``): volumes are ``(z, y, x)`` with the origin at index
``L // 2``; the frequency of index ``j`` is ``(j - L // 2) / (L * pixel_size_a)`` in 1/Å.
Shells are one Fourier pixel wide: shell ``s`` holds the frequencies whose radius, rounded to
the nearest integer in pixel units, is ``s``, for ``s = 0 .. L // 2`` (Nyquist). The resolution
is the first crossing of a threshold (0.5 against a ground-truth map, 0.143 between independent
half-maps), linearly interpolated in frequency between shells, reported in Å.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryohydra.physics.fourier import fft3_centered, radius_grid_3d, shell_mean
from cryohydra.physics.masks import soft_spherical_mask

__all__ = [
    "as_volume",
    "FSCCurve",
    "ResolutionEstimate",
    "fsc",
    "masked_fsc",
    "plot_fsc",
    "radial_shell_index",
    "shell_correlation",
    "soft_spherical_mask",
]

ArrayLike = np.ndarray | torch.Tensor


def as_volume(volume: ArrayLike, dtype=torch.float64, even: bool = False) -> torch.Tensor:
    """``(L, L, L)`` array or tensor -> tensor of ``dtype``; checks the shape (and with
    ``even`` that ``L`` is even)."""
    tensor = torch.as_tensor(volume).to(dtype)
    if tensor.ndim != 3 or len(set(tensor.shape)) != 1 or (even and tensor.shape[0] % 2):
        wanted = "an (L, L, L) volume, L even" if even else "a cubic (L, L, L) volume"
        raise ValueError(f"expected {wanted}, got shape {tuple(tensor.shape)}")
    return tensor


def radial_shell_index(box_size: int) -> torch.Tensor:
    """``(L, L, L)`` int64 shell of each centred Fourier voxel: ``round(|k|)`` in pixels."""
    return torch.round(radius_grid_3d(box_size)).long()


@dataclass(frozen=True)
class ResolutionEstimate:
    """Where an FSC curve first drops below ``threshold``.

    ``frequency_per_a`` (1/Å) and ``resolution_a = 1 / frequency_per_a`` (Å). When the curve
    never drops below the threshold, ``crossed`` is False and the values are those of Nyquist
    (``2 * pixel_size_a``); when it starts below it (no correlation at all), ``crossed`` is
    True, the frequency 0 and the resolution infinite.
    """

    threshold: float
    frequency_per_a: float
    resolution_a: float
    crossed: bool


@dataclass(frozen=True)
class FSCCurve:
    """An FSC curve: ``values[s]`` is the correlation in shell ``s`` (``s = 0 .. L // 2``).

    Attributes:
        frequencies_per_a: ``(S,)`` shell centres ``s / (L * pixel_size_a)`` in 1/Å.
        values: ``(S,)`` correlations in ``[-1, 1]``.
        pixel_size_a: pixel size of the maps (Å/px); Nyquist is ``1 / (2 * pixel_size_a)``.
    """

    frequencies_per_a: np.ndarray
    values: np.ndarray
    pixel_size_a: float

    @property
    def nyquist_a(self) -> float:
        """Resolution at Nyquist, ``2 * pixel_size_a`` (Å)."""
        return 2.0 * self.pixel_size_a

    def resolution(self, threshold: float) -> ResolutionEstimate:
        """First crossing below ``threshold``, linearly interpolated between shells."""
        below = np.nonzero(self.values < threshold)[0]
        if len(below) == 0:
            nyquist = 1.0 / self.nyquist_a
            return ResolutionEstimate(threshold, nyquist, self.nyquist_a, crossed=False)
        s = int(below[0])
        if s == 0:
            return ResolutionEstimate(threshold, 0.0, math.inf, crossed=True)
        v0, v1 = float(self.values[s - 1]), float(self.values[s])
        f0, f1 = float(self.frequencies_per_a[s - 1]), float(self.frequencies_per_a[s])
        frequency = f0 + (v0 - threshold) / (v0 - v1) * (f1 - f0)
        return ResolutionEstimate(threshold, frequency, 1.0 / frequency, crossed=True)

    def resolution_a(self, threshold: float) -> float:
        """Resolution (Å) at the first crossing below ``threshold``; Nyquist if none.

        Use :meth:`resolution` to know whether the curve crossed at all.
        """
        return self.resolution(threshold).resolution_a

    def to_dict(self, thresholds: Sequence[float] = (0.5, 0.143)) -> dict:
        """JSON-ready dict: the curve and the resolution at each of ``thresholds``."""
        return {
            "pixel_size_a": self.pixel_size_a,
            "frequencies_per_a": self.frequencies_per_a.tolist(),
            "values": self.values.tolist(),
            "resolution": {
                str(t): {"resolution_a": est.resolution_a, "crossed": est.crossed}
                for t in thresholds
                for est in [self.resolution(t)]
            },
        }

    @staticmethod
    def from_dict(data: dict) -> FSCCurve:
        """The curve written by :meth:`to_dict`."""
        return FSCCurve(
            np.asarray(data["frequencies_per_a"]),
            np.asarray(data["values"]),
            float(data["pixel_size_a"]),
        )

    def to_csv(self, path: str | Path) -> None:
        """Write ``frequency_per_a, resolution_a, fsc`` (one row per shell) to ``path``."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["frequency_per_a", "resolution_a", "fsc"])
            for f, v in zip(self.frequencies_per_a, self.values, strict=True):
                writer.writerow([f"{f:.6g}", f"{1.0 / f:.6g}" if f > 0 else "inf", f"{v:.6f}"])


def fsc(
    map1: ArrayLike,
    map2: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    pixel_size_a: float,
) -> FSCCurve:
    """Fourier shell correlation of two ``(L, L, L)`` maps (after multiplying both by ``mask``).

    ``FSC(s) = Re sum F1 conj(F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over the voxels of shell
    ``s`` (one Fourier pixel wide, ``s = 0 .. L // 2``). ``pixel_size_a`` (Å/px) only sets the
    frequency axis; it is keyword-only so that a missing pixel size fails loudly.
    """
    v1, v2 = as_volume(map1), as_volume(map2)
    if v1.shape != v2.shape:
        raise ValueError(f"maps differ in shape: {tuple(v1.shape)} vs {tuple(v2.shape)}")
    if mask is not None:
        m = as_volume(mask)
        v1, v2 = v1 * m, v2 * m
    box = v1.shape[-1]
    n_shells = box // 2 + 1
    values = shell_correlation(
        fft3_centered(v1), fft3_centered(v2), radial_shell_index(box), n_shells
    )
    frequencies = np.arange(n_shells) / (box * pixel_size_a)
    return FSCCurve(frequencies, values.numpy(), float(pixel_size_a))


def shell_correlation(
    f1: torch.Tensor, f2: torch.Tensor, shells: torch.Tensor, n_shells: int
) -> torch.Tensor:
    """Per-shell correlation ``(n_shells,)`` of two centred transforms ``(L, L, L)``:
    ``Re <F1 conj(F2)> / sqrt(<|F1|^2> <|F2|^2>)`` over the voxels of each shell (``shells``,
    :func:`radial_shell_index`; higher shells ignored), 0 where a shell has no power. The one
    FSC of the package: :func:`fsc` and the Wiener filter of the backprojection use it."""
    cross = shell_mean((f1 * f2.conj()).real, shells, n_shells)
    power_1 = shell_mean(f1.abs() ** 2, shells, n_shells)
    power_2 = shell_mean(f2.abs() ** 2, shells, n_shells)
    return cross / torch.sqrt(power_1 * power_2).clamp(min=1e-30)


def masked_fsc(a: ArrayLike, b: ArrayLike, pixel_size_a: float) -> FSCCurve:
    """FSC of two ``(L, L, L)`` maps after the standard soft spherical mask (radius ``0.4 L``,
    edge ``0.05 L``), as used for half-maps and for a map against a reference."""
    box = torch.as_tensor(a).shape[-1]
    mask = soft_spherical_mask(box, radius_px=0.4 * box, edge_px=0.05 * box)
    return fsc(a, b, mask, pixel_size_a=pixel_size_a)


def plot_fsc(
    curves: Mapping[str, FSCCurve],
    path: str | Path,
    thresholds: Sequence[float] = (0.5, 0.143),
    title: str | None = None,
) -> None:
    """Plot FSC curves (label -> curve) with horizontal threshold lines to a PNG at ``path``.

    The x axis is the frequency in 1/Å; a secondary axis on top labels it in Å. Uses the Agg
    canvas directly (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        ax.plot(curve.frequencies_per_a, curve.values, label=label, lw=1.5)
    for t in thresholds:
        ax.axhline(t, color="0.4", ls="--", lw=0.8)
        ax.annotate(f"{t:g}", (1.0, t), xycoords=("axes fraction", "data"), fontsize=8)
    ax.axhline(0.0, color="0.7", lw=0.6)
    max_frequency = max((float(c.frequencies_per_a[-1]) for c in curves.values()), default=0.5)
    ax.set_xlim(0.0, max_frequency)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="upper right", fontsize=8)

    def to_angstrom(x):  # 1/Å <-> Å, finite at 0 for the axis limits
        return 1.0 / np.maximum(np.asarray(x, dtype=float), 1e-6)

    top = ax.secondary_xaxis("top", functions=(to_angstrom, to_angstrom))
    top.set_xlabel("resolution (Å)")
    ticks = [t for t in (50, 20, 12, 8, 6, 5, 4, 3, 2.5, 2) if 1.0 / t <= max_frequency]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{t:g}" for t in ticks])
    fig.tight_layout()
    fig.savefig(path)
