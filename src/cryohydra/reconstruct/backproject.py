"""Known-pose reconstruction: Fourier-space backprojection with CTF weighting.

For particle ``i`` with image transform ``X_i``, pose ``(R_i, t_i)`` and CTF ``C_i``, the
image-formation model is ``X_i = C_i P(R_i) V exp(+2 pi i k.t_i) + noise`` on the image's own
Fourier grid (``docs/CONVENTIONS.md``). The estimate is

    V^ = sum_i P^T(R_i) [C_i exp(-2 pi i k.t_i) X_i]  /  (sum_i P^T(R_i) C_i^2  +  1 / tau^2)

accumulated slice by slice with trilinear gridding, so memory does not depend on the number of
particles. Each image's transform is inserted at its own grid frequencies, unpadded, into a
volume grid of the same spacing (as cryoDRGN's ``backproject_voxel`` does). Zero-padding the
images first, so as to fill a twice finer grid, is wrong for CTF-modulated data: at the
defoci of real data the CTF changes sign between two frequencies of the box's grid, so the
padded transform between them (a sinc interpolation of ``C P``) is not ``C P`` there, and
weighting it by ``C`` biases the map: at 32 px and 2 Å/px with EMPIAR-10028's defoci the
map from the true poses reached 6.0 Å (FSC 0.5 vs the truth) instead of 4.0 Å (Nyquist).
RELION's way, the unpadded transform spread into a twice finer volume grid at scaled
coordinates, measured 4.06-4.09 Å there and 7.20 Å instead of 7.14 Å at 64 px, at half the
speed, so the grid here has the images' spacing.

Only the Hermitian half of each image's transform is inserted (``rfft``, ``kx >= 0``; the
``kx = 0`` column at half weight); the other half is the conjugate mirror, added once at the
end. The sums are single precision (a complex64 numerator, float32 weights), spread corner by
corner in the volume's memory order (:func:`_spread`); the two half-sets fill in two threads.

The Wiener term ``1 / tau^2(k) = <W>_shell(k) / SSNR(k)`` is RELION's: the
spectral signal-to-noise ratio comes from the FSC of two half-sets accumulated in the same
pass (``SSNR = FSC / (1 - FSC)`` for a half, twice that for the whole), so no noise level has
to be known and the result does not depend on the images' scale.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from cryohydra.geometry.symmetry import Symmetry, symmetry_group
from cryohydra.io.particles import ParticleSet, random_half_split
from cryohydra.metrics.fsc import radial_shell_index, shell_correlation
from cryohydra.physics.fourier import ifft3_centered, shell_mean
from cryohydra.physics.imaging import ImagingModel, TransferFunction
from cryohydra.physics.noise import (
    Whitening,
    optics_group_whitenings,
    whiten_images,
    whiten_transfer,
)
from cryohydra.physics.projector import gridding_correction

__all__ = ["Accumulator", "HalfPlane", "Reconstruction", "reconstruct_known_poses", "wiener_maps"]

# FSC is clipped into (0, 1) before it becomes an SSNR.
_FSC_FLOOR, _FSC_CEIL = 1e-3, 0.999
# Regulariser for plain inversions (half-set estimates used only for the FSC).
_EPSILON = 1e-6
# The accumulation grid has this many voxels more than the box on each axis, so that the
# trilinear corners of a frequency on the Nyquist sphere stay inside it.
_MARGIN = 4


@dataclass(frozen=True)
class HalfPlane:
    """The Hermitian half of an ``L x L`` image's Fourier grid inside a radius.

    ``flat_index`` ``(P,)`` int64 into the flattened ``(L, L // 2 + 1)`` centred ``rfft``
    (``ky`` centred on row ``L // 2``, ``kx = 0 .. L // 2``); ``coords`` ``(P, 3)`` float32
    ``(kx, ky, 0)`` in pixels; ``half`` ``(P,)`` float32, 0.5 on the ``kx = 0`` column (whose
    points are inserted together with their mirrors) and 1 elsewhere.
    """

    box_size: int
    flat_index: torch.Tensor
    coords: torch.Tensor
    half: torch.Tensor

    @staticmethod
    def create(box_size: int, radius_px: float | None = None, device=None) -> HalfPlane:
        """Points with ``|k| <= radius_px``, default and at most ``L // 2 - 1``.

        The cap leaves out the ring next to Nyquist, whose ``ky = -L / 2`` points are their own
        aliases: inserted, they cost the last shells (at 32 px, FSC 0.5 vs the truth 4.08 Å
        instead of 4.00 Å, Nyquist).
        """
        limit = box_size // 2 - 1
        radius = limit if radius_px is None else min(float(radius_px), limit)
        ky = torch.arange(box_size, dtype=torch.float32, device=device) - box_size // 2
        kx = torch.arange(box_size // 2 + 1, dtype=torch.float32, device=device)
        gy, gx = torch.meshgrid(ky, kx, indexing="ij")
        inside = (gx**2 + gy**2 <= radius**2 + 1e-6).reshape(-1)
        flat_index = torch.nonzero(inside).squeeze(1)
        gx, gy = gx.reshape(-1)[inside], gy.reshape(-1)[inside]
        coords = torch.stack([gx, gy, torch.zeros_like(gx)], dim=-1)
        half = torch.where(gx == 0, 0.5, 1.0)
        return HalfPlane(box_size, flat_index, coords, half)

    def spectra(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` centred transforms of real images ``(B, L, L)`` at the points."""
        spectrum = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))
        spectrum = torch.fft.fftshift(spectrum, dim=-2)
        return spectrum.reshape(len(images), -1)[:, self.flat_index]

    def frequencies_a(self, pixel_size_a: float) -> torch.Tensor:
        """``(P, 2)`` ``(kx, ky)`` in 1/Å."""
        return self.coords[:, :2] / (self.box_size * pixel_size_a)


