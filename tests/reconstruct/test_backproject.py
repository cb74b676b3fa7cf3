import json
import math

import mrcfile
import numpy as np
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.io.star import read_star
from cryohydra.metrics.fsc import fsc, masked_fsc, soft_spherical_mask
from cryohydra.physics.fourier import fft2_centered, fft3_centered
from cryohydra.physics.projector import SliceGrid, backproject, image_to_slice
from cryohydra.physics.shifts import phase_ramp
from cryohydra.reconstruct.backproject import Accumulator, reconstruct_known_poses
from cryohydra.simulate import SimulationConfig, simulate

BOX, PIXEL = 32, 7.0


def _dataset(folder, snr, n, seed=0):
    config = SimulationConfig(
        structure=str(default_structure()),
        box_size=BOX,
        pixel_size_a=PIXEL,
        n_particles=n,
        snr=snr,
        shift_std_a=5.0,
        seed=seed,
        defocus_min_a=8000,
        defocus_max_a=20000,
    )
    simulate(config, folder, progress=False)
    truth = torch.from_numpy(mrcfile.read(folder / "ground_truth.mrc").copy())
    return read_star(folder / "particles.star"), truth


def radius_grid(box: int) -> torch.Tensor:
    k = torch.arange(box, dtype=torch.float64) - box // 2
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    return torch.sqrt(kx**2 + ky**2 + kz**2)


def _fsc_vs_truth(volume, truth):
    mask = soft_spherical_mask(BOX, radius_px=0.4 * BOX, edge_px=2)
    return fsc(volume, truth, mask, pixel_size_a=PIXEL)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("clean"), math.inf, 600)


