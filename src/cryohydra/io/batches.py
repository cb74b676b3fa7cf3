"""Particle batches for training, streamed from the stacks on disk.

Only the batch in hand is in memory: images are read from the memory-mapped stacks, Fourier-
cropped to the working box (``--downsample``), sign-flipped for stacks with dark particles,
scaled by one dataset-wide factor (so the image standard deviation is about 1 whatever the
file's units) and transformed once; the CTF is evaluated at the working pixel size. The order
of an epoch is a seeded permutation of ``(seed, epoch)``, so an interrupted run resumes on the
same batches.

With ``workers > 0`` the reading and cropping happen in ``torch.utils.data.DataLoader`` worker
processes, a few batches ahead of the training (:meth:`ParticleBatches.stream`); the
transforms and the CTF are then computed on the working device. The result is the same.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cryohydra.io.errors import InputFileError
from cryohydra.io.particles import ParticleSet
from cryohydra.physics.fourier import fft2_centered, fourier_crop_2d
from cryohydra.physics.imaging import ImagingModel, TransferFunction
from cryohydra.physics.noise import (
    Whitening,
    centre_contrast,
    optics_group_whitenings,
    sampled_noise_spectrum,
    spread_rows,
    whiten_images,
    whiten_transfer,
)
from cryohydra.physics.projector import SliceGrid, image_to_slice

__all__ = ["Batch", "ParticleBatches", "epoch_batches"]
_PREFETCH = 4  # batches read ahead by each worker

_SCALE_SAMPLE = 1000


def _sample(n: int) -> np.ndarray:
    """The rows the set's statistics (its scale, contrast and noise spectra) come from."""
    return spread_rows(n, _SCALE_SAMPLE)


@dataclass(frozen=True)
class Batch:
    """One batch on the working device.

    ``rows``: ``(B,)`` int64 particle indices; ``images``: ``(B, L, L)`` real; ``spectra``:
    ``(B, P)`` complex transforms at the points of the model's grid; ``transfer``: ``(B, P)``
    real values of each image's transfer function there (the CTF, or ones);
    ``model``: the image-formation model at those points.
    """

    rows: torch.Tensor
    images: torch.Tensor
    spectra: torch.Tensor
    transfer: torch.Tensor
    model: ImagingModel

    @property
    def grid(self) -> SliceGrid:
        return self.model.points

    @property
    def frequencies_a(self) -> torch.Tensor:
        """``(P, 2)`` frequencies of the points in 1/Å."""
        return self.model.frequencies_a


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of an epoch: a permutation seeded by ``(seed, epoch)``, each batch sorted
    (sequential reads)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [np.sort(order[i : i + batch_size]) for i in range(0, n, batch_size)]


