import json
import math

import mrcfile
import numpy as np
import pytest
import torch

from cryohydra.cli.main import main as cli
from cryohydra.data import default_structure
from cryohydra.io.star import read_star
from cryohydra.metrics.fsc import fsc, soft_spherical_mask
from cryohydra.physics.fourier import fft3_centered
from cryohydra.reconstruct.backproject import reconstruct_known_poses
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
    # The map has the ground truth's scale: in each shell up to 0.8 Nyquist the gain
    # Re<F_map, F_truth> / |F_truth|^2 is 1 within 6 %. (Beyond the Nyquist sphere the truth
    # holds power that no reconstruction from L x L images can, so real-space ratios mislead.)
    map_ft, truth_ft = fft3_centered(result.full.double()), fft3_centered(truth.double())
    shell = torch.round(radius_grid(BOX)).long()
    for s in range(int(0.8 * BOX // 2) + 1):
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
    assert cli(["backproject", str(star), "-o", str(out), "--quiet"]) == 2  # no overwrite


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