def test_clean_data_with_true_poses_matches_the_truth(clean):
    particles, truth = clean
    result = reconstruct_known_poses(particles, batch_size=128, progress=False)
    curve = _fsc_vs_truth(result.full, truth)
    shells = np.arange(len(curve.values))
    up_to = shells <= 0.8 * (BOX // 2)
    assert curve.values[up_to].min() > 0.9
    # The map has the ground truth's scale: in each shell from 1 to 0.8 Nyquist the gain
    # Re<F_map, F_truth> / |F_truth|^2 is 1 within 6 % (measured 0.96-1.01; 0.85 without the
    # gridding correction). (Beyond the Nyquist sphere the truth holds power that no
    # reconstruction from L x L images can, so real-space ratios mislead.) The DC term, the
    # map's sum, is left out: trilinear spreading on the images' own grid, with every image
    # through the origin, leaves it 1.27 times the truth's (an offset of 3 % of the mean
    # density inside the particle); images have an arbitrary mean anyway.
    map_ft, truth_ft = fft3_centered(result.full.double()), fft3_centered(truth.double())
    shell = torch.round(radius_grid(BOX)).long()
    for s in range(1, int(0.8 * BOX // 2) + 1):
        here = shell == s
        gain = (map_ft[here] * truth_ft[here].conj()).real.sum() / truth_ft[here].abs().pow(2).sum()
        assert float(gain) == pytest.approx(1.0, abs=0.06), s


def test_resolution_improves_with_more_particles(tmp_path):
    particles, truth = _dataset(tmp_path / "noisy", 0.1, 1600, seed=1)
    resolutions = []
    for n in (100, 400, 1600):
        subset = particles.subset(np.arange(n))
        result = reconstruct_known_poses(subset, batch_size=256, progress=False)
        resolutions.append(_fsc_vs_truth(result.full, truth).resolution_a(0.5))
    assert resolutions[0] > resolutions[1] > resolutions[2]


def test_half_maps_differ_but_agree_at_low_resolution(clean):
    particles, _ = clean
    result = reconstruct_known_poses(particles, batch_size=256, seed=3, progress=False)
    assert not torch.allclose(result.half_a, result.half_b)
    assert result.shell_fsc[1:5].min() > 0.95


def test_inverted_contrast_stack_needs_the_flag(tmp_path, clean):
    particles, truth = clean
    dark = tmp_path / "dark.mrcs"
    images = -particles.load_images()
    with mrcfile.new(dark) as mrc:
        mrc.set_data(images)
    flipped = particles.subset(np.arange(len(particles)))
    flipped.image_paths = np.full(len(particles), str(dark), dtype=object)
    flipped.image_indices = np.arange(len(particles))
    result = reconstruct_known_poses(flipped, invert_contrast=True, progress=False)
    assert _fsc_vs_truth(result.full, truth).values[1:10].min() > 0.9


def test_command_line_writes_maps_and_fsc(tmp_path, clean):
    particles, _ = clean
    star = particles.source
    out = tmp_path / "recon"
    assert cli(["backproject", str(star), "-o", str(out), "--half-maps", "--quiet"]) == 0
    for name in ("map.mrc", "half_map_a.mrc", "half_map_b.mrc", "fsc.csv", "fsc.png"):
        assert (out / name).stat().st_size > 0
    with mrcfile.open(out / "map.mrc") as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(PIXEL)
    summary = json.loads((out / "fsc.json").read_text())
    assert summary["resolution"]["0.143"]["resolution_a"] < 3 * PIXEL
    settings = json.loads((out / "backproject.json").read_text())
    assert settings["config"] == {
        "half_maps": True,
        "seed": 0,
        "batch_size": 256,
        "invert_contrast": False,
        "symmetry": "C1",
        "whiten": False,
    }
    assert settings["half_map_resolution_a_0.143"] == summary["resolution"]["0.143"]["resolution_a"]
    assert cli(["backproject", str(star), "-o", str(out), "--quiet"]) == 2  # no overwrite
    # A batch size below 1 once made an all-zero map and "FSC 0.143: inf A".
    bad = ["backproject", str(star), "-o", str(tmp_path / "bad"), "--batch-size", "-1"]
    assert cli([*bad, "--quiet"]) == 2
    assert not (tmp_path / "bad" / "map.mrc").exists()


def test_images_are_streamed_in_batches(clean, monkeypatch):
    """Memory does not grow with the number of particles: images are read batch by batch."""
    particles, _ = clean
    requested = []
    original = type(particles).load_images

    def recording(self, indices=None):
        requested.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(type(particles), "load_images", recording)
    reconstruct_known_poses(particles, batch_size=50, progress=False)
    assert max(requested) <= 50
    assert sum(requested) == len(particles)


def test_hermitian_half_insertion_is_the_exact_adjoint(clean):
    """The fast accumulation (half plane, mirror added at the end, float32 sums) equals the
    exact adjoint of the projector, in double precision, on the full plane."""
    particles, _ = clean
    rows = np.arange(24)
    rotations, shifts = (torch.from_numpy(a[rows]) for a in particles.require_poses())
    images = torch.from_numpy(particles.load_images(rows))
    ctf = particles.transfer_function(rows)
    accumulator = Accumulator.zeros(BOX)
    accumulator.add(images, rotations, shifts, ctf, PIXEL)

    grid = SliceGrid.create(BOX)
    frequencies = grid.frequencies_a(PIXEL).double()
    values = image_to_slice(fft2_centered(images.double()), grid)
    values = values * phase_ramp(frequencies, shifts.double()).conj()
    ctf_values = ctf(frequencies.float()).double()
    numerator = backproject(values * ctf_values, rotations.double(), grid)
    weights = backproject(ctf_values**2, rotations.double(), grid)
    for fast, exact in ((accumulator.numerator, numerator), (accumulator.weights, weights)):
        assert float((fast - exact).abs().max()) < 1e-5 * float(exact.abs().max())


def test_repeated_runs_give_the_same_map(clean):
    particles, _ = clean
    first = reconstruct_known_poses(particles, batch_size=64, progress=False)
    second = reconstruct_known_poses(particles, batch_size=64, progress=False)
    assert torch.equal(first.full, second.full)
    assert torch.equal(first.half_a, second.half_a)


@pytest.fixture(scope="module")
def ubiquitin_with_real_defoci(tmp_path_factory, test_data):
    """Ubiquitin at 32 px and 2 Å/px with EMPIAR-10028's defoci (10,000-35,000 Å): there the
    CTF changes sign between neighbouring Fourier pixels of the box, the case that padding
    the images before their transform got wrong (6.0 Å instead of Nyquist, 4.0 Å)."""
    folder = tmp_path_factory.mktemp("ubiquitin")
    config = SimulationConfig(
        structure=str(test_data / "models" / "1ubi.pdb"),
        box_size=32,
        pixel_size_a=2.0,
        n_particles=1500,
        snr=1.0,
        ctf_table=str(test_data / "metadata" / "empiar10028_ctf.npy"),
        seed=0,
    )
    simulate(config, folder, progress=False)
    truth = torch.from_numpy(mrcfile.read(folder / "ground_truth.mrc").copy())
    return read_star(folder / "particles.star"), truth


def test_map_reaches_the_truth_when_the_ctf_oscillates_fast(ubiquitin_with_real_defoci):
    particles, truth = ubiquitin_with_real_defoci
    result = reconstruct_known_poses(particles, progress=False)
    versus_truth = masked_fsc(result.full, truth, 2.0)
    # Measured 4.00 Å (Nyquist; cryoDRGN's backproject_voxel 4.09 Å); 6.0 Å before the fix.
    assert versus_truth.resolution_a(0.5) < 4.4


def test_half_maps_claim_no_more_than_the_truth_supports(ubiquitin_with_real_defoci):
    """The half-map FSC predicts the full map's FSC against the truth (``sqrt(2F / (1 + F))``):
    its 0.143 crossing must not be finer than where the FSC against the truth crosses 0.5.
    Before the fix the half-maps agreed to Nyquist (4.0 Å) on a map that reached 6.0 Å."""
    particles, truth = ubiquitin_with_real_defoci
    subset = particles.subset(np.arange(300))  # noise-limited, short of Nyquist
    for data in (particles, subset):
        result = reconstruct_known_poses(data, progress=False)
        gold = masked_fsc(result.half_a, result.half_b, 2.0).resolution_a(0.143)
        versus_truth = masked_fsc(result.full, truth, 2.0).resolution_a(0.5)
        assert gold >= 0.9 * versus_truth, (len(data), gold, versus_truth)