class ParticleBatches:
    """Reads batches of a :class:`ParticleSet` at a working box size.

    Args:
        particles: the set (one pixel size; CTF optional but expected for real data).
        working_box: side of the images used for training (default: as stored).
        max_resolution_a: highest resolution compared (the full grid's radius); default
            Nyquist. Coarser grids for a stage of the run come from :meth:`grid_at`.
        invert_contrast: the stack has dark particles on a bright background.
        device: where batches are put.
        whiten: whiten the images and their transfer functions by the noise spectrum
            estimated from the background of a sample of them
            (:func:`~cryohydra.physics.noise.background_power_spectrum`, :class:`Whitening`).
    """

    def __init__(
        self,
        particles: ParticleSet,
        working_box: int | None = None,
        max_resolution_a: float | None = None,
        invert_contrast: bool = False,
        device: str | torch.device = "cpu",
        whiten: bool = False,
    ) -> None:
        pixel_sizes = np.unique(np.round(particles.pixel_size_a, 4))
        if len(pixel_sizes) != 1:
            raise InputFileError(
                particles.source, f"particles have several pixel sizes {list(pixel_sizes)} Å"
            )
        particles.check_images()
        self.particles = particles
        self.device = torch.device(device)
        self.box_size = particles.box_size or particles.load_images([0]).shape[-1]
        self.working_box = working_box or self.box_size
        if self.working_box > self.box_size or self.working_box % 2:
            raise ValueError(
                f"--downsample {self.working_box} must be even and at most the box "
                f"{self.box_size} px of {particles.source}"
            )
        self.pixel_size_a = float(particles.pixel_size_a[0]) * self.box_size / self.working_box
        self._grids: dict[float, SliceGrid] = {}
        self.grid = self.grid_at(max_resolution_a)
        self.frequencies_a = self.grid.frequencies_a(self.pixel_size_a)
        self.sign = -1.0 if invert_contrast else 1.0
        self.scale = 1.0
        # One whitening per optics group (detectors, sessions and ice differ between groups).
        self.whitenings: dict[int, Whitening] = {}
        self.scale = self._estimate_scale()
        if whiten:
            self.whitenings = self._whitenings()

    def __len__(self) -> int:
        return len(self.particles)

    def _estimate_scale(self) -> float:
        n = len(self.particles)
        images = self._images(_sample(n))
        std = float(images.std())
        if not np.isfinite(std) or std == 0:
            raise InputFileError(self.particles.source, "the images are constant (std 0)")
        return 1.0 / std

    def contrast_warning(self, min_t: float = 5.0) -> str | None:
        """A message if the particles, as read (after ``invert_contrast``), look dark: their
        centre darker than their background in a sample of images, with a t statistic below
        ``-min_t`` (:func:`~cryohydra.physics.noise.centre_contrast`)."""
        n = len(self.particles)
        rows = _sample(n)
        mean, t = centre_contrast(self.read(rows))
        if t >= -min_t:
            return None
        wanted = "without" if self.sign < 0 else "with"
        return (
            f"{self.particles.source}: the particles look dark on a light background as read "
            f"(centre minus background {mean:+.3f} image sd, t = {t:.1f} over {len(rows)} "
            f"images); the model expects bright ones: run {wanted} --invert-contrast?"
        )

    def colour_warning(self, max_tilt: float = 1.4) -> str | None:
        """A message if the images' background looks coloured (:meth:`NoiseSpectrum.tilt
        <cryohydra.physics.noise.NoiseSpectrum.tilt>` above ``max_tilt``), for a run that does
        not whiten: the loss then weighs the low frequencies, where such noise is strongest, as
        much as the rest. None where the background has no spectrum to judge (e.g. masked to
        zero)."""
        try:
            rows = np.arange(len(self.particles))
            tilt = sampled_noise_spectrum(self.read, rows, self.pixel_size_a, _SCALE_SAMPLE).tilt()
        except ValueError:
            return None
        if not np.isfinite(tilt) or tilt <= max_tilt:
            return None
        return (
            f"{self.particles.source}: the noise looks coloured: in the images' background the "
            f"lowest quarter of the frequencies has {tilt:.1f} times the power of the upper "
            "half (signal spread past the particle by defocus adds to it at high SNR), and the "
            "loss assumes white noise."
        )

    def _whitenings(self) -> dict[int, Whitening]:
        return optics_group_whitenings(
            self.read,
            self.particles.optics_group,
            self.working_box,
            self.pixel_size_a,
            _SCALE_SAMPLE,
        )

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """The images ``rows`` as stored, cropped to the working box and scaled, on the CPU
        (what a loader worker does)."""
        images = torch.from_numpy(self.particles.load_images(rows))
        if self.working_box != images.shape[-1]:
            images = fourier_crop_2d(images, self.working_box)
        images = images * (self.sign * self.scale)
        return whiten_images(self.whitenings, self.particles.optics_group[rows], images)

    def _images(self, rows: np.ndarray) -> torch.Tensor:
        return self.read(rows).to(self.device)

    def stream(
        self, batches: Sequence[np.ndarray], workers: int = 0
    ) -> Iterator[tuple[np.ndarray, torch.Tensor | None]]:
        """``(rows, images)`` of each batch in order: read here on demand (``workers = 0``:
        images None, :meth:`load` reads them) or ahead by ``workers`` DataLoader processes."""
        if workers <= 0:
            for rows in batches:
                yield rows, None
            return
        loader = torch.utils.data.DataLoader(
            _Reads(self, list(batches)),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=_PREFETCH,
            pin_memory=self.device.type == "cuda",
        )
        for rows, images in loader:
            yield rows, images

    @property
    def nyquist_a(self) -> float:
        return 2 * self.pixel_size_a

    def grid_at(self, resolution_a: float | None) -> SliceGrid:
        """The frequencies up to ``resolution_a`` (Å; None: Nyquist) of the working box."""
        limit = self.working_box // 2 - 1
        radius = float(limit)
        if resolution_a is not None:
            radius = min(radius, self.working_box * self.pixel_size_a / resolution_a)
        key = round(radius, 6)
        if key not in self._grids:
            self._grids[key] = SliceGrid.create(self.working_box, radius, device=self.device)
        return self._grids[key]

    def load(
        self, rows: np.ndarray, grid: SliceGrid | None = None, images: torch.Tensor | None = None
    ) -> Batch:
        """The particles ``rows`` with their transforms on ``grid`` (default: the full one);
        ``images``: already read by :meth:`stream`."""
        model = ImagingModel(self.grid if grid is None else grid, self.pixel_size_a)
        if images is None:
            images = self._images(rows)
        else:
            images = images.to(self.device, non_blocking=True)
        spectra = image_to_slice(fft2_centered(images), model.points)
        transfer = model.transfer_values(self.transfer_function(rows))
        rows_t = torch.as_tensor(rows, dtype=torch.int64, device=self.device)
        return Batch(rows_t, images, spectra, transfer, model)

    def shard(self, rows: np.ndarray) -> ParticleBatches:
        """The particles ``rows`` as batches with this set's statistics (the image scale and
        the whitenings, estimated from the whole set): a ``torchrun`` rank's shard, so that
        every rank reads its images the same way whatever the number of ranks."""
        out = copy.copy(self)
        out.particles = self.particles.subset(rows)
        return out

    def set_amplitude_scale(self, scale: np.ndarray) -> None:
        """Each particle's CTF amplitude ``(N,)`` from now on (``CTFParams.scale``): every
        batch's transfer function, and so every comparison and backprojection, carries it."""
        self.particles = self.particles.with_amplitude_scale(scale)

    def transfer_function(self, rows: np.ndarray) -> TransferFunction:
        """The transfer functions of the particles ``rows``, on the working device (whitened
        like the images)."""
        transfer = self.particles.transfer_function(rows, self.device)
        return whiten_transfer(self.whitenings, self.particles.optics_group[rows], transfer)


class _Reads(torch.utils.data.Dataset):
    """Batch ``i`` of a list of row batches, as ``(rows, images)``: a DataLoader's work."""

    def __init__(self, data: ParticleBatches, batches: list[np.ndarray]) -> None:
        self.data = data
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        rows = self.batches[index]
        return rows, self.data.read(rows)
