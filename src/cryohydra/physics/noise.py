"""The noise of particle images: its power spectrum, estimated from the images' background, and
coloured Gaussian noise drawn from one.

A spectrum is radial, a power per Fourier shell as a function of frequency in 1/Å, so that it
carries over between boxes and pixel sizes (linear interpolation in frequency, held at its end
values outside the range measured). Its unit is the variance per pixel that a white noise of
that power would have: white noise of variance ``s^2`` has the flat spectrum ``s^2``, and the
mean of a spectrum over a box's Fourier pixels is the variance of the noise it describes
(Parseval; ``docs/CONVENTIONS.md`` for the Fourier convention).

Estimation (:func:`background_power_spectrum`): each image, less its mean over the background,
is multiplied by a window that is 0 over the particle (a disc of ``mask_radius_px`` with a soft
edge) and 1 beyond; ``|F|^2`` is averaged over each shell and over the images and divided by
the window's mean square, which makes it unbiased for stationary noise (the window's own
transform blurs the spectrum over a few shells). The particle's signal that leaks past the disc
(defocus spreads it) and neighbouring particles in the box count as noise, as in RELION's
estimate from the area outside its mask.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from cryohydra.physics.fourier import fft2_centered, frequency_grid_2d, ifft2_centered, shell_mean
from cryohydra.physics.imaging import TransferFunction

__all__ = [
    "MIN_GROUP_IMAGES",
    "NoiseSpectrum",
    "Whitened",
    "Whitening",
    "background_power_spectrum",
    "centre_contrast",
    "coloured_noise",
    "disc_window",
    "optics_group_whitenings",
    "sampled_noise_spectrum",
    "spread_rows",
    "whiten_images",
    "whiten_transfer",
]


@dataclass(frozen=True)
class NoiseSpectrum:
    """A radial noise power spectrum: ``power`` ``(S,)`` at ``frequencies_per_a`` ``(S,)``
    (increasing, 1/Å), in variance per pixel (see the module docstring)."""

    frequencies_per_a: np.ndarray
    power: np.ndarray

    def __post_init__(self) -> None:
        f, p = np.asarray(self.frequencies_per_a), np.asarray(self.power)
        if f.ndim != 1 or f.shape != p.shape or len(f) < 2:
            raise ValueError("a noise spectrum needs matching 1D frequencies and powers (2+)")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(p))):
            raise ValueError("a noise spectrum must be finite")
        if np.any(np.diff(f) <= 0) or np.any(p <= 0):
            raise ValueError("a noise spectrum needs increasing frequencies and powers > 0")

    def at(self, frequencies_per_a: torch.Tensor) -> torch.Tensor:
        """The power at any frequencies (1/Å; same shape, float64)."""
        f = torch.as_tensor(frequencies_per_a, dtype=torch.float64)
        known = torch.from_numpy(np.asarray(self.frequencies_per_a, dtype=np.float64)).to(f.device)
        power = torch.from_numpy(np.asarray(self.power, dtype=np.float64)).to(f.device)
        f = f.clamp(float(known[0]), float(known[-1]))
        upper = torch.searchsorted(known, f.reshape(-1).contiguous()).clamp(1, len(known) - 1)
        lo, hi = known[upper - 1], known[upper]
        t = (f.reshape(-1) - lo) / (hi - lo)
        values = power[upper - 1] * (1 - t) + power[upper] * t
        return values.reshape(f.shape)

    def on_box(self, box_size: int, pixel_size_a: float) -> torch.Tensor:
        """``(L, L)`` power at each Fourier pixel of a centred ``L``-pixel image."""
        k = frequency_grid_2d(box_size, pixel_size_a, dtype=torch.float64)
        return self.at(torch.linalg.vector_norm(k, dim=-1))

    def tilt(self) -> float:
        """How coloured the noise is: the mean power over the lowest quarter of the shells
        above 0 over the mean over the upper half (1 for white noise). An estimate from a
        background (:func:`background_power_spectrum`) measured 0.99-1.15 on simulated white
        noise (6UO9 and HSP90, 64 px, 1,000 images at SNR 0.1 to 10; signal that defocus
        spreads past the disc raises it at high SNR), 1.76 on the 7 real EMPIAR-10076
        particles, 2.6 and 2.2 on the realistic sets made from their background (64 and
        128 px)."""
        power = np.asarray(self.power[1:], dtype=np.float64)
        quarter, half = max(1, len(power) // 4), len(power) // 2
        return float(power[:quarter].mean() / power[half:].mean())  # powers are > 0

    def to_dict(self) -> dict:
        return {
            "frequencies_per_a": [float(v) for v in self.frequencies_per_a],
            "power": [float(v) for v in self.power],
        }

    @staticmethod
    def from_dict(data: dict) -> NoiseSpectrum:
        return NoiseSpectrum(
            np.asarray(data["frequencies_per_a"], dtype=np.float64),
            np.asarray(data["power"], dtype=np.float64),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @staticmethod
    def load(path: str | Path) -> NoiseSpectrum:
        return NoiseSpectrum.from_dict(json.loads(Path(path).read_text()))


def disc_window(box_size: int, mask_radius_px: float, edge_px: float = 3.0) -> torch.Tensor:
    """``(L, L)`` float64: 0 inside a disc of ``mask_radius_px`` about index ``L // 2``, rising
    to 1 over ``edge_px`` beyond it (raised cosine)."""
    k = torch.arange(box_size, dtype=torch.float64) - box_size // 2
    y, x = torch.meshgrid(k, k, indexing="ij")
    t = ((torch.sqrt(x**2 + y**2) - mask_radius_px) / edge_px).clamp(0.0, 1.0)
    return (1 - torch.cos(math.pi * t)) / 2


def centre_contrast(images: torch.Tensor) -> tuple[float, float]:
    """Whether the particles are bright: for each ``(N, L, L)`` image, the mean inside a disc
    of ``0.2 L`` less the mean beyond ``0.375 L``, over the image's standard deviation; returns
    the mean of that over the images and its t statistic (mean / standard error). Positive
    for bright particles (RELION's convention), negative for dark ones. Measured: +0.26 and
    +0.35 (t 110, 158) on 1,000 simulated HSP90 and 5A1A images at SNR 0.1; -0.043 (t -9.9)
    on the 7 EMPIAR-10076 particles, which are dark (cryoDRGN inverts them by default)."""
    images = torch.as_tensor(images, dtype=torch.float64)
    box = images.shape[-1]
    inside = 1 - disc_window(box, 0.2 * box, 2.0)
    outside = disc_window(box, 0.375 * box, 2.0)
    centre = (images * inside).sum(dim=(-2, -1)) / inside.sum()
    background = (images * outside).sum(dim=(-2, -1)) / outside.sum()
    contrast = (centre - background) / images.std(dim=(-2, -1)).clamp_min(1e-30)
    mean = float(contrast.mean())
    if len(contrast) < 2:
        return mean, 0.0
    error = float(contrast.std()) / math.sqrt(len(contrast))
    return mean, mean / max(error, 1e-30)


def background_power_spectrum(
    images: torch.Tensor, pixel_size_a: float, mask_radius_px: float | None = None
) -> NoiseSpectrum:
    """The noise spectrum of ``(N, L, L)`` images from their background, outside a disc of
    ``mask_radius_px`` (default ``0.375 L``: the particle's usual extent in a box twice its
    size, leaving a quarter of the box's area); see the module docstring."""
    images = torch.as_tensor(images, dtype=torch.float64)
    box = images.shape[-1]
    radius = 0.375 * box if mask_radius_px is None else mask_radius_px
    window = disc_window(box, radius)
    weight = window.sum()
    if float(weight) < 0.05 * box**2:
        raise ValueError(f"a disc of {radius:.0f} px leaves too little background in {box} px")
    means = (images * window).sum(dim=(-2, -1), keepdim=True) / weight
    spectra = fft2_centered((images - means) * window)
    power = (spectra.abs() ** 2).mean(dim=0) / (box**2 * float((window**2).mean()))
    in_pixels = frequency_grid_2d(box, 1.0 / box, dtype=torch.float64)
    radius_px = torch.linalg.vector_norm(in_pixels, dim=-1)
    n_shells = box // 2 + 1
    per_shell = shell_mean(power, torch.round(radius_px).long(), n_shells)
    # Shell 0 holds only the (removed) mean: take shell 1's value for it.
    per_shell[0] = per_shell[1]
    frequencies = np.arange(n_shells) / (box * pixel_size_a)
    return NoiseSpectrum(frequencies, per_shell.numpy().clip(min=1e-12 * float(per_shell.max())))


def coloured_noise(
    shape: tuple[int, int, int],
    pixel_size_a: float,
    spectrum: NoiseSpectrum,
    std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(N, L, L)`` float32 Gaussian noise of standard deviation ``std`` (over the box) whose
    power spectrum has the shape of ``spectrum`` (white noise filtered by its square root,
    scaled so that its mean over the box's Fourier pixels is ``std^2``)."""
    n, box, _ = shape
    shape_on_box = spectrum.on_box(box, pixel_size_a)
    gain = torch.sqrt(shape_on_box / shape_on_box.mean())
    white = torch.randn((n, box, box), generator=generator, dtype=torch.float64)
    return (ifft2_centered(fft2_centered(white) * gain).real * std).to(torch.float32)


@dataclass(frozen=True)
class Whitening:
    """Whitening of images of ``box_size`` pixels of ``pixel_size_a`` whose noise has the
    spectrum ``spectrum``: the gain ``w(k) = sqrt(P_ref / P(|k|))`` makes that noise white of
    variance ``P_ref``. ``P_ref`` is ``reference_power`` if given, else the spectrum's mean over
    the box's Fourier pixels (the variance unchanged).

    The model ``X = C P V + n`` becomes ``w X = (w C) P V + white noise``: images are filtered
    by :meth:`images` and every transfer function wrapped by :meth:`transfer`, so the loss
    and the backprojection weight each frequency by its signal-to-noise ratio (a noise
    spectrum shared by all images cancels in a backprojection's ratio; it changes the loss).
    Images whose noise differs (optics groups) need one ``reference_power`` for all, so that
    their whitened noise has one variance and a noisier group weighs in less."""

    spectrum: NoiseSpectrum
    box_size: int
    pixel_size_a: float
    reference_power: float | None = None

    def __post_init__(self) -> None:
        if self.reference_power is not None and not self.reference_power > 0:
            raise ValueError(f"a whitening's reference power must be > 0: {self.reference_power}")

    @cached_property
    def own_mean_power(self) -> float:
        """The spectrum's mean over the box's Fourier pixels: the noise's variance per pixel."""
        return float(self.spectrum.on_box(self.box_size, self.pixel_size_a).mean())

    @cached_property
    def mean_power(self) -> float:
        """``P_ref``: the whitened noise's variance per pixel."""
        return self.own_mean_power if self.reference_power is None else self.reference_power

    def gain(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        """``w`` at ``(..., 2)`` frequencies in 1/Å: ``(...)``, float32."""
        power = self.spectrum.at(torch.linalg.vector_norm(frequencies_a.double(), dim=-1))
        return torch.sqrt(self.mean_power / power).to(torch.float32)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, L, L)`` real images filtered by ``w`` (same dtype)."""
        if images.shape[-1] != self.box_size:
            raise ValueError(f"whitening for {self.box_size} px, got {images.shape[-1]} px")
        k = frequency_grid_2d(self.box_size, self.pixel_size_a, device=images.device)
        filtered = ifft2_centered(fft2_centered(images) * self.gain(k))
        return filtered.real.to(images.dtype)

    def transfer(self, inner: TransferFunction) -> Whitened:
        """``inner`` times this gain, for every image."""
        return Whitened(inner, (self,), torch.zeros(len(inner), dtype=torch.int64))


@dataclass(frozen=True)
class Whitened(TransferFunction):
    """Transfer functions times whitening gains: image ``i``'s gain is that of
    ``whitenings[which[i]]`` (e.g. one :class:`Whitening` per optics group)."""

    inner: TransferFunction
    whitenings: tuple[Whitening, ...]
    which: torch.Tensor

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, frequencies_a: torch.Tensor) -> torch.Tensor:
        device = frequencies_a.device
        if len(self.which) == 0:  # no images (e.g. one parity of a one-image batch)
            return self.inner(frequencies_a)
        # Only the groups of these images (a stack may have hundreds of optics groups).
        present, which = torch.unique(self.which, return_inverse=True)
        gains = [self.whitenings[i].gain(frequencies_a).to(device) for i in present.tolist()]
        return self.inner(frequencies_a) * torch.stack(gains)[which.to(device)]

    def subset(self, index: torch.Tensor | np.ndarray) -> Whitened:
        index = torch.as_tensor(index)
        return Whitened(self.inner.subset(index), self.whitenings, self.which[index.cpu()])


MIN_GROUP_IMAGES = 200  # an optics group with fewer images takes the whole set's noise shape
_CHUNK = 100  # images transformed at a time in a spectrum's estimate


def spread_rows(n: int, count: int) -> np.ndarray:
    """Up to ``count`` of the rows ``0 .. n - 1``, spread evenly (sorted, unique)."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).astype(np.int64))


def sampled_noise_spectrum(
    read: Callable[[np.ndarray], torch.Tensor],
    members: np.ndarray,
    pixel_size_a: float,
    sample: int = 1000,
) -> NoiseSpectrum:
    """The noise spectrum of the images ``members`` as ``read(rows)`` gives them (``(N, L, L)``
    of ``pixel_size_a``), from up to ``sample`` of them spread over the list, read and
    transformed ``_CHUNK`` at a time (:func:`background_power_spectrum`; the chunks' spectra
    averaged by their sizes, which is the spectrum of all of them at once)."""
    picks = members[spread_rows(len(members), sample)]
    chunks = [picks[i : i + _CHUNK] for i in range(0, len(picks), _CHUNK)]
    spectra = [background_power_spectrum(read(rows), pixel_size_a) for rows in chunks]
    power = sum(len(rows) * s.power for rows, s in zip(chunks, spectra, strict=True))
    return NoiseSpectrum(spectra[0].frequencies_per_a, power / len(picks))


def optics_group_whitenings(
    read: Callable[[np.ndarray], torch.Tensor],
    groups: np.ndarray,
    box_size: int,
    pixel_size_a: float,
    sample: int = 1000,
) -> dict[int, Whitening]:
    """A :class:`Whitening` per optics group (``groups``: ``(N,)``, each particle's), from that
    group's background in the images as ``read(rows)`` gives them (``box_size`` px of
    ``pixel_size_a``; :func:`sampled_noise_spectrum`, up to ``sample`` images a group).

    All whiten to one noise variance, the groups' variances averaged by their sizes, so that a
    noisier group weighs in less (whitening each to its own would fix each group's spectral
    shape but not its level). A group of fewer than :data:`MIN_GROUP_IMAGES` images takes the
    whole set's shape at its own level (its own shape would be too noisy; one number, its
    variance, is not)."""
    pooled: NoiseSpectrum | None = None
    spectra, sizes = {}, {}
    for group in np.unique(groups):
        members = np.nonzero(groups == group)[0]
        spectrum = sampled_noise_spectrum(read, members, pixel_size_a, sample)
        if len(members) < MIN_GROUP_IMAGES:
            if pooled is None:
                pooled = sampled_noise_spectrum(read, np.arange(len(groups)), pixel_size_a, sample)
            level = _variance(spectrum, box_size, pixel_size_a) / _variance(
                pooled, box_size, pixel_size_a
            )
            spectrum = NoiseSpectrum(pooled.frequencies_per_a, pooled.power * level)
        spectra[int(group)], sizes[int(group)] = spectrum, len(members)
    variances = {g: _variance(s, box_size, pixel_size_a) for g, s in spectra.items()}
    reference = sum(variances[g] * sizes[g] for g in spectra) / sum(sizes.values())
    return {g: Whitening(s, box_size, pixel_size_a, reference) for g, s in spectra.items()}


def _variance(spectrum: NoiseSpectrum, box_size: int, pixel_size_a: float) -> float:
    """The variance per pixel of noise of this spectrum on a box (its mean over the box)."""
    return float(spectrum.on_box(box_size, pixel_size_a).mean())


def whiten_images(
    whitenings: dict[int, Whitening], groups: np.ndarray, images: torch.Tensor
) -> torch.Tensor:
    """``(B, L, L)`` real images, each filtered by its optics group's whitening (``groups``:
    ``(B,)``); unchanged without whitenings."""
    if not whitenings:
        return images
    if len(whitenings) == 1:  # one group (the usual stack): no masks, no copy
        return next(iter(whitenings.values())).images(images)
    images = images.clone()
    for group in np.unique(groups):
        members = torch.from_numpy(groups == group).to(images.device)
        images[members] = whitenings[int(group)].images(images[members])
    return images


def whiten_transfer(
    whitenings: dict[int, Whitening], groups: np.ndarray, transfer: TransferFunction
) -> TransferFunction:
    """``transfer`` (of ``B`` images of the optics groups ``groups``) times each image's
    group's whitening gain; unchanged without whitenings."""
    if not whitenings:
        return transfer
    keys = sorted(whitenings)
    which = np.searchsorted(keys, groups)
    chosen = tuple(whitenings[k] for k in keys)
    return Whitened(transfer, chosen, torch.from_numpy(np.asarray(which)).to(torch.int64))