def _spread(
    numerator: torch.Tensor,
    weights: torch.Tensor,
    coords: torch.Tensor,
    values: torch.Tensor,
    squares: torch.Tensor,
) -> None:
    """Add complex ``values`` and real ``squares`` (``(B, P)``) at ``coords`` ``(B, P, 3)``
    (pixels from the origin ``N // 2``) into ``numerator`` and ``weights`` ``(N, N, N)`` by
    trilinear spreading, the adjoint of trilinear sampling (as in
    :func:`cryohydra.physics.projector.backproject`).

    Done corner by corner, so that no ``(B, P, 8)`` array is made, and in the order of the
    volume's memory: sorting the points first costs less than the cache misses of slices that
    cut through a volume larger than the cache (2.5x faster at 128 and 256 px on a CPU).
    """
    side = weights.shape[-1]
    position = (coords + side // 2).reshape(-1, 3)
    corner = position.to(torch.int32)  # positions are positive: truncation is the floor
    order = torch.argsort((corner[:, 2] * side + corner[:, 1]) * side + corner[:, 0])
    position = position.index_select(0, order)
    values = values.reshape(-1).index_select(0, order)
    squares = squares.reshape(-1).index_select(0, order)
    base = position.floor()
    upper = position - base
    base = base.to(torch.int64)
    flat = (base[:, 2] * side + base[:, 1]) * side + base[:, 0]
    fractions = [(1 - upper[:, axis], upper[:, axis]) for axis in range(3)]
    parts = torch.view_as_real(values)  # (M, 2): a real weight scales both parts
    numerator, weights = numerator.view(-1), weights.view(-1)
    for dz in (0, 1):
        for dy in (0, 1):
            weight_zy = fractions[2][dz] * fractions[1][dy]
            for dx in (0, 1):
                weight = weight_zy * fractions[0][dx]
                index = flat + ((dz * side + dy) * side + dx)
                numerator.index_add_(0, index, torch.view_as_complex(parts * weight[:, None]))
                weights.index_add_(0, index, squares * weight)


def _completed(half: torch.Tensor, box_size: int) -> torch.Tensor:
    """A sum over inserted Hermitian halves with its mirror added (``S(k) + conj S(-k)``),
    cropped to the centred ``L``-box grid, in double precision."""
    half = half.to(torch.complex128 if half.is_complex() else torch.float64)
    dims = (-3, -2, -1)
    mirror = torch.roll(torch.flip(half, dims), (1, 1, 1), dims)
    full = half + (mirror.conj() if half.is_complex() else mirror)
    start = _MARGIN // 2
    return full[start : start + box_size, start : start + box_size, start : start + box_size]


@dataclass
class Accumulator:
    """Running sums of one set of particles on the Fourier grid of an ``L``-pixel box.

    ``numerator_sum`` ``(N, N, N)`` complex64, ``sum P^T [C exp(-2 pi i k.t) X]``, and
    ``weight_sum`` ``(N, N, N)`` float32, ``sum P^T C^2`` (``N = L + 4``, origin at
    ``N // 2``), of the inserted Hermitian halves only; :attr:`numerator` and :attr:`weights`
    complete them on the ``L`` grid. Images are inserted up to ``radius_px`` (Fourier pixels;
    default ``L // 2 - 1``). With a point group ``symmetry`` ``(G, 3, 3)`` each image is
    inserted at every mate ``R g`` of its pose (symmetry expansion; ``docs/CONVENTIONS.md``),
    so the sums, and the map, are those of the symmetric molecule.
    """

    box_size: int
    numerator_sum: torch.Tensor
    weight_sum: torch.Tensor
    radius_px: float | None = None
    symmetry: torch.Tensor | None = None
    count: int = 0
    _plane: HalfPlane | None = field(default=None, repr=False)

    @staticmethod
    def zeros(
        box_size: int,
        device=None,
        radius_px: float | None = None,
        symmetry: torch.Tensor | None = None,
    ) -> Accumulator:
        shape = (box_size + _MARGIN,) * 3
        return Accumulator(
            box_size,
            torch.zeros(shape, dtype=torch.complex64, device=device),
            torch.zeros(shape, dtype=torch.float32, device=device),
            radius_px,
            None if symmetry is None else symmetry.to(device=device, dtype=torch.float32),
        )

    @property
    def plane(self) -> HalfPlane:
        if self._plane is None:
            self._plane = HalfPlane.create(self.box_size, self.radius_px, self.weight_sum.device)
        return self._plane

    def add(
        self,
        images: torch.Tensor,
        rotations: torch.Tensor,
        shifts_a: torch.Tensor,
        transfer: TransferFunction,
        pixel_size_a: float,
    ) -> None:
        """Add real images ``(B, L, L)`` with poses ``(B, 3, 3)``, shifts ``(B, 2)`` Å and
        transfer functions: the adjoint of :class:`~cryohydra.physics.imaging.ImagingModel`
        on the half-plane, spread into the sums (with ``T^2`` into the weights)."""
        plane = self.plane
        model = ImagingModel(plane, pixel_size_a)
        values = model.unshift(plane.spectra(images.to(torch.float32)), shifts_a.to(torch.float32))
        ctf_values = model.transfer_values(transfer) * plane.half
        values = values * ctf_values
        squares = ctf_values * ctf_values.div(plane.half)  # C^2, still at half weight on kx = 0
        rotations = rotations.to(torch.float32)
        for mate in [None] if self.symmetry is None else self.symmetry:
            pose = rotations if mate is None else rotations @ mate
            coords = torch.matmul(plane.coords, pose)
            _spread(self.numerator_sum, self.weight_sum, coords, values, squares)
        self.count += len(images)

    @property
    def numerator(self) -> torch.Tensor:
        """``(L, L, L)`` complex128 ``sum P^T [C exp(-2 pi i k.t) X]``, centred."""
        return _completed(self.numerator_sum, self.box_size)

    @property
    def weights(self) -> torch.Tensor:
        """``(L, L, L)`` float64 ``sum P^T C^2``, centred."""
        return _completed(self.weight_sum, self.box_size)


@dataclass
class Reconstruction:
    """Maps ``(L, L, L)`` float32 and the half-set FSC used for the Wiener filter."""

    full: torch.Tensor
    half_a: torch.Tensor
    half_b: torch.Tensor
    shell_fsc: np.ndarray  # (L // 2 + 1,) FSC of the half-sets per Fourier shell
    pixel_size_a: float
    n_particles: int


def _to_real_space(spectrum: torch.Tensor) -> torch.Tensor:
    """Centred ``(L, L, L)`` transform -> real ``(L, L, L)`` float32 map, divided by the
    real-space attenuation of the trilinear spreading (``sinc^2``, :func:`gridding_correction`;
    without it the map's amplitude falls to 0.85 of the truth's in every shell)."""
    volume = ifft3_centered(spectrum).real
    box = volume.shape[-1]
    return (volume / gridding_correction(box, box, volume.device, volume.dtype)).to(torch.float32)


def wiener_maps(
    half_a: Accumulator, half_b: Accumulator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Full map and half maps ``(L, L, L)`` from two half-set accumulators, and the FSC."""
    box_size = half_a.box_size
    shells = radial_shell_index(box_size).to(half_a.weight_sum.device)
    n_shells = box_size // 2 + 1
    sums = [(acc.numerator, acc.weights) for acc in (half_a, half_b)]
    plain = [numerator / (weights + _EPSILON) for numerator, weights in sums]
    fsc = shell_correlation(plain[0], plain[1], shells, n_shells)
    del plain
    ssnr_half = fsc.clamp(_FSC_FLOOR, _FSC_CEIL) / (1 - fsc.clamp(_FSC_FLOOR, _FSC_CEIL))
    outside = shells >= n_shells
    clipped = shells.clamp(max=n_shells - 1)

    def invert(numerator: torch.Tensor, weights: torch.Tensor, ssnr: torch.Tensor):
        tau_inverse = (shell_mean(weights, shells, n_shells) / ssnr)[clipped]
        spectrum = numerator / (weights + tau_inverse + _EPSILON)
        spectrum[outside] = 0
        return _to_real_space(spectrum)

    (numerator_a, weights_a), (numerator_b, weights_b) = sums
    full = invert(numerator_a + numerator_b, weights_a + weights_b, 2 * ssnr_half)
    return full, invert(*sums[0], ssnr_half), invert(*sums[1], ssnr_half), fsc.cpu().numpy()


def reconstruct_known_poses(
    particles: ParticleSet,
    batch_size: int = 256,
    seed: int = 0,
    invert_contrast: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
    symmetry: Symmetry = "C1",
    whiten: bool = False,
) -> Reconstruction:
    """Reconstruct from the set's poses, shifts and CTF, streaming its images in batches.

    The particles are split at random (``seed``) into two half-sets for the Wiener filter and
    the gold-standard FSC, or as given by ``halves`` (two arrays of particle indices, e.g. the
    halves of an ab-initio run made on each half independently). ``symmetry`` (a point-group
    symbol in RELION's orientation, or rotations ``(G, 3, 3)`` in the map's frame) is imposed
    by symmetry expansion (:class:`Accumulator`). ``whiten``: each optics group's images and
    CTFs are whitened by the noise spectrum of its background (as ``reconstruct --whiten``
    does, :func:`~cryohydra.io.batches.optics_group_whitenings`), so that each group weighs in
    by its own signal-to-noise ratio at each frequency.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be a positive number of images, got {batch_size}")
    rotations, shifts = particles.require_poses()
    particles.check_images()
    pixel_sizes = np.unique(np.round(particles.pixel_size_a, 4))
    if len(pixel_sizes) != 1:
        raise ValueError(f"{particles.source}: particles have several pixel sizes {pixel_sizes}")
    pixel_size_a = float(particles.pixel_size_a[0])
    box_size = particles.box_size or particles.load_images([0]).shape[-1]
    if halves is None:
        halves = random_half_split(len(particles), seed)
    group, _ = symmetry_group(symmetry)
    group = None if len(group) == 1 else group
    sign = -1.0 if invert_contrast else 1.0
    groups = particles.optics_group
    whitenings: dict[int, Whitening] = {}
    if whiten:
        whitenings = optics_group_whitenings(
            lambda rows: torch.from_numpy(particles.load_images(rows)) * sign,
            groups,
            box_size,
            pixel_size_a,
        )
    bar = tqdm(total=len(particles), desc="backproject", unit="img", disable=not progress)

    def accumulate(members: np.ndarray) -> Accumulator:
        accumulator = Accumulator.zeros(box_size, device, symmetry=group)
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            images = torch.from_numpy(particles.load_images(rows)).to(device) * sign
            transfer = particles.transfer_function(rows, device)
            accumulator.add(
                whiten_images(whitenings, groups[rows], images),
                torch.from_numpy(rotations[rows]).to(device),
                torch.from_numpy(shifts[rows]).to(device),
                whiten_transfer(whitenings, groups[rows], transfer),
                pixel_size_a,
            )
            bar.update(len(rows))
        return accumulator

    # One thread per half-set: the scatter (``index_add_``) runs on one core, and the two
    # halves have sums of their own, so the result does not depend on the threads.
    with ThreadPoolExecutor(len(halves)) as pool:
        accumulators = list(pool.map(accumulate, halves))
    bar.close()
    full, half_a, half_b, fsc = wiener_maps(*accumulators)
    return Reconstruction(full, half_a, half_b, fsc, pixel_size_a, len(particles))
