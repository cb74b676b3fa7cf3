"""Simulate a particle dataset from an atomic model or a map.

Output folder:
  * ``particles.mrcs``: the noisy images, written in chunks (never all in memory);
  * ``particles.star``: RELION 3.1, with the true poses, shifts and CTF of every image;
  * ``ground_truth.mrc``: the map the images were projected from (voxel size in the header);
  * ``simulation.json``: the configuration and the measured clean variance, noise and SNR.

The SNR follows ``docs/CONVENTIONS.md``: ``SNR = mean over images of var(clean image) /
var(noise)``, over the whole box. Clean images are written first while their variance is
accumulated, then the noise of the exact standard deviation is added in a second pass over
the file, so the dataset's SNR is the requested one whatever its size. The same seed gives the
same dataset.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cryohydra.geometry.sampling import preferred_orientations, uniform_euler, uniform_so3
from cryohydra.io.errors import InputFileError, check_writable
from cryohydra.io.mrc import StackWriter, read_map, write_map
from cryohydra.io.particles import CTFParams, ParticleSet
from cryohydra.io.read import read_particles
from cryohydra.io.star import write_star
from cryohydra.io.structure import read_atomic_model
from cryohydra.physics.atoms import density_map
from cryohydra.physics.fourier import fft2_centered, zero_pad
from cryohydra.physics.imaging import (
    CTF,
    FourierVolume,
    Identity,
    ImagingModel,
    TransferFunction,
    spectra_to_images,
)
from cryohydra.physics.noise import NoiseSpectrum, background_power_spectrum, coloured_noise
from cryohydra.physics.projector import SliceGrid, image_to_slice

__all__ = [
    "SimulationConfig",
    "simulate",
    "load_structure",
    "load_ctf_table",
    "load_noise_spectrum",
    "sample_ctf",
]

ORIENTATIONS = ("uniform", "euler", "preferred")
# Junk images (``junk_fraction``): empty ice (noise only), an aggregate (a random cluster of
# blobs, projected and CTF-modulated), and a carbon edge (a smooth step across the box).
JUNK_KINDS = ("empty", "aggregate", "edge")
_AGGREGATES = 8  # distinct aggregate maps a set's aggregates are drawn from
MODEL_SUFFIXES = (".pdb", ".cif", ".ent", ".mmcif", ".gz")
# Columns of a CTF table such as EMPIAR-10028's (``empiar10028_ctf.npy``).
CTF_TABLE_COLUMNS = (
    "box",
    "pixel_size_a",
    "defocus_u_a",
    "defocus_v_a",
    "astigmatism_angle_deg",
    "voltage_kv",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
)


@dataclass
class SimulationConfig:
    """Everything that defines a simulated dataset (saved in ``simulation.json``)."""

    structure: str
    box_size: int = 64
    pixel_size_a: float | None = None
    n_particles: int = 1000
    snr: float = 0.1
    orientations: str = "uniform"
    n_views: int = 3
    view_kappa: float = 20.0
    shift_std_a: float = 0.0
    ctf: bool = True
    ctf_table: str | None = None
    defocus_min_a: float = 10000.0
    defocus_max_a: float = 25000.0
    astigmatism_a: float = 300.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    bfactor_a2: float = 0.0
    contrast_sign: int = 1
    noise_spectrum: str | None = None
    contrast_sd: float = 0.0
    junk_fraction: float = 0.0
    junk_kinds: tuple[str, ...] | list[str] = JUNK_KINDS
    ctf_canvas: int = 1
    seed: int = 0
    chunk_size: int = 1000
    oversampling: int = 2

    def validate(self) -> None:
        if self.box_size % 2 or self.box_size < 8:
            raise ValueError(f"box size must be even and at least 8, got {self.box_size}")
        if self.orientations not in ORIENTATIONS:
            raise ValueError(f"orientations must be one of {ORIENTATIONS}")
        if self.contrast_sign not in (1, -1):
            raise ValueError("contrast sign must be +1 (bright particles) or -1 (dark)")
        if not self.snr > 0:
            raise ValueError(f"SNR must be positive (inf for no noise), got {self.snr}")
        if self.n_particles < 1:
            raise ValueError("at least one particle is needed")
        if self.pixel_size_a is not None and not self.pixel_size_a > 0:
            raise ValueError(f"pixel size must be > 0 Å, got {self.pixel_size_a}")
        if self.ctf and self.ctf_table is None and self.defocus_min_a > self.defocus_max_a:
            raise ValueError(
                f"the defocus range is empty: minimum {self.defocus_min_a} Å > maximum "
                f"{self.defocus_max_a} Å"
            )
        if self.ctf and self.ctf_table is not None:
            load_ctf_table(self.ctf_table)
        if not 0 <= self.contrast_sd < 1:
            raise ValueError(f"contrast sd must be in [0, 1), got {self.contrast_sd}")
        if not 0 <= self.junk_fraction < 1:
            raise ValueError(f"junk fraction must be in [0, 1), got {self.junk_fraction}")
        if self.ctf_canvas < 1:
            raise ValueError(
                f"the CTF canvas is a whole number of boxes >= 1, got {self.ctf_canvas}"
            )
        unknown = set(self.junk_kinds) - set(JUNK_KINDS)
        if unknown or not self.junk_kinds:
            raise ValueError(f"junk kinds must be among {JUNK_KINDS}, got {self.junk_kinds}")


def load_structure(
    path: str | Path, box_size: int, pixel_size_a: float | None, bfactor_a2: float = 0.0
) -> tuple[torch.Tensor, float]:
    """The ground-truth map ``(L, L, L)`` and its pixel size (Å) from a model or an MRC map.

    An atomic model is centred on its centre of mass and needs ``pixel_size_a``. A map keeps
    its voxel size (``pixel_size_a`` must agree, or is required when the header has none) and
    is cropped or zero-padded about its centre to the box.
    """
    path = Path(path)
    if path.suffix.lower() in MODEL_SUFFIXES:
        if pixel_size_a is None:
            raise ValueError(f"{path}: a pixel size is needed to make a map from an atomic model")
        model = read_atomic_model(path)
        return density_map(model, box_size, pixel_size_a, bfactor_a2=bfactor_a2), pixel_size_a
    if path.suffix.lower() not in (".mrc", ".map"):
        raise InputFileError(path, "expected an atomic model (.pdb, .cif) or a map (.mrc, .map)")
    volume, voxel_a = read_map(path)
    if len(set(volume.shape)) != 1:
        raise InputFileError(path, f"map is not cubic: {volume.shape}")
    if voxel_a is None and pixel_size_a is None:
        raise InputFileError(path, "header has no voxel size; give the pixel size")
    if voxel_a is not None and pixel_size_a is not None and abs(voxel_a - pixel_size_a) > 1e-3:
        raise InputFileError(
            path, f"voxel size in the header is {voxel_a:.4f} Å, not the {pixel_size_a} Å asked"
        )
    return torch.from_numpy(_recentre_box(volume, box_size)), pixel_size_a or voxel_a


def _recentre_box(volume: np.ndarray, box_size: int) -> np.ndarray:
    """Crop or zero-pad a cubic map so that its index ``N // 2`` lands on ``L // 2``."""
    size = volume.shape[0]
    out = np.zeros((box_size,) * 3, dtype=np.float32)
    offset = box_size // 2 - size // 2  # new index = old index + offset
    lo_old, hi_old = max(0, -offset), min(size, box_size - offset)
    region_old = slice(lo_old, hi_old)
    region_new = slice(lo_old + offset, hi_old + offset)
    out[region_new, region_new, region_new] = volume[region_old, region_old, region_old]
    return out


def sample_orientations(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    if config.orientations == "uniform":
        return uniform_so3(config.n_particles, rng)
    if config.orientations == "euler":
        return uniform_euler(config.n_particles, rng)
    return preferred_orientations(config.n_particles, rng, config.n_views, config.view_kappa)


def load_ctf_table(path: str | Path) -> np.ndarray:
    """The CTF table at ``path``: a ``.npy`` array, one row per micrograph, columns
    ``CTF_TABLE_COLUMNS``; :class:`InputFileError` naming the file for anything else."""
    expected = f"a .npy table of {len(CTF_TABLE_COLUMNS)} columns ({', '.join(CTF_TABLE_COLUMNS)})"
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputFileError(path, f"is not {expected} ({err})") from None
    if (
        not isinstance(table, np.ndarray)
        or table.ndim != 2
        or table.shape[1] != len(CTF_TABLE_COLUMNS)
    ):
        shape = getattr(table, "shape", "an archive")
        raise InputFileError(path, f"expected {expected}, found shape {shape}")
    if len(table) == 0 or not np.all(np.isfinite(table)) or np.any(table[:, 5] <= 0):
        raise InputFileError(path, "needs at least one row, finite values and voltages > 0 kV")
    return table


def load_noise_spectrum(path: str | Path, max_images: int = 2000) -> NoiseSpectrum:
    """The noise spectrum at ``path``: a ``.json`` saved by :meth:`NoiseSpectrum.save`, or
    particles (a RELION STAR or cryoSPARC .cs file) whose background it is estimated from (the
    first ``max_images``); :class:`InputFileError` naming the file for anything else."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            return NoiseSpectrum.load(path)
        except (ValueError, KeyError, TypeError) as err:
            raise InputFileError(path, f"is not a saved noise spectrum ({err})") from None
    particles = read_particles(path)  # a STAR or .cs (it names the file for anything else)
    rows = np.arange(min(len(particles), max_images))
    images = torch.from_numpy(particles.load_images(rows))
    pixel_size_a = float(np.median(particles.pixel_size_a))
    return background_power_spectrum(images, pixel_size_a)


def sample_ctf(config: SimulationConfig, rng: np.random.Generator) -> CTFParams:
    """Per-particle CTF: rows of a real table (``config.ctf_table``) or drawn from ranges."""
    n = config.n_particles
    if config.ctf_table:
        table = load_ctf_table(config.ctf_table)
        rows = table[rng.integers(len(table), size=n)]
        return CTFParams(
            defocus_u_a=rows[:, 2],
            defocus_v_a=rows[:, 3],
            astigmatism_angle_rad=np.deg2rad(rows[:, 4]),
            voltage_kv=rows[:, 5],
            cs_mm=rows[:, 6],
            amplitude_contrast=rows[:, 7],
            phase_shift_rad=np.deg2rad(rows[:, 8]),
            bfactor_a2=np.zeros(n),
        )
    mean_defocus = rng.uniform(config.defocus_min_a, config.defocus_max_a, n)
    astigmatism = rng.uniform(-0.5, 0.5, n) * config.astigmatism_a
    return CTFParams(
        defocus_u_a=mean_defocus + astigmatism,
        defocus_v_a=mean_defocus - astigmatism,
        astigmatism_angle_rad=rng.uniform(-np.pi, np.pi, n),
        voltage_kv=np.full(n, config.voltage_kv),
        cs_mm=np.full(n, config.cs_mm),
        amplitude_contrast=np.full(n, config.amplitude_contrast),
        phase_shift_rad=np.zeros(n),
        bfactor_a2=np.zeros(n),
    )


def aggregate_map(box_size: int, rng: np.random.Generator, n_blobs: int = 40) -> torch.Tensor:
    """An aggregate for junk: ``n_blobs`` Gaussian blobs (1-3 px) of random weights inside a
    sphere of ``0.3 L`` about the box centre, ``(L, L, L)`` float32."""
    centres = rng.normal(size=(n_blobs, 3))
    centres *= (0.3 * box_size * rng.uniform(0, 1, (n_blobs, 1)) ** (1 / 3)) / np.linalg.norm(
        centres, axis=1, keepdims=True
    )
    widths, weights = rng.uniform(1.0, 3.0, n_blobs), rng.uniform(0.5, 1.0, n_blobs)
    k = torch.arange(box_size, dtype=torch.float64) - box_size // 2
    z, y, x = torch.meshgrid(k, k, k, indexing="ij")
    volume = torch.zeros((box_size,) * 3, dtype=torch.float64)
    for (cx, cy, cz), width, weight in zip(centres, widths, weights, strict=True):
        volume += weight * torch.exp(
            -((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2)
        )
    return volume.to(torch.float32)


def edge_images(box_size: int, angles_rad: np.ndarray, offsets_px: np.ndarray) -> torch.Tensor:
    """Carbon edges for junk: ``(n, L, L)`` smooth steps ``tanh(d / 1.5 px)``, ``d`` the
    signed distance to a line at ``angles_rad`` (its normal) passing ``offsets_px`` from the
    box centre."""
    k = torch.arange(box_size, dtype=torch.float64) - box_size // 2
    y, x = torch.meshgrid(k, k, indexing="ij")
    angle = torch.from_numpy(np.asarray(angles_rad, dtype=np.float64))[:, None, None]
    offset = torch.from_numpy(np.asarray(offsets_px, dtype=np.float64))[:, None, None]
    distance = x * torch.cos(angle) + y * torch.sin(angle) - offset
    return torch.tanh(distance / 1.5).to(torch.float32)


@dataclass(frozen=True)
class _Junk:
    """What each particle is (``kind``: "" for the molecule), drawn once for the whole set so
    that the images do not depend on the chunk size."""

    kind: np.ndarray
    aggregate: np.ndarray  # which aggregate map
    edge_angle_rad: np.ndarray
    edge_offset_px: np.ndarray
    maps: list[FourierVolume]

    @staticmethod
    def draw(config: SimulationConfig, rng: np.random.Generator, device) -> _Junk:
        n = config.n_particles
        kind = np.full(n, "", dtype=object)
        chosen = rng.random(n) < config.junk_fraction
        kind[chosen] = rng.choice(np.asarray(config.junk_kinds, dtype=object), int(chosen.sum()))
        aggregate = rng.integers(_AGGREGATES, size=n)
        angle = rng.uniform(0, 2 * np.pi, n)
        offset = rng.uniform(-0.25, 0.25, n) * config.box_size
        maps = []
        if "aggregate" in set(kind):
            maps = [
                FourierVolume.from_map(
                    aggregate_map(config.box_size, rng).to(device), config.oversampling
                )
                for _ in range(_AGGREGATES)
            ]
        return _Junk(kind, aggregate, angle, offset, maps)

    def replace(
        self,
        images: torch.Tensor,
        rows: np.ndarray,
        model: ImagingModel,
        rotations: torch.Tensor,
        transfer: TransferFunction,
        variance: float,
    ) -> torch.Tensor:
        """``images`` of the chunk ``rows`` with the junk ones replaced (CTF-modulated like
        the particles, scaled to the clean ``variance`` of the molecule's images)."""
        out = images.clone()
        kinds = self.kind[rows]
        grid = model.points
        for kind in ("empty", "aggregate", "edge"):
            at = np.nonzero(kinds == kind)[0]
            if len(at) == 0:
                continue
            if kind == "empty":
                out[at] = 0
                continue
            index = torch.from_numpy(at)
            if kind == "aggregate":
                made = torch.empty((len(at),) + images.shape[1:], device=images.device)
                for j in np.unique(self.aggregate[rows[at]]):
                    mine = np.nonzero(self.aggregate[rows[at]] == j)[0]
                    sub = index[mine]
                    spectra = model.images(self.maps[j], rotations[sub], None, transfer.subset(sub))
                    made[mine] = spectra_to_images(spectra, grid)
            else:
                edges = edge_images(
                    images.shape[-1], self.edge_angle_rad[rows[at]], self.edge_offset_px[rows[at]]
                ).to(images.device)
                values = image_to_slice(fft2_centered(edges), grid)
                made = spectra_to_images(
                    values * model.transfer_values(transfer.subset(index)), grid
                )
            scale = math.sqrt(variance) / made.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            out[at] = (made * scale).to(out.dtype)
        return out


def _truth_columns(contrast: np.ndarray | None, junk: _Junk | None) -> dict[str, np.ndarray]:
    """The STAR columns of what made each image, beyond RELION's: its contrast factor, and
    whether it is junk (1) and of which kind ("none" for the molecule)."""
    columns: dict[str, np.ndarray] = {}
    if contrast is not None:
        columns["cryohydraContrast"] = contrast
    if junk is not None:
        columns["cryohydraJunk"] = (junk.kind != "").astype(np.int64)
        columns["cryohydraJunkKind"] = np.where(junk.kind == "", "none", junk.kind).astype(str)
    return columns


def _outputs(outdir: Path, force: bool) -> dict[str, Path]:
    names = {
        "stack": "particles.mrcs",
        "star": "particles.star",
        "map": "ground_truth.mrc",
        "log": "simulation.json",
    }
    paths = {key: outdir / name for key, name in names.items()}
    for path in paths.values():  # Refuse before writing anything.
        check_writable(path, force)
    return paths


def simulate(
    config: SimulationConfig,
    outdir: str | Path,
    force: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Simulate ``config`` into ``outdir``; returns the summary written to ``simulation.json``."""
    config.validate()
    volume, pixel_size_a = load_structure(
        config.structure, config.box_size, config.pixel_size_a, config.bfactor_a2
    )
    # Read once, before anything is written (a bad file is refused naming it).
    spectrum = None if config.noise_spectrum is None else load_noise_spectrum(config.noise_spectrum)
    paths = _outputs(Path(outdir), force)
    write_map(paths["map"], volume.numpy(), pixel_size_a, force=force)

    rng = np.random.default_rng(config.seed)
    rotations = sample_orientations(config, rng)
    shifts_a = rng.normal(scale=config.shift_std_a, size=(config.n_particles, 2))
    ctf = sample_ctf(config, rng) if config.ctf else None
    # Drawn after the rest, and only when asked, so that sets without them stay the same.
    contrast = np.ones(config.n_particles)
    if config.contrast_sd > 0:
        contrast = np.clip(rng.normal(1.0, config.contrast_sd, config.n_particles), 0.1, None)
    junk = _Junk.draw(config, rng, device) if config.junk_fraction > 0 else None

    grid = SliceGrid.create(config.box_size, device=device)
    model = ImagingModel(grid, pixel_size_a)
    # The molecule's images are made on a canvas ``ctf_canvas`` times the box (the map
    # zero-padded to it), CTF-modulated there, then cropped to the box.
    canvas = config.box_size * config.ctf_canvas
    fourier_volume = FourierVolume.from_map(
        zero_pad(volume.to(device), canvas, ndim=3), config.oversampling
    )
    canvas_grid = grid if canvas == config.box_size else SliceGrid.create(canvas, device=device)
    canvas_model = ImagingModel(canvas_grid, pixel_size_a)
    corner = canvas // 2 - config.box_size // 2
    crop = (Ellipsis,) + (slice(corner, corner + config.box_size),) * 2
    n, chunk = config.n_particles, config.chunk_size
    clean_variance_sum, n_molecule = 0.0, 0
    with StackWriter(paths["stack"], n, config.box_size, pixel_size_a, force=force) as stack:
        bar = tqdm(total=2 * n, desc="simulate", unit="img", disable=not progress)
        for start in range(0, n, chunk):
            rows = np.arange(start, min(n, start + chunk))
            transfer = (
                Identity(len(rows))
                if ctf is None
                else CTF.from_arrays(ctf.subset(rows).as_dict(), device)
            )
            spectra = canvas_model.images(
                fourier_volume,
                torch.from_numpy(rotations[rows]).to(device),
                torch.from_numpy(shifts_a[rows]).to(device),
                transfer,
            )
            images = spectra_to_images(spectra, canvas_grid)[crop]
            images = images * torch.from_numpy(contrast[rows]).to(images)[:, None, None]
            variances = images.double().var(dim=(-2, -1), unbiased=False)
            # The SNR is that of the molecule's images (junk replaces others in the 2nd pass).
            molecule = np.ones(len(rows), dtype=bool) if junk is None else junk.kind[rows] == ""
            clean_variance_sum += float(variances[torch.from_numpy(molecule)].sum())
            n_molecule += int(molecule.sum())
            images = config.contrast_sign * images
            stack.write(start, images.cpu().numpy())
            bar.update(len(rows))
        clean_variance = clean_variance_sum / max(n_molecule, 1)
        noise_std = math.sqrt(clean_variance / config.snr) if math.isfinite(config.snr) else 0.0
        generator = torch.Generator().manual_seed(config.seed + 1)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            clean = torch.from_numpy(np.array(stack.data[start:stop]))
            if junk is not None:  # scaled to the molecule images' mean clean variance
                rows = np.arange(start, stop)
                transfer = (
                    Identity(len(rows))
                    if ctf is None
                    else CTF.from_arrays(ctf.subset(rows).as_dict(), device)
                )
                turned = torch.from_numpy(rotations[rows]).to(device)
                made = junk.replace(clean.to(device), rows, model, turned, transfer, clean_variance)
                clean = made.cpu() * torch.where(
                    torch.from_numpy(junk.kind[rows] == ""), 1.0, float(config.contrast_sign)
                )[:, None, None].to(made.dtype)
            if spectrum is None:  # white
                noise = torch.randn(clean.shape, generator=generator) * noise_std
            else:
                shape = tuple(clean.shape)
                noise = coloured_noise(shape, pixel_size_a, spectrum, noise_std, generator)
            stack.write(start, (clean + noise).numpy())
            bar.update(stop - start)
        bar.close()

    particles = ParticleSet(
        source=paths["star"],
        image_paths=np.full(n, str(paths["stack"].resolve()), dtype=object),
        image_indices=np.arange(n),
        pixel_size_a=np.full(n, pixel_size_a),
        box_size=config.box_size,
        ctf=ctf,
        rotations=rotations,
        shifts_a=shifts_a,
        extra_columns=_truth_columns(contrast if config.contrast_sd > 0 else None, junk),
    )
    write_star(paths["star"], particles, force=force)
    summary = {
        "config": {k: (None if v == math.inf else v) for k, v in asdict(config).items()},
        "pixel_size_a": pixel_size_a,
        "clean_variance": clean_variance,
        "noise_std": noise_std,
        "snr": config.snr if math.isfinite(config.snr) else None,
        "snr_db": 10 * math.log10(config.snr) if math.isfinite(config.snr) else None,
        # Its shape; the noise's variance over the box is noise_std^2 whatever its colour.
        "noise_spectrum": None if spectrum is None else spectrum.to_dict(),
        "junk": None
        if junk is None
        else {kind: int((junk.kind == kind).sum()) for kind in JUNK_KINDS},
        "outputs": {key: str(path) for key, path in paths.items()},
    }
    check_writable(paths["log"], force).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
